//! What a running server counts, the load it derives the proof of work
//! from, and how `server stats`, the log line and the Prometheus metrics
//! show it.
//!
//! Counters are plain atomics bumped by the connections. Once a second the
//! sampler ([`Window::sample`]) records them, with the committer's latency
//! sums, into a window of the last `proof_of_work.window_secs` seconds:
//! rates (posts and fetches per second) and latencies (mean and max) are
//! over that window, and the proof-of-work level of new connections is
//! computed from it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cwtch_proto::server::RefusalReason;
use serde::{Deserialize, Serialize};

use crate::blob_store::CommitLatency;

/// The names of the refusal counters, in [`Counters::refusals`] order:
/// the protocol's refusal reasons (SPEC.md section 8.1), then connections
/// closed because the server already served its maximum.
pub const REFUSALS: [&str; 9] = [
    "full",
    "rate_limited",
    "malformed",
    "too_many_subscriptions",
    "pow_missing",
    "pow_wrong",
    "wrong_blob_size",
    "unavailable",
    "too_many_connections",
];

/// Index of the connection-limit refusal in [`REFUSALS`].
pub const TOO_MANY_CONNECTIONS: usize = 8;

/// The counter index of a refusal reason.
pub fn refusal_index(reason: RefusalReason) -> usize {
    match reason {
        RefusalReason::Full => 0,
        RefusalReason::RateLimited { .. } => 1,
        RefusalReason::Malformed => 2,
        RefusalReason::TooManySubscriptions => 3,
        RefusalReason::PowMissing => 4,
        RefusalReason::PowWrong => 5,
        RefusalReason::WrongBlobSize { .. } => 6,
        _ => 7,
    }
}

/// Counters since the server started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Posts taken (stored): the load proof of work follows. Refused post
    /// requests are counted under refusals only.
    pub posts: AtomicU64,
    /// Posts stored (handed to the store).
    pub stored: AtomicU64,
    /// Fetch requests received.
    pub fetches: AtomicU64,
    /// Refusals, by [`REFUSALS`] index.
    pub refusals: [AtomicU64; REFUSALS.len()],
}

impl Counters {
    /// Counts a refusal.
    pub fn refused(&self, index: usize) {
        if let Some(c) = self.refusals.get(index) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    posts: u64,
    fetches: u64,
    latency: CommitLatency,
}

/// The last seconds of samples.
#[derive(Debug, Default)]
pub struct Window {
    samples: VecDeque<Sample>,
}

/// Rates and latencies over the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Seconds the window covers (at most the configured window).
    pub window_secs: f64,
    /// Post requests over the window.
    pub posts: u64,
    /// Post requests per second.
    pub posts_per_sec: f64,
    /// Fetch requests per second.
    pub fetches_per_sec: f64,
    /// Commits (fsyncs) over the window.
    pub commits: u64,
    /// Mean time of a commit's sync, in ms.
    pub fsync_ms_mean: f64,
    /// Longest sync, in ms.
    pub fsync_ms_max: f64,
    /// Mean time from a post's arrival at the store to its durability, ms.
    pub commit_ms_mean: f64,
    /// Longest such time, in ms.
    pub commit_ms_max: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Window {
    /// Records the counters now and forgets samples older than `window`.
    pub fn sample(
        &mut self,
        counters: &Counters,
        latency: CommitLatency,
        now: Instant,
        window: Duration,
    ) {
        self.samples.push_back(Sample {
            at: now,
            posts: counters.posts.load(Ordering::Relaxed),
            fetches: counters.fetches.load(Ordering::Relaxed),
            latency,
        });
        // Keep one sample at or before the window's start, as its base.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|s| now.duration_since(s.at) >= window)
        {
            self.samples.pop_front();
        }
    }

    /// The load over the window.
    pub fn load(&self) -> Load {
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return Load::default();
        };
        let secs = last.at.duration_since(first.at).as_secs_f64();
        let posts = last.posts.saturating_sub(first.posts);
        let fetches = last.fetches.saturating_sub(first.fetches);
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let (a, b) = (first.latency, last.latency);
        let commits = b.commits.saturating_sub(a.commits);
        let posted = b.posts.saturating_sub(a.posts);
        let mean = |total: Duration, n: u64| if n > 0 { ms(total) / n as f64 } else { 0.0 };
        // The maxima are per sample (since the one before): the window's
        // maximum is the largest after its base.
        let max = |f: fn(&CommitLatency) -> Duration| {
            self.samples
                .iter()
                .skip(1)
                .map(|s| ms(f(&s.latency)))
                .fold(0.0, f64::max)
        };
        Load {
            window_secs: secs,
            posts,
            posts_per_sec: per_sec(posts),
            fetches_per_sec: per_sec(fetches),
            commits,
            fsync_ms_mean: mean(b.sync_total.saturating_sub(a.sync_total), commits),
            fsync_ms_max: max(|l| l.sync_max),
            commit_ms_mean: mean(b.post_total.saturating_sub(a.post_total), posted),
            commit_ms_max: max(|l| l.post_max),
        }
    }
}

