//! Experiment: onion services between arti and C tor on a private network.
//!
//! ```text
//! cargo run --example interop            # the arti-compatible network
//! NET=default cargo run --example interop   # the network the other tests use
//! RELAYS=5 PARAMS=hsdir_interval=6 VOTING=15 cargo run --example interop
//! RUST_LOG=tor_hsclient=debug,tor_hsservice=debug cargo run --example interop
//! LIMIT=60 ...   # seconds of retries per direction (default 240)
//! ```
//! Prints one line per scenario: arti <-> arti, arti -> C tor, C tor ->
//! arti, with the time each took or the last error.

#[path = "../tests/support/mod.rs"]
mod support;

use core::time::Duration;
use std::time::Instant;

use cwtch_proto::Identity;
use cwtch_transport_arti::{ArtiConfig, ArtiTransport, Network};
use cwtch_transport_socks::testnet::{TestNetwork, TestNetworkOptions};
use cwtch_transport_socks::{IsolationKey, Transport};

const PORT: u16 = 9878;

fn env<T: core::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() {
    support::init_logging();
    let limit = Duration::from_secs(env("LIMIT").unwrap_or(240));
    let mut options = match std::env::var("NET").as_deref() {
        Ok("default") => TestNetworkOptions::with_clients(2),
        _ => TestNetworkOptions::arti_compatible(2),
    };
    if let Some(r) = env("RELAYS") {
        options.relays = r;
    }
    if let Some(v) = env("VOTING") {
        options.voting_interval = v;
        options.initial_voting_interval = v;
    }
    if let Ok(p) = std::env::var("PARAMS") {
        options.consensus_params = p.split_whitespace().map(str::to_owned).collect();
    }
    if let Some(b) = env("BANDWIDTH") {
        options.relay_bandwidth = Some(b);
    }
    eprintln!("options: {options:?}");
    let started = Instant::now();
    let net = TestNetwork::start_with_options(&options).expect("private tor network");
    eprintln!("network up in {:.1} s", started.elapsed().as_secs_f64());
    let private = support::private_network(&net);
    let dir = tempfile::tempdir().expect("tempdir");

    let results = smol::block_on(async {
        let boot = |name: &str| {
            let config = ArtiConfig::new(dir.path().join(name), Network::Private(private.clone()));
            let name = name.to_owned();
            async move {
                ArtiTransport::bootstrap(config, |p, s| eprintln!("{name} bootstrap {p}%: {s}"))
                    .await
                    .expect("arti bootstrap")
            }
        };
        let a = boot("arti-a").await;
        eprintln!(
            "arti-a bootstrapped in {:.2} s",
            a.bootstrap_time().as_secs_f64()
        );
        let b = boot("arti-b").await;
        eprintln!(
            "arti-b bootstrapped in {:.2} s",
            b.bootstrap_time().as_secs_f64()
        );
        let mut results = Vec::new();

        // arti <-> arti
        let id_b = Identity::from_seed(&[2; 32]);
        let launched = Instant::now();
        let listener_b = b.listen(&id_b, PORT).expect("arti-b listen");
        let addr_b = *listener_b.address();
        let dial = support::retry("arti-a -> arti-b", limit, || a.dial(&addr_b, PORT)).await;
        let t = launched.elapsed();
        eprintln!("arti-b service state: {}", listener_b.state());
        results.push(match dial {
            Ok((mut s, n, _)) => {
                let mut incoming = listener_b.accept().await.expect("accept");
                support::ping_pong(&mut s, &mut incoming)
                    .await
                    .expect("bytes");
                format!(
                    "arti -> arti: OK, attempt {n}, {:.1} s from listen",
                    t.as_secs_f64()
                )
            }
            Err(e) => format!("arti -> arti: FAILED {e}"),
        });
        eprintln!("{}", results.last().map(String::as_str).unwrap_or(""));

        // arti -> C tor (ADD_ONION on client0)
        let id_c = Identity::from_seed(&[3; 32]);
        let ctor = net.clients()[0].transport();
        let launched = Instant::now();
        let mut c_listener = ctor.listen(&id_c, PORT).await.expect("ADD_ONION");
        let up = c_listener.wait_published(limit).await;
        eprintln!(
            "C tor HS_DESC UPLOADED after {:.1} s: {up:?}",
            launched.elapsed().as_secs_f64()
        );
        let addr_c = *c_listener.address();
        let dial = support::retry("arti-a -> C tor", limit, || a.dial(&addr_c, PORT)).await;
        let t = launched.elapsed();
        results.push(match dial {
            Ok((mut s, n, _)) => {
                let (mut incoming, _) = c_listener.accept().await.expect("accept");
                support::ping_pong(&mut s, &mut incoming)
                    .await
                    .expect("bytes");
                format!(
                    "arti -> C tor: OK, attempt {n}, {:.1} s from ADD_ONION",
                    t.as_secs_f64()
                )
            }
            Err(e) => format!("arti -> C tor: FAILED {e}"),
        });
        eprintln!("{}", results.last().map(String::as_str).unwrap_or(""));

        // C tor (client1) -> arti
        let id_a = Identity::from_seed(&[1; 32]);
        let launched = Instant::now();
        let listener_a = a.listen(&id_a, PORT).expect("arti-a listen");
        let addr_a = *listener_a.address();
        let client1 = net.clients()[1].transport();
        let key = IsolationKey::for_identity(&id_c.address());
        let dial = support::retry("C tor -> arti-a", limit, || {
            client1.dial(&addr_a, PORT, &key)
        })
        .await;
        let t = launched.elapsed();
        eprintln!("arti-a service state: {}", listener_a.state());
        results.push(match dial {
            Ok((mut s, n, _)) => {
                let mut incoming = listener_a.accept().await.expect("accept");
                support::ping_pong(&mut s, &mut incoming)
                    .await
                    .expect("bytes");
                format!(
                    "C tor -> arti: OK, attempt {n}, {:.1} s from listen",
                    t.as_secs_f64()
                )
            }
            Err(e) => format!("C tor -> arti: FAILED {e}"),
        });
        eprintln!("{}", results.last().map(String::as_str).unwrap_or(""));
        results
    });
    println!(
        "---- results ({:.0} s in all) ----",
        started.elapsed().as_secs_f64()
    );
    for r in results {
        println!("{r}");
    }
    if std::env::var_os("KEEP").is_some() {
        eprintln!("network dir: {}", net.dir().display());
        std::thread::sleep(Duration::from_secs(3600));
    }
}
