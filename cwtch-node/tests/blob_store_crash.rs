//! Durability under `kill -9`: a child process posts through the group
//! committer and prints every acknowledged index; the parent kills it with
//! SIGKILL at a random moment, again and again, and checks that every
//! acknowledged post is in the store with the right content.
//!
//! The child is this test binary itself, re-executed with
//! `CWTCH_BLOBSTORE_CRASH_DIR` set, running only the `crash_child` test.
//! (SIGKILL leaves the OS page cache intact, so this checks the commit
//! protocol, not the disk's honesty about `fsync`.)

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cwtch_node::blob_store::{Blob, BlobStore, GroupCommitter, RetentionPolicy};
use cwtch_proto::group::SEALED_BLOB_LEN;

const DIR_VAR: &str = "CWTCH_BLOBSTORE_CRASH_DIR";
const RUN_VAR: &str = "CWTCH_BLOBSTORE_CRASH_RUN";
const RUNS: u64 = 24;
const POSTERS: u64 = 16;

fn blob(tag: u64) -> Blob {
    let mut b = [0u8; SEALED_BLOB_LEN];
    b[..8].copy_from_slice(&tag.to_le_bytes());
    for (i, byte) in b.iter_mut().enumerate().skip(8) {
        *byte = (tag.wrapping_mul(31).wrapping_add(i as u64)) as u8;
    }
    b
}

/// The child role: post forever from several tasks, printing
/// `ACK <index> <tag>` after each acknowledgement.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return; // Not the child: nothing to do.
    };
    let run: u64 = std::env::var(RUN_VAR).unwrap().parse().unwrap();
    let path = std::path::Path::new(&dir).join("blobs");
    let store = BlobStore::open(path, RetentionPolicy::UNLIMITED).unwrap();
    let committer = Arc::new(GroupCommitter::start(store).unwrap());
    let seq = Arc::new(AtomicU64::new(0));
    smol::block_on(async {
        let _posters: Vec<_> = (0..POSTERS)
            .map(|_| {
                let committer = Arc::clone(&committer);
                let seq = Arc::clone(&seq);
                smol::spawn(async move {
                    loop {
                        let tag = (run << 32) | seq.fetch_add(1, Ordering::Relaxed);
                        let index = committer.submit(Box::new(blob(tag))).await.unwrap();
                        // Straight to stdout (not the test harness's capture).
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ACK {index} {tag}").unwrap();
                        out.flush().unwrap();
                    }
                })
            })
            .collect();
        // Run until killed.
        smol::future::pending::<()>().await;
    });
}

/// A small xorshift generator: no dependency, seed printed for replay.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn acknowledged_posts_survive_sigkill() {
    if std::env::var_os(DIR_VAR).is_some() {
        return; // We are a child.
    }
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed {seed} (set CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blobs");
    let exe = std::env::current_exe().unwrap();

    let mut head_before = 0u64;
    let mut total_acks = 0usize;
    for run in 0..RUNS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, dir.path())
            .env(RUN_VAR, run.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = 1 + rng.below(600);
        let extra_delay = Duration::from_micros(rng.below(20_000));

        let mut acks: Vec<(u64, u64)> = Vec::new();
        let parse = |line: &str| -> Option<(u64, u64)> {
            let mut words = line.strip_prefix("ACK ")?.split(' ');
            Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
        };
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(ack) = parse(&line) {
                acks.push(ack);
                if acks.len() as u64 >= kill_after {
                    break;
                }
            }
        }
        assert_eq!(
            acks.len() as u64,
            kill_after,
            "run {run}: child ended before {kill_after} acks"
        );
        std::thread::sleep(extra_delay);
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success());
        // Acks already in the pipe were acknowledged before the kill.
        for line in lines.map_while(Result::ok) {
            if let Some(ack) = parse(&line) {
                acks.push(ack);
            }
        }

        let store = BlobStore::open(&path, RetentionPolicy::UNLIMITED).unwrap();
        store.integrity_check().unwrap();
        let distinct: HashSet<u64> = acks.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            distinct.len(),
            acks.len(),
            "run {run}: an index acked twice"
        );
        for (index, tag) in &acks {
            assert!(
                *index > head_before,
                "run {run}: index {index} not after the previous head {head_before}"
            );
            let got = store.read_after(index - 1, 1).unwrap();
            assert_eq!(
                got.first().map(|(i, _)| *i),
                Some(*index),
                "run {run}: acknowledged index {index} lost"
            );
            assert_eq!(*got[0].1, blob(*tag), "run {run}: index {index} content");
        }
        let head = store.head();
        assert!(head >= acks.iter().map(|(i, _)| *i).max().unwrap_or(0));
        assert!(head >= head_before);
        eprintln!(
            "run {run}: {} acks (killed after {kill_after} + {extra_delay:?}), head {head}",
            acks.len()
        );
        total_acks += acks.len();
        head_before = head;
    }

    // After all that: consistent, contiguous, and indices go on.
    let mut store = BlobStore::open(&path, RetentionPolicy::UNLIMITED).unwrap();
    store.integrity_check().unwrap();
    let stats = store.stats().unwrap();
    assert_eq!(stats.oldest, Some(1));
    assert_eq!(stats.blobs, stats.head);
    assert!(stats.blobs as usize >= total_acks);
    let next = store.append_batch(&[blob(u64::MAX)]).unwrap();
    assert_eq!(next, head_before + 1..head_before + 2);
    eprintln!("{RUNS} kills, {total_acks} acks checked, head {head_before}");
}
