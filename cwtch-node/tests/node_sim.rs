//! The peer's logic in memory: real cores over real profiles, a server
//! session per connection, every link simulated, all on a virtual clock
//! (`sim/mod.rs`). No sockets, no tor, no daemon: minutes of protocol time
//! run in milliseconds, and every run is the same.

mod sim;

use cwtch_node::control::api::{ErrorCode, Event, Request};
use cwtch_node::store;
use cwtch_proto::group::control::MOVE_NOTICE_MAX_LEN;
use cwtch_proto::group::message::MAX_SEQ;
use cwtch_proto::group::{
    Group, GroupSecret, MessageHash, MessageKind, MoveNotice, SEALED_BLOB_LEN, SeenEntry,
    SenderChain, ServerList,
};
use cwtch_proto::server::{BlobStore, ServerConfig};
use cwtch_proto::{Duration, Identity, OnionAddress, UnixMicros};
use rand_core::SeedableRng;
use serde_json::Value;
use sim::Sim;

const MINUTE: Duration = Duration::from_secs(60);

fn mins(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

fn add(w: &mut Sim, who: usize, to: usize, message: Option<&str>) {
    let address = w.peers[to].address.clone();
    w.ok(
        who,
        Request::ContactAdd {
            address,
            message: message.map(str::to_string),
            nickname: None,
        },
    );
}

fn send(w: &mut Sim, who: usize, to: usize, text: &str) {
    let to = w.peers[to].address.clone();
    w.ok(
        who,
        Request::Send {
            to,
            text: text.into(),
        },
    );
}

fn post(w: &mut Sim, who: usize, group: &str, text: &str) {
    w.ok(
        who,
        Request::GroupSend {
            group: group.into(),
            text: text.into(),
        },
    );
}

fn group_view(w: &mut Sim, who: usize) -> Value {
    w.ok(who, Request::GroupList)[0].clone()
}

/// The connection to the first server of `who`'s first group: its state
/// and last error.
fn server_connection(w: &mut Sim, who: usize) -> Value {
    group_view(w, who)["servers"][0]["connection"].clone()
}

/// A group `friends` on server `s`, created by `a`, joined by `b`.
fn group_of_two(w: &mut Sim, s: usize, a: usize, b: usize) -> String {
    w.befriend(a, b);
    let server = w.servers[s].id();
    let created = w.ok(
        a,
        Request::GroupCreate {
            name: "friends".into(),
            server,
        },
    );
    let gid = created["id"].as_str().unwrap().to_string();
    let b_addr = w.peers[b].address.clone();
    w.ok(
        a,
        Request::GroupInvite {
            group: "friends".into(),
            contact: b_addr,
        },
    );
    w.run_until_true("the invite to arrive", MINUTE, |w| {
        !w.events_of(b, |e| matches!(e, Event::GroupInvite { .. }))
            .is_empty()
    });
    w.ok(
        b,
        Request::GroupAccept {
            group: "friends".into(),
        },
    );
    w.run_until_true("both to sync", MINUTE, |w| {
        [a, b]
            .iter()
            .all(|&p| group_view(w, p)["servers"][0]["connection"]["state"] == "synced")
    });
    gid
}

#[test]
fn a_contact_request_a_message_and_its_ack() {
    let mut w = Sim::new();
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    let (alice, bob) = (w.peers[a].address.clone(), w.peers[b].address.clone());
    add(&mut w, a, b, Some("hello bob"));
    w.run_until_true("the request to reach bob", MINUTE, |w| {
        !w.events_of(b, |e| matches!(e, Event::ContactRequest { .. }))
            .is_empty()
    });
    // Bob holds the request and its text; he has said nothing yet.
    assert_eq!(
        w.texts(b, &alice),
        [("hello bob".into(), "received".into())]
    );
    let list = w.ok(b, Request::ContactList);
    assert_eq!(list[0]["contact"]["state"], "request");
    assert_eq!(list[0]["contact"]["name"], "alice");
    assert_eq!(list[0]["unread"], 1);
    // Stored is acknowledged: alice sees it delivered.
    w.run_until_true("alice to see it delivered", MINUTE, |w| {
        w.texts(a, &bob) == [("hello bob".into(), "delivered".into())]
    });
    assert!(
        w.events_of(
            a,
            |e| matches!(e, Event::Message { message } if message["status"] == "delivered")
        )
        .len()
            == 1,
        "one event for the change of status"
    );
    // Alice does not learn bob's name before he accepts.
    assert_eq!(w.ok(a, Request::ContactList)[0]["contact"]["name"], "");

    w.ok(
        b,
        Request::ContactAccept {
            // A request is named by its address, never by the name it
            // announces (a stranger could announce any).
            contact: w.peers[a].address.clone(),
        },
    );
    send(&mut w, b, a, "hi alice");
    w.run_until_true("the reply to be delivered", MINUTE, |w| {
        w.texts(b, &alice).last() == Some(&("hi alice".into(), "delivered".into()))
    });
    assert_eq!(w.texts(a, &bob)[1], ("hi alice".into(), "received".into()));
    assert_eq!(w.ok(a, Request::ContactList)[0]["contact"]["name"], "bob");
    // Read: the unread count goes to zero, also after a restart.
    assert_eq!(w.ok(a, Request::ContactList)[0]["unread"], 1);
    w.ok(
        a,
        Request::ConversationRead {
            conversation: "bob".into(),
        },
    );
    w.stop(a);
    w.start(a);
    assert_eq!(w.ok(a, Request::ContactList)[0]["unread"], 0);

    // A new link resends nothing twice.
    w.run_for(MINUTE);
    w.stop(b);
    w.start(b);
    w.run_for(mins(5));
    assert_eq!(w.texts(a, &bob).len(), 2);
    assert_eq!(w.texts(b, &alice).len(), 2);
}

#[test]
fn messages_to_an_offline_contact_wait_say_why_and_arrive_in_order() {
    let mut w = Sim::new();
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    w.befriend(a, b);
    let bob = w.peers[b].address.clone();
    w.stop(b);
    for i in 0..5 {
        send(&mut w, a, b, &format!("m{i}"));
    }
    w.run_for(MINUTE);
    let listed = w.messages(a, &bob);
    assert!(listed.iter().all(|m| m["status"] == "pending"));
    let note = listed[0]["note"].as_str().unwrap();
    assert!(note.contains("not reachable"), "{note}");
    w.start(b);
    // Alice's dials back off; she reaches bob within the backoff's cap.
    w.run_until_true("all delivered", mins(15), |w| {
        w.messages(a, &bob)
            .iter()
            .all(|m| m["status"] == "delivered" && m.get("note").is_none())
    });
    let alice = w.peers[a].address.clone();
    let got: Vec<String> = w.texts(b, &alice).into_iter().map(|(t, _)| t).collect();
    assert_eq!(got, ["m0", "m1", "m2", "m3", "m4"]);
}

/// A backlog longer than a link's command queue goes out as the contact
/// acknowledges it, never all at once (the sim checks every burst against
/// the daemon's queue), and all of it arrives, in order.
#[test]
fn a_long_backlog_goes_out_in_a_window_and_all_arrives() {
    let mut w = Sim::new();
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    w.befriend(a, b);
    let bob = w.peers[b].address.clone();
    w.stop(b);
    let n = 300;
    for i in 0..n {
        send(&mut w, a, b, &format!("m{i}"));
    }
    w.start(b);
    w.run_until_true("all delivered", mins(15), |w| {
        w.messages(a, &bob)
            .iter()
            .all(|m| m["status"] == "delivered")
    });
    let alice = w.peers[a].address.clone();
    let got: Vec<String> = w.texts(b, &alice).into_iter().map(|(t, _)| t).collect();
    let want: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
}

/// A contact that holds us as a request keeps 10 of our texts and drops
/// the rest unacknowledged; when it accepts us on the same link, the rest
/// still arrive (its greeting starts our send window over), and new texts
/// go out at once.
#[test]
fn texts_dropped_while_we_were_a_request_arrive_once_accepted() {
    let mut w = Sim::new();
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    let alice = w.peers[a].address.clone();
    let bob = w.peers[b].address.clone();
    w.stop(b);
    add(&mut w, a, b, None);
    let n = 80;
    for i in 0..n {
        send(&mut w, a, b, &format!("m{i}"));
    }
    w.start(b);
    w.run_until_true("bob to hold the request", mins(15), |w| {
        !w.events_of(b, |e| matches!(e, Event::ContactRequest { .. }))
            .is_empty()
    });
    w.run_for(MINUTE);
    let kept = w.texts(b, &alice).len();
    assert!(kept < n, "a request keeps only some: {kept}");
    w.ok(
        b,
        Request::ContactAccept {
            contact: alice.clone(),
        },
    );
    w.run_until_true("all delivered", mins(5), |w| {
        w.messages(a, &bob)
            .iter()
            .all(|m| m["status"] == "delivered")
    });
    send(&mut w, a, b, "after");
    w.run_for(Duration::from_secs(5));
    let got: Vec<String> = w.texts(b, &alice).into_iter().map(|(t, _)| t).collect();
    let mut want: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    want.push("after".into());
    assert_eq!(got, want);
}

/// An invite queued for an offline contact, then a restart, then a text:
/// the text gets a number of its own (an invite's number is kept only with
/// the invite), so the send window sends both on the next link.
#[test]
fn a_text_after_an_invite_and_a_restart_is_not_taken_for_the_invite() {
    let mut w = Sim::new();
    let s = w.add_server(ServerConfig::default());
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    w.befriend(a, b);
    let server = w.servers[s].id();
    w.ok(
        a,
        Request::GroupCreate {
            name: "friends".into(),
            server,
        },
    );
    w.stop(b);
    let bob = w.peers[b].address.clone();
    w.ok(
        a,
        Request::GroupInvite {
            group: "friends".into(),
            contact: bob.clone(),
        },
    );
    w.stop(a);
    w.start(a);
    send(&mut w, a, b, "after the invite");
    w.start(b);
    w.run_until_true("the text and the invite to arrive", mins(15), |w| {
        !w.events_of(b, |e| matches!(e, Event::GroupInvite { .. }))
            .is_empty()
            && w.messages(a, &bob)
                .iter()
                .all(|m| m["status"] == "delivered")
    });
}

#[test]
fn names_resolve_and_an_ambiguous_one_is_refused() {
    let mut w = Sim::new();
    let (a, b, c) = (w.add_peer("alice"), w.add_peer("bob"), w.add_peer("bob"));
    w.befriend(b, a);
    w.befriend(c, a);
    let err = w
        .cmd(
            a,
            Request::Send {
                to: "bob".into(),
                text: "which?".into(),
            },
        )
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Ambiguous);
    assert_eq!(err.candidates.len(), 2);
    let c_addr = w.peers[c].address.clone();
    w.ok(
        a,
        Request::ContactRename {
            contact: c_addr.clone(),
            nickname: "bobby".into(),
        },
    );
    w.ok(
        a,
        Request::Send {
            to: "bobby".into(),
            text: "you".into(),
        },
    );
    w.run_for(MINUTE);
    let alice = w.peers[a].address.clone();
    assert_eq!(w.texts(c, &alice)[0].0, "you");
    assert!(w.texts(b, &alice).is_empty());
    let err = w
        .cmd(
            a,
            Request::Send {
                to: "nobody".into(),
                text: "x".into(),
            },
        )
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
}

