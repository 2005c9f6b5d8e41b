//! A peer connection: the handshake, then the channel, with timers, driven
//! through `handle_*` and `poll_*`.
//!
//! This is the state machine a driver owns per TCP (or Tor) stream. See the
//! crate docs for the driving contract and SPEC.md, sections 2 and 3, for
//! what goes on the wire.
//!
//! Lifecycle:
//!
//! - initiator: message 1 is ready to transmit from the start; message 2
//!   arrives → [`ConnectionEvent::Established`]; the first frame it sends confirms
//!   the keys to the responder (a padding frame if it has no data).
//! - responder: message 1 arrives → [`ConnectionEvent::IncomingPeer`] with the
//!   authenticated caller; the application calls [`Connection::accept`]
//!   (message 2 is then transmitted) or [`Connection::refuse`] (nothing is
//!   sent; a blocked peer learns nothing). The first valid frame from the
//!   initiator → [`ConnectionEvent::Established`].
//! - either: [`ConnectionEvent::Message`] for each message; [`ConnectionEvent::Closed`] once,
//!   at the end, with the reason.

use core::fmt;

use heapless::{Deque, Vec};
use rand_core::CryptoRng;

use crate::channel::frame::FRAME_LEN;
use crate::channel::{Channel, ChannelError, DEFAULT_REKEY_INTERVAL, Received, SendError};
use crate::handshake::{
    HandshakeError, InitiatorHandshake, MSG1_LEN, MSG2_LEN, ResponderHandshake,
};
use crate::identity::{Identity, PublicIdentity};
use crate::time::{Duration, Instant};

/// Timers and limits of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// From creation until [`ConnectionEvent::Established`]; a slower peer is dropped.
    pub handshake_timeout: Duration,
    /// Send a padding frame when we have sent nothing for this long.
    pub keepalive_interval: Duration,
    /// Close when the peer has sent nothing (not even padding) for this long.
    pub idle_timeout: Duration,
    /// Frames per key epoch in each direction.
    pub rekey_interval: u64,
}

impl Default for Config {
    /// Timers sized for Tor: circuits take seconds to build and stall at times.
    fn default() -> Self {
        Config {
            handshake_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(90),
            rekey_interval: DEFAULT_REKEY_INTERVAL,
        }
    }
}

/// Which timer ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// The handshake did not finish in time.
    Handshake,
    /// The peer went silent.
    Idle,
}

/// Why a connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The handshake failed.
    Handshake(HandshakeError),
    /// The channel refused a frame.
    Channel(ChannelError),
    /// The stream ended without a close frame: truncated by someone.
    Truncated,
    /// The output buffer cannot hold the next transmission.
    BufferTooSmall {
        /// The size needed.
        required: usize,
    },
    /// The call does not fit the connection's state (e.g. `accept` when no
    /// peer is waiting).
    InvalidState,
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Handshake(e) => write!(f, "handshake failed: {e}"),
            ConnectionError::Channel(e) => write!(f, "channel failed: {e}"),
            ConnectionError::Truncated => {
                f.write_str("the stream ended without a close: the connection was cut")
            }
            ConnectionError::BufferTooSmall { required } => {
                write!(f, "output buffer too small: {required} bytes needed")
            }
            ConnectionError::InvalidState => f.write_str("not possible in this state"),
        }
    }
}

impl core::error::Error for ConnectionError {}

impl From<HandshakeError> for ConnectionError {
    fn from(e: HandshakeError) -> Self {
        ConnectionError::Handshake(e)
    }
}

impl From<ChannelError> for ConnectionError {
    fn from(e: ChannelError) -> Self {
        ConnectionError::Channel(e)
    }
}

/// Why a connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// We closed it and our close frame was sent.
    Local,
    /// We refused the incoming peer.
    Refused,
    /// The peer closed it, with this reason byte.
    Remote(u8),
    /// A timer ran out.
    TimedOut(Timeout),
    /// It failed.
    Error(ConnectionError),
}

