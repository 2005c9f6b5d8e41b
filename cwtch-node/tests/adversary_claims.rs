//! Members, servers and strangers who lie (issue 14): every value another
//! party sends is a claim. Real `cwtch-node` daemons on the dev transport,
//! attacked through the wire by parties built from `cwtch-proto` alone
//! (a fake peer that is invited into a group and so holds its secret, a
//! recording server, strangers writing to a mailbox), and observed through
//! the command line only, so these tests do not depend on how the node
//! stores anything.

mod support;
#[path = "support/wire.rs"]
mod wire;

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cwtch_proto::group::control::MOVE_NOTICE_MAX_LEN;
use cwtch_proto::group::message::{MAX_SEQ, MessageHash, MessageKind, SeenEntry};
use cwtch_proto::group::{
    Group, Invite, MissingRange, MoveNotice, ResendWanted, SEALED_BLOB_LEN, SenderChain,
};
use cwtch_proto::mailbox::{FirstContact, Identifier, seal_request};
use cwtch_proto::peer::PeerMessage;
use cwtch_proto::server::wire::{Reply, Request};
use cwtch_proto::{Identity, OnionAddress, UnixMicros};
use serde_json::Value;
use support::{Daemon, accept_invite, cli, contacts, conversation, init, wait_for, wait_ready};
use wire::{FakePeer, RawLink, ServerUser, resolve, rng, server_wire};

const PATIENCE: Duration = Duration::from_secs(60);

