//! The built-in Tor (arti) against C tor, over a private Tor network on
//! loopback (`TestNetworkOptions::arti_compatible`: see
//! cwtch-transport-arti/README.md). Alice is a `cwtch-node run --tor arti`
//! process, bob a peer on a client tor, the server a `server run` on
//! another client tor; carol runs with no `--tor` at all. Neither alice
//! nor carol has tor in PATH.
//!
//! - alice and bob exchange a contact request and messages (arti -> C tor
//!   and C tor -> arti);
//! - alice makes a group on the C-tor server, bob joins, both post, both
//!   sync;
//! - alice goes offline; bob writes to her and posts; she comes back and
//!   gets both;
//! - carol's `--tor auto` picks the built-in Tor and says why, and she
//!   reaches bob;
//! - every address arti is given is on 127.0.0.1; arti writes only under
//!   the profile's home (a fresh `$HOME` and `$TMPDIR` stay empty), and
//!   nothing runs after `cwtch-node stop`.
//!
//! Fails (never skips) when tor is not installed.
#![cfg(feature = "arti")]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cwtch_tests::testnet::{TestNetwork, TestNetworkOptions, process_alive};
use cwtch_transport_arti::config::{configured_addresses, tor_client_config};
use cwtch_transport_arti::{ArtiConfig, Network, PrivateNetwork};
use support::{Daemon, accept_invite, cli, conversation, init, wait_for, wait_ready};

/// Long enough for a time-period boundary of the young network (arti
/// re-publishes up to about 70 s late: see the transport's README).
const PATIENCE: Duration = Duration::from_secs(240);

