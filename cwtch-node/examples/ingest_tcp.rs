//! Durable ingest over the development transport (issue #8): P clients on
//! loopback TCP, each posting 2 KiB blobs one after another (the next post
//! once the previous one is acknowledged as durable). Ours is the real
//! server (`server::serve_client`: channel handshake, server session, group
//! committer, the blob log, synced before each acknowledgement); the baseline, measured
//! in the same run, is a bare smol TCP server that stores each blob with
//! its own SQLite transaction (WAL, `synchronous=FULL`, one blob per commit,
//! what the reference server does) and then acknowledges it. The floor,
//! also in the same run, is ours without anything of ours: the same bytes
//! on the wire, one `pwrite` and `fdatasync` of a plain file per group of
//! posts, no cipher, no session, no SQLite ([`start_floor`]): a lower
//! bound for any server of this design on this machine.
//!
//! ```text
//! cargo run --release -p cwtch-node --example ingest_tcp -- [SECS=5] [P,P,...=16,64,256]
//! ```
//!
//! The clients run in a child process (this binary with `ours ...`,
//! `base ...` or `floor ...`), so the server's CPU time (this process,
//! user + system) is the server's alone. Ours runs without the per-connection rate limit
//! (`rate_interval` 0): this measures capacity, not the policy. With
//! `INGEST_ONLY=ours` (or `floor+aead`) only that server runs (to profile
//! it), without ratios. With `INGEST_THREADS=1` it also prints each
//! thread's CPU and context switches per post. The floor's clients send
//! bytes made in advance, with no cipher or session of their own, so they
//! cost less CPU than ours' (and a server whose clients are slower to post
//! again sleeps and wakes more often per post);
//! `FLOOR_CLIENT_SPIN_US=N` makes them spend N µs per post first, to
//! compare the servers under clients of the same cost.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cwtch_node::blob_store::SqliteStore;
use cwtch_node::link::{self, LinkHandler, Outbox};
use cwtch_node::server;
use cwtch_proto::channel::frame::{FRAME_LEN, FRAME_PAYLOAD_MAX};
use cwtch_proto::connection::{CloseReason, Config, Connection};
use cwtch_proto::group::SEALED_BLOB_LEN;
use cwtch_proto::server::ServerConfig;
use cwtch_proto::server::client::{ClientConfig, ClientEvent, ServerClient};
use cwtch_proto::server::wire::{MAX_SERVER_MESSAGE_LEN, POST_LEN};
use cwtch_proto::{Identity, PublicIdentity};
use smol::Async;
use smol::io::{AsyncReadExt, AsyncWriteExt};

#[path = "../benches/support/mod.rs"]
mod support;
use support::{blob, process_cpu, thread_cpu};

// ---- the child: P posting clients ---------------------------------------

static READY: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
/// When every client was ready, and when the window ends.
static WINDOW: OnceLock<(Instant, Instant)> = OnceLock::new();
/// Ack latencies of posts acknowledged inside the window.
static LATENCIES: Mutex<Vec<Duration>> = Mutex::new(Vec::new());

fn record(sent: Instant, acked: Instant) {
    if let Some(&(start, end)) = WINDOW.get()
        && acked >= start
        && acked < end
    {
        LATENCIES.lock().unwrap().push(acked - sent);
    }
}

fn posting() -> bool {
    WINDOW.get().is_none_or(|&(_, end)| Instant::now() < end)
}

struct Poster {
    client: ServerClient,
    sent: Instant,
    n: u64,
    id: u64,
}

impl Poster {
    fn post(&mut self) -> Vec<Vec<u8>> {
        if !posting() {
            return Vec::new();
        }
        let mut buf = vec![0u8; MAX_SERVER_MESSAGE_LEN];
        let b = blob((self.id << 32) | self.n);
        self.n += 1;
        if self
            .client
            .queue_post(cwtch_proto::server::PostId(self.n), &b)
            .is_err()
        {
            return Vec::new();
        }
        let mut out = Vec::new();
        while let Ok(Some(n)) = self
            .client
            .poll_transmit(cwtch_proto::Instant::ZERO, &mut buf)
        {
            out.push(buf[..n].to_vec());
        }
        self.sent = Instant::now();
        out
    }
}

