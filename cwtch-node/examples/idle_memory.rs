//! Resident memory per idle connection of the server (issue #8), against a
//! baseline measured in the same run: a bare smol accept loop that holds
//! the same number of idle TCP sockets.
//!
//! ```text
//! cargo run --release -p cwtch-node --example idle_memory -- 1000 10000
//! ```
//!
//! 10,000 clients need a little over 10,000 file descriptors in each of
//! the two processes (`ulimit -n` of 20,000 is enough: the baseline's
//! sockets are closed before ours are measured).
//!
//! The server (or the baseline) runs in this process on 127.0.0.1; the
//! clients run in a child process (this binary with `clients ADDR N`), so
//! their memory is not counted. Each client completes the anonymous
//! handshake, subscribes, and then stays idle (the baseline's clients only
//! connect and hold their sockets). The figure is the growth of
//! this process's VmRSS divided by the number of clients.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cwtch_node::link::{self, LinkHandler, Outbox};
use cwtch_node::server;
use cwtch_proto::connection::{CloseReason, Config, Connection};
use cwtch_proto::server::ServerConfig;
use cwtch_proto::server::client::{ClientConfig, ServerClient};
use cwtch_proto::server::wire::MAX_SERVER_MESSAGE_LEN;
use cwtch_proto::{Identity, Instant, PublicIdentity};
use smol::Async;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn now() -> Instant {
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    Instant::from_micros(start.elapsed().as_micros() as u64 + 1)
}

static ESTABLISHED: AtomicUsize = AtomicUsize::new(0);

struct Subscriber(ServerClient);

impl Subscriber {
    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; MAX_SERVER_MESSAGE_LEN];
        while let Ok(Some(n)) = self.0.poll_transmit(cwtch_proto::Instant::ZERO, &mut buf) {
            out.push(buf[..n].to_vec());
        }
        while self.0.poll_event().is_some() {}
        out
    }
}

impl LinkHandler for Subscriber {
    fn established(&mut self, _remote: PublicIdentity, out: &mut Outbox) {
        ESTABLISHED.fetch_add(1, Ordering::Relaxed);
        self.0.subscribe();
        out.extend(self.drain());
    }
    fn message(&mut self, msg: &[u8], out: &mut Outbox) {
        let _ = self.0.handle_message(msg, cwtch_proto::Instant::ZERO);
        out.extend(self.drain());
    }
    fn closed(&mut self, _reason: CloseReason) {}
}