fn dev(dir: &Path) -> Vec<String> {
    vec!["--dev-tcp".into(), dir.display().to_string()]
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A real server: its paste-able string, its address, its daemon.
fn server(tmp: &Path, devdir: &Path, name: &str, flags: &[&str]) -> (String, OnionAddress, Daemon) {
    let home = tmp.join(name);
    let mut args = vec!["server", "init"];
    args.extend_from_slice(flags);
    let v = cli(&home, &args).unwrap();
    let id = v["server"].as_str().unwrap().to_string();
    let address = OnionAddress::parse(v["address"].as_str().unwrap()).unwrap();
    let daemon = Daemon::start(&home, true, &dev(devdir));
    wait_for("the server to listen", PATIENCE, || {
        resolve(devdir, address.as_str()).map(|_| ())
    });
    (id, address, daemon)
}

/// A peer daemon: home, address, daemon.
fn peer(tmp: &Path, devdir: &Path, name: &str) -> (PathBuf, String, Daemon) {
    let home = tmp.join(name);
    let address = init(&home, name);
    let daemon = Daemon::start(&home, false, &dev(devdir));
    wait_ready(&home);
    (home, address, daemon)
}

fn group_info(home: &Path) -> Value {
    cli(home, &["group", "list"]).unwrap()[0].clone()
}

fn current_server(home: &Path) -> String {
    group_info(home)["servers"][0]["server"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn texts(home: &Path, group: &str) -> Vec<String> {
    cli(home, &["messages", group])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|m| m["status"] != "missing")
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn gaps(home: &Path) -> Vec<String> {
    group_info(home)["gaps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|g| g.as_str().unwrap_or_default().to_string())
        .collect()
}

/// Seals message `seq` of `sender`'s chain (after `prev`) for `server`.
#[allow(clippy::too_many_arguments)]
fn seal(
    group: &Group,
    sender: &Identity,
    server: &OnionAddress,
    seq: u64,
    prev: [u8; 32],
    kind: MessageKind,
    body: &[u8],
    timestamp: UnixMicros,
    seen: &[SeenEntry],
) -> ([u8; SEALED_BLOB_LEN], [u8; 32]) {
    let chain = SenderChain::resume(seq, MessageHash(prev));
    let msg = chain.next_message(kind, body, timestamp, seen);
    let mut out = [0u8; SEALED_BLOB_LEN];
    let sealed = group
        .keys()
        .seal(sender, server, &msg, &mut rng(), &mut out)
        .unwrap();
    (out, sealed.hash.0)
}

fn text(
    group: &Group,
    sender: &Identity,
    server: &OnionAddress,
    seq: u64,
    prev: [u8; 32],
    body: &str,
    seen: &[SeenEntry],
) -> ([u8; SEALED_BLOB_LEN], [u8; 32]) {
    let now = UnixMicros::from_micros(unix_now());
    seal(
        group,
        sender,
        server,
        seq,
        prev,
        MessageKind::TEXT,
        body.as_bytes(),
        now,
        seen,
    )
}

fn notice(to: &[OnionAddress]) -> Vec<u8> {
    let mut buf = [0u8; MOVE_NOTICE_MAX_LEN];
    MoveNotice::new(to)
        .unwrap()
        .encode(&mut buf)
        .unwrap()
        .to_vec()
}

/// A stranger dials `home`'s daemon as `who`; the user accepts it.
fn befriend_fake(devdir: &Path, home: &Path, address: &str, who: Identity) -> FakePeer {
    let mut fake = FakePeer::dial(devdir, who, address, PATIENCE).expect("the link comes up");
    fake.send(&PeerMessage::Hello { name: "mallory" });
    let theirs = fake.me.address().to_string();
    wait_for("the contact request", PATIENCE, || {
        contacts(home)
            .iter()
            .any(|c| c["contact"]["address"] == theirs.as_str())
            .then_some(())
    });
    cli(home, &["contact", "accept", &theirs]).unwrap();
    fake
}

/// A group `g` on `server_id` that `home` created and invited `fake` to:
/// the fake peer now holds the group secret, as any member does.
fn invite_fake(home: &Path, server_id: &str, fake: &mut FakePeer) -> Group {
    cli(home, &["group", "create", "g", "--server", server_id]).unwrap();
    cli(
        home,
        &["group", "invite", "g", &fake.me.address().to_string()],
    )
    .unwrap();
    assert!(fake.pump_until(PATIENCE, |p| !p.invites.is_empty()));
    wait_for("the group synced", PATIENCE, || {
        (group_info(home)["servers"][0]["connection"]["state"] == "synced").then_some(())
    });
    Invite::decode(&fake.invites[0]).unwrap().group()
}

fn post_all(devdir: &Path, server: &OnionAddress, blobs: &[[u8; SEALED_BLOB_LEN]]) {
    let addr = resolve(devdir, server.as_str()).unwrap();
    let mut user = ServerUser::connect(addr, server, PATIENCE).expect("server session");
    for b in blobs {
        assert!(user.post(b, PATIENCE).is_some(), "the server stored it");
    }
}

/// Item 1: a member dates a move notice near 2^64 to pin the group to its
/// server. Not followed; a plausible notice is; our own explicit move
/// always applies, and says only what happened.
#[test]
fn a_member_cannot_pin_a_group_and_our_own_move_always_applies() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let (s1_id, s1, _s1) = server(tmp.path(), &devdir, "s1", &[]);
    let (s2_id, s2, _s2) = server(tmp.path(), &devdir, "s2", &[]);
    let s3 = Identity::generate(&mut rng()).address(); // mallory's, never up
    let (alice, alice_addr, _a) = peer(tmp.path(), &devdir, "alice");
    let mallory = Identity::generate(&mut rng());
    let mut fake = befriend_fake(&devdir, &alice, &alice_addr, mallory.clone());
    let group = invite_fake(&alice, &s1_id, &mut fake);

    // A notice dated near 2^64, naming mallory's server.
    let (pin, h0) = seal(
        &group,
        &mallory,
        &s1,
        0,
        [0; 32],
        MessageKind::MOVE,
        &notice(&[s3]),
        UnixMicros::from_micros(u64::MAX - 1),
        &[],
    );
    post_all(&devdir, &s1, &[pin]);
    wait_for("the pinning notice to be shown", PATIENCE, || {
        texts(&alice, "g")
            .iter()
            .any(|t| t.contains("beyond our clock") && t.contains("not followed"))
            .then_some(())
    });
    assert_eq!(current_server(&alice), s1.as_str(), "not followed");
    assert!(
        !texts(&alice, "g")
            .iter()
            .any(|t| t.starts_with("[moved this group")),
        "the status never claims a move that did not happen"
    );

    // A notice within the clock skew is a move like any other.
    let soon = UnixMicros::from_micros(unix_now() + 60_000_000);
    let (moved, h1) = seal(
        &group,
        &mallory,
        &s1,
        1,
        h0,
        MessageKind::MOVE,
        &notice(&[s3]),
        soon,
        &[],
    );
    post_all(&devdir, &s1, &[moved]);
    wait_for("alice to follow the plausible move", PATIENCE, || {
        (current_server(&alice) == s3.as_str()).then_some(())
    });

    // Our own explicit move always takes effect for us, at once, though
    // the notice we follow is dated a minute ahead of our clock.
    let v = cli(&alice, &["group", "move", "g", &s2_id]).unwrap();
    assert_eq!(v["text"], format!("[moved this group to {}]", s2.as_str()));
    assert_eq!(current_server(&alice), s2.as_str());
    let previous = group_info(&alice)["previous_servers"].clone();
    assert!(previous.as_array().unwrap().len() >= 2, "{previous}");

    // A notice older than ours is shown as such and not followed.
    let (late, _) = seal(
        &group,
        &mallory,
        &s1,
        2,
        h1,
        MessageKind::MOVE,
        &notice(&[s3]),
        UnixMicros::from_micros(unix_now()),
        &[],
    );
    post_all(&devdir, &s1, &[late]);
    wait_for("the late notice to be shown", PATIENCE, || {
        texts(&alice, "g")
            .iter()
            .any(|t| t.contains("older than the move the group follows"))
            .then_some(())
    });
    assert_eq!(current_server(&alice), s2.as_str());
}

/// Items 4 and 8: a summary claiming a member sent MAX_SEQ messages is
/// ignored and its author named; members jumping to MAX_SEQ themselves make
/// counts that saturate instead of overflowing (a panic in a debug build).
#[test]
fn claims_that_do_not_add_up_are_named_and_counts_never_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let (s1_id, s1, _s1) = server(tmp.path(), &devdir, "s1", &[]);
    let (alice, alice_addr, _a) = peer(tmp.path(), &devdir, "alice");
    let mallory = Identity::generate(&mut rng());
    let mut fake = befriend_fake(&devdir, &alice, &alice_addr, mallory.clone());
    let group = invite_fake(&alice, &s1_id, &mut fake);
    cli(&alice, &["group", "send", "g", "alice 0"]).unwrap();

    let alice_member = group
        .id()
        .member_id(&OnionAddress::parse(&alice_addr).unwrap().public_identity());
    let lie = [SeenEntry {
        member: alice_member,
        seq: MAX_SEQ,
    }];
    let (b, _) = text(&group, &mallory, &s1, 0, [0; 32], "nothing to see", &lie);
    post_all(&devdir, &s1, &[b]);
    let mallory_addr = mallory.address().to_string();
    wait_for("the liar to be named", PATIENCE, || {
        gaps(&alice)
            .iter()
            .any(|g| g.contains("claims that do not add up") && g.contains(&mallory_addr))
            .then_some(())
    });
    assert_eq!(group_info(&alice)["missing"], 0, "the lie hid nothing");

    // Two members of mallory's making each jump to MAX_SEQ.
    let mut blobs = Vec::new();
    for _ in 0..2 {
        let sybil = Identity::generate(&mut rng());
        let (b0, h0) = text(&group, &sybil, &s1, 0, [0; 32], "first", &[]);
        let (b1, _) = text(&group, &sybil, &s1, MAX_SEQ, h0, "last", &[]);
        blobs.extend([b0, b1]);
    }
    post_all(&devdir, &s1, &blobs);
    let info = wait_for("the counts to saturate", PATIENCE, || {
        let g = cli(&alice, &["group", "list"]).ok()?[0].clone();
        (g["missing"] == u64::MAX).then_some(g)
    });
    assert_eq!(info["missing"], u64::MAX, "{info}");
    // Everything still answers.
    cli(&alice, &["status"]).unwrap();
    cli(&alice, &["messages", "g"]).unwrap();
}

/// Item 2: sealed first-contact requests in the mailbox go through the
/// same limits as strangers online (per requester and in total), and a
/// flood of them never locks online strangers out.
#[test]
fn a_mailbox_flood_obeys_the_request_limits_and_leaves_room_online() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let (s1_id, s1, _s1) = server(
        tmp.path(),
        &devdir,
        "s1",
        &["--rate-burst", "1000", "--rate-interval-ms", "1"],
    );
    let (bob, bob_addr, _b) = peer(tmp.path(), &devdir, "bob");
    let v = cli(&bob, &["mailbox", "create", &s1_id]).unwrap();
    let identifier = Identifier::parse(v["identifier"].as_str().unwrap()).unwrap();
    let owner = identifier.owner().public_identity();
    let mailbox = identifier.mailbox().unwrap().clone();
    let now = UnixMicros::from_micros(unix_now());
    let request = |from: &Identity, id: u64, text: &str| {
        let mut blob = [0u8; SEALED_BLOB_LEN];
        let first = FirstContact {
            name: "flood",
            id,
            timestamp: now,
            text,
        };
        seal_request(from, &owner, &mailbox, &first, &mut rng(), &mut blob).unwrap();
        blob
    };
    // One requester writes twelve times; then 110 more requesters.
    let chatty = Identity::generate(&mut rng());
    let mut blobs: Vec<_> = (1..=12u64)
        .map(|i| request(&chatty, i, &format!("text {i}")))
        .collect();
    for i in 0..110u64 {
        blobs.push(request(&Identity::generate(&mut rng()), i, "hello"));
    }
    post_all(&devdir, &s1, &blobs);
    let requests = |home: &Path| {
        contacts(home)
            .iter()
            .filter(|c| c["contact"]["state"] == "request")
            .count()
    };
    wait_for("the mailbox's share of requests", PATIENCE, || {
        (requests(&bob) >= cwtch_proto::peer::requests::MAX_MAILBOX_REQUESTS).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3)); // the rest has been read too
    assert_eq!(
        requests(&bob),
        cwtch_proto::peer::requests::MAX_MAILBOX_REQUESTS,
        "the mailbox takes at most its share"
    );
    let chatty_addr = chatty.address().to_string();
    assert_eq!(
        conversation(&bob, &chatty_addr).len(),
        cwtch_proto::peer::requests::MAX_REQUEST_TEXTS as usize,
        "one requester, at most MAX_REQUEST_TEXTS texts"
    );
    // A stranger online is still let in, as a request.
    let stranger = Identity::generate(&mut rng());
    let stranger_addr = stranger.address().to_string();
    let _fake = FakePeer::dial(&devdir, stranger, &bob_addr, PATIENCE)
        .expect("an online stranger is not locked out by a mailbox flood");
    wait_for("the online request", PATIENCE, || {
        contacts(&bob)
            .iter()
            .any(|c| c["contact"]["address"] == stranger_addr.as_str())
            .then_some(())
    });
}

/// Item 6: an invite waits for the user; at most a few per contact.
#[test]
fn invites_wait_for_an_answer_and_are_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let (s1_id, s1, _s1) = server(tmp.path(), &devdir, "s1", &[]);
    let (bob, bob_addr, _b) = peer(tmp.path(), &devdir, "bob");
    let mallory = Identity::generate(&mut rng());
    let mut fake = befriend_fake(&devdir, &bob, &bob_addr, mallory.clone());
    // Mallory invites bob to ten groups, each naming four servers.
    let mut names = Vec::new();
    for i in 0..10u64 {
        let servers = [
            s1,
            Identity::generate(&mut rng()).address(),
            Identity::generate(&mut rng()).address(),
            Identity::generate(&mut rng()).address(),
        ];
        let group = Group::generate(&mut rng(), servers.into_iter().collect());
        let name = format!("spam{i}");
        let invite = Invite::new(&group, &name, mallory.public()).unwrap();
        let mut buf = vec![0u8; cwtch_proto::group::invite::INVITE_MAX_LEN];
        let n = invite.encode(&mut buf).unwrap();
        fake.send(&PeerMessage::GroupInvite {
            id: 100 + i,
            invite: &buf[..n],
        });
        names.push(name);
    }
    fake.pump_until(Duration::from_secs(3), |_| false);
    let invites = wait_for("the invites to arrive", PATIENCE, || {
        let v = cli(&bob, &["group", "invites"]).ok()?;
        let list = v.as_array()?.clone();
        (list.len() >= cwtch_node::peer::invites::MAX_INVITES_PER_CONTACT).then_some(list)
    });
    assert_eq!(
        invites.len(),
        cwtch_node::peer::invites::MAX_INVITES_PER_CONTACT,
        "{invites:?}"
    );
    assert_eq!(
        cli(&bob, &["group", "list"]).unwrap(),
        Value::Array(vec![]),
        "nothing is joined without the user"
    );
    // Accept one, refuse one.
    let first = invites[0]["name"].as_str().unwrap().to_string();
    let second = invites[1]["name"].as_str().unwrap().to_string();
    cli(&bob, &["group", "accept", &first]).unwrap();
    cli(&bob, &["group", "refuse", &second]).unwrap();
    let groups = cli(&bob, &["group", "list"]).unwrap();
    assert_eq!(groups.as_array().unwrap().len(), 1);
    assert_eq!(groups[0]["name"], first.as_str());
    let left = cli(&bob, &["group", "invites"]).unwrap();
    assert_eq!(
        left.as_array().unwrap().len(),
        cwtch_node::peer::invites::MAX_INVITES_PER_CONTACT - 2
    );
    // Blocking the contact drops its invites.
    cli(&bob, &["contact", "block", &mallory.address().to_string()]).unwrap();
    assert_eq!(
        cli(&bob, &["group", "invites"]).unwrap(),
        Value::Array(vec![])
    );
    // And a real contact's invite is accepted the same way.
    let (carol, carol_addr, _c) = peer(tmp.path(), &devdir, "carol");
    cli(&carol, &["contact", "add", &bob_addr]).unwrap();
    cli(&bob, &["contact", "add", &carol_addr]).unwrap();
    cli(&carol, &["group", "create", "friends", "--server", &s1_id]).unwrap();
    cli(&carol, &["group", "invite", "friends", &bob_addr]).unwrap();
    accept_invite(&bob, "friends", PATIENCE);
    assert!(
        cli(&bob, &["group", "list"])
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "friends")
    );
}

