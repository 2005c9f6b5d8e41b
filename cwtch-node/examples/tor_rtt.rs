//! Over Tor (issue #8), on a private Tor network on loopback that this
//! example starts and stops itself (3 authorities, 2 relays, 2 client
//! tors; only the tor processes it started are stopped):
//!
//! 1. Round trip of a one-frame message over our channel (a `Connection`
//!    over a SOCKS stream to an onion service, answered by an echoing
//!    responder) against a raw TCP round trip of the same number of wire
//!    bytes (one 498-byte frame) to a plain echo server behind the SAME
//!    onion service (a second virtual port), dialled with the same SOCKS
//!    isolation credentials so that tor carries both streams on the same
//!    rendezvous circuit. Samples alternate between the two.
//! 2. Time from `ADD_ONION` to the first successful dial from the other
//!    client tor (fresh key and fresh isolation each sample), and the time
//!    to tor's `HS_DESC UPLOADED`.
//! 3. Time from starting a real `cwtch-node server run` process (next to
//!    this example in target/) to the first completed handshake with it
//!    from the other client tor.
//!
//! ```text
//! cargo build --release -p cwtch-node --bins --example tor_rtt
//! target/release/examples/tor_rtt [ROUNDS=50] [SAMPLES=3]
//! ```

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cwtch_node::link::{self, LinkCommand, LinkHandler, Outbox};
use cwtch_proto::channel::frame::FRAME_LEN;
use cwtch_proto::connection::{CloseReason, Config, Connection};
use cwtch_proto::{Identity, PublicIdentity};
use cwtch_tests::testnet::TestNetwork;
use cwtch_transport_socks::socks::dial_onion;
use cwtch_transport_socks::{
    ControlConnection, IsolationKey, PEER_PORT, RetryPolicy, Stream, Transport, dial_with_retry,
};
use smol::Async;
use smol::io::{AsyncReadExt, AsyncWriteExt};

/// The echo server's virtual port on the same onion service.
const ECHO_PORT: u16 = 7;
/// The message sent over our channel: fits in one frame.
const MESSAGE_LEN: usize = 100;

const RETRY: RetryPolicy = RetryPolicy {
    attempts: 400,
    delay: Duration::from_millis(250),
    total: Duration::from_secs(180),
};

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The responder: answers every message with itself.
struct Echo;

impl LinkHandler for Echo {
    fn established(&mut self, _remote: PublicIdentity, _out: &mut Outbox) {}
    fn message(&mut self, msg: &[u8], out: &mut Outbox) {
        out.send(msg.to_vec());
    }
    fn closed(&mut self, _reason: CloseReason) {}
}

/// The initiator: reports establishment and every message, with the time.
struct Report(mpsc::Sender<(bool, Instant)>);

impl LinkHandler for Report {
    fn established(&mut self, _remote: PublicIdentity, _out: &mut Outbox) {
        let _ = self.0.send((true, Instant::now()));
    }
    fn message(&mut self, _msg: &[u8], _out: &mut Outbox) {
        let _ = self.0.send((false, Instant::now()));
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

fn loopback_listener() -> (Async<TcpListener>, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    (Async::new(l).expect("async"), addr)
}

/// Dials `<onion>:port` through `socks` until it works.
async fn dial(
    socks: SocketAddr,
    onion: &cwtch_proto::OnionAddress,
    port: u16,
    iso: &IsolationKey,
) -> Stream {
    dial_with_retry(
        RETRY,
        || dial_onion(socks, onion, port, iso, Duration::from_secs(60)),
        |_, _| {},
    )
    .await
    .unwrap_or_else(|e| panic!("dial {}:{port} failed: {e}", onion.as_str()))
}

/// Starts our channel (initiator) over `stream` on a thread; returns the
/// command sender and the receiver of (established?, time) reports.
fn start_initiator(
    stream: Stream,
    remote: PublicIdentity,
) -> (
    smol::channel::Sender<LinkCommand>,
    mpsc::Receiver<(bool, Instant)>,
) {
    let (cmd_tx, cmd_rx) = smol::channel::unbounded();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut rng = cwtch_node::clock::rng();
        let conn = Connection::initiator(
            Config::default(),
            Identity::generate(&mut rng),
            remote,
            &mut rng,
            cwtch_node::clock::now(),
        );
        smol::block_on(link::drive(stream, conn, cmd_rx, &mut Report(tx)));
    });
    (cmd_tx, rx)
}