impl LinkHandler for Poster {
    fn established(&mut self, _remote: PublicIdentity, _out: &mut Outbox) {}
    fn message(&mut self, msg: &[u8], out: &mut Outbox) {
        let _ = self.client.handle_message(msg, cwtch_proto::Instant::ZERO);
        while let Some(e) = self.client.poll_event() {
            match e {
                ClientEvent::Connected(_) => {
                    READY.fetch_add(1, Ordering::Relaxed);
                    out.extend(self.post());
                }
                ClientEvent::Posted { .. } => {
                    record(self.sent, Instant::now());
                    out.extend(self.post());
                }
                ClientEvent::Refused(_) | ClientEvent::PostRefused { .. } => {
                    REFUSED.fetch_add(1, Ordering::Relaxed);
                    out.extend(self.post());
                }
                _ => {}
            }
        }
    }
    fn closed(&mut self, _reason: CloseReason) {}
}

async fn ours_client(addr: SocketAddr, server: PublicIdentity, id: u64) {
    let Ok(stream) = Async::<TcpStream>::connect(addr).await else {
        eprintln!("ingest_tcp: connect failed");
        return;
    };
    let mut rng = cwtch_node::clock::rng();
    let conn = Connection::anonymous_initiator(
        Config::default(),
        server,
        &mut rng,
        cwtch_node::clock::now(),
    );
    let config = ClientConfig {
        auto_sync: false,
        subscribe_after_sync: false,
        ..ClientConfig::default()
    };
    let mut h = Poster {
        client: ServerClient::new(config, 0, &mut rng),
        sent: Instant::now(),
        n: 0,
        id,
    };
    let (tx, rx) = smol::channel::bounded(1);
    let _ = link::drive(stream, conn, rx, &mut h).await;
    drop(tx);
}

