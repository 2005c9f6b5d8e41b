//! Fan-out (issue #8): one post reaching N subscribed clients over the
//! development transport (plain TCP on loopback), against a baseline
//! measured in the same run: a bare smol broadcast server that writes the
//! same 2 KiB to N plain TCP sockets.
//!
//! ```text
//! cargo run --release -p cwtch-node --example fanout -- [N=1000] [POSTS=30]
//! ```
//!
//! Both servers run in this process on 127.0.0.1 (ours is the real
//! `server::serve_client` over the group committer and blob store, on
//! disk in the temp dir with `synchronous=FULL`). The subscribers run in
//! two child processes (this binary with `ours ...` or `base ...`): one
//! executor thread each, so their work is not counted in the server's CPU.
//! A child prints `done TAG` when the post TAG has reached all N of its
//! clients; the time is from the poster's write to that line. Posts
//! alternate between ours and the baseline, one at a time.
//!
//! Ours includes the post's durable commit (the server pushes a blob only
//! once it is on disk); the ack latency to the poster is printed too.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cwtch_node::link::{self, LinkCommand, LinkHandler, Outbox};
use cwtch_node::server;
use cwtch_proto::connection::{CloseReason, Config, Connection};
use cwtch_proto::group::SEALED_BLOB_LEN;
use cwtch_proto::server::ServerConfig;
use cwtch_proto::server::client::{ClientConfig, ClientEvent, ServerClient};
use cwtch_proto::server::wire::MAX_SERVER_MESSAGE_LEN;
use cwtch_proto::{Identity, PublicIdentity};
use smol::Async;
use smol::io::{AsyncReadExt, AsyncWriteExt};

#[path = "../benches/support/mod.rs"]
mod support;
use support::{blob, process_cpu};

fn tag_of(b: &[u8]) -> usize {
    let mut t = [0u8; 8];
    t.copy_from_slice(&b[..8]);
    u64::from_le_bytes(t) as usize
}

// ---- the child: N subscribers -------------------------------------------

static SUBSCRIBED: AtomicUsize = AtomicUsize::new(0);
static ESTABLISHED: AtomicUsize = AtomicUsize::new(0);
static COUNTS: OnceLock<Vec<AtomicUsize>> = OnceLock::new();
static CLIENTS: AtomicUsize = AtomicUsize::new(0);

/// One more client has the post `tag`; the last one says so on stdout.
fn received(tag: usize) {
    let n = CLIENTS.load(Ordering::Relaxed);
    if let Some(c) = COUNTS.get().and_then(|c| c.get(tag))
        && c.fetch_add(1, Ordering::AcqRel) + 1 == n
    {
        println!("done {tag}");
    }
}

struct Subscriber(ServerClient);

impl Subscriber {
    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; MAX_SERVER_MESSAGE_LEN];
        while let Ok(Some(n)) = self.0.poll_transmit(cwtch_proto::Instant::ZERO, &mut buf) {
            out.push(buf[..n].to_vec());
        }
        while let Some(e) = self.0.poll_event() {
            match e {
                ClientEvent::Subscribed => {
                    SUBSCRIBED.fetch_add(1, Ordering::Relaxed);
                }
                ClientEvent::Blob { blob, .. } => received(tag_of(&blob)),
                _ => {}
            }
        }
        out
    }
}

impl LinkHandler for Subscriber {
    fn established(&mut self, _remote: PublicIdentity, out: &mut Outbox) {
        ESTABLISHED.fetch_add(1, Ordering::Relaxed);
        out.extend(self.drain());
    }
    fn message(&mut self, msg: &[u8], out: &mut Outbox) {
        let _ = self.0.handle_message(msg, cwtch_proto::Instant::ZERO);
        out.extend(self.drain());
    }
    fn closed(&mut self, _reason: CloseReason) {}
}

