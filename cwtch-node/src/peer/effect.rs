//! What goes in and out of the peer's core: links named by id, the events
//! a link reports, the effects the core asks the daemon to carry out, and
//! the two clocks every input carries.

use cwtch_proto::{Instant, OnionAddress, PublicIdentity, UnixMicros};

use crate::control::api::Event;

/// A connection (to a contact, or an anonymous one to a server), named by
/// the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

/// The driver's clocks at an input: monotonic time for deadlines, and our
/// wall clock for what we write and for judging others' time claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic.
    pub mono: Instant,
    /// Our wall clock.
    pub unix: UnixMicros,
}

impl Now {
    /// Our wall clock in Unix milliseconds.
    pub fn unix_ms(&self) -> u64 {
        self.unix.as_millis()
    }
    /// Our wall clock in Unix seconds.
    pub fn unix_secs(&self) -> u64 {
        self.unix.as_secs()
    }
}

/// How a link ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// Why, in plain words.
    pub reason: String,
    /// A failure (a dial or handshake error, a timeout), not a close.
    pub failed: bool,
    /// We closed it (a link of ours that ends soon then says nothing about
    /// the other side).
    pub by_us: bool,
}

/// What a link reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The handshake finished. For a peer link, who the peer is.
    Up {
        /// The authenticated peer (none for a server: the client is
        /// anonymous and the server is who we dialed).
        remote: Option<Box<PublicIdentity>>,
    },
    /// One channel message.
    Message(Vec<u8>),
    /// The link is gone (or the dial failed), and how.
    Down(Ended),
}

/// What the core asks the daemon to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Dial a contact over Tor; report on `link`.
    DialPeer {
        /// The new link.
        link: LinkId,
        /// Whom.
        to: OnionAddress,
    },
    /// Dial a server anonymously (a fresh key and circuit); report on
    /// `link`.
    DialServer {
        /// The new link.
        link: LinkId,
        /// Which server.
        server: OnionAddress,
    },
    /// Send one message on a link. If the link's queue is full, the daemon
    /// closes the link rather than skip the message.
    Send {
        /// The link.
        link: LinkId,
        /// The message.
        msg: Vec<u8>,
    },
    /// Close a link.
    Close {
        /// The link.
        link: LinkId,
    },
    /// Tell the control API's subscribers.
    Notify(Event),
}
