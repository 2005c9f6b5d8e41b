//! Scenarios of what goes beyond the reference design (issue #9), shared by
//! the development-transport and the private-Tor-network test files:
//! recovery of a message a server withholds, and a group moving servers
//! while a member is offline.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cwtch_node::server::Faults;
use cwtch_transport_socks::AnyTransport;
use serde_json::Value;

use crate::support::{Daemon, accept_invite, cli, init, wait_for, wait_ready};

/// How the scenario reaches the network: daemon flags for peer `i`, and a
/// transport for a server run inside the test process.
pub trait Net: Sync {
    fn flags(&self, i: usize) -> Vec<String>;
    fn server_transport(&self, i: usize) -> AnyTransport;
    /// How long to wait for anything that crosses the network.
    fn patience(&self) -> Duration;
}

/// A server run inside the test process (so it can misbehave on purpose).
pub fn start_embedded_server(home: &Path, transport: AnyTransport, faults: Faults) -> String {
    let v = cli(home, &["server", "init"]).unwrap();
    let id = v["server"].as_str().unwrap().to_string();
    let home = home.to_path_buf();
    std::thread::spawn(move || {
        if let Err(e) = smol::block_on(cwtch_node::server::run_with(&home, transport, faults)) {
            eprintln!("embedded server stopped: {e}");
        }
    });
    id
}

pub fn start_server_daemon(home: &Path, flags: &[String]) -> (String, Daemon) {
    let v = cli(home, &["server", "init"]).unwrap();
    let id = v["server"].as_str().unwrap().to_string();
    (id, Daemon::start(home, true, flags))
}

