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