/// Child: `n` subscribers of our server at `addr`; prints `ready` once
/// all are subscribed, then `done TAG` per post; exits when stdin closes.
fn ours_clients(addr: SocketAddr, server_key: [u8; 32], n: usize) {
    let server = PublicIdentity::from_bytes(&server_key).expect("server key");
    let ex = Arc::new(smol::Executor::new());
    for i in 0..n {
        ex.spawn(async move {
            // At most 128 handshakes at once.
            while i >= ESTABLISHED.load(Ordering::Relaxed) + 128 {
                smol::Timer::after(Duration::from_millis(20)).await;
            }
            let Ok(stream) = Async::<TcpStream>::connect(addr).await else {
                eprintln!("fanout: connect failed");
                return;
            };
            let mut rng = cwtch_node::clock::rng();
            let conn = Connection::anonymous_initiator(
                Config::default(),
                server,
                &mut rng,
                cwtch_node::clock::now(),
            );
            let client = ServerClient::new(ClientConfig::default(), 0, &mut rng);
            let (tx, rx) = smol::channel::bounded(1);
            let mut h = Subscriber(client);
            let _ = link::drive(stream, conn, rx, &mut h).await;
            drop(tx);
        })
        .detach();
    }
    smol::block_on(ex.run(async {
        while SUBSCRIBED.load(Ordering::Relaxed) < n {
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        println!("ready");
        let mut line = String::new();
        let _ = smol::unblock(move || std::io::stdin().read_line(&mut line)).await;
    }));
}

/// Child: `n` plain TCP sockets to the baseline at `addr`, each reading
/// 2 KiB messages.
fn base_clients(addr: SocketAddr, n: usize) {
    let ex = Arc::new(smol::Executor::new());
    let ready = Arc::new(AtomicUsize::new(0));
    smol::block_on(ex.run(async {
        for _ in 0..n {
            let Ok(mut stream) = Async::<TcpStream>::connect(addr).await else {
                eprintln!("fanout: connect failed");
                continue;
            };
            let ready = ready.clone();
            ex.spawn(async move {
                ready.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; SEALED_BLOB_LEN];
                while stream.read_exact(&mut buf).await.is_ok() {
                    received(tag_of(&buf));
                }
            })
            .detach();
        }
        while ready.load(Ordering::Relaxed) < n {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        println!("ready");
        let mut line = String::new();
        let _ = smol::unblock(move || std::io::stdin().read_line(&mut line)).await;
    }));
}

// ---- the parent: servers, posters, timing --------------------------------

/// A running child and the times at which its `done TAG` lines arrived.
struct Subscribers {
    child: Child,
    done: mpsc::Receiver<(usize, Instant)>,
}

impl Subscribers {
    fn start(args: &[String]) -> Subscribers {
        let exe = std::env::current_exe().expect("exe");
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn clients");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        assert_eq!(line.trim(), "ready", "the clients did not come up");
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                if let Some(tag) = line.strip_prefix("done ").and_then(|t| t.parse().ok()) {
                    let _ = tx.send((tag, at));
                }
            }
        });
        Subscribers { child, done }
    }

    fn wait(&self, tag: usize) -> Instant {
        loop {
            let (t, at) = self
                .done
                .recv_timeout(Duration::from_secs(120))
                .expect("a post did not reach every client");
            if t == tag {
                return at;
            }
        }
    }

    fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The poster: a client of our server in this process.
struct Poster {
    client: Arc<Mutex<ServerClient>>,
    acks: mpsc::Sender<(u64, Instant)>,
}

impl Poster {
    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut c = self.client.lock().unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; MAX_SERVER_MESSAGE_LEN];
        while let Ok(Some(n)) = c.poll_transmit(cwtch_proto::Instant::ZERO, &mut buf) {
            out.push(buf[..n].to_vec());
        }
        while let Some(e) = c.poll_event() {
            match e {
                ClientEvent::Posted { post, .. } => {
                    let _ = self.acks.send((post.0, Instant::now()));
                }
                ClientEvent::Refused(r) => panic!("the server refused a request: {r:?}"),
                ClientEvent::PostRefused { reason, .. } => {
                    panic!("the server refused a post: {reason:?}")
                }
                _ => {}
            }
        }
        out
    }
}

