//! The node against another build of itself, interleaved in one run: the
//! figures of BENCHMARKS.md "The node".
//!
//! For each build, over the development transport (loopback TCP, no Tor),
//! with a sender that has 100 contacts (one online, 99 that never answer):
//!
//! - **send → delivered**: the time from `cwtch-node send` starting to the
//!   sender's `messages --follow` showing the message delivered (from its
//!   start, not its return: a build that does more before returning must
//!   not look faster);
//! - **CPU per message**: the sender's and the receiver's daemons' CPU
//!   time (user + system, from /proc) over those messages, divided by their
//!   number;
//! - **idle CPU**: the same daemons' CPU time per second over 5 s with no
//!   message moving (what redialing the 99 silent contacts and the timers
//!   cost), measured before the messages, 20 s after the contacts were
//!   added; and the CPU per message less that idle rate over the time the
//!   messages took;
//! - **profile per 1,000 group messages**: the growth of the sender's and
//!   the receiver's profile files (database and write-ahead log) while
//!   1,000 group messages are posted and read.
//!
//! Builds run in turn, round after round (A, B, A, B, ...), so that a
//! machine that gets busier or quieter affects both alike.
//!
//! ```text
//! cargo build --release -p cwtch-node            # and the other build
//! cargo run --release -p cwtch-node --example node_bench -- \
//!     --baseline OLD/cwtch-node --candidate target/release/cwtch-node [--rounds 3] [--messages 300]
//! ```
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const PASSWORD: &str = "benchmark password";

struct Args {
    builds: Vec<(String, PathBuf)>,
    rounds: usize,
    messages: usize,
    group_messages: usize,
}

