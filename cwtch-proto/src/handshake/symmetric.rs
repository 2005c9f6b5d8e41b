//! The Noise symmetric state: chaining key, handshake hash, and the cipher
//! state used while the handshake runs (Noise spec, sections 5.1 and 5.2).

use chacha20::{ChaCha20, Key, Nonce};
use cipher::{KeyIvInit, StreamCipher};
use hkdf::Hkdf;
use poly1305::Poly1305;
use poly1305::universal_hash::{KeyInit, UniversalHash};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of hashes and chaining keys.
pub const HASH_LEN: usize = 32;
/// Length of cipher keys.
pub const KEY_LEN: usize = 32;
/// Length of an AEAD tag.
pub const TAG_LEN: usize = 16;

/// The AEAD failed to authenticate a ciphertext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AeadFailure;

/// The 12-byte AEAD nonce of a 64-bit counter: 4 zero bytes, then the
/// counter little-endian (Noise's ChaChaPoly nonce).
pub(crate) fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(n)
}

/// ChaCha20's block size.
const BLOCK: usize = 64;
/// What the first keystream pass covers: ChaCha20's blocks 0 to 3. Block 0
/// keys Poly1305 (RFC 8439, section 2.6); blocks 1 to 3 encrypt the first
/// 192 bytes of the text.
const HEAD_LEN: usize = 4 * BLOCK;
/// The longest text: blocks 1 to 2^32 - 2. The `chacha20` crate stops
/// before block 2^32 - 1 (its counter would wrap after it), and block 0 is
/// Poly1305's key. A test checks this bound against the crate.
const MAX_TEXT_LEN: u64 = (u32::MAX as u64 - 1) * BLOCK as u64;

// ChaCha20-Poly1305 (RFC 8439, section 2.8), with the keystream computed in
// fewer passes than the `chacha20poly1305` crate's. The vector backends
// compute four blocks per pass, and the crate computes block 0 (the Poly1305
// key) in a pass of its own, then each block that does not fill a group of
// four in a pass of its own too: 6 passes for a channel frame's 482 bytes
// (blocks 0 to 8). Here it is 3 (blocks 0 to 3, 4 to 7, then 8): the first
// 192 bytes of the text are copied behind block 0 so that one pass covers
// both. The output is the same, which the tests below check against the
// crate.

/// One pass over `head`: block 0, then the first bytes of `text` (up to
/// 192) copied behind it. Returns ChaCha20 at block 4, Poly1305 keyed by
/// block 0 with `ad` absorbed, and how many bytes of `text` the pass
/// covered. Block 0, and the keystream past those bytes, are wiped from
/// `head`. `None` if `text` is longer than ChaCha20 can encrypt.
fn start(
    key: &[u8; KEY_LEN],
    nonce: &Nonce,
    ad: &[u8],
    head: &mut [u8; HEAD_LEN],
    text: &[u8],
) -> Option<(ChaCha20, Poly1305, usize)> {
    if text.len() as u64 > MAX_TEXT_LEN {
        return None;
    }
    let n = text.len().min(HEAD_LEN - BLOCK);
    head[BLOCK..BLOCK + n].copy_from_slice(&text[..n]);
    let mut cipher_key = Key::from(*key);
    let mut cipher = ChaCha20::new(&cipher_key, nonce);
    cipher_key.zeroize();
    // Four blocks from block 0: far from ChaCha20's 2^32 blocks.
    cipher.apply_keystream(head);
    let mut mac_key = poly1305::Key::default();
    mac_key.copy_from_slice(&head[..32]);
    let mut mac = Poly1305::new(&mac_key);
    mac_key.zeroize();
    head[..BLOCK].zeroize();
    head[BLOCK + n..].zeroize();
    mac.update_padded(ad);
    Some((cipher, mac, n))
}

/// Poly1305 over the padded ciphertext and the two lengths, after the
/// padded `ad` that [`start`] absorbed.
fn authenticate(mut mac: Poly1305, ad: &[u8], ciphertext: &[u8]) -> Poly1305 {
    mac.update_padded(ciphertext);
    let mut lengths = poly1305::Block::default();
    lengths[..8].copy_from_slice(&(ad.len() as u64).to_le_bytes());
    lengths[8..].copy_from_slice(&(ciphertext.len() as u64).to_le_bytes());
    mac.update(&[lengths]);
    mac
}