/// A client of the baseline (`frame` false: a bare blob out, an 8-byte
/// acknowledgement back) or of the floor (`frame` true: the bytes our
/// channel carries for a post and for its acknowledgement).
async fn bare_client(addr: SocketAddr, id: u64, frame: bool) {
    let Ok(mut s) = Async::<TcpStream>::connect(addr).await else {
        eprintln!("ingest_tcp: connect failed");
        return;
    };
    READY.fetch_add(1, Ordering::Relaxed);
    let (out_len, ack_len) = if frame {
        (FLOOR_POST, FRAME_LEN)
    } else {
        (SEALED_BLOB_LEN, 8)
    };
    let mut out = vec![0u8; out_len];
    let mut ack = vec![0u8; ack_len];
    let mut n = 0;
    let spin = std::env::var("FLOOR_CLIENT_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::ZERO, Duration::from_micros);
    while posting() {
        let t = Instant::now();
        while t.elapsed() < spin {}
        out[..SEALED_BLOB_LEN].copy_from_slice(&blob((id << 32) | n));
        n += 1;
        let sent = Instant::now();
        if s.write_all(&out).await.is_err() || s.read_exact(&mut ack).await.is_err() {
            return;
        }
        record(sent, Instant::now());
    }
}

/// Child: `p` clients; prints `ready` when all can post, then after `secs`
/// prints `done POSTS P50_US P99_US REFUSED`.
fn clients(mode: &str, addr: SocketAddr, key: [u8; 32], p: usize, secs: f64) {
    let ex = Arc::new(smol::Executor::new());
    for i in 0..p {
        if mode == "ours" {
            let server = PublicIdentity::from_bytes(&key).expect("server key");
            ex.spawn(async move {
                // At most 128 handshakes at once.
                while i >= READY.load(Ordering::Relaxed) + 128 {
                    smol::Timer::after(Duration::from_millis(10)).await;
                }
                ours_client(addr, server, i as u64).await
            })
            .detach();
        } else {
            ex.spawn(bare_client(addr, i as u64, mode == "floor"))
                .detach();
        }
    }
    smol::block_on(ex.run(async {
        while READY.load(Ordering::Relaxed) < p {
            smol::Timer::after(Duration::from_millis(5)).await;
        }
        let start = Instant::now();
        let _ = WINDOW.set((start, start + Duration::from_secs_f64(secs)));
        println!("ready");
        smol::Timer::after(Duration::from_secs_f64(secs)).await;
        // Posts in flight at the end finish outside the window.
        smol::Timer::after(Duration::from_millis(500)).await;
        let mut l = std::mem::take(&mut *LATENCIES.lock().unwrap());
        l.sort();
        let pct = |q: f64| {
            l.get(((l.len().max(1) - 1) as f64 * q).round() as usize)
                .map_or(0, |d| d.as_micros())
        };
        println!(
            "done {} {} {} {}",
            l.len(),
            pct(0.5),
            pct(0.99),
            REFUSED.load(Ordering::Relaxed)
        );
    }));
}

// ---- the parent: the servers, the runs ----------------------------------

struct Outcome {
    /// The server's name in the output.
    label: &'static str,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    refused: u64,
    /// Posts per commit (ours and the floor).
    batch: Option<f64>,
}

/// One run of `p` clients in `mode` (`label` names it in the output).
fn run(
    mode: &str,
    label: &'static str,
    addr: SocketAddr,
    key: &[u8; 32],
    p: usize,
    secs: f64,
) -> Outcome {
    let exe = std::env::current_exe().expect("exe");
    let mut child = Command::new(exe)
        .args([
            mode,
            &addr.to_string(),
            &hex(key),
            &p.to_string(),
            &secs.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn clients");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let _ = out.read_line(&mut line);
    assert_eq!(line.trim(), "ready", "the clients did not come up");
    let cpu0 = process_cpu();
    let threads0 = thread_cpu();
    let switches0 = thread_switches();
    let io0 = written();
    line.clear();
    let _ = out.read_line(&mut line);
    // The window ended half a second before the line.
    let cpu = process_cpu() - cpu0;
    let threads = thread_cpu();
    let switches = thread_switches();
    let io = written() - io0;
    let _ = child.wait();
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().expect("a figure"))
        .collect();
    assert_eq!(f.len(), 4, "unexpected output: {line}");
    if std::env::var_os("INGEST_THREADS").is_some() {
        // Where the server's CPU went, per post and thread.
        let per_post = |d: Duration| d.as_secs_f64() * 1e6 / f[0].max(1) as f64;
        let split: Vec<String> = threads
            .iter()
            .map(|(name, t)| (name, *t - threads0.get(name).copied().unwrap_or_default()))
            .filter(|(_, d)| !d.is_zero())
            .map(|(name, d)| format!("{name} {:.1}", per_post(d)))
            .collect();
        // How often each thread slept (voluntary switches) or was
        // preempted, per post.
        let per = |n: u64| n as f64 / f[0].max(1) as f64;
        let slept: Vec<String> = switches
            .iter()
            .map(|(name, &(v, n))| {
                let (v0, n0) = switches0.get(name).copied().unwrap_or_default();
                (name, v.saturating_sub(v0), n.saturating_sub(n0))
            })
            .filter(|&(_, v, n)| v + n > 0)
            .map(|(name, v, n)| format!("{name} {:.2}+{:.2}", per(v), per(n)))
            .collect();
        eprintln!(
            "{label} P={p}: CPU µs per post by thread: {}; {:.0} bytes handed to write per post; switches per post (slept+preempted): {}",
            split.join(", "),
            io as f64 / f[0].max(1) as f64,
            slept.join(", ")
        );
    }
    Outcome {
        label,
        rate: f[0] as f64 / secs,
        p50_ms: f[1] as f64 / 1e3,
        p99_ms: f[2] as f64 / 1e3,
        cpu_us: cpu.as_secs_f64() * 1e6 / f[0].max(1) as f64,
        refused: f[3],
        batch: None,
    }
}

/// Bytes this process handed to `write`, `pwrite` and their kind so far
/// (`wchar` of /proc/self/io: files, not sockets, which std writes with
/// `send`; bytes handed to the kernel, not bytes that reached the disk).
fn written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

/// Our server on a fresh store; returns its address, key and state.
fn start_ours() -> (SocketAddr, [u8; 32], Arc<server::Shared>, tempfile::TempDir) {
    let identity = Identity::generate(&mut cwtch_node::clock::rng());
    let key = *identity.public().as_bytes();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ServerConfig {
        rate_interval: cwtch_proto::Duration::ZERO,
        ..ServerConfig::default()
    };
    let shared =
        server::open_shared(dir.path(), identity, config, Default::default()).expect("server");
    let listener = Async::new(TcpListener::bind("127.0.0.1:0").expect("bind")).unwrap();
    let addr = listener.get_ref().local_addr().unwrap();
    let accepting = shared.clone();
    smol::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let shared = accepting.clone();
            smol::spawn(async move { server::serve_client(&shared, stream).await }).detach();
        }
    })
    .detach();
    (addr, key, shared, dir)
}

