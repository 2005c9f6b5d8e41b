//! Arti against a private Tor network of C tors on loopback
//! (`TestNetworkOptions::arti_compatible`): our published address is our
//! identity's; bytes go arti -> C tor, C tor -> arti and arti -> arti;
//! the identity key never reaches the disk and arti writes only under the
//! directory it is given.
//!
//! Needs `tor` (Debian's package): without it the test fails, it does not
//! skip. One network for all steps (starting one takes ~20 s on 2 cores).

mod support;

use core::time::Duration;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cwtch_proto::Identity;
use cwtch_transport_arti::{ArtiConfig, ArtiTransport, DialFailure, Network, config};
use cwtch_transport_socks::testnet::{TestNetwork, TestNetworkOptions};
use cwtch_transport_socks::{IsolationKey, Transport};

const PORT: u16 = 9878;
const RETRY_LIMIT: Duration = Duration::from_secs(120);

/// Arti's default places (`${ARTI_LOCAL_DATA}`, `${ARTI_CACHE}`,
/// `${ARTI_CONFIG}` on Linux), which a misconfigured client would use.
fn arti_default_dirs() -> Vec<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".local/share"));
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache"));
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".config"));
    vec![data.join("arti"), cache.join("arti"), config.join("arti")]
}

fn snapshot(dirs: &[PathBuf]) -> Vec<(PathBuf, Option<std::time::SystemTime>)> {
    dirs.iter()
        .flat_map(|d| {
            let mut files = support::files_under(d);
            files.push(d.clone());
            files
        })
        .map(|f| {
            let modified = std::fs::metadata(&f).and_then(|m| m.modified()).ok();
            (f, modified)
        })
        .collect()
}

/// The forms an identity secret could take in a file: the raw bytes,
/// their base64 (standard, with and without padding; and of the longest
/// prefix of whole 3-byte groups, standard and URL-safe, which is how they
/// read inside a longer base64 blob starting with them) and their hex.
fn encodings(secret: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    use data_encoding::{BASE64, BASE64_NOPAD, BASE64URL_NOPAD, HEXLOWER, HEXUPPER};
    let whole_groups = secret.get(..secret.len() / 3 * 3).unwrap_or_default();
    vec![
        ("raw", secret.to_vec()),
        ("base64", BASE64.encode(secret).into_bytes()),
        (
            "base64 (no padding)",
            BASE64_NOPAD.encode(secret).into_bytes(),
        ),
        (
            "base64 (inside a blob)",
            BASE64_NOPAD.encode(whole_groups).into_bytes(),
        ),
        (
            "base64url (inside a blob)",
            BASE64URL_NOPAD.encode(whole_groups).into_bytes(),
        ),
        ("lowercase hex", HEXLOWER.encode(secret).into_bytes()),
        ("uppercase hex", HEXUPPER.encode(secret).into_bytes()),
    ]
}

/// Which of the identity's secrets, in which form, `bytes` contain.
fn secret_in(bytes: &[u8], identity: &Identity) -> Option<String> {
    let seed = identity.seed();
    let expanded = identity.tor_expanded_key();
    let secrets: [(&str, &[u8]); 4] = [
        ("seed", seed.as_ref()),
        ("expanded key", &expanded.as_bytes()[..]),
        ("expanded scalar", &expanded.as_bytes()[..32]),
        ("expanded hash prefix", &expanded.as_bytes()[32..]),
    ];
    for (what, secret) in secrets {
        for (form, needle) in encodings(secret) {
            if support::contains(bytes, &needle) {
                return Some(format!("{what} ({form})"));
            }
        }
    }
    None
}

fn assert_no_secret_on_disk(dir: &Path, identity: &Identity) {
    let files = support::files_under(dir);
    assert!(!files.is_empty(), "arti wrote nothing under {dir:?}?");
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_default();
        if let Some(found) = secret_in(&bytes, identity) {
            panic!("the identity's {found} is in {file:?}");
        }
    }
    assert!(
        !dir.join("state/keystore").exists(),
        "an on-disk keystore was created"
    );
}

/// The search itself, without a network: each form of each secret is found
/// inside other text, and a file without them passes.
#[test]
fn the_secret_search_finds_encoded_keys() {
    let id = Identity::from_seed(&[0x3C; 32]);
    let expanded = id.tor_expanded_key();
    let seed = id.seed();
    let wrap = |inner: Vec<u8>| [b"-----BEGIN KEY-----\n".to_vec(), inner, b"\n".to_vec()].concat();
    for secret in [
        seed.as_ref(),
        &expanded.as_bytes()[..],
        &expanded.as_bytes()[32..],
    ] {
        for (form, needle) in encodings(secret) {
            assert!(secret_in(&wrap(needle), &id).is_some(), "{form}");
        }
    }
    // A longer base64 blob that starts with the expanded key.
    let blob = [&expanded.as_bytes()[..], b"more bytes after it"].concat();
    let blob = data_encoding::BASE64.encode(&blob).into_bytes();
    assert!(secret_in(&wrap(blob), &id).is_some());
    let other = Identity::from_seed(&[0x3D; 32]);
    let theirs = data_encoding::BASE64.encode(&other.tor_expanded_key().as_bytes()[..]);
    assert_eq!(secret_in(&wrap(theirs.into_bytes()), &id), None);
}

