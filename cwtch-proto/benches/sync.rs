//! Syncing a server's stream against trial decryption:
//! `cargo bench -p cwtch-proto --bench sync`.
//!
//! The stream: 100,000 sealed 2048-byte blobs, of which 1% (1,000, 100 per
//! group) belong to the 10 groups our member is in; the other 99,000 were
//! sealed by members of 50 other groups on the same server. All are real
//! seals (signed and encrypted), made once before anything is timed, and
//! our blobs are spread through the stream.
//!
//! - `sync_100k/cwtch_detector_then_open`: ours: the multi-group
//!   [`Detector`] (one HChaCha20 per group per blob), then a full open of
//!   each detected blob (decryption, parsing, signature verification).
//! - `sync_100k/trial_decryption_baseline`: what the reference client
//!   does: try to open every blob with every group key in turn until one
//!   works. A failed attempt is an XChaCha20-Poly1305 open of the blob
//!   whose Poly1305 check fails. The attempt that succeeds is our own full
//!   open (the same decryption, parsing and signature check as ours, so the
//!   two sides differ only in how they find what is theirs): for a blob of
//!   group `j` the baseline pays `j` failed attempts, then that open; for a
//!   foreign blob, 10 failed attempts.
//!
//! Before the criterion runs, a plain timing loop prints both and the
//! ratio (goal: ours at least 10x faster).

use core::hint::black_box;
use std::time::Instant as StdInstant;

use chacha20::ChaCha20Rng;
use chacha20::rand_core::SeedableRng;
use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, KeyInit, XChaCha20Poly1305};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use cwtch_proto::group::{
    Detector, Group, GroupSecret, MessageHash, MessageKind, OutgoingMessage, SEALED_BLOB_LEN,
};
use cwtch_proto::{Identity, OnionAddress};

const BLOBS: usize = 100_000;
const MY_GROUPS: usize = 10;
const FOREIGN_GROUPS: usize = 50;
/// One blob in this many is ours (1%).
const MINE_EVERY: usize = 100;

const HEADER: usize = 40;
const CT: usize = SEALED_BLOB_LEN - HEADER - 16;

type Blob = [u8; SEALED_BLOB_LEN];

fn server() -> OnionAddress {
    Identity::from_seed(&[0x80; 32]).address()
}

fn group(n: u8) -> Group {
    Group::from_secret(
        GroupSecret::from_bytes(&[n; 32]),
        [server()].into_iter().collect(),
    )
}

struct Setup {
    mine: Vec<Group>,
    /// The stream, and for each blob the index of our group it belongs to.
    blobs: Vec<(Blob, Option<usize>)>,
    /// One trial-decryption cipher per group of ours. Their keys are not
    /// the groups' sealing keys (those stay inside the crate), so every
    /// attempt with them fails, as every attempt but the right one does.
    trial: Vec<XChaCha20Poly1305>,
}

fn setup() -> Setup {
    let mine: Vec<Group> = (0..MY_GROUPS as u8).map(|i| group(1 + i)).collect();
    let foreign: Vec<Group> = (0..FOREIGN_GROUPS as u8).map(|i| group(100 + i)).collect();
    let senders: Vec<Identity> = (0..16u8)
        .map(|i| Identity::from_seed(&[i + 1; 32]))
        .collect();
    let server = server();
    let mut rng = ChaCha20Rng::from_seed([42; 32]);
    let body = [b'x'; 200];
    let mut blobs = Vec::with_capacity(BLOBS);
    for i in 0..BLOBS {
        // Ours sit at a varying offset in each run of 100.
        let owner = (i % MINE_EVERY == (i / MINE_EVERY * 37) % MINE_EVERY)
            .then_some((i / MINE_EVERY) % MY_GROUPS);
        let g = match owner {
            Some(j) => &mine[j],
            None => &foreign[i % FOREIGN_GROUPS],
        };
        let msg = OutgoingMessage {
            kind: MessageKind::TEXT,
            body: &body,
            seq: i as u64,
            timestamp: cwtch_proto::UnixMicros::EPOCH,
            prev_hash: MessageHash::ZERO,
            seen: &[],
        };
        let mut blob = [0u8; SEALED_BLOB_LEN];
        g.keys()
            .seal(
                &senders[i % senders.len()],
                &server,
                &msg,
                &mut rng,
                &mut blob,
            )
            .expect("seal");
        blobs.push((blob, owner));
    }
    assert_eq!(
        blobs.iter().filter(|(_, o)| o.is_some()).count(),
        BLOBS / MINE_EVERY
    );
    let trial = (0..MY_GROUPS as u8)
        .map(|i| XChaCha20Poly1305::new(&[0xe0 + i; 32].into()))
        .collect();
    Setup { mine, blobs, trial }
}

