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

/// The keys of a group recomputed from the spec (HKDF-SHA256 labels), so
/// the test can play a member of two groups who re-seals a message.
pub fn spec_keys(secret: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(cwtch_proto::group::secret::KDF_SALT), secret);
    let mut seal = [0u8; 32];
    let mut detect = [0u8; 32];
    hk.expand(cwtch_proto::group::secret::LABEL_SEAL, &mut seal)
        .unwrap();
    hk.expand(cwtch_proto::group::secret::LABEL_DETECT, &mut detect)
        .unwrap();
    (seal, detect)
}

/// Seals `plaintext` under the keys of `secret` with `nonce`, as the spec
/// says, without the library: what a member of two groups can do.
pub fn reseal(secret: &[u8; 32], plaintext: &[u8], nonce: [u8; 24]) -> [u8; SEALED_BLOB_LEN] {
    use chacha20poly1305::aead::inout::InOutBuf;
    use chacha20poly1305::{AeadInOut, KeyInit, XChaCha20Poly1305};
    let (seal_key, detect_key) = spec_keys(secret);
    let input: [u8; 16] = nonce[..16].try_into().unwrap();
    let tag = chacha20::hchacha::<chacha20::R20>(&detect_key.into(), &input.into());
    let mut blob = [0u8; SEALED_BLOB_LEN];
    blob[..24].copy_from_slice(&nonce);
    blob[24..40].copy_from_slice(&tag[..16]);
    blob[40..40 + cwtch_proto::group::message::PLAINTEXT_LEN].copy_from_slice(plaintext);
    let (header, rest) = blob.split_at_mut(40);
    let (body, aead_tag) = rest.split_at_mut(cwtch_proto::group::message::PLAINTEXT_LEN);
    let t = XChaCha20Poly1305::new(&seal_key.into())
        .encrypt_inout_detached(&nonce.into(), header, InOutBuf::from(body))
        .unwrap();
    aead_tag.copy_from_slice(&t);
    blob
}
