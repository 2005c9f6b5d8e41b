//! The real wire, spoken from a test with blocking `std::net` sockets: an
//! attacker's or an honest client's side of a peer link or a server session,
//! and a fake server's side. Built from `cwtch-proto` pieces only.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant as StdInstant};

use cwtch_proto::channel::frame::FRAME_LEN;
use cwtch_proto::connection::{Config, Connection, ConnectionEvent};
use cwtch_proto::group::SEALED_BLOB_LEN;
use cwtch_proto::{Identity, Instant, OnionAddress, PublicIdentity};

/// Where a daemon listens on the dev transport (`<dir>/<address>-9878`).
pub fn resolve(devdir: &Path, address: &str) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(devdir.join(format!("{address}-9878"))).ok()?;
    text.trim().parse().ok()
}

/// A listener for a fake daemon of `address` on the dev transport: peers
/// find it in `devdir` as they find a real one.
pub fn listen_dev(devdir: &Path, address: &OnionAddress) -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind on loopback");
    let local = listener.local_addr().expect("local address");
    std::fs::create_dir_all(devdir).expect("the dev directory");
    std::fs::write(
        devdir.join(format!("{}-9878", address.as_str())),
        local.to_string(),
    )
    .expect("publish on the dev transport");
    listener
}

/// A test RNG from the OS.
pub fn rng() -> rand_core::UnwrapErr<getrandom::SysRng> {
    rand_core::UnwrapErr(getrandom::SysRng)
}

/// The VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn clock() -> Instant {
    static START: std::sync::OnceLock<StdInstant> = std::sync::OnceLock::new();
    let start = START.get_or_init(StdInstant::now);
    Instant::from_micros(start.elapsed().as_micros() as u64)
}

/// One connection driven by hand.
pub struct RawLink {
    pub stream: TcpStream,
    pub conn: Connection,
    inbuf: Vec<u8>,
    outq: std::collections::VecDeque<Vec<u8>>,
    pub established: bool,
    pub remote: Option<PublicIdentity>,
    pub closed: Option<String>,
    pending_in: Vec<Vec<u8>>,
    /// Responder side: accept whoever calls.
    accept_all: bool,
}

impl RawLink {
    fn new(stream: TcpStream, conn: Connection, accept_all: bool) -> RawLink {
        let _ = stream.set_nodelay(true);
        RawLink {
            stream,
            conn,
            inbuf: Vec::new(),
            outq: Default::default(),
            established: false,
            remote: None,
            closed: None,
            pending_in: Vec::new(),
            accept_all,
        }
    }

    /// Dials `to` at `addr` as `me`.
    pub fn dial_as(addr: SocketAddr, me: Identity, to: PublicIdentity) -> std::io::Result<RawLink> {
        let stream = TcpStream::connect(addr)?;
        let conn = Connection::initiator(Config::default(), me, to, &mut rng(), clock());
        Ok(RawLink::new(stream, conn, false))
    }

    /// Dials a server anonymously (a fresh identity).
    pub fn dial_anonymous(addr: SocketAddr, to: PublicIdentity) -> std::io::Result<RawLink> {
        let stream = TcpStream::connect(addr)?;
        let conn = Connection::anonymous_initiator(Config::default(), to, &mut rng(), clock());
        Ok(RawLink::new(stream, conn, false))
    }

    /// Answers a connection as `me` (a fake server or peer), accepting
    /// whoever calls.
    pub fn respond(stream: TcpStream, me: Identity) -> RawLink {
        let conn = Connection::responder(Config::default(), me, &mut rng(), clock());
        RawLink::new(stream, conn, true)
    }

    /// Queues a message (sent once the channel is open).
    pub fn send(&mut self, msg: &[u8]) {
        self.outq.push_back(msg.to_vec());
    }

