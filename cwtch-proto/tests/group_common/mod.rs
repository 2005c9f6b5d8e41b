//! Helpers shared by the group tests.
#![allow(dead_code)]

use chacha20::ChaCha20Rng;
use cwtch_proto::group::{
    Group, GroupSecret, MessageHash, MessageKind, OutgoingMessage, SEALED_BLOB_LEN, Sealed,
    SeenEntry, ServerList,
};
use cwtch_proto::{Identity, OnionAddress};
use rand_core::SeedableRng;

pub fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

pub fn identity(seed: u8) -> Identity {
    Identity::from_seed(&[seed; 32])
}

pub fn server(seed: u8) -> OnionAddress {
    Identity::from_seed(&[seed.wrapping_add(0x80); 32]).address()
}

pub fn servers(seeds: &[u8]) -> ServerList {
    seeds.iter().map(|&s| server(s)).collect()
}

pub fn group(secret: u8, server_seeds: &[u8]) -> Group {
    Group::from_secret(
        GroupSecret::from_bytes(&[secret; 32]),
        servers(server_seeds),
    )
}

/// SPEC.md section 6, "Vector": the group (secret `42 x 32`) and the blob
/// of its fixed message, with what sealing it returned.
pub fn spec_vector() -> (Group, [u8; SEALED_BLOB_LEN], Sealed) {
    let g = group(0x42, &[1]);
    let srv = g.servers()[0];
    let alice = identity(0x01);
    let bob = identity(0x02);
    let seen = [SeenEntry {
        member: g.id().member_id(&bob.public()),
        seq: 3,
    }];
    let msg = OutgoingMessage {
        kind: MessageKind::TEXT,
        body: b"hello cwtch",
        seq: 5,
        timestamp: cwtch_proto::UnixMicros::from_micros(1_764_000_000_000_000),
        prev_hash: MessageHash([0x11; 32]),
        seen: &seen,
    };
    let mut blob = [0u8; SEALED_BLOB_LEN];
    let sealed = g
        .keys()
        .seal(&alice, &srv, &msg, &mut rng(0x07), &mut blob)
        .unwrap();
    (g, blob, sealed)
}
