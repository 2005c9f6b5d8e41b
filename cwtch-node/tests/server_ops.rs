//! Running a server: its configuration file (SIGHUP, bad files, the old
//! policy.json), proof of work that rises under load, a graceful stop on
//! SIGTERM under load, `server stats` and the metrics, and a backup taken
//! and restored while the server runs. Real `cwtch-node server run`
//! processes over the dev transport (loopback only).

mod support;
#[path = "support/wire.rs"]
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cwtch_proto::OnionAddress;
use cwtch_proto::group::SEALED_BLOB_LEN;
use cwtch_proto::server::advert::ServerAdvert;
use rustix::process::Signal;
use support::{Daemon, bin, cli, wait_for};
use wire::{ServerUser, resolve, server_wire};

fn blob(id: u64) -> [u8; SEALED_BLOB_LEN] {
    let mut b = [0u8; SEALED_BLOB_LEN];
    b[..8].copy_from_slice(&id.to_le_bytes());
    for (i, x) in b.iter_mut().enumerate().skip(8) {
        *x = (id.wrapping_mul(131).wrapping_add(i as u64)) as u8;
    }
    b
}

fn dev(devdir: &Path) -> Vec<String> {
    vec!["--dev-tcp".into(), devdir.display().to_string()]
}

/// `server init` with `flags`: the server's address.
fn init(home: &Path, flags: &[&str]) -> (String, OnionAddress) {
    let mut args = vec!["server", "init"];
    args.extend_from_slice(flags);
    let v = cli(home, &args).expect("server init");
    let address = v["address"].as_str().unwrap().to_string();
    let onion = OnionAddress::parse(&address).unwrap();
    (address, onion)
}

fn listening(devdir: &Path, address: &str) -> SocketAddr {
    wait_for("the server listening", Duration::from_secs(30), || {
        resolve(devdir, address)
    })
}

