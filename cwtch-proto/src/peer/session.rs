//! The rules of one peer link (SPEC.md section 4, "Rules"): who is let in
//! at the handshake, what each side says once the link is established,
//! which messages are acted upon from whom, that a message is acknowledged
//! only after it is stored, and which of two simultaneous links survives.
//!
//! A [`PeerSession`] lives beside the [`crate::connection::Connection`] of
//! an established link. The application tells it how it stands with the
//! peer ([`Standing`], from its contact list) when the link is established
//! and whenever the user accepts or blocks the peer; it polls
//! [`PeerSession::poll_event`] for what to do about that (greet, record a
//! request, close), and passes every channel message through
//! [`PeerSession::handle_message`], which decodes it and refuses what this
//! peer may not send:
//!
//! | standing | acted upon |
//! |---|---|
//! | accepted | every kind |
//! | request (the user has not decided) | `Hello`, `Text` |
//! | blocked | nothing (and the link is closed) |
//!
//! A `Text` or `GroupInvite` comes with an [`AckToken`]: the `Ack` is made
//! from it, and only after the application has stored the message
//! ([`AckToken::stored`]), so an acknowledged message is never lost.

use core::fmt;

use heapless::Deque;

use crate::onion::OnionAddress;
use crate::peer::message::{PeerMessage, PeerMessageError};

/// How we stand with the peer, as the application's contact list says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// We added or accepted them: we talk.
    Accepted,
    /// They contacted us; the user has not decided yet.
    Request,
    /// Refused, until unblocked.
    Blocked,
    /// Not in the contact list: becomes a request if there is room.
    Stranger {
        /// Whether the application has room for one more online request
        /// ([`crate::peer::PendingRequests::room_for`]).
        room_for_request: bool,
    },
}

/// Why a peer is turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRefusal {
    /// The user blocked the peer.
    Blocked,
    /// A stranger, while the application holds its maximum of pending
    /// contact requests.
    TooManyRequests,
}

impl fmt::Display for PeerRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerRefusal::Blocked => "the peer is blocked",
            PeerRefusal::TooManyRequests => "too many pending contact requests",
        })
    }
}

/// Whether a peer that authenticated in the handshake may have a link at
/// all (the responder asks before accepting, SPEC.md section 2).
pub fn admit(standing: Standing) -> Result<(), PeerRefusal> {
    match standing {
        Standing::Blocked => Err(PeerRefusal::Blocked),
        Standing::Stranger {
            room_for_request: false,
        } => Err(PeerRefusal::TooManyRequests),
        _ => Ok(()),
    }
}

/// Two established links to the same peer (both dialed at once): whether
/// the new one replaces the existing one. Both sides keep the link dialed
/// by the smaller address (text form), so they agree without a word; a
/// second link dialed by the same side replaces the first (a reconnect).
pub fn keep_new_link(
    local: &OnionAddress,
    remote: &OnionAddress,
    existing_we_dialed: bool,
    new_we_dialed: bool,
) -> bool {
    let preferred_is_local = local.as_str() <= remote.as_str();
    let existing_preferred = existing_we_dialed == preferred_is_local;
    let new_preferred = new_we_dialed == preferred_is_local;
    new_preferred || !existing_preferred
}

/// What the application must do about the link, from
/// [`PeerSession::poll_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// Say `Hello` (our display name), then re-send the outgoing queue for
    /// this peer in order. Once per link, when the peer is (or becomes)
    /// accepted. What we share with contacts (adverts, move notices) waits
    /// for the peer's own `Hello`: until it has accepted us, it ignores
    /// them.
    Greet,
    /// Record the peer as a new contact request (nothing is sent to it,
    /// not even our name, until the user accepts).
    RecordRequest,
    /// Close the link.
    Close(PeerRefusal),
}

/// The acknowledgement owed for a stored `Text` or handled `GroupInvite`.
/// Made into the `Ack` message only by [`AckToken::stored`]: the
/// application calls it after the message is durably stored (or the
/// invite is handled), never before; a message it could not store is not
/// acknowledged, and the sender re-sends it on the next link.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "acknowledge with `stored()` once the message is stored, or drop to leave it unacknowledged"]
pub struct AckToken {
    id: u64,
}

