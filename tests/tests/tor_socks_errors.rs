//! What tor answers when an onion dial fails, through our SOCKS codec, on
//! a private Tor network whose clients have `ExtendedErrors` on their
//! SocksPort. Each failure the private network can produce is provoked in
//! turn and the `DialError` it maps to is checked; a table of what tor
//! answered is printed at the end.
//!
//! ONE test, one network (start-up dominates the run time). Fails (never
//! skips) when tor is not installed. Every address is on 127.0.0.1.

use core::net::SocketAddr;
use core::time::Duration;
use std::io;
use std::net::TcpListener;
use std::time::Instant;

use cwtch_proto::{Identity, OnionAddress};
use cwtch_tests::testnet::TestNetwork;
use cwtch_transport_socks::control::ControlConnection;
use cwtch_transport_socks::control::status::parse_service_id;
use cwtch_transport_socks::socks::{
    DialError, IsolationKey, RetryPolicy, SocksReply, dial_host, dial_with_retry,
};
use cwtch_transport_socks::transport::{PEER_PORT, Stream, TorTransport, Transport};
use smol::Async;
use smol::io::{AsyncReadExt, AsyncWriteExt};

/// One dial's limit: well above what any answer here takes.
const LIMIT: Duration = Duration::from_secs(60);
/// Rounds of dialing a reachable onion before its failure counts: on the
/// private network a stream right after publication has stalled now and
/// then (tor neither answers nor fails); each round is bounded by LIMIT.
const ROUNDS: u32 = 4;

const RETRY: RetryPolicy = RetryPolicy {
    attempts: 30,
    delay: Duration::from_secs(1),
    total: Duration::from_secs(60),
};

/// What each dial got from tor, printed as a table at the end.
#[derive(Default)]
struct Observed(Vec<String>);

impl Observed {
    fn record(&mut self, label: &str, took: Duration, code: &str, text: &str) {
        let line = format!(
            "{label:<46} {code:>5} {:>5.1} s  {text}",
            took.as_secs_f64()
        );
        eprintln!("{line}");
        self.0.push(line);
    }

    /// Dials `host` through `socks`; the dial must fail with an error that
    /// `expected` accepts, within [`LIMIT`]. A round in which tor gives no
    /// answer at all within LIMIT (seen once in CI: a fresh circuit to an
    /// introduction point that neither completed nor failed) is dialed
    /// again on other circuits, up to ROUNDS rounds, and shows in the
    /// table; the answer that counts is the first one tor gives.
    async fn failure(
        &mut self,
        label: &str,
        socks: SocketAddr,
        host: &str,
        port: u16,
        key: &IsolationKey,
        expected: impl Fn(&DialError) -> bool,
    ) -> DialError {
        let mut stalls = 0;
        let (e, took) = loop {
            let round_key = if stalls == 0 {
                key.clone()
            } else {
                IsolationKey::new(format!("{} (round {})", key.as_str(), stalls + 1)).unwrap()
            };
            let t = Instant::now();
            let r = dial_host(socks, host, port, &round_key, LIMIT).await;
            let took = t.elapsed();
            match r {
                Ok(_) => panic!("{label}: connected, expected a failure"),
                Err(DialError::TimedOut { reply: None }) if stalls + 1 < ROUNDS => {
                    stalls += 1;
                    self.record(
                        label,
                        took,
                        "-",
                        "stalled: no answer from tor; dialing again",
                    );
                }
                Err(e) => break (e, took),
            }
        };
        let code = e
            .reply()
            .map_or_else(|| "-".to_owned(), |r| format!("{:#04X}", r.code()));
        let retry = if e.is_retryable() {
            "retryable"
        } else {
            "final"
        };
        self.record(label, took, &code, &format!("{retry}: {e}"));
        assert!(expected(&e), "{label}: unexpected {e:?}");
        assert!(took < LIMIT, "{label}: took {took:?}");
        e
    }

