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
    welcome: Welcome,
}

impl Client {
    /// Connects to the daemon of `home` as `who` (a name for its log).
    pub fn connect(home: &Path, who: &str) -> Result<Client, ClientError> {
        let path = socket_path(home);
        let stream = UnixStream::connect(&path).map_err(|e| {
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

    fn read_line(&mut self) -> Result<String, ClientError> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(ClientError::Io(
                "the daemon closed the connection without answering".into(),
            )),
            Ok(_) => Ok(line),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(ClientError::Io("timed out".into()))
            }
            Err(e) => Err(ClientError::Io(e.to_string())),
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
