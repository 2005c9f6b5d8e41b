//! Detection cost against its baseline, and the other per-message costs of
//! groups: `cargo bench -p cwtch-proto --bench detection`.
//!
//! - `detect/tag_miss`: one detection-tag check of a blob that is not for
//!   the group (what a client pays per blob and group while syncing);
//! - `detect/failed_open_baseline`: a failed XChaCha20-Poly1305 open of the
//!   same 2048-byte blob (what trial decryption would pay);
//! - `detect/detector_16_groups`: the multi-group detector, 16 groups;
//! - `message/seal`, `message/open_verify`: per message, signature included;
//!   baselines `message/sign_then_encrypt` and `message/decrypt_then_verify`:
//!   what the reference does per message (an Ed25519 signature over the
//!   message, then one AEAD over the padded blob: XChaCha20-Poly1305 here,
//!   XSalsa20-Poly1305 there, the same cost class), with the same key
//!   types and sizes;
//! - `gap/ingest_in_order`, `gap/ingest_with_summary`: tracker updates;
//!   baseline `gap/seen_set`: the naive tracker, a map from member to the
//!   set of sequence numbers seen (unbounded), checking the predecessor.
//!
//! Before the criterion runs, a plain timing loop prints each ratio
//! (interleaved rounds, best of each).

use core::hint::black_box;
use std::time::Instant as StdInstant;

use chacha20::ChaCha20Rng;
use chacha20::rand_core::SeedableRng;
use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, KeyInit, XChaCha20Poly1305};
use criterion::{Criterion, criterion_group, criterion_main};
use cwtch_proto::Identity;
use cwtch_proto::group::{
    Detector, GapTracker, Group, GroupSecret, MemberId, MessageHash, MessageKind, OutgoingMessage,
    SEALED_BLOB_LEN, SEEN_MAX, SeenEntry,
};
use ed25519_dalek::{Signer, SigningKey, Verifier};
use std::collections::{BTreeMap, BTreeSet};

const HEADER: usize = 40;
const CT: usize = SEALED_BLOB_LEN - HEADER - 16;

fn group(n: u8) -> Group {
    let server = Identity::from_seed(&[0x80; 32]).address();
    Group::from_secret(
        GroupSecret::from_bytes(&[n; 32]),
        [server].into_iter().collect(),
    )
}

/// A text message with sequence number `seq`.
fn text<'a>(body: &'a [u8], seq: u64, seen: &'a [SeenEntry]) -> OutgoingMessage<'a> {
    OutgoingMessage {
        kind: MessageKind::TEXT,
        body,
        seq,
        timestamp: cwtch_proto::UnixMicros::EPOCH,
        prev_hash: MessageHash::ZERO,
        seen,
    }
}