#[test]
fn arti_and_c_tor_reach_each_others_onion_services() {
    support::init_logging();
    let defaults_before = snapshot(&arti_default_dirs());
    let net = TestNetwork::start_with_options(&TestNetworkOptions::arti_compatible(2))
        .unwrap_or_else(|e| panic!("private Tor network (is tor installed?): {e}"));
    let private = support::private_network(&net);
    let home = tempfile::tempdir().expect("tempdir");
    let dir_a = home.path().join("a");
    let dir_b = home.path().join("b");

    // Every address arti is given is on loopback: 3 authorities (upload,
    // download, vote) and 3 fallbacks.
    let built =
        config::tor_client_config(&ArtiConfig::new(&dir_a, Network::Private(private.clone())))
            .expect("arti config");
    let addresses = config::configured_addresses(&built);
    assert_eq!(addresses.len(), 12, "{addresses:?}");
    assert!(
        addresses
            .iter()
            .all(|a| a.ip() == core::net::Ipv4Addr::LOCALHOST),
        "{addresses:?}"
    );

    smol::block_on(async {
        // Bootstrap, with progress reported up to 100 %.
        let mut reports: Vec<(u8, String)> = Vec::new();
        let config = ArtiConfig::new(&dir_a, Network::Private(private.clone()));
        let a = ArtiTransport::bootstrap(config, |p, s| reports.push((p, s.to_owned())))
            .await
            .unwrap_or_else(|e| panic!("arti bootstrap: {e}"));
        assert_eq!(reports.last().map(|r| r.0), Some(100), "{reports:?}");
        assert!(reports.len() >= 2, "{reports:?}");
        eprintln!(
            "arti bootstrapped in {:.2} s: {reports:?}",
            a.bootstrap_time().as_secs_f64()
        );

        // Our onion service, under our own key.
        let id_a = Identity::from_seed(&[0xA1; 32]);
        let addr_a = id_a.address();
        let launched = Instant::now();
        let listener = a.listen(&id_a, PORT).expect("arti listen");
        assert_eq!(listener.address(), &id_a.address());
        assert_eq!(listener.virt_port(), PORT);

        // C tor -> arti.
        let c_tor = net.clients()[1].transport();
        let key = IsolationKey::for_identity(&id_a.address());
        let (mut dialed, attempts, _) = support::retry("C tor -> arti", RETRY_LIMIT, || {
            c_tor.dial(&addr_a, PORT, &key)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "C tor reached arti's onion {:.1} s after listen (attempt {attempts}); arti says {}",
            launched.elapsed().as_secs_f64(),
            listener.state()
        );
        let mut incoming = listener.accept().await.expect("accept");
        support::ping_pong(&mut dialed, &mut incoming)
            .await
            .expect("bytes C tor -> arti -> C tor");
        drop((dialed, incoming));

        // arti -> C tor (ADD_ONION on another client).
        let id_c = Identity::from_seed(&[0xC1; 32]);
        let addr_c = id_c.address();
        let mut c_listener = net.clients()[0]
            .transport()
            .listen(&id_c, PORT)
            .await
            .expect("ADD_ONION");
        c_listener
            .wait_published(RETRY_LIMIT)
            .await
            .expect("C tor publishes");
        let (mut dialed, attempts, took) =
            support::retry("arti -> C tor", RETRY_LIMIT, || a.dial(&addr_c, PORT))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "arti reached C tor's onion in {:.1} s (attempt {attempts})",
            took.as_secs_f64()
        );
        let (mut incoming, _) = c_listener.accept().await.expect("C tor accept");
        support::ping_pong(&mut dialed, &mut incoming)
            .await
            .expect("bytes arti -> C tor -> arti");
        drop((dialed, incoming));

        // arti -> arti, from another arti client with its own directory.
        let config = ArtiConfig::new(&dir_b, Network::Private(private.clone()));
        let b = ArtiTransport::bootstrap(config, |_, _| {})
            .await
            .unwrap_or_else(|e| panic!("second arti bootstrap: {e}"));
        let (mut dialed, attempts, took) =
            support::retry("arti -> arti", RETRY_LIMIT, || b.dial(&addr_a, PORT))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "arti reached arti's onion in {:.1} s (attempt {attempts})",
            took.as_secs_f64()
        );
        let mut incoming = listener.accept().await.expect("accept");
        support::ping_pong(&mut dialed, &mut incoming)
            .await
            .expect("bytes arti -> arti -> arti");

        // Another virtual port of ours is refused, and says so.
        let refused = b.dial(&addr_a, PORT + 1).await;
        match refused {
            Err(e) => assert_eq!(e.kind(), DialFailure::Refused, "{e}"),
            Ok(_) => panic!("a stream to a port we do not serve was accepted"),
        }

        // An address nobody publishes is "not found", in plain words.
        let nobody = Identity::from_seed(&[0xEE; 32]).address();
        match b.dial(&nobody, PORT).await {
            Err(e) => {
                assert_eq!(e.kind(), DialFailure::NotFound, "{e}");
                assert!(e.is_retryable());
                assert!(e.to_string().contains("not published"), "{e}");
            }
            Ok(_) => panic!("dialed an onion service nobody runs"),
        }
        drop((dialed, incoming, listener, a, b));
    });

    // The key never reached the disk; arti wrote only where it was told.
    let mut written: Vec<String> = support::files_under(&dir_a)
        .iter()
        .filter_map(|f| f.strip_prefix(&dir_a).ok())
        .map(|f| f.display().to_string())
        .collect();
    written.sort();
    eprintln!("arti wrote: {written:?}");
    assert_no_secret_on_disk(&dir_a, &Identity::from_seed(&[0xA1; 32]));
    assert!(dir_a.join("state").is_dir() && dir_a.join("cache").is_dir());
    let written: Vec<PathBuf> = support::files_under(home.path());
    assert!(
        written
            .iter()
            .all(|f| f.starts_with(&dir_a) || f.starts_with(&dir_b)),
        "{written:?}"
    );
    assert_eq!(
        snapshot(&arti_default_dirs()),
        defaults_before,
        "arti touched its default directories"
    );
}
