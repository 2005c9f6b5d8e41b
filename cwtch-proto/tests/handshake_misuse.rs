//! Misuse of the handshake messages, named after the attack: small-order
//! ephemeral keys, wrong lengths, messages out of order, short buffers.
//! Every one is a typed error, and a rejected message leaves the state as
//! it was.

use chacha20::ChaCha20Rng;
use cwtch_proto::Identity;
use cwtch_proto::handshake::{
    HandshakeError, InitiatorHandshake, MSG1_LEN, MSG2_LEN, ResponderHandshake,
};
use rand_core::SeedableRng;

/// Montgomery u-coordinates of small-order points: X25519 with any secret
/// gives the all-zero output for these (RFC 7748 section 6.1).
const SMALL_ORDER: [[u8; 32]; 3] = [
    [0; 32],
    {
        let mut one = [0u8; 32];
        one[0] = 1;
        one
    },
    // The point of order 8 (as listed in libsodium and the Curve25519 paper).
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
];

fn parties() -> (InitiatorHandshake, ResponderHandshake, ChaCha20Rng) {
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let alice = Identity::from_seed(&[1; 32]);
    let bob = Identity::from_seed(&[2; 32]);
    let initiator = InitiatorHandshake::new(alice, bob.public(), &mut rng);
    let responder = ResponderHandshake::new(bob, &mut rng);
    (initiator, responder, rng)
}

#[test]
fn small_order_ephemeral_in_message1_is_refused_and_changes_nothing() {
    let (mut initiator, mut responder, _) = parties();
    let mut msg1 = [0u8; MSG1_LEN];
    initiator.write_message1(&mut msg1).unwrap();
    for point in SMALL_ORDER {
        let mut evil = msg1;
        evil[1..33].copy_from_slice(&point);
        assert_eq!(
            responder.read_message1(&evil),
            Err(HandshakeError::NonContributory)
        );
        assert!(responder.remote().is_none());
    }
    // The genuine message still works afterwards.
    let caller = responder.read_message1(&msg1).unwrap();
    assert_eq!(caller, Identity::from_seed(&[1; 32]).public());
}

#[test]
fn small_order_ephemeral_in_message2_is_refused_and_changes_nothing() {
    let (mut initiator, mut responder, _) = parties();
    let mut msg1 = [0u8; MSG1_LEN];
    initiator.write_message1(&mut msg1).unwrap();
    responder.read_message1(&msg1).unwrap();
    let mut msg2 = [0u8; MSG2_LEN];
    let (_, responder_keys) = responder.write_message2(&mut msg2).unwrap();
    for point in SMALL_ORDER {
        let mut evil = msg2;
        evil[..32].copy_from_slice(&point);
        assert!(matches!(
            initiator.read_message2(&evil),
            Err(HandshakeError::NonContributory)
        ));
    }
    let keys = initiator.read_message2(&msg2).unwrap();
    assert_eq!(keys.handshake_hash, responder_keys.handshake_hash);
}

#[test]
fn wrong_lengths_are_typed_errors() {
    let (mut initiator, mut responder, _) = parties();
    let mut msg1 = [0u8; MSG1_LEN];
    initiator.write_message1(&mut msg1).unwrap();
    for len in [0, 1, MSG1_LEN - 1] {
        assert_eq!(
            responder.read_message1(&msg1[..len]),
            Err(HandshakeError::WrongLength {
                expected: MSG1_LEN,
                found: len
            })
        );
    }
    let mut long = [0u8; MSG1_LEN + 1];
    long[..MSG1_LEN].copy_from_slice(&msg1);
    assert!(matches!(
        responder.read_message1(&long),
        Err(HandshakeError::WrongLength { .. })
    ));
    assert!(matches!(
        initiator.read_message2(&[0u8; MSG2_LEN - 1]),
        Err(HandshakeError::WrongLength {
            expected: MSG2_LEN,
            ..
        })
    ));
}

#[test]
fn message2_before_message1_is_refused() {
    let (_, responder, _) = parties();
    let mut msg2 = [0u8; MSG2_LEN];
    assert!(matches!(
        responder.write_message2(&mut msg2),
        Err(HandshakeError::Authentication)
    ));
}

#[test]
fn short_output_buffers_are_typed_errors() {
    let (mut initiator, mut responder, _) = parties();
    let mut small = [0u8; MSG1_LEN - 1];
    assert_eq!(
        initiator.write_message1(&mut small),
        Err(HandshakeError::BufferTooSmall { required: MSG1_LEN })
    );
    let mut msg1 = [0u8; MSG1_LEN];
    initiator.write_message1(&mut msg1).unwrap();
    responder.read_message1(&msg1).unwrap();
    let mut small2 = [0u8; MSG2_LEN - 1];
    assert!(matches!(
        responder.write_message2(&mut small2),
        Err(HandshakeError::BufferTooSmall { required: MSG2_LEN })
    ));
}