    /// Dials `to` through `via` with retry while `accept` takes the
    /// stream on the service's side; checks bytes flow both ways. A stream
    /// that breaks after tor said connected (seen once in many runs: tor
    /// closed it before the answer came back), or a round that stalls (no
    /// answer from tor within LIMIT, seen right after publication), is
    /// dialed again, up to ROUNDS rounds, and shows in the table.
    async fn success<F>(
        &mut self,
        label: &str,
        via: &TorTransport,
        to: &OnionAddress,
        key: &IsolationKey,
        accept: impl Fn() -> F,
    ) where
        F: Future<Output = io::Result<(Stream, SocketAddr)>>,
    {
        let t = Instant::now();
        let mut failed = Vec::new();
        for round in 1..=ROUNDS {
            // Bounded: a dial that fails for good leaves `accept` waiting
            // for ever, and a stream can stall after tor said connected. A
            // round that takes longer than LIMIT is dialed again, like a
            // stream that broke.
            let attempt = async {
                let (dialed, accepted) = smol::future::zip(
                    dial_with_retry(
                        RETRY,
                        || via.dial(to, PEER_PORT, key),
                        |n, e| {
                            failed.push(format!("{:#04X}", e.reply().map_or(0, |r| r.code())));
                            eprintln!("{label}: try {n} failed: {e}");
                        },
                    ),
                    accept(),
                )
                .await;
                let mut dialed = dialed.unwrap_or_else(|e| panic!("{label}: {e} ({e:?})"));
                let (mut accepted, _) = accepted.unwrap();
                let mut buf = [0u8; 4];
                dialed.write_all(b"ping").await?;
                accepted.read_exact(&mut buf).await?;
                assert_eq!(&buf, b"ping");
                accepted.write_all(b"pong").await?;
                dialed.read_exact(&mut buf).await?;
                assert_eq!(&buf, b"pong");
                io::Result::Ok(())
            };
            let bounded = smol::future::or(async { Some(attempt.await) }, async {
                smol::Timer::after(LIMIT).await;
                None
            })
            .await;
            match bounded {
                Some(Ok(())) => break,
                Some(Err(e)) if round < ROUNDS => {
                    eprintln!("{label}: stream broke after connecting ({e}); dialing again");
                    failed.push(format!("broken stream ({e})"));
                }
                Some(Err(e)) => {
                    panic!("{label}: stream broke after connecting, {ROUNDS} times: {e}")
                }
                None if round < ROUNDS => {
                    eprintln!("{label}: no stream within {LIMIT:?}; dialing again");
                    failed.push("stalled".into());
                }
                None => panic!("{label}: no working stream within {LIMIT:?}, {ROUNDS} times"),
            }
        }
        let before = if failed.is_empty() {
            String::new()
        } else {
            format!(" (after: {})", failed.join(", "))
        };
        self.record(label, t.elapsed(), "0x00", &format!("connected{before}"));
    }
}