fn sealed_blob(g: &Group, seed: u8) -> [u8; SEALED_BLOB_LEN] {
    let msg = text(&[b'x'; 1000], 1, &[]);
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

/// The reference's per-message sealing: sign the message, then encrypt
/// the padded blob (signature inside) under the group key.
fn sign_then_encrypt(
    signer: &SigningKey,
    aead: &XChaCha20Poly1305,
    body: &[u8],
    out: &mut [u8; SEALED_BLOB_LEN],
) {
    let sig = signer.sign(body);
    out.fill(0);
    out[HEADER..HEADER + 64].copy_from_slice(&sig.to_bytes());
    out[HEADER + 64..HEADER + 64 + body.len()].copy_from_slice(body);
    let nonce = [7u8; 24];
    let (head, rest) = out.split_at_mut(HEADER);
    let (ct, tag_out) = rest.split_at_mut(CT);
    let tag = aead
        .encrypt_inout_detached(&nonce.into(), head, InOutBuf::from(ct))
        .expect("encrypt");
    tag_out.copy_from_slice(&tag);
}

/// Its opening: decrypt, then verify the signature over the message
/// (`strict`: dalek's `verify_strict`, as we do, refusing small-order keys
/// and non-canonical signatures; else plain `verify`).
fn decrypt_then_verify(
    signer: &SigningKey,
    aead: &XChaCha20Poly1305,
    blob: &[u8; SEALED_BLOB_LEN],
    body_len: usize,
    strict: bool,
) -> bool {
    let mut buf = [0u8; CT];
    buf.copy_from_slice(&blob[HEADER..HEADER + CT]);
    let tag: [u8; 16] = blob[HEADER + CT..].try_into().expect("16");
    if aead
        .decrypt_inout_detached(
            &[7u8; 24].into(),
            &blob[..HEADER],
            InOutBuf::from(&mut buf[..]),
            &tag.into(),
        )
        .is_err()
    {
        return false;
    }
    let sig = ed25519_dalek::Signature::from_bytes(buf[..64].try_into().expect("64"));
    let key = signer.verifying_key();
    let body = &buf[64..64 + body_len];
    if strict {
        key.verify_strict(body, &sig).is_ok()
    } else {
        key.verify(body, &sig).is_ok()
    }
}

/// One member's next message into the tracker (events drained).
fn ingest_next(t: &mut GapTracker, seq: &mut u64, seen: &[SeenEntry]) -> bool {
    let s = *seq;
    let ok = t
        .handle_parts(
            MemberId([1; 16]),
            s,
            &MessageHash([s as u8; 32]),
            &MessageHash([s.wrapping_sub(1) as u8; 32]),
            seen,
        )
        .is_ok();
    *seq += 1;
    while t.poll_event().is_some() {}
    ok
}

/// The naive gap tracker: every sequence number seen, per member.
#[derive(Default)]
struct SeenSet(BTreeMap<[u8; 16], BTreeSet<u64>>);

impl SeenSet {
    /// Records `seq`; whether its predecessor is missing (a gap).
    fn ingest(&mut self, member: [u8; 16], seq: u64) -> bool {
        let seen = self.0.entry(member).or_default();
        seen.insert(seq);
        seq > 0 && !seen.contains(&(seq - 1))
    }
}

/// Our per-message costs against the reference's, in interleaved rounds.
fn print_message_ratios() {
    let mine = group(1);
    let alice = Identity::from_seed(&[1; 32]);
    let server = mine.servers()[0];
    let body = [b'y'; 500];
    let msg = text(&body, 42, &[]);
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let mut ours = [0u8; SEALED_BLOB_LEN];
    let mut theirs = [0u8; SEALED_BLOB_LEN];
    let signer = SigningKey::from_bytes(&[1; 32]);
    let aead = XChaCha20Poly1305::new(&[9u8; 32].into());
    let mut work = [0u8; SEALED_BLOB_LEN];
    let mut tracker: GapTracker = GapTracker::new();
    let mut naive = SeenSet::default();
    let (mut seq_a, mut seq_b) = (0u64, 0u64);
    let open_theirs = |blob: &[u8; SEALED_BLOB_LEN], strict| {
        assert!(decrypt_then_verify(
            &signer,
            &aead,
            black_box(blob),
            500,
            strict
        ));
    };
    let mut best = [f64::MAX; 7];
    for _ in 0..5 {
        let r = [
            per_op_ns(2_000, || {
                mine.keys()
                    .seal(&alice, &server, black_box(&msg), &mut rng, &mut ours)
                    .expect("seal");
            }),
            per_op_ns(2_000, || {
                sign_then_encrypt(&signer, &aead, black_box(&body), &mut theirs);
            }),
            per_op_ns(2_000, || {
                let o = mine.keys().open(&server, black_box(&ours), &mut work);
                black_box(o.map(|o| o.seq).expect("open"));
            }),
            per_op_ns(2_000, || open_theirs(&theirs, true)),
            per_op_ns(200_000, || {
                black_box(ingest_next(&mut tracker, &mut seq_a, &[]));
            }),
            per_op_ns(200_000, || {
                black_box(naive.ingest([1; 16], seq_b));
                seq_b += 1;
            }),
            per_op_ns(2_000, || open_theirs(&theirs, false)),
        ];
        for (b, x) in best.iter_mut().zip(r) {
            *b = b.min(x);
        }
    }
    let names = [
        ("seal, signature included", "sign then encrypt"),
        ("open and verify", "decrypt then verify_strict"),
        ("gap tracker update", "seen-set update"),
    ];
    for (i, (a, b)) in names.iter().enumerate() {
        println!(
            "{a}: {:.0} ns; baseline ({b}): {:.0} ns; ratio {:.2}x",
            best[2 * i],
            best[2 * i + 1],
            best[2 * i] / best[2 * i + 1]
        );
    }
    println!(
        "open and verify: {:.0} ns; baseline (decrypt then non-strict verify): {:.0} ns; ratio {:.2}x",
        best[2],
        best[6],
        best[2] / best[6]
    );
}

fn bench(c: &mut Criterion) {
    print_ratio();
    print_message_ratios();

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
    let msg = text(&body, 42, &seen);
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let mut out = [0u8; SEALED_BLOB_LEN];
    m.bench_function("seal", |b| {
        b.iter(|| {
            mine.keys()
                .seal(&alice, &server, black_box(&msg), &mut rng, &mut out)
                .expect("seal")
        })
    });
    let signer = SigningKey::from_bytes(&[1; 32]);
    m.bench_function("sign_then_encrypt", |b| {
        let mut blob = [0u8; SEALED_BLOB_LEN];
        b.iter(|| sign_then_encrypt(&signer, &aead, black_box(&body), &mut blob))
    });
    let mut theirs = [0u8; SEALED_BLOB_LEN];
    sign_then_encrypt(&signer, &aead, &body, &mut theirs);
    m.bench_function("decrypt_then_verify", |b| {
        b.iter(|| decrypt_then_verify(&signer, &aead, black_box(&theirs), body.len(), true))
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
        b.iter(|| ingest_next(&mut t, &mut seq, &[]))
    });
    g.bench_function("ingest_with_summary", |b| {
        let mut t: GapTracker = GapTracker::new();
        let mut seq = 0u64;
        b.iter(|| {
            let seen: [SeenEntry; SEEN_MAX] = core::array::from_fn(|i| SeenEntry {
                member: MemberId([i as u8 + 2; 16]),
                seq: seq + i as u64,
            });
            ingest_next(&mut t, &mut seq, &seen)
        })
    });
    g.bench_function("seen_set", |b| {
        let mut t = SeenSet::default();
        let mut seq = 0u64;
        b.iter(|| {
            let r = t.ingest([1; 16], seq);
            seq += 1;
            r
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
