//! The running server's admin socket and metrics endpoint.
//!
//! **Admin socket**: `admin.sock` in the server's home, a Unix socket only
//! its owner can open (the home is 0700, the daemon's umask 077, the socket
//! 0600). One JSON request per connection, one line: `{"cmd": "stats"}` or
//! `{"cmd": "config"}`; one JSON line back: `{"ok": true, "result": ...}`
//! or `{"ok": false, "error": "..."}`. `server stats` and `server config`
//! use it.
//!
//! **Metrics** (`server run --metrics ADDR`, or `metrics` in server.toml):
//! the same numbers in the Prometheus text format, over plain HTTP/1.0 on a
//! loopback address or a Unix socket (never another address: how busy a
//! server is is nobody else's business). Any `GET` is answered with the
//! metrics; a request head is at most 8 KiB and must arrive within 5 s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use smol::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use smol::net::unix::{UnixListener, UnixStream};

use super::Shared;
use super::config::MetricsAddr;

/// The admin socket's file name inside the server's home.
pub const SOCKET_FILE: &str = "admin.sock";
/// The longest admin request line.
pub const MAX_REQUEST_LEN: usize = 4096;
/// The longest HTTP request head the metrics endpoint reads.
pub const MAX_HTTP_HEAD: usize = 8192;
/// How long a metrics or admin client may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin socket answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// The statistics ([`super::stats::Report`]).
    Stats,
    /// The configuration the server runs with.
    Config,
}

#[derive(Debug, Serialize, Deserialize)]
struct Response {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Why the admin socket gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Nothing listens on the socket: the server is not running.
    #[error(
        "no server is running in this home ({0}): start it with `cwtch-node --home HOME server run`"
    )]
    NotRunning(String),
    /// The server answered with an error.
    #[error("the server says: {0}")]
    Refused(String),
    /// The exchange failed.
    #[error("admin socket: {0}")]
    Io(String),
}

/// The admin socket of a home.
pub fn socket_path(home: &Path) -> PathBuf {
    home.join(SOCKET_FILE)
}

/// Removes the admin socket (at the end of a graceful stop).
pub fn remove_socket(home: &Path) {
    let _ = std::fs::remove_file(socket_path(home));
}

/// Removes a stale socket (only sockets: never a file someone put there)
/// and binds a new one, private.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Binds the admin socket of `home` (the daemon holds the home's lock, so
/// a socket left there is stale).
pub fn bind(home: &Path) -> std::io::Result<UnixListener> {
    bind_private(&socket_path(home))
}

/// Serves the admin socket until the task is dropped.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            smol::Timer::after(Duration::from_millis(100)).await;
            continue;
        };
        let shared = shared.clone();
        smol::spawn(async move {
            let answer = answer(&shared, stream)
                .or(async {
                    smol::Timer::after(REQUEST_TIMEOUT).await;
                    Ok(())
                })
                .await;
            if let Err(e) = answer {
                tracing::debug!("admin client: {e}");
            }
        })
        .detach();
    }
}

use smol::future::FutureExt as _;

async fn answer(shared: &Shared, stream: UnixStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.clone());
    let mut writer = stream;
    let mut line = String::new();
    (&mut reader)
        .take(MAX_REQUEST_LEN as u64)
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<Command>(&line) {
        Err(e) => Response {
            ok: false,
            result: None,
            error: Some(format!("bad request: {e}")),
        },
        Ok(command) => {
            let result = match command {
                Command::Stats => serde_json::to_value(shared.report().await),
                Command::Config => serde_json::to_value(shared.config()),
            };
            match result {
                Ok(v) => Response {
                    ok: true,
                    result: Some(v),
                    error: None,
                },
                Err(e) => Response {
                    ok: false,
                    result: None,
                    error: Some(e.to_string()),
                },
            }
        }
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    writer.write_all(&out).await?;
    writer.flush().await
}