/// A loopback listener that runs `serve` on each connection it accepts;
/// returns its address.
fn serve_loopback<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(Async<TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = Async::new(TcpListener::bind("127.0.0.1:0").expect("bind")).unwrap();
    let addr = listener.get_ref().local_addr().unwrap();
    smol::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            smol::spawn(serve(s)).detach();
        }
    })
    .detach();
    addr
}

/// The baseline on a fresh store: one SQLite transaction per blob, on one
/// store thread (SQLite has one writer), then an 8-byte ack.
fn start_base() -> (SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = SqliteStore::open(dir.path().join("blobs.sqlite")).unwrap();
    type Job = (Box<[u8; SEALED_BLOB_LEN]>, smol::channel::Sender<u64>);
    let (jobs, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::spawn(move || {
        while let Ok((b, reply)) = rx.recv() {
            let index = store.append_batch(&[*b]).expect("append").start;
            let _ = reply.send_blocking(index);
        }
    });
    let jobs = Arc::new(Mutex::new(jobs));
    let addr = serve_loopback(move |mut s| {
        let jobs = jobs.clone();
        async move {
            let (tx, rx) = smol::channel::bounded(1);
            loop {
                let mut b = Box::new([0u8; SEALED_BLOB_LEN]);
                if s.read_exact(&mut b[..]).await.is_err() {
                    return;
                }
                let _ = jobs.lock().unwrap().send((b, tx.clone()));
                let Ok(index) = rx.recv().await else { return };
                if s.write_all(&index.to_le_bytes()).await.is_err() {
                    return;
                }
            }
        }
    });
    (addr, dir)
}

/// The bytes of a post on our channel: its request in 479-byte fragments,
/// each in a 498-byte frame (5 frames).
const FLOOR_POST: usize = POST_LEN.div_ceil(FRAME_PAYLOAD_MAX) * FRAME_LEN;
/// The floor's log file: written round and round, so that a sync never
/// has to grow it (SQLite's WAL is reused the same way).
const FLOOR_LOG: u64 = 64 << 20;
/// A floor's commits and the posts in them, for posts per commit.
#[derive(Default)]
struct FloorCounts {
    commits: AtomicU64,
    stored: AtomicU64,
}

/// A channel on the keys of a real handshake, for the floor's cipher.
fn floor_channel() -> cwtch_proto::channel::Channel {
    use cwtch_proto::handshake::{InitiatorHandshake, MSG1_LEN, MSG2_LEN, ResponderHandshake};
    let mut rng = cwtch_node::clock::rng();
    let server = Identity::generate(&mut rng);
    let mut m1 = [0u8; MSG1_LEN];
    let mut m2 = [0u8; MSG2_LEN];
    let mut init = InitiatorHandshake::new(Identity::generate(&mut rng), server.public(), &mut rng);
    init.write_message1(&mut m1).expect("msg1");
    let mut resp = ResponderHandshake::new(server, &mut rng);
    resp.read_message1(&m1).expect("read msg1");
    let (_, keys) = resp.write_message2(&mut m2).expect("msg2");
    cwtch_proto::channel::Channel::new(&keys, cwtch_proto::channel::DEFAULT_REKEY_INTERVAL)
}

/// The floor: what a server built like ours pays on this machine with
/// nothing of ours in it. It reads the bytes a post takes on our channel
/// and answers with the bytes of an acknowledgement, as ours does; between
/// the two, one writer thread puts the 2,048-byte blobs of every post
/// waiting into a preallocated file with one `write` and one `fdatasync`
/// (our group commit, with its hold, without SQLite). No cipher, no
/// session, no index, no checksums, and a file that never grows (the
/// cheapest log there is): a lower bound for ours, not a server.
///
/// With `aead`, it also pays for the cipher our channel cannot do without:
/// our channel's ChaCha20-Poly1305 over each frame's 482-byte body, five
/// frames in and one out (sealing padding frames: the same keystream and
/// MAC work as opening five and sealing one).
/// Context switches of each of this process's threads, by name:
/// (voluntary, involuntary), from `/proc/self/task/*/status`.
fn thread_switches() -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .map_or("?", str::trim)
            .to_string();
        let e = out.entry(name).or_insert((0, 0));
        e.0 += field("voluntary_ctxt_switches:");
        e.1 += field("nonvoluntary_ctxt_switches:");
    }
    out
}