/// Everything `server stats` reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Blobs stored.
    pub blobs: u64,
    /// Bytes of blobs stored.
    pub bytes: u64,
    /// The last index.
    pub head: u64,
    /// The oldest index still stored.
    pub oldest_index: Option<u64>,
    /// How old the oldest stored blob is, in seconds.
    pub oldest_age_secs: Option<u64>,
    /// Clients served now.
    pub connections: usize,
    /// Connections accepted since start.
    pub served: u64,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// The proof of work new connections are asked now, in bits.
    pub pow_bits_now: u8,
    /// The most they may be asked (the advert's).
    pub pow_bits_max: u8,
    /// Rates and latencies over the last window.
    #[serde(flatten)]
    pub load: Load,
    /// Post requests since start.
    pub posts_total: u64,
    /// Posts stored since start.
    pub stored_total: u64,
    /// Fetch requests since start.
    pub fetches_total: u64,
    /// Commits (fsyncs) since start.
    pub commits_total: u64,
    /// Sum of all sync times, in seconds.
    pub fsync_seconds_total: f64,
    /// Sum of all post-to-durable times, in seconds.
    pub commit_seconds_total: f64,
    /// Posts waiting in the committer's queue.
    pub queued: usize,
    /// Refusals since start, by reason.
    pub refusals: std::collections::BTreeMap<String, u64>,
}

impl Report {
    /// The refusal counters, by name.
    pub fn refusals_of(counters: &Counters) -> std::collections::BTreeMap<String, u64> {
        REFUSALS
            .iter()
            .zip(&counters.refusals)
            .map(|(name, c)| (name.to_string(), c.load(Ordering::Relaxed)))
            .collect()
    }

    /// The one-line summary logged every `log_interval_secs`.
    pub fn log_line(&self) -> String {
        let refused: u64 = self.refusals.values().sum();
        format!(
            "server stats: {} blobs, {} bytes, oldest {}; {} connections; {:.1} posts/s, \
             {:.1} fetches/s over {:.0} s; pow {} bits; {refused} refusals; fsync {:.1} ms \
             mean, {:.1} ms max; commit {:.1} ms mean, {:.1} ms max",
            self.blobs,
            self.bytes,
            self.oldest_age_secs
                .map_or("none".to_string(), |s| format!("{s} s old")),
            self.connections,
            self.load.posts_per_sec,
            self.load.fetches_per_sec,
            self.load.window_secs,
            self.pow_bits_now,
            self.load.fsync_ms_mean,
            self.load.fsync_ms_max,
            self.load.commit_ms_mean,
            self.load.commit_ms_max,
        )
    }