/// What the application learns from a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionEvent<'a> {
    /// Responder only: an authenticated peer wants to talk; call
    /// [`Connection::accept`] or [`Connection::refuse`].
    IncomingPeer {
        /// Who is calling (their key is proven by message 1; the proof is
        /// completed by [`ConnectionEvent::Established`]).
        remote: PublicIdentity,
    },
    /// Both sides hold the keys and the peer is authenticated.
    Established {
        /// The authenticated peer.
        remote: PublicIdentity,
    },
    /// A whole message from the peer, valid until the next `poll_event` or
    /// `handle_input`.
    Message(&'a [u8]),
    /// The connection is over; nothing more will happen. Always the last
    /// event.
    Closed(CloseReason),
}

#[derive(Clone, Copy)]
enum Pending {
    IncomingPeer(PublicIdentity),
    Established(PublicIdentity),
}

enum State {
    InitiatorAwaitMessage2(InitiatorHandshake),
    ResponderAwaitMessage1(ResponderHandshake),
    ResponderDecide(ResponderHandshake, PublicIdentity),
    Open {
        channel: Channel,
        remote: PublicIdentity,
        confirmed: bool,
        closing: bool,
    },
    Closed {
        channel: Option<Channel>,
        remote: Option<PublicIdentity>,
    },
}

/// One peer connection: handshake, channel and timers.
pub struct Connection {
    config: Config,
    state: State,
    hs_out: Vec<u8, MSG1_LEN>,
    rx_buf: [u8; FRAME_LEN],
    rx_len: usize,
    events: Deque<Pending, 2>,
    closed: Option<CloseReason>,
    closed_reported: bool,
    msg_ready: bool,
    msg_delivered: bool,
    need_confirm: bool,
    keepalive_due: bool,
    handshake_deadline: Instant,
    last_rx: Instant,
    last_tx: Instant,
}

impl Connection {
    fn with_state(config: Config, state: State, now: Instant) -> Self {
        Connection {
            config,
            state,
            hs_out: Vec::new(),
            rx_buf: [0u8; FRAME_LEN],
            rx_len: 0,
            events: Deque::new(),
            closed: None,
            closed_reported: false,
            msg_ready: false,
            msg_delivered: false,
            need_confirm: false,
            keepalive_due: false,
            handshake_deadline: now + config.handshake_timeout,
            last_rx: now,
            last_tx: now,
        }
    }

    /// A connection we dial as `local` to `remote` (whose address we know).
    pub fn initiator<R: CryptoRng + ?Sized>(
        config: Config,
        local: Identity,
        remote: PublicIdentity,
        rng: &mut R,
        now: Instant,
    ) -> Self {
        let mut hs = InitiatorHandshake::new(local, remote, rng);
        let mut msg1 = [0u8; MSG1_LEN];
        // MSG1_LEN bytes always fit; the DH with a validated key cannot be
        // non-contributory, but if it were, the connection starts closed.
        let written = hs.write_message1(&mut msg1);
        let mut conn = Connection::with_state(config, State::InitiatorAwaitMessage2(hs), now);
        match written {
            Ok(n) => {
                let _ = conn.hs_out.extend_from_slice(msg1.get(..n).unwrap_or(&[]));
            }
            Err(e) => conn.fail(e.into()),
        }
        conn
    }

    /// A connection we dial with a fresh throw-away identity drawn from
    /// `rng`, so that the responder (a server) cannot link our sessions.
    pub fn anonymous_initiator<R: CryptoRng + ?Sized>(
        config: Config,
        remote: PublicIdentity,
        rng: &mut R,
        now: Instant,
    ) -> Self {
        let local = Identity::generate(rng);
        Connection::initiator(config, local, remote, rng, now)
    }

