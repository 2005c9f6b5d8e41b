//! The server daemon killed with SIGKILL under load, 20 times at random
//! moments: three anonymous clients post (pipelined) over the dev transport
//! while it runs; after every restart the store opens and a client fetches
//! the whole log, which must hold every post the server ever acknowledged,
//! at the index it acknowledged, with its bytes, and nothing twice.
//! (`blob_store_crash.rs` does the same for the store library alone; this
//! one goes through the daemon, its sessions and the wire.)

mod support;
#[path = "support/wire.rs"]
mod wire;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cwtch_proto::OnionAddress;
use cwtch_proto::group::SEALED_BLOB_LEN;
use support::{Daemon, cli, wait_for};
use wire::{ServerUser, resolve, server_wire};

const KILLS: usize = 20;
const CLIENTS: u64 = 3;
const PIPELINE: u64 = 8;

fn blob(id: u64) -> [u8; SEALED_BLOB_LEN] {
    let mut b = [0u8; SEALED_BLOB_LEN];
    b[..8].copy_from_slice(&id.to_le_bytes());
    for (i, x) in b.iter_mut().enumerate().skip(8) {
        *x = (id.wrapping_mul(131).wrapping_add(i as u64)) as u8;
    }
    b
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b) % n
}

/// Posts pipelined until the connection dies; records every
/// acknowledgement as index → blob id.
fn poster(
    addr: std::net::SocketAddr,
    server: OnionAddress,
    first_id: u64,
    acked: Arc<Mutex<BTreeMap<u64, u64>>>,
    stop: Arc<AtomicBool>,
) {
    let Some(mut user) = ServerUser::connect(addr, &server, Duration::from_secs(10)) else {
        return;
    };
    let mut in_flight: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next_id = first_id;
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        while (in_flight.len() as u64) < PIPELINE {
            user.link.send(&server_wire::post(&blob(next_id)));
            in_flight.insert(seq, next_id);
            seq += 1;
            next_id += 1;
        }
        match user.link.next(Duration::from_millis(500)) {
            Ok(Some(m)) if m.first() == Some(&0x82) => {
                let (s, index) = (server_wire::u64_at(&m, 1), server_wire::u64_at(&m, 9));
                let id = in_flight.remove(&s).expect("an ack of a post we sent");
                let earlier = acked.lock().unwrap().insert(index, id);
                assert!(earlier.is_none(), "index {index} acknowledged twice");
            }
            Ok(Some(m)) if m.first() == Some(&0x88) => {
                in_flight.remove(&server_wire::u64_at(&m, 2));
            }
            Ok(_) => {}
            Err(_) => return, // killed
        }
    }
}

fn check_log(
    addr: std::net::SocketAddr,
    server: &OnionAddress,
    acked: &BTreeMap<u64, u64>,
    from: u64,
) -> usize {
    let mut user = ServerUser::connect(addr, server, Duration::from_secs(30))
        .expect("the restarted server answers");
    let all = user
        .fetch_all(from, Duration::from_secs(60))
        .expect("the log can be fetched");
    let mut by_index = BTreeMap::new();
    let mut last = 0;
    for (index, bytes) in &all {
        assert!(*index > last, "indices strictly increase");
        last = *index;
        let id = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        assert_eq!(bytes[..], blob(id)[..], "blob {index} is intact");
        by_index.insert(*index, id);
    }
    for (index, id) in acked.range(from + 1..) {
        assert_eq!(
            by_index.get(index),
            Some(id),
            "acknowledged post {id} is at index {index}"
        );
    }
    all.len()
}

fn start(home: &Path, devdir: &Path, address: &str) -> (Daemon, std::net::SocketAddr) {
    let _ = std::fs::remove_file(devdir.join(format!("{address}-9878")));
    let d = Daemon::start(
        home,
        true,
        &["--dev-tcp".into(), devdir.display().to_string()],
    );
    let addr = wait_for("the server listening", Duration::from_secs(30), || {
        resolve(devdir, address)
    });
    (d, addr)
}