/// Item 5: a member's recovery answers are taken only if they answer what
/// was asked, and what a member supplies never counts against the server.
#[test]
fn only_requested_recovery_answers_are_taken_and_none_count_against_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let (s1_id, s1, _s1) = server(tmp.path(), &devdir, "s1", &[]);
    let (bob, bob_addr, _b) = peer(tmp.path(), &devdir, "bob");
    let mallory = Identity::generate(&mut rng());
    let mut fake = befriend_fake(&devdir, &bob, &bob_addr, mallory.clone());
    let group = invite_fake(&bob, &s1_id, &mut fake);
    // Mallory writes 0..=9 but posts only 0 and 2: bob misses her 1.
    let mut chain = Vec::new();
    let mut prev = [0u8; 32];
    for seq in 0..10u64 {
        let (b, h) = text(&group, &mallory, &s1, seq, prev, &format!("m{seq}"), &[]);
        chain.push(b);
        prev = h;
    }
    post_all(&devdir, &s1, &[chain[0], chain[2]]);
    wait_for("bob to see the gap", PATIENCE, || {
        (group_info(&bob)["missing"] == 1).then_some(())
    });
    // Answers under a made-up id are ignored.
    for blob in &chain[3..] {
        fake.send(&PeerMessage::ResendBlob { id: 12345, blob });
    }
    // Bob asks mallory (a member he is linked with) for message 1.
    assert!(fake.pump_until(PATIENCE, |p| !p.resend_requests.is_empty()));
    let (id, wanted) = fake.resend_requests[0].clone();
    let wanted = ResendWanted::decode(&wanted).unwrap();
    let member = group.id().member_id(&mallory.public());
    assert_eq!(
        wanted.ranges(),
        &[MissingRange {
            member,
            first: 1,
            last: 1
        }]
    );
    // Under the right id, messages that were not asked for are refused...
    for blob in &chain[3..] {
        fake.send(&PeerMessage::ResendBlob { id, blob });
    }
    fake.pump_until(Duration::from_secs(3), |_| false);
    assert_eq!(
        texts(&bob, "g"),
        ["m0", "m2"],
        "nothing unrequested is taken"
    );
    // ...and the one asked for is recovered.
    fake.send(&PeerMessage::ResendBlob {
        id,
        blob: &chain[1],
    });
    fake.pump_until(Duration::from_secs(1), |_| false); // sends it
    wait_for("the recovery", PATIENCE, || {
        (texts(&bob, "g").len() == 3).then_some(())
    });
    let shown = cli(&bob, &["messages", "g"]).unwrap();
    assert!(
        shown
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["text"] == "m1" && m["status"] == "recovered")
    );
    // The healthy server lost nothing in bob's eyes, and nothing moved.
    let servers = cli(&bob, &["servers"]).unwrap();
    let entry = servers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == s1.as_str())
        .cloned()
        .unwrap();
    assert_eq!(entry["observed"]["lost"], 0, "{entry}");
    assert_eq!(current_server(&bob), s1.as_str());
    assert_eq!(group_info(&bob)["previous_servers"], Value::Array(vec![]));
}