fn c_tor_flags(net: &TestNetwork, i: usize) -> Vec<String> {
    let c = &net.clients()[i];
    vec![
        "--tor-socks".into(),
        c.socks_addr.to_string(),
        "--tor-control".into(),
        c.control_addr.to_string(),
    ]
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// The environment of a peer without tor: PATH has no tor in it, and
/// `$HOME`, `$TMPDIR` and the XDG directories are fresh empty directories
/// (arti's defaults would be under them).
fn no_tor_env(sandbox: &Path) -> Vec<(String, String)> {
    let dir = |name: &str| {
        let d = sandbox.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d.display().to_string()
    };
    vec![
        ("PATH".into(), dir("bin")),
        ("HOME".into(), dir("home")),
        ("TMPDIR".into(), dir("tmp")),
        ("XDG_DATA_HOME".into(), dir("home/.local/share")),
        ("XDG_CACHE_HOME".into(), dir("home/.cache")),
        ("XDG_CONFIG_HOME".into(), dir("home/.config")),
        ("XDG_STATE_HOME".into(), dir("home/.local/state")),
    ]
}

fn start_env(home: &Path, flags: &[String], env: &[(String, String)]) -> Daemon {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Daemon::start_with_env(home, false, flags, &env)
}

fn wait_log(d: &Daemon, what: &str, needle: &str, limit: Duration) {
    wait_for(what, limit, || d.log_text().contains(needle).then_some(()));
}

fn wait_text(home: &Path, with: &str, text: &str, what: &str) {
    wait_for(what, PATIENCE, || {
        conversation(home, with)
            .iter()
            .any(|m| m.1 == text)
            .then_some(())
    });
}

fn wait_delivered(home: &Path, with: &str, text: &str, what: &str) {
    wait_for(what, PATIENCE, || {
        conversation(home, with)
            .iter()
            .any(|m| m.0 && m.1 == text && m.2 == "delivered")
            .then_some(())
    });
}

fn group_texts(home: &Path) -> Vec<String> {
    cli(home, &["messages", "friends"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn wait_group_has(home: &Path, text: &str, what: &str) {
    wait_for(what, PATIENCE, || {
        group_texts(home).iter().any(|t| t == text).then_some(())
    });
}

#[test]
fn an_arti_peer_and_c_tor_peers_talk_join_a_group_and_come_back() {
    let started = Instant::now();
    let net = TestNetwork::start_with_options(&TestNetworkOptions::arti_compatible(2))
        .expect("private Tor network (is tor installed?)");
    println!("private Tor network up in {:?}", net.startup_time());
    let tmp = tempfile::tempdir().unwrap();
    let network_file = tmp.path().join("tor-network");
    net.write_arti_network(&network_file).unwrap();

    // Every authority and fallback arti is given is on 127.0.0.1: in the
    // file, and in the configuration arti builds from it.
    let private = PrivateNetwork::parse(&std::fs::read_to_string(&network_file).unwrap()).unwrap();
    assert_eq!(private.authorities.len(), 3);
    assert_eq!(private.fallbacks.len(), 3);
    assert!(
        private.addresses().iter().all(|a| a.ip().is_loopback()),
        "{:?}",
        private.addresses()
    );
    let built = tor_client_config(&ArtiConfig::new(
        tmp.path().join("unused"),
        Network::Private(private),
    ))
    .unwrap();
    let addresses = configured_addresses(&built);
    assert_eq!(addresses.len(), 12, "{addresses:?}");
    assert!(
        addresses
            .iter()
            .all(|a| a.ip() == core::net::Ipv4Addr::LOCALHOST),
        "{addresses:?}"
    );

    // The C-tor server and bob, on client tors.
    let server_home = tmp.path().join("server");
    let server_id = cli(&server_home, &["server", "init"]).unwrap()["server"]
        .as_str()
        .unwrap()
        .to_string();
    let _server = Daemon::start(&server_home, true, &c_tor_flags(&net, 1));
    let (a_home, b_home, c_home) = (
        tmp.path().join("alice"),
        tmp.path().join("bob"),
        tmp.path().join("carol"),
    );
    let alice = init(&a_home, "alice");
    let bob = init(&b_home, "bob");
    let carol = init(&c_home, "carol");
    let b = Daemon::start(&b_home, false, &c_tor_flags(&net, 0));

    // Alice: --tor arti, no tor in PATH.
    let a_env = no_tor_env(&tmp.path().join("alice-sandbox"));
    let a_flags: Vec<String> = vec![
        "--tor".into(),
        "arti".into(),
        "--tor-network".into(),
        network_file.display().to_string(),
    ];
    let a_started = Instant::now();
    let mut a = start_env(&a_home, &a_flags, &a_env);
    wait_ready(&a_home);
    wait_ready(&b_home);
    wait_log(&a, "alice's onion service", "is online", PATIENCE);
    println!(
        "alice (arti) online {:.1} s after start",
        a_started.elapsed().as_secs_f64()
    );
    let log = a.log_text();
    assert!(log.contains("tor: the built-in Tor (arti)"), "{log}");
    assert!(log.contains("(--tor arti)"), "{log}");
    assert!(log.contains("tor bootstrap: 100%"), "{log}");

    // Contact request arti -> C tor, accepted, and messages both ways.
    let t = Instant::now();
    cli(
        &a_home,
        &["contact", "add", &bob, "--message", "hi bob, from arti"],
    )
    .unwrap();
    wait_text(
        &b_home,
        &alice,
        "hi bob, from arti",
        "bob to get alice's request",
    );
    println!(
        "arti -> C tor: request received after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    cli(&b_home, &["contact", "accept", &alice]).unwrap();
    cli(&b_home, &["send", &alice, "hello alice, from C tor"]).unwrap();
    wait_text(
        &a_home,
        &bob,
        "hello alice, from C tor",
        "alice to get bob's reply",
    );
    wait_delivered(
        &b_home,
        &alice,
        "hello alice, from C tor",
        "bob's reply delivered",
    );
    wait_delivered(
        &a_home,
        &bob,
        "hi bob, from arti",
        "alice's request delivered",
    );
    println!(
        "contact request and messages: {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // A group on the C-tor server: alice (arti) makes it, bob joins, both
    // post, both sync.
    let t = Instant::now();
    cli(
        &a_home,
        &["group", "create", "friends", "--server", &server_id],
    )
    .unwrap();
    cli(&a_home, &["group", "invite", "friends", &bob]).unwrap();
    accept_invite(&b_home, "friends", PATIENCE);
    cli(
        &a_home,
        &["group", "send", "friends", "from alice over arti"],
    )
    .unwrap();
    cli(
        &b_home,
        &["group", "send", "friends", "from bob over C tor"],
    )
    .unwrap();
    for home in [&a_home, &b_home] {
        wait_group_has(home, "from alice over arti", "alice's post on both");
        wait_group_has(home, "from bob over C tor", "bob's post on both");
    }
    println!(
        "group made, joined, posted, synced: {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Alice goes offline; bob writes to her and posts; she comes back.
    a.kill9();
    cli(&b_home, &["send", &alice, "are you there?"]).unwrap();
    cli(
        &b_home,
        &["group", "send", "friends", "while alice was away"],
    )
    .unwrap();
    wait_for("bob's post acknowledged", PATIENCE, || {
        cli(&b_home, &["messages", "friends"])
            .ok()?
            .as_array()?
            .iter()
            .any(|m| m["text"] == "while alice was away" && m["status"] == "delivered")
            .then_some(())
    });
    let back = Instant::now();
    let mut a = start_env(&a_home, &a_flags, &a_env);
    wait_ready(&a_home);
    wait_text(
        &a_home,
        &bob,
        "are you there?",
        "bob's message after alice is back",
    );
    wait_group_has(
        &a_home,
        "while alice was away",
        "bob's post after alice is back",
    );
    wait_delivered(&b_home, &alice, "are you there?", "bob's message delivered");
    println!(
        "alice back: message and post after {:.1} s",
        back.elapsed().as_secs_f64()
    );

    // Carol: no --tor at all, no tor in PATH: auto picks the built-in Tor.
    let c_env = no_tor_env(&tmp.path().join("carol-sandbox"));
    let c_flags: Vec<String> = vec!["--tor-network".into(), network_file.display().to_string()];
    let mut c = start_env(&c_home, &c_flags, &c_env);
    wait_ready(&c_home);
    let log = c.log_text();
    assert!(log.contains("tor: the built-in Tor (arti)"), "{log}");
    assert!(
        log.contains("--tor auto: a peer uses the built-in Tor"),
        "{log}"
    );
    cli(
        &c_home,
        &["contact", "add", &bob, "--message", "hi bob, carol on auto"],
    )
    .unwrap();
    wait_text(
        &b_home,
        &carol,
        "hi bob, carol on auto",
        "bob to get carol's request",
    );

    // Stopped, nothing runs; arti wrote under the homes only.
    for (home, d) in [(&a_home, &mut a), (&c_home, &mut c)] {
        let pid = d.pid();
        cli(home, &["stop"]).unwrap();
        wait_for("the daemon to exit", Duration::from_secs(30), || {
            d.try_wait().map(|_| ())
        });
        assert!(!process_alive(pid), "{pid} still runs");
        assert!(home.join("arti/state").is_dir() && home.join("arti/cache").is_dir());
    }
    for sandbox in ["alice-sandbox", "carol-sandbox"] {
        let dir = tmp.path().join(sandbox);
        let written: Vec<PathBuf> = files_under(&dir)
            .into_iter()
            .filter(|p| !p.is_dir())
            .collect();
        assert!(written.is_empty(), "written outside the home: {written:?}");
    }
    drop(b);
    println!("whole test: {:.1} s", started.elapsed().as_secs_f64());
}
