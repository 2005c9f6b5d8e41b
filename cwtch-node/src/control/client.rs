//! A client of the control socket, with blocking I/O: what the command
//! line, `chat` and bots use. One connection carries many requests and,
//! after [`Client::subscribe`], the event stream.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::api::{
    API_VERSION, ApiError, ClientHello, ErrorCode, EventEnvelope, Request, RequestEnvelope,
    ResponseEnvelope, Welcome,
};
use super::socket_path;

/// Why a request did not get an answer.
#[derive(Debug)]
pub enum ClientError {
    /// No daemon answers on the socket.
    NotRunning(String),
    /// No daemon answers on the socket yet, but one holds the home: it is
    /// starting (connecting to Tor), or stopping.
    Starting {
        /// Its pid.
        pid: u32,
        /// What it last heard from Tor (`tor bootstrap: 45% ...`), if it
        /// said.
        progress: Option<String>,
    },
    /// The daemon answered with an error.
    Api(ApiError),
    /// The connection broke, or the daemon said something this client does
    /// not understand.
    Io(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning(why) => f.write_str(why),
            ClientError::Starting { pid, progress } => {
                write!(
                    f,
                    "the daemon (pid {pid}) is starting: it is connecting to Tor"
                )?;
                if let Some(progress) = progress {
                    write!(f, " ({progress})")?;
                }
                f.write_str("; try again shortly")
            }
            ClientError::Api(e) => e.fmt(f),
            ClientError::Io(e) => write!(f, "the daemon's answer: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A connection to a running daemon.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    /// Events read while waiting for an answer.
    events: VecDeque<EventEnvelope>,
    /// The start of a line whose end has not arrived yet (a read timed
    /// out in the middle of it).
    partial: Vec<u8>,
    welcome: Welcome,
}

impl Client {
    /// Connects to the daemon of `home` as `who` (a name for its log).
    pub fn connect(home: &Path, who: &str) -> Result<Client, ClientError> {
        let path = socket_path(home);
        let stream = UnixStream::connect(&path).map_err(|e| {
            if let Some(pid) = crate::home::lock_holder(home) {
                return ClientError::Starting {
                    pid,
                    progress: crate::home::read_starting(home),
                };
            }
            ClientError::NotRunning(format!(
                "cannot reach the daemon at {} ({e}): is `cwtch-node --home {} run` running?",
                path.display(),
                home.display()
            ))
        })?;
        let writer = stream
            .try_clone()
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let mut client = Client {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
            events: VecDeque::new(),
            partial: Vec::new(),
            welcome: Welcome {
                api: 0,
                daemon: String::new(),
                address: String::new(),
                run: 0,
            },
        };
        client.write(&ClientHello {
            api: API_VERSION,
            client: who.to_string(),
        })?;
        let line = client.read_line()?;
        match serde_json::from_str::<Welcome>(&line) {
            Ok(w) => client.welcome = w,
            Err(_) => {
                let r: ResponseEnvelope =
                    serde_json::from_str(&line).map_err(|e| ClientError::Io(e.to_string()))?;
                return Err(ClientError::Api(r.error.unwrap_or_else(|| {
                    ApiError::new(ErrorCode::Internal, "the daemon refused the connection")
                })));
            }
        }
        Ok(client)
    }

    /// What the daemon said when we connected.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    fn write(&mut self, value: &impl serde::Serialize) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(value).map_err(|e| ClientError::Io(e.to_string()))?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .map_err(|e| ClientError::Io(e.to_string()))
    }

    /// Reads one line. A read that times out keeps what it read of a
    /// line for the next call: nothing of the stream is lost.
    fn read_line(&mut self) -> Result<String, ClientError> {
        loop {
            match self.reader.read_until(b'\n', &mut self.partial) {
                Ok(_) if self.partial.ends_with(b"\n") => {
                    let line = std::mem::take(&mut self.partial);
                    return String::from_utf8(line).map_err(|e| ClientError::Io(e.to_string()));
                }
                Ok(_) => {
                    return Err(ClientError::Io(
                        "the daemon closed the connection without answering".into(),
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ClientError::Io("timed out".into()));
                }
                Err(e) => return Err(ClientError::Io(e.to_string())),
            }
        }
    }

    /// Sends a request and waits for its answer (events that arrive
    /// meanwhile are kept for [`Client::next_event`]).
    pub fn request(&mut self, request: Request) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.write(&RequestEnvelope { id, request })?;
        loop {
            let line = self.read_line()?;
            let value: Value =
                serde_json::from_str(&line).map_err(|e| ClientError::Io(e.to_string()))?;
            if value.get("seq").is_some() {
                if let Ok(ev) = serde_json::from_value::<EventEnvelope>(value) {
                    self.events.push_back(ev);
                }
                continue;
            }
            let r: ResponseEnvelope =
                serde_json::from_value(value).map_err(|e| ClientError::Io(e.to_string()))?;
            if r.id != id && r.id != 0 {
                continue; // an answer to an earlier request
            }
            return match (r.ok, r.error) {
                (_, Some(e)) => Err(ClientError::Api(e)),
                (Some(v), None) => Ok(v),
                (None, None) => Ok(Value::Null),
            };
        }
    }

    /// Starts the event stream (after event `since`, if given).
    pub fn subscribe(&mut self, since: Option<u64>) -> Result<Value, ClientError> {
        self.request(Request::Subscribe { since })
    }

    /// The next event (blocking); with `timeout`, `Ok(None)` when none came.
    pub fn next_event(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<EventEnvelope>, ClientError> {
        if let Some(ev) = self.events.pop_front() {
            return Ok(Some(ev));
        }
        self.reader
            .get_ref()
            .set_read_timeout(timeout)
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let line = match self.read_line() {
            Ok(l) => l,
            Err(ClientError::Io(e)) if e == "timed out" => {
                let _ = self.reader.get_ref().set_read_timeout(None);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let _ = self.reader.get_ref().set_read_timeout(None);
        serde_json::from_str::<EventEnvelope>(&line)
            .map(Some)
            .map_err(|e| ClientError::Io(e.to_string()))
    }
}

/// Sends one request to the daemon of `home` and returns its answer.
pub fn request(home: &Path, request: Request) -> Result<Value, ClientError> {
    Client::connect(home, "cwtch-node")?.request(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// An event line that arrives in two pieces, the first read timing out
    /// between them, is read whole (it used to be cut and the rest misread).
    #[test]
    fn a_line_split_across_a_timeout_is_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(socket_path(dir.path())).unwrap();
        let daemon = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut hello = String::new();
            BufReader::new(s.try_clone().unwrap())
                .read_line(&mut hello)
                .unwrap();
            s.write_all(b"{\"api\":1,\"daemon\":\"d\",\"address\":\"a\",\"run\":1}\n")
                .unwrap();
            s.write_all(b"{\"seq\":1,\"event\":{\"type\":\"lag")
                .unwrap();
            std::thread::sleep(Duration::from_millis(300));
            s.write_all(b"ged\",\"dropped\":2}}\n").unwrap();
        });
        let mut c = Client::connect(dir.path(), "test").unwrap();
        let first = c.next_event(Some(Duration::from_millis(50))).unwrap();
        assert!(first.is_none(), "nothing whole yet");
        let ev = loop {
            if let Some(ev) = c.next_event(Some(Duration::from_millis(50))).unwrap() {
                break ev;
            }
        };
        assert_eq!(ev.seq, 1);
        assert_eq!(ev.event, super::super::api::Event::Lagged { dropped: 2 });
        daemon.join().unwrap();
    }
}