/// What the recording server keeps: the log, what it withholds, and every
/// fetch: (connection number, after).
#[derive(Default)]
struct Record {
    log: Vec<Vec<u8>>,
    withheld: HashSet<u64>,
    fetches: Vec<(usize, u64)>,
    connections: usize,
}

/// A server that stores honestly, serves everything but the indices it
/// withholds (pages and live pushes), and writes down where every fetch
/// starts.
fn recording_server(identity: Identity, listener: TcpListener, record: Arc<Mutex<Record>>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (identity, record) = (identity.clone(), record.clone());
        std::thread::spawn(move || serve_recording(identity, stream, record));
    }
}

fn serve_recording(identity: Identity, stream: TcpStream, record: Arc<Mutex<Record>>) {
    let mut link = RawLink::respond(stream, identity);
    let conn = {
        let mut r = record.lock().unwrap();
        r.connections += 1;
        r.connections
    };
    let head = record.lock().unwrap().log.len() as u64;
    link.send(&server_wire::hello(1, head, 64));
    let mut post_seq = 0;
    let mut pushed: Option<u64> = None;
    let encode = |r: Reply<'_>| {
        let mut buf = vec![0u8; r.encoded_len()];
        r.encode(&mut buf).unwrap();
        buf
    };
    loop {
        if let Some(after) = pushed {
            let r = record.lock().unwrap();
            let mut last = after;
            for (i, b) in r.log.iter().enumerate().skip(after as usize) {
                let index = i as u64 + 1;
                last = index;
                if !r.withheld.contains(&index) {
                    let blob: &[u8; SEALED_BLOB_LEN] = b.as_slice().try_into().unwrap();
                    link.send(&encode(Reply::Push { index, blob }));
                }
            }
            pushed = Some(last);
        }
        let msg = match link.next(Duration::from_millis(100)) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(_) => return,
        };
        match Request::decode(&msg) {
            Ok(Request::Post { blob, .. }) => {
                let mut r = record.lock().unwrap();
                r.log.push(blob.to_vec());
                let index = r.log.len() as u64;
                link.send(&encode(Reply::Posted {
                    seq: post_seq,
                    index,
                }));
                post_seq += 1;
            }
            Ok(Request::Fetch { after, .. }) => {
                let mut r = record.lock().unwrap();
                r.fetches.push((conn, after));
                let head = r.log.len() as u64;
                for (i, b) in r.log.iter().enumerate().skip(after as usize) {
                    let index = i as u64 + 1;
                    if !r.withheld.contains(&index) {
                        let blob: &[u8; SEALED_BLOB_LEN] = b.as_slice().try_into().unwrap();
                        link.send(&encode(Reply::Entry { index, blob }));
                    }
                }
                link.send(&encode(Reply::PageEnd {
                    next: after.max(head),
                    head,
                }));
            }
            Ok(Request::Subscribe { after }) => {
                link.send(&encode(Reply::Subscribed { after }));
                pushed = Some(after);
            }
            _ => {}
        }
    }
}

