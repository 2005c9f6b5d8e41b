//! The control client against a scripted fake tor on loopback: the paths a
//! real tor rarely takes (a wrong ServiceID, events before the answer,
//! silence, garbage, a closed connection).

use core::net::SocketAddr;
use core::time::Duration;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use cwtch_proto::Identity;
use cwtch_transport_socks::control::{ControlAuth, ControlConnection, ControlError};

/// Serves one connection: each command line gets `script(line)` back
/// (nothing when `None`; the connection closes when the script says `b"CLOSE"`).
fn fake_tor(script: fn(&str) -> Option<Vec<u8>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            let reply = script(line.trim_end()).unwrap_or_default();
            if reply == b"CLOSE" || writer.write_all(&reply).is_err() {
                return;
            }
        }
    });
    addr
}

fn common(line: &str) -> Option<Vec<u8>> {
    if line == "PROTOCOLINFO 1" {
        Some(b"250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250-VERSION Tor=\"0.4.9.11\"\r\n250 OK\r\n".to_vec())
    } else if line == "AUTHENTICATE" || line.starts_with("SETEVENTS") {
        Some(b"250 OK\r\n".to_vec())
    } else {
        None
    }
}

const ALICE_SEED: [u8; 32] = [0xA1; 32];

fn alice() -> Identity {
    Identity::from_seed(&ALICE_SEED)
}

#[test]
fn service_id_mismatch_is_typed() {
    let addr = fake_tor(|line| {
        common(line).or_else(|| {
            line.starts_with("ADD_ONION ED25519-V3:").then(|| {
                // Another key's address.
                let other = Identity::from_seed(&[0xB0; 32]).address();
                format!("250-ServiceID={}\r\n250 OK\r\n", other.as_str()).into_bytes()
            })
        })
    });
    smol::block_on(async {
        let mut c = ControlConnection::open(addr, &ControlAuth::Auto)
            .await
            .unwrap();
        let r = c
            .add_onion(&alice(), 9878, "127.0.0.1:1".parse().unwrap())
            .await;
        match r {
            Err(ControlError::ServiceIdMismatch { expected, got }) => {
                assert_eq!(expected, alice().address().as_str());
                assert_ne!(got, expected);
            }
            other => panic!("expected ServiceIdMismatch, got {other:?}"),
        }
    });
}