fn round_trips(net: &TestNetwork, rounds: usize) {
    let (host, dialer) = (&net.clients()[0], &net.clients()[1]);
    let identity = Identity::generate(&mut cwtch_node::clock::rng());
    let onion = identity.address();

    // Our responder and the plain echo server, on loopback.
    let (peer_listener, peer_local) = loopback_listener();
    let (echo_listener, echo_local) = loopback_listener();
    {
        let identity = identity.clone();
        smol::spawn(async move {
            while let Ok((stream, _)) = peer_listener.accept().await {
                let mut rng = cwtch_node::clock::rng();
                let conn = Connection::responder(
                    Config::default(),
                    identity.clone(),
                    &mut rng,
                    cwtch_node::clock::now(),
                );
                smol::spawn(async move {
                    let (_tx, rx) = smol::channel::bounded(1);
                    link::drive(stream, conn, rx, &mut Echo).await;
                })
                .detach();
            }
        })
        .detach();
    }
    smol::spawn(async move {
        while let Ok((mut s, _)) = echo_listener.accept().await {
            smol::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            })
            .detach();
        }
    })
    .detach();

    // One onion service, two virtual ports.
    smol::block_on(async {
        let mut control = ControlConnection::open(host.control_addr, &host.auth())
            .await
            .expect("control port");
        control.set_events(&["HS_DESC"]).await.expect("events");
        let key = identity.tor_expanded_key();
        let line = format!(
            "ADD_ONION ED25519-V3:{} Flags=DiscardPK Port={PEER_PORT},{peer_local} Port={ECHO_PORT},{echo_local}",
            base64(key.as_bytes())
        );
        control.command(&line).await.expect("ADD_ONION");
        control
            .wait_uploaded(&onion, Duration::from_secs(180))
            .await
            .expect("descriptor upload");
        let iso = IsolationKey::new("bench-rtt").expect("isolation key");
        let mut raw = dial(dialer.socks_addr, &onion, ECHO_PORT, &iso).await;
        let ours = dial(dialer.socks_addr, &onion, PEER_PORT, &iso).await;
        let (cmd, reports) = start_initiator(ours, identity.public());
        let (established, _) = reports
            .recv_timeout(Duration::from_secs(120))
            .expect("handshake over tor");
        assert!(established);

        let warmup = 5;
        let (mut t_ours, mut t_raw) = (Vec::new(), Vec::new());
        let msg = vec![0x5a; MESSAGE_LEN];
        let wire = [0xa5u8; FRAME_LEN];
        let mut back = [0u8; FRAME_LEN];
        for i in 0..rounds + warmup {
            let t0 = Instant::now();
            cmd.send(LinkCommand::Send(msg.clone())).await.unwrap();
            // Blocks this thread; the responder runs on smol's global
            // executor and the initiator on its own thread.
            let (_, at) = reports
                .recv_timeout(Duration::from_secs(60))
                .expect("echo over our channel");
            let ours = at - t0;
            smol::Timer::after(Duration::from_millis(20)).await;
            let t1 = Instant::now();
            raw.write_all(&wire).await.unwrap();
            raw.read_exact(&mut back).await.unwrap();
            let plain = t1.elapsed();
            assert_eq!(back, wire);
            if i >= warmup {
                t_ours.push(ours);
                t_raw.push(plain);
            }
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        t_ours.sort();
        t_raw.sort();
        println!(
            "round trip over one rendezvous circuit, {rounds} rounds (after {warmup} warm-up), alternating"
        );
        println!("{:<58} {:>8} {:>8} {:>8}", "", "p50 ms", "p99 ms", "min ms");
        for (name, v) in [
            ("ours: 100-byte message over our channel (1 frame)", &t_ours),
            ("raw TCP: 498 bytes echoed, same circuit", &t_raw),
        ] {
            println!(
                "{name:<58} {:>8.2} {:>8.2} {:>8.2}",
                ms(percentile(v, 0.5)),
                ms(percentile(v, 0.99)),
                ms(v[0])
            );
        }
        println!(
            "ratio ours/raw: p50 {:.2}x, p99 {:.2}x (goal <= 1.2x)",
            ms(percentile(&t_ours, 0.5)) / ms(percentile(&t_raw, 0.5)),
            ms(percentile(&t_ours, 0.99)) / ms(percentile(&t_raw, 0.99)),
        );
        let _ = control.del_onion(&onion).await;
    });
}

