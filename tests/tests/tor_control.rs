//! The control port client against a real, lone tor (`DisableNetwork 1`):
//! authentication methods, GETCONF, ADD_ONION with our own key, DEL_ONION,
//! errors.
//! Fails (never skips) when tor is not installed.

use core::time::Duration;
use std::time::Instant;

use cwtch_proto::Identity;
use cwtch_tests::testnet::{LoneTor, process_alive};
use cwtch_transport_socks::control::{ControlAuth, ControlConnection, ControlError};
use cwtch_transport_socks::launch::{LaunchError, TorConfig, TorProcess};
use cwtch_transport_socks::transport::{PEER_PORT, TorTransport, Transport};

/// `tor --hash-password pw` (any salt works).
const HASHED_PW: &str =
    "HashedControlPassword 16:69210B9F5329C6E760B00796569B2301BCB8482E0966AD011754755B98";

/// SPEC.md section 1 vector: seed 00..1f.
const VECTOR_ADDRESS: &str = "aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4bqead";

#[test]
fn control_port_with_lone_tor() {
    let started = Instant::now();
    let mut tor = LoneTor::start(&[HASHED_PW]).expect("start lone tor");
    let pid = tor.pid();
    eprintln!(
        "lone tor control port up after {:.2} s",
        started.elapsed().as_secs_f64()
    );
    smol::block_on(async {
        let addr = tor.control_addr();

        // PROTOCOLINFO before authentication.
        let mut c = ControlConnection::connect(addr).await.unwrap();
        let info = c.protocol_info().await.unwrap();
        assert!(info.offers("SAFECOOKIE"), "{info:?}");
        assert!(info.offers("HASHEDPASSWORD"), "{info:?}");
        assert_eq!(
            info.tor_version.as_deref().map(|v| v.starts_with("0.4")),
            Some(true)
        );

        // Every authentication method we support.
        for auth in [
            ControlAuth::Auto,
            ControlAuth::Cookie(tor.cookie_path().to_owned()),
            ControlAuth::password("pw"),
        ] {
            let mut c = ControlConnection::open(addr, &auth)
                .await
                .unwrap_or_else(|e| panic!("{auth:?}: {e}"));
            let s = c.bootstrap_status().await.unwrap();
            assert!(s.progress <= 100);
        }
        let wrong = ControlConnection::open(addr, &ControlAuth::password("nope")).await;
        assert!(
            matches!(wrong, Err(ControlError::Rejected { code: 515, .. })),
            "{wrong:?}"
        );
        let wrong_cookie =
            std::env::temp_dir().join(format!("cwtch-bad-cookie-{}", std::process::id()));
        std::fs::write(&wrong_cookie, [0u8; 32]).unwrap();
        let bad = ControlConnection::open(addr, &ControlAuth::Cookie(wrong_cookie.clone())).await;
        // Tor's SAFECOOKIE server hash does not match a wrong cookie: we
        // refuse before sending anything derived from it.
        assert!(
            matches!(bad, Err(ControlError::ServerHashMismatch)),
            "{bad:?}"
        );
        std::fs::remove_file(&wrong_cookie).unwrap();

        // Unknown GETINFO key: typed 5xx error.
        let mut c = ControlConnection::open(addr, &ControlAuth::Auto)
            .await
            .unwrap();
        let r = c.get_info("no/such/key").await;
        assert!(
            matches!(r, Err(ControlError::Rejected { code: 552, .. })),
            "{r:?}"
        );

        // GETCONF: the lone tor's one SocksPort line, as written. With
        // DisableNetwork it listens nowhere, so whether the SOCKS port we
        // would dial has ExtendedErrors cannot be told.
        assert_eq!(c.get_conf("SocksPort").await.unwrap(), ["127.0.0.1:auto"]);
        let r = c.get_conf("NoSuchOption").await;
        assert!(
            matches!(r, Err(ControlError::Rejected { code: 552, .. })),
            "{r:?}"
        );
        assert_eq!(
            c.socks_extended_errors("127.0.0.1:9050".parse().unwrap())
                .await
                .unwrap(),
            None
        );
        let unknown = TorTransport::new("127.0.0.1:9".parse().unwrap(), addr, ControlAuth::Auto);
        assert_eq!(unknown.extended_errors().await, None);

        // ADD_ONION with our key: tor's ServiceID equals our address.
        let id = Identity::from_seed(&core::array::from_fn(|i| i as u8));
        assert_eq!(id.address().as_str(), VECTOR_ADDRESS);
        let local = "127.0.0.1:1".parse().unwrap();
        let t = Instant::now();
        let published = c.add_onion(&id, PEER_PORT, local).await.unwrap();
        eprintln!("ADD_ONION answered in {:?}", t.elapsed());
        assert_eq!(published, id.address());
        let onions = c.get_info("onions/current").await.unwrap();
        assert!(onions.contains(VECTOR_ADDRESS), "{onions}");
        // The same key twice is a collision, reported as a typed error.
        let again = c.add_onion(&id, PEER_PORT, local).await;
        assert!(
            matches!(again, Err(ControlError::Rejected { code: 550, .. })),
            "{again:?}"
        );
        c.del_onion(&id.address()).await.unwrap();
        let onions = c.get_info("onions/current").await.unwrap();
        assert!(!onions.contains(VECTOR_ADDRESS), "{onions}");
        let gone = c.del_onion(&id.address()).await;
        assert!(
            matches!(gone, Err(ControlError::Rejected { .. })),
            "{gone:?}"
        );

        // The transport's listen publishes and the onion dies with the
        // listener (the control connection that added it closes).
        let transport = TorTransport::new("127.0.0.1:9".parse().unwrap(), addr, ControlAuth::Auto);
        let other = Identity::from_seed(&[0x42; 32]);
        let listener = transport.listen(&other, PEER_PORT).await.unwrap();
        assert_eq!(listener.address(), &other.address());
        assert!(c.get_info("onions/current").await.unwrap().is_empty()); // not ours: per connection
        let mut observer = ControlConnection::open(addr, &ControlAuth::Auto)
            .await
            .unwrap();
        // onions/detached lists none: the service is tied to its connection.
        assert!(
            !observer
                .get_info("onions/detached")
                .await
                .unwrap()
                .contains(other.address().as_str())
        );
        drop(listener);
        // Re-adding the same key succeeds once tor has dropped the old service.
        let mut ok = false;
        for _ in 0..50 {
            match c.add_onion(&other, PEER_PORT, local).await {
                Ok(_) => {
                    ok = true;
                    break;
                }
                Err(ControlError::Rejected { code: 550, .. }) => {
                    smol::Timer::after(Duration::from_millis(20)).await
                }
                Err(e) => panic!("{e}"),
            };
        }
        assert!(ok, "onion of a dropped listener still published");
    });
    tor.stop();
    assert!(!process_alive(pid), "lone tor {pid} still running");
}