/// Asks the server running in `home` (blocking).
pub fn request(home: &Path, command: Command) -> Result<serde_json::Value, AdminError> {
    use std::io::{BufRead, Write};
    let path = socket_path(home);
    let mut stream = std::os::unix::net::UnixStream::connect(&path)
        .map_err(|e| AdminError::NotRunning(format!("{}: {e}", path.display())))?;
    let io = |e: std::io::Error| AdminError::Io(e.to_string());
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(&command).map_err(|e| AdminError::Io(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(io)?;
    let response: Response = serde_json::from_str(&answer)
        .map_err(|e| AdminError::Io(format!("bad answer from the server: {e}")))?;
    if response.ok {
        Ok(response.result.unwrap_or(serde_json::Value::Null))
    } else {
        Err(AdminError::Refused(
            response.error.unwrap_or_else(|| "failed".into()),
        ))
    }
}

/// A bound metrics endpoint.
pub enum MetricsListener {
    /// On loopback.
    Tcp(smol::net::TcpListener),
    /// On a Unix socket.
    Unix(UnixListener, PathBuf),
}

impl Drop for MetricsListener {
    fn drop(&mut self) {
        if let MetricsListener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds the metrics endpoint (refusing anything but loopback or a Unix
/// socket, whatever the caller parsed).
pub async fn bind_metrics(addr: &MetricsAddr) -> std::io::Result<MetricsListener> {
    match addr {
        MetricsAddr::Tcp(a) if a.ip().is_loopback() => {
            Ok(MetricsListener::Tcp(smol::net::TcpListener::bind(a).await?))
        }
        MetricsAddr::Tcp(_) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "metrics are served on loopback only",
        )),
        MetricsAddr::Unix(path) => Ok(MetricsListener::Unix(bind_private(path)?, path.clone())),
    }
}

/// The most metrics requests served at once.
pub const MAX_METRICS_CLIENTS: usize = 8;

/// One of the [`MAX_METRICS_CLIENTS`] places, released on drop.
struct MetricsPermit(Arc<std::sync::atomic::AtomicUsize>);

impl MetricsPermit {
    fn take(count: &Arc<std::sync::atomic::AtomicUsize>) -> Option<MetricsPermit> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_METRICS_CLIENTS).then_some(n + 1)
            })
            .ok()
            .map(|_| MetricsPermit(count.clone()))
    }
}

impl Drop for MetricsPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Serves the metrics until the task is dropped.
pub async fn serve_metrics(listener: MetricsListener, shared: Arc<Shared>) {
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let accepted: std::io::Result<Box<dyn Client>> = match &listener {
            MetricsListener::Tcp(l) => l
                .accept()
                .await
                .map(|(s, _)| Box::new(s) as Box<dyn Client>),
            MetricsListener::Unix(l, _) => l
                .accept()
                .await
                .map(|(s, _)| Box::new(s) as Box<dyn Client>),
        };
        let Ok(client) = accepted else {
            smol::Timer::after(Duration::from_millis(100)).await;
            continue;
        };
        // A few scrapes at once at most: a local user opening connections
        // without end costs the server nothing but this refusal.
        let Some(permit) = MetricsPermit::take(&in_flight) else {
            drop(client);
            continue;
        };
        let shared = shared.clone();
        smol::spawn(async move {
            let _permit = permit;
            let served = http_answer(&shared, client)
                .or(async {
                    smol::Timer::after(REQUEST_TIMEOUT).await;
                    Ok(())
                })
                .await;
            if let Err(e) = served {
                tracing::debug!("metrics client: {e}");
            }
        })
        .detach();
    }
}

/// A metrics client's stream (TCP or Unix).
trait Client: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin + Send {}
impl<T: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin + Send> Client for T {}

async fn http_answer(shared: &Shared, mut client: Box<dyn Client>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HTTP_HEAD {
            return respond(&mut client, "431 Request Header Fields Too Large", "").await;
        }
    }
    if head.starts_with(b"GET ") {
        let body = shared.report().await.prometheus();
        respond(&mut client, "200 OK", &body).await
    } else {
        respond(&mut client, "405 Method Not Allowed", "").await
    }
}

async fn respond(client: &mut Box<dyn Client>, status: &str, body: &str) -> std::io::Result<()> {
    let text = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(text.as_bytes()).await?;
    client.flush().await?;
    client.close().await
}