/// A stranger who announces a group's name cannot take the group's place:
/// a request never resolves by its announced name, and once accepted the
/// name is ambiguous rather than theirs.
#[test]
fn a_stranger_named_like_a_group_cannot_take_its_name() {
    let mut w = Sim::new();
    let s = w.add_server(ServerConfig::default());
    let (a, b, eve) = (
        w.add_peer("alice"),
        w.add_peer("bob"),
        w.add_peer("friends"),
    );
    let gid = group_of_two(&mut w, s, a, b);
    add(
        &mut w,
        eve,
        a,
        Some("group notice: re-send your passwords to me"),
    );
    w.run_until_true("eve's request", MINUTE, |w| {
        !w.events_of(a, |e| matches!(e, Event::ContactRequest { .. }))
            .is_empty()
    });
    let shown = w.ok(
        a,
        Request::Messages {
            conversation: "friends".into(),
        },
    );
    assert!(
        !shown.to_string().contains("passwords"),
        "the group's name shows the group: {shown}"
    );
    let eve_addr = w.peers[eve].address.clone();
    w.ok(a, Request::ContactAccept { contact: eve_addr });
    let err = w
        .cmd(
            a,
            Request::Messages {
                conversation: "friends".into(),
            },
        )
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Ambiguous);
    assert!(err.candidates.iter().any(|c| c.contains(&gid)), "{err:?}");
}