/// [`seal`] with any nonce, in the scratch block `head` (zeros), which
/// the tests inspect afterwards.
fn seal_in(
    key: &[u8; KEY_LEN],
    nonce: &Nonce,
    ad: &[u8],
    buf: &mut [u8],
    head: &mut [u8; HEAD_LEN],
) -> [u8; TAG_LEN] {
    let Some((mut cipher, mac, n)) = start(key, nonce, ad, head, buf) else {
        // Only for texts over 256 GiB; ours are at most a frame. Nothing of
        // the text goes out, and a zero tag makes the peer refuse it.
        buf.zeroize();
        return [0u8; TAG_LEN];
    };
    let (first, rest) = buf.split_at_mut(n);
    // `head` now holds ciphertext only: nothing secret left to wipe.
    first.copy_from_slice(&head[BLOCK..BLOCK + n]);
    cipher.apply_keystream(rest);
    authenticate(mac, ad, buf).finalize().into()
}

/// [`open`] with any nonce, in the scratch block `head` (zeros), which
/// the tests inspect afterwards.
fn open_in(
    key: &[u8; KEY_LEN],
    nonce: &Nonce,
    ad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
    head: &mut [u8; HEAD_LEN],
) -> Result<(), AeadFailure> {
    // Up to 192 bytes are decrypted here, in `head`, and stay there unless
    // the tag is right.
    let (mut cipher, mac, n) = start(key, nonce, ad, head, buf).ok_or(AeadFailure)?;
    // Authenticate the ciphertext, still whole in `buf`, before any of it
    // is replaced.
    if authenticate(mac, ad, buf)
        .verify(&poly1305::Tag::from(*tag))
        .is_err()
    {
        head.zeroize();
        return Err(AeadFailure);
    }
    // The plaintext goes to `buf` and the ciphertext to `head`: no copy of
    // the plaintext is left behind to wipe.
    buf[..n].swap_with_slice(&mut head[BLOCK..BLOCK + n]);
    cipher.apply_keystream(&mut buf[n..]);
    Ok(())
}

/// Encrypts `buf` in place and returns the tag.
pub(crate) fn seal(key: &[u8; KEY_LEN], counter: u64, ad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
    seal_in(key, &nonce(counter), ad, buf, &mut [0u8; HEAD_LEN])
}

/// Decrypts `buf` in place if `tag` authenticates it (compared in constant
/// time). On failure `buf` is left as it was.
pub(crate) fn open(
    key: &[u8; KEY_LEN],
    counter: u64,
    ad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), AeadFailure> {
    open_in(key, &nonce(counter), ad, buf, tag, &mut [0u8; HEAD_LEN])
}

/// Fuzzing hooks: our ChaCha20-Poly1305 with any nonce, so that a fuzzer
/// can compare it with the `chacha20poly1305` crate. Only with the
/// `fuzzing` feature.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use super::{HEAD_LEN, KEY_LEN, Nonce, TAG_LEN};

    /// `seal` with a 12-byte nonce.
    pub fn seal(key: &[u8; KEY_LEN], nonce: &[u8; 12], ad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        super::seal_in(key, &Nonce::from(*nonce), ad, buf, &mut [0u8; HEAD_LEN])
    }

    /// `open` with a 12-byte nonce; `false` if refused.
    pub fn open(
        key: &[u8; KEY_LEN],
        nonce: &[u8; 12],
        ad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        super::open_in(
            key,
            &Nonce::from(*nonce),
            ad,
            buf,
            tag,
            &mut [0u8; HEAD_LEN],
        )
        .is_ok()
    }
}

/// Noise `REKEY(k)`: the first 32 bytes of `ENCRYPT(k, 2^64-1, "", zeros)`.
pub(crate) fn rekey(key: &mut [u8; KEY_LEN]) {
    let mut next = [0u8; KEY_LEN];
    let _tag = seal(key, u64::MAX, &[], &mut next);
    key.copy_from_slice(&next);
    next.zeroize();
}

/// Noise `HKDF(ck, ikm)` with two outputs.
pub(crate) fn hkdf2(ck: &[u8; HASH_LEN], ikm: &[u8]) -> ([u8; HASH_LEN], [u8; HASH_LEN]) {
    let mut okm = [0u8; 2 * HASH_LEN];
    // 64 bytes is far below HKDF-SHA256's limit of 255 * 32.
    let _ = Hkdf::<Sha256>::new(Some(ck), ikm).expand(&[], &mut okm);
    let mut a = [0u8; HASH_LEN];
    let mut b = [0u8; HASH_LEN];
    a.copy_from_slice(&okm[..HASH_LEN]);
    b.copy_from_slice(&okm[HASH_LEN..]);
    okm.zeroize();
    (a, b)
}