    fn flush(&mut self) -> Result<(), String> {
        let mut frame = [0u8; FRAME_LEN];
        let mut wire = Vec::new();
        loop {
            while let Ok(Some(n)) = self.conn.poll_transmit(clock(), &mut frame) {
                wire.extend_from_slice(&frame[..n]);
            }
            if self.conn.can_send()
                && let Some(m) = self.outq.pop_front()
            {
                self.conn.send(&m).map_err(|e| e.to_string())?;
                continue;
            }
            break;
        }
        if !wire.is_empty() {
            self.stream.write_all(&wire).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Drives the connection until a message arrives (returned), the link
    /// closes (Err), or `limit` passes (Ok(None)).
    pub fn recv(&mut self, limit: Duration) -> Result<Option<Vec<u8>>, String> {
        let until = StdInstant::now() + limit;
        loop {
            if let Some(reason) = &self.closed {
                return Err(reason.clone());
            }
            let mut got = None;
            while let Some(ev) = self.conn.poll_event() {
                match ev {
                    ConnectionEvent::IncomingPeer { remote } => {
                        self.remote = Some(remote);
                        if self.accept_all {
                            let _ = self.conn.accept(clock());
                        } else {
                            let _ = self.conn.refuse();
                        }
                    }
                    ConnectionEvent::Established { remote } => {
                        self.remote = Some(remote);
                        self.established = true;
                    }
                    ConnectionEvent::Message(m) => {
                        got = Some(m.to_vec());
                        break;
                    }
                    ConnectionEvent::Closed(r) => self.closed = Some(format!("{r:?}")),
                }
            }
            // A message that arrived is returned even when what we queued
            // can no longer go out (the other side closed after sending it).
            let flushed = self.flush();
            if got.is_some() {
                return Ok(got);
            }
            flushed?;
            if self.closed.is_some() {
                continue;
            }
            if !self.inbuf.is_empty() {
                let consumed = self
                    .conn
                    .handle_input(&self.inbuf, clock())
                    .map_err(|e| e.to_string());
                match consumed {
                    Ok(n) if n > 0 => {
                        self.inbuf.drain(..n);
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.inbuf.clear();
                        self.closed = Some(e);
                        continue;
                    }
                }
            }
            let now = StdInstant::now();
            if now >= until {
                return Ok(None);
            }
            let wait = (until - now).min(Duration::from_millis(200));
            let _ = self.stream.set_read_timeout(Some(wait));
            let mut buf = [0u8; 8192];
            match self.stream.read(&mut buf) {
                Ok(0) => self.conn.handle_eof(),
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    self.conn.handle_timeout(clock());
                }
                Err(_) => self.conn.handle_eof(),
            }
        }
    }

    /// Drives until established (true) or closed / `limit` (false).
    pub fn establish(&mut self, limit: Duration) -> bool {
        let until = StdInstant::now() + limit;
        while !self.established && StdInstant::now() < until {
            match self.recv(Duration::from_millis(100)) {
                Ok(Some(m)) => self.pending_in.push(m),
                Ok(None) => {}
                Err(_) => return false,
            }
        }
        self.established
    }
}

// Messages that arrived while waiting for establishment are kept here.
impl RawLink {
    /// A message that arrived before [`RawLink::next`] was asked, or the
    /// next one from the wire.
    pub fn next(&mut self, limit: Duration) -> Result<Option<Vec<u8>>, String> {
        if !self.pending_in.is_empty() {
            return Ok(Some(self.pending_in.remove(0)));
        }
        self.recv(limit)
    }
}

/// Server protocol messages (SPEC.md section 8.1), built and read by hand.
pub mod server_wire {
    use super::SEALED_BLOB_LEN;

    pub fn post(blob: &[u8; SEALED_BLOB_LEN]) -> Vec<u8> {
        let mut m = vec![0x01];
        m.extend_from_slice(blob);
        m
    }

    /// A post with a proof-of-work nonce (SPEC.md section 8.4).
    pub fn post_pow(nonce: u64, blob: &[u8; SEALED_BLOB_LEN]) -> Vec<u8> {
        let mut m = vec![0x02];
        m.extend_from_slice(&nonce.to_le_bytes());
        m.extend_from_slice(blob);
        m
    }

