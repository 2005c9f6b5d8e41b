//! What the server benchmarks (`benches/ingest.rs`, `examples/fanout.rs`,
//! `examples/ingest_tcp.rs`) share. Each includes it with `#[path]`.
#![allow(dead_code)] // not every benchmark uses every helper

use std::time::Duration;

use cwtch_proto::group::SEALED_BLOB_LEN;

/// Process CPU time (user + system, all threads), from /proc/self/stat
/// (in clock ticks of 10 ms: a 4 s scenario is measured to about 1%).
pub fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime: fields 14 and 15 of the line, in USER_HZ (100) ticks.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// CPU time (user + system) of each thread of this process, by thread
/// name, from /proc/self/task/*/stat (10 ms ticks; threads of the same name
/// are summed).
pub fn thread_cpu() -> std::collections::BTreeMap<String, Duration> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let name = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map_or("?", |(name, _)| name)
            .to_string();
        let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        *out.entry(name).or_insert(Duration::ZERO) += Duration::from_millis(ticks * 10);
    }
    out
}

/// A distinct, incompressible 2048-byte blob for `tag` (xorshift).
pub fn blob(tag: u64) -> [u8; SEALED_BLOB_LEN] {
    let mut b = [0u8; SEALED_BLOB_LEN];
    b[..8].copy_from_slice(&tag.to_le_bytes());
    let mut x = tag | 1;
    for chunk in b[8..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    b
}