fn args() -> Args {
    let mut a = Args {
        builds: Vec::new(),
        rounds: 3,
        messages: 300,
        group_messages: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("a value after the flag");
        match flag.as_str() {
            "--baseline" => a.builds.push(("baseline".into(), value().into())),
            "--candidate" => a.builds.push(("candidate".into(), value().into())),
            "--rounds" => a.rounds = value().parse().expect("a number"),
            "--messages" => a.messages = value().parse().expect("a number"),
            "--group-messages" => a.group_messages = value().parse().expect("a number"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert_eq!(a.builds.len(), 2, "--baseline BIN and --candidate BIN");
    a
}

fn cli(bin: &Path, home: &Path, args: &[&str]) -> Value {
    let out = Command::new(bin)
        .arg("--home")
        .arg(home)
        .arg("--json")
        .args(args)
        .env("CWTCH_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .output()
        .expect("run cwtch-node");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap_or(Value::Null)
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon(bin: &Path, home: &Path, server: bool, dev: &Path) -> Proc {
    let mut cmd = Command::new(bin);
    cmd.arg("--home").arg(home);
    if server {
        cmd.arg("server");
    }
    let log = std::fs::File::create(home.with_extension("log")).expect("log");
    cmd.arg("run")
        .arg("--dev-tcp")
        .arg(dev)
        .env("CWTCH_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    Proc(cmd.spawn().expect("start a daemon"))
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ready(bin: &Path, home: &Path) {
    wait_for("a daemon", Duration::from_secs(60), || {
        let out = Command::new(bin)
            .arg("--home")
            .arg(home)
            .args(["--json", "status"])
            .env("CWTCH_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status.success().then_some(())
    });
}

/// User + system CPU time of a process, every thread (those that ended
/// too), in seconds; `/proc/PID/stat` counts in 10 ms ticks, so a run
/// needs a few hundred messages for a figure to within a few percent.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after ")".
    (ticks(11) + ticks(12)) / 100.0
}

/// The bytes of a stopped profile on disk: its database once the
/// write-ahead log is checkpointed into it (the log's own size depends on
/// when the last checkpoint ran, not on what is stored).
fn profile_bytes(home: &Path) -> u64 {
    let db = home.join("profile.db");
    let conn = rusqlite::Connection::open(&db).expect("open the profile database");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    drop(conn);
    std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0)
}

struct Figures {
    latencies_ms: Vec<f64>,
    cpu_ms_per_message: f64,
    net_cpu_ms_per_message: f64,
    idle_cpu_ms_per_second: f64,
    sender_bytes_per_group_message: f64,
    receiver_bytes_per_group_message: f64,
}

fn round(bin: &Path, a: &Args) -> Figures {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let dev = dir.join("dev");
    let (s_home, a_home, b_home) = (dir.join("server"), dir.join("alice"), dir.join("bob"));
    let server = cli(
        bin,
        &s_home,
        &[
            "server",
            "init",
            "--rate-burst",
            "60000",
            "--rate-interval-ms",
            "1",
        ],
    )["server"]
        .as_str()
        .expect("server id")
        .to_string();
    let alice = cli(bin, &a_home, &["init", "--name", "alice"])["address"]
        .as_str()
        .expect("address")
        .to_string();
    let bob = cli(bin, &b_home, &["init", "--name", "bob"])["address"]
        .as_str()
        .expect("address")
        .to_string();
    let _s = daemon(bin, &s_home, true, &dev);
    let mut pa = daemon(bin, &a_home, false, &dev);
    let mut pb = daemon(bin, &b_home, false, &dev);
    ready(bin, &a_home);
    ready(bin, &b_home);
    // 100 contacts: bob, and 99 who never answer.
    cli(bin, &a_home, &["contact", "add", &bob]);
    for i in 0..99u8 {
        let other = cwtch_proto::Identity::from_seed(&[i.wrapping_add(100); 32]).address();
        cli(bin, &a_home, &["contact", "add", other.as_str()]);
    }
    cli(bin, &b_home, &["contact", "add", &alice]);
    // Let the first rounds of dialing the 99 silent contacts pass (each
    // build dials them on its own schedule, fastest right after they are
    // added), so that what follows is the node at rest, not at set-up.
    std::thread::sleep(Duration::from_secs(20));

    // send -> delivered, watched through `messages --follow`.
    let mut follow = Command::new(bin)
        .arg("--home")
        .arg(&a_home)
        .args(["--json", "messages", &bob, "--follow"])
        .env("CWTCH_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("follow");
    let (tx, rx) = mpsc::channel::<(Instant, Value)>();
    let out = follow.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send((Instant::now(), v));
            }
        }
    });
    let _follow = Proc(follow);
    let _ = &_follow;
    std::thread::sleep(Duration::from_millis(500));
    // Idle: what the two daemons spend with no message moving (redialing
    // the 99 contacts that never answer, timers), per second.
    let idle = Duration::from_secs(5);
    let idle0 = cpu_secs(pa.0.id()) + cpu_secs(pb.0.id());
    std::thread::sleep(idle);
    let idle1 = cpu_secs(pa.0.id()) + cpu_secs(pb.0.id());
    let idle_cpu_ms_per_second = (idle1 - idle0) * 1000.0 / idle.as_secs_f64();
    let cpu0 = cpu_secs(pa.0.id()) + cpu_secs(pb.0.id());
    let mut latencies_ms = Vec::new();
    let started = Instant::now();
    for i in 0..a.messages {
        let text = format!("bench {i:05}");
        // From the command's start: what the user waits for, whatever part
        // of the work a build does before `send` returns.
        let sent = Instant::now();
        cli(bin, &a_home, &["send", &bob, &text]);
        let delivered = loop {
            let (at, v) = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("delivery within a minute");
            if v["text"] == text.as_str() && v["status"] == "delivered" {
                break at;
            }
        };
        latencies_ms.push(delivered.saturating_duration_since(sent).as_secs_f64() * 1000.0);
    }
    let cpu1 = cpu_secs(pa.0.id()) + cpu_secs(pb.0.id());
    let cpu_ms_per_message = (cpu1 - cpu0) * 1000.0 / a.messages as f64;
    let busy_secs = started.elapsed().as_secs_f64();
    let net_cpu_ms_per_message =
        ((cpu1 - cpu0) * 1000.0 - idle_cpu_ms_per_second * busy_secs) / a.messages as f64;

    // Profile growth per group message.
    cli(
        bin,
        &a_home,
        &["group", "create", "bench", "--server", &server],
    );
    cli(bin, &a_home, &["group", "invite", "bench", &bob]);
    wait_for("bob's invite", Duration::from_secs(60), || {
        let out = Command::new(bin)
            .arg("--home")
            .arg(&b_home)
            .args(["--json", "group", "accept", "bench"])
            .env("CWTCH_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status.success().then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    drop(_follow);
    // Measured stopped (killed, as a crash would: both builds alike).
    drop(pa);
    drop(pb);
    let (a0, b0) = (profile_bytes(&a_home), profile_bytes(&b_home));
    pa = daemon(bin, &a_home, false, &dev);
    pb = daemon(bin, &b_home, false, &dev);
    ready(bin, &a_home);
    ready(bin, &b_home);
    for i in 0..a.group_messages {
        cli(
            bin,
            &a_home,
            &["group", "send", "bench", &format!("group {i:05}")],
        );
    }
    wait_for("every group message read", Duration::from_secs(600), || {
        let v = cli(bin, &b_home, &["messages", "bench"]);
        (v.as_array()?.len() >= a.group_messages).then_some(())
    });
    wait_for(
        "every group message delivered",
        Duration::from_secs(600),
        || {
            let v = cli(bin, &a_home, &["group", "list"]);
            (v[0]["pending"] == 0).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    drop(pa);
    drop(pb);
    let (a1, b1) = (profile_bytes(&a_home), profile_bytes(&b_home));
    let n = a.group_messages as f64;
    Figures {
        latencies_ms,
        cpu_ms_per_message,
        net_cpu_ms_per_message,
        idle_cpu_ms_per_second,
        sender_bytes_per_group_message: (a1.saturating_sub(a0)) as f64 / n,
        receiver_bytes_per_group_message: (b1.saturating_sub(b0)) as f64 / n,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let a = args();
    let mut results: Vec<Vec<Figures>> = a.builds.iter().map(|_| Vec::new()).collect();
    for r in 0..a.rounds {
        for (i, (name, bin)) in a.builds.iter().enumerate() {
            eprintln!(
                "round {} of {}: {name} ({})",
                r + 1,
                a.rounds,
                bin.display()
            );
            results[i].push(round(bin, &a));
        }
    }
    println!(
        "| figure | {} | {} | candidate / baseline |",
        a.builds[0].0, a.builds[1].0
    );
    println!("|---|---|---|---|");
    let summary: Vec<[f64; 7]> = results
        .iter()
        .map(|rs| {
            let mut lat: Vec<f64> = rs.iter().flat_map(|f| f.latencies_ms.clone()).collect();
            let mut cpu: Vec<f64> = rs.iter().map(|f| f.cpu_ms_per_message).collect();
            let mut idle: Vec<f64> = rs.iter().map(|f| f.idle_cpu_ms_per_second).collect();
            let mut net: Vec<f64> = rs.iter().map(|f| f.net_cpu_ms_per_message).collect();
            let mut sa: Vec<f64> = rs
                .iter()
                .map(|f| f.sender_bytes_per_group_message)
                .collect();
            let mut sb: Vec<f64> = rs
                .iter()
                .map(|f| f.receiver_bytes_per_group_message)
                .collect();
            [
                median(&mut lat.clone()),
                pct(&mut lat, 0.9),
                median(&mut cpu),
                median(&mut net),
                median(&mut idle),
                median(&mut sa),
                median(&mut sb),
            ]
        })
        .collect();
    let names = [
        "send → delivered, median (ms)",
        "send → delivered, p90 (ms)",
        "CPU per message, both daemons (ms)",
        "same, less the idle CPU over that time (ms)",
        "idle CPU, both daemons (ms per second)",
        "sender's profile per group message (bytes)",
        "receiver's profile per group message (bytes)",
    ];
    for (k, name) in names.iter().enumerate() {
        let (b, c) = (summary[0][k], summary[1][k]);
        println!("| {name} | {b:.2} | {c:.2} | {:.3} |", c / b);
    }
    // Each round's figures, to show the spread behind the medians.
    println!();
    println!("| round | build | median (ms) | CPU per message (ms) | idle (ms/s) |");
    println!("|---|---|---|---|---|");
    for r in 0..a.rounds {
        for ((name, _), rs) in a.builds.iter().zip(&results) {
            let f = &rs[r];
            println!(
                "| {} | {name} | {:.2} | {:.2} | {:.1} |",
                r + 1,
                median(&mut f.latencies_ms.clone()),
                f.cpu_ms_per_message,
                f.idle_cpu_ms_per_second
            );
        }
    }
}