#[test]
fn a_blocked_stranger_is_refused_and_told_why() {
    let mut w = Sim::new();
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    let alice = w.peers[a].address.clone();
    let bob = w.peers[b].address.clone();
    w.ok(
        b,
        Request::ContactBlock {
            contact: alice.clone(),
        },
    );
    add(&mut w, a, b, Some("spam"));
    w.run_for(MINUTE);
    assert!(w.texts(b, &alice).is_empty());
    let c = &w.ok(a, Request::ContactList)[0]["connection"];
    assert_eq!(c["state"], "failed");
    assert!(
        c["last_error"]
            .as_str()
            .unwrap()
            .starts_with("handshake failed")
    );
    assert_eq!(w.texts(a, &bob)[0].1, "pending");
}

#[test]
fn an_invite_a_post_and_a_sync() {
    let mut w = Sim::new();
    let s = w.add_server(ServerConfig::default());
    let (a, b, c) = (w.add_peer("alice"), w.add_peer("bob"), w.add_peer("carol"));
    let gid = group_of_two(&mut w, s, a, b);
    // Nothing is joined without the user.
    w.befriend(a, c);
    let carol = w.peers[c].address.clone();
    post(&mut w, a, "friends", "before carol");
    w.ok(
        a,
        Request::GroupInvite {
            group: "friends".into(),
            contact: carol,
        },
    );
    w.run_until_true("carol's invite", MINUTE, |w| {
        !w.events_of(c, |e| matches!(e, Event::GroupInvite { .. }))
            .is_empty()
    });
    assert_eq!(w.ok(c, Request::GroupList), Value::Array(vec![]));
    assert_eq!(w.ok(c, Request::GroupInvites).as_array().unwrap().len(), 1);
    w.ok(c, Request::GroupAccept { group: gid.clone() });
    post(&mut w, b, "friends", "from bob");
    // Carol, joining late, syncs the earlier post from the server.
    w.run_until_true("everyone to hold both", mins(2), |w| {
        [a, b, c].iter().all(|&p| w.texts(p, &gid).len() == 2)
    });
    let history =
        |w: &mut Sim, p| -> Vec<String> { w.texts(p, &gid).into_iter().map(|(t, _)| t).collect() };
    let h = history(&mut w, a);
    assert_eq!(h, ["before carol", "from bob"]);
    assert_eq!(history(&mut w, b), h);
    assert_eq!(history(&mut w, c), h);
    // Our own posts turn delivered once the server holds them durably.
    w.run_until_true("bob's post delivered", MINUTE, |w| {
        w.texts(b, &gid)[1].1 == "delivered"
    });

    // Bob away while alice posts: he catches up, in order, without gaps.
    w.stop(b);
    for i in 0..4 {
        post(&mut w, a, "friends", &format!("while away {i}"));
    }
    w.run_for(MINUTE);
    w.start(b);
    w.run_until_true("bob to catch up", mins(2), |w| w.texts(b, &gid).len() == 6);
    assert_eq!(history(&mut w, b), history(&mut w, a));
    assert_eq!(group_view(&mut w, b)["missing"], 0);
    assert!(
        w.events_of(b, |e| matches!(e, Event::Gap { .. }))
            .is_empty()
    );
}

/// `a` posts "one" and "two" to the group; the server gives bob (`b`)
/// the first and withholds the second, as a cheating server would.
fn withhold_the_second_post(w: &mut Sim, s: usize, a: usize, b: usize, gid: &str) {
    post(w, a, "friends", "one");
    w.run_until_true("one delivered", MINUTE, |w| {
        w.texts(a, gid)[0].1 == "delivered"
    });
    let withheld = w.servers[s].store.last + 1;
    w.servers[s].withhold = Some(Box::new(move |peer, index| peer == b && index == withheld));
    post(w, a, "friends", "two");
    w.run_until_true("two delivered", MINUTE, |w| {
        w.texts(a, gid)[1].1 == "delivered"
    });
    assert_eq!(
        w.servers[s].store.last, withheld,
        "nothing else was posted between"
    );
}

#[test]
fn a_gap_is_found_and_recovered_from_a_member() {
    let mut w = Sim::new();
    let s = w.add_server(ServerConfig::default());
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    let gid = group_of_two(&mut w, s, a, b);
    withhold_the_second_post(&mut w, s, a, b, &gid);
    post(&mut w, a, "friends", "three");
    w.run_until_true("bob to find the gap", MINUTE, |w| {
        !w.events_of(b, |e| matches!(e, Event::Gap { closed: false, .. }))
            .is_empty()
    });
    // Recovered from alice over the peer link, never from the server.
    w.run_until_true("the gap to close", mins(2), |w| {
        w.texts(b, &gid)
            .iter()
            .any(|(t, s)| t == "two" && s == "recovered")
    });
    let texts: Vec<String> = w.texts(b, &gid).into_iter().map(|(t, _)| t).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    assert_eq!(group_view(&mut w, b)["missing"], 0);
    assert!(
        !w.events_of(b, |e| matches!(e, Event::Gap { closed: true, .. }))
            .is_empty()
    );
}

