//! The daemon's side of the control socket: `control.sock` in the home,
//! private from the moment it exists (the daemon runs with umask 077 in a
//! private home). Several requests per connection, one event stream per
//! subscriber; API.md documents the exchange.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use smol::net::unix::{UnixListener, UnixStream};

use super::api::{
    API_VERSION, ApiError, ClientHello, ErrorCode, Request, RequestEnvelope, ResponseEnvelope,
    Welcome,
};
use super::events::Hub;
use super::{MAX_REQUEST_LEN, socket_path};

/// How the socket asks the daemon's core: a request in, its answer out.
pub type Ask = Arc<
    dyn Fn(Request) -> Pin<Box<dyn Future<Output = Result<Value, ApiError>> + Send>> + Send + Sync,
>;

/// What the socket needs from the daemon.
#[derive(Clone)]
pub struct Serving {
    /// The home (the socket lives there).
    pub home: PathBuf,
    /// Asks the core.
    pub ask: Ask,
    /// The event stream.
    pub hub: Hub,
    /// Our address, for the welcome.
    pub address: String,
    /// Told when a client asks the daemon to stop.
    pub stop: Sender<()>,
}

/// Serves the control socket until the process ends.
pub async fn serve(serving: Serving) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(&serving.home);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    // Private already (umask 077, private home); said once more.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        // Out of file descriptors (a client that leaks connections) must
        // not stop the daemon: wait a moment and accept again.
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("control socket: cannot accept a client: {e}");
                smol::Timer::after(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let serving = serving.clone();
        smol::spawn(async move {
            if let Err(e) = client(serving, stream).await {
                tracing::debug!("control client: {e}");
            }
        })
        .detach();
    }
}

/// Reads one line of at most [`MAX_REQUEST_LEN`] bytes: `Ok(None)` at the
/// end, `Err(())` for a line too long. A line too long is reported as soon
/// as the limit is reached, so that the client hears why at once (it may
/// still be writing and never send the newline); `skipping` is then set,
/// and the next call first drops the rest of that line, a bounded piece at
/// a time, so that the next request starts clean.
async fn read_line(
    reader: &mut BufReader<UnixStream>,
    line: &mut String,
    skipping: &mut bool,
) -> std::io::Result<Result<Option<()>, ()>> {
    while *skipping {
        if read_piece(reader, line).await? == 0 {
            return Ok(Ok(None));
        }
        if line.ends_with('\n') {
            *skipping = false;
        }
    }
    let n = read_piece(reader, line).await?;
    if n == 0 {
        return Ok(Ok(None));
    }
    if !line.ends_with('\n') && n >= MAX_REQUEST_LEN {
        line.clear();
        *skipping = true;
        return Ok(Err(()));
    }
    Ok(Ok(Some(())))
}

/// Reads into `line` (cleared first) up to a newline or
/// [`MAX_REQUEST_LEN`] bytes; the number of bytes read.
async fn read_piece(
    reader: &mut BufReader<UnixStream>,
    line: &mut String,
) -> std::io::Result<usize> {
    line.clear();
    (&mut *reader)
        .take(MAX_REQUEST_LEN as u64)
        .read_line(line)
        .await
}

fn to_line(value: &impl Serialize) -> Vec<u8> {
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    line
}

fn error_line(id: u64, code: ErrorCode, message: impl Into<String>) -> Vec<u8> {
    to_line(&ResponseEnvelope {
        id,
        ok: None,
        error: Some(ApiError::new(code, message)),
    })
}

async fn writer(mut stream: UnixStream, lines: Receiver<Vec<u8>>) {
    while let Ok(line) = lines.recv().await {
        if stream.write_all(&line).await.is_err() {
            return;
        }
    }
}

