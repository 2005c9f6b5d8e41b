//! Helpers shared by the tests and `examples/interop.rs`: arti's view of
//! a private Tor network, byte exchange, retries, logging.
#![allow(dead_code)]

use core::time::Duration;
use std::path::Path;
use std::time::Instant;

use cwtch_transport_arti::PrivateNetwork;
use cwtch_transport_socks::testnet::TestNetwork;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Arti's view of the network: its authorities (v3 identity, DirPort) and
/// the same tors as fallback caches (RSA and ed25519 identities, ORPort),
/// through the text form the node's `--tor-network` file has.
pub fn private_network(net: &TestNetwork) -> PrivateNetwork {
    let text = net.arti_network_text().expect("authorities' identities");
    PrivateNetwork::parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Logs of arti to stderr when `RUST_LOG` is set (e.g.
/// `RUST_LOG=tor_hsclient=debug,tor_hsservice=debug`).
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Retries `attempt` until it succeeds or `limit` passes; returns the
/// value, the number of attempts and the time taken, or the last error.
pub async fn retry<T, E: core::fmt::Display, F, Fut>(
    what: &str,
    limit: Duration,
    mut attempt: F,
) -> Result<(T, u32, Duration), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        match attempt().await {
            Ok(v) => return Ok((v, n, started.elapsed())),
            Err(e) => {
                eprintln!(
                    "{what}: attempt {n} after {:.1} s: {e}",
                    started.elapsed().as_secs_f64()
                );
                if started.elapsed() >= limit {
                    return Err(format!("{what}: gave up after {n} attempts: {e}"));
                }
                smol::Timer::after(Duration::from_secs(2)).await;
            }
        }
    }
}

/// The dialer says `ping`, the listener answers `pong`.
pub async fn ping_pong<D, L>(dialer: &mut D, listener: &mut L) -> std::io::Result<()>
where
    D: AsyncRead + AsyncWrite + Unpin,
    L: AsyncRead + AsyncWrite + Unpin,
{
    dialer.write_all(b"ping").await?;
    dialer.flush().await?;
    let mut buf = [0u8; 4];
    listener.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");
    listener.write_all(b"pong").await?;
    listener.flush().await?;
    dialer.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"pong");
    Ok(())
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