/// A member keeps its blobs in their kept form, a tenth of a blob, and
/// still answers recovery with the very blob; a blob an older profile kept
/// whole is given as it is.
#[test]
fn kept_blobs_are_short_and_whole_ones_from_older_profiles_still_answer() {
    use cwtch_node::profile_store::Table;
    use cwtch_node::store::records::KeptBlob;
    let mut w = Sim::new();
    let s = w.add_server(ServerConfig::default());
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    let gid = group_of_two(&mut w, s, a, b);
    withhold_the_second_post(&mut w, s, a, b, &gid);
    w.stop(a);
    let profile = w.open_profile(a);
    let kept = profile
        .scan::<KeptBlob>(Table::Blobs, b"keep:")
        .expect("kept blobs");
    assert_eq!(kept.len(), 2, "one per message");
    for (key, k) in &kept {
        // "one" and "two": the nonce, the header, no seen entry or one, 3
        // bytes of text, the server key and signature.
        assert!(
            (240..=264).contains(&k.blob.len()),
            "{} bytes kept",
            k.blob.len()
        );
        // As an older profile would have it: the whole blob, found on the
        // server by its nonce.
        let whole = w.servers[s]
            .store
            .entries
            .iter()
            .find(|(_, blob)| blob[..24] == k.blob[..24])
            .map(|(_, blob)| blob.to_vec())
            .expect("the blob on the server");
        let mut legacy = k.clone();
        legacy.blob = whole;
        profile.put(Table::Blobs, key, &legacy).expect("put");
    }
    drop(profile);
    w.start(a);
    post(&mut w, a, "friends", "three");
    w.run_until_true("the gap to close", mins(3), |w| {
        w.texts(b, &gid)
            .iter()
            .any(|(t, s)| t == "two" && s == "recovered")
    });
    let texts: Vec<String> = w.texts(b, &gid).into_iter().map(|(t, _)| t).collect();
    assert_eq!(texts, ["one", "two", "three"]);
}

#[test]
fn a_group_moves_and_its_members_follow() {
    let mut w = Sim::new();
    let (s1, s2) = (
        w.add_server(ServerConfig::default()),
        w.add_server(ServerConfig::default()),
    );
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    let gid = group_of_two(&mut w, s1, a, b);
    post(&mut w, a, "friends", "on the first");
    let to = w.servers[s2].id();
    w.ok(
        a,
        Request::GroupMove {
            group: "friends".into(),
            server: to,
        },
    );
    let new = w.servers[s2].address.to_string();
    w.run_until_true("bob to follow", mins(2), |w| {
        group_view(w, b)["servers"][0]["server"]
            .as_str()
            .is_some_and(|s| s.contains(&new))
    });
    assert!(
        !w.events_of(b, |e| matches!(e, Event::GroupMoved { .. }))
            .is_empty()
    );
    let old = w.servers[s1].address.to_string();
    let previous = group_view(&mut w, b)["previous_servers"].clone();
    assert!(previous.to_string().contains(&old), "{previous}");
    let before = w.servers[s2].store.last;
    post(&mut w, b, "friends", "on the second");
    w.run_until_true("alice to read it", mins(2), |w| {
        w.texts(a, &gid).iter().any(|(t, _)| t == "on the second")
    });
    assert!(
        w.servers[s2].store.last > before,
        "posted to the new server"
    );
    assert_eq!(group_view(&mut w, a)["missing"], 0);
    assert_eq!(group_view(&mut w, b)["missing"], 0);
}

/// The group as a member holds it: its secret and servers, from the
/// profile (what a lying member has too).
fn steal_group(w: &Sim, who: usize) -> (Group, OnionAddress) {
    let (raw, _, _) = store::open_profile(&w.peer_home(who), b"sim").unwrap();
    let g = store::groups_of(&raw).unwrap().remove(0);
    let mut s = [0u8; 32];
    for (i, b) in s.iter_mut().enumerate() {
        *b = u8::from_str_radix(&g.secret[2 * i..2 * i + 2], 16).unwrap();
    }
    let mut servers = ServerList::new();
    for srv in &g.servers {
        let addr = srv.strip_prefix("cwtch-server:").unwrap_or(srv);
        servers
            .push(OnionAddress::parse(addr.split('?').next().unwrap()).unwrap())
            .unwrap();
    }
    let server = servers[0];
    (
        Group::from_secret(GroupSecret::from_bytes(&s), servers),
        server,
    )
}

#[allow(clippy::too_many_arguments)]
fn seal(
    group: &Group,
    sender: &Identity,
    server: &OnionAddress,
    seq: u64,
    prev: [u8; 32],
    kind: MessageKind,
    body: &[u8],
    at: UnixMicros,
    seen: &[SeenEntry],
) -> ([u8; SEALED_BLOB_LEN], [u8; 32]) {
    let msg = SenderChain::resume(seq, MessageHash(prev)).next_message(kind, body, at, seen);
    let mut out = [0u8; SEALED_BLOB_LEN];
    let mut rng = chacha20::ChaCha20Rng::from_seed([seq as u8; 32]);
    let sealed = group
        .keys()
        .seal(sender, server, &msg, &mut rng, &mut out)
        .unwrap();
    (out, sealed.hash.0)
}