/// Item 3: a server that withholds a blob and watches where members read
/// from learns nothing: a gap is recovered from members only, and the only
/// reads are ordinary resyncs from the saved cursor (at most
/// `CURSOR_JITTER` = 64 entries before it), never a rewind to the sender's
/// earlier blob.
#[test]
fn a_recording_server_cannot_find_a_senders_earlier_blob_through_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    std::fs::create_dir_all(&devdir).unwrap();
    let identity = Identity::generate(&mut rng());
    let fake = identity.address();
    let listener = wire::listen_dev(&devdir, &fake);
    let record = Arc::new(Mutex::new(Record::default()));
    {
        let record = record.clone();
        std::thread::spawn(move || recording_server(identity, listener, record));
    }
    let server_id = format!("cwtch-server:{}", fake.as_str());
    let (alice, alice_addr, _a) = peer(tmp.path(), &devdir, "alice");
    let (bob, bob_addr, _b) = peer(tmp.path(), &devdir, "bob");
    cli(&alice, &["contact", "add", &bob_addr]).unwrap();
    cli(&bob, &["contact", "add", &alice_addr]).unwrap();
    cli(&alice, &["group", "create", "g", "--server", &server_id]).unwrap();
    cli(&alice, &["group", "invite", "g", &bob_addr]).unwrap();
    accept_invite(&bob, "g", PATIENCE);
    for h in [&alice, &bob] {
        wait_for("synced", PATIENCE, || {
            (group_info(h)["servers"][0]["connection"]["state"] == "synced").then_some(())
        });
    }
    // Alice's message 0, then 100 blobs of other people, then her 1 (which
    // the server withholds) and her 2.
    cli(&alice, &["group", "send", "g", "a0"]).unwrap();
    wait_for("a0 at bob", PATIENCE, || {
        texts(&bob, "g").contains(&"a0".to_string()).then_some(())
    });
    let earlier = record.lock().unwrap().log.len() as u64; // a0's index
    {
        let mut r = record.lock().unwrap();
        for _ in 0..100 {
            let mut b = vec![0u8; SEALED_BLOB_LEN];
            rand_core::Rng::fill_bytes(&mut rng(), &mut b);
            r.log.push(b);
        }
        let next = r.log.len() as u64 + 1;
        r.withheld.insert(next);
    }
    let before = record.lock().unwrap().fetches.len();
    cli(&alice, &["group", "send", "g", "a1"]).unwrap();
    cli(&alice, &["group", "send", "g", "a2"]).unwrap();
    // Bob sees the gap and recovers a1 from alice.
    wait_for("bob to recover a1 from alice", PATIENCE, || {
        let shown = cli(&bob, &["messages", "g"]).ok()?;
        shown
            .as_array()?
            .iter()
            .any(|m| m["text"] == "a1" && m["status"] == "recovered")
            .then_some(())
    });
    // Recovery kept going long enough to have refetched (grace 4 s).
    std::thread::sleep(Duration::from_secs(8));
    let r = record.lock().unwrap();
    let cursor_floor = earlier + 100 - 64; // an ordinary resync's lowest start
    for &(conn, after) in &r.fetches[before..] {
        assert!(
            after >= cursor_floor,
            "connection {conn} fetched from {after}: within reach of the sender's earlier blob at {earlier}"
        );
    }
    // And alice's own node caught the server: it acknowledged a1, then
    // served past it.
    let servers = cli(&alice, &["servers"]).unwrap();
    let entry = servers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == fake.as_str())
        .cloned()
        .unwrap();
    assert_eq!(entry["observed"]["lost"], 1, "{entry}");
}

