//! Our ChaCha20-Poly1305 (handshake and channel), composed from the
//! `chacha20` and `poly1305` crates, against the `chacha20poly1305` crate:
//! the same ciphertext and tag for any key, nonce, AD and text; opening
//! gives the text back; any flipped bit is refused and leaves the buffer
//! as it was.
#![no_main]

use arbitrary::Arbitrary;
use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit};
use cwtch_proto::handshake::aead_for_fuzzing::{open, seal};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    key: [u8; 32],
    nonce: [u8; 12],
    ad: Vec<u8>,
    text: Vec<u8>,
    /// Which bit to flip: in the tag, the text or the AD.
    flip: u16,
}

fuzz_target!(|input: Input| {
    let Input {
        key,
        nonce,
        ad,
        text,
        flip,
    } = input;
    let mut ours = text.clone();
    let tag = seal(&key, &nonce, &ad, &mut ours);
    let mut theirs = text.clone();
    let reference = ChaCha20Poly1305::new(&key.into())
        .encrypt_inout_detached(&nonce.into(), &ad, InOutBuf::from(&mut theirs[..]))
        .expect("the crate seals any text this short");
    assert_eq!(ours, theirs);
    assert_eq!(tag, <[u8; 16]>::from(reference));

    // A flipped bit anywhere is refused, and the buffer stays as it was.
    let (mut bad_tag, mut bad_ad, mut bad_text) = (tag, ad.clone(), ours.clone());
    let bit = usize::from(flip);
    match bit % 3 {
        0 => bad_tag[(bit / 8) % 16] ^= 1 << (bit % 8),
        1 if !bad_ad.is_empty() => {
            let i = (bit / 8) % bad_ad.len();
            bad_ad[i] ^= 1 << (bit % 8);
        }
        _ if !bad_text.is_empty() => {
            let i = (bit / 8) % bad_text.len();
            bad_text[i] ^= 1 << (bit % 8);
        }
        _ => bad_tag[0] ^= 0x80,
    }
    let mut attempt = bad_text.clone();
    assert!(!open(&key, &nonce, &bad_ad, &mut attempt, &bad_tag));
    assert_eq!(attempt, bad_text);

    assert!(open(&key, &nonce, &ad, &mut ours, &tag));
    assert_eq!(ours, text);
});
