//! Detection cost against its baseline, and the other per-message costs of
//! groups: `cargo bench -p cwtch-proto --bench detection`.
//!
//! - `detect/tag_miss`: one detection-tag check of a blob that is not for
//!   the group (what a client pays per blob and group while syncing);
//! - `detect/failed_open_baseline`: a failed XChaCha20-Poly1305 open of the
//!   same 2048-byte blob (what trial decryption would pay);
//! - `detect/detector_16_groups`: the multi-group detector, 16 groups;
//! - `message/seal`, `message/open_verify`: per message, signature included;
//! - `gap/ingest_in_order`, `gap/ingest_with_summary`: tracker updates.
//!
//! Before the criterion runs, a plain timing loop prints the ratio of the
//! first two.

use core::hint::black_box;
use std::time::Instant as StdInstant;

use chacha20::ChaCha20Rng;
use chacha20::rand_core::SeedableRng;
use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, KeyInit, XChaCha20Poly1305};
use criterion::{Criterion, criterion_group, criterion_main};
use cwtch_proto::group::{
    Detector, GapTracker, Group, GroupSecret, MemberId, MessageHash, MessageKind, OutgoingMessage,
    SEALED_BLOB_LEN, SEEN_MAX, SeenEntry,
};
use cwtch_proto::{Identity, Instant};

const HEADER: usize = 40;
const CT: usize = SEALED_BLOB_LEN - HEADER - 16;

fn group(n: u8) -> Group {
    let server = Identity::from_seed(&[0x80; 32]).address();
    Group::from_secret(
        GroupSecret::from_bytes(&[n; 32]),
        [server].into_iter().collect(),
    )
}

fn sealed_blob(g: &Group, seed: u8) -> [u8; SEALED_BLOB_LEN] {
    let msg = OutgoingMessage {
        kind: MessageKind::TEXT,
        body: &[b'x'; 1000],
        seq: 1,
        timestamp: Instant::ZERO,
        prev_hash: MessageHash::ZERO,
        seen: &[],
    };
    let mut blob = [0u8; SEALED_BLOB_LEN];
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    g.keys()
        .seal(
            &Identity::from_seed(&[1; 32]),
            &g.servers()[0],
            &msg,
            &mut rng,
            &mut blob,
        )
        .expect("seal");
    blob
}

/// What trial decryption costs: an XChaCha20-Poly1305 open of the blob
/// with a key that is not the sealer's (so the Poly1305 check fails).
fn failed_open(aead: &XChaCha20Poly1305, blob: &[u8; SEALED_BLOB_LEN]) -> bool {
    let mut buf = [0u8; CT];
    buf.copy_from_slice(&blob[HEADER..HEADER + CT]);
    let nonce: [u8; 24] = blob[..24].try_into().expect("24");
    let tag: [u8; 16] = blob[HEADER + CT..].try_into().expect("16");
    aead.decrypt_inout_detached(
        &nonce.into(),
        &blob[..HEADER],
        InOutBuf::from(&mut buf[..]),
        &tag.into(),
    )
    .is_err()
}

fn per_op_ns(iters: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iters / 10 {
        f();
    }
    let start = StdInstant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters)
}

fn print_ratio() {
    let mine = group(1);
    let other = group(2);
    let blob = sealed_blob(&other, 3);
    let key = mine.keys().detection_key();
    let aead = XChaCha20Poly1305::new(&[9u8; 32].into());
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let d = per_op_ns(200_000, || {
            black_box(key.detect(black_box(&blob)));
        });
        let o = per_op_ns(50_000, || {
            black_box(failed_open(&aead, black_box(&blob)));
        });
        best = (best.0.min(d), best.1.min(o));
    }
    println!(
        "detection tag check: {:.1} ns; failed XChaCha20-Poly1305 open of the same {} B blob: {:.1} ns; ratio 1/{:.1} (target: at most 1/10)",
        best.0,
        SEALED_BLOB_LEN,
        best.1,
        best.1 / best.0
    );
}

fn bench(c: &mut Criterion) {
    print_ratio();

    let mine = group(1);
    let other = group(2);
    let blob = sealed_blob(&other, 3);
    let key = mine.keys().detection_key().clone();
    let aead = XChaCha20Poly1305::new(&[9u8; 32].into());

    let mut d = c.benchmark_group("detect");
    d.bench_function("tag_miss", |b| b.iter(|| key.detect(black_box(&blob))));
    d.bench_function("failed_open_baseline", |b| {
        b.iter(|| failed_open(&aead, black_box(&blob)))
    });
    let mut detector: Detector<u8, 16> = Detector::new();
    for i in 0..16u8 {
        detector
            .insert(i, group(10 + i).keys().detection_key())
            .expect("room");
    }
    d.bench_function("detector_16_groups", |b| {
        b.iter(|| detector.detect(black_box(&blob)))
    });
    d.finish();

    let mut m = c.benchmark_group("message");
    let alice = Identity::from_seed(&[1; 32]);
    let server = mine.servers()[0];
    let seen: [SeenEntry; SEEN_MAX] = core::array::from_fn(|i| SeenEntry {
        member: MemberId([i as u8; 16]),
        seq: 1000,
    });
    let body = [b'y'; 500];
    let msg = OutgoingMessage {
        kind: MessageKind::TEXT,
        body: &body,
        seq: 42,
        timestamp: Instant::ZERO,
        prev_hash: MessageHash::ZERO,
        seen: &seen,
    };
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let mut out = [0u8; SEALED_BLOB_LEN];
    m.bench_function("seal", |b| {
        b.iter(|| {
            mine.keys()
                .seal(&alice, &server, black_box(&msg), &mut rng, &mut out)
                .expect("seal")
        })
    });
    let sealed = out;
    let mut work = [0u8; SEALED_BLOB_LEN];
    m.bench_function("open_verify", |b| {
        b.iter(|| {
            mine.keys()
                .open(&server, black_box(&sealed), &mut work)
                .map(|o| o.seq)
                .expect("open")
        })
    });
    m.finish();

    let mut g = c.benchmark_group("gap");
    g.bench_function("ingest_in_order", |b| {
        let mut t: GapTracker = GapTracker::new();
        let mut seq = 0u64;
        b.iter(|| {
            let r = t.ingest_parts(
                MemberId([1; 16]),
                seq,
                &MessageHash([seq as u8; 32]),
                &MessageHash([seq.wrapping_sub(1) as u8; 32]),
                &[],
            );
            seq += 1;
            while t.poll_event().is_some() {}
            r
        })
    });
    g.bench_function("ingest_with_summary", |b| {
        let mut t: GapTracker = GapTracker::new();
        let mut seq = 0u64;
        b.iter(|| {
            let seen: [SeenEntry; SEEN_MAX] = core::array::from_fn(|i| SeenEntry {
                member: MemberId([i as u8 + 2; 16]),
                seq: seq + i as u64,
            });
            let r = t.ingest_parts(
                MemberId([1; 16]),
                seq,
                &MessageHash([seq as u8; 32]),
                &MessageHash([seq.wrapping_sub(1) as u8; 32]),
                &seen,
            );
            seq += 1;
            while t.poll_event().is_some() {}
            r
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
