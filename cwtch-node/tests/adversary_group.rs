//! Malicious group members and a malicious server against real
//! `cwtch-node` peers over the dev transport (SECURITY.md, "The server" and
//! "A malicious group member").
//!
//! - A member (mallory, whose profile the test opens to take her key and
//!   the group secret) forges messages in another member's name and
//!   equivocates (two different messages with one sequence number), posting
//!   blobs sealed with `cwtch-proto` directly to the real server.
//! - A fake server, built here from `cwtch-proto`'s connection and the
//!   server wire, stores what members post but serves a member a doctored
//!   log: a message withheld, one duplicated, two reordered, an old blob
//!   replayed, a blob sealed for another server and one from another group.

mod support;
#[path = "support/wire.rs"]
mod wire;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use cwtch_node::store::records::GroupRecord;
use cwtch_proto::group::message::{MessageHash, MessageKind};
use cwtch_proto::group::{Group, GroupSecret, SEALED_BLOB_LEN, SenderChain, ServerList};
use cwtch_proto::{Identity, OnionAddress};
use serde_json::Value;
use support::{Daemon, PASSWORD, cli, init, wait_for, wait_ready};
use wire::{RawLink, ServerUser, resolve, rng, server_wire};

fn dev(dir: &Path) -> Vec<String> {
    vec!["--dev-tcp".into(), dir.display().to_string()]
}

fn unhex<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn server_addr(s: &str) -> OnionAddress {
    let a = s.strip_prefix("cwtch-server:").unwrap_or(s);
    OnionAddress::parse(a.split('?').next().unwrap()).unwrap()
}

/// A member's key and the (only) group of a stopped member's profile.
fn steal(home: &Path) -> (Identity, GroupRecord, Group) {
    let (store, identity, _) = cwtch_node::store::open_profile(home, PASSWORD.as_bytes()).unwrap();
    let record: GroupRecord = cwtch_node::store::groups_of(&store).unwrap().remove(0);
    let mut servers = ServerList::new();
    for s in &record.servers {
        servers.push(server_addr(s)).unwrap();
    }
    let group = Group::from_secret(
        GroupSecret::from_bytes(&unhex::<32>(&record.secret)),
        servers,
    );
    (identity, record, group)
}

/// Seals `text` as `sender`'s message number `seq` after `prev`.
fn seal(
    group: &Group,
    sender: &Identity,
    server: &OnionAddress,
    seq: u64,
    prev: [u8; 32],
    text: &str,
) -> ([u8; SEALED_BLOB_LEN], [u8; 32]) {
    let chain = SenderChain::resume(seq, MessageHash(prev));
    let msg = chain.next_message(
        MessageKind::TEXT,
        text.as_bytes(),
        cwtch_proto::UnixMicros::from_micros(1_764_000_000_000_000),
        &[],
    );
    let mut out = [0u8; SEALED_BLOB_LEN];
    let sealed = group
        .keys()
        .seal(sender, server, &msg, &mut rng(), &mut out)
        .unwrap();
    (out, sealed.hash.0)
}

/// The group's sealing key, from the secret (SPEC.md section 5).
fn seal_key(secret: &[u8; 32]) -> [u8; 32] {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"cwtch-rs group key schedule v1"), secret);
    let mut k = [0u8; 32];
    hk.expand(b"cwtch group seal key v1", &mut k).unwrap();
    k
}

/// Decrypts a blob, lets `edit` change the plaintext, and re-encrypts it
/// under the same nonce and tag: what any member can do.
fn reseal(
    secret: &[u8; 32],
    blob: &[u8; SEALED_BLOB_LEN],
    edit: impl Fn(&mut Vec<u8>),
) -> [u8; SEALED_BLOB_LEN] {
    let aead = XChaCha20Poly1305::new(&seal_key(secret).into());
    let nonce: [u8; 24] = blob[..24].try_into().unwrap();
    let aad = &blob[..40];
    let mut pt = aead
        .decrypt(
            &nonce.into(),
            Payload {
                msg: &blob[40..],
                aad,
            },
        )
        .unwrap();
    edit(&mut pt);
    let ct = aead
        .encrypt(&nonce.into(), Payload { msg: &pt, aad })
        .unwrap();
    let mut out = *blob;
    out[40..].copy_from_slice(&ct);
    out
}