    /// A request for the server's signed advert.
    pub fn get_advert() -> Vec<u8> {
        vec![0x06]
    }

    pub fn fetch(after: u64, limit: u16) -> Vec<u8> {
        let mut m = vec![0x03];
        m.extend_from_slice(&after.to_le_bytes());
        m.extend_from_slice(&limit.to_le_bytes());
        m
    }

    pub fn u64_at(m: &[u8], at: usize) -> u64 {
        m.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0)
    }

    /// Hello: head; Posted: (seq, index); Entry: (index, blob);
    /// PageEnd: (next, head).
    pub fn hello(version: u8, head: u64, page_max: u16) -> Vec<u8> {
        let mut m = vec![0x81, version, 0];
        m.extend_from_slice(&[0x5a; 32]);
        m.extend_from_slice(&head.to_le_bytes());
        m.extend_from_slice(&page_max.to_le_bytes());
        m.extend_from_slice(&16u16.to_le_bytes());
        m.extend_from_slice(&1000u16.to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes());
        m
    }

    pub fn posted(seq: u64, index: u64) -> Vec<u8> {
        let mut m = vec![0x82];
        m.extend_from_slice(&seq.to_le_bytes());
        m.extend_from_slice(&index.to_le_bytes());
        m
    }

    pub fn entry(index: u64, blob: &[u8]) -> Vec<u8> {
        let mut m = vec![0x83];
        m.extend_from_slice(&index.to_le_bytes());
        m.extend_from_slice(blob);
        m
    }

    pub fn page_end(next: u64, head: u64) -> Vec<u8> {
        let mut m = vec![0x84];
        m.extend_from_slice(&next.to_le_bytes());
        m.extend_from_slice(&head.to_le_bytes());
        m
    }

    pub fn subscribed(after: u64) -> Vec<u8> {
        let mut m = vec![0x86];
        m.extend_from_slice(&after.to_le_bytes());
        m
    }
}

/// An honest anonymous client of a real server: posts blobs (with the
/// proof of work its hello asks) and fetches.
pub struct ServerUser {
    pub link: RawLink,
    pub next_seq: u64,
    pub head: u64,
    /// The hello, as received.
    pub hello: Vec<u8>,
    /// The proof of work the hello asks, in bits.
    pub pow_bits: u8,
    /// The connection's proof-of-work challenge.
    pub challenge: [u8; 32],
}