#[test]
fn a_lying_member_cannot_move_the_clock_pin_the_group_or_flood_the_gaps() {
    let mut w = Sim::new();
    let (s1, s2) = (
        w.add_server(ServerConfig::default()),
        w.add_server(ServerConfig::default()),
    );
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    let gid = group_of_two(&mut w, s1, a, b);
    post(&mut w, a, "friends", "alice 0");
    w.run_until_true("posted", MINUTE, |w| w.texts(b, &gid).len() == 1);
    let (group, server) = steal_group(&w, b);
    let mallory = Identity::from_seed(&[0x66; 32]);
    let now = w.unix;
    let append = |w: &mut Sim, blob: &[u8; SEALED_BLOB_LEN]| {
        w.servers[s1].store.append(blob).unwrap();
    };

    // 1. A message dated far in the future is shown at most the clock skew
    // ahead of ours.
    let (m0, h0) = seal(
        &group,
        &mallory,
        &server,
        0,
        [0; 32],
        MessageKind::TEXT,
        b"from the future",
        UnixMicros::from_micros(u64::MAX / 2),
        &[],
    );
    append(&mut w, &m0);
    w.run_until_true("the message", MINUTE, |w| w.texts(a, &gid).len() == 2);
    let shown = w.messages(a, &gid)[1]["sent_at"].as_u64().unwrap();
    let limit = (w.unix.as_micros() / 1000) + 10 * 60 * 1000;
    assert!(shown <= limit, "{shown} > {limit}");

    // 2. A move notice dated near 2^64, to mallory's server, pins nothing.
    let elsewhere = w.servers[s2].address;
    let mut buf = [0u8; MOVE_NOTICE_MAX_LEN];
    let notice = MoveNotice::new(&[elsewhere])
        .unwrap()
        .encode(&mut buf)
        .unwrap()
        .to_vec();
    let (m1, h1) = seal(
        &group,
        &mallory,
        &server,
        1,
        h0,
        MessageKind::MOVE,
        &notice,
        UnixMicros::from_micros(u64::MAX - 1),
        &[],
    );
    append(&mut w, &m1);
    w.run_for(MINUTE);
    for p in [a, b] {
        let servers = group_view(&mut w, p)["servers"].to_string();
        assert!(
            servers.contains(server.as_str()) && !servers.contains(elsewhere.as_str()),
            "{servers}"
        );
    }

    // 3. A seen summary claiming alice sent 2^48 messages hides nothing and
    // is named; a sybil jumping to the last sequence number saturates the
    // count, never overflows it.
    let alice_member = group.id().member_id(&w.peers[a].identity.public());
    let lie = [SeenEntry {
        member: alice_member,
        seq: MAX_SEQ,
    }];
    let (m2, _) = seal(
        &group,
        &mallory,
        &server,
        2,
        h1,
        MessageKind::TEXT,
        b"nothing to see",
        now,
        &lie,
    );
    append(&mut w, &m2);
    w.run_until_true("the liar named", MINUTE, |w| {
        group_view(w, b)["gaps"]
            .to_string()
            .contains("claims that do not add up")
    });
    assert_eq!(group_view(&mut w, b)["missing"], 0, "the lie hid nothing");
    let sybil = Identity::from_seed(&[0x67; 32]);
    let (b0, g0) = seal(
        &group,
        &sybil,
        &server,
        0,
        [0; 32],
        MessageKind::TEXT,
        b"first",
        now,
        &[],
    );
    let (b1, _) = seal(
        &group,
        &sybil,
        &server,
        MAX_SEQ,
        g0,
        MessageKind::TEXT,
        b"last",
        now,
        &[],
    );
    append(&mut w, &b0);
    append(&mut w, &b1);
    w.run_for(MINUTE);
    let missing = group_view(&mut w, b)["missing"].as_u64().unwrap();
    assert!(missing >= 1, "the jump is a gap");
    // Everything still answers, and time still moves the world.
    w.ok(b, Request::Status);
    w.run_for(mins(10));
    w.ok(
        b,
        Request::Messages {
            conversation: gid.clone(),
        },
    );
}

#[test]
fn a_first_contact_waits_in_the_mailbox_and_is_taken_once() {
    let mut w = Sim::new();
    let s = w.add_server(ServerConfig::default());
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    let server = w.servers[s].id();
    let id = w.ok(
        b,
        Request::MailboxCreate {
            server,
            revoke_old: false,
        },
    );
    let identifier = id["identifier"].as_str().unwrap().to_string();
    assert!(
        identifier.contains(w.servers[s].address.as_str()),
        "{identifier}"
    );
    w.run_for(MINUTE);
    w.stop(b);
    w.ok(
        a,
        Request::ContactAdd {
            address: identifier,
            message: Some("found you".into()),
            nickname: None,
        },
    );
    w.run_until_true("the request posted", mins(2), |w| {
        w.servers[s].store.last >= 1
    });
    // The server replays the sealed request: it is taken once.
    let blob = *w.servers[s].store.entries.last().unwrap().1;
    w.servers[s].store.append(&blob).unwrap();
    w.start(b);
    let alice = w.peers[a].address.clone();
    w.run_until_true("bob reads his mailbox", mins(2), |w| {
        !w.texts(b, &alice).is_empty()
    });
    w.run_for(MINUTE);
    assert_eq!(
        w.texts(b, &alice),
        [("found you".into(), "received".into())]
    );
    let list = w.ok(b, Request::ContactList);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["contact"]["state"], "request");
    // Blocked: a later request from alice is dropped.
    w.ok(
        b,
        Request::ContactBlock {
            contact: alice.clone(),
        },
    );
    w.servers[s].store.append(&blob).unwrap();
    w.run_for(MINUTE);
    assert_eq!(w.texts(b, &alice).len(), 1);
}

