//! The control API: what applications (the command line, `chat`, bots) and
//! the daemon say to each other over `control.sock`. Every type here is the
//! wire form (JSON, one value per line); API.md documents each one with
//! examples.
//!
//! A connection starts with a [`ClientHello`] naming [`API_VERSION`]; the
//! daemon answers a [`Welcome`], or an [`ApiError`] with
//! [`ErrorCode::UnsupportedVersion`] and closes. Then the client sends
//! [`RequestEnvelope`]s (several per connection, each with an id it
//! chooses) and the daemon answers each with a [`ResponseEnvelope`] of the
//! same id. After [`Request::Subscribe`], [`EventEnvelope`]s arrive on the
//! same connection, each numbered, so a client that reconnects asks for
//! everything since the last number it saw.

use serde::{Deserialize, Serialize};

/// The version of this API. A client of another version is refused.
pub const API_VERSION: u32 = 1;

/// The first line a client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// The API version the client speaks.
    pub api: u32,
    /// Who the client is (free text, for the daemon's log).
    #[serde(default)]
    pub client: String,
}

/// The daemon's answer to a [`ClientHello`] it accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The API version (equal to the client's).
    pub api: u32,
    /// The daemon's name and version.
    pub daemon: String,
    /// The profile's address.
    pub address: String,
    /// This run of the daemon (random, new at every start). Event numbers
    /// count within one run: a client that sees another run resyncs from
    /// the start of it (`subscribe` with `since: 0`).
    #[serde(default)]
    pub run: u64,
}

/// A request with the id its answer will carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// Chosen by the client; echoed in the answer.
    pub id: u64,
    /// The request.
    pub request: Request,
}

/// What a client can ask. Wherever a request names a contact it takes an
/// address, an extended identifier where said, or a nickname; a name that
/// fits several contacts is refused with [`ErrorCode::Ambiguous`] and the
/// candidates. A group is named by its name or a prefix of its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Address, name, queue, contacts, groups, invites.
    Status,
    /// Our address.
    Address,
    /// Our identifier to share (extended with the mailbox, if any).
    Identifier,
    /// Add a contact (accepted at once), optionally with a first message
    /// and a nickname. `address` may be an extended identifier.
    ContactAdd {
        /// An address or an extended identifier.
        address: String,
        /// A first message.
        #[serde(default)]
        message: Option<String>,
        /// Our name for them.
        #[serde(default)]
        nickname: Option<String>,
    },
    /// Accept a contact request.
    ContactAccept {
        /// The contact.
        contact: String,
    },
    /// Refuse a contact request: it is forgotten, with its messages.
    ContactRefuse {
        /// The contact.
        contact: String,
    },
    /// Block a contact: refused at the handshake from now on.
    ContactBlock {
        /// The contact.
        contact: String,
    },
    /// Unblock a contact: it becomes an accepted contact again.
    ContactUnblock {
        /// The contact.
        contact: String,
    },
    /// Give a contact our own name for them.
    ContactRename {
        /// The contact.
        contact: String,
        /// The nickname (empty: back to the name they announce).
        nickname: String,
    },
    /// Every contact with its connection.
    ContactList,
    /// Send a text to a contact.
    Send {
        /// The contact.
        to: String,
        /// The text.
        text: String,
    },
    /// The messages of a conversation (a contact or a group).
    Messages {
        /// The conversation.
        conversation: String,
    },
    /// Which conversation a name means: a contact (by address or name) or a
    /// group (by name or id prefix). Answers `{"kind", "conversation"}`.
    Resolve {
        /// The name.
        name: String,
    },
    /// Mark a conversation read (its unread count goes to zero).
    ConversationRead {
        /// The conversation.
        conversation: String,
    },
    /// Delete a conversation's messages from this profile (the contact or
    /// group stays).
    ConversationDelete {
        /// The conversation.
        conversation: String,
    },
    /// Create a group on a server.
    GroupCreate {
        /// Its name.
        name: String,
        /// The server (`cwtch-server:<address>` or an address).
        server: String,
    },
    /// Invite a contact to a group.
    GroupInvite {
        /// The group.
        group: String,
        /// The contact.
        contact: String,
    },
    /// Post to a group.
    GroupSend {
        /// The group.
        group: String,
        /// The text.
        text: String,
    },
    /// Move a group to another server.
    GroupMove {
        /// The group.
        group: String,
        /// The new server.
        server: String,
    },
    /// Leave a group: forget it, its secret and its messages.
    GroupLeave {
        /// The group.
        group: String,
    },
    /// Every group with its servers and gaps.
    GroupList,
    /// The group invites waiting for an answer.
    GroupInvites,
    /// Join the group of a pending invite.
    GroupAccept {
        /// The invite's group name or id.
        group: String,
    },
    /// Refuse a pending invite.
    GroupRefuse {
        /// The invite's group name or id.
        group: String,
    },
    /// Create or rotate our mailbox.
    MailboxCreate {
        /// The server.
        server: String,
        /// Stop reading every earlier mailbox now.
        #[serde(default)]
        revoke_old: bool,
    },
    /// The server directory, best first.
    Servers,
    /// Stream events on this connection, starting after event `since`
    /// (none: from now on).
    Subscribe {
        /// The last event number the client saw.
        #[serde(default)]
        since: Option<u64>,
    },
    /// Stop the daemon (after answering).
    Shutdown,
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    /// The request's id.
    pub id: u64,
    /// The result, when the request succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<serde_json::Value>,
    /// Why not, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// A typed error: a code a program can act on, and one line for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// In plain words.
    pub message: String,
    /// For [`ErrorCode::Ambiguous`]: the names that fit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
}

