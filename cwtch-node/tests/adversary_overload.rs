//! A malicious peer against real daemons over the dev transport: garbage,
//! oversized length fields, half-open handshakes, slowloris (1000
//! connections that send nothing or trickle bytes), and floods of
//! authenticated strangers. The daemons stay within a memory bound, keep
//! serving an honest client during the attack, and drop the offenders
//! (SECURITY.md, "A malicious peer or stranger").

mod support;
#[path = "support/wire.rs"]
mod wire;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant as StdInstant};

use cwtch_proto::channel::frame::FRAME_LEN;
use cwtch_proto::connection::{Config, Connection};
use cwtch_proto::peer::PeerMessage;
use cwtch_proto::{Identity, Instant, OnionAddress};
use support::{Daemon, cli, contacts, conversation, init, wait_for, wait_ready};
use wire::{RawLink, ServerUser, resolve, rng, rss_kib};

/// The memory bound we state for a daemon under these attacks (VmRSS).
const RSS_BOUND_KIB: u64 = 64 * 1024;
/// The handshake deadline the daemons run with here (the default is 60 s).
const HANDSHAKE_SECS: &str = "4";
const SLOWLORIS: usize = 1000;

fn flags(dir: &Path) -> Vec<String> {
    vec![
        "--dev-tcp".into(),
        dir.display().to_string(),
        "--handshake-timeout".into(),
        HANDSHAKE_SECS.into(),
    ]
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).unwrap();
    v
}