/// Replaces `from` by `to` in the server's server.toml.
fn edit_config(home: &Path, from: &str, to: &str) {
    let path = home.join("server.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "server.toml has {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

/// The hello's fields: (pow_bits, retention_max_entries, retention_max_age_secs).
fn hello_terms(user: &ServerUser) -> (u8, u64, u64) {
    let h = &user.hello;
    (h[2], server_wire::u64_at(h, 53), server_wire::u64_at(h, 61))
}

/// The server's signed advert, fetched on a new connection and verified
/// against its address.
fn fetch_advert(addr: SocketAddr, server: &OnionAddress) -> ServerAdvert {
    let mut user = ServerUser::connect(addr, server, Duration::from_secs(20)).expect("connect");
    user.link.send(&server_wire::get_advert());
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < until {
        if let Ok(Some(m)) = user.link.next(Duration::from_millis(200))
            && m.first() == Some(&0x8a)
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            return ServerAdvert::verify(&m[1..], Some(&server.public_identity()), now)
                .expect("a valid advert of this server");
        }
    }
    panic!("no advert");
}

/// Posts pipelined on one connection until the connection ends (or
/// `stop`); records every acknowledgement as index → blob id. Returns
/// whether the server said `Closing(shutdown)`.
fn poster(
    addr: SocketAddr,
    server: OnionAddress,
    first_id: u64,
    acked: Arc<Mutex<BTreeMap<u64, u64>>>,
    stop: Arc<AtomicBool>,
) -> bool {
    let mut user = ServerUser::connect(addr, &server, Duration::from_secs(20)).expect("connect");
    let mut in_flight: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next_id = first_id;
    let mut closing = false;
    loop {
        while !stop.load(Ordering::Relaxed) && in_flight.len() < 8 && !closing {
            let seq = user.next_seq;
            let message = user.post_message(&blob(next_id));
            user.link.send(&message);
            in_flight.insert(seq, next_id);
            next_id += 1;
        }
        if stop.load(Ordering::Relaxed) && in_flight.is_empty() {
            return closing;
        }
        match user.link.next(Duration::from_millis(500)) {
            Ok(Some(m)) if m.first() == Some(&0x82) => {
                let (seq, index) = (server_wire::u64_at(&m, 1), server_wire::u64_at(&m, 9));
                let id = in_flight.remove(&seq).expect("an ack of a post we sent");
                let earlier = acked.lock().unwrap().insert(index, id);
                assert!(earlier.is_none(), "index {index} acknowledged twice");
            }
            Ok(Some(m)) if m.first() == Some(&0x88) => {
                in_flight.remove(&server_wire::u64_at(&m, 2));
            }
            Ok(Some(m)) if m.first() == Some(&0x89) => {
                assert_eq!(m.get(1), Some(&2), "the closing reason is shutdown");
                closing = true;
            }
            Ok(_) => {}
            Err(_) => return closing,
        }
    }
}

/// Every acknowledged post is in the server's log at its index, intact;
/// returns the whole log as index → id.
fn check_log(
    addr: SocketAddr,
    server: &OnionAddress,
    acked: &BTreeMap<u64, u64>,
) -> BTreeMap<u64, u64> {
    let mut user = ServerUser::connect(addr, server, Duration::from_secs(30)).expect("connect");
    let all = user
        .fetch_all(0, Duration::from_secs(60))
        .expect("the log can be fetched");
    let mut by_index = BTreeMap::new();
    for (index, bytes) in &all {
        let id = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        assert_eq!(bytes[..], blob(id)[..], "blob {index} is intact");
        by_index.insert(*index, id);
    }
    for (index, id) in acked {
        assert_eq!(
            by_index.get(index),
            Some(id),
            "acknowledged post {id} is at index {index}"
        );
    }
    by_index
}

#[test]
fn sigterm_under_load_keeps_every_acknowledged_post_tells_clients_and_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let home = tmp.path().join("server");
    let (address, server) = init(&home, &["--pow-bits", "0", "--rate-interval-ms", "0"]);
    let mut daemon = Daemon::start(&home, true, &dev(&devdir));
    let addr = listening(&devdir, &address);
    let acked: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let posters: Vec<_> = (0..4u64)
        .map(|c| {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || poster(addr, server, c << 32, acked, stop))
        })
        .collect();
    wait_for("load", Duration::from_secs(30), || {
        (acked.lock().unwrap().len() >= 200).then_some(())
    });
    let status = daemon
        .terminate(Duration::from_secs(30))
        .expect("the server stops within 30 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status 0");
    stop.store(true, Ordering::Relaxed);
    let told: Vec<bool> = posters.into_iter().map(|p| p.join().unwrap()).collect();
    assert_eq!(
        told, [true; 4],
        "every connected client was told Closing(shutdown)"
    );
    let log = daemon.log_text();
    assert!(log.contains("stopping gracefully"), "{log}");
    assert!(
        log.contains("stopped: every accepted post is on disk"),
        "{log}"
    );
    assert!(
        resolve(&devdir, &address).is_none(),
        "the service is withdrawn"
    );
    assert!(
        !home.join("admin.sock").exists(),
        "the admin socket is gone"
    );

    let acked = acked.lock().unwrap().clone();
    let _restarted = Daemon::start(&home, true, &dev(&devdir));
    let addr = listening(&devdir, &address);
    let stored = check_log(addr, &server, &acked);
    // Each connection took requests until the stop and acknowledged every
    // one it took before saying goodbye: stored is exactly acknowledged.
    assert_eq!(
        stored.len(),
        acked.len(),
        "every post the server stored was acknowledged before it closed"
    );
    eprintln!(
        "SIGTERM under load: {} posts acknowledged, all stored",
        acked.len()
    );
}

/// The same stop over a private Tor network: the server published its
/// onion service through a tor's control port, and on SIGTERM it deletes
/// it there (`DEL_ONION`, answered by tor) before exiting 0.
#[test]
fn sigterm_over_tor_deletes_the_onion_service_and_exits_0() {
    let net = cwtch_tests::testnet::TestNetwork::start(1)
        .expect("private Tor network (is tor installed?)");
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("server");
    let (address, _) = init(&home, &[]);
    let c = &net.clients()[0];
    let mut daemon = Daemon::start(
        &home,
        true,
        &[
            "--tor-socks".into(),
            c.socks_addr.to_string(),
            "--tor-control".into(),
            c.control_addr.to_string(),
        ],
    );
    wait_for("the onion service", Duration::from_secs(180), || {
        daemon
            .log_text()
            .contains(&format!("{address}?pow=20"))
            .then_some(())
    });
    let status = daemon
        .terminate(Duration::from_secs(30))
        .expect("the server stops within 30 s of SIGTERM");
    assert_eq!(status.code(), Some(0));
    let log = daemon.log_text();
    assert!(
        log.contains(
            "stopped: every accepted post is on disk (last index 0); onion service removed"
        ),
        "{log}"
    );
}