/// Ours: detect, then open what is ours. Returns the number opened.
fn sync_ours(s: &Setup, detector: &Detector<usize, 16>, work: &mut Blob) -> usize {
    let server = server();
    let mut opened = 0;
    for (blob, _) in &s.blobs {
        if let Some(j) = detector.detect(blob)
            && s.mine[j].keys().open(&server, blob, work).is_ok()
        {
            opened += 1;
        }
    }
    opened
}

/// A trial-decryption attempt that fails: the XChaCha20-Poly1305 open of
/// the blob's ciphertext (into a scratch copy) with a key that is not the
/// sealer's.
fn failed_attempt(aead: &XChaCha20Poly1305, blob: &Blob, buf: &mut [u8; CT]) -> bool {
    buf.copy_from_slice(&blob[HEADER..HEADER + CT]);
    let nonce: [u8; 24] = blob[..24].try_into().expect("24");
    let tag: [u8; 16] = blob[HEADER + CT..].try_into().expect("16");
    aead.decrypt_inout_detached(
        &nonce.into(),
        &blob[..HEADER],
        InOutBuf::from(&mut buf[..]),
        &tag.into(),
    )
    .is_ok()
}

/// The baseline: every group key on every blob until one opens it.
fn sync_trial(s: &Setup, work: &mut Blob) -> usize {
    let server = server();
    let mut buf = [0u8; CT];
    let mut opened = 0;
    for (blob, owner) in &s.blobs {
        for (j, aead) in s.trial.iter().enumerate() {
            if *owner == Some(j) {
                if s.mine[j].keys().open(&server, blob, work).is_ok() {
                    opened += 1;
                }
                break;
            }
            black_box(failed_attempt(aead, blob, &mut buf));
        }
    }
    opened
}

fn detector(s: &Setup) -> Detector<usize, 16> {
    let mut d = Detector::new();
    for (j, g) in s.mine.iter().enumerate() {
        d.insert(j, g.keys().detection_key()).expect("room");
    }
    d
}

fn print_ratio(s: &Setup) {
    let d = detector(s);
    let mut work = [0u8; SEALED_BLOB_LEN];
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let t = StdInstant::now();
        assert_eq!(sync_ours(s, &d, &mut work), BLOBS / MINE_EVERY);
        let o = t.elapsed().as_secs_f64();
        let t = StdInstant::now();
        assert_eq!(sync_trial(s, &mut work), BLOBS / MINE_EVERY);
        let b = t.elapsed().as_secs_f64();
        best = (best.0.min(o), best.1.min(b));
    }
    println!(
        "sync of {BLOBS} blobs (1% ours, {MY_GROUPS} groups): detector + open {:.1} ms ({:.0} blobs/s); trial decryption {:.1} ms ({:.0} blobs/s); ours {:.1}x faster (goal: at least 10x)",
        best.0 * 1e3,
        BLOBS as f64 / best.0,
        best.1 * 1e3,
        BLOBS as f64 / best.1,
        best.1 / best.0
    );
}

fn bench(c: &mut Criterion) {
    let start = StdInstant::now();
    let s = setup();
    println!(
        "sealed {BLOBS} blobs in {:.1} s (not timed below)",
        start.elapsed().as_secs_f64()
    );
    print_ratio(&s);

    let d = detector(&s);
    let mut work = [0u8; SEALED_BLOB_LEN];
    let mut g = c.benchmark_group("sync_100k");
    // One iteration is a whole sync (the baseline takes seconds): ten flat
    // samples of one iteration each.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.bench_function("cwtch_detector_then_open", |b| {
        b.iter(|| sync_ours(&s, &d, &mut work))
    });
    g.bench_function("trial_decryption_baseline", |b| {
        b.iter(|| sync_trial(&s, &mut work))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