async fn client(serving: Serving, stream: UnixStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.clone());
    let (lines, lines_rx) = smol::channel::bounded::<Vec<u8>>(64);
    let write = smol::spawn(writer(stream, lines_rx));
    let mut line = String::new();
    let mut skipping = false;
    // The hello: the version first. A hello too long is answered and the
    // connection closed without reading the rest.
    match read_line(&mut reader, &mut line, &mut skipping).await? {
        Ok(None) => return Ok(()),
        Err(()) => {
            let _ = lines
                .send(error_line(
                    0,
                    ErrorCode::BadRequest,
                    format!("bad request: longer than {MAX_REQUEST_LEN} bytes"),
                ))
                .await;
            drop(lines);
            write.await;
            return Ok(());
        }
        Ok(Some(())) => {}
    }
    let hello: ClientHello = match serde_json::from_str(&line) {
        Ok(h) => h,
        Err(e) => {
            let _ = lines
                .send(error_line(
                    0,
                    ErrorCode::BadRequest,
                    format!("bad request: the first line must be {{\"api\": {API_VERSION}}}: {e}"),
                ))
                .await;
            drop(lines);
            write.await;
            return Ok(());
        }
    };
    tracing::debug!(
        "control client: {} (API {})",
        crate::codec::clean_name(&hello.client.chars().take(80).collect::<String>()),
        hello.api
    );
    if hello.api != API_VERSION {
        let _ = lines
            .send(error_line(
                0,
                ErrorCode::UnsupportedVersion,
                format!(
                    "this daemon speaks API version {API_VERSION}, not {}",
                    hello.api
                ),
            ))
            .await;
        drop(lines);
        write.await;
        return Ok(());
    }
    let welcome = Welcome {
        api: API_VERSION,
        daemon: format!("cwtch-node {}", env!("CARGO_PKG_VERSION")),
        address: serving.address.clone(),
        run: serving.hub.run(),
    };
    if lines.send(to_line(&welcome)).await.is_err() {
        return Ok(());
    }
    let mut subscribed = false;
    loop {
        let out = match read_line(&mut reader, &mut line, &mut skipping).await? {
            Ok(None) => break,
            Err(()) => error_line(
                0,
                ErrorCode::BadRequest,
                format!("bad request: longer than {MAX_REQUEST_LEN} bytes"),
            ),
            Ok(Some(())) => match serde_json::from_str::<RequestEnvelope>(&line) {
                Err(e) => {
                    // Its id, if that much can be read, so that a client
                    // with several requests out knows which one failed.
                    let id = serde_json::from_str::<serde_json::Value>(&line)
                        .ok()
                        .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64))
                        .unwrap_or(0);
                    error_line(id, ErrorCode::BadRequest, format!("bad request: {e}"))
                }
                Ok(RequestEnvelope {
                    id,
                    request: Request::Subscribe { since },
                }) => {
                    if subscribed {
                        error_line(id, ErrorCode::BadRequest, "already subscribed")
                    } else {
                        subscribed = true;
                        let next = serving.hub.next_seq();
                        let mut sub = serving.hub.subscribe(since);
                        let events = lines.clone();
                        // The answer goes out before the first event.
                        let _ = lines
                            .send(to_line(&ResponseEnvelope {
                                id,
                                ok: Some(serde_json::json!({"subscribed": true, "next": next})),
                                error: None,
                            }))
                            .await;
                        smol::spawn(async move {
                            while let Some(ev) = sub.next().await {
                                if events.send(to_line(&ev)).await.is_err() {
                                    return;
                                }
                            }
                        })
                        .detach();
                        continue;
                    }
                }
                Ok(RequestEnvelope {
                    id,
                    request: Request::Shutdown,
                }) => {
                    let _ = lines
                        .send(to_line(&ResponseEnvelope {
                            id,
                            ok: Some(serde_json::json!({"stopping": true})),
                            error: None,
                        }))
                        .await;
                    let _ = serving.stop.send(()).await;
                    continue;
                }
                Ok(RequestEnvelope { id, request }) => {
                    let answer = (serving.ask)(request).await;
                    to_line(&match answer {
                        Ok(v) => ResponseEnvelope {
                            id,
                            ok: Some(v),
                            error: None,
                        },
                        Err(e) => ResponseEnvelope {
                            id,
                            ok: None,
                            error: Some(e),
                        },
                    })
                }
            },
        };
        if lines.send(out).await.is_err() {
            break;
        }
    }
    drop(lines);
    // A subscriber that closed only its sending side (`printf ... | nc -U`)
    // still reads: its answers and events keep flowing until a write fails.
    write.await;
    Ok(())
}