/// Starts a daemon on `home` and waits for it to exit: it should refuse at
/// once. Fails the test if it is still running after 30 s.
fn start_once(home: &Path, devdir: &Path, server: bool) -> std::process::Output {
    let mut cmd = std::process::Command::new(support::bin());
    cmd.arg("--home").arg(home);
    if server {
        cmd.arg("server");
    }
    let mut child = cmd
        .args(["run", "--dev-tcp"])
        .arg(devdir)
        .env("CWTCH_PASSWORD", support::PASSWORD)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "a second daemon on {} did not refuse: it runs",
                home.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// Two daemons on one home: the second refuses and the first goes on. A
/// home others can read is refused at every start. The control socket
/// refuses an endless request line.
#[test]
fn one_daemon_per_private_home_and_bounded_control_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let (alice, _alice_addr, _a) = peer(tmp.path(), &devdir, "alice");
    let second = start_once(&alice, &devdir, false);
    assert!(!second.status.success());
    let why = String::from_utf8_lossy(&second.stderr);
    assert!(
        why.contains("another cwtch-node daemon is running"),
        "{why}"
    );
    cli(&alice, &["status"]).expect("the first daemon still answers");

    // The same for a server.
    let s_home = tmp.path().join("s");
    cli(&s_home, &["server", "init"]).unwrap();
    let _s = Daemon::start(&s_home, true, &dev(&devdir));
    wait_for("the server's lock", PATIENCE, || {
        s_home.join("lock").exists().then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let second = start_once(&s_home, &devdir, true);
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another cwtch-node daemon is running")
    );

    // A request line longer than the limit gets a clear error.
    {
        use std::io::{BufRead, Write};
        let mut sock = std::os::unix::net::UnixStream::connect(alice.join("control.sock")).unwrap();
        // A daemon that waited for the rest of the line would hang this
        // test: bound the wait so that it fails instead.
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        sock.set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let long = vec![b'x'; cwtch_node::control::MAX_REQUEST_LEN * 3];
        let _ = sock.write_all(&long);
        let mut answer = String::new();
        std::io::BufReader::new(sock)
            .read_line(&mut answer)
            .unwrap();
        assert!(answer.contains("longer than"), "{answer}");
    }
    cli(&alice, &["status"]).expect("the daemon still answers");

    // A home others can read is refused at start, and left as it is.
    let (bob, _bob_addr, b) = peer(tmp.path(), &devdir, "bob");
    drop(b);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bob, std::fs::Permissions::from_mode(0o755)).unwrap();
    let refused = start_once(&bob, &devdir, false);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("chmod 700"));
    assert_eq!(
        std::fs::metadata(&bob).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // The socket of a running daemon was private from the moment it
    // existed: the daemon's umask makes it so.
    let mode = std::fs::metadata(alice.join("control.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}
