//! Peers as real processes over the development transport (plain TCP on
//! loopback): contact requests, chat, offline delivery, crash safety, and
//! what lies on disk. The same scenario runs over real Tor in the tests
//! crate.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{Daemon, cli, contacts, conversation, init, wait_for, wait_ready};

fn dev(dir: &Path) -> Vec<String> {
    vec!["--dev-tcp".into(), dir.display().to_string()]
}

/// Alice and Bob, both online over the dev transport.
struct Pair {
    a_home: PathBuf,
    b_home: PathBuf,
    alice: String,
    bob: String,
    _tmp: tempfile::TempDir,
    _a: Daemon,
    _b: Daemon,
}

impl Pair {
    fn online() -> Pair {
        let tmp = tempfile::tempdir().unwrap();
        let (a_home, b_home, devdir) = (
            tmp.path().join("alice"),
            tmp.path().join("bob"),
            tmp.path().join("dev"),
        );
        let alice = init(&a_home, "alice");
        let bob = init(&b_home, "bob");
        let _a = Daemon::start(&a_home, false, &dev(&devdir));
        let _b = Daemon::start(&b_home, false, &dev(&devdir));
        wait_ready(&a_home);
        wait_ready(&b_home);
        Pair {
            a_home,
            b_home,
            alice,
            bob,
            _tmp: tmp,
            _a,
            _b,
        }
    }
}

#[test]
fn contact_request_accept_and_chat_both_ways() {
    let Pair {
        a_home,
        b_home,
        alice,
        bob,
        _tmp,
        _a,
        _b,
    } = Pair::online();

    cli(
        &a_home,
        &["contact", "add", &bob, "--message", "hi bob, it's alice"],
    )
    .unwrap();
    // Bob sees a contact request with alice's first message.
    let state = wait_for("bob to see a request", Duration::from_secs(30), || {
        let list = cli(&b_home, &["contact", "list"]).ok()?;
        let entry = list
            .as_array()?
            .iter()
            .find(|e| e["contact"]["address"] == alice.as_str())?
            .clone();
        Some(entry["contact"]["state"].as_str()?.to_string())
    });
    assert_eq!(state, "request");
    wait_for("the first message", Duration::from_secs(30), || {
        (conversation(&b_home, &alice)
            == vec![(
                false,
                "hi bob, it's alice".to_string(),
                "received".to_string(),
            )])
        .then_some(())
    });
    // Bob cannot write before accepting.
    assert!(
        cli(&b_home, &["send", &alice, "too early"])
            .unwrap_err()
            .contains("accept")
    );
    cli(&b_home, &["contact", "accept", &alice]).unwrap();
    cli(&b_home, &["send", &alice, "hello alice"]).unwrap();
    cli(&a_home, &["send", &bob, "how are you?"]).unwrap();
    wait_for("both sides to agree", Duration::from_secs(30), || {
        let a = conversation(&a_home, &bob);
        let b = conversation(&b_home, &alice);
        let delivered = a
            .iter()
            .chain(&b)
            .filter(|m| m.0)
            .all(|m| m.2 == "delivered");
        (a.len() == 3 && b.len() == 3 && delivered).then_some(())
    });
    // Alice learned bob's name from his hello.
    let list = cli(&a_home, &["contact", "list"]).unwrap();
    assert_eq!(list[0]["contact"]["name"], "bob");
    assert_eq!(list[0]["connection"]["state"], "authenticated");
}

#[test]
fn messages_to_an_offline_peer_wait_and_arrive_in_order_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (a_home, b_home, devdir) = (
        tmp.path().join("alice"),
        tmp.path().join("bob"),
        tmp.path().join("dev"),
    );
    let alice = init(&a_home, "alice");
    let bob = init(&b_home, "bob");
    let mut a = Daemon::start(&a_home, false, &dev(&devdir));
    wait_ready(&a_home);
    // Bob is offline: alice adds him and writes.
    cli(&a_home, &["contact", "add", &bob]).unwrap();
    for i in 0..5 {
        cli(&a_home, &["send", &bob, &format!("message {i}")]).unwrap();
    }
    let status = cli(&a_home, &["status"]).unwrap();
    assert_eq!(status["outbox"], 5);
    assert!(conversation(&a_home, &bob).iter().all(|m| m.2 == "pending"));
    // Alice crashes with a full outgoing queue, and comes back.
    a.kill9();
    let _a = Daemon::start(&a_home, false, &dev(&devdir));
    wait_ready(&a_home);
    // Bob comes online: everything arrives, once, in order.
    let _b = Daemon::start(&b_home, false, &dev(&devdir));
    wait_ready(&b_home);
    let expected: Vec<_> = (0..5)
        .map(|i| (false, format!("message {i}"), "received".to_string()))
        .collect();
    wait_for("bob to receive the queue", Duration::from_secs(60), || {
        (conversation(&b_home, &alice) == expected).then_some(())
    });
    wait_for(
        "alice to see them delivered",
        Duration::from_secs(30),
        || {
            conversation(&a_home, &bob)
                .iter()
                .all(|m| m.2 == "delivered")
                .then_some(())
        },
    );
    assert_eq!(cli(&a_home, &["status"]).unwrap()["outbox"], 0);
    // Nothing arrives twice, even after more time and reconnections.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(conversation(&b_home, &alice), expected);
}

#[test]
fn blocked_peer_is_refused() {
    let Pair {
        a_home,
        b_home,
        alice,
        bob,
        _tmp,
        _a,
        _b,
    } = Pair::online();
    cli(&b_home, &["contact", "block", &alice]).unwrap();
    cli(&a_home, &["contact", "add", &bob, "--message", "spam"]).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(conversation(&b_home, &alice).is_empty());
    let list = cli(&a_home, &["contact", "list"]).unwrap();
    assert_ne!(list[0]["connection"]["state"], "authenticated");
    assert_eq!(conversation(&a_home, &bob)[0].2, "pending");
    // Alice is told why, not left at "connected" (between her retries).
    wait_for("alice to see why", Duration::from_secs(30), || {
        let list = contacts(&a_home);
        let connection = &list.first()?["connection"];
        (connection["state"] == "failed"
            && connection["last_error"]
                .as_str()?
                .starts_with("handshake failed"))
        .then_some(())
    });
}

/// More contacts than dials may run at once (3): a link we dialed frees
/// its dial slot once it is up, so every contact is reached, not only the
/// first three (the dial used to hold its slot for the link's lifetime).
#[test]
fn a_node_reaches_more_contacts_than_it_dials_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let a_home = tmp.path().join("alice");
    let alice = init(&a_home, "alice");
    let _a = Daemon::start(&a_home, false, &dev(&devdir));
    wait_ready(&a_home);
    let friends: Vec<(PathBuf, String, Daemon)> = (0..5)
        .map(|i| {
            let home = tmp.path().join(format!("friend{i}"));
            let address = init(&home, &format!("friend{i}"));
            let d = Daemon::start(&home, false, &dev(&devdir));
            (home, address, d)
        })
        .collect();
    for (home, address, _) in &friends {
        wait_ready(home);
        cli(&a_home, &["contact", "add", address, "--message", "hello"]).unwrap();
    }
    wait_for(
        "alice's links to all five contacts",
        Duration::from_secs(60),
        || {
            let up = contacts(&a_home)
                .iter()
                .filter(|c| c["connection"]["state"] == "authenticated")
                .count();
            (up == friends.len()).then_some(())
        },
    );
    for (home, _, _) in &friends {
        wait_for(
            "each contact to get the request",
            Duration::from_secs(30),
            || (conversation(home, &alice).len() == 1).then_some(()),
        );
    }
}