/// ADD_ONION (as a node does at start) to the first working dial.
fn time_to_reachable(net: &TestNetwork, samples: usize) {
    let (host, dialer) = (&net.clients()[0], &net.clients()[1]);
    println!("time from ADD_ONION to reachable (fresh key and isolation each sample)");
    println!(
        "{:>7} {:>16} {:>20}",
        "sample", "HS_DESC UPLOADED", "first successful dial"
    );
    let (mut uploaded, mut reached) = (Vec::new(), Vec::new());
    for s in 0..samples {
        let identity = Identity::generate(&mut cwtch_node::clock::rng());
        let onion = identity.address();
        let iso = IsolationKey::new(format!("bench-reach-{s}")).expect("isolation key");
        smol::block_on(async {
            let start = Instant::now();
            let mut listener = host
                .transport()
                .listen(&identity, PEER_PORT)
                .await
                .expect("ADD_ONION");
            let dial = async {
                let stream = dial(dialer.socks_addr, &onion, PEER_PORT, &iso).await;
                (stream, start.elapsed())
            };
            let publish = async {
                listener
                    .wait_published(Duration::from_secs(180))
                    .await
                    .expect("descriptor upload");
                start.elapsed()
            };
            let ((mut stream, t_dial), t_up) = smol::future::zip(dial, publish).await;
            // Check that the stream reached our listener.
            stream.write_all(b"x").await.unwrap();
            let (mut served, _) = listener.accept().await.expect("accept");
            let mut b = [0u8; 1];
            served.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"x");
            println!(
                "{s:>7} {:>14.1} s {:>18.1} s",
                t_up.as_secs_f64(),
                t_dial.as_secs_f64()
            );
            uploaded.push(t_up);
            reached.push(t_dial);
            let _ = listener.close().await;
        });
    }
    summary("ADD_ONION -> first dial", &mut reached);
    summary("ADD_ONION -> HS_DESC UPLOADED", &mut uploaded);
}

fn summary(name: &str, v: &mut [Duration]) {
    v.sort();
    if v.is_empty() {
        return;
    }
    println!(
        "  {name}: median {:.1} s, min {:.1} s, max {:.1} s",
        percentile(v, 0.5).as_secs_f64(),
        v[0].as_secs_f64(),
        v[v.len() - 1].as_secs_f64()
    );
}

/// A real `cwtch-node server run` process, from spawn to the first
/// completed handshake with it over Tor.
fn node_start(net: &TestNetwork, samples: usize) {
    let exe = std::env::current_exe().expect("exe");
    let Some(node) = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("cwtch-node"))
        .filter(|p| p.exists())
    else {
        println!("node start: skipped (build the binary: cargo build --release -p cwtch-node)");
        return;
    };
    let (host, dialer) = (&net.clients()[0], &net.clients()[1]);
    println!("time from starting `cwtch-node server run` to the first handshake with it over Tor");
    let mut reached = Vec::new();
    for s in 0..samples {
        let home = tempfile::tempdir().expect("temp dir");
        let status = Command::new(&node)
            .args(["--home"])
            .arg(home.path())
            .args(["server", "init"])
            .stdout(Stdio::null())
            .status()
            .expect("server init");
        assert!(status.success(), "server init failed");
        let identity = cwtch_node::server::load_identity(home.path()).expect("server key");
        let iso = IsolationKey::new(format!("bench-node-{s}")).expect("isolation key");
        let start = Instant::now();
        let mut child = Command::new(&node)
            .arg("--home")
            .arg(home.path())
            .args(["server", "run", "--tor-socks"])
            .arg(host.socks_addr.to_string())
            .arg("--tor-control")
            .arg(host.control_addr.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn cwtch-node");
        let stream = smol::block_on(dial(
            dialer.socks_addr,
            &identity.address(),
            PEER_PORT,
            &iso,
        ));
        let (_cmd, reports) = start_initiator(stream, identity.public());
        let got = reports.recv_timeout(Duration::from_secs(120));
        let t = start.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        let (established, _) = got.expect("handshake with the server over tor");
        assert!(established);
        println!("{s:>7} {:>18.1} s", t.as_secs_f64());
        reached.push(t);
    }
    summary("server process start -> first handshake", &mut reached);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).map_or(50, |a| a.parse().expect("ROUNDS"));
    let samples: usize = args.get(2).map_or(3, |a| a.parse().expect("SAMPLES"));
    let started = Instant::now();
    let mut net = TestNetwork::start(2).expect("private Tor network (is tor installed?)");
    println!(
        "private Tor network (3 authorities, 2 relays, 2 clients) up in {:.1} s",
        net.startup_time().as_secs_f64()
    );
    round_trips(&net, rounds);
    time_to_reachable(&net, samples);
    node_start(&net, samples);
    let stopped = net.stop();
    println!(
        "stopped {} tor processes; total {:.0} s",
        stopped.len(),
        started.elapsed().as_secs_f64()
    );
}