impl AckToken {
    /// The id being acknowledged.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The message is stored: the `Ack` to send.
    pub fn stored(self) -> PeerMessage<'static> {
        PeerMessage::Ack { id: self.id }
    }
}

/// A message the application must act upon, from
/// [`PeerSession::handle_message`].
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// The peer's display name.
    Hello {
        /// As the peer chose it (at most 64 bytes).
        name: &'a str,
    },
    /// A chat message: store it (a duplicate of one stored is stored once),
    /// then send `ack.stored()`.
    Text {
        /// Sender-chosen id.
        id: u64,
        /// The sender's clock, Unix milliseconds (a claim).
        sent_at: u64,
        /// The text.
        text: &'a str,
        /// The acknowledgement, once stored.
        ack: AckToken,
    },
    /// The peer stored our message `id`.
    Delivered {
        /// Our message's id.
        id: u64,
    },
    /// An invitation to a group: handle it (join or refuse), then send
    /// `ack.stored()`.
    GroupInvite {
        /// Sender-chosen id.
        id: u64,
        /// The binary invite (SPEC.md section 5), not yet checked.
        invite: &'a [u8],
        /// The acknowledgement, once handled.
        ack: AckToken,
    },
    /// Recovery: the peer asks for sealed blobs (section 14).
    ResendRequest {
        /// The request's id.
        id: u64,
        /// The encoded missing ranges.
        wanted: &'a [u8],
    },
    /// Recovery: a blob answering our request `id` (verify like one from a
    /// server).
    ResendBlob {
        /// Our request's id.
        id: u64,
        /// The sealed blob.
        blob: &'a [u8],
    },
    /// A server's signed advert (section 13).
    ServerAdvert {
        /// The encoded advert, not yet verified.
        advert: &'a [u8],
    },
    /// A sealed move notice (section 15).
    MoveBlob {
        /// The sealed blob.
        blob: &'a [u8],
    },
}

/// Why [`PeerSession::handle_message`] refused a message. The message is
/// ignored (never acknowledged); the link stays up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerSessionError {
    /// Not a valid peer message (SPEC.md section 4).
    Malformed(PeerMessageError),
    /// A kind this peer may not send at its standing (an invite from a
    /// pending request, anything from a blocked peer).
    NotAllowed {
        /// The message kind's index (SPEC.md section 4).
        kind: u8,
        /// The peer's standing.
        standing: Standing,
    },
    /// The session told the application to close the link.
    Closed,
    /// A second `Hello` on this link: a name is taken once per link (each
    /// rename would cost the application a durable write).
    HelloAgain,
}

impl fmt::Display for PeerSessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerSessionError::Malformed(e) => write!(f, "malformed peer message: {e}"),
            PeerSessionError::NotAllowed { kind, standing } => {
                write!(f, "a {standing:?} peer may not send message kind {kind}")
            }
            PeerSessionError::Closed => f.write_str("the link is closing"),
            PeerSessionError::HelloAgain => f.write_str("a second hello on one link"),
        }
    }
}

impl From<PeerMessageError> for PeerSessionError {
    fn from(e: PeerMessageError) -> Self {
        PeerSessionError::Malformed(e)
    }
}

/// The rules of one established peer link.
#[derive(Clone, Debug)]
pub struct PeerSession {
    standing: Standing,
    greeted: bool,
    closed: bool,
    named: bool,
    actions: Deque<PeerEvent, 2>,
}

impl PeerSession {
    /// The link is established with a peer of this standing (as the contact
    /// list says now). Poll [`PeerSession::poll_event`] next.
    pub fn new(standing: Standing) -> Self {
        let mut s = PeerSession {
            standing,
            greeted: false,
            closed: false,
            named: false,
            actions: Deque::new(),
        };
        match standing {
            Standing::Stranger { room_for_request } => {
                if room_for_request {
                    s.standing = Standing::Request;
                    s.push(PeerEvent::RecordRequest);
                } else {
                    s.close(PeerRefusal::TooManyRequests);
                }
            }
            other => s.apply(other),
        }
        s
    }