/// Child: `n` clients to `addr`, each handshaken, subscribed, then idle;
/// prints "ready" when all are up, exits when stdin closes.
fn clients(addr: SocketAddr, server_key: [u8; 32], n: usize) {
    let server = PublicIdentity::from_bytes(&server_key).expect("server key");
    if std::env::var_os("IDLE_MEMORY_PLAIN").is_some() {
        // The baseline never answers a handshake: only connect and hold.
        let held: Vec<_> = (0..n)
            .filter_map(|_| TcpStream::connect(addr).ok())
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        println!("{}", held.len());
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        return;
    }
    let ready = Arc::new(AtomicUsize::new(0));
    let ex = Arc::new(smol::Executor::new());
    for i in 0..n {
        let ready = ready.clone();
        ex.spawn(async move {
            // At most 128 handshakes at once (the server evicts the oldest
            // beyond 256 unauthenticated connections).
            while i >= ESTABLISHED.load(Ordering::Relaxed) + 128 {
                smol::Timer::after(Duration::from_millis(20)).await;
            }
            let Ok(stream) = Async::<TcpStream>::connect(addr).await else {
                return;
            };
            let mut rng = cwtch_node::clock::rng();
            let conn = Connection::anonymous_initiator(Config::default(), server, &mut rng, now());
            let client = ServerClient::new(ClientConfig::default(), 0, &mut rng);
            let (_tx, rx) = smol::channel::bounded(1);
            let mut h = Subscriber(client);
            ready.fetch_add(1, Ordering::Relaxed);
            let _ = link::drive(stream, conn, rx, &mut h).await;
            let _ = _tx;
        })
        .detach();
    }
    smol::block_on(ex.run(async {
        while ready.load(Ordering::Relaxed) < n || ESTABLISHED.load(Ordering::Relaxed) < n {
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        // Let handshakes and subscriptions finish.
        smol::Timer::after(Duration::from_secs(3)).await;
        println!("{}", ESTABLISHED.load(Ordering::Relaxed));
        let mut line = String::new();
        let _ = smol::unblock(move || std::io::stdin().read_line(&mut line)).await;
    }));
}

/// Runs `n` clients against the listener's address and returns the VmRSS
/// growth of this process while they are connected, in KiB.
fn measure(addr: SocketAddr, key: &[u8; 32], n: usize, before: u64, plain: bool) -> u64 {
    use std::io::{BufRead, BufReader};
    let exe = std::env::current_exe().expect("exe");
    let mut cmd = Command::new(exe);
    if plain {
        cmd.env("IDLE_MEMORY_PLAIN", "1");
    }
    let mut child = cmd
        .args(["clients", &addr.to_string(), &hex(key), &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn clients");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let _ = out.read_line(&mut line);
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib();
    eprintln!("  {n} clients, {} sessions established", line.trim());
    drop(child.stdin.take());
    let _ = child.wait();
    after.saturating_sub(before)
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
    if args.get(1).map(String::as_str) == Some("clients") {
        clients(
            args[2].parse().expect("addr"),
            unhex(&args[3]),
            args[4].parse().expect("n"),
        );
        return;
    }
    let counts: Vec<usize> = if args.len() > 1 {
        args[1..]
            .iter()
            .map(|a| a.parse().expect("a count"))
            .collect()
    } else {
        vec![1000]
    };
    if counts.len() > 1 {
        // One fresh process per count: freed memory stays with the
        // allocator and would hide the next count's growth.
        let exe = std::env::current_exe().expect("exe");
        for n in counts {
            let _ = Command::new(&exe).arg(n.to_string()).status();
        }
        return;
    }
    let identity = Identity::generate(&mut cwtch_node::clock::rng());
    let key = *identity.public().as_bytes();
    // Removed when this process ends.
    let dir = tempfile::tempdir().expect("temp dir");
    let shared = server::open_shared(
        dir.path(),
        identity,
        ServerConfig::default(),
        Default::default(),
    )
    .expect("server");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let listener = Async::new(listener).expect("async");
    {
        let shared = shared.clone();
        std::thread::spawn(move || {
            smol::block_on(async {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let shared = shared.clone();
                    smol::spawn(async move { server::serve_client(&shared, stream).await })
                        .detach();
                }
            })
        });
    }
    // Baseline: a bare accept loop holding idle sockets.
    let base_listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base_addr = base_listener.local_addr().expect("addr");
    let base_listener = Async::new(base_listener).expect("async");
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let held2 = held.clone();
    std::thread::spawn(move || {
        smol::block_on(async {
            loop {
                if let Ok((s, _)) = base_listener.accept().await {
                    held2.lock().unwrap().push(s);
                }
            }
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "{:>7} {:>16} {:>16} {:>7}",
        "clients", "server KiB/conn", "baseline KiB/conn", "ratio"
    );
    for n in counts {
        let before = rss_kib();
        let base = measure(base_addr, &key, n, before, true);
        // Close the baseline's sockets (file descriptors: 2 x 10,000 would
        // pass the usual hard limit of 20,000).
        held.lock().unwrap().clear();
        std::thread::sleep(Duration::from_secs(1));
        let before = rss_kib();
        let ours = measure(addr, &key, n, before, false);
        let (o, b) = (ours as f64 / n as f64, base as f64 / n as f64);
        println!("{n:>7} {o:>16.1} {b:>16.1} {:>7.1}", o / b.max(0.1));
    }
}
