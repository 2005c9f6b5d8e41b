//! Finding servers (SPEC.md section 13), with real processes: a server S;
//! bob uses S (so he fetches and verifies its signed advert); bob and carol
//! become contacts; carol, never told about S, lists it in `servers`
//! (learned from bob, with no observation of her own), creates a group on
//! it, and her post is acknowledged by S; bob, invited, reads it.
//!
//! Over the private Tor network (fails, never skips, without tor), and the
//! same scenario over the development transport.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cwtch_tests::testnet::TestNetwork;
use serde_json::Value;
use support::{Daemon, cli, init, wait_for, wait_ready};

fn tor_flags(net: &TestNetwork, i: usize) -> Vec<String> {
    let c = &net.clients()[i];
    vec![
        "--tor-socks".into(),
        c.socks_addr.to_string(),
        "--tor-control".into(),
        c.control_addr.to_string(),
    ]
}

fn servers(home: &Path) -> Vec<Value> {
    cli(home, &["servers"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn entry(home: &Path, address: &str) -> Option<Value> {
    servers(home)
        .into_iter()
        .find(|s| s["address"].as_str() == Some(address))
}

fn messages(home: &Path, conversation: &str) -> Vec<Value> {
    cli(home, &["messages", conversation])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// The scenario; `flags(i)` gives the transport flags of process `i`
/// (0: the server, 1: bob, 2: carol).
fn carol_finds_a_server_through_bob(
    root: &Path,
    flags: &dyn Fn(usize) -> Vec<String>,
    limit: Duration,
) {
    let server_home = root.join("server");
    let v = cli(
        &server_home,
        &[
            "server",
            "init",
            "--pow-bits",
            "4",
            "--max-blobs",
            "5000",
            "--max-age-days",
            "30",
        ],
    )
    .unwrap();
    let s_addr = v["address"].as_str().unwrap().to_string();
    let info = cli(&server_home, &["server", "info"]).unwrap();
    assert_eq!(
        info["advert"]["hex"].as_str().map(str::len),
        Some(2 * 148),
        "server info shows the signed advert"
    );
    let _server = Daemon::start(&server_home, true, &flags(0));
    let homes: Vec<PathBuf> = ["bob", "carol"].iter().map(|n| root.join(n)).collect();
    let bob = init(&homes[0], "bob");
    let carol = init(&homes[1], "carol");
    let _b = Daemon::start(&homes[0], false, &flags(1));
    let mut c = Daemon::start(&homes[1], false, &flags(2));
    wait_ready(&homes[0]);
    wait_ready(&homes[1]);

    // Bob uses S: he connects, fetches its advert and verifies it.
    cli(&homes[0], &["group", "create", "bobs", "--server", &s_addr]).unwrap();
    let bobs_view = wait_for("bob to fetch S's advert", limit, || {
        entry(&homes[0], &s_addr).filter(|e| e["advert"]["valid"] == true)
    });
    assert_eq!(bobs_view["source"], "own_use");
    assert_eq!(bobs_view["reachable"], true);
    assert_eq!(bobs_view["advert"]["requirements"]["pow_bits"], 4);
    assert_eq!(bobs_view["advert"]["retention"]["max_entries"], 5000);
    assert_eq!(
        bobs_view["advert"]["retention"]["max_age_secs"],
        30 * 86_400
    );
    assert!(servers(&homes[1]).is_empty(), "carol knows no server yet");

    // Bob and carol become contacts; bob shares what he knows.
    cli(&homes[0], &["contact", "add", &carol]).unwrap();
    cli(&homes[1], &["contact", "add", &bob]).unwrap();
    let carols_view = wait_for("carol to learn S from bob", limit, || {
        entry(&homes[1], &s_addr)
    });
    assert_eq!(carols_view["source"]["contact"]["address"], bob.as_str());
    assert_eq!(carols_view["advert"]["valid"], true);
    assert_eq!(carols_view["advert"]["requirements"]["pow_bits"], 4);
    // Only her own observations count: she has none.
    assert_eq!(carols_view["used"], false);
    assert_eq!(carols_view["reachable"], Value::Null);
    assert_eq!(carols_view["observed"]["connections"], 0);
    assert_eq!(carols_view["score"], 500);

    // Carol creates a group on the server she found and posts.
    let listed = servers(&homes[1]);
    let found = listed[0]["address"].as_str().unwrap().to_string();
    assert_eq!(found, s_addr);
    cli(
        &homes[1],
        &["group", "create", "carols", "--server", &found],
    )
    .unwrap();
    cli(
        &homes[1],
        &["group", "send", "carols", "found you through bob"],
    )
    .unwrap();
    wait_for("S to acknowledge carol's post", limit, || {
        let m = messages(&homes[1], "carols");
        (m.len() == 1 && m[0]["status"] == "delivered").then_some(())
    });
    let after = wait_for("carol's own observation of S", limit, || {
        entry(&homes[1], &s_addr).filter(|e| e["used"] == true)
    });
    assert!(after["observed"]["connections"].as_u64().unwrap() >= 1);
    assert_eq!(after["reachable"], true);

    // Bob joins through an invite and reads carol's posts from S: her
    // first one too, although his cursor on S (read for his own group) was
    // past it (joining a group reads its servers again from the start).
    cli(&homes[1], &["group", "invite", "carols", &bob]).unwrap();
    support::accept_invite(&homes[0], "carols", limit);
    wait_for("bob to join carol's group", limit, || {
        cli(&homes[0], &["group", "list"])
            .ok()?
            .as_array()?
            .iter()
            .any(|g| g["name"] == "carols")
            .then_some(())
    });
    cli(&homes[1], &["group", "send", "carols", "welcome, bob"]).unwrap();
    let bobs = wait_for("bob to read carol's posts", limit, || {
        let m = messages(&homes[0], "carols");
        m.iter().any(|m| m["text"] == "welcome, bob").then_some(m)
    });
    let texts: Vec<&str> = bobs.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, ["found you through bob", "welcome, bob"]);

    // The directory is in carol's encrypted profile: it survives a restart.
    c.kill9();
    drop(c);
    let _c = Daemon::start(&homes[1], false, &flags(2));
    wait_ready(&homes[1]);
    let kept = entry(&homes[1], &s_addr).expect("the directory survives a restart");
    assert_eq!(kept["source"]["contact"]["address"], bob.as_str());
    assert_eq!(kept["used"], true);
    assert!(kept["observed"]["connections"].as_u64().unwrap() >= 1);
    // The plain-words form names the server, where it came from, and its terms.
    let out = std::process::Command::new(support::bin())
        .args(["--home", homes[1].to_str().unwrap(), "servers"])
        .env("CWTCH_PASSWORD", support::PASSWORD)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("carol's `servers`:\n{text}");
    assert!(out.status.success());
    assert!(text.contains(&s_addr), "{text}");
    assert!(text.contains("from contact"), "{text}");
    assert!(text.contains("proof of work 4 bits"), "{text}");
    assert!(
        text.contains("keeps 5000 blobs / 10737418240 bytes / 30 days"),
        "{text}"
    );
}

#[test]
fn carol_learns_a_server_from_bob_over_tor() {
    let net = TestNetwork::start(3).expect("private Tor network (is tor installed?)");
    println!("private Tor network up in {:?}", net.startup_time());
    let tmp = tempfile::tempdir().unwrap();
    carol_finds_a_server_through_bob(
        tmp.path(),
        &|i| tor_flags(&net, i),
        Duration::from_secs(240),
    );
}

#[test]
fn carol_learns_a_server_from_bob_over_dev_tcp() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = tmp.path().join("dev");
    let flags = |_| vec!["--dev-tcp".to_string(), dev.display().to_string()];
    carol_finds_a_server_through_bob(tmp.path(), &flags, Duration::from_secs(60));
}
