//! Offline first contact over the development transport (no Tor): bob
//! makes a mailbox and goes offline; alice, who has only his extended
//! identifier, adds him with a first message and goes offline once the
//! server holds the request; bob comes back and finds both. Then the same
//! message delivered directly is not shown twice, and the server's files
//! hold neither the text nor an address nor a name.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{Daemon, cli, conversation, init, wait_for, wait_ready};

fn dev(dir: &Path) -> Vec<String> {
    vec!["--dev-tcp".into(), dir.display().to_string()]
}

fn files_contain(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in walk(dir) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        if bytes.windows(needle.len()).any(|w| w == needle) {
            hits.push(entry.display().to_string());
        }
    }
    hits
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn first_contact_while_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let server_home = tmp.path().join("server");
    let server_id = cli(&server_home, &["server", "init"]).unwrap()["server"]
        .as_str()
        .unwrap()
        .to_string();
    let _server = Daemon::start(&server_home, true, &dev(&devdir));
    let (alice_home, bob_home) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let alice = init(&alice_home, "alice");
    let bob = init(&bob_home, "bob");

    // Bob: a mailbox, his extended identifier, then offline.
    let mut bobd = Daemon::start(&bob_home, false, &dev(&devdir));
    wait_ready(&bob_home);
    assert_eq!(
        cli(&bob_home, &["identifier"]).unwrap()["identifier"],
        bob.as_str()
    );
    let id = cli(&bob_home, &["mailbox", "create", &server_id]).unwrap();
    let identifier = id["identifier"].as_str().unwrap().to_string();
    assert!(
        identifier.starts_with(&format!("cwtch:{bob}?server=")),
        "{identifier}"
    );
    bobd.kill9();
    // Without a daemon the identifier is read from the profile.
    assert_eq!(
        cli(&bob_home, &["identifier"]).unwrap()["identifier"],
        identifier.as_str()
    );

    // Alice: only the identifier; adds bob with a first message; waits for
    // the server's acknowledgement; offline.
    let text = "hello bob, it is alice; we met at the station";
    let mut aliced = Daemon::start(&alice_home, false, &dev(&devdir));
    wait_ready(&alice_home);
    // A typo in the identifier is refused before anything is stored.
    let mut typo = identifier.clone().into_bytes();
    let last = typo.len() - 2;
    typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
    let err = cli(
        &alice_home,
        &[
            "contact",
            "add",
            std::str::from_utf8(&typo).unwrap(),
            "--message",
            text,
        ],
    )
    .unwrap_err();
    assert!(err.contains("checksum"), "{err}");
    cli(
        &alice_home,
        &["contact", "add", &identifier, "--message", text],
    )
    .unwrap();
    wait_for(
        "the server to store the request",
        Duration::from_secs(60),
        || {
            let s = cli(&alice_home, &["status"]).ok()?;
            (s["first_contact_pending"] == 0).then_some(())
        },
    );
    aliced.kill9();

    // Bob comes back: the request and the message are there.
    let _bobd = Daemon::start(&bob_home, false, &dev(&devdir));
    wait_ready(&bob_home);
    wait_for("the contact request", Duration::from_secs(60), || {
        let list = cli(&bob_home, &["contact", "list"]).ok()?;
        let c = list
            .as_array()?
            .iter()
            .find(|c| c["contact"]["address"] == alice.as_str())?
            .clone();
        (c["contact"]["state"] == "request" && c["contact"]["name"] == "alice").then_some(())
    });
    assert_eq!(
        conversation(&bob_home, &alice),
        vec![(false, text.to_string(), "received".to_string())]
    );

    // Alice comes back and delivers the same message directly: bob acks
    // it (alice sees it delivered) and still shows it once.
    let _aliced = Daemon::start(&alice_home, false, &dev(&devdir));
    wait_ready(&alice_home);
    cli(&bob_home, &["contact", "accept", &alice]).unwrap();
    wait_for("the direct delivery's ack", Duration::from_secs(60), || {
        let c = conversation(&alice_home, &bob);
        (c.first()?.2 == "delivered").then_some(())
    });
    assert_eq!(conversation(&bob_home, &alice).len(), 1);

    // The server learned nothing readable.
    for needle in [text.as_bytes(), alice.as_bytes(), bob.as_bytes(), b"alice"] {
        let hits = files_contain(&server_home, needle);
        assert!(
            hits.is_empty(),
            "{:?} found in {hits:?}",
            String::from_utf8_lossy(needle)
        );
    }
    let blobs = cli(&server_home, &["server", "info"]).unwrap();
    println!("server info: {blobs}");

    // Rotation keeps the old mailbox read for a grace period, listed by
    // `identifier`; --revoke-old drops every earlier one.
    let rotated = cli(&bob_home, &["mailbox", "create", &server_id]).unwrap();
    assert_ne!(rotated["identifier"], identifier.as_str());
    assert_eq!(rotated["retired_mailboxes"].as_array().unwrap().len(), 1);
    let revoked = cli(
        &bob_home,
        &["mailbox", "create", &server_id, "--revoke-old"],
    )
    .unwrap();
    assert_eq!(revoked["retired_mailboxes"], serde_json::json!([]));
}