/// The texts of the messages held (not the placeholders of missing ones).
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

/// The placeholders shown for messages known to be missing.
fn placeholders(home: &Path, group: &str) -> Vec<Value> {
    cli(home, &["messages", group])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m["status"] == "missing")
        .collect()
}

fn group_info(home: &Path) -> Value {
    cli(home, &["group", "list"]).unwrap()[0].clone()
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

/// Two peers that are each other's contacts, both in group `g` on `server`.
struct Members {
    _tmp: tempfile::TempDir,
    devdir: PathBuf,
    homes: [PathBuf; 2],
    addrs: [String; 2],
    daemons: [Option<Daemon>; 2],
}

impl Members {
    fn new(tmp: tempfile::TempDir, devdir: PathBuf, server: &str) -> Members {
        let homes = [tmp.path().join("alice"), tmp.path().join("mallory")];
        let addrs = [init(&homes[0], "alice"), init(&homes[1], "mallory")];
        let daemons = [
            Some(Daemon::start(&homes[0], false, &dev(&devdir))),
            Some(Daemon::start(&homes[1], false, &dev(&devdir))),
        ];
        for h in &homes {
            wait_ready(h);
        }
        cli(&homes[0], &["contact", "add", &addrs[1]]).unwrap();
        cli(&homes[1], &["contact", "add", &addrs[0]]).unwrap();
        cli(&homes[0], &["group", "create", "g", "--server", server]).unwrap();
        cli(&homes[0], &["group", "invite", "g", &addrs[1]]).unwrap();
        support::accept_invite(&homes[1], "g", Duration::from_secs(60));
        for h in &homes {
            wait_for("both members synced", Duration::from_secs(60), || {
                let g = cli(h, &["group", "list"]).ok()?;
                (g[0]["servers"][0]["connection"]["state"] == "synced").then_some(())
            });
        }
        Members {
            _tmp: tmp,
            devdir,
            homes,
            addrs,
            daemons,
        }
    }
}

#[test]
fn a_member_cannot_forge_and_equivocation_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let s_home = tmp.path().join("server");
    let v = cli(&s_home, &["server", "init"]).unwrap();
    let server_id = v["server"].as_str().unwrap().to_string();
    let server = server_addr(&server_id);
    let _s = Daemon::start(&s_home, true, &dev(&devdir));
    let mut m = Members::new(tmp, devdir, &server_id);
    let (alice_home, mallory_home) = (m.homes[0].clone(), m.homes[1].clone());
    cli(&alice_home, &["group", "send", "g", "alice 0"]).unwrap();
    cli(&mallory_home, &["group", "send", "g", "mallory 0"]).unwrap();
    wait_for("both posts at alice", Duration::from_secs(60), || {
        (texts(&alice_home, "g").len() == 2).then_some(())
    });
    // Mallory stops her node and acts by hand with her key and the secret.
    m.daemons[1].take();
    let (mallory, record, group) = steal(&mallory_home);
    let secret = unhex::<32>(&record.secret);
    let alice_key = OnionAddress::parse(&m.addrs[0]).unwrap().public_identity();
    let addr = resolve(&m.devdir, server.as_str()).unwrap();
    let mut user = ServerUser::connect(addr, &server, Duration::from_secs(20)).unwrap();
    let prev = unhex::<32>(&record.prev_hash);

    // Forgery 1: her own sealed message, re-encrypted with alice's key as
    // the sender (mallory cannot sign for alice).
    let (own, _) = seal(
        &group,
        &mallory,
        &server,
        5,
        prev,
        "forged: alice says pay mallory",
    );
    let forged = reseal(&secret, &own, |pt| {
        pt[34..66].copy_from_slice(alice_key.as_bytes())
    });
    // Forgery 2: a genuine-looking blob with its ciphertext altered.
    let (mut tampered, _) = seal(&group, &mallory, &server, 6, prev, "forged: tampered");
    tampered[1000] ^= 1;
    // Forgery 3: a message of this group re-sealed by a member for another
    // server, posted here (the signature binds the server).
    let other = Identity::generate(&mut rng()).address();
    let (elsewhere, _) = seal(
        &group,
        &mallory,
        &other,
        7,
        prev,
        "forged: for another server",
    );
    for blob in [&forged, &tampered, &elsewhere] {
        assert!(user.post(blob, Duration::from_secs(20)).is_some());
    }
    // Equivocation: two different messages numbered 1, both after her
    // message 0.
    let (one, _) = seal(&group, &mallory, &server, 1, prev, "mallory 1, version A");
    let (two, _) = seal(&group, &mallory, &server, 1, prev, "mallory 1, version B");
    assert!(user.post(&one, Duration::from_secs(20)).is_some());
    assert!(user.post(&two, Duration::from_secs(20)).is_some());

    wait_for(
        "alice to report the equivocation",
        Duration::from_secs(60),
        || {
            gaps(&alice_home)
                .iter()
                .any(|g| g.contains("equivocation"))
                .then_some(())
        },
    );
    let seen = texts(&alice_home, "g");
    assert!(
        seen.iter().all(|t| !t.starts_with("forged")),
        "no forged message is shown: {seen:?}"
    );
    let versions = seen.iter().filter(|t| t.starts_with("mallory 1")).count();
    assert_eq!(versions, 1, "one version of message 1 is shown: {seen:?}");
    // Alice's node saw each forgery and refused it.
    let log = m.daemons[0].as_ref().unwrap().log_text();
    for why in [
        "bad sender signature",
        "failed authentication",
        "another server",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("failed to open") && l.to_lowercase().contains(why)),
            "a forgery refused for its {why}:\n{log}"
        );
    }
    // Alice's own message and mallory's genuine one are intact.
    assert!(seen.contains(&"alice 0".to_string()));
    assert!(seen.contains(&"mallory 0".to_string()));
}