#[test]
fn the_event_stream_tells_connections_and_contact_changes() {
    let mut w = Sim::new();
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    w.befriend(a, b);
    let bob = w.peers[b].address.clone();
    let states: Vec<String> = w
        .events_of(
            a,
            |e| matches!(e, Event::Connection { kind, .. } if kind == "contact"),
        )
        .into_iter()
        .filter_map(|e| match e {
            Event::Connection { address, state, .. } if address == bob => Some(state),
            _ => None,
        })
        .collect();
    assert!(states.contains(&"authenticated".to_string()), "{states:?}");
    w.stop(b);
    w.run_for(Duration::from_secs(1));
    let down = w.events_of(a, |e| matches!(e, Event::Connection { state, reason, .. } if state != "authenticated" && reason.is_some()));
    assert!(!down.is_empty(), "the link going down is told, with why");
    w.ok(
        a,
        Request::ContactRename {
            contact: bob.clone(),
            nickname: "bobby".into(),
        },
    );
    w.run_for(Duration::from_secs(1));
    assert!(!w.events_of(a, |e| matches!(e, Event::ContactChanged { contact, .. } if contact["contact"]["nickname"] == "bobby")).is_empty());
}

#[test]
fn a_rotated_mailbox_is_read_for_a_while_and_a_revoked_one_never() {
    let mut w = Sim::new();
    let (s1, s2) = (
        w.add_server(ServerConfig::default()),
        w.add_server(ServerConfig::default()),
    );
    let (a, b, c) = (w.add_peer("alice"), w.add_peer("bob"), w.add_peer("carol"));
    let first = w.servers[s1].id();
    let old = w.ok(
        b,
        Request::MailboxCreate {
            server: first,
            revoke_old: false,
        },
    )["identifier"]
        .as_str()
        .unwrap()
        .to_string();
    let second = w.servers[s2].id();
    let rotated = w.ok(
        b,
        Request::MailboxCreate {
            server: second,
            revoke_old: false,
        },
    );
    assert!(
        rotated["retired_mailboxes"]
            .to_string()
            .contains(w.servers[s1].address.as_str())
    );
    w.run_for(MINUTE);
    // The old identifier still reaches bob (the grace period).
    w.stop(b);
    w.ok(
        a,
        Request::ContactAdd {
            address: old.clone(),
            message: Some("old way".into()),
            nickname: None,
        },
    );
    let alice = w.peers[a].address.clone();
    w.run_for(MINUTE);
    w.stop(a);
    w.start(b);
    w.run_until_true("the old mailbox read", mins(2), |w| {
        !w.texts(b, &alice).is_empty()
    });
    // Revoked: the earlier identifiers reach nobody, also after a restart.
    let third = w.servers[s2].id();
    let revoked = w.ok(
        b,
        Request::MailboxCreate {
            server: third,
            revoke_old: true,
        },
    );
    assert_eq!(revoked["retired_mailboxes"], serde_json::json!([]));
    w.stop(b);
    w.ok(
        c,
        Request::ContactAdd {
            address: old,
            message: Some("too late".into()),
            nickname: None,
        },
    );
    w.run_for(mins(2));
    let posted = w.servers[s1].store.last;
    assert!(posted >= 2, "carol posted to the old mailbox");
    // Carol away: only her sealed request could reach bob.
    w.stop(c);
    w.start(b);
    w.run_for(mins(3));
    let carol = w.peers[c].address.clone();
    assert!(
        w.texts(b, &carol).is_empty(),
        "a revoked mailbox is not read"
    );
}

#[test]
fn a_post_refused_for_good_is_not_sent_again_on_that_connection() {
    let mut w = Sim::new();
    let s = w.add_server(ServerConfig::default());
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    let gid = group_of_two(&mut w, s, a, b);
    let before = w.servers[s].posts;
    // The store fails the next append: that post is refused for good.
    w.servers[s].store.fail_next = 1;
    for text in ["lost for now", "two", "three", "four"] {
        post(&mut w, a, "friends", text);
    }
    w.run_until_true("the others stored", MINUTE, |w| {
        w.texts(a, &gid)
            .iter()
            .filter(|(_, s)| s == "delivered")
            .count()
            == 3
    });
    w.run_for(MINUTE);
    assert_eq!(
        w.servers[s].posts - before,
        4,
        "each post sent once on this connection"
    );
    assert_eq!(
        w.texts(a, &gid)[0],
        ("lost for now".into(), "pending".into())
    );
    // The next connection tries it again, and it goes through.
    w.set_server_online(s, false);
    w.set_server_online(s, true);
    w.run_until_true("the refused post stored", mins(10), |w| {
        w.texts(a, &gid).iter().all(|(_, s)| s == "delivered")
    });
    w.run_until_true("bob reads it", MINUTE, |w| w.texts(b, &gid).len() == 4);
}

/// A server that keeps its connections up and answers nothing but its
/// hello (it black-holes posts and fetches) is given up on once a request
/// has waited the client's answer timeout: the connection is closed and
/// counts as a failure of the server, and the post goes out again once a
/// connection is answered.
#[test]
fn a_server_that_answers_nothing_is_given_up_on_and_the_post_goes_again() {
    let mut w = Sim::new();
    let s = w.add_server(ServerConfig::default());
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    let gid = group_of_two(&mut w, s, a, b);
    let connection = |w: &mut Sim| server_connection(w, a);
    w.servers[s].silent = true;
    let before = w.servers[s].posts;
    let sent = w.now().mono;
    post(&mut w, a, "friends", "into the void");
    w.run_for(Duration::from_secs(59));
    assert_eq!(
        w.servers[s].posts,
        before + 1,
        "the post reached the server"
    );
    assert_eq!(
        connection(&mut w)["state"],
        "synced",
        "a minute is not over: {}",
        connection(&mut w)
    );
    w.run_until_true("the connection given up on", MINUTE, |w| {
        connection(w)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("did not answer a request (Post) in 60 s"))
    });
    let waited = w.now().mono.saturating_duration_since(sent);
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(62),
        "given up after {} ms",
        waited.as_millis()
    );
    assert_ne!(connection(&mut w)["state"], "synced");
    assert_eq!(
        w.texts(a, &gid)[0],
        ("into the void".into(), "pending".into())
    );
    // Reconnected, it says hello and answers nothing again: given up on
    // again.
    w.run_until_true("a new connection", mins(5), |w| {
        connection(w)["state"] == "authenticated"
    });
    let again = w.now().mono;
    w.run_until_true("the new connection given up on", mins(5), |w| {
        connection(w)["state"] == "failed"
    });
    let waited = w.now().mono.saturating_duration_since(again);
    assert!(
        waited >= Duration::from_secs(59) && waited < Duration::from_secs(62),
        "given up after {} ms: {}",
        waited.as_millis(),
        connection(&mut w)
    );
    // Now it says nothing at all, not even hello: given up on as well.
    w.servers[s].mute = true;
    w.run_until_true("a connection without hello given up on", mins(10), |w| {
        connection(w)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("did not answer its hello in 60 s"))
    });
    // The server mends its ways: the post goes out and bob reads it.
    w.servers[s].mute = false;
    w.servers[s].silent = false;
    w.run_until_true("the post stored", mins(10), |w| {
        w.texts(a, &gid).iter().all(|(_, s)| s == "delivered")
    });
    w.run_until_true("bob reads it", mins(5), |w| {
        w.texts(b, &gid).iter().any(|(t, _)| t == "into the void")
    });
}