    /// `server stats` without --json.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "stored:      {} blobs, {} bytes, last index {}",
            self.blobs, self.bytes, self.head
        );
        let _ = writeln!(
            s,
            "oldest blob: {}",
            match (self.oldest_index, self.oldest_age_secs) {
                (Some(i), Some(age)) => format!("index {i}, {}", age_words(age)),
                _ => "none".into(),
            }
        );
        let _ = writeln!(
            s,
            "connections: {} now, {} since start ({} up)",
            self.connections,
            self.served,
            age_words(self.uptime_secs).trim_end_matches(" old")
        );
        let _ = writeln!(
            s,
            "load:        {:.1} posts/s, {:.1} fetches/s (last {:.0} s); proof of work {} bits now, {} at most",
            self.load.posts_per_sec,
            self.load.fetches_per_sec,
            self.load.window_secs,
            self.pow_bits_now,
            self.pow_bits_max
        );
        let _ = writeln!(
            s,
            "totals:      {} post requests, {} stored, {} fetches, {} commits",
            self.posts_total, self.stored_total, self.fetches_total, self.commits_total
        );
        let _ = writeln!(
            s,
            "fsync:       {:.2} ms mean, {:.2} ms max; commit (post to durable): {:.2} ms mean, {:.2} ms max; {} queued",
            self.load.fsync_ms_mean,
            self.load.fsync_ms_max,
            self.load.commit_ms_mean,
            self.load.commit_ms_max,
            self.queued
        );
        let refusals: Vec<String> = self
            .refusals
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = write!(
            s,
            "refusals:    {}",
            if refusals.is_empty() {
                "none".to_string()
            } else {
                refusals.join(", ")
            }
        );
        s
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(s, "# HELP cwtch_server_{name} {help}");
            let _ = writeln!(s, "# TYPE cwtch_server_{name} {kind}");
            let _ = writeln!(s, "cwtch_server_{name} {value}");
        };
        metric("blobs", "gauge", "Blobs stored.", self.blobs.to_string());
        metric(
            "bytes",
            "gauge",
            "Bytes of blobs stored.",
            self.bytes.to_string(),
        );
        metric(
            "head",
            "gauge",
            "The last index assigned.",
            self.head.to_string(),
        );
        metric(
            "oldest_blob_age_seconds",
            "gauge",
            "Age of the oldest blob stored (0 when empty).",
            self.oldest_age_secs.unwrap_or(0).to_string(),
        );
        metric(
            "connections",
            "gauge",
            "Clients served now.",
            self.connections.to_string(),
        );
        metric(
            "connections_total",
            "counter",
            "Connections accepted since start.",
            self.served.to_string(),
        );
        metric(
            "posts_total",
            "counter",
            "Post requests received since start.",
            self.posts_total.to_string(),
        );
        metric(
            "stored_total",
            "counter",
            "Posts stored since start.",
            self.stored_total.to_string(),
        );
        metric(
            "fetches_total",
            "counter",
            "Fetch requests received since start.",
            self.fetches_total.to_string(),
        );
        metric(
            "posts_per_second",
            "gauge",
            "Post requests per second over the proof-of-work window.",
            format!("{}", self.load.posts_per_sec),
        );
        metric(
            "fetches_per_second",
            "gauge",
            "Fetch requests per second over the proof-of-work window.",
            format!("{}", self.load.fetches_per_sec),
        );
        metric(
            "pow_bits",
            "gauge",
            "Proof of work asked of new connections now, in bits.",
            self.pow_bits_now.to_string(),
        );
        metric(
            "pow_bits_max",
            "gauge",
            "The most proof of work asked (the advert's), in bits.",
            self.pow_bits_max.to_string(),
        );
        metric(
            "queued_posts",
            "gauge",
            "Posts waiting in the group committer's queue.",
            self.queued.to_string(),
        );
        let _ = writeln!(
            s,
            "# HELP cwtch_server_fsync_seconds Time of each commit's write and sync of the blob log."
        );
        let _ = writeln!(s, "# TYPE cwtch_server_fsync_seconds summary");
        let _ = writeln!(
            s,
            "cwtch_server_fsync_seconds_sum {}",
            self.fsync_seconds_total
        );
        let _ = writeln!(s, "cwtch_server_fsync_seconds_count {}", self.commits_total);
        let _ = writeln!(
            s,
            "# HELP cwtch_server_commit_seconds Time from a post reaching the store to its durability."
        );
        let _ = writeln!(s, "# TYPE cwtch_server_commit_seconds summary");
        let _ = writeln!(
            s,
            "cwtch_server_commit_seconds_sum {}",
            self.commit_seconds_total
        );
        let _ = writeln!(s, "cwtch_server_commit_seconds_count {}", self.stored_total);
        let _ = writeln!(
            s,
            "# HELP cwtch_server_fsync_seconds_max Longest sync over the window."
        );
        let _ = writeln!(s, "# TYPE cwtch_server_fsync_seconds_max gauge");
        let _ = writeln!(
            s,
            "cwtch_server_fsync_seconds_max {}",
            self.load.fsync_ms_max / 1000.0
        );
        let _ = writeln!(
            s,
            "# HELP cwtch_server_refusals_total Requests and connections refused, by reason."
        );
        let _ = writeln!(s, "# TYPE cwtch_server_refusals_total counter");
        for (reason, n) in &self.refusals {
            let _ = writeln!(s, "cwtch_server_refusals_total{{reason=\"{reason}\"}} {n}");
        }
        s
    }
}