/// Chaining key, handshake hash and the current handshake key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct SymmetricState {
    ck: [u8; HASH_LEN],
    h: [u8; HASH_LEN],
    k: Option<[u8; KEY_LEN]>,
    n: u64,
}

impl SymmetricState {
    /// `InitializeSymmetric(protocol_name)`.
    pub(crate) fn new(protocol_name: &[u8]) -> Self {
        let mut h = [0u8; HASH_LEN];
        if protocol_name.len() <= HASH_LEN {
            h[..protocol_name.len()].copy_from_slice(protocol_name);
        } else {
            h.copy_from_slice(&Sha256::digest(protocol_name));
        }
        SymmetricState {
            ck: h,
            h,
            k: None,
            n: 0,
        }
    }

    /// `MixHash(data)`.
    pub(crate) fn mix_hash(&mut self, data: &[u8]) {
        let mut hasher = Sha256::new();
        hasher.update(self.h);
        hasher.update(data);
        self.h.copy_from_slice(&hasher.finalize());
    }

    /// `MixKey(ikm)`.
    pub(crate) fn mix_key(&mut self, ikm: &[u8]) {
        let (ck, k) = hkdf2(&self.ck, ikm);
        self.ck = ck;
        self.k = Some(k);
        self.n = 0;
    }

    /// `EncryptAndHash`: encrypts `buf[..len-16]` in place, writes the tag
    /// into the last 16 bytes, and mixes the ciphertext into the hash.
    /// `buf` must be at least [`TAG_LEN`] long when a key is set; callers
    /// only pass fixed-size slices of handshake messages.
    pub(crate) fn encrypt_and_hash(&mut self, buf: &mut [u8]) {
        if let Some(k) = &self.k {
            let split = buf.len().saturating_sub(TAG_LEN);
            let (body, tag_out) = buf.split_at_mut(split);
            let tag = seal(k, self.n, &self.h, body);
            tag_out.copy_from_slice(&tag);
            self.n = self.n.wrapping_add(1);
        }
        self.mix_hash(buf);
    }

    /// `DecryptAndHash`: the inverse of [`Self::encrypt_and_hash`]; on
    /// success `buf[..len-16]` holds the plaintext.
    pub(crate) fn decrypt_and_hash(&mut self, buf: &mut [u8]) -> Result<(), AeadFailure> {
        let mut h = Sha256::new();
        h.update(self.h);
        h.update(&*buf);
        let next_h = h.finalize();
        if let Some(k) = &self.k {
            let split = buf.len().checked_sub(TAG_LEN).ok_or(AeadFailure)?;
            let (body, tag_in) = buf.split_at_mut(split);
            let mut tag = [0u8; TAG_LEN];
            tag.copy_from_slice(tag_in);
            open(k, self.n, &self.h, body, &tag)?;
            self.n = self.n.wrapping_add(1);
        }
        self.h.copy_from_slice(&next_h);
        Ok(())
    }

    /// The handshake hash so far.
    pub(crate) fn handshake_hash(&self) -> [u8; HASH_LEN] {
        self.h
    }