#[test]
fn events_before_the_answer_are_queued() {
    let addr = fake_tor(|line| {
        common(line).or_else(|| {
            line.starts_with("ADD_ONION ").then(|| {
                let a = alice().address();
                format!(
                    "650 HS_DESC UPLOAD {a} UNKNOWN $AAAA\r\n250-ServiceID={a}\r\n\
                     650+HS_DESC_CONTENT {a} x $AAAA\r\ndescriptor\r\n.\r\n650 OK\r\n\
                     650 HS_DESC UPLOADED {a} UNKNOWN $AAAA\r\n250 OK\r\n",
                    a = a.as_str()
                )
                .into_bytes()
            })
        })
    });
    smol::block_on(async {
        let mut c = ControlConnection::open(addr, &ControlAuth::Auto)
            .await
            .unwrap();
        c.set_events(&["HS_DESC"]).await.unwrap();
        let id = alice();
        assert_eq!(
            c.add_onion(&id, 9878, "127.0.0.1:1".parse().unwrap())
                .await
                .unwrap(),
            id.address()
        );
        let ev = c
            .wait_uploaded(&id.address(), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(ev.action, "UPLOADED");
        assert_eq!(ev.hs_dir, "$AAAA");
    });
}

#[test]
fn silence_times_out_then_connection_is_out_of_step() {
    let addr = fake_tor(common);
    smol::block_on(async {
        let mut c = ControlConnection::open(addr, &ControlAuth::Auto)
            .await
            .unwrap();
        c.set_command_timeout(Duration::from_millis(200));
        let r = c.get_info("version").await;
        assert!(matches!(r, Err(ControlError::TimedOut { .. })), "{r:?}");
        let r = c.get_info("version").await;
        assert!(matches!(r, Err(ControlError::OutOfStep)), "{r:?}");
    });
}

#[test]
fn garbage_and_close_are_typed() {
    let addr = fake_tor(|line| {
        common(line).or_else(|| match line {
            "GETINFO version" => Some(b"hello there\r\n".to_vec()),
            _ => None,
        })
    });
    smol::block_on(async {
        let mut c = ControlConnection::open(addr, &ControlAuth::Auto)
            .await
            .unwrap();
        let r = c.get_info("version").await;
        assert!(matches!(r, Err(ControlError::Parse(_))), "{r:?}");
    });
    let addr = fake_tor(|line| common(line).or(Some(b"CLOSE".to_vec())));
    smol::block_on(async {
        let mut c = ControlConnection::open(addr, &ControlAuth::Auto)
            .await
            .unwrap();
        let r = c.get_info("version").await;
        assert!(matches!(r, Err(ControlError::Closed)), "{r:?}");
    });
}

#[test]
fn auth_without_usable_method() {
    let addr = fake_tor(|line| match line {
        "PROTOCOLINFO 1" => {
            Some(b"250-PROTOCOLINFO 1\r\n250-AUTH METHODS=HASHEDPASSWORD\r\n250 OK\r\n".to_vec())
        }
        _ => None,
    });
    smol::block_on(async {
        let r = ControlConnection::open(addr, &ControlAuth::Auto).await;
        match r {
            Err(ControlError::NoUsableAuth { offered }) => {
                assert_eq!(offered, vec!["HASHEDPASSWORD".to_string()])
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn nothing_listening_is_unreachable() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = smol::block_on(ControlConnection::connect(port));
    assert!(matches!(r, Err(ControlError::Unreachable { .. })), "{r:?}");
}

/// Serves one connection like [`fake_tor`], with a closure, and hands back
/// every line received once the client has closed the connection.
fn recording_fake_tor(
    script: impl Fn(&str) -> Option<Vec<u8>> + Send + 'static,
) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut received = Vec::new();
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let line = line.trim_end().to_owned();
            let reply = script(&line).unwrap_or_default();
            received.push(line);
            if writer.write_all(&reply).is_err() {
                break;
            }
        }
        received
    });
    (addr, handle)
}

fn protocol_info(methods: &str, cookie: Option<&std::path::Path>) -> Vec<u8> {
    let cookie = cookie
        .map(|p| format!(" COOKIEFILE=\"{}\"", p.display()))
        .unwrap_or_default();
    format!("250-PROTOCOLINFO 1\r\n250-AUTH METHODS={methods}{cookie}\r\n250 OK\r\n").into_bytes()
}

/// Answers everything a real tor would, so that only our refusal stops the
/// client: authentication, events and `ADD_ONION` succeed.
fn obliging(
    methods: &'static str,
    cookie: Option<std::path::PathBuf>,
) -> impl Fn(&str) -> Option<Vec<u8>> {
    move |line: &str| {
        if line == "PROTOCOLINFO 1" {
            Some(protocol_info(methods, cookie.as_deref()))
        } else if line.starts_with("ADD_ONION ") {
            Some(format!("250-ServiceID={}\r\n250 OK\r\n", alice().address().as_str()).into_bytes())
        } else {
            Some(b"250 OK\r\n".to_vec())
        }
    }
}

#[test]
fn a_probed_port_without_authentication_never_gets_the_key() {
    let (addr, fake) = recording_fake_tor(obliging("NULL", None));
    let transport = cwtch_transport_socks::TorTransport::new(
        "127.0.0.1:9".parse().unwrap(),
        addr,
        ControlAuth::AutoProbed,
    );
    let r = smol::block_on(cwtch_transport_socks::Transport::listen(
        &transport,
        &alice(),
        9878,
    ));
    let Err(err) = r else {
        panic!("a probed NULL control port is refused")
    };
    assert!(err.to_string().contains("not trusted"), "{err}");
    let received = fake.join().unwrap();
    assert_eq!(received, vec!["PROTOCOLINFO 1".to_string()], "only asked");

    let (addr, fake) = recording_fake_tor(obliging("NULL", None));
    let r = smol::block_on(ControlConnection::open(addr, &ControlAuth::AutoProbed));
    match r {
        Err(ControlError::Untrusted { why, .. }) => {
            assert_eq!(
                why,
                cwtch_transport_socks::control::trust::Distrust::NullAuth
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !fake
            .join()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("ADD_ONION"))
    );

    // A control port the user named keeps working as before.
    let (addr, fake) = recording_fake_tor(obliging("NULL", None));
    smol::block_on(async {
        let mut c = ControlConnection::open(addr, &ControlAuth::Auto)
            .await
            .unwrap();
        c.add_onion(&alice(), 9878, "127.0.0.1:1".parse().unwrap())
            .await
            .unwrap();
    });
    assert!(
        fake.join()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("ADD_ONION"))
    );
}

fn cookie_file(dir: &std::path::Path, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("cookie-{mode:o}"));
    std::fs::write(&path, [0x5A; 32]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn a_probed_port_needs_a_cookie_nobody_else_could_write() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o666, 0o620, 0o602] {
        let path = cookie_file(dir.path(), mode);
        let (addr, fake) = recording_fake_tor(obliging("COOKIE,SAFECOOKIE", Some(path.clone())));
        let r = smol::block_on(ControlConnection::open(addr, &ControlAuth::AutoProbed));
        match r {
            Err(ControlError::Untrusted { why, .. }) => assert_eq!(
                why,
                cwtch_transport_socks::control::trust::Distrust::CookieWritable(
                    path.clone(),
                    0o100000 | mode
                )
            ),
            other => panic!("mode {mode:o}: {other:?}"),
        }
        assert_eq!(fake.join().unwrap(), vec!["PROTOCOLINFO 1".to_string()]);
    }
    // A cookie only its owner (we, who also own the listening socket) can
    // write is used.
    let path = cookie_file(dir.path(), 0o640);
    let (addr, fake) = recording_fake_tor(obliging("COOKIE", Some(path)));
    smol::block_on(ControlConnection::open(addr, &ControlAuth::AutoProbed)).unwrap();
    let received = fake.join().unwrap();
    assert_eq!(
        received.last().unwrap(),
        &format!("AUTHENTICATE {}", "5A".repeat(32))
    );
    // A named control port takes the cookie as before.
    let path = cookie_file(dir.path(), 0o666);
    let (addr, fake) = recording_fake_tor(obliging("COOKIE", Some(path)));
    smol::block_on(ControlConnection::open(addr, &ControlAuth::Auto)).unwrap();
    drop(fake.join().unwrap());
}