fn age_words(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s old"),
        s if s < 7_200 => format!("{} min old", s / 60),
        s if s < 172_800 => format!("{} h old", s / 3_600),
        s => format!("{} days old", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(commits: u64, sync_ms: u64, posts: u64, post_ms: u64, max_ms: u64) -> CommitLatency {
        CommitLatency {
            commits,
            sync_total: Duration::from_millis(sync_ms),
            sync_max: Duration::from_millis(max_ms),
            posts,
            post_total: Duration::from_millis(post_ms),
            post_max: Duration::from_millis(max_ms * 2),
        }
    }

    #[test]
    fn rates_and_latencies_are_over_the_window_only() {
        let c = Counters::default();
        let mut w = Window::default();
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        assert_eq!(w.load(), Load::default());
        // 1000 posts long ago, then 10 posts a second for 10 seconds.
        c.posts.store(1000, Ordering::Relaxed);
        w.sample(&c, latency(100, 1000, 1000, 5000, 50), t0, window);
        for i in 1..=20u64 {
            c.posts.fetch_add(10, Ordering::Relaxed);
            c.fetches.fetch_add(2, Ordering::Relaxed);
            let l = latency(100 + i, 1000 + 4 * i, 1000 + 10 * i, 5000 + 20 * i, 3);
            w.sample(&c, l, t0 + Duration::from_secs(i), window);
        }
        let load = w.load();
        assert_eq!(load.window_secs, 10.0);
        assert_eq!(load.posts, 100);
        assert_eq!(load.posts_per_sec, 10.0);
        assert_eq!(load.fetches_per_sec, 2.0);
        assert_eq!(load.commits, 10);
        assert_eq!(load.fsync_ms_mean, 4.0);
        assert_eq!(load.commit_ms_mean, 2.0);
        // The 50 ms max of the first sample has left the window.
        assert_eq!(load.fsync_ms_max, 3.0);
        assert_eq!(load.commit_ms_max, 6.0);
    }

    #[test]
    fn the_prometheus_text_has_every_metric_once_with_help_and_type() {
        let c = Counters::default();
        c.refused(refusal_index(RefusalReason::PowMissing));
        c.refused(TOO_MANY_CONNECTIONS);
        c.refused(99); // ignored
        let r = Report {
            blobs: 3,
            bytes: 6144,
            head: 9,
            oldest_index: Some(7),
            oldest_age_secs: Some(5),
            connections: 2,
            served: 4,
            uptime_secs: 10,
            pow_bits_now: 0,
            pow_bits_max: 20,
            load: Load::default(),
            posts_total: 9,
            stored_total: 9,
            fetches_total: 1,
            commits_total: 2,
            fsync_seconds_total: 0.01,
            commit_seconds_total: 0.02,
            queued: 0,
            refusals: Report::refusals_of(&c),
        };
        let text = r.prometheus();
        assert!(text.contains("cwtch_server_blobs 3\n"));
        assert!(text.contains("cwtch_server_refusals_total{reason=\"pow_missing\"} 1\n"));
        assert!(text.contains("cwtch_server_refusals_total{reason=\"too_many_connections\"} 1\n"));
        assert!(text.contains("cwtch_server_fsync_seconds_count 2\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split([' ', '{']).next().unwrap();
            let base = name.trim_end_matches("_sum").trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "{name} has a TYPE line"
            );
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert!(r.human().contains("pow_missing 1"));
        assert!(r.log_line().contains("3 blobs"));
    }
}