pub fn history(home: &Path, group: &str) -> Vec<Value> {
    cli(home, &["messages", group])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

pub fn texts(home: &Path, group: &str) -> Vec<String> {
    history(home, group)
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

pub fn group_info(home: &Path) -> Value {
    cli(home, &["group", "list"]).unwrap()[0].clone()
}

fn wait_synced(home: &Path, server: &str, limit: Duration) {
    wait_for("the member to sync with the server", limit, || {
        let g = cli(home, &["group", "list"])
            .ok()?
            .as_array()?
            .first()?
            .clone();
        g["servers"]
            .as_array()?
            .iter()
            .any(|s| {
                s["server"].as_str().map(short) == Some(short(server))
                    && s["connection"]["state"] == "synced"
            })
            .then_some(())
    });
}

/// A server's bare address, from its paste string or address.
pub fn short(server: &str) -> &str {
    let s = server.strip_prefix("cwtch-server:").unwrap_or(server);
    let s = s.split('?').next().unwrap_or(s);
    s.strip_suffix(".onion").unwrap_or(s)
}

/// Mutual contacts: `a` adds `b` and `b` adds `a`; waits until linked.
fn befriend(a: (&Path, &str), b: (&Path, &str), limit: Duration) {
    cli(a.0, &["contact", "add", b.1]).unwrap();
    cli(b.0, &["contact", "add", a.1]).unwrap();
    wait_for("the contacts to link", limit, || {
        let v = cli(a.0, &["contact", "list"]).ok()?;
        v.as_array()?
            .iter()
            .any(|c| c["contact"]["address"] == b.1 && c["connection"]["state"] == "authenticated")
            .then_some(())
    });
}

/// A server withholds one of alice's messages from every reader; bob
/// detects the gap and asks alice over their peer
/// link, and shows the message in its place, once, marked recovered.
pub fn recovery_from_a_member(net: &impl Net, dir: &Path) {
    let patience = net.patience();
    // Index 1 is the first blob stored: alice's message 0; 2 is message 1.
    let faults = Faults {
        withhold: Some(Arc::new(|index| index == 2)),
    };
    let server = start_embedded_server(&dir.join("server"), net.server_transport(0), faults);
    let (ah, bh) = (dir.join("alice"), dir.join("bob"));
    let (alice, bob) = (init(&ah, "alice"), init(&bh, "bob"));
    let _a = Daemon::start(&ah, false, &net.flags(1));
    let _b = Daemon::start(&bh, false, &net.flags(2));
    wait_ready(&ah);
    wait_ready(&bh);
    befriend((&ah, &alice), (&bh, &bob), patience);
    cli(&ah, &["group", "create", "friends", "--server", &server]).unwrap();
    cli(&ah, &["group", "invite", "friends", &bob]).unwrap();
    accept_invite(&bh, "friends", patience);
    wait_for("bob to join", patience, || {
        cli(&bh, &["group", "list"])
            .ok()?
            .as_array()?
            .first()
            .map(|_| ())
    });
    wait_synced(&ah, &server, patience);
    wait_synced(&bh, &server, patience);
    let sent = [
        "first, arrives",
        "second, withheld by the server",
        "third, arrives",
    ];
    for t in sent {
        cli(&ah, &["group", "send", "friends", t]).unwrap();
        // One at a time, so the server's indices follow this order.
        wait_for("the server to store it", patience, || {
            history(&ah, "friends")
                .iter()
                .all(|m| m["status"] == "delivered")
                .then_some(())
        });
    }
    let shown = wait_for("bob to recover the withheld message", patience * 2, || {
        let h = history(&bh, "friends");
        h.iter()
            .any(|m| m["text"] == sent[1] && m["status"] == "recovered")
            .then_some(h)
    });
    let texts: Vec<&str> = shown.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, sent, "in place, each once, no placeholder left");
    assert_eq!(shown[0]["status"], "received");
    assert_eq!(shown[2]["status"], "received");
    for m in &shown {
        assert_eq!(m["author"], alice.as_str(), "verified as alice's");
    }
    let g = group_info(&bh);
    assert_eq!(g["missing"], 0);
    assert_eq!(g["recovered"], 1);
    let gaps: Vec<String> = g["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(gaps.iter().any(|g| g.starts_with("missing")), "{gaps:?}");
    assert!(gaps.iter().any(|g| g.starts_with("recovered")), "{gaps:?}");
}

/// Alice moves the group from server A to server B while carol is
/// offline; carol returns, learns of the move from A, and continues on B
/// without losing anything; gap detection runs across the move.
pub fn move_while_a_member_is_offline(net: &impl Net, dir: &Path) {
    let patience = net.patience();
    let (server_a, _sa) = start_server_daemon(&dir.join("server-a"), &net.flags(0));
    let (server_b, _sb) = start_server_daemon(&dir.join("server-b"), &net.flags(3));
    let homes: Vec<PathBuf> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| dir.join(n))
        .collect();
    let addrs: Vec<String> = ["alice", "bob", "carol"]
        .iter()
        .zip(&homes)
        .map(|(n, h)| init(h, n))
        .collect();
    let mut daemons: Vec<Option<Daemon>> = homes
        .iter()
        .enumerate()
        .map(|(i, h)| Some(Daemon::start(h, false, &net.flags(i))))
        .collect();
    for h in &homes {
        wait_ready(h);
    }
    for i in 1..3 {
        befriend((&homes[0], &addrs[0]), (&homes[i], &addrs[i]), patience);
    }
    cli(
        &homes[0],
        &["group", "create", "friends", "--server", &server_a],
    )
    .unwrap();
    for (addr, h) in addrs[1..].iter().zip(&homes[1..]) {
        cli(&homes[0], &["group", "invite", "friends", addr]).unwrap();
        accept_invite(h, "friends", patience);
    }
    for h in &homes {
        wait_for("the member to join", patience, || {
            cli(h, &["group", "list"])
                .ok()?
                .as_array()?
                .first()
                .map(|_| ())
        });
        wait_synced(h, &server_a, patience);
    }
    cli(
        &homes[0],
        &["group", "send", "friends", "on A, before the move"],
    )
    .unwrap();
    wait_for("everyone to have the first message", patience, || {
        homes
            .iter()
            .all(|h| texts(h, "friends").len() == 1)
            .then_some(())
    });
    // Carol goes offline; alice moves the group; alice and bob talk on B.
    daemons[2].take();
    let moved = cli(&homes[0], &["group", "move", "friends", &server_b]).unwrap();
    assert!(
        moved["text"]
            .as_str()
            .unwrap()
            .starts_with("[moved this group to")
    );
    wait_for("bob to follow the move", patience, || {
        let g = group_info(&homes[1]);
        (short(g["servers"][0]["server"].as_str()?) == short(&server_b)).then_some(())
    });
    wait_synced(&homes[0], &server_b, patience);
    wait_synced(&homes[1], &server_b, patience);
    cli(&homes[0], &["group", "send", "friends", "on B, from alice"]).unwrap();
    cli(&homes[1], &["group", "send", "friends", "on B, from bob"]).unwrap();
    let expected = [
        "on A, before the move",
        "[moved this group to",
        "on B, from alice",
        "on B, from bob",
    ];
    let has_all = |h: &Path| {
        let t = texts(h, "friends");
        t.len() == 4 && expected.iter().all(|e| t.iter().any(|x| x.starts_with(e)))
    };
    wait_for("alice and bob to hold all four", patience, || {
        (has_all(&homes[0]) && has_all(&homes[1])).then_some(())
    });
    // Carol returns: she reads A (still in her group), finds the notice,
    // follows it to B and fetches what was said there.
    daemons[2] = Some(Daemon::start(&homes[2], false, &net.flags(2)));
    wait_ready(&homes[2]);
    wait_for("carol to catch up across the move", patience * 2, || {
        has_all(&homes[2]).then_some(())
    });
    let g = group_info(&homes[2]);
    assert_eq!(
        short(g["servers"][0]["server"].as_str().unwrap()),
        short(&server_b)
    );
    assert_eq!(
        short(g["previous_servers"][0].as_str().unwrap()),
        short(&server_a)
    );
    wait_synced(&homes[2], &server_b, patience);
    cli(&homes[2], &["group", "send", "friends", "carol, on B"]).unwrap();
    for h in &homes {
        wait_for("everyone to have carol's post on B", patience, || {
            texts(h, "friends")
                .iter()
                .any(|t| t == "carol, on B")
                .then_some(())
        });
        let g = group_info(h);
        assert_eq!(g["missing"], 0, "no gap across the move");
        assert!(
            !g["gaps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v.as_str().unwrap_or_default().starts_with("missing")),
            "no gap was ever reported: {}",
            g["gaps"]
        );
    }
}

/// The group named `name` in `home`'s `group list`.
pub fn group_named(home: &Path, name: &str) -> Option<Value> {
    cli(home, &["group", "list"])
        .ok()?
        .as_array()?
        .iter()
        .find(|g| g["name"] == name)
        .cloned()
}

/// Alice and bob share g1 on server S, so bob reads S. Alice creates g2 on
/// S and posts three messages while bob is not in it: bob's cursor on S
/// passes them (alice's next g1 post, which bob reads, is after them).
/// Alice then invites bob to g2: he reads S again from the start and shows
/// the three earlier g2 messages, while g1 shows each message once.
pub fn join_a_group_on_a_server_in_use(net: &impl Net, dir: &Path) {
    let patience = net.patience();
    let (server, _s) = start_server_daemon(&dir.join("server"), &net.flags(0));
    let (ah, bh) = (dir.join("alice"), dir.join("bob"));
    let (alice, bob) = (init(&ah, "alice"), init(&bh, "bob"));
    let _a = Daemon::start(&ah, false, &net.flags(1));
    let _b = Daemon::start(&bh, false, &net.flags(2));
    wait_ready(&ah);
    wait_ready(&bh);
    befriend((&ah, &alice), (&bh, &bob), patience);
    cli(&ah, &["group", "create", "g1", "--server", &server]).unwrap();
    cli(&ah, &["group", "invite", "g1", &bob]).unwrap();
    accept_invite(&bh, "g1", patience);
    wait_for("bob to join g1", patience, || group_named(&bh, "g1"));
    let has = |h: &Path, group: &str, text: &str| texts(h, group).iter().any(|t| t == text);
    cli(&ah, &["group", "send", "g1", "g1: hello"]).unwrap();
    wait_for("bob to read g1", patience, || {
        has(&bh, "g1", "g1: hello").then_some(())
    });
    cli(&bh, &["group", "send", "g1", "g1: from bob"]).unwrap();
    wait_for("alice to read bob", patience, || {
        has(&ah, "g1", "g1: from bob").then_some(())
    });

    cli(&ah, &["group", "create", "g2", "--server", &server]).unwrap();
    let earlier = ["g2: one", "g2: two", "g2: three"];
    for t in earlier {
        cli(&ah, &["group", "send", "g2", t]).unwrap();
    }
    wait_for("S to store alice's g2 posts", patience, || {
        let h = history(&ah, "g2");
        (h.len() == 3 && h.iter().all(|m| m["status"] == "delivered")).then_some(())
    });
    // Bob reads this one, stored after the g2 posts: his cursor is past them.
    cli(&ah, &["group", "send", "g1", "g1: after g2"]).unwrap();
    wait_for("bob to read g1 past the g2 posts", patience, || {
        has(&bh, "g1", "g1: after g2").then_some(())
    });
    assert!(group_named(&bh, "g2").is_none());

    cli(&ah, &["group", "invite", "g2", &bob]).unwrap();
    accept_invite(&bh, "g2", patience);
    let shown = wait_for("bob to read g2's earlier posts", patience, || {
        let h = history(&bh, "g2");
        (h.len() >= 3).then_some(h)
    });
    let got: Vec<&str> = shown.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(got, earlier, "every earlier post, in order, once");
    for m in &shown {
        assert_eq!(m["author"], alice.as_str());
        assert_eq!(m["status"], "received");
    }
    // A later g1 post: once bob has it, the second reading of S has passed
    // every g1 message; none is shown twice.
    cli(&ah, &["group", "send", "g1", "g1: last"]).unwrap();
    wait_for("bob to read the last g1 post", patience, || {
        has(&bh, "g1", "g1: last").then_some(())
    });
    assert_eq!(
        texts(&bh, "g1"),
        ["g1: hello", "g1: from bob", "g1: after g2", "g1: last"],
        "no g1 message twice"
    );
    assert_eq!(texts(&bh, "g2"), earlier);
    for g in ["g1", "g2"] {
        let info = group_named(&bh, g).unwrap();
        assert_eq!(info["missing"], 0, "{info}");
        assert_eq!(
            info["recovered"], 0,
            "from the server, not recovery: {info}"
        );
    }
}

/// `home`'s directory entry for `server`.
pub fn directory_entry(home: &Path, server: &str) -> Option<Value> {
    cli(home, &["servers"])
        .ok()?
        .as_array()?
        .iter()
        .find(|s| s["address"].as_str().map(short) == Some(short(server)))
        .cloned()
}

/// Carol is in a group with alice but not her contact (bob, a contact of
/// both, invited her, then went offline). Alice starts using server T; she
/// posts T's signed advert in the group; carol learns T from the group
/// (source: the group and alice), and no message is shown for it.
pub fn a_server_advert_shared_inside_a_group(net: &impl Net, dir: &Path) {
    let patience = net.patience();
    let (server_s, _s) = start_server_daemon(&dir.join("server-s"), &net.flags(0));
    let (server_t, _t) = start_server_daemon(&dir.join("server-t"), &net.flags(3));
    let homes: Vec<PathBuf> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| dir.join(n))
        .collect();
    let addrs: Vec<String> = ["alice", "bob", "carol"]
        .iter()
        .zip(&homes)
        .map(|(n, h)| init(h, n))
        .collect();
    let (ah, bh, ch) = (&homes[0], &homes[1], &homes[2]);
    let (alice, bob, carol) = (&addrs[0], &addrs[1], &addrs[2]);
    let _a = Daemon::start(ah, false, &net.flags(1));
    let mut b = Some(Daemon::start(bh, false, &net.flags(2)));
    let _c = Daemon::start(ch, false, &net.flags(4));
    for h in &homes {
        wait_ready(h);
    }
    befriend((ah, alice), (bh, bob), patience);
    befriend((bh, bob), (ch, carol), patience);
    cli(ah, &["group", "create", "g", "--server", &server_s]).unwrap();
    cli(ah, &["group", "invite", "g", bob]).unwrap();
    accept_invite(bh, "g", patience);
    wait_for("bob to join", patience, || group_named(bh, "g"));
    cli(bh, &["group", "invite", "g", carol]).unwrap();
    accept_invite(ch, "g", patience);
    wait_for("carol to join", patience, || group_named(ch, "g"));
    b.take(); // bob goes offline: he cannot pass anything on
    cli(ah, &["group", "send", "g", "hello carol"]).unwrap();
    wait_for("carol to read alice in the group", patience, || {
        texts(ch, "g")
            .iter()
            .any(|t| t == "hello carol")
            .then_some(())
    });
    assert!(directory_entry(ch, &server_t).is_none());
    let contacts = cli(ch, &["contact", "list"]).unwrap();
    assert!(
        !contacts
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["contact"]["address"] == alice.as_str()),
        "carol and alice are not contacts"
    );

    // Alice starts using T: she reaches it and verifies its advert.
    cli(ah, &["group", "create", "on-t", "--server", &server_t]).unwrap();
    wait_for("alice to reach T", patience, || {
        directory_entry(ah, &server_t)
            .filter(|e| e["reachable"] == true && e["advert"]["valid"] == true)
    });
    let learned = wait_for("carol to learn T from the group", patience, || {
        directory_entry(ch, &server_t)
    });
    assert_eq!(learned["source"]["group"]["member"], alice.as_str());
    let gid = group_named(ch, "g").unwrap()["id"].clone();
    assert_eq!(learned["source"]["group"]["group"], gid);
    assert_eq!(learned["advert"]["valid"], true);
    assert_eq!(learned["used"], false);
    assert_eq!(learned["score"], 500, "nobody else's observations count");
    // Not a chat message, on either side.
    assert_eq!(texts(ch, "g"), ["hello carol"]);
    assert_eq!(texts(ah, "g"), ["hello carol"]);
    assert_eq!(group_named(ch, "g").unwrap()["missing"], 0);
    // The plain-words list says where it came from.
    let out = std::process::Command::new(crate::support::bin())
        .args(["--home", ch.to_str().unwrap(), "servers"])
        .env("CWTCH_PASSWORD", crate::support::PASSWORD)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("from a group member"), "{text}");
    // Carol can use the server she found.
    cli(ch, &["group", "create", "carols", "--server", &server_t]).unwrap();
    cli(ch, &["group", "send", "carols", "found T in a group"]).unwrap();
    wait_for("T to store carol's post", patience, || {
        history(ch, "carols")
            .first()
            .filter(|m| m["status"] == "delivered")
            .map(|_| ())
    });
}