#[test]
fn sighup_applies_a_new_configuration_and_a_bad_one_is_refused_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let home = tmp.path().join("server");
    let (address, server) = init(&home, &[]);
    let daemon = Daemon::start(&home, true, &dev(&devdir));
    let addr = listening(&devdir, &address);

    // The defaults, bounded, in the hello and the advert.
    let user = ServerUser::connect(addr, &server, Duration::from_secs(20)).unwrap();
    assert_eq!(hello_terms(&user), (0, 5 * 1024 * 1024, 30 * 86_400));
    let advert = fetch_advert(addr, &server);
    assert_eq!(advert.requirements.pow_bits, 20);
    assert_eq!(advert.retention.max_age_secs, 30 * 86_400);
    assert_eq!(advert.retention.max_bytes, 10 << 30);
    assert_eq!(advert.retention.max_entries, 5 * 1024 * 1024);

    edit_config(&home, "max_age_days = 30", "max_age_days = 7");
    edit_config(&home, "max_bits = 20", "max_bits = 16");
    edit_config(&home, "max_blobs = 5242880", "max_blobs = 1000");
    daemon.signal(Signal::HUP);
    wait_for("the reload", Duration::from_secs(20), || {
        daemon
            .log_text()
            .contains("reloaded server.toml")
            .then_some(())
    });
    let user = ServerUser::connect(addr, &server, Duration::from_secs(20)).unwrap();
    assert_eq!(hello_terms(&user), (0, 1000, 7 * 86_400));
    let renewed = fetch_advert(addr, &server);
    assert_eq!(renewed.requirements.pow_bits, 16);
    assert_eq!(renewed.retention.max_age_secs, 7 * 86_400);
    assert_eq!(renewed.retention.max_entries, 1000);
    assert!(renewed.issued_at >= advert.issued_at);
    let running = cli(&home, &["server", "config"]).unwrap();
    assert_eq!(running["proof_of_work"]["max_bits"], 16);
    assert_eq!(running["retention"]["max_age_days"], 7);

    // A bad file: refused with its line and reason; nothing changes.
    let path = home.join("server.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    let line = good
        .lines()
        .position(|l| l.starts_with("max_clients = "))
        .unwrap()
        + 1;
    edit_config(&home, "max_clients = 10000", "max_clients = 0");
    daemon.signal(Signal::HUP);
    let expected = format!("line {line}: 0 is out of range: from 1 to 10000");
    wait_for("the refusal", Duration::from_secs(20), || {
        daemon.log_text().contains(&expected).then_some(())
    });
    assert!(
        daemon
            .log_text()
            .contains("the new configuration is refused, the server keeps its own")
    );
    let kept = fetch_advert(addr, &server);
    assert_eq!(kept.requirements.pow_bits, 16);
    assert_eq!(kept.requirements.max_connections, 10_000);
    let running = cli(&home, &["server", "config"]).unwrap();
    assert_eq!(running["connections"]["max_clients"], 10_000);
    // `server config` says the same about the file while nothing runs.
    drop(daemon);
    let err = cli(&home, &["server", "config"]).unwrap_err();
    assert!(err.contains(&format!("line {line}")), "{err}");
}

#[test]
fn proof_of_work_is_off_when_idle_and_rises_under_load() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let home = tmp.path().join("server");
    let (address, server) = init(&home, &["--pow-threshold", "20", "--rate-interval-ms", "0"]);
    edit_config(&home, "window_secs = 10", "window_secs = 2");
    let daemon = Daemon::start(&home, true, &dev(&devdir));
    let addr = listening(&devdir, &address);
    let mut flooder = ServerUser::connect(addr, &server, Duration::from_secs(20)).unwrap();
    assert_eq!(flooder.pow_bits, 0, "no work asked of an idle server");

    // Well over 20 posts a second, on the connection made while idle.
    let posted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (posted, stop) = (posted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut id = 1u64 << 40;
            while !stop.load(Ordering::Relaxed) {
                if flooder.post(&blob(id), Duration::from_secs(10)).is_some() {
                    posted.fetch_add(1, Ordering::Relaxed);
                }
                id += 1;
            }
        })
    };
    let loaded = wait_for("work asked under load", Duration::from_secs(20), || {
        let u = ServerUser::connect(addr, &server, Duration::from_secs(20)).unwrap();
        (u.pow_bits >= 10).then_some(u)
    });
    assert!(loaded.pow_bits <= 20, "never above the advert's maximum");
    assert_eq!(fetch_advert(addr, &server).requirements.pow_bits, 20);
    // A post without the work is refused; with it, stored.
    let mut loaded = loaded;
    loaded.link.send(&server_wire::post(&blob(1)));
    let refusal = loop {
        let m = loaded.link.next(Duration::from_secs(10)).unwrap().unwrap();
        if m[0] == 0x88 {
            break m;
        }
    };
    assert_eq!(refusal[10], 5, "PowMissing");
    loaded.next_seq = 1;
    assert!(loaded.post(&blob(2), Duration::from_secs(60)).is_some());
    let stats = cli(&home, &["server", "stats"]).unwrap();
    assert!(stats["pow_bits_now"].as_u64().unwrap() >= 10, "{stats}");
    assert_eq!(stats["pow_bits_max"], 20);
    assert_eq!(stats["refusals"]["pow_missing"], 1);
    assert!(stats["posts_per_sec"].as_f64().unwrap() >= 20.0, "{stats}");

    // Quiet again: new connections pay nothing.
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    assert!(posted.load(Ordering::Relaxed) > 40);
    wait_for("no work once quiet", Duration::from_secs(20), || {
        let u = ServerUser::connect(addr, &server, Duration::from_secs(20)).unwrap();
        (u.pow_bits == 0).then_some(())
    });
    assert!(
        daemon
            .log_text()
            .contains("proof of work for new connections")
    );
}