/// A server that answers every post, but with a refusal that says to wait
/// (its store "full", for ever), stores nothing while it looks healthy:
/// after half an hour without a post stored the connection is given up on
/// and counts as a failure; the post goes out once the server stores again.
#[test]
fn a_server_that_stores_none_of_our_posts_is_given_up_on_after_half_an_hour() {
    let mut w = Sim::new();
    let s = w.add_server(ServerConfig::default());
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    let gid = group_of_two(&mut w, s, a, b);
    let connection = |w: &mut Sim| server_connection(w, a);
    w.servers[s].store.full = true;
    let before = w.servers[s].posts;
    post(&mut w, a, "friends", "refused again and again");
    w.run_for(mins(29));
    assert_eq!(
        connection(&mut w)["state"],
        "synced",
        "refusals are answers: {}",
        connection(&mut w)
    );
    let tries = w.servers[s].posts - before;
    // Each minute (a full store's wait).
    assert!((25..=31).contains(&tries), "posted again: {tries} times");
    w.run_until_true("the connection given up on", mins(2), |w| {
        connection(w)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("stored none of our posts in 30 minutes"))
    });
    w.servers[s].store.full = false;
    w.run_until_true("the post stored", mins(10), |w| {
        w.texts(a, &gid).iter().all(|(_, s)| s == "delivered")
    });
    w.run_until_true("bob reads it", mins(5), |w| {
        w.texts(b, &gid)
            .iter()
            .any(|(t, _)| t == "refused again and again")
    });
}

/// Issue 19: messages a server pruned under the retention it states show
/// as expired, never count against the server, and never move the group.
#[test]
fn messages_pruned_under_the_stated_retention_show_as_expired_and_cost_the_server_nothing() {
    let mut w = Sim::new();
    let s = w.add_server(ServerConfig {
        retention_max_entries: 5,
        ..ServerConfig::default()
    });
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    let gid = group_of_two(&mut w, s, a, b);
    post(&mut w, a, "friends", "seen by both");
    w.run_until_true("bob reads it", MINUTE, |w| w.texts(b, &gid).len() == 1);
    w.stop(b);
    for i in 0..10 {
        post(&mut w, a, "friends", &format!("while bob was away {i}"));
    }
    w.run_until_true("all stored", MINUTE, |w| {
        w.texts(a, &gid).iter().all(|(_, s)| s == "delivered")
    });
    // The server keeps 5: the older ones go. Alice is away too, so no
    // member can fill the gap.
    let last = w.servers[s].store.last;
    w.servers[s].store.prune(last - 5);
    w.stop(a);
    w.start(b);
    w.run_until_true("bob reads what is left", mins(2), |w| {
        w.texts(b, &gid)
            .iter()
            .any(|(t, _)| t == "while bob was away 9")
    });
    w.run_for(mins(30));
    let listed = w.messages(b, &gid);
    let missing: Vec<&Value> = listed.iter().filter(|m| m["status"] == "missing").collect();
    assert!(
        !missing.is_empty(),
        "the pruned ones are known to be missing"
    );
    for m in &missing {
        let note = m["note"].as_str().unwrap();
        assert!(
            note.starts_with("expired on the server, which keeps 5 messages"),
            "{note}"
        );
    }
    // Nothing held against the server: not lost, not failed, not moved.
    let servers = w.ok(b, Request::Servers);
    assert_eq!(servers[0]["observed"]["lost"], 0, "{servers}");
    let g = group_view(&mut w, b);
    assert!(
        g["servers"][0]["server"]
            .as_str()
            .unwrap()
            .contains(w.servers[s].address.as_str())
    );
    assert!(
        g["previous_servers"].as_array().unwrap().is_empty(),
        "no move"
    );
    assert_eq!(g["servers"][0]["connection"]["state"], "synced");
}

/// Alice adds bob and invites him to a group at once; bob, who holds her
/// only as a request, cannot take the invite yet. Once he accepts her, the
/// invite reaches him on the link that is up, without waiting for a new
/// one (which keepalives may put off for hours).
#[test]
fn an_invite_sent_before_acceptance_arrives_once_accepted() {
    let mut w = Sim::new();
    let s = w.add_server(ServerConfig::default());
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    let bob = w.peers[b].address.clone();
    add(&mut w, a, b, Some("join us"));
    let server = w.servers[s].id();
    w.ok(
        a,
        Request::GroupCreate {
            name: "friends".into(),
            server,
        },
    );
    w.ok(
        a,
        Request::GroupInvite {
            group: "friends".into(),
            contact: bob,
        },
    );
    w.run_until_true("the request", MINUTE, |w| {
        !w.events_of(b, |e| matches!(e, Event::ContactRequest { .. }))
            .is_empty()
    });
    w.run_for(MINUTE);
    assert!(
        w.events_of(b, |e| matches!(e, Event::GroupInvite { .. }))
            .is_empty()
    );
    w.ok(
        b,
        Request::ContactAccept {
            // A request is named by its address, never by the name it
            // announces (a stranger could announce any).
            contact: w.peers[a].address.clone(),
        },
    );
    w.run_until_true("the invite after acceptance", MINUTE, |w| {
        !w.events_of(b, |e| matches!(e, Event::GroupInvite { .. }))
            .is_empty()
    });
}