#[test]
fn launch_reports_why_tor_refused_its_config() {
    let dir = tempfile::Builder::new()
        .prefix("cwtch-badtorrc-")
        .tempdir()
        .unwrap();
    let mut config = TorConfig::new(dir.path().join("tor"));
    config.extra_torrc = vec!["NoSuchTorOption 1".into()];
    let t = Instant::now();
    let r = smol::block_on(TorProcess::launch(&config, |_| {}));
    eprintln!(
        "bad torrc reported after {:.2} s",
        t.elapsed().as_secs_f64()
    );
    match r {
        Err(LaunchError::Exited { diagnosis, .. }) => {
            assert!(diagnosis.contains("NoSuchTorOption"), "{diagnosis}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
}

/// A tor whose control port is a Unix socket (`ControlSocket`, as Debian's
/// system tor has at /run/tor/control): cookie and password
/// authentication over it, and the transport publishing through it.
#[test]
fn control_socket_with_lone_tor() {
    use cwtch_transport_socks::control::ControlAddr;
    let dir = tempfile::Builder::new()
        .prefix("cwtch-ctlsock-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    // Tor creates a control socket only in a directory of its user's alone.
    let socket = dir.path().join("control");
    let line = format!("ControlSocket {}", socket.display());
    let mut tor = LoneTor::start(&[HASHED_PW, &line]).expect("start lone tor");
    let until = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < until, "tor made no control socket");
        std::thread::sleep(Duration::from_millis(25));
    }
    let addr = ControlAddr::Unix(socket.clone());
    assert_eq!(addr.to_string(), format!("unix:{}", socket.display()));
    assert_eq!(
        addr.to_string().parse::<ControlAddr>().unwrap(),
        addr,
        "unix:PATH parses back"
    );
    smol::block_on(async {
        for auth in [ControlAuth::Auto, ControlAuth::password("pw")] {
            let mut c = ControlConnection::open(addr.clone(), &auth)
                .await
                .unwrap_or_else(|e| panic!("{auth:?}: {e}"));
            assert!(c.bootstrap_status().await.unwrap().progress <= 100);
        }
        let wrong = ControlConnection::open(addr.clone(), &ControlAuth::password("nope")).await;
        assert!(
            matches!(wrong, Err(ControlError::Rejected { code: 515, .. })),
            "{wrong:?}"
        );
        let transport = TorTransport::new(
            "127.0.0.1:9".parse().unwrap(),
            addr.clone(),
            ControlAuth::password("pw"),
        );
        let id = Identity::from_seed(&[0x43; 32]);
        let listener = transport.listen(&id, PEER_PORT).await.unwrap();
        assert_eq!(listener.address(), &id.address());
        assert!(!listener.pow_defenses());
        listener.close().await.unwrap();
        // A server's onion: tor's proof-of-work defences (tor 0.4.9 has them).
        let mut with_pow = transport.clone();
        with_pow.onion_pow = true;
        let listener = with_pow.listen(&id, PEER_PORT).await.unwrap();
        assert_eq!(listener.address(), &id.address());
        assert!(listener.pow_defenses());
        listener.close().await.unwrap();
    });
    tor.stop();
    let gone = smol::block_on(ControlConnection::connect(ControlAddr::Unix(
        dir.path().join("nothing-here"),
    )));
    match gone {
        Err(e @ ControlError::Unreachable { .. }) => {
            assert!(e.to_string().contains("nothing-here"), "{e}")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}
