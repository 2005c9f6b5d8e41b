//! Durable ingest of 2 KiB sealed blobs: group commit against one
//! transaction per blob (what the reference server does).
//!
//! `cargo bench -p cwtch-node --bench ingest` (about a minute). Every
//! scenario runs on a fresh store in a temporary directory on disk
//! (`BENCH_DIR` to choose where; the default is the system temp dir), and
//! syncs every commit: every acknowledged post is on disk. Set
//! `BENCH_SECS` to change the time per scenario (default 4) and `POSTERS`
//! (e.g. `16,1024`) to choose the group scenarios.
//!
//! Scenarios:
//! - `baseline seq`: one thread, a SQLite store (WAL, `synchronous=FULL`)
//!   with one blob per transaction: the reference server's insert per
//!   message.
//! - `baseline N`: N concurrent posters through a committer limited to one
//!   blob per commit (one sync per message, under the same load and
//!   plumbing as ours).
//! - `group N`: N concurrent posters through the [`GroupCommitter`]
//!   (batches of up to 1024).

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use cwtch_node::blob_store::{
    Blob, BlobStore, CommitterConfig, GroupCommitter, RetentionPolicy, SqliteStore,
};
use cwtch_proto::group::SEALED_BLOB_LEN;

#[path = "support/mod.rs"]
mod support;
use support::process_cpu;

fn blob(tag: u64) -> Blob {
    let mut b = [0u8; SEALED_BLOB_LEN];
    b[..8].copy_from_slice(&tag.to_le_bytes());
    // Incompressible-looking filler, like a sealed blob.
    let mut x = tag | 1;
    for chunk in b[8..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    b
}

struct Outcome {
    name: String,
    posts: u64,
    elapsed: Duration,
    commits: u64,
    latencies: Vec<Duration>,
    /// Process CPU time (user + system, every thread) during the scenario.
    cpu: Duration,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.posts as f64 / self.elapsed.as_secs_f64()
    }
    fn cpu_per_post(&self) -> Duration {
        self.cpu / self.posts.max(1) as u32
    }
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[i]
    }
}

fn fresh_store(base: &std::path::Path) -> (tempfile::TempDir, BlobStore) {
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let store = BlobStore::open(dir.path().join("blobs"), RetentionPolicy::UNLIMITED).unwrap();
    (dir, store)
}

fn baseline_sequential(base: &std::path::Path, secs: Duration) -> Outcome {
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let mut store = SqliteStore::open(dir.path().join("blobs.sqlite")).unwrap();
    let cpu = process_cpu();
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut tag = 0;
    while start.elapsed() < secs {
        let t = Instant::now();
        store.append_batch(&[blob(tag)]).unwrap();
        latencies.push(t.elapsed());
        tag += 1;
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Outcome {
        name: "baseline seq".into(),
        posts: tag,
        elapsed,
        commits: store.commits(),
        latencies,
        cpu: process_cpu() - cpu,
    }
}

fn concurrent(
    base: &std::path::Path,
    name: &str,
    posters: usize,
    max_batch: usize,
    secs: Duration,
) -> Outcome {
    let (_dir, store) = fresh_store(base);
    let config = CommitterConfig {
        max_batch,
        queue_capacity: 4096,
        prune_interval: None,
        ..CommitterConfig::default()
    };
    let committer = Rc::new(GroupCommitter::with_config(store, config).unwrap());
    let latencies = Rc::new(RefCell::new(Vec::new()));
    let ex = smol::LocalExecutor::new();
    let cpu = process_cpu();
    let start = Instant::now();
    let tasks: Vec<_> = (0..posters)
        .map(|p| {
            let committer = Rc::clone(&committer);
            let latencies = Rc::clone(&latencies);
            ex.spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < secs {
                    let b = Box::new(blob(((p as u64) << 32) | n));
                    let t = Instant::now();
                    committer.submit(b).await.unwrap();
                    latencies.borrow_mut().push(t.elapsed());
                    n += 1;
                }
                n
            })
        })
        .collect();
    let posts: u64 = smol::block_on(ex.run(async {
        let mut total = 0;
        for t in tasks {
            total += t.await;
        }
        total
    }));
    let elapsed = start.elapsed();
    let cpu = process_cpu() - cpu;
    let commits = committer.commits();
    let mut latencies = Rc::try_unwrap(latencies).unwrap().into_inner();
    latencies.sort();
    drop(committer);
    Outcome {
        name: name.into(),
        posts,
        elapsed,
        commits,
        latencies,
        cpu,
    }
}

fn print(o: &Outcome) {
    println!(
        "{:<16} {:>9} {:>8.2} {:>11.0} {:>8} {:>8.1} {:>10.3} {:>10.3} {:>11.1}",
        o.name,
        o.posts,
        o.elapsed.as_secs_f64(),
        o.rate(),
        o.commits,
        o.posts as f64 / o.commits.max(1) as f64,
        o.percentile(0.50).as_secs_f64() * 1e3,
        o.percentile(0.99).as_secs_f64() * 1e3,
        o.cpu_per_post().as_secs_f64() * 1e6,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let base: PathBuf = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let secs = Duration::from_secs_f64(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4.0),
    );
    println!(
        "durable ingest of {SEALED_BLOB_LEN}-byte blobs, every commit synced, in {}; {:?} per scenario",
        base.display(),
        secs
    );
    println!(
        "{:<16} {:>9} {:>8} {:>11} {:>8} {:>8} {:>10} {:>10} {:>11}",
        "scenario",
        "posts",
        "secs",
        "posts/s",
        "commits",
        "per tx",
        "p50 ms",
        "p99 ms",
        "CPU µs/post"
    );
    let mut outcomes = Vec::new();
    let o = baseline_sequential(&base, secs);
    print(&o);
    outcomes.push(o);
    let baseline_posters = 64;
    let o = concurrent(
        &base,
        &format!("baseline {baseline_posters}"),
        baseline_posters,
        1,
        secs,
    );
    print(&o);
    let baseline = o.rate();
    let baseline_cpu = o.cpu_per_post();
    outcomes.push(o);
    for posters in std::env::var("POSTERS")
        .map(|v| {
            v.split(',')
                .map(|x| x.parse().unwrap())
                .collect::<Vec<usize>>()
        })
        .unwrap_or(vec![1, 16, 64, 256, 1024])
    {
        let o = concurrent(&base, &format!("group {posters}"), posters, 1024, secs);
        print(&o);
        outcomes.push(o);
    }
    println!();
    let best_baseline = outcomes[..2].iter().map(Outcome::rate).fold(0.0, f64::max);
    for o in &outcomes[2..] {
        let ratio = o.rate() / best_baseline;
        println!(
            "{:<16} {:>8.1}x the best baseline ({:.0} posts/s), {:>6.1}x baseline {baseline_posters}, CPU per post {:.2}x baseline {baseline_posters}; goal (>= 10x and >= 30,000 posts/s) {}",
            o.name,
            ratio,
            best_baseline,
            o.rate() / baseline,
            o.cpu_per_post().as_secs_f64() / baseline_cpu.as_secs_f64().max(1e-9),
            if ratio >= 10.0 && o.rate() >= 30_000.0 {
                "met"
            } else {
                "missed"
            },
        );
    }
}
