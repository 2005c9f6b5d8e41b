//! Groups with real processes over the development transport: a server and
//! three peers; invites, posts, a member that was offline catching up in
//! order with no gap reported, and a server killed with SIGKILL in the
//! middle of a burst losing nothing it acknowledged.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::{Daemon, accept_invite, cli, init, wait_for, wait_ready};

fn dev(dir: &Path) -> Vec<String> {
    vec!["--dev-tcp".into(), dir.display().to_string()]
}

struct World {
    _tmp: tempfile::TempDir,
    devdir: PathBuf,
    server_home: PathBuf,
    server: Option<Daemon>,
    server_id: String,
    homes: Vec<PathBuf>,
    addrs: Vec<String>,
    daemons: Vec<Option<Daemon>>,
}

impl World {
    /// A server and alice, bob, carol, all contacts of alice (and she of
    /// theirs), with a group `friends` that all three are in.
    fn new() -> World {
        World::with_server_flags(&[])
    }

    fn with_server_flags(flags: &[&str]) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let devdir = tmp.path().join("dev");
        let server_home = tmp.path().join("server");
        let mut args = vec!["server", "init"];
        args.extend_from_slice(flags);
        let v = cli(&server_home, &args).unwrap();
        let server_id = v["server"].as_str().unwrap().to_string();
        let server = Daemon::start(&server_home, true, &dev(&devdir));
        let names = ["alice", "bob", "carol"];
        let homes: Vec<PathBuf> = names.iter().map(|n| tmp.path().join(n)).collect();
        let addrs: Vec<String> = names.iter().zip(&homes).map(|(n, h)| init(h, n)).collect();
        let daemons = homes
            .iter()
            .map(|h| Some(Daemon::start(h, false, &dev(&devdir))))
            .collect();
        for h in &homes {
            wait_ready(h);
        }
        let w = World {
            _tmp: tmp,
            devdir,
            server_home,
            server: Some(server),
            server_id,
            homes,
            addrs,
            daemons,
        };
        for i in 1..3 {
            cli(&w.homes[0], &["contact", "add", &w.addrs[i]]).unwrap();
            cli(&w.homes[i], &["contact", "add", &w.addrs[0]]).unwrap();
        }
        cli(
            &w.homes[0],
            &["group", "create", "friends", "--server", &w.server_id],
        )
        .unwrap();
        for i in 1..3 {
            cli(&w.homes[0], &["group", "invite", "friends", &w.addrs[i]]).unwrap();
            accept_invite(&w.homes[i], "friends", Duration::from_secs(60));
        }
        for i in 0..3 {
            w.wait_synced(i);
        }
        w
    }

    fn wait_synced(&self, i: usize) {
        wait_for(
            "the member to join and sync",
            Duration::from_secs(60),
            || {
                let groups = cli(&self.homes[i], &["group", "list"]).ok()?;
                let g = groups.as_array()?.first()?.clone();
                (g["servers"][0]["connection"]["state"] == "synced").then_some(())
            },
        );
    }

    fn history(&self, i: usize) -> Vec<Value> {
        cli(&self.homes[i], &["messages", "friends"])
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    fn texts(&self, i: usize) -> Vec<String> {
        self.history(i)
            .iter()
            .map(|m| m["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn missing(&self, i: usize) -> u64 {
        cli(&self.homes[i], &["group", "list"]).unwrap()[0]["missing"]
            .as_u64()
            .unwrap()
    }

    /// Until every message member `i` holds shows as delivered.
    fn wait_all_delivered(&self, i: usize) {
        wait_for(
            "every post to show as delivered",
            Duration::from_secs(60),
            || {
                self.history(i)
                    .iter()
                    .all(|m| m["status"] == "delivered")
                    .then_some(())
            },
        );
    }

    fn post(&self, i: usize, text: &str) {
        cli(&self.homes[i], &["group", "send", "friends", text]).unwrap();
    }
}

#[test]
fn three_members_post_and_all_hold_the_same_history() {
    let w = World::new();
    w.post(0, "alice: hello friends");
    w.post(1, "bob: hi all");
    w.post(2, "carol: hey");
    let expected: BTreeSet<String> = ["alice: hello friends", "bob: hi all", "carol: hey"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for i in 0..3 {
        wait_for(
            "every member to hold all three posts",
            Duration::from_secs(30),
            || (w.texts(i).into_iter().collect::<BTreeSet<_>>() == expected).then_some(()),
        );
        // Our own posts show as delivered once the server stored them durably.
        wait_for("own posts delivered", Duration::from_secs(30), || {
            w.history(i)
                .iter()
                .filter(|m| m["outgoing"] == true)
                .all(|m| m["status"] == "delivered")
                .then_some(())
        });
        assert_eq!(w.missing(i), 0);
    }
    // The authors are the members' own addresses, verified by signature.
    let bob_view = w.history(1);
    let from_alice = bob_view
        .iter()
        .find(|m| m["text"] == "alice: hello friends")
        .unwrap();
    assert_eq!(from_alice["author"], w.addrs[0].as_str());
}

#[test]
fn a_member_that_was_offline_catches_up_in_order_without_gaps() {
    let mut w = World::new();
    // Carol goes offline.
    w.daemons[2].take();
    for i in 0..6u32 {
        w.post((i % 2) as usize, &format!("while carol was away {i}"));
    }
    // Carol returns and fetches everything she missed since her cursor.
    w.daemons[2] = Some(Daemon::start(&w.homes[2], false, &dev(&w.devdir)));
    wait_ready(&w.homes[2]);
    let expected: Vec<String> = (0..6)
        .map(|i| format!("while carol was away {i}"))
        .collect();
    wait_for("carol to catch up", Duration::from_secs(60), || {
        (w.texts(2).len() == 6).then_some(())
    });
    // In order: every author's messages in the order that author wrote them
    // (the server interleaves two authors as their posts arrived).
    let got = w.texts(2);
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, expected);
    for author in [0, 1] {
        let theirs: Vec<&String> = got
            .iter()
            .filter(|t| t.ends_with(|c: char| (c as u32 - '0' as u32) % 2 == author))
            .collect();
        let want: Vec<&String> = expected
            .iter()
            .filter(|t| t.ends_with(|c: char| (c as u32 - '0' as u32) % 2 == author))
            .collect();
        assert_eq!(
            theirs, want,
            "one author's messages stay in the order written"
        );
    }
    assert_eq!(w.missing(2), 0, "no gap reported");
}

#[test]
fn server_killed_mid_burst_loses_nothing_it_acknowledged() {
    let mut w = World::new();
    for i in 0..20 {
        w.post(0, &format!("burst {i}"));
        if i == 12 {
            // SIGKILL while posts are in flight.
            if let Some(mut s) = w.server.take() {
                s.kill9();
            }
        }
    }
    let acknowledged: Vec<String> = w
        .history(0)
        .iter()
        .filter(|m| m["status"] == "delivered")
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !acknowledged.is_empty(),
        "some posts were acknowledged before the kill"
    );
    // The store is not corrupt and reopens; every acknowledged post is there
    // for bob, and the unacknowledged ones are re-posted by alice.
    w.server = Some(Daemon::start(&w.server_home, true, &dev(&w.devdir)));
    wait_for("bob to receive every post", Duration::from_secs(90), || {
        let bob: BTreeSet<String> = w.texts(1).into_iter().collect();
        (0..20)
            .all(|i| bob.contains(&format!("burst {i}")))
            .then_some(())
    });
    w.wait_all_delivered(0);
    let bob = w.texts(1);
    for text in &acknowledged {
        assert_eq!(
            bob.iter().filter(|t| *t == text).count(),
            1,
            "{text} exactly once"
        );
    }
}

#[test]
fn a_server_demanding_proof_of_work_gets_it() {
    let w = World::with_server_flags(&["--pow-bits", "12"]);
    assert!(w.server_id.contains("pow=12"), "{}", w.server_id);
    w.post(1, "paid for with work");
    wait_for("the post to arrive", Duration::from_secs(60), || {
        w.texts(0)
            .contains(&"paid for with work".to_string())
            .then_some(())
    });
    // Bob's acknowledgement and alice's copy leave the server at the same
    // time: wait for it too.
    w.wait_all_delivered(1);
}

#[test]
fn a_peer_uses_several_servers_at_once() {
    let w = World::new();
    // A second server, and a second group on it.
    let second_home = w.devdir.parent().unwrap().join("server2");
    let v = cli(&second_home, &["server", "init"]).unwrap();
    let second_id = v["server"].as_str().unwrap().to_string();
    let _second = Daemon::start(&second_home, true, &dev(&w.devdir));
    cli(
        &w.homes[0],
        &["group", "create", "elsewhere", "--server", &second_id],
    )
    .unwrap();
    cli(&w.homes[0], &["group", "invite", "elsewhere", &w.addrs[1]]).unwrap();
    accept_invite(&w.homes[1], "elsewhere", Duration::from_secs(60));
    wait_for("bob to sync both servers", Duration::from_secs(60), || {
        let groups = cli(&w.homes[1], &["group", "list"]).ok()?;
        let list = groups.as_array()?;
        (list.len() == 2
            && list
                .iter()
                .all(|g| g["servers"][0]["connection"]["state"] == "synced"))
        .then_some(())
    });
    cli(
        &w.homes[0],
        &["group", "send", "friends", "on the first server"],
    )
    .unwrap();
    cli(
        &w.homes[0],
        &["group", "send", "elsewhere", "on the second server"],
    )
    .unwrap();
    for (group, text) in [
        ("friends", "on the first server"),
        ("elsewhere", "on the second server"),
    ] {
        wait_for(
            "bob to receive from both servers",
            Duration::from_secs(60),
            || {
                let msgs = cli(&w.homes[1], &["messages", group]).ok()?;
                msgs.as_array()?
                    .iter()
                    .any(|m| m["text"] == text)
                    .then_some(())
            },
        );
    }
}

/// A burst past the server's rate limit: the refused posts are posted
/// again on the same connection when the server says, so every post
/// arrives, once, and shows as delivered (they used to wait for the next
/// connection, which a subscribed member may not make for hours).
#[test]
fn posts_refused_by_the_rate_limit_are_posted_again() {
    let w = World::with_server_flags(&["--rate-burst", "2", "--rate-interval-ms", "300"]);
    let texts: Vec<String> = (0..8).map(|i| format!("fast {i}")).collect();
    for t in &texts {
        w.post(0, t);
    }
    wait_for("bob to receive every post", Duration::from_secs(60), || {
        let bob = w.texts(1);
        texts.iter().all(|t| bob.contains(t)).then_some(())
    });
    w.wait_all_delivered(0);
    let bob = w.texts(1);
    for t in &texts {
        assert_eq!(bob.iter().filter(|b| *b == t).count(), 1, "{t} once");
    }
    let groups = cli(&w.homes[0], &["group", "list"]).unwrap();
    let server = &groups[0]["servers"][0]["connection"];
    assert_eq!(server["state"], "synced", "a refusal does not undo synced");
    assert!(
        server["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("too many posts")),
        "{server}"
    );
}