impl LinkHandler for Poster {
    fn established(&mut self, _remote: PublicIdentity, out: &mut Outbox) {
        out.extend(self.drain());
    }
    fn message(&mut self, msg: &[u8], out: &mut Outbox) {
        let _ = self
            .client
            .lock()
            .unwrap()
            .handle_message(msg, cwtch_proto::Instant::ZERO);
        out.extend(self.drain());
    }
    fn closed(&mut self, _reason: CloseReason) {}
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("ours") | Some("base") => {
            let n: usize = args[3].parse().expect("n");
            let posts: usize = args[4].parse().expect("posts");
            CLIENTS.store(n, Ordering::Relaxed);
            let _ = COUNTS.set((0..posts).map(|_| AtomicUsize::new(0)).collect());
            if args[1] == "ours" {
                ours_clients(args[2].parse().expect("addr"), unhex(&args[5]), n);
            } else {
                base_clients(args[2].parse().expect("addr"), n);
            }
            return;
        }
        _ => {}
    }
    let n: usize = args.get(1).map_or(1000, |a| a.parse().expect("N"));
    let posts: usize = args.get(2).map_or(30, |a| a.parse().expect("POSTS"));
    let warmup = 3;
    let total = posts + warmup;

    // Our server.
    let identity = Identity::generate(&mut cwtch_node::clock::rng());
    let key = *identity.public().as_bytes();
    let dir = tempfile::tempdir().expect("temp dir");
    // Without the per-connection rate limit: one poster posts here many
    // times a second.
    let config = ServerConfig {
        rate_interval: cwtch_proto::Duration::ZERO,
        ..ServerConfig::default()
    };
    let shared =
        server::open_shared(dir.path(), identity, config, Default::default()).expect("server");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let listener = Async::new(listener).expect("async");
    std::thread::spawn(move || {
        smol::block_on(async {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                smol::spawn(async move { server::serve_client(&shared, stream).await }).detach();
            }
        })
    });

    // The baseline: subscribers connect to one port; a post (2 KiB) on the
    // other port is written to every subscriber in turn.
    let subs: Arc<smol::lock::Mutex<Vec<Async<TcpStream>>>> = Arc::default();
    let sub_listener = Async::new(TcpListener::bind("127.0.0.1:0").expect("bind")).unwrap();
    let post_listener = Async::new(TcpListener::bind("127.0.0.1:0").expect("bind")).unwrap();
    let (sub_addr, post_addr) = (
        sub_listener.get_ref().local_addr().unwrap(),
        post_listener.get_ref().local_addr().unwrap(),
    );
    {
        let subs = subs.clone();
        smol::spawn(async move {
            while let Ok((s, _)) = sub_listener.accept().await {
                subs.lock().await.push(s);
            }
        })
        .detach();
    }
    {
        let subs = subs.clone();
        smol::spawn(async move {
            while let Ok((mut poster, _)) = post_listener.accept().await {
                let subs = subs.clone();
                smol::spawn(async move {
                    let mut buf = [0u8; SEALED_BLOB_LEN];
                    while poster.read_exact(&mut buf).await.is_ok() {
                        for s in subs.lock().await.iter_mut() {
                            let _ = s.write_all(&buf).await;
                        }
                    }
                })
                .detach();
            }
        })
        .detach();
    }

    eprintln!("fanout: connecting {n} subscribers to each server...");
    let ours = Subscribers::start(&[
        "ours".into(),
        addr.to_string(),
        n.to_string(),
        total.to_string(),
        hex(&key),
    ]);
    let base = Subscribers::start(&[
        "base".into(),
        sub_addr.to_string(),
        n.to_string(),
        total.to_string(),
    ]);
    while smol::block_on(subs.lock()).len() < n {
        std::thread::sleep(Duration::from_millis(20));
    }

    // Our poster.
    let client = Arc::new(Mutex::new(ServerClient::new(
        ClientConfig {
            subscribe_after_sync: false,
            ..ClientConfig::default()
        },
        0,
        &mut cwtch_node::clock::rng(),
    )));
    let (ack_tx, acks) = mpsc::channel();
    let (cmd_tx, cmd_rx) = smol::channel::unbounded();
    {
        let client = client.clone();
        let stream = smol::block_on(Async::<TcpStream>::connect(addr)).expect("connect");
        let server = PublicIdentity::from_bytes(&key).unwrap();
        std::thread::spawn(move || {
            let mut rng = cwtch_node::clock::rng();
            let conn = Connection::anonymous_initiator(
                Config::default(),
                server,
                &mut rng,
                cwtch_node::clock::now(),
            );
            let mut h = Poster {
                client,
                acks: ack_tx,
            };
            smol::block_on(link::drive(stream, conn, cmd_rx, &mut h));
        });
    }
    while !client.lock().unwrap().is_ready() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut base_poster = TcpStream::connect(post_addr).expect("connect");
    base_poster.set_nodelay(true).unwrap();

    let (mut t_ours, mut t_ack, mut t_base) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_ours, mut cpu_base) = (Duration::ZERO, Duration::ZERO);
    let mut buf = vec![0u8; MAX_SERVER_MESSAGE_LEN];
    for tag in 0..total {
        let b = blob(tag as u64);
        // Ours.
        let msg = {
            let mut c = client.lock().unwrap();
            c.queue_post(cwtch_proto::server::PostId(tag as u64), &b)
                .expect("post");
            let n = c
                .poll_transmit(cwtch_proto::Instant::ZERO, &mut buf)
                .expect("post")
                .expect("the post goes out");
            buf[..n].to_vec()
        };
        let cpu0 = process_cpu();
        let t0 = Instant::now();
        cmd_tx.send_blocking(LinkCommand::Send(msg)).unwrap();
        let (_, acked) = acks.recv_timeout(Duration::from_secs(60)).expect("ack");
        let all = ours.wait(tag);
        let cpu1 = process_cpu();
        // The baseline.
        std::thread::sleep(Duration::from_millis(50));
        let cpu2 = process_cpu();
        let t1 = Instant::now();
        base_poster.write_all(&b).unwrap();
        let all_base = base.wait(tag);
        let cpu3 = process_cpu();
        if tag >= warmup {
            t_ours.push(all - t0);
            t_ack.push(acked - t0);
            t_base.push(all_base - t1);
            cpu_ours += cpu1 - cpu0;
            cpu_base += cpu3 - cpu2;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ours.stop();
    base.stop();
    for v in [&mut t_ours, &mut t_ack, &mut t_base] {
        v.sort();
    }
    println!(
        "fan-out of one 2 KiB post to {n} subscribed clients, {posts} posts (after {warmup} warm-up), loopback TCP"
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>14}",
        "", "p50 ms", "p99 ms", "max ms", "server CPU ms"
    );
    let row = |name: &str, v: &[Duration], cpu: Option<Duration>| {
        println!(
            "{name:<44} {:>9.2} {:>9.2} {:>9.2} {:>14}",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            ms(*v.last().unwrap_or(&Duration::ZERO)),
            cpu.map_or("-".into(), |c| format!("{:.1}", ms(c) / posts as f64)),
        )
    };
    row("ours: all subscribers have it", &t_ours, Some(cpu_ours));
    row("ours: durable ack to the poster", &t_ack, None);
    row(
        "baseline: plain TCP broadcast, all have it",
        &t_base,
        Some(cpu_base),
    );
    println!(
        "ratio ours/baseline: p50 {:.1}x, p99 {:.1}x",
        ms(percentile(&t_ours, 0.5)) / ms(percentile(&t_base, 0.5)),
        ms(percentile(&t_ours, 0.99)) / ms(percentile(&t_base, 0.99)),
    );
}
