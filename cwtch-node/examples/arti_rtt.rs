//! The built-in Tor (arti) against C tor, on one private Tor network on
//! loopback that this example starts and stops itself
//! (`TestNetworkOptions::arti_compatible`: 3 authorities, 2 relays, 2
//! client tors; only the tor processes it started are stopped):
//!
//! 1. Round trip of a one-frame message over our channel (a `Connection`
//!    answered by an echoing responder behind an onion service), on four
//!    paths measured in turn, round robin, so that they share the
//!    machine's load: C tor -> C tor's onion (the baseline), arti ->
//!    arti's onion, arti -> C tor's onion, C tor -> arti's onion.
//! 2. Time from publishing an onion service to the first successful dial
//!    from a client tor: C tor's `ADD_ONION` against arti's `listen`
//!    (fresh key and isolation each sample); and arti's bootstrap.
//! 3. Time from starting a real `cwtch-node server run` process (next to
//!    this example in target/) to the first completed handshake with it
//!    from a client tor: with `--tor arti` and with `--tor launch` (each
//!    starts its Tor from nothing), and with a running tor (`--tor
//!    system`).
//!
//! ```text
//! cargo build --release -p cwtch-node --bins --example arti_rtt
//! target/release/examples/arti_rtt [ROUNDS=200] [SAMPLES=3]
//! ```

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cwtch_node::link::{self, LinkCommand, LinkHandler, Outbox};
use cwtch_node::transport::Stream;
use cwtch_proto::connection::{CloseReason, Config, Connection};
use cwtch_proto::{Identity, OnionAddress, PublicIdentity};
use cwtch_tests::testnet::{TestNetwork, TestNetworkOptions};
use cwtch_transport_arti::{ArtiConfig, ArtiListener, ArtiTransport, Network, PrivateNetwork};
use cwtch_transport_socks::socks::dial_onion;
use cwtch_transport_socks::{IsolationKey, PEER_PORT, RetryPolicy, Transport, dial_with_retry};
use smol::Async;

/// The message sent over our channel: fits in one frame.
const MESSAGE_LEN: usize = 100;
const PATIENCE: Duration = Duration::from_secs(240);

const RETRY: RetryPolicy = RetryPolicy {
    attempts: 1000,
    delay: Duration::from_millis(250),
    total: PATIENCE,
};

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

fn responder(identity: &Identity) -> Connection {
    let mut rng = cwtch_node::clock::rng();
    Connection::responder(
        Config::default(),
        identity.clone(),
        &mut rng,
        cwtch_node::clock::now(),
    )
}

/// Serves our echoing responder on every stream `accept` gives.
fn serve<F, Fut>(identity: Identity, mut accept: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Option<Stream>> + Send,
{
    smol::spawn(async move {
        while let Some(stream) = accept().await {
            let conn = responder(&identity);
            smol::spawn(async move {
                let (_tx, rx) = smol::channel::bounded(1);
                link::drive(stream, conn, rx, &mut Echo).await;
            })
            .detach();
        }
    })
    .detach();
}

/// A C tor onion service (on `host`) serving our responder.
fn c_tor_service(host: &cwtch_tests::testnet::TorClient, identity: &Identity) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let local: SocketAddr = listener.local_addr().expect("addr");
    let listener = Async::new(listener).expect("async");
    let listener = std::sync::Arc::new(listener);
    serve(identity.clone(), move || {
        let listener = listener.clone();
        async move { listener.accept().await.ok().map(|(s, _)| Stream::from(s)) }
    });
    let transport = host.transport();
    let identity = identity.clone();
    smol::block_on(async {
        let mut control =
            cwtch_transport_socks::ControlConnection::open(transport.control, &transport.auth)
                .await
                .expect("control port");
        control.set_events(&["HS_DESC"]).await.expect("events");
        control
            .add_onion(&identity, PEER_PORT, local)
            .await
            .expect("ADD_ONION");
        control
            .wait_uploaded(&identity.address(), PATIENCE)
            .await
            .expect("descriptor upload");
        // The service lives as long as this connection.
        Box::leak(Box::new(control));
    });
}