/// What the fake server serves the next client that fetches.
type Doctored = Arc<Mutex<Option<Vec<(u64, Vec<u8>)>>>>;

/// A fake server: stores posts honestly; serves `doctored` (when set)
/// instead of what it stores.
fn fake_server(
    identity: Identity,
    listener: TcpListener,
    log: Arc<Mutex<Vec<Vec<u8>>>>,
    doctored: Doctored,
) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (identity, log, doctored) = (identity.clone(), log.clone(), doctored.clone());
        std::thread::spawn(move || serve_fake(identity, stream, log, doctored));
    }
}

fn serve_fake(
    identity: Identity,
    stream: TcpStream,
    log: Arc<Mutex<Vec<Vec<u8>>>>,
    doctored: Doctored,
) {
    let mut link = RawLink::respond(stream, identity);
    let view = || -> Vec<(u64, Vec<u8>)> {
        match &*doctored.lock().unwrap() {
            Some(v) => v.clone(),
            None => log
                .lock()
                .unwrap()
                .iter()
                .enumerate()
                .map(|(i, b)| (i as u64 + 1, b.clone()))
                .collect(),
        }
    };
    let head = |v: &[(u64, Vec<u8>)]| v.last().map(|e| e.0).unwrap_or(0);
    link.send(&server_wire::hello(1, head(&view()), 64));
    let mut post_seq = 0;
    loop {
        let msg = match link.next(Duration::from_secs(1)) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(_) => return,
        };
        match msg.first() {
            Some(0x01) | Some(0x02) => {
                let blob = msg[msg.len() - SEALED_BLOB_LEN..].to_vec();
                let mut l = log.lock().unwrap();
                l.push(blob);
                link.send(&server_wire::posted(post_seq, l.len() as u64));
                post_seq += 1;
            }
            Some(0x03) => {
                let after = server_wire::u64_at(&msg, 1);
                let v = view();
                for (i, b) in v.iter().filter(|e| e.0 > after) {
                    link.send(&server_wire::entry(*i, b));
                }
                let h = head(&v);
                link.send(&server_wire::page_end(after.max(h), h));
            }
            Some(0x04) => link.send(&server_wire::subscribed(server_wire::u64_at(&msg, 1))),
            _ => {}
        }
    }
}