    /// A connection someone dialed to us, as `local`.
    pub fn responder<R: CryptoRng + ?Sized>(
        config: Config,
        local: Identity,
        rng: &mut R,
        now: Instant,
    ) -> Self {
        let hs = ResponderHandshake::new(local, rng);
        Connection::with_state(config, State::ResponderAwaitMessage1(hs), now)
    }

    // ----- getters -------------------------------------------------------

    /// The peer, once known (initiator: from the start; responder: after
    /// message 1).
    pub fn remote(&self) -> Option<PublicIdentity> {
        match &self.state {
            State::InitiatorAwaitMessage2(hs) => Some(hs.remote()),
            State::ResponderAwaitMessage1(_) => None,
            State::ResponderDecide(_, remote) | State::Open { remote, .. } => Some(*remote),
            State::Closed { remote, .. } => *remote,
        }
    }

    /// Whether the session is established (keys confirmed both ways).
    pub fn is_established(&self) -> bool {
        matches!(
            self.state,
            State::Open {
                confirmed: true,
                ..
            }
        )
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    /// Whether [`Connection::send`] would accept a message now.
    pub fn can_send(&self) -> bool {
        matches!(&self.state, State::Open { channel, closing: false, .. } if !channel.has_pending())
    }

    /// The handshake hash, once the channel is open (channel binding).
    pub fn handshake_hash(&self) -> Option<[u8; 32]> {
        match &self.state {
            State::Open { channel, .. } => Some(*channel.handshake_hash()),
            _ => None,
        }
    }

    // ----- inputs --------------------------------------------------------

    /// Feeds bytes read from the stream. Returns how many were consumed:
    /// fewer than given when a message or a decision awaits the
    /// application (drain [`Connection::poll_event`], then call again with
    /// the rest). An error ends the connection ([`ConnectionEvent::Closed`] follows).
    pub fn handle_input(&mut self, data: &[u8], now: Instant) -> Result<usize, ConnectionError> {
        self.release_delivered_message();
        let mut consumed = 0;
        loop {
            if self.msg_ready {
                return Ok(consumed);
            }
            let need = match &self.state {
                State::InitiatorAwaitMessage2(_) => MSG2_LEN,
                State::ResponderAwaitMessage1(_) => MSG1_LEN,
                State::ResponderDecide(..) => return Ok(consumed),
                State::Open { .. } => FRAME_LEN,
                // Nothing more is read after the end.
                State::Closed { .. } => return Ok(data.len()),
            };
            let rest = data.get(consumed..).unwrap_or(&[]);
            let take = need.saturating_sub(self.rx_len).min(rest.len());
            if let (Some(dst), Some(src)) = (
                self.rx_buf.get_mut(self.rx_len..self.rx_len + take),
                rest.get(..take),
            ) {
                dst.copy_from_slice(src);
            }
            self.rx_len += take;
            consumed += take;
            if self.rx_len < need {
                return Ok(consumed);
            }
            self.rx_len = 0;
            self.last_rx = now;
            if let Err(e) = self.process_unit(need) {
                self.fail(e);
                return Err(e);
            }
        }
    }

    fn process_unit(&mut self, len: usize) -> Result<(), ConnectionError> {
        let unit = self
            .rx_buf
            .get(..len)
            .ok_or(ConnectionError::InvalidState)?;
        match &mut self.state {
            State::ResponderAwaitMessage1(hs) => {
                let remote = hs.read_message1(unit)?;
                let State::ResponderAwaitMessage1(hs) = core::mem::replace(
                    &mut self.state,
                    State::Closed {
                        channel: None,
                        remote: None,
                    },
                ) else {
                    return Err(ConnectionError::InvalidState);
                };
                self.state = State::ResponderDecide(hs, remote);
                let _ = self.events.push_back(Pending::IncomingPeer(remote));
            }
            State::InitiatorAwaitMessage2(hs) => {
                let keys = hs.read_message2(unit)?;
                let remote = hs.remote();
                self.state = State::Open {
                    channel: Channel::new(&keys, self.config.rekey_interval),
                    remote,
                    confirmed: true,
                    closing: false,
                };
                self.need_confirm = true;
                let _ = self.events.push_back(Pending::Established(remote));
            }
            State::Open {
                channel,
                remote,
                confirmed,
                ..
            } => {
                let frame: &mut [u8; FRAME_LEN] = &mut self.rx_buf;
                let received = channel.open(frame)?;
                if !*confirmed {
                    *confirmed = true;
                    let _ = self.events.push_back(Pending::Established(*remote));
                }
                match received {
                    Received::Nothing => {}
                    Received::Message => self.msg_ready = true,
                    Received::Close(reason) => self.finish(CloseReason::Remote(reason)),
                }
            }
            State::ResponderDecide(..) | State::Closed { .. } => {
                return Err(ConnectionError::InvalidState);
            }
        }
        Ok(())
    }

    /// Responder: accept the peer announced by [`ConnectionEvent::IncomingPeer`];
    /// message 2 becomes ready to transmit.
    pub fn accept(&mut self, now: Instant) -> Result<(), ConnectionError> {
        let State::ResponderDecide(hs, remote) = &self.state else {
            return Err(ConnectionError::InvalidState);
        };
        let remote = *remote;
        let mut msg2 = [0u8; MSG2_LEN];
        let (n, keys) = match hs.write_message2(&mut msg2) {
            Ok(ok) => ok,
            Err(e) => {
                self.fail(e.into());
                return Err(e.into());
            }
        };
        self.hs_out.clear();
        let _ = self.hs_out.extend_from_slice(msg2.get(..n).unwrap_or(&[]));
        self.state = State::Open {
            channel: Channel::new(&keys, self.config.rekey_interval),
            remote,
            confirmed: false,
            closing: false,
        };
        self.last_rx = now;
        Ok(())
    }

    /// Responder: refuse the peer announced by [`ConnectionEvent::IncomingPeer`].
    /// Nothing is sent; drop the stream.
    pub fn refuse(&mut self) -> Result<(), ConnectionError> {
        if !matches!(self.state, State::ResponderDecide(..)) {
            return Err(ConnectionError::InvalidState);
        }
        self.finish(CloseReason::Refused);
        Ok(())
    }

    /// Queues a message for the peer. One message is in flight at a time:
    /// when this returns [`SendError::Busy`], drain `poll_transmit` first.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        match &mut self.state {
            State::Open {
                channel,
                closing: false,
                ..
            } => channel.queue_message(msg),
            State::Open { closing: true, .. } | State::Closed { .. } => Err(SendError::Closed),
            _ => Err(SendError::NotEstablished),
        }
    }

    /// Closes the connection: a queued message is sent first, then a close
    /// frame. Before the channel is open, the connection just ends.
    pub fn close(&mut self) {
        match &mut self.state {
            State::Open { closing, .. } => *closing = true,
            State::Closed { .. } => {}
            _ => self.finish(CloseReason::Local),
        }
    }

    /// The stream ended (EOF or reset). Unless the peer closed properly
    /// first, this is a truncation.
    pub fn handle_eof(&mut self) {
        if !self.is_closed() {
            self.fail(ConnectionError::Truncated);
        }
    }

    /// Call when the deadline of [`Connection::poll_timeout`] has passed. A
    /// call before any deadline does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &self.state {
            State::Closed { .. } => {}
            State::Open {
                confirmed: true, ..
            } => {
                if now >= self.last_rx + self.config.idle_timeout {
                    self.finish(CloseReason::TimedOut(Timeout::Idle));
                } else if now >= self.last_tx + self.config.keepalive_interval {
                    self.keepalive_due = true;
                }
            }
            _ => {
                if now >= self.handshake_deadline {
                    self.finish(CloseReason::TimedOut(Timeout::Handshake));
                }
            }
        }
    }

    // ----- outputs -------------------------------------------------------

    /// Writes the next bytes to send into `buf` and returns their length, or
    /// `None` when there is nothing to send. A buffer of [`FRAME_LEN`] bytes
    /// always suffices.
    #[must_use = "bytes to send must be written to the stream"]
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<Option<usize>, ConnectionError> {
        if !self.hs_out.is_empty() {
            let n = self.hs_out.len();
            let dst = buf
                .get_mut(..n)
                .ok_or(ConnectionError::BufferTooSmall { required: n })?;
            dst.copy_from_slice(&self.hs_out);
            self.hs_out.clear();
            self.last_tx = now;
            return Ok(Some(n));
        }
        let State::Open {
            channel, closing, ..
        } = &mut self.state
        else {
            return Ok(None);
        };
        let wants_frame =
            channel.has_pending() || self.need_confirm || self.keepalive_due || *closing;
        if !wants_frame {
            return Ok(None);
        }
        let frame: &mut [u8; FRAME_LEN] = buf
            .get_mut(..FRAME_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(ConnectionError::BufferTooSmall {
                required: FRAME_LEN,
            })?;
        let mut was_close = false;
        let result = if channel.has_pending() {
            channel.seal_next_data(frame).map(|_| ())
        } else if self.need_confirm || self.keepalive_due {
            channel.seal_padding(frame)
        } else {
            was_close = true;
            channel.seal_close(0, frame)
        };
        if let Err(e) = result {
            self.fail(e.into());
            return Err(e.into());
        }
        self.need_confirm = false;
        self.keepalive_due = false;
        self.last_tx = now;
        if was_close {
            self.finish(CloseReason::Local);
        }
        Ok(Some(FRAME_LEN))
    }

    /// The next event, if any. A [`ConnectionEvent::Message`] borrows the connection
    /// until the next call.
    #[must_use = "events must be handled"]
    pub fn poll_event(&mut self) -> Option<ConnectionEvent<'_>> {
        self.release_delivered_message();
        if let Some(pending) = self.events.pop_front() {
            return Some(match pending {
                Pending::IncomingPeer(remote) => ConnectionEvent::IncomingPeer { remote },
                Pending::Established(remote) => ConnectionEvent::Established { remote },
            });
        }
        if self.msg_ready {
            self.msg_delivered = true;
            let channel = match &self.state {
                State::Open { channel, .. } => Some(channel),
                State::Closed { channel, .. } => channel.as_ref(),
                _ => None,
            };
            if let Some(msg) = channel.and_then(Channel::message) {
                return Some(ConnectionEvent::Message(msg));
            }
        }
        if let (Some(reason), false) = (self.closed, self.closed_reported) {
            self.closed_reported = true;
            return Some(ConnectionEvent::Closed(reason));
        }
        None
    }

    /// When [`Connection::handle_timeout`] must be called next, or `None`
    /// when no timer runs (the connection is closed).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Closed { .. } => None,
            State::Open {
                confirmed: true, ..
            } => {
                let idle = self.last_rx + self.config.idle_timeout;
                if self.keepalive_due {
                    Some(idle)
                } else {
                    Some(idle.min(self.last_tx + self.config.keepalive_interval))
                }
            }
            _ => Some(self.handshake_deadline),
        }
    }

    // ----- internals -----------------------------------------------------

    fn release_delivered_message(&mut self) {
        if self.msg_delivered {
            self.msg_delivered = false;
            self.msg_ready = false;
        }
    }

    fn fail(&mut self, error: ConnectionError) {
        self.finish(CloseReason::Error(error));
    }

    fn finish(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        let remote = self.remote();
        let old = core::mem::replace(
            &mut self.state,
            State::Closed {
                channel: None,
                remote,
            },
        );
        // Keep an undelivered message readable.
        if let State::Open { channel, .. } = old
            && self.msg_ready
        {
            self.state = State::Closed {
                channel: Some(channel),
                remote,
            };
        }
        self.hs_out.clear();
        self.closed = Some(reason);
    }
}