    /// The user changed the peer's standing while the link is up (accepted
    /// or blocked it). Poll [`PeerSession::poll_event`] next.
    pub fn handle_standing(&mut self, standing: Standing) {
        if self.closed {
            return;
        }
        match standing {
            // Forgotten by the contact list: treated as a pending request.
            Standing::Stranger { .. } => self.standing = Standing::Request,
            other => self.apply(other),
        }
    }

    fn apply(&mut self, standing: Standing) {
        self.standing = standing;
        match standing {
            Standing::Accepted if !self.greeted => {
                self.greeted = true;
                self.push(PeerEvent::Greet);
            }
            Standing::Blocked => self.close(PeerRefusal::Blocked),
            _ => {}
        }
    }

    fn close(&mut self, why: PeerRefusal) {
        self.closed = true;
        self.actions.clear();
        self.push(PeerEvent::Close(why));
    }

    fn push(&mut self, action: PeerEvent) {
        // Capacity 2: at most a Greet and a Close are ever queued (a Close
        // clears the queue first), so this cannot fail.
        let _ = self.actions.push_back(action);
    }

    /// The next thing the application must do about the link.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.actions.pop_front()
    }

    /// How we stand with the peer now.
    pub fn standing(&self) -> Standing {
        self.standing
    }

    /// Whether the session told the application to close the link.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// One channel message from the peer: decoded strictly, and returned
    /// only if this peer may send it at its standing.
    pub fn handle_message<'a>(
        &mut self,
        bytes: &'a [u8],
    ) -> Result<Incoming<'a>, PeerSessionError> {
        if self.closed {
            return Err(PeerSessionError::Closed);
        }
        let msg = PeerMessage::decode(bytes)?;
        let kind = kind_index(&msg);
        let allowed = match self.standing {
            Standing::Accepted => true,
            Standing::Request | Standing::Stranger { .. } => {
                matches!(msg, PeerMessage::Hello { .. } | PeerMessage::Text { .. })
            }
            Standing::Blocked => false,
        };
        if !allowed {
            return Err(PeerSessionError::NotAllowed {
                kind,
                standing: self.standing,
            });
        }
        if matches!(msg, PeerMessage::Hello { .. }) {
            if self.named {
                return Err(PeerSessionError::HelloAgain);
            }
            self.named = true;
        }
        Ok(match msg {
            PeerMessage::Hello { name } => Incoming::Hello { name },
            PeerMessage::Text { id, sent_at, text } => Incoming::Text {
                id,
                sent_at,
                text,
                ack: AckToken { id },
            },
            PeerMessage::Ack { id } => Incoming::Delivered { id },
            PeerMessage::GroupInvite { id, invite } => Incoming::GroupInvite {
                id,
                invite,
                ack: AckToken { id },
            },
            PeerMessage::ResendRequest { id, wanted } => Incoming::ResendRequest { id, wanted },
            PeerMessage::ResendBlob { id, blob } => Incoming::ResendBlob { id, blob },
            PeerMessage::ServerAdvert { advert } => Incoming::ServerAdvert { advert },
            PeerMessage::MoveBlob { blob } => Incoming::MoveBlob { blob },
        })
    }
}

/// A message's kind index on the wire (SPEC.md section 4).
fn kind_index(msg: &PeerMessage<'_>) -> u8 {
    match msg {
        PeerMessage::Hello { .. } => 0,
        PeerMessage::Text { .. } => 1,
        PeerMessage::Ack { .. } => 2,
        PeerMessage::GroupInvite { .. } => 3,
        PeerMessage::ResendRequest { .. } => 4,
        PeerMessage::ResendBlob { .. } => 5,
        PeerMessage::ServerAdvert { .. } => 6,
        PeerMessage::MoveBlob { .. } => 7,
    }
}