/// Alice uses a server and knows its advert; she adds bob, who holds her
/// only as a request when her link comes up and ignores her adverts then.
/// Once he accepts her, he learns her server on the link that is up: the
/// adverts follow his Hello, not hers.
#[test]
fn adverts_shared_before_acceptance_arrive_once_accepted() {
    use cwtch_proto::server::advert::{Requirements, Retention, ServerAdvert};
    let mut w = Sim::new();
    let s = w.add_server(ServerConfig::default());
    let now = w.now().unix_secs();
    let advert = ServerAdvert {
        server: w.servers[s].identity.public(),
        issued_at: now,
        expires_at: now + 86_400,
        requirements: Requirements::default(),
        retention: Retention::default(),
    };
    w.servers[s].store.advert = Some(advert.sign(&w.servers[s].identity).unwrap());
    let (b, a) = (w.add_peer("bob"), w.add_peer("alice"));
    let server = w.servers[s].id();
    w.ok(
        a,
        Request::GroupCreate {
            name: "mine".into(),
            server,
        },
    );
    let address = w.servers[s].address.to_string();
    w.run_until_true("alice to know the advert", MINUTE, |w| {
        let listed = w.ok(a, Request::Servers);
        listed.as_array().is_some_and(|l| {
            l.iter()
                .any(|e| e["address"] == address.as_str() && e["advert"]["valid"] == true)
        })
    });
    add(&mut w, a, b, Some("hi"));
    w.run_until_true("the request", MINUTE, |w| {
        !w.events_of(b, |e| matches!(e, Event::ContactRequest { .. }))
            .is_empty()
    });
    w.run_for(MINUTE);
    assert_eq!(w.ok(b, Request::Servers), serde_json::json!([]));
    w.ok(
        b,
        Request::ContactAccept {
            contact: w.peers[a].address.clone(),
        },
    );
    // On the link that is up: a round trip, not a new link or a refresh.
    w.run_until_true("bob to learn alice's server", Duration::from_secs(2), |w| {
        let listed = w.ok(b, Request::Servers);
        listed
            .as_array()
            .is_some_and(|l| l.iter().any(|e| e["address"] == address.as_str()))
    });
    // The link that was up stayed up: no new link brought them.
    let dropped = w
        .events_of(
            b,
            |e| matches!(e, Event::Connection { state, .. } if state == "disconnected"),
        )
        .len();
    assert_eq!(dropped, 0, "the link went down after the acceptance");
}

/// The local order of messages goes on across restarts, also after the
/// newest messages were deleted: a number is never given twice (read marks
/// and unread counts rest on it). The counter is not written per message:
/// it is recovered from the stored messages.
#[test]
fn the_local_order_never_repeats_across_restarts_and_deletions() {
    let mut w = Sim::new();
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    w.befriend(a, b);
    let bob = w.peers[b].address.clone();
    let seqs = |w: &mut Sim| -> Vec<u64> {
        w.messages(a, &bob)
            .iter()
            .filter_map(|m| m["seq"].as_u64())
            .collect()
    };
    for t in ["one", "two", "three"] {
        send(&mut w, a, b, t);
    }
    let before = seqs(&mut w);
    assert_eq!(before.len(), 3);
    w.stop(a);
    w.start(a);
    send(&mut w, a, b, "four");
    let after = seqs(&mut w);
    assert!(after[3] > before[2], "{after:?}");
    let highest = after[3];
    // The newest are deleted, then a restart: the numbers go on.
    w.ok(
        a,
        Request::ConversationDelete {
            conversation: bob.clone(),
        },
    );
    w.stop(a);
    w.start(a);
    send(&mut w, a, b, "five");
    let now = seqs(&mut w);
    assert_eq!(now.len(), 1);
    assert!(now[0] > highest, "{now:?} after {highest}");
}

/// Leaving a group whose messages were the newest, then a restart: a
/// message that arrives after counts as unread (its number is above every
/// read mark).
#[test]
fn after_leaving_a_group_and_a_restart_new_messages_are_unread() {
    let mut w = Sim::new();
    let s = w.add_server(ServerConfig::default());
    let (a, b) = (w.add_peer("alice"), w.add_peer("bob"));
    let gid = group_of_two(&mut w, s, a, b);
    let bob = w.peers[b].address.clone();
    send(&mut w, b, a, "before");
    w.run_for(MINUTE);
    for i in 0..5 {
        post(&mut w, b, &gid, &format!("group {i}"));
    }
    w.run_until_true("the posts", MINUTE, |w| w.texts(a, &gid).len() >= 5);
    w.ok(
        a,
        Request::ConversationRead {
            conversation: bob.clone(),
        },
    );
    w.ok(a, Request::GroupLeave { group: gid.clone() });
    w.stop(a);
    w.start(a);
    send(&mut w, b, a, "after");
    w.run_until_true("bob's second message", MINUTE, |w| {
        w.texts(a, &bob).len() == 2
    });
    let list = w.ok(a, Request::ContactList);
    assert_eq!(list[0]["unread"], 1, "{list}");
    w.stop(a);
    w.start(a);
    let list = w.ok(a, Request::ContactList);
    assert_eq!(list[0]["unread"], 1, "also after a restart: {list}");
}