impl ApiError {
    /// An error of `code` saying `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            candidates: Vec::new(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if !self.candidates.is_empty() {
            write!(f, " (candidates: {})", self.candidates.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// The error codes (API.md lists when each comes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not a request of this API (bad JSON, unknown type, a line too long).
    BadRequest,
    /// The client speaks another API version.
    UnsupportedVersion,
    /// No such contact, group, invite or conversation.
    NotFound,
    /// A name fits several contacts or groups.
    Ambiguous,
    /// A value the user gave is not acceptable (a text too long, an address
    /// that does not parse, a contact not accepted yet).
    Invalid,
    /// The daemon is shutting down.
    ShuttingDown,
    /// Something failed inside the daemon (storage); see its log.
    Internal,
}

/// One event of the stream, numbered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Its number: every event of the daemon's life has the next one.
    pub seq: u64,
    /// The event.
    pub event: Event,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A message arrived, was written, or changed status (pending to
    /// delivered, missing to recovered; `note` says why one waits).
    Message {
        /// The message as shown.
        message: serde_json::Value,
    },
    /// A stranger asked to be a contact.
    ContactRequest {
        /// The contact as listed.
        contact: serde_json::Value,
    },
    /// A contact changed: accepted, blocked, renamed, refused.
    ContactChanged {
        /// The contact as listed (`null` when forgotten).
        contact: serde_json::Value,
        /// Its address.
        address: String,
    },
    /// A connection to a contact or a server changed state.
    Connection {
        /// `contact` or `server`.
        kind: String,
        /// Its address.
        address: String,
        /// The state now (`disconnected`, `connecting`, `connected`,
        /// `authenticated`, `synced`, `failed`).
        state: String,
        /// Why, in plain words, when it failed or closed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A group invite waits for an answer.
    GroupInvite {
        /// The invite as listed.
        invite: serde_json::Value,
    },
    /// Messages of a group are known to be missing, or a gap closed, or a
    /// claim did not add up: the gap report in plain words.
    Gap {
        /// The group id.
        group: String,
        /// What happened, in plain words.
        text: String,
        /// Whether it closed a gap (a message recovered).
        closed: bool,
    },
    /// A group moved to other servers.
    GroupMoved {
        /// The group id.
        group: String,
        /// Its servers now.
        servers: Vec<String>,
        /// Who moved it (an address; ours for our own move).
        by: String,
    },
    /// The group list changed (joined, left).
    GroupChanged {
        /// The group id.
        group: String,
    },
    /// This subscriber was too slow: `dropped` events were lost. Ask again
    /// with `since` (the daemon keeps the latest ones), or reload.
    Lagged {
        /// How many events were dropped.
        dropped: u64,
    },
    /// The daemon is stopping.
    ShuttingDown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_forms_are_stable() {
        let r = RequestEnvelope {
            id: 7,
            request: Request::Send {
                to: "bob".into(),
                text: "hi".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"id":7,"request":{"type":"send","to":"bob","text":"hi"}}"#
        );
        let back: RequestEnvelope =
            serde_json::from_str(r#"{"id":7,"request":{"type":"status"}}"#).unwrap();
        assert_eq!(back.request, Request::Status);
        let e = EventEnvelope {
            seq: 3,
            event: Event::Lagged { dropped: 9 },
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"seq":3,"event":{"type":"lagged","dropped":9}}"#
        );
        let err = ApiError::new(ErrorCode::NotFound, "no contact named x");
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"code":"not_found","message":"no contact named x"}"#
        );
    }
}