#[test]
fn a_cookie_that_is_not_a_regular_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    let mut paths = vec![std::path::PathBuf::from("/dev/zero")];
    if made.is_ok_and(|s| s.success()) {
        paths.push(fifo);
    }
    for path in paths {
        for methods in ["COOKIE", "SAFECOOKIE"] {
            let (addr, fake) = recording_fake_tor(obliging(methods, Some(path.clone())));
            let start = std::time::Instant::now();
            let r = smol::block_on(ControlConnection::open(addr, &ControlAuth::Auto));
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "{path:?}: {:?}",
                start.elapsed()
            );
            match r {
                Err(ControlError::Cookie { path: p, .. }) => assert_eq!(p, path),
                other => panic!("{path:?}: {other:?}"),
            }
            assert_eq!(fake.join().unwrap(), vec!["PROTOCOLINFO 1".to_string()]);
        }
    }
}

#[test]
fn a_cookie_of_the_wrong_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for len in [0, 31, 33, 1 << 20] {
        let path = dir.path().join(format!("cookie-{len}"));
        std::fs::write(&path, vec![1u8; len]).unwrap();
        let (addr, fake) = recording_fake_tor(obliging("COOKIE", Some(path)));
        let r = smol::block_on(ControlConnection::open(addr, &ControlAuth::Auto));
        assert!(
            matches!(r, Err(ControlError::Cookie { .. })),
            "{len}: {r:?}"
        );
        drop(fake.join().unwrap());
    }
}