/// `ADD_ONION NEW:ED25519-V3` on `ctl` with `extra` arguments, forwarding
/// the onion's [`PEER_PORT`] to `local`; waits until its descriptor is
/// uploaded. The service lives as long as `ctl` (which must have
/// `SETEVENTS HS_DESC` on).
async fn add_new_onion(
    ctl: &mut ControlConnection,
    local: SocketAddr,
    flags: &str,
    extra: &str,
) -> OnionAddress {
    let r = ctl
        .command(&format!(
            "ADD_ONION NEW:ED25519-V3 Flags=DiscardPK{flags} Port={PEER_PORT},{local}{extra}"
        ))
        .await
        .unwrap_or_else(|e| panic!("ADD_ONION {flags} {extra}: {e}"));
    let id = parse_service_id(&r).unwrap();
    let address = OnionAddress::parse(id).unwrap();
    ctl.wait_uploaded(&address, LIMIT)
        .await
        .unwrap_or_else(|e| panic!("upload of {id}: {e}"));
    address
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `address` with its first character changed: 56 characters of base32
/// whose checksum no longer matches.
fn bad_checksum(address: &OnionAddress) -> String {
    let text = address.as_str();
    let first = if text.starts_with('a') { 'b' } else { 'a' };
    format!("{first}{}.onion", text.get(1..).unwrap())
}

/// An x25519 key pair for onion client authorization: the public key in
/// base32 (for `ClientAuthV3=`), the private key in base64 (for
/// `ONION_CLIENT_AUTH_ADD`).
fn client_auth_keys(seed: u8) -> (String, String) {
    let secret = x25519_dalek::StaticSecret::from([seed; 32]);
    let public = x25519_dalek::PublicKey::from(&secret);
    (
        data_encoding::BASE32_NOPAD.encode(public.as_bytes()),
        data_encoding::BASE64.encode(secret.as_bytes()),
    )
}

fn onion_host(address: &OnionAddress) -> String {
    format!("{}.onion", address.as_str())
}

#[test]
fn tor_socks_errors_on_private_network() {
    let total = Instant::now();
    let net = TestNetwork::start(2).unwrap_or_else(|e| panic!("private tor network: {e}"));
    let (a, b) = (net.clients()[0].clone(), net.clients()[1].clone());
    let mut seen = Observed::default();
    smol::block_on(async {
        let via = b.transport();
        let socks = b.socks_addr;
        let key = IsolationKey::for_identity(&Identity::from_seed(&[0xB0; 32]).address());
        let offline = |e: &DialError, want: SocksReply| {
            matches!(e, DialError::PeerOffline { reply: Some(r) } if *r == want) && e.is_retryable()
        };

        // The test network's clients tell tor's reasons.
        assert_eq!(via.extended_errors().await, Some(true));
        assert_eq!(a.transport().extended_errors().await, Some(true));

        // 1. A published onion on its served port: connected.
        let alice = Identity::from_seed(&[0xA1; 32]);
        let mut listener = a.transport().listen(&alice, PEER_PORT).await.unwrap();
        listener.wait_published(LIMIT).await.unwrap();
        seen.success(
            "published onion, served port",
            &via,
            &alice.address(),
            &key,
            || listener.accept(),
        )
        .await;

        // 2. The same onion at a port it does not serve.
        seen.failure(
            "published onion, port it does not serve",
            socks,
            &onion_host(&alice.address()),
            1234,
            &key,
            |e| {
                matches!(
                    e,
                    DialError::Refused {
                        reply: Some(SocksReply::ConnectionRefused)
                    }
                )
            },
        )
        .await;

        // 3. A valid address nobody ever published: 0xF0, twice (the
        // second time tor answers from what it learnt the first time).
        let nobody = onion_host(&Identity::from_seed(&[0xEE; 32]).address());
        for label in ["never-published onion", "never-published onion, again"] {
            let e = seen
                .failure(label, socks, &nobody, PEER_PORT, &key, |e| {
                    offline(e, SocksReply::OnionDescNotFound)
                })
                .await;
            assert!(e.to_string().contains("not published"), "{e}");
        }

        // 4. Malformed onion names: tor's own check, before any circuit.
        let bogus = bad_checksum(&alice.address());
        assert_eq!(bogus.len(), 56 + 6);
        let e = seen
            .failure(
                "56 characters, bad checksum",
                socks,
                &bogus,
                PEER_PORT,
                &key,
                |e| {
                    matches!(
                        e,
                        DialError::BadAddress {
                            reply: SocksReply::OnionBadAddress
                        }
                    ) && !e.is_retryable()
                },
            )
            .await;
        assert!(e.to_string().starts_with("bad onion address"), "{e}");
        for (label, host) in [
            ("16 characters (old v2 length)", "expyuzz4wqqyqhjn.onion"),
            ("3 characters", "abc.onion"),
        ] {
            seen.failure(label, socks, host, PEER_PORT, &key, |e| {
                matches!(e, DialError::BadAddress { .. })
            })
            .await;
        }

        // 5. A published onion whose local target is closed: tor on the
        // service's side cannot connect, and the client hears only 1.
        let mut svc = ControlConnection::open(a.control_addr, &a.auth())
            .await
            .unwrap();
        svc.set_events(&["HS_DESC"]).await.unwrap();
        let dead_end = add_new_onion(&mut svc, closed_port(), "", "").await;
        // Uploaded is not yet fetchable everywhere: on this young network
        // (a time period of 4 minutes) a client can first find no
        // descriptor (0xF0), as a CI run did once. Dial until the answer
        // is about the service, at most 6 times, 10 s apart.
        for attempt in 1..=6 {
            match dial_host(socks, &onion_host(&dead_end), PEER_PORT, &key, LIMIT).await {
                Err(e) if e.reply() == Some(SocksReply::OnionDescNotFound) && attempt < 6 => {
                    println!(
                        "published onion, its local target closed: no descriptor yet; dialing again in 10 s"
                    );
                    smol::Timer::after(Duration::from_secs(10)).await;
                }
                _ => break,
            }
        }
        seen.failure(
            "published onion, its local target closed",
            socks,
            &onion_host(&dead_end),
            PEER_PORT,
            &key,
            |e| {
                matches!(
                    e,
                    DialError::CircuitFailed {
                        reply: SocksReply::GeneralFailure
                    }
                ) && e.is_retryable()
            },
        )
        .await;

        // 6. Client authorization: the service needs a key tor lacks, then
        // tor has the wrong one, then the right one.
        let (right_pub, right_priv) = client_auth_keys(0x31);
        let (_, wrong_priv) = client_auth_keys(0x32);
        let auth_socket = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let guarded = add_new_onion(
            &mut svc,
            auth_socket.get_ref().local_addr().unwrap(),
            ",V3Auth",
            &format!(" ClientAuthV3={right_pub}"),
        )
        .await;
        let host = onion_host(&guarded);
        seen.failure(
            "client auth required, tor has no key",
            socks,
            &host,
            PEER_PORT,
            &key,
            |e| {
                matches!(
                    e,
                    DialError::ClientAuth {
                        reply: SocksReply::OnionMissingClientAuth
                    }
                ) && !e.is_retryable()
            },
        )
        .await;
        let mut client_ctl = ControlConnection::open(b.control_addr, &b.auth())
            .await
            .unwrap();
        let add_key = |k: &str| format!("ONION_CLIENT_AUTH_ADD {} x25519:{k}", guarded.as_str());
        client_ctl.command(&add_key(&wrong_priv)).await.unwrap();
        seen.failure(
            "client auth required, tor has a wrong key",
            socks,
            &host,
            PEER_PORT,
            &key,
            |e| {
                matches!(
                    e,
                    DialError::ClientAuth {
                        reply: SocksReply::OnionWrongClientAuth
                    }
                ) && !e.is_retryable()
            },
        )
        .await;
        client_ctl
            .command(&format!("ONION_CLIENT_AUTH_REMOVE {}", guarded.as_str()))
            .await
            .unwrap();
        client_ctl.command(&add_key(&right_priv)).await.unwrap();
        seen.success(
            "client auth required, tor has the key",
            &via,
            &guarded,
            &key,
            || auth_socket.accept(),
        )
        .await;

        // 7. The service goes away after we reached it. On the circuits of
        // the same isolation key, tor may try the rendezvous circuit it
        // still has, which the service's side no longer serves. On fresh
        // circuits (another key), tor introduces itself again with the
        // descriptor it has, and the service is at none of its
        // introduction points: an onion code.
        listener.close().await.unwrap();
        let alice_host = onion_host(&alice.address());
        seen.failure(
            "onion closed, same isolation key",
            socks,
            &alice_host,
            PEER_PORT,
            &key,
            // Tor's answer depends on what became of that circuit: 1, 5
            // or an introduction failure have all been seen.
            |e| e.reply().is_some() && e.is_retryable(),
        )
        .await;
        let fresh = IsolationKey::new("fresh circuits").unwrap();
        seen.failure(
            "onion closed, fresh isolation key",
            socks,
            &alice_host,
            PEER_PORT,
            &fresh,
            |e| {
                e.reply().is_some_and(SocksReply::is_extended)
                    && matches!(
                        e,
                        DialError::PeerOffline { .. } | DialError::TimedOut { .. }
                    )
                    && e.is_retryable()
            },
        )
        .await;

        // 8. A SocksPort without ExtendedErrors on the same tor: the
        // transport says so, and only the basic codes arrive.
        let plain = closed_port();
        client_ctl
            .command(&format!(
                "SETCONF SocksPort=\"{socks} ExtendedErrors\" SocksPort={plain}"
            ))
            .await
            .unwrap();
        let conf = client_ctl.get_conf("SocksPort").await.unwrap();
        eprintln!("SocksPort lines now: {conf:?}");
        assert_eq!(via.extended_errors().await, Some(true));
        let basic = TorTransport::new(plain, b.control_addr, b.auth());
        assert_eq!(basic.extended_errors().await, Some(false));
        let nobody2 = onion_host(&Identity::from_seed(&[0xEF; 32]).address());
        seen.failure(
            "never-published onion, no ExtendedErrors",
            plain,
            &nobody2,
            PEER_PORT,
            &key,
            |e| offline(e, SocksReply::HostUnreachable),
        )
        .await;
        seen.failure(
            "bad checksum, no ExtendedErrors",
            plain,
            &bogus,
            PEER_PORT,
            &key,
            |e| e.reply().is_some_and(|r| !r.is_extended()),
        )
        .await;
        drop(svc);
    });
    drop(net);
    eprintln!(
        "\nwhat tor answered (SOCKS reply, time, our error):\n{}",
        seen.0.join("\n")
    );
    eprintln!(
        "whole SOCKS error test: {:.1} s",
        total.elapsed().as_secs_f64()
    );
}
