//! Kept blobs (`group::kept`): the short form a member stores to answer
//! recovery requests seals back into the very same blob; its length
//! follows the message, never reaches a blob's; misuse is a typed error.

mod group_common;

use cwtch_proto::group::message::Malformed;
use cwtch_proto::group::{
    GroupKeys, KEPT_MAX_LEN, KEPT_MIN_LEN, MAX_BODY_LEN, MessageHash, MessageKind, OpenError,
    OutgoingMessage, SEALED_BLOB_LEN, SEEN_MAX, SeenEntry, UnkeepError,
};
use group_common::{group, identity, rng};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

/// Seals `body` with `seen` entries; the blob.
fn sealed(
    keys: &GroupKeys,
    kind: MessageKind,
    body: &[u8],
    seen: &[SeenEntry],
    seed: u8,
) -> [u8; SEALED_BLOB_LEN] {
    let g = group(1, &[1]);
    let srv = g.servers()[0];
    let msg = OutgoingMessage {
        kind,
        body,
        seq: 9,
        timestamp: cwtch_proto::UnixMicros::from_secs(1_764_000_000),
        prev_hash: MessageHash([3; 32]),
        seen,
    };
    let mut blob = [0u8; SEALED_BLOB_LEN];
    keys.seal(&identity(10), &srv, &msg, &mut rng(seed), &mut blob)
        .unwrap();
    blob
}

fn keep(keys: &GroupKeys, blob: &[u8]) -> Vec<u8> {
    let mut out = [0u8; KEPT_MAX_LEN];
    let n = keys.keep(blob, &mut out).unwrap();
    out[..n].to_vec()
}

fn unkeep(keys: &GroupKeys, kept: &[u8]) -> Result<[u8; SEALED_BLOB_LEN], UnkeepError> {
    let mut blob = [0u8; SEALED_BLOB_LEN];
    keys.unkeep(kept, &mut blob).map(|()| blob)
}

fn seen_entries(n: usize) -> Vec<SeenEntry> {
    let g = group(1, &[1]);
    (0..n)
        .map(|i| SeenEntry {
            member: g.id().member_id(&identity(20 + i as u8).public()),
            seq: 100 + i as u64,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any message: kept, then sealed again, is the same blob, and the
    /// kept form is as long as the layout says.
    #[test]
    fn kept_seals_back_into_the_same_blob(
        len in 0..=MAX_BODY_LEN,
        n in 0..=SEEN_MAX,
        binary in any::<bool>(),
        seed in any::<u8>(),
    ) {
        let g = group(1, &[1]);
        let keys = g.keys();
        let body: Vec<u8> = if binary {
            (0..len).map(|i| (i * 7 + 1) as u8).collect()
        } else {
            vec![b'x'; len]
        };
        let kind = if binary { MessageKind::ADVERTS } else { MessageKind::TEXT };
        let blob = sealed(keys, kind, &body, &seen_entries(n), seed);
        let kept = keep(keys, &blob);
        prop_assert_eq!(kept.len(), 24 + 115 + 24 * n + 2 + len + 96);
        prop_assert!(kept.len() < SEALED_BLOB_LEN);
        prop_assert_eq!(unkeep(keys, &kept).unwrap(), blob);
    }
}

#[test]
fn the_shortest_and_the_longest_kept_forms() {
    let g = group(1, &[1]);
    let keys = g.keys();
    let short = keep(keys, &sealed(keys, MessageKind::TEXT, b"", &[], 1));
    assert_eq!(short.len(), KEPT_MIN_LEN);
    let body = vec![b'y'; MAX_BODY_LEN];
    let long = keep(
        keys,
        &sealed(keys, MessageKind::TEXT, &body, &seen_entries(SEEN_MAX), 2),
    );
    assert_eq!(long.len(), KEPT_MAX_LEN);
    // A short text, as most are: a tenth of the blob.
    let hello = keep(keys, &sealed(keys, MessageKind::TEXT, b"hello", &[], 3));
    assert_eq!(hello.len(), 242);
}

/// SPEC.md section 14, "Keeping blobs": the kept form of section 6's vector.
#[test]
fn fixed_vector() {
    let (g, blob, _) = group_common::spec_vector();
    let kept = keep(g.keys(), &blob);
    assert_eq!(kept.len(), 272);
    // The nonce, then the plaintext from its version byte.
    assert_eq!(hex::encode(&kept[..25]), KEPT_FIRST25);
    assert_eq!(hex::encode(Sha256::digest(&kept)), KEPT_SHA256);
    let back = unkeep(g.keys(), &kept).unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(back)),
        "57b9926ed2a9f455eac328889fbc979be8b9efc1393fa9c002cb84b70ec11233"
    );
}