/// Whether the daemon closed this socket (reads what is waiting).
fn is_closed(s: &mut TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Waits until every socket is closed by the daemon; returns how many were.
fn wait_all_closed(socks: &mut [TcpStream], limit: Duration) -> usize {
    let until = StdInstant::now() + limit;
    let mut closed = vec![false; socks.len()];
    loop {
        for (i, s) in socks.iter_mut().enumerate() {
            if !closed[i] && is_closed(s) {
                closed[i] = true;
            }
        }
        let n = closed.iter().filter(|c| **c).count();
        if n == socks.len() || StdInstant::now() > until {
            return n;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The first handshake message of a fresh identity to `to`, as raw bytes.
fn message1(to: &OnionAddress) -> Vec<u8> {
    let mut conn = Connection::initiator(
        Config::default(),
        Identity::generate(&mut rng()),
        to.public_identity(),
        &mut rng(),
        Instant::ZERO,
    );
    let mut buf = [0u8; FRAME_LEN];
    let n = conn
        .poll_transmit(Instant::ZERO, &mut buf)
        .unwrap()
        .unwrap();
    buf[..n].to_vec()
}

/// Garbage, cut handshakes and complete message 1s never confirmed: every
/// such connection is closed (at once, or at the handshake deadline).
fn garbage_and_half_open(addr: SocketAddr, target: &OnionAddress) {
    let mut socks = Vec::new();
    for i in 0..60 {
        let mut s = TcpStream::connect(addr).unwrap();
        let bytes = match i % 3 {
            0 => random_bytes(97 + i * 7),        // garbage: fails authentication
            1 => message1(target)[..50].to_vec(), // a cut message 1
            _ => message1(target),                // message 1, then silence
        };
        s.write_all(&bytes).unwrap();
        socks.push(s);
    }
    let closed = wait_all_closed(&mut socks, Duration::from_secs(60));
    assert_eq!(
        closed,
        socks.len(),
        "every garbage or half-open connection is closed"
    );
}

/// 1000 connections that send nothing, half of them trickling one byte a
/// second; returns them.
fn slowloris(addr: SocketAddr) -> Vec<TcpStream> {
    (0..SLOWLORIS)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect()
}

fn trickle(socks: &mut [TcpStream]) {
    for s in socks.iter_mut().step_by(2) {
        let _ = s.write_all(&[0x01]);
    }
}

#[test]
fn a_peer_daemon_survives_garbage_slowloris_and_stranger_floods() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let (a_home, b_home) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let alice = init(&a_home, "alice");
    let bob = init(&b_home, "bob");
    let a = Daemon::start(&a_home, false, &flags(&devdir));
    wait_ready(&a_home);
    cli(&a_home, &["contact", "add", &bob]).unwrap();
    let target = OnionAddress::parse(&alice).unwrap();
    let addr = wait_for("alice listening", Duration::from_secs(30), || {
        resolve(&devdir, &alice)
    });
    let mut peak = rss_kib(a.pid());

    garbage_and_half_open(addr, &target);

    // Slowloris: 1000 idle or trickling connections, and an honest peer
    // that starts (and so handshakes) in the middle of it.
    let mut idle = slowloris(addr);
    assert!(idle.len() >= SLOWLORIS * 9 / 10, "{} connected", idle.len());
    trickle(&mut idle);
    peak = peak.max(rss_kib(a.pid()));
    let _b = Daemon::start(&b_home, false, &flags(&devdir));
    wait_ready(&b_home);
    cli(&b_home, &["contact", "add", &alice]).unwrap();
    cli(&b_home, &["send", &alice, "honest during slowloris"]).unwrap();
    wait_for(
        "the honest message during slowloris",
        Duration::from_secs(60),
        || {
            trickle(&mut idle);
            peak = peak.max(rss_kib(a.pid()));
            conversation(&a_home, &bob)
                .iter()
                .any(|m| m.1 == "honest during slowloris")
                .then_some(())
        },
    );
    // Every slowloris connection is dropped: evicted by newer ones, or at
    // the handshake deadline.
    let closed = wait_all_closed(&mut idle, Duration::from_secs(60));
    assert_eq!(closed, idle.len(), "every slowloris connection is dropped");
    drop(idle);

    // A flood of strangers that complete the handshake and ask to be
    // contacts, each with a first message: at most MAX_CONTACT_REQUESTS
    // are kept; the others are refused at the handshake.
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..130 {
        let me = Identity::generate(&mut rng());
        let my_address = me.address().to_string();
        let Ok(mut link) = RawLink::dial_as(addr, me, target.public_identity()) else {
            continue;
        };
        if link.establish(Duration::from_secs(20)) {
            let mut buf = vec![0u8; 256];
            let text = format!("stranger {i}");
            let msg = PeerMessage::Text {
                id: i,
                sent_at: 0,
                text: &text,
            }
            .encode(&mut buf)
            .unwrap()
            .to_vec();
            link.send(&msg);
            let _ = link.recv(Duration::from_millis(20));
            accepted.push((link, my_address));
        } else {
            refused += 1;
        }
        if i % 20 == 0 {
            peak = peak.max(rss_kib(a.pid()));
        }
    }
    let requests = wait_for(
        "alice to store the requests",
        Duration::from_secs(60),
        || {
            let n = contacts(&a_home)
                .iter()
                .filter(|c| c["contact"]["state"] == "request")
                .count();
            (n >= cwtch_node::limits::MAX_CONTACT_REQUESTS).then_some(n)
        },
    );
    assert_eq!(requests, cwtch_node::limits::MAX_CONTACT_REQUESTS);
    // (A stranger whose handshake raced the one that filled the table may
    // complete it and then be closed without being stored.)
    assert!(accepted.len() >= cwtch_node::limits::MAX_CONTACT_REQUESTS);
    assert!(refused >= 130 - cwtch_node::limits::MAX_CONTACT_REQUESTS - 2);

    // A pending request that keeps writing: at most MAX_REQUEST_TEXTS of
    // its texts are stored.
    let (chatty, chatty_addr) = &mut accepted[1];
    for i in 0..30u64 {
        let mut buf = vec![0u8; 256];
        let text = format!("chatty {i}");
        let msg = PeerMessage::Text {
            id: 1000 + i,
            sent_at: 0,
            text: &text,
        }
        .encode(&mut buf)
        .unwrap()
        .to_vec();
        chatty.send(&msg);
    }
    wait_for("the request's texts", Duration::from_secs(30), || {
        let _ = chatty.recv(Duration::from_millis(300));
        (conversation(&a_home, chatty_addr).len() >= cwtch_node::limits::MAX_REQUEST_TEXTS as usize)
            .then_some(())
    });
    // Give the rest time to arrive (they would be stored by now if they
    // were going to be).
    let _ = chatty.recv(Duration::from_secs(1));
    let stored = conversation(&a_home, chatty_addr).len();
    assert_eq!(
        stored,
        cwtch_node::limits::MAX_REQUEST_TEXTS as usize,
        "a request's texts beyond the cap are not stored"
    );

    // Oversized length fields from an authenticated stranger: a peer
    // message claiming a 2^35-byte text, a maximal message of garbage, and
    // then a frame of garbage on the channel, which ends the link.
    let link = &mut accepted[0].0;
    link.send(&[0x01, 0x05, 0x00, 0xff, 0xff, 0xff, 0xff, 0x7f, b'x']);
    link.send(&random_bytes(8192));
    let _ = link.recv(Duration::from_millis(300));
    link.stream.write_all(&random_bytes(FRAME_LEN)).unwrap();
    assert!(
        wait_all_closed(
            std::slice::from_mut(&mut link.stream),
            Duration::from_secs(20)
        ) == 1,
        "a garbage frame ends the link"
    );

    // The honest contact is still served, while the strangers hold links.
    cli(&b_home, &["send", &alice, "honest after the flood"]).unwrap();
    wait_for(
        "the honest message after the flood",
        Duration::from_secs(60),
        || {
            conversation(&a_home, &bob)
                .iter()
                .any(|m| m.1 == "honest after the flood")
                .then_some(())
        },
    );
    peak = peak.max(rss_kib(a.pid()));
    // Nothing the strangers sent beyond their requests' first messages, and
    // nothing from the refused ones.
    let log = a.log_text();
    assert!(
        log.contains("too many pending contact requests"),
        "the refusals are logged"
    );
    eprintln!("peer daemon peak VmRSS: {peak} KiB (bound {RSS_BOUND_KIB} KiB)");
    assert!(peak > 0 && peak < RSS_BOUND_KIB, "peak VmRSS {peak} KiB");
}

#[test]
fn a_server_daemon_survives_garbage_slowloris_and_session_floods() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let home = tmp.path().join("server");
    let v = cli(&home, &["server", "init", "--max-connections", "400"]).unwrap();
    let address = v["address"].as_str().unwrap().to_string();
    let target = OnionAddress::parse(&address).unwrap();
    let server = Daemon::start(&home, true, &flags(&devdir));
    let addr = wait_for("the server listening", Duration::from_secs(30), || {
        resolve(&devdir, &address)
    });
    let mut peak = rss_kib(server.pid());
    let mut honest = ServerUser::connect(addr, &target, Duration::from_secs(20)).unwrap();
    let blob = |tag: u8| [tag; 2048];
    assert!(honest.post(&blob(1), Duration::from_secs(20)).is_some());

    garbage_and_half_open(addr, &target);

    // Slowloris while an honest client posts and fetches on a new
    // connection.
    let mut idle = slowloris(addr);
    assert!(idle.len() >= SLOWLORIS * 9 / 10, "{} connected", idle.len());
    trickle(&mut idle);
    peak = peak.max(rss_kib(server.pid()));
    let mut during = ServerUser::connect(addr, &target, Duration::from_secs(30))
        .expect("an honest client connects during slowloris");
    let index = during
        .post(&blob(2), Duration::from_secs(30))
        .expect("an honest post is acknowledged during slowloris");
    let all = during.fetch_all(0, Duration::from_secs(30)).unwrap();
    assert!(all.iter().any(|(i, b)| *i == index && b[..] == blob(2)[..]));
    trickle(&mut idle);
    peak = peak.max(rss_kib(server.pid()));
    let closed = wait_all_closed(&mut idle, Duration::from_secs(60));
    assert_eq!(closed, idle.len(), "every slowloris connection is dropped");
    drop(idle);
    // Connections in their handshake do not count against
    // --max-connections (400), so 1000 of them never made the server
    // refuse anyone as full: only the handshake slots evicted them.
    assert!(
        !server.log_text().contains("too many connections"),
        "slowloris must not fill the client limit"
    );

    // A flood of anonymous sessions that complete the handshake and sit
    // there: the server serves at most --max-connections (400) clients and
    // closes the connections beyond at once.
    let mut sessions = Vec::new();
    let mut turned_away = 0;
    for _ in 0..450 {
        match ServerUser::connect(addr, &target, Duration::from_secs(10)) {
            Some(u) => sessions.push(u),
            None => turned_away += 1,
        }
    }
    peak = peak.max(rss_kib(server.pid()));
    // Our two honest sessions count too.
    assert!(
        sessions.len() <= 400 - 2 && turned_away >= 50,
        "{} sessions, {turned_away} turned away",
        sessions.len()
    );
    // The honest sessions opened before the flood are still served.
    let index = honest
        .post(&blob(3), Duration::from_secs(30))
        .expect("an honest post during the session flood");
    let all = honest
        .fetch_all(index - 1, Duration::from_secs(30))
        .unwrap();
    assert_eq!(all.len(), 1);
    // Oversized and malformed requests are refused, the session stays.
    let s = &mut sessions[0];
    let mut big = vec![0x01];
    big.extend_from_slice(&random_bytes(8000));
    s.link.send(&big);
    s.link.send(&[0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
    s.link.send(&random_bytes(100));
    let mut refused = 0;
    let mut entries = 0;
    let until = StdInstant::now() + Duration::from_secs(20);
    while StdInstant::now() < until && !(refused >= 2 && entries >= 3) {
        match s.link.next(Duration::from_millis(200)) {
            Ok(Some(m)) if m[0] == 0x88 => refused += 1,
            Ok(Some(m)) if m[0] == 0x83 => entries += 1,
            Ok(_) => {}
            Err(e) => panic!("the session ended: {e}"),
        }
    }
    assert!(refused >= 2, "wrong blob size and garbage are refused");
    assert!(entries >= 3, "a fetch with limit 65535 is served (capped)");
    drop(sessions);
    peak = peak.max(rss_kib(server.pid()));
    let log = server.log_text();
    assert!(log.contains("too many connections"), "refusals are logged");
    assert!(
        log.contains("too many unauthenticated connections"),
        "evictions are logged"
    );
    eprintln!("server daemon peak VmRSS: {peak} KiB (bound {RSS_BOUND_KIB} KiB)");
    assert!(peak > 0 && peak < RSS_BOUND_KIB, "peak VmRSS {peak} KiB");
}