/// `HSFETCH` names the bare service id; the wait skips events it cannot
/// read, other services' events and the outcomes of other directories
/// than the one tor asked, and returns `RECEIVED`.
#[test]
fn a_descriptor_fetch_waits_for_its_own_outcome() {
    let addr = fake_tor(|line| {
        common(line).or_else(|| {
            let alice = Identity::from_seed(&ALICE_SEED).address();
            let bob = Identity::from_seed(&[0xB0; 32]).address();
            (line == format!("HSFETCH {}", alice.as_str())).then(|| {
                format!(
                    "250 OK\r\n\
                     650 HS_DESC\r\n\
                     650 HS_DESC REQUESTED {a} NO_AUTH $AAAA~relay0 ID\r\n\
                     650 HS_DESC RECEIVED {b} NO_AUTH $BBBB~relay1 ID\r\n\
                     650 HS_DESC FAILED {b} NO_AUTH $BBBB~relay1 ID REASON=NOT_FOUND\r\n\
                     650 HS_DESC FAILED {a} NO_AUTH $CCCC~relay2 ID REASON=NOT_FOUND\r\n\
                     650 HS_DESC RECEIVED {a} NO_AUTH $AAAA~relay0renamed ID\r\n",
                    a = alice.as_str(),
                    b = bob.as_str()
                )
                .into_bytes()
            })
        })
    });
    smol::block_on(async {
        let mut c = ControlConnection::open(addr, &ControlAuth::Auto)
            .await
            .unwrap();
        c.set_events(&["HS_DESC"]).await.unwrap();
        c.hs_fetch(&alice().address()).await.expect("HSFETCH");
        let ev = c
            .wait_fetched(&alice().address(), Duration::from_secs(5))
            .await
            .expect("RECEIVED");
        assert_eq!(ev.action, "RECEIVED");
        assert_eq!(ev.address, alice().address().as_str());
        assert_eq!(ev.hs_dir, "$AAAA~relay0renamed", "the same directory");
    });
}

/// A fetch the directory could not answer is a typed error with tor's
/// reason; a refused `HSFETCH` is `Rejected`; no directory named is
/// `NoHsDir`; a directory that never answers times out.
#[test]
fn a_failed_descriptor_fetch_is_typed() {
    let addr = fake_tor(|line| {
        common(line).or_else(|| {
            let alice = Identity::from_seed(&ALICE_SEED).address();
            if line == format!("HSFETCH {}", alice.as_str()) {
                Some(
                    format!(
                        "250 OK\r\n650 HS_DESC REQUESTED {a} NO_AUTH $AAAA~relay0 ID\r\n\
                         650 HS_DESC FAILED {a} NO_AUTH $AAAA~relay0 ID REASON=NOT_FOUND\r\n",
                        a = alice.as_str()
                    )
                    .into_bytes(),
                )
            } else if line
                == format!(
                    "HSFETCH {}",
                    Identity::from_seed(&[0xC0; 32]).address().as_str()
                )
            {
                // Accepted, and then nothing: no directory left to ask.
                Some(b"250 OK\r\n".to_vec())
            } else if line
                == format!(
                    "HSFETCH {}",
                    Identity::from_seed(&[0xD0; 32]).address().as_str()
                )
            {
                Some(
                    format!(
                        "250 OK\r\n650 HS_DESC REQUESTED {} NO_AUTH $DDDD~relay3 ID\r\n",
                        Identity::from_seed(&[0xD0; 32]).address().as_str()
                    )
                    .into_bytes(),
                )
            } else if line.starts_with("HSFETCH ") {
                Some(b"552 Unrecognized value\r\n".to_vec())
            } else {
                None
            }
        })
    });
    smol::block_on(async {
        let mut c = ControlConnection::open(addr, &ControlAuth::Auto)
            .await
            .unwrap();
        c.set_events(&["HS_DESC"]).await.unwrap();
        c.hs_fetch(&alice().address()).await.expect("HSFETCH");
        match c
            .wait_fetched(&alice().address(), Duration::from_secs(5))
            .await
        {
            Err(ControlError::FetchFailed { reason }) => {
                assert_eq!(reason.as_deref(), Some("NOT_FOUND"))
            }
            other => panic!("expected FetchFailed, got {other:?}"),
        }
        let bob = Identity::from_seed(&[0xB0; 32]).address();
        match c.hs_fetch(&bob).await {
            Err(ControlError::Rejected { command, code, .. }) => {
                assert_eq!(command, "HSFETCH");
                assert_eq!(code, 552);
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
        let carol = Identity::from_seed(&[0xC0; 32]).address();
        c.hs_fetch(&carol).await.expect("HSFETCH");
        match c.wait_fetched(&carol, Duration::from_millis(300)).await {
            Err(ControlError::NoHsDir) => {}
            other => panic!("expected NoHsDir, got {other:?}"),
        }
        let dave = Identity::from_seed(&[0xD0; 32]).address();
        c.hs_fetch(&dave).await.expect("HSFETCH");
        match c.wait_fetched(&dave, Duration::from_millis(300)).await {
            Err(ControlError::TimedOut { .. }) => {}
            other => panic!("expected TimedOut, got {other:?}"),
        }
    });
}