/// A group on server A moves to B while carol is offline, and A is gone
/// when she returns: she cannot read the notice there, so alice, a contact
/// and member, tells her over their peer link. Carol verifies it like a
/// blob from A, follows to B, and reads what was said there.
pub fn a_move_told_by_a_contact(net: &impl Net, dir: &Path) {
    let patience = net.patience();
    let (server_a, sa) = start_server_daemon(&dir.join("server-a"), &net.flags(0));
    let mut sa = Some(sa);
    let (server_b, _sb) = start_server_daemon(&dir.join("server-b"), &net.flags(3));
    let homes: Vec<PathBuf> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| dir.join(n))
        .collect();
    let addrs: Vec<String> = ["alice", "bob", "carol"]
        .iter()
        .zip(&homes)
        .map(|(n, h)| init(h, n))
        .collect();
    let mut daemons: Vec<Option<Daemon>> = homes
        .iter()
        .enumerate()
        .map(|(i, h)| Some(Daemon::start(h, false, &net.flags(i + 1))))
        .collect();
    for h in &homes {
        wait_ready(h);
    }
    for i in 1..3 {
        befriend((&homes[0], &addrs[0]), (&homes[i], &addrs[i]), patience);
    }
    cli(&homes[0], &["group", "create", "g", "--server", &server_a]).unwrap();
    for (addr, h) in addrs[1..].iter().zip(&homes[1..]) {
        cli(&homes[0], &["group", "invite", "g", addr]).unwrap();
        accept_invite(h, "g", patience);
    }
    for h in &homes {
        wait_for("the member to join", patience, || group_named(h, "g"));
    }
    cli(&homes[0], &["group", "send", "g", "on A"]).unwrap();
    wait_for("everyone to read it on A", patience, || {
        homes
            .iter()
            .all(|h| texts(h, "g") == ["on A"])
            .then_some(())
    });
    // Carol goes offline; alice moves the group to B; A goes away.
    daemons[2].take();
    cli(&homes[0], &["group", "move", "g", &server_b]).unwrap();
    wait_for("bob to follow the move", patience, || {
        let g = group_named(&homes[1], "g")?;
        (short(g["servers"][0]["server"].as_str()?) == short(&server_b)).then_some(())
    });
    cli(&homes[0], &["group", "send", "g", "on B, from alice"]).unwrap();
    cli(&homes[1], &["group", "send", "g", "on B, from bob"]).unwrap();
    wait_for("alice and bob to store their posts on B", patience, || {
        homes[..2]
            .iter()
            .all(|h| {
                let hist = history(h, "g");
                hist.len() == 4 && hist.iter().all(|m| m["status"] != "pending")
            })
            .then_some(())
    });
    sa.take(); // server A is gone for good
    // Carol returns: A does not answer; alice tells her of the move.
    daemons[2] = Some(Daemon::start(&homes[2], false, &net.flags(3)));
    wait_ready(&homes[2]);
    let expected = [
        "on A",
        "[moved this group to",
        "on B, from alice",
        "on B, from bob",
    ];
    wait_for(
        "carol to follow the move and catch up",
        patience * 2,
        || {
            let t = texts(&homes[2], "g");
            (t.len() == 4 && t.iter().zip(expected).all(|(x, e)| x.starts_with(e))).then_some(())
        },
    );
    let g = group_named(&homes[2], "g").unwrap();
    assert_eq!(
        short(g["servers"][0]["server"].as_str().unwrap()),
        short(&server_b)
    );
    assert_eq!(g["missing"], 0, "{g}");
    let notice = history(&homes[2], "g")
        .into_iter()
        .find(|m| m["text"].as_str().unwrap_or("").starts_with("[moved"))
        .unwrap();
    assert_eq!(notice["author"], addrs[0].as_str(), "signed by alice");
    let log = daemons[2].as_ref().unwrap().log_text();
    assert!(
        log.contains("a contact told us of a group's move"),
        "learned over the peer link, not from a server"
    );
}