/// An arti onion service serving our responder.
fn arti_service(arti: &ArtiTransport, identity: &Identity) -> std::sync::Arc<ArtiListener> {
    let listener = std::sync::Arc::new(arti.listen(identity, PEER_PORT).expect("arti listen"));
    let l = listener.clone();
    serve(identity.clone(), move || {
        let l = l.clone();
        async move { l.accept().await.ok().map(|s| Stream::Arti(Box::new(s))) }
    });
    listener
}

/// Who dials.
#[derive(Clone)]
enum Dialer {
    CTor(SocketAddr),
    Arti(ArtiTransport),
}

impl Dialer {
    async fn dial(&self, onion: &OnionAddress, iso: &IsolationKey) -> Stream {
        match self {
            Dialer::CTor(socks) => Stream::from(
                dial_with_retry(
                    RETRY,
                    || dial_onion(*socks, onion, PEER_PORT, iso, Duration::from_secs(60)),
                    |_, _| {},
                )
                .await
                .unwrap_or_else(|e| panic!("C tor dial {}: {e}", onion.as_str())),
            ),
            Dialer::Arti(arti) => {
                let started = Instant::now();
                loop {
                    match arti.dial_isolated(onion, PEER_PORT, iso.as_str()).await {
                        Ok(s) => break Stream::Arti(Box::new(s)),
                        Err(e) if started.elapsed() < PATIENCE => {
                            let _ = e;
                            smol::Timer::after(Duration::from_millis(250)).await;
                        }
                        Err(e) => panic!("arti dial {}: {e}", onion.as_str()),
                    }
                }
            }
        }
    }
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

fn bootstrap(network: &PrivateNetwork, dir: &Path) -> ArtiTransport {
    let config = ArtiConfig::new(dir, Network::Private(network.clone()));
    let arti = smol::block_on(ArtiTransport::bootstrap(config, |_, _| {})).expect("arti bootstrap");
    println!(
        "arti bootstrapped in {:.2} s ({})",
        arti.bootstrap_time().as_secs_f64(),
        dir.display()
    );
    arti
}

fn round_trips(net: &TestNetwork, arti_a: &ArtiTransport, arti_b: &ArtiTransport, rounds: usize) {
    let (c_host, c_dialer) = (&net.clients()[0], &net.clients()[1]);
    let c_id = Identity::generate(&mut cwtch_node::clock::rng());
    let a_id = Identity::generate(&mut cwtch_node::clock::rng());
    c_tor_service(c_host, &c_id);
    let _a_listener = arti_service(arti_a, &a_id);
    let paths = [
        (
            "C tor -> C tor",
            Dialer::CTor(c_dialer.socks_addr),
            c_id.address(),
        ),
        ("arti -> arti", Dialer::Arti(arti_b.clone()), a_id.address()),
        (
            "arti -> C tor",
            Dialer::Arti(arti_b.clone()),
            c_id.address(),
        ),
        (
            "C tor -> arti",
            Dialer::CTor(c_dialer.socks_addr),
            a_id.address(),
        ),
    ];
    let mut links = Vec::new();
    for (i, (name, dialer, onion)) in paths.iter().enumerate() {
        let iso = IsolationKey::new(format!("bench-arti-rtt-{i}")).expect("isolation key");
        let t = Instant::now();
        let stream = smol::block_on(dialer.dial(onion, &iso));
        let (cmd, reports) = start_initiator(stream, onion.public_identity());
        let (established, _) = reports.recv_timeout(PATIENCE).expect("handshake");
        assert!(established);
        println!(
            "{name}: channel up after {:.1} s",
            t.elapsed().as_secs_f64()
        );
        links.push((cmd, reports, Vec::new()));
    }
    let warmup = 5;
    let msg = vec![0x5a; MESSAGE_LEN];
    for i in 0..rounds + warmup {
        for (cmd, reports, times) in links.iter_mut() {
            let t0 = Instant::now();
            smol::block_on(cmd.send(LinkCommand::Send(msg.clone()))).expect("send");
            let (_, at) = reports
                .recv_timeout(Duration::from_secs(60))
                .expect("echo over our channel");
            if i >= warmup {
                times.push(at - t0);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    println!(
        "round trip of a 100-byte message over our channel, {rounds} rounds (after {warmup} warm-up), round robin"
    );
    println!(
        "{:<16} {:>8} {:>8} {:>8} {:>12} {:>12}",
        "path", "p50 ms", "p99 ms", "min ms", "p50 / C tor", "p99 / C tor"
    );
    let mut sorted: Vec<Vec<Duration>> = links
        .into_iter()
        .map(|(_, _, mut t)| {
            t.sort();
            t
        })
        .collect();
    let base = sorted[0].clone();
    for ((name, _, _), t) in paths.iter().zip(sorted.iter_mut()) {
        println!(
            "{name:<16} {:>8.2} {:>8.2} {:>8.2} {:>11.2}x {:>11.2}x",
            ms(percentile(t, 0.5)),
            ms(percentile(t, 0.99)),
            ms(t[0]),
            ms(percentile(t, 0.5)) / ms(percentile(&base, 0.5)),
            ms(percentile(t, 0.99)) / ms(percentile(&base, 0.99)),
        );
    }
}

fn summary(name: &str, v: &mut [Duration]) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let median = percentile(v, 0.5);
    println!(
        "  {name}: median {:.1} s, min {:.1} s, max {:.1} s",
        median.as_secs_f64(),
        v[0].as_secs_f64(),
        v[v.len() - 1].as_secs_f64()
    );
    median
}

/// Publishing to the first successful dial from a client tor: C tor's
/// ADD_ONION against arti's listen.
fn time_to_reachable(net: &TestNetwork, arti: &ArtiTransport, samples: usize) {
    let (host, dialer) = (&net.clients()[0], &net.clients()[1]);
    println!("time from publishing an onion service to the first dial from a client tor");
    let (mut c_times, mut a_times) = (Vec::new(), Vec::new());
    for s in 0..samples {
        for arti_side in [false, true] {
            let identity = Identity::generate(&mut cwtch_node::clock::rng());
            let onion = identity.address();
            let iso = IsolationKey::new(format!("bench-arti-reach-{s}-{arti_side}")).unwrap();
            let start = Instant::now();
            let t = smol::block_on(async {
                let keep: Box<dyn std::any::Any> = if arti_side {
                    Box::new(arti.listen(&identity, PEER_PORT).expect("arti listen"))
                } else {
                    Box::new(
                        host.transport()
                            .listen(&identity, PEER_PORT)
                            .await
                            .expect("ADD_ONION"),
                    )
                };
                let _stream = Dialer::CTor(dialer.socks_addr).dial(&onion, &iso).await;
                let t = start.elapsed();
                drop(keep);
                t
            });
            let who = if arti_side {
                "arti listen"
            } else {
                "C tor ADD_ONION"
            };
            println!("{s:>7} {who:<16} {:>8.1} s", t.as_secs_f64());
            if arti_side {
                a_times.push(t);
            } else {
                c_times.push(t);
            }
        }
    }
    let c = summary("C tor: ADD_ONION -> first dial", &mut c_times);
    let a = summary("arti: listen -> first dial", &mut a_times);
    println!(
        "  ratio arti / C tor (medians): {:.2}x",
        a.as_secs_f64() / c.as_secs_f64()
    );
}

/// A real `cwtch-node server run`, from spawn to the first completed
/// handshake with it over Tor, with each way of getting a Tor.
fn node_start(net: &TestNetwork, network_file: &Path, samples: usize) {
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
    let torrc = network_file.with_file_name("torrc-extra");
    std::fs::write(&torrc, net.attach_torrc_lines().join("\n")).expect("torrc");
    let ways: [(&str, Vec<String>); 3] = [
        (
            "--tor arti",
            vec![
                "--tor".into(),
                "arti".into(),
                "--tor-network".into(),
                network_file.display().to_string(),
            ],
        ),
        (
            "--tor launch",
            vec![
                "--tor".into(),
                "launch".into(),
                "--torrc-extra".into(),
                torrc.display().to_string(),
            ],
        ),
        (
            "--tor system",
            vec![
                "--tor".into(),
                "system".into(),
                "--tor-socks".into(),
                host.socks_addr.to_string(),
                "--tor-control".into(),
                host.control_addr.to_string(),
            ],
        ),
    ];
    println!("time from starting `cwtch-node server run` to the first handshake with it over Tor");
    let mut results: Vec<Vec<Duration>> = vec![Vec::new(); ways.len()];
    for s in 0..samples {
        for (w, (name, flags)) in ways.iter().enumerate() {
            let home = tempfile::tempdir().expect("temp dir");
            // A Cwtch home must be private.
            std::fs::set_permissions(
                home.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .expect("chmod 700 the home");
            let status = Command::new(&node)
                .args(["--home"])
                .arg(home.path())
                .args(["server", "init"])
                .stdout(Stdio::null())
                .status()
                .expect("server init");
            assert!(status.success(), "server init failed");
            let identity = cwtch_node::server::load_identity(home.path()).expect("server key");
            let iso = IsolationKey::new(format!("bench-arti-node-{s}-{w}")).unwrap();
            let start = Instant::now();
            let mut child = Command::new(&node)
                .arg("--home")
                .arg(home.path())
                .args(["server", "run"])
                .args(flags)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn cwtch-node");
            let stream =
                smol::block_on(Dialer::CTor(dialer.socks_addr).dial(&identity.address(), &iso));
            let (_cmd, reports) = start_initiator(stream, identity.public());
            let got = reports.recv_timeout(PATIENCE);
            let t = start.elapsed();
            let _ = child.kill();
            let _ = child.wait();
            let (established, _) = got.expect("handshake with the server over tor");
            assert!(established);
            println!("{s:>7} {name:<14} {:>8.1} s", t.as_secs_f64());
            results[w].push(t);
        }
    }
    let mut medians = Vec::new();
    for ((name, _), v) in ways.iter().zip(results.iter_mut()) {
        medians.push(summary(&format!("server run {name} -> first handshake"), v));
    }
    println!(
        "  ratio --tor arti / --tor launch (medians; both start a Tor from nothing): {:.2}x",
        medians[0].as_secs_f64() / medians[1].as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).map_or(200, |a| a.parse().expect("ROUNDS"));
    let samples: usize = args.get(2).map_or(3, |a| a.parse().expect("SAMPLES"));
    let started = Instant::now();
    let mut net = TestNetwork::start_with_options(&TestNetworkOptions::arti_compatible(2))
        .expect("private Tor network (is tor installed?)");
    println!(
        "private Tor network (3 authorities, 2 relays, 2 clients, 15 s voting) up in {:.1} s",
        net.startup_time().as_secs_f64()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let network_file = dir.path().join("tor-network");
    net.write_arti_network(&network_file).expect("network file");
    let network = PrivateNetwork::parse(&net.arti_network_text().expect("network")).unwrap();
    let arti_a = bootstrap(&network, &dir.path().join("arti-a"));
    let arti_b = bootstrap(&network, &dir.path().join("arti-b"));
    round_trips(&net, &arti_a, &arti_b, rounds);
    time_to_reachable(&net, &arti_a, samples);
    node_start(&net, &network_file, samples);
    drop((arti_a, arti_b));
    let stopped = net.stop();
    println!(
        "stopped {} tor processes; total {:.0} s",
        stopped.len(),
        started.elapsed().as_secs_f64()
    );
}