#[test]
fn server_daemon_killed_under_load_20_times_keeps_every_acknowledged_post() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let home = tmp.path().join("server");
    let v = cli(&home, &["server", "init", "--rate-interval-ms", "0"]).unwrap();
    let address = v["address"].as_str().unwrap().to_string();
    let server = OnionAddress::parse(&address).unwrap();
    let acked: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let mut stored = 0;
    for round in 0..KILLS as u64 {
        let (mut daemon, addr) = start(&home, &devdir, &address);
        // The posts of the last round (the ones the kill could hurt); the
        // final check covers everything.
        let snapshot = acked.lock().unwrap().clone();
        let from: u64 = snapshot.keys().next_back().copied().unwrap_or(0);
        let from = from.saturating_sub(8 * CLIENTS * PIPELINE);
        stored = from as usize + check_log(addr, &server, &snapshot, from);
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (acked, stop, server) = (acked.clone(), stop.clone(), server);
                let first = (round * CLIENTS + c) << 32;
                std::thread::spawn(move || poster(addr, server, first, acked, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100 + random_below(600)));
        daemon.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("a poster saw nothing inconsistent");
        }
    }
    let (_daemon, addr) = start(&home, &devdir, &address);
    let acked = acked.lock().unwrap().clone();
    let total = check_log(addr, &server, &acked, 0);
    eprintln!(
        "{KILLS} kills: {} posts acknowledged, {total} stored (before the last round: {stored})",
        acked.len()
    );
    assert!(
        acked.len() >= KILLS * 10,
        "the load was real: {} acknowledged",
        acked.len()
    );
    let info = cli(&home, &["server", "info"]).unwrap();
    assert_eq!(info["stats"]["blobs"].as_u64().unwrap() as usize, total);
}

/// The peer daemon's profile under SIGKILL, 20 times at random moments,
/// while a contact keeps writing to it and it writes back: every message
/// the contact saw acknowledged (so stored durably, SPEC.md section 4) is
/// in the profile after each restart, every message the victim's `send`
/// accepted is still there, the profile opens every time, and in the end
/// everything arrives exactly once.
#[test]
fn peer_daemon_killed_20_times_keeps_every_acknowledged_message() {
    use support::{conversation, init, wait_ready};
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let flags = vec!["--dev-tcp".to_string(), devdir.display().to_string()];
    let (a_home, b_home) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let alice = init(&a_home, "alice");
    let bob = init(&b_home, "bob");
    let _b = Daemon::start(&b_home, false, &flags);
    wait_ready(&b_home);
    cli(&b_home, &["contact", "add", &alice]).unwrap();
    let mut alice_sent = Vec::new();
    let mut bob_sent = Vec::new();
    let mut checked = 0;
    for round in 0..KILLS {
        // What bob saw acknowledged before this start must be in alice's
        // profile.
        let acked: Vec<String> = conversation(&b_home, &alice)
            .into_iter()
            .filter(|m| m.0 && m.2 == "delivered")
            .map(|m| m.1)
            .collect();
        let mut a = Daemon::start(&a_home, false, &flags);
        wait_ready(&a_home);
        if round == 0 {
            cli(&a_home, &["contact", "add", &bob]).unwrap();
        }
        let have = conversation(&a_home, &bob);
        checked += acked.len();
        for text in &acked {
            assert_eq!(
                have.iter().filter(|m| !m.0 && &m.1 == text).count(),
                1,
                "acknowledged {text} is in the profile once"
            );
        }
        for text in &alice_sent {
            assert!(
                have.iter().any(|m| m.0 && &m.1 == text),
                "alice's own {text} survived"
            );
        }
        for i in 0..3 {
            let text = format!("bob {round}.{i}");
            cli(&b_home, &["send", &alice, &text]).unwrap();
            bob_sent.push(text);
        }
        let text = format!("alice {round}");
        if cli(&a_home, &["send", &bob, &text]).is_ok() {
            alice_sent.push(text);
        }
        std::thread::sleep(Duration::from_millis(random_below(400)));
        a.kill9();
    }
    let _a = Daemon::start(&a_home, false, &flags);
    wait_ready(&a_home);
    wait_for(
        "everything delivered both ways",
        Duration::from_secs(90),
        || {
            let a = conversation(&a_home, &bob);
            let b = conversation(&b_home, &alice);
            (a.iter()
                .chain(&b)
                .filter(|m| m.0)
                .all(|m| m.2 == "delivered")
                && b.iter().filter(|m| !m.0).count() == alice_sent.len())
            .then_some(())
        },
    );
    let a = conversation(&a_home, &bob);
    for text in &bob_sent {
        assert_eq!(
            a.iter().filter(|m| !m.0 && &m.1 == text).count(),
            1,
            "{text} arrived once"
        );
    }
    let b = conversation(&b_home, &alice);
    for text in &alice_sent {
        assert_eq!(b.iter().filter(|m| !m.0 && &m.1 == text).count(), 1);
    }
    assert!(
        checked > 0,
        "acknowledged messages were checked after kills"
    );
    eprintln!(
        "{KILLS} kills of the peer: {} + {} messages, all delivered once; {checked} acknowledged-message checks after restarts",
        bob_sent.len(),
        alice_sent.len()
    );
}
