//! Fixed seeds and a fixed RNG produce fixed handshake and frame bytes. The
//! same values are printed in SPEC.md, sections 2 and 3; if this test
//! changes, the wire format changed.

mod common;

use common::{Pair, Side};
use sha2::{Digest, Sha256};

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Alice: seed 01×32, RNG ChaCha20Rng(0b×32); Bob: seed 02×32, RNG
/// ChaCha20Rng(0c×32). Alice sends "hello" after the handshake.
#[allow(clippy::type_complexity)]
fn transcript() -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, [u8; 32]) {
    let mut p = Pair::alice_bob();
    p.drive();
    let msg1 = p.a_sent[0].clone();
    let msg2 = p.b_sent[0].clone();
    let confirm = p.a_sent[1].clone();
    let side: &mut Side = &mut p.a;
    side.conn.send(b"hello").unwrap();
    let hello = side.transmit(p.now).remove(0);
    let hash = p.a.conn.handshake_hash().unwrap();
    (msg1, msg2, confirm, hello, hash)
}

#[test]
fn handshake_and_frame_bytes_are_fixed() {
    let (msg1, msg2, confirm, hello, hash) = transcript();
    if std::env::var_os("PRINT_VECTORS").is_some() {
        println!("msg1 = {}", hex(&msg1));
        println!("msg2 = {}", hex(&msg2));
        println!("handshake_hash = {}", hex(&hash));
        println!(
            "confirm sha256 = {} first16 = {}",
            sha(&confirm),
            hex(&confirm[..16])
        );
        println!(
            "hello sha256 = {} first16 = {}",
            sha(&hello),
            hex(&hello[..16])
        );
    }
    assert_eq!(hex(&msg1), MSG1);
    assert_eq!(hex(&msg2), MSG2);
    assert_eq!(hex(&hash), HANDSHAKE_HASH);
    assert_eq!(sha(&confirm), CONFIRM_SHA256);
    assert_eq!(sha(&hello), HELLO_SHA256);
}

const MSG1: &str = "01112866436d77cdbe987da36d85f61bb9cde2ba4f024a078f6d11f7e5886fe85b44234cc27b32b998dad285630bcae99b7f5e531650975f05248eef10ba5df6f94d82df2f48696c1ec03210428e1f8a443b73395d91e818f7319804e2a7ecf7cc";
const MSG2: &str = "96593613505b9a0aed14334a0cd60347b47f3f801c6a2899dd6def6518034e355fdc5d98130152b64ccb90209ca57379";
const HANDSHAKE_HASH: &str = "114286fdf545c9b9433c8e653629699192e31f2969eeefb570eb6b46e9107abe";
const CONFIRM_SHA256: &str = "b306090de6a91947abf1710b9f94bb96a784d170ca97775a10bbe699813ca898";
const HELLO_SHA256: &str = "dc9848c17032149a86f2d744a0065d37b92f76807d85c35945b82a3ceebd41b0";
