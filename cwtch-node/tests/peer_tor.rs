//! The peer scenario over real Tor: a private Tor network on loopback (the
//! harness of the tests crate), one client tor per peer, each peer a real
//! `cwtch-node run` process using that tor's SOCKS and control ports.
//! Fails (never skips) when tor is not installed.

mod support;

use std::time::{Duration, Instant};

use cwtch_tests::testnet::TestNetwork;
use support::{Daemon, cli, conversation, init, wait_for, wait_ready};

/// How long one step over the private Tor network may take. It usually
/// takes seconds, but tor sometimes leaves a dial unanswered until the
/// daemon gives up on it after 60 s, and CI has seen two such dials in a
/// row; the daemon retries on its own.
const TOR_PATIENCE: Duration = Duration::from_secs(240);

fn tor_flags(net: &TestNetwork, i: usize) -> Vec<String> {
    let c = &net.clients()[i];
    vec![
        "--tor-socks".into(),
        c.socks_addr.to_string(),
        "--tor-control".into(),
        c.control_addr.to_string(),
    ]
}

#[test]
fn contact_request_accept_and_chat_over_tor() {
    let net = TestNetwork::start(2).expect("private Tor network (is tor installed?)");
    println!("private Tor network up in {:?}", net.startup_time());
    let tmp = tempfile::tempdir().unwrap();
    let (a_home, b_home) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let alice = init(&a_home, "alice");
    let bob = init(&b_home, "bob");
    let started = Instant::now();
    let a = Daemon::start(&a_home, false, &tor_flags(&net, 0));
    let b = Daemon::start(&b_home, false, &tor_flags(&net, 1));
    wait_ready(&a_home);
    wait_ready(&b_home);
    println!(
        "both onion services published after {:?}",
        started.elapsed()
    );

    cli(
        &a_home,
        &["contact", "add", &bob, "--message", "hi bob, over tor"],
    )
    .unwrap();
    let reached = Instant::now();
    wait_for(
        "bob to receive alice's request over Tor",
        TOR_PATIENCE,
        || (conversation(&b_home, &alice).len() == 1).then_some(()),
    );
    println!("first message over Tor after {:?}", reached.elapsed());
    cli(&b_home, &["contact", "accept", &alice]).unwrap();
    cli(&b_home, &["send", &alice, "hello alice, over tor"]).unwrap();
    wait_for("the reply", TOR_PATIENCE, || {
        let a_side = conversation(&a_home, &bob);
        (a_side.len() == 2 && a_side.iter().filter(|m| m.0).all(|m| m.2 == "delivered"))
            .then_some(())
    });
    assert_eq!(conversation(&a_home, &bob)[1].1, "hello alice, over tor");
    let logs = a.log_text() + &b.log_text();
    assert!(
        !logs.contains("over tor"),
        "message text must never be logged"
    );
    drop((a, b));
}