    /// `Split()`: the initiator-to-responder and responder-to-initiator keys.
    pub(crate) fn split(&self) -> ([u8; KEY_LEN], [u8; KEY_LEN]) {
        hkdf2(&self.ck, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypt_inverts_encrypt_and_keeps_hashes_in_step() {
        let mut a = SymmetricState::new(b"test");
        let mut b = a.clone();
        a.mix_key(b"ikm");
        b.mix_key(b"ikm");
        let mut buf = [0u8; 5 + TAG_LEN];
        buf[..5].copy_from_slice(b"hello");
        a.encrypt_and_hash(&mut buf);
        assert_ne!(&buf[..5], b"hello");
        b.decrypt_and_hash(&mut buf).unwrap();
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(a.handshake_hash(), b.handshake_hash());
        assert_eq!(a.split(), b.split());
    }

    #[test]
    fn failed_decrypt_leaves_state_untouched() {
        let mut a = SymmetricState::new(b"test");
        a.mix_key(b"ikm");
        let mut b = a.clone();
        let mut buf = [0u8; 3 + TAG_LEN];
        a.encrypt_and_hash(&mut buf);
        buf[0] ^= 1;
        let before = b.handshake_hash();
        assert_eq!(b.decrypt_and_hash(&mut buf), Err(AeadFailure));
        assert_eq!(b.handshake_hash(), before);
        assert_eq!(b.n, 0);
    }

    #[test]
    fn rekey_changes_the_key_deterministically() {
        let mut k1 = [7u8; KEY_LEN];
        let mut k2 = [7u8; KEY_LEN];
        rekey(&mut k1);
        rekey(&mut k2);
        assert_eq!(k1, k2);
        assert_ne!(k1, [7u8; KEY_LEN]);
    }

    /// The `chacha20poly1305` crate, the reference our composition must
    /// match byte for byte.
    fn crate_seal(key: &[u8; KEY_LEN], counter: u64, ad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        use chacha20poly1305::aead::{AeadInOut, KeyInit as _};
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&(*key).into());
        cipher
            .encrypt_inout_detached(&nonce(counter), ad, buf.into())
            .unwrap()
            .into()
    }

    /// Lengths around each keystream block and pass boundary, up to past a
    /// channel frame.
    const LENGTHS: &[usize] = &[
        0, 1, 15, 16, 17, 63, 64, 65, 127, 128, 191, 192, 193, 255, 256, 257, 447, 448, 449, 482,
        511, 512, 513, 700, 1000,
    ];

    #[test]
    fn seal_and_open_match_the_chacha20poly1305_crate() {
        for (i, &len) in LENGTHS.iter().enumerate() {
            for ad_len in [0usize, 1, 16, 32, 33] {
                let key = [(i as u8).wrapping_mul(31).wrapping_add(ad_len as u8); KEY_LEN];
                let counter = (i as u64) << 33 | ad_len as u64;
                let ad: [u8; 33] = core::array::from_fn(|b| b as u8 ^ 0x5a);
                let ad = &ad[..ad_len];
                let plain: [u8; 1000] = core::array::from_fn(|b| (b * 7 + i) as u8);
                let (mut ours, mut theirs) = (plain, plain);
                let tag = seal(&key, counter, ad, &mut ours[..len]);
                let reference = crate_seal(&key, counter, ad, &mut theirs[..len]);
                assert_eq!(tag, reference, "len {len}");
                assert_eq!(ours, theirs, "len {len}");
                open(&key, counter, ad, &mut ours[..len], &tag).unwrap();
                assert_eq!(ours, plain, "len {len}");
            }
        }
    }

    /// RFC 8439, section 2.8.2.
    #[test]
    fn rfc8439_aead_test_vector() {
        let key: [u8; 32] = core::array::from_fn(|i| 0x80 + i as u8);
        let ad = [
            0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
        ];
        let plain = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        // Nonce 07000000 4041424344454647: the 4 bytes 07 00 00 00, then a
        // little-endian counter.
        let n = [7, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47];
        // Its nonce is not one of ours (4 zero bytes, then the counter).
        let nonce = Nonce::from(n);
        let mut buf = *plain;
        let tag = seal_in(&key, &nonce, &ad, &mut buf, &mut [0u8; HEAD_LEN]);
        assert_eq!(
            hex::encode(buf),
            concat!(
                "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6",
                "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36",
                "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc",
                "3ff4def08e4b7a9de576d26586cec64b6116",
            )
        );
        assert_eq!(hex::encode(tag), "1ae10b594f09e26a7e902ecbd0600691");
        open_in(&key, &nonce, &ad, &mut buf, &tag, &mut [0u8; HEAD_LEN]).unwrap();
        assert_eq!(&buf, plain);
    }

    #[test]
    fn open_refuses_any_flipped_bit_and_leaves_the_text() {
        let key = [9u8; KEY_LEN];
        for len in [0usize, 100, 192, 482] {
            let mut whole: [u8; 482] = core::array::from_fn(|b| b as u8);
            let buf = &mut whole[..len];
            let tag = seal(&key, 5, b"ad", buf);
            let mut sealed = [0u8; 482];
            sealed[..len].copy_from_slice(buf);
            let sealed = &sealed[..len];
            for bit in 0..8 {
                let mut bad_tag = tag;
                bad_tag[bit % TAG_LEN] ^= 1 << bit;
                assert_eq!(open(&key, 5, b"ad", buf, &bad_tag), Err(AeadFailure));
                assert_eq!(buf, sealed);
                if len > 0 {
                    buf[(bit * 61) % len] ^= 1 << bit;
                    assert_eq!(open(&key, 5, b"ad", buf, &tag), Err(AeadFailure));
                    buf[(bit * 61) % len] ^= 1 << bit;
                }
            }
            assert_eq!(open(&key, 6, b"ad", buf, &tag), Err(AeadFailure));
            assert_eq!(open(&key, 5, b"aD", buf, &tag), Err(AeadFailure));
            assert_eq!(buf, sealed);
            open(&key, 5, b"ad", buf, &tag).unwrap();
            assert!(buf.iter().enumerate().all(|(i, &b)| b == i as u8));
        }
    }

    /// The bound on the text is ChaCha20's: its last block can be computed,
    /// the next cannot.
    #[test]
    fn the_longest_text_ends_at_chacha20s_last_block() {
        use cipher::StreamCipherSeek;
        let mut cipher = ChaCha20::new(&Key::from([1u8; KEY_LEN]), &nonce(0));
        // The text is keystream bytes 64 .. 64 + MAX_TEXT_LEN.
        cipher.try_seek(MAX_TEXT_LEN).unwrap();
        let mut block = [0u8; BLOCK];
        assert!(cipher.try_apply_keystream(&mut block).is_ok());
        assert!(cipher.try_apply_keystream(&mut [0u8; 1]).is_err());
    }

    /// What is left in the scratch block: never Poly1305's key, never
    /// keystream, never plaintext.
    #[test]
    fn the_scratch_block_keeps_nothing_secret() {
        let key = [3u8; KEY_LEN];
        for len in [0usize, 1, 100, 191, 192, 193, 482] {
            let plain: [u8; 482] = core::array::from_fn(|b| (b as u8) | 1);
            let mut buf = plain;
            let mut head = [0u8; HEAD_LEN];
            let tag = seal_in(&key, &nonce(1), b"", &mut buf[..len], &mut head);
            let n = len.min(HEAD_LEN - BLOCK);
            assert!(head[..BLOCK].iter().all(|&b| b == 0), "len {len}");
            assert_eq!(&head[BLOCK..BLOCK + n], &buf[..n], "ciphertext only");
            assert!(head[BLOCK + n..].iter().all(|&b| b == 0), "len {len}");

            let sealed = buf;
            let mut head = [0u8; HEAD_LEN];
            let mut bad_tag = tag;
            bad_tag[0] ^= 1;
            let refused = open_in(&key, &nonce(1), b"", &mut buf[..len], &bad_tag, &mut head);
            assert_eq!(refused, Err(AeadFailure));
            assert_eq!(head, [0u8; HEAD_LEN], "wiped after a refusal");
            assert_eq!(buf, sealed);

            let mut head = [0u8; HEAD_LEN];
            open_in(&key, &nonce(1), b"", &mut buf[..len], &tag, &mut head).unwrap();
            assert_eq!(buf[..len], plain[..len]);
            assert!(head[..BLOCK].iter().all(|&b| b == 0), "len {len}");
            assert_eq!(&head[BLOCK..BLOCK + n], &sealed[..n], "ciphertext only");
            assert!(head[BLOCK + n..].iter().all(|&b| b == 0), "len {len}");
        }
    }

    /// The lengths block: a ciphertext with a zero byte added, or its AD
    /// moved into the text, is refused under the same tag.
    #[test]
    fn lengths_are_authenticated() {
        let key = [4u8; KEY_LEN];
        let mut buf = [9u8; 101];
        let tag = seal(&key, 2, b"", &mut buf[..100]);
        buf[100] = 0;
        assert_eq!(open(&key, 2, b"", &mut buf, &tag), Err(AeadFailure));
        assert_eq!(open(&key, 2, b"", &mut buf[..99], &tag), Err(AeadFailure));
        assert_eq!(open(&key, 2, &[0], &mut buf[..100], &tag), Err(AeadFailure));
        open(&key, 2, b"", &mut buf[..100], &tag).unwrap();
    }

    proptest::proptest! {
        #[test]
        fn any_input_matches_the_crate(
            key in proptest::array::uniform32(proptest::num::u8::ANY),
            counter in proptest::num::u64::ANY,
            ad_len in 0usize..300,
            len in 0usize..1500,
            fill in proptest::num::u8::ANY,
        ) {
            let ad = [fill ^ 0x33; 300];
            let plain: [u8; 1500] = core::array::from_fn(|i| fill.wrapping_add(i as u8));
            let (mut ours, mut theirs) = (plain, plain);
            let tag = seal(&key, counter, &ad[..ad_len], &mut ours[..len]);
            let reference = crate_seal(&key, counter, &ad[..ad_len], &mut theirs[..len]);
            proptest::prop_assert_eq!(tag, reference);
            proptest::prop_assert_eq!(ours, theirs);
            open(&key, counter, &ad[..ad_len], &mut ours[..len], &tag).unwrap();
            proptest::prop_assert_eq!(ours, plain);
        }
    }
}