#[test]
fn server_stats_metrics_and_the_stats_line_at_the_default_level() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let home = tmp.path().join("server");
    let (address, server) = init(&home, &["--pow-bits", "0"]);
    edit_config(&home, "log_interval_secs = 60", "log_interval_secs = 1");
    // Not loopback: refused before anything starts.
    let out = std::process::Command::new(bin())
        .arg("--home")
        .arg(&home)
        .args(["server", "run", "--metrics", "0.0.0.0:9464"])
        .args(dev(&devdir))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
    assert!(cli(&home, &["server", "stats"]).is_err(), "not running");

    let metrics = tmp.path().join("metrics.sock");
    let mut flags = dev(&devdir);
    flags.extend(["--metrics".into(), format!("unix:{}", metrics.display())]);
    let daemon = Daemon::start_quiet(&home, true, &flags);
    let addr = listening(&devdir, &address);
    let mut user = ServerUser::connect(addr, &server, Duration::from_secs(20)).unwrap();
    for id in 0..5 {
        assert!(user.post(&blob(id), Duration::from_secs(20)).is_some());
    }
    user.link.send(&[0x03, 1, 2]); // a malformed fetch
    assert!(user.fetch_all(0, Duration::from_secs(20)).unwrap().len() == 5);
    let stats = wait_for("the stats", Duration::from_secs(10), || {
        let s = cli(&home, &["server", "stats"]).ok()?;
        (s["refusals"]["malformed"] == 1 && s["commits_total"].as_u64()? >= 1).then_some(s)
    });
    assert_eq!(stats["blobs"], 5, "{stats}");
    assert_eq!(stats["bytes"], 5 * 2048);
    assert_eq!(stats["head"], 5);
    assert_eq!(stats["stored_total"], 5);
    assert_eq!(stats["posts_total"], 5);
    assert!(stats["fetches_total"].as_u64().unwrap() >= 1);
    assert_eq!(stats["connections"], 1);
    assert!(stats["oldest_age_secs"].as_u64().unwrap() < 60);
    assert!(stats["fsync_seconds_total"].as_f64().unwrap() > 0.0);
    assert!(stats["commit_seconds_total"].as_f64().unwrap() > 0.0);
    assert_eq!(stats["refusals"]["full"], 0);
    // The human form says the same.
    let out = std::process::Command::new(bin())
        .arg("--home")
        .arg(&home)
        .args(["server", "stats"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("5 blobs, 10240 bytes"), "{text}");
    assert!(text.contains("malformed 1"), "{text}");

    // Prometheus text over the unix socket.
    let body = {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(body.starts_with("HTTP/1.0 200 OK\r\n"), "{body}");
    assert!(body.contains("\ncwtch_server_blobs 5\n"), "{body}");
    assert!(body.contains("\ncwtch_server_refusals_total{reason=\"malformed\"} 1\n"));
    assert!(body.contains("\ncwtch_server_stored_total 5\n"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(home.join("admin.sock"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the admin socket is private");

    // The stats line shows at the daemon's default level (no -v).
    wait_for("a stats line in the log", Duration::from_secs(10), || {
        daemon
            .log_text()
            .contains("server stats: 5 blobs")
            .then_some(())
    });
    assert!(
        !daemon.log_text().contains(" INFO cwtch_node::server:"),
        "only the stats line, not info in general"
    );
}

#[test]
fn a_backup_taken_under_load_restores_a_server_with_the_same_address() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let home = tmp.path().join("server");
    let (address, server) = init(&home, &["--pow-bits", "0", "--rate-interval-ms", "0"]);
    let _daemon = Daemon::start(&home, true, &dev(&devdir));
    let addr = listening(&devdir, &address);
    let acked: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let posters: Vec<_> = (0..2u64)
        .map(|c| {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || poster(addr, server, c << 32, acked, stop))
        })
        .collect();
    wait_for("load", Duration::from_secs(30), || {
        (acked.lock().unwrap().len() >= 100).then_some(())
    });
    let before = acked.lock().unwrap().clone();
    let file = tmp.path().join("server.backup");
    let summary = cli(&home, &["server", "backup", file.to_str().unwrap()])
        .expect("a backup while the server runs");
    let after = acked.lock().unwrap().len();
    stop.store(true, Ordering::Relaxed);
    for p in posters {
        p.join().unwrap();
    }
    assert!(after > before.len(), "posts went on during the backup");
    assert_eq!(summary["address"], address.as_str());
    assert!(summary["blobs"].as_u64().unwrap() >= before.len() as u64);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the backup is private");
    // It holds the server's key.
    let db = rusqlite::Connection::open(&file).unwrap();
    let key: Vec<u8> = db
        .query_row(
            "SELECT value FROM cwtch_server_backup WHERE name = 'key'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(key, std::fs::read(home.join("server.key")).unwrap());
    drop(db);
    assert!(
        cli(&home, &["server", "backup", file.to_str().unwrap()]).is_err(),
        "never over an existing file"
    );

    // Restored into a new home while the original still runs.
    let new = tmp.path().join("restored");
    let restored = cli(&new, &["server", "restore", file.to_str().unwrap()]).unwrap();
    assert_eq!(restored["address"], address.as_str());
    let info = cli(&new, &["server", "info"]).unwrap();
    assert_eq!(info["address"], address.as_str());
    assert_eq!(info["stats"]["head"], summary["head"]);
    let newdev = tmp.path().join("dev2");
    let _second = Daemon::start(&new, true, &dev(&newdev));
    let addr = listening(&newdev, &address);
    // Same address: the client's handshake checks the server's key.
    let stored = check_log(addr, &server, &before);
    assert_eq!(stored.len() as u64, summary["blobs"].as_u64().unwrap());
    eprintln!(
        "backup under load: {} acknowledged before, {} in the backup, {} acknowledged by its end",
        before.len(),
        stored.len(),
        after
    );
}

#[test]
fn an_old_policy_json_is_migrated_at_the_first_start_and_the_server_keeps_working() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let home = tmp.path().join("server");
    let (address, server) = init(&home, &[]);
    // A home as `server init` made it before server.toml.
    std::fs::remove_file(home.join("server.toml")).unwrap();
    std::fs::write(
        home.join("policy.json"),
        r#"{"pow_bits": 4, "max_blobs": 0, "max_mib": 10240, "max_age_days": 30,
            "rate_burst": 32, "rate_interval_ms": 500, "max_connections": 10000}"#,
    )
    .unwrap();
    let info = cli(&home, &["server", "info"]).unwrap();
    assert!(info["server"].as_str().unwrap().contains("pow=4"));
    let daemon = Daemon::start(&home, true, &dev(&devdir));
    let addr = listening(&devdir, &address);
    let log = daemon.log_text();
    assert!(log.contains("note: migrated"), "{log}");
    assert!(home.join("policy.json.migrated").exists());
    assert!(!home.join("policy.json").exists());
    let text = std::fs::read_to_string(home.join("server.toml")).unwrap();
    assert!(text.contains("max_blobs = \"unbounded\""), "{text}");
    assert!(text.contains("max_bits = 4"), "{text}");
    let mut user = ServerUser::connect(addr, &server, Duration::from_secs(20)).unwrap();
    assert_eq!(user.pow_bits, 4, "the same proof of work as before");
    assert!(user.post(&blob(7), Duration::from_secs(20)).is_some());
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/cwtch-server.service");
    let text = std::fs::read_to_string(&unit).expect("contrib/systemd/cwtch-server.service");
    for needed in [
        "DynamicUser=yes",
        "StateDirectory=cwtch-server",
        "StateDirectoryMode=0700",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
    ] {
        assert!(text.contains(needed), "the unit has {needed}");
    }
    // systemd-analyze checks that ExecStart names an executable: point it
    // at this build.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("cwtch-server.service");
    std::fs::write(&copy, text.replace("/usr/local/bin/cwtch-node", bin())).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze must be installed (Debian: apt-get install systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Warnings about our unit (not about the machine's own units) fail too.
    for line in stderr.lines() {
        assert!(
            !line.contains("cwtch-server.service"),
            "systemd-analyze: {line}"
        );
    }
}