#[test]
fn a_malicious_server_cannot_hide_gaps_or_inject_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    std::fs::create_dir_all(&devdir).unwrap();
    // The fake server, published on the dev transport like a real one.
    let identity = Identity::generate(&mut rng());
    let fake = identity.address();
    let listener = wire::listen_dev(&devdir, &fake);
    let log = Arc::new(Mutex::new(Vec::new()));
    let doctored: Doctored = Arc::new(Mutex::new(None));
    {
        let (log, doctored) = (log.clone(), doctored.clone());
        std::thread::spawn(move || fake_server(identity, listener, log, doctored));
    }
    let server_id = format!("cwtch-server:{}", fake.as_str());
    let mut m = Members::new(tmp, devdir.clone(), &server_id);
    let (alice_home, bob_home) = (m.homes[0].clone(), m.homes[1].clone());
    // The observer ("bob", the second member) goes offline; alice posts six
    // messages, which the fake server acknowledges and stores.
    m.daemons[1].take();
    let posts: Vec<String> = (0..6).map(|i| format!("alice {i}")).collect();
    for p in &posts {
        cli(&alice_home, &["group", "send", "g", p]).unwrap();
    }
    wait_for(
        "the fake server to hold the posts",
        Duration::from_secs(60),
        || (log.lock().unwrap().len() == 6).then_some(()),
    );
    m.daemons[0].take();
    let (alice, _, group) = steal(&alice_home);
    let stored = log.lock().unwrap().clone();
    // Blobs the server could get elsewhere: alice's message sealed for
    // another server of the group (as if copied from there), and a blob of
    // another group.
    let other = Identity::generate(&mut rng()).address();
    let (for_other_server, _) = seal(&group, &alice, &other, 6, [0; 32], "alice 6 elsewhere");
    let mut servers = ServerList::new();
    servers.push(fake).unwrap();
    let other_group = Group::generate(&mut rng(), servers);
    let (other_group_blob, _) = seal(&other_group, &alice, &fake, 0, [0; 32], "other group");
    // The doctored log: 0, (1 withheld), 2, 2 again, 4 before 3, 0 replayed,
    // then the foreign blobs, then 5.
    let order: Vec<Vec<u8>> = vec![
        stored[0].clone(),
        stored[2].clone(),
        stored[2].clone(),
        stored[4].clone(),
        stored[3].clone(),
        stored[0].clone(),
        for_other_server.to_vec(),
        other_group_blob.to_vec(),
        stored[5].clone(),
    ];
    *doctored.lock().unwrap() = Some(
        order
            .into_iter()
            .enumerate()
            .map(|(i, b)| (i as u64 + 1, b))
            .collect(),
    );
    m.daemons[1] = Some(Daemon::start(&bob_home, false, &dev(&devdir)));
    wait_ready(&bob_home);
    wait_for(
        "bob to sync the doctored log",
        Duration::from_secs(60),
        || (texts(&bob_home, "g").len() >= 5).then_some(()),
    );
    // Let every doctored blob be processed.
    wait_for("bob synced", Duration::from_secs(60), || {
        let g = group_info(&bob_home);
        (g["servers"][0]["connection"]["state"] == "synced").then_some(())
    });
    let mut seen = texts(&bob_home, "g");
    seen.sort();
    assert_eq!(
        seen,
        ["alice 0", "alice 2", "alice 3", "alice 4", "alice 5"],
        "each genuine message once; nothing replayed, duplicated or foreign"
    );
    // The withheld one is shown as missing, in its place, with the reason.
    let holes = placeholders(&bob_home, "g");
    assert_eq!(holes.len(), 1, "{holes:?}");
    assert!(
        holes[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("1 message(s) from")
    );
    assert!(holes[0]["note"].is_string());
    let info = group_info(&bob_home);
    assert_eq!(
        info["missing"], 1,
        "the withheld message is missing: {info}"
    );
    let reported = gaps(&bob_home);
    assert!(
        reported
            .iter()
            .any(|g| g.contains("missing: messages 1..=1")),
        "the gap is reported: {reported:?}"
    );
    let log = m.daemons[1].as_ref().unwrap().log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("failed to open") && l.contains("server")),
        "the blob sealed for another server was refused:\n{log}"
    );
}