const KEPT_FIRST25: &str = "f400927857aaf64114f561baacb379708c79a1dc1476ab5701";
const KEPT_SHA256: &str = "664ccd0e7a5e4c828a3ff1377655ecc1ab06351f068cd00bb113978e5368de0c";

#[test]
fn keeping_what_is_not_a_good_blob_is_refused() {
    let g = group(1, &[1]);
    let keys = g.keys();
    let blob = sealed(keys, MessageKind::TEXT, b"hi", &[], 1);
    let mut out = [0u8; KEPT_MAX_LEN];
    assert_eq!(
        keys.keep(&blob[..100], &mut out),
        Err(OpenError::WrongLength { found: 100 })
    );
    let other = group(2, &[1]);
    assert_eq!(other.keys().keep(&blob, &mut out), Err(OpenError::NotForUs));
    let mut flipped = blob;
    flipped[500] ^= 1;
    assert_eq!(keys.keep(&flipped, &mut out), Err(OpenError::Tampered));
    let mut small = [0u8; KEPT_MAX_LEN - 1];
    assert_eq!(
        keys.keep(&blob, &mut small),
        Err(OpenError::BufferTooSmall {
            required: KEPT_MAX_LEN
        })
    );
}

#[test]
fn a_damaged_kept_form_is_a_typed_error_never_a_panic() {
    let g = group(1, &[1]);
    let keys = g.keys();
    let blob = sealed(keys, MessageKind::TEXT, b"hello", &seen_entries(2), 1);
    let kept = keep(keys, &blob);
    let n_at = 24 + 114;
    let len_at = 24 + 115 + 2 * 24;
    for cut in [0, 1, 24, 100, KEPT_MIN_LEN - 1, kept.len() - 1] {
        assert!(
            matches!(
                unkeep(keys, &kept[..cut]),
                Err(UnkeepError::WrongLength { .. })
            ),
            "{cut}"
        );
    }
    let mut longer = kept.clone();
    longer.push(0);
    assert_eq!(
        unkeep(keys, &longer),
        Err(UnkeepError::WrongLength {
            found: kept.len() + 1
        })
    );
    let mut many = kept.clone();
    many[n_at] = 9;
    assert_eq!(
        unkeep(keys, &many),
        Err(UnkeepError::Malformed(Malformed::SeenSummary))
    );
    // One seen entry fewer than held: the lengths no longer add up.
    let mut fewer = kept.clone();
    fewer[n_at] = 1;
    assert!(unkeep(keys, &fewer).is_err());
    let mut huge = kept.clone();
    huge[len_at..len_at + 2].copy_from_slice(&(MAX_BODY_LEN as u16 + 1).to_le_bytes());
    assert_eq!(
        unkeep(keys, &huge),
        Err(UnkeepError::Malformed(Malformed::BodyLength))
    );
    let mut version = kept.clone();
    version[24] = 2;
    assert_eq!(
        unkeep(keys, &version),
        Err(UnkeepError::Malformed(Malformed::Version(2)))
    );
    let mut not_text = kept.clone();
    not_text[len_at + 2] = 0xff;
    assert_eq!(
        unkeep(keys, &not_text),
        Err(UnkeepError::Malformed(Malformed::NotUtf8))
    );
    let mut small = [0u8; SEALED_BLOB_LEN - 1];
    assert_eq!(
        keys.unkeep(&kept, &mut small),
        Err(UnkeepError::BufferTooSmall)
    );
}

/// A kept form is sealed only under its own group's keys, and only its
/// own group's blobs are kept. Without the check, another group's keys
/// would seal it into a blob that group detects and decrypts: the first
/// group's plaintext, handed over (opening refuses it with `WrongGroup`,
/// but only after decrypting).
#[test]
fn another_groups_message_is_neither_kept_nor_sealed() {
    let g = group(1, &[1]);
    let other = group(2, &[1]);
    let blob = sealed(g.keys(), MessageKind::TEXT, b"secret of one group", &[], 1);
    let kept = keep(g.keys(), &blob);
    assert_eq!(unkeep(other.keys(), &kept), Err(UnkeepError::WrongGroup));
    // The same message sealed under the other group's keys (as a member of
    // both could): the other group detects it, and does not keep it.
    let mut pt = [0u8; 1992];
    let srv = g.servers()[0];
    let mut work = [0u8; SEALED_BLOB_LEN];
    g.keys().open(&srv, &blob, &mut work).unwrap();
    pt.copy_from_slice(&work[40..2032]);
    let resealed = group_common::reseal(&[2; 32], &pt, [5; 24]);
    assert!(other.keys().detect(&resealed));
    let mut out = [0u8; KEPT_MAX_LEN];
    assert_eq!(
        other.keys().keep(&resealed, &mut out),
        Err(OpenError::WrongGroup)
    );
}
