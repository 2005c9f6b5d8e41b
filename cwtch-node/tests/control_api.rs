//! The control API over the real socket of a real daemon (dev transport):
//! the version exchange, several requests per connection, typed errors,
//! the numbered event stream with resync, the lagged notice for a slow
//! subscriber, shutdown, and the command line's exit codes.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cwtch_node::control::api::{ErrorCode, Event, Request};
use cwtch_node::control::client::{Client, ClientError};
use cwtch_node::control::events::{KEEP_EVENTS, SUBSCRIBER_QUEUE};
use cwtch_node::control::socket_path;
use cwtch_proto::Identity;
use serde_json::Value;
use support::{Daemon, PASSWORD, bin, init, wait_for, wait_ready};

fn dev(dir: &Path) -> Vec<String> {
    vec!["--dev-tcp".into(), dir.display().to_string()]
}

fn raw_exchange(home: &Path, first: &str) -> Value {
    let mut s = UnixStream::connect(socket_path(home)).unwrap();
    s.write_all(first.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn exit_code(home: &Path, args: &[&str], password: &str) -> i32 {
    Command::new(bin())
        .arg("--home")
        .arg(home)
        .args(args)
        .env("CWTCH_PASSWORD", password)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

#[test]
fn the_control_api_versions_streams_resyncs_and_tells_a_slow_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let home = tmp.path().join("alice");
    let address = init(&home, "alice");
    let mut daemon = Daemon::start(&home, false, &dev(&devdir));
    wait_ready(&home);

    // Another version is refused, clearly; a first line that is not a
    // hello is a bad request.
    let v = raw_exchange(&home, "{\"api\":999,\"client\":\"future\"}\n");
    assert_eq!(v["error"]["code"], "unsupported_version", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("version 1")
    );
    let v = raw_exchange(&home, "{\"type\":\"status\"}\n");
    assert_eq!(v["error"]["code"], "bad_request", "{v}");

    // Several requests on one connection, each answered under its id.
    let mut c = Client::connect(&home, "test").unwrap();
    assert_eq!(c.welcome().address, address);
    assert_eq!(
        c.request(Request::Address).unwrap()["address"],
        address.as_str()
    );
    let stranger = Identity::from_seed(&[9; 32]).address().to_string();
    c.request(Request::ContactAdd {
        address: stranger.clone(),
        message: None,
        nickname: Some("sam".into()),
    })
    .unwrap();
    match c.request(Request::Send {
        to: "nobody".into(),
        text: "x".into(),
    }) {
        Err(ClientError::Api(e)) => assert_eq!(e.code, ErrorCode::NotFound),
        other => panic!("{other:?}"),
    }
    match c.request(Request::Send {
        to: "sam".into(),
        text: "x".repeat(100_000),
    }) {
        Err(ClientError::Api(e)) => assert_eq!(e.code, ErrorCode::BadRequest, "{e}"),
        other => panic!("a request longer than the limit: {other:?}"),
    }

    // A subscriber sees every new event, numbered.
    let mut live = Client::connect(&home, "live").unwrap();
    live.subscribe(None).unwrap();
    c.request(Request::Send {
        to: "sam".into(),
        text: "first".into(),
    })
    .unwrap();
    let ev = wait_event(&mut live, |e| matches!(e, Event::Message { .. }));
    let first_seq = ev.seq;
    match &ev.event {
        Event::Message { message } => {
            assert_eq!(message["text"], "first");
            assert_eq!(message["status"], "pending");
            assert!(
                message["note"].as_str().unwrap().starts_with("waiting"),
                "{message}"
            );
        }
        _ => unreachable!(),
    }

    // A subscriber that does not read is told how many events it lost,
    // never dropped silently.
    let mut slow = Client::connect(&home, "slow").unwrap();
    slow.subscribe(None).unwrap();
    let burst = 3 * SUBSCRIBER_QUEUE + 2000;
    for i in 0..burst {
        c.request(Request::Send {
            to: "sam".into(),
            text: format!("burst {i:05} {}", "y".repeat(200)),
        })
        .unwrap();
    }
    let mut lagged = 0;
    let mut last = 0;
    let mut messages = 0;
    while let Some(ev) = slow.next_event(Some(Duration::from_secs(2))).unwrap() {
        assert!(
            ev.seq > last || matches!(ev.event, Event::Lagged { .. }),
            "in order"
        );
        match ev.event {
            Event::Lagged { dropped } => lagged += dropped,
            Event::Message { .. } => messages += 1,
            _ => {}
        }
        last = last.max(ev.seq);
    }
    eprintln!("slow reader: {messages} messages, {lagged} lagged, last {last}");
    assert!(
        lagged > 0,
        "the slow reader was told ({messages} messages read)"
    );
    assert!(
        messages + lagged as usize >= burst,
        "{messages} + {lagged} < {burst}"
    );

    // It resyncs with "everything since N": the daemon kept the latest.
    let since = last - (KEEP_EVENTS as u64) / 2;
    let mut again = Client::connect(&home, "again").unwrap();
    again.subscribe(Some(since)).unwrap();
    let mut expect = since + 1;
    while expect <= last {
        let ev = again
            .next_event(Some(Duration::from_secs(5)))
            .unwrap()
            .expect("kept events");
        assert_eq!(ev.seq, expect, "every event since {since}, in order");
        expect += 1;
    }
    assert!(first_seq < since || first_seq >= 1);

    // `events` on the command line prints what is kept.
    let out = Command::new(bin())
        .arg("--home")
        .arg(&home)
        .args(["--json", "events", "--since", &(last - 3).to_string()])
        .output()
        .unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.first().unwrap()["seq"], last - 2, "{lines:?}");

    // Exit codes: bad input 2; refused 4 (wrong password); not running 3.
    assert_eq!(exit_code(&home, &["send", "nobody", "x"], PASSWORD), 2);
    assert_eq!(
        exit_code(&home, &["contact", "accept", "not an address"], PASSWORD),
        2
    );
    // Stop: subscribers are told, the daemon exits, the socket is gone.
    while live
        .next_event(Some(Duration::from_secs(1)))
        .unwrap()
        .is_some()
    {}
    assert_eq!(exit_code(&home, &["stop"], PASSWORD), 0);
    wait_event(&mut live, |e| matches!(e, Event::ShuttingDown));
    wait_for("the daemon to exit", Duration::from_secs(10), || {
        daemon.try_wait()
    });
    assert!(!socket_path(&home).exists());
    assert_eq!(exit_code(&home, &["status"], PASSWORD), 3);
    assert_eq!(exit_code(&home, &["address"], "wrong password"), 4);
    assert_eq!(
        exit_code(&home, &["address"], PASSWORD),
        0,
        "read from the profile"
    );
}

fn wait_event(
    client: &mut Client,
    f: impl Fn(&Event) -> bool,
) -> cwtch_node::control::api::EventEnvelope {
    for _ in 0..10_000 {
        match client.next_event(Some(Duration::from_secs(10))).unwrap() {
            Some(ev) if f(&ev.event) => return ev,
            Some(_) => continue,
            None => break,
        }
    }
    panic!("the event did not come");
}

/// SIGTERM while messages flow: subscribers are told, the daemon exits 0,
/// and every message the sender saw acknowledged is in the profile after a
/// restart.
#[test]
fn sigterm_stops_a_peer_gracefully_and_keeps_what_it_acknowledged() {
    use support::{cli, conversation};
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let (a_home, b_home) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let alice = init(&a_home, "alice");
    let bob = init(&b_home, "bob");
    let _a = Daemon::start(&a_home, false, &dev(&devdir));
    let mut b = Daemon::start(&b_home, false, &dev(&devdir));
    wait_ready(&a_home);
    wait_ready(&b_home);
    cli(&b_home, &["contact", "add", &alice]).unwrap();
    cli(&a_home, &["contact", "add", &bob]).unwrap();
    let mut live = Client::connect(&b_home, "live").unwrap();
    live.subscribe(None).unwrap();
    for i in 0..40 {
        cli(&a_home, &["send", &bob, &format!("m{i:02}")]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let status = b.terminate(Duration::from_secs(10)).expect("bob stops");
    assert_eq!(status.code(), Some(0), "a graceful stop exits 0");
    wait_event(&mut live, |e| matches!(e, Event::ShuttingDown));
    assert!(!socket_path(&b_home).exists());
    let delivered: Vec<String> = conversation(&a_home, &bob)
        .into_iter()
        .filter(|m| m.2 == "delivered")
        .map(|m| m.1)
        .collect();
    assert!(
        !delivered.is_empty(),
        "some were acknowledged before the stop"
    );
    let _b = Daemon::start(&b_home, false, &dev(&devdir));
    wait_ready(&b_home);
    let stored: Vec<String> = conversation(&b_home, &alice)
        .into_iter()
        .map(|m| m.1)
        .collect();
    for text in &delivered {
        assert!(
            stored.contains(text),
            "{text} was acknowledged, so it is stored"
        );
    }
    // And the rest still arrive, in order, once.
    wait_for("all forty", Duration::from_secs(60), || {
        (conversation(&b_home, &alice).len() == 40).then_some(())
    });
    let texts: Vec<String> = conversation(&b_home, &alice)
        .into_iter()
        .map(|m| m.1)
        .collect();
    let expected: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
    assert_eq!(texts, expected);
}