fn start_floor(aead: bool) -> (SocketAddr, Arc<FloorCounts>, tempfile::TempDir) {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = std::fs::File::create(dir.path().join("log")).expect("log");
    let zeros = vec![0u8; 1 << 20];
    for i in 0..FLOOR_LOG >> 20 {
        file.write_all_at(&zeros, i << 20).expect("preallocate");
    }
    file.sync_all().expect("sync");
    type Job = (Box<[u8; SEALED_BLOB_LEN]>, smol::channel::Sender<()>);
    let (jobs, rx) = std::sync::mpsc::channel::<Job>();
    let counts = Arc::new(FloorCounts::default());
    let counting = counts.clone();
    std::thread::spawn(move || {
        let mut at = 0u64;
        let mut buf = Vec::new();
        // The hold of our committer: while fewer posts are in the batch
        // than the last commit had, wait for more in 100 µs steps, never
        // longer than the last commit took (nor 1 ms); a step that brings
        // none ends it.
        let (mut expect, mut took) = (0, Duration::ZERO);
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            let until = Instant::now() + took.min(Duration::from_millis(1));
            while batch.len() < expect {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                std::thread::sleep(Duration::from_micros(100).min(until - now));
                let before = batch.len();
                batch.extend(rx.try_iter());
                if batch.len() == before {
                    break;
                }
            }
            let started = Instant::now();
            buf.clear();
            for (b, _) in &batch {
                buf.extend_from_slice(&b[..]);
            }
            if at + buf.len() as u64 > FLOOR_LOG {
                at = 0;
            }
            file.write_all_at(&buf, at).expect("write");
            file.sync_data().expect("fdatasync");
            at += buf.len() as u64;
            (expect, took) = (batch.len(), started.elapsed());
            counting.commits.fetch_add(1, Ordering::Relaxed);
            counting
                .stored
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            for (_, done) in batch {
                let _ = done.send_blocking(());
            }
        }
    });
    let jobs = Arc::new(Mutex::new(jobs));
    let addr = serve_loopback(move |mut s| {
        let jobs = jobs.clone();
        async move {
            let (tx, rx) = smol::channel::bounded(1);
            let mut post = vec![0u8; FLOOR_POST];
            let mut ack = [0u8; FRAME_LEN];
            let mut channel = aead.then(floor_channel);
            let mut frame_aead = |frame: &mut [u8]| {
                if let (Some(channel), Ok(frame)) = (channel.as_mut(), frame.try_into()) {
                    // The cipher work of a frame, with nothing of a session.
                    let _ = channel.seal_padding(frame);
                }
            };
            loop {
                if s.read_exact(&mut post).await.is_err() {
                    return;
                }
                if aead {
                    post.chunks_mut(FRAME_LEN).for_each(&mut frame_aead);
                    frame_aead(&mut ack);
                }
                let mut b = Box::new([0u8; SEALED_BLOB_LEN]);
                b.copy_from_slice(&post[..SEALED_BLOB_LEN]);
                let _ = jobs.lock().unwrap().send((b, tx.clone()));
                if rx.recv().await.is_err() || s.write_all(&ack).await.is_err() {
                    return;
                }
            }
        }
    });
    (addr, counts, dir)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(mode @ ("ours" | "base" | "floor")) = args.get(1).map(String::as_str) {
        clients(
            mode,
            args[2].parse().expect("addr"),
            unhex(&args[3]),
            args[4].parse().expect("p"),
            args[5].parse().expect("secs"),
        );
        return;
    }
    let secs: f64 = args.get(1).map_or(5.0, |a| a.parse().expect("SECS"));
    let levels: Vec<usize> = args.get(2).map_or(vec![16, 64, 256], |a| {
        a.split(',').map(|x| x.parse().expect("P")).collect()
    });
    println!(
        "durable ingest over loopback TCP, 2 KiB blobs, {secs} s per run, every commit synced, in {}",
        std::env::temp_dir().display()
    );
    println!(
        "{:<10} {:>5} {:>10} {:>9} {:>9} {:>12} {:>8} {:>12}",
        "server", "P", "posts/s", "p50 ms", "p99 ms", "CPU µs/post", "refused", "posts/commit"
    );
    // INGEST_ONLY=ours (or floor+aead): only that server (for a profiler
    // attached to this process); no ratios then.
    let only = std::env::var("INGEST_ONLY").ok();
    let only_ours = only.as_deref() == Some("ours");
    let only_floor = only.as_deref() == Some("floor+aead");
    let mut rows = Vec::new();
    for &p in &levels {
        if only_floor {
            let (addr, _counts, _dir) = start_floor(true);
            let f = run("floor", "floor+aead", addr, &[0; 32], p, secs);
            println!(
                "floor+aead {p:>5} {:>10.0} posts/s {:>12.1} CPU µs/post",
                f.rate, f.cpu_us
            );
            continue;
        }
        if only_ours {
            let (addr, key, _shared, _dir) = start_ours();
            let o = run("ours", "ours", addr, &key, p, secs);
            println!(
                "ours {p:>5} {:>10.0} posts/s {:>12.1} CPU µs/post",
                o.rate, o.cpu_us
            );
            continue;
        }
        // A fresh store for each run.
        let (base_addr, _base_dir) = start_base();
        let b = run("base", "baseline", base_addr, &[0; 32], p, secs);
        let floor = |aead| {
            let (addr, counts, _dir) = start_floor(aead);
            let mut f = run(
                "floor",
                if aead { "floor+aead" } else { "floor" },
                addr,
                &[0; 32],
                p,
                secs,
            );
            f.batch = Some(
                counts.stored.load(Ordering::Relaxed) as f64
                    / counts.commits.load(Ordering::Relaxed).max(1) as f64,
            );
            f
        };
        let f = floor(false);
        let fa = floor(true);
        let (addr, key, shared, _dir) = start_ours();
        let mut o = run("ours", "ours", addr, &key, p, secs);
        let report = smol::block_on(shared.report());
        o.batch = Some(report.stored_total as f64 / report.commits_total.max(1) as f64);
        for x in [&b, &f, &fa, &o] {
            println!(
                "{:<10} {p:>5} {:>10.0} {:>9.2} {:>9.2} {:>12.1} {:>8} {:>12}",
                x.label,
                x.rate,
                x.p50_ms,
                x.p99_ms,
                x.cpu_us,
                x.refused,
                x.batch.map_or("1".into(), |b| format!("{b:.1}"))
            );
        }
        let _ = std::io::stdout().flush();
        rows.push((p, b, fa, o));
    }
    println!();
    for (p, b, fa, o) in &rows {
        let ratio = o.rate / b.rate.max(1e-9);
        println!(
            "P={p:<5} ours/baseline: {ratio:.1}x posts/s, CPU per post {:.2}x (ours/(floor+aead) {:.2}x); goal (>= 10x and >= 30,000 posts/s) {}",
            o.cpu_us / b.cpu_us.max(1e-9),
            o.cpu_us / fa.cpu_us.max(1e-9),
            if ratio >= 10.0 && o.rate >= 30_000.0 {
                "met"
            } else {
                "missed"
            }
        );
    }
}