impl ServerUser {
    pub fn connect(addr: SocketAddr, server: &OnionAddress, limit: Duration) -> Option<ServerUser> {
        let mut link = RawLink::dial_anonymous(addr, server.public_identity()).ok()?;
        let until = StdInstant::now() + limit;
        while StdInstant::now() < until {
            match link.next(Duration::from_millis(200)) {
                Ok(Some(m)) if m.first() == Some(&0x81) && m.len() >= 43 => {
                    let head = server_wire::u64_at(&m, 35);
                    let mut challenge = [0u8; 32];
                    challenge.copy_from_slice(&m[3..35]);
                    return Some(ServerUser {
                        link,
                        next_seq: 0,
                        head,
                        pow_bits: m[2],
                        challenge,
                        hello: m,
                    });
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// The post message for the next sequence number: with the proof of
    /// work the hello asks, if any.
    pub fn post_message(&mut self, blob: &[u8; SEALED_BLOB_LEN]) -> Vec<u8> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.pow_bits == 0 {
            return server_wire::post(blob);
        }
        let nonce =
            cwtch_proto::server::pow_solve(&self.challenge, seq, blob, self.pow_bits, 0, u64::MAX)
                .expect("a proof of work within 2^64 tries");
        server_wire::post_pow(nonce, blob)
    }

    /// Posts and waits for the durable acknowledgement; the index.
    pub fn post(&mut self, blob: &[u8; SEALED_BLOB_LEN], limit: Duration) -> Option<u64> {
        let seq = self.next_seq;
        let message = self.post_message(blob);
        self.link.send(&message);
        let until = StdInstant::now() + limit;
        while StdInstant::now() < until {
            match self.link.next(Duration::from_millis(200)) {
                Ok(Some(m)) if m.first() == Some(&0x82) && server_wire::u64_at(&m, 1) == seq => {
                    return Some(server_wire::u64_at(&m, 9));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Fetches every entry after `after`: (index, blob).
    pub fn fetch_all(&mut self, mut after: u64, limit: Duration) -> Option<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        let until = StdInstant::now() + limit;
        self.link.send(&server_wire::fetch(after, 64));
        while StdInstant::now() < until {
            match self.link.next(Duration::from_millis(200)) {
                Ok(Some(m)) if m.first() == Some(&0x83) => {
                    out.push((server_wire::u64_at(&m, 1), m[9..].to_vec()));
                }
                Ok(Some(m)) if m.first() == Some(&0x84) => {
                    let next = server_wire::u64_at(&m, 1);
                    let head = server_wire::u64_at(&m, 9);
                    if next >= head {
                        return Some(out);
                    }
                    after = after.max(next);
                    self.link.send(&server_wire::fetch(after, 64));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

/// A peer driven by hand (an attacker, or a contact that answers as told):
/// dials a daemon on the dev transport as `me`, speaks peer messages built
/// with `cwtch-proto`, acknowledges what must be acknowledged and keeps what
/// arrives.
pub struct FakePeer {
    pub me: Identity,
    pub link: RawLink,
    /// Binary invites received (acknowledged).
    pub invites: Vec<Vec<u8>>,
    /// Recovery requests received: (id, encoded wanted ranges).
    pub resend_requests: Vec<(u64, Vec<u8>)>,
    /// Texts received (acknowledged).
    pub texts: Vec<String>,
}

impl FakePeer {
    /// Dials the daemon at `to` (found in `devdir`) as `me` and waits for
    /// the link to be established.
    pub fn dial(devdir: &Path, me: Identity, to: &str, limit: Duration) -> Option<FakePeer> {
        // The daemon answers its control socket before it listens.
        let until = StdInstant::now() + limit;
        let addr = loop {
            match resolve(devdir, to) {
                Some(a) => break a,
                None if StdInstant::now() < until => std::thread::sleep(Duration::from_millis(100)),
                None => return None,
            }
        };
        let remote = OnionAddress::parse(to).ok()?.public_identity();
        let mut link = RawLink::dial_as(addr, me.clone(), remote).ok()?;
        if !link.establish(limit) {
            return None;
        }
        Some(FakePeer {
            me,
            link,
            invites: Vec::new(),
            resend_requests: Vec::new(),
            texts: Vec::new(),
        })
    }

    /// Sends one peer message.
    pub fn send(&mut self, msg: &cwtch_proto::peer::PeerMessage<'_>) {
        let mut buf = vec![0u8; cwtch_proto::peer::message::MAX_ENCODED_LEN];
        let bytes = msg.encode(&mut buf).expect("encodable peer message");
        self.link.send(bytes);
    }

    /// Reads messages for `limit` (or until `stop` says so), acknowledging
    /// texts and invites and keeping what arrives. False if the link closed.
    pub fn pump_until(&mut self, limit: Duration, mut stop: impl FnMut(&FakePeer) -> bool) -> bool {
        use cwtch_proto::peer::PeerMessage;
        let until = StdInstant::now() + limit;
        while StdInstant::now() < until {
            if stop(self) {
                return true;
            }
            let msg = match self.link.next(Duration::from_millis(100)) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(_) => return false,
            };
            match PeerMessage::decode(&msg) {
                Ok(PeerMessage::Text { id, text, .. }) => {
                    self.texts.push(text.to_string());
                    self.send(&PeerMessage::Ack { id });
                }
                Ok(PeerMessage::GroupInvite { id, invite }) => {
                    self.invites.push(invite.to_vec());
                    self.send(&PeerMessage::Ack { id });
                }
                Ok(PeerMessage::ResendRequest { id, wanted }) => {
                    self.resend_requests.push((id, wanted.to_vec()));
                }
                _ => {}
            }
        }
        true
    }
}
