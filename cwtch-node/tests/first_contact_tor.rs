//! Offline first contact over real Tor (SPEC.md section 12): a private Tor
//! network on loopback, a server daemon, bob and alice as real `cwtch-node`
//! processes, each with its own client tor. Bob makes a mailbox, prints his
//! extended identifier and stops; alice, who only has that identifier, adds
//! him with a first message, waits until the server acknowledged the sealed
//! request, and stops; bob starts and finds the contact request and the
//! message. The two are never online at the same time. Fails (never skips)
//! when tor is not installed.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use cwtch_tests::testnet::TestNetwork;
use support::{Daemon, cli, contacts, conversation, init, wait_for, wait_ready};

fn tor_flags(net: &TestNetwork, i: usize) -> Vec<String> {
    let c = &net.clients()[i];
    vec![
        "--tor-socks".into(),
        c.socks_addr.to_string(),
        "--tor-control".into(),
        c.control_addr.to_string(),
    ]
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

#[test]
fn first_contact_while_offline_over_tor() {
    let net = TestNetwork::start(3).expect("private Tor network (is tor installed?)");
    println!("private Tor network up in {:?}", net.startup_time());
    let tmp = tempfile::tempdir().unwrap();
    let server_home = tmp.path().join("server");
    let server_id = cli(&server_home, &["server", "init"]).unwrap()["server"]
        .as_str()
        .unwrap()
        .to_string();
    let server = Daemon::start(&server_home, true, &tor_flags(&net, 0));
    let (a_home, b_home) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let alice = init(&a_home, "alice");
    let bob = init(&b_home, "bob");

    // Bob: a mailbox on the server, his identifier, then offline.
    let mut b = Daemon::start(&b_home, false, &tor_flags(&net, 1));
    wait_ready(&b_home);
    let identifier = cli(&b_home, &["mailbox", "create", &server_id]).unwrap()["identifier"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(identifier.starts_with(&format!("cwtch:{bob}?server=")));
    b.kill9();
    println!("bob's extended identifier: {identifier}");

    // Alice: only the identifier. Bob is offline the whole time she is on.
    let text = "hi bob, alice here: found you through your mailbox";
    let a = Daemon::start(&a_home, false, &tor_flags(&net, 2));
    wait_ready(&a_home);
    cli(&a_home, &["contact", "add", &identifier, "--message", text]).unwrap();
    let posted = Instant::now();
    wait_for(
        "the server's durable ack of the request over Tor",
        Duration::from_secs(240),
        || (cli(&a_home, &["status"]).ok()?["first_contact_pending"] == 0).then_some(()),
    );
    println!("request stored by the server after {:?}", posted.elapsed());
    // The direct delivery is still pending: bob never acknowledged it.
    assert_eq!(conversation(&a_home, &bob)[0].2, "pending");
    let a_logs = a.log_text();
    drop(a);

    // Bob comes back and finds alice's request and message.
    let b = Daemon::start(&b_home, false, &tor_flags(&net, 1));
    wait_ready(&b_home);
    let back = Instant::now();
    wait_for(
        "bob to find the request on the server",
        Duration::from_secs(240),
        || {
            let c = contacts(&b_home)
                .into_iter()
                .find(|c| c["contact"]["address"] == alice.as_str())?;
            (c["contact"]["state"] == "request" && c["contact"]["name"] == "alice").then_some(())
        },
    );
    println!("request found {:?} after bob came back", back.elapsed());
    assert_eq!(
        conversation(&b_home, &alice),
        vec![(false, text.to_string(), "received".to_string())]
    );
    let logs = a_logs + &b.log_text() + &server.log_text();
    assert!(!logs.contains(text), "message text must never be logged");

    // The server's files hold neither the text, nor an address, nor a name.
    drop(server);
    for needle in [text.as_bytes(), alice.as_bytes(), bob.as_bytes(), b"alice"] {
        let hits = files_containing(&server_home, needle);
        assert!(
            hits.is_empty(),
            "{:?} found in {hits:?}",
            String::from_utf8_lossy(needle)
        );
    }
    drop(b);
}
