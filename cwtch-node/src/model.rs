//! What the peer keeps about its world, as stored (inside encrypted
//! records, `store::records`) and as shown by the control API and `--json`.
//!
//! These types are stored with postcard, which is not self-describing:
//! never use internally tagged or untagged enums here, and skip a field
//! when serializing (`skip_serializing_if`) only where the type's record
//! form writes every field itself (`store::records`, [`StoredMessage`]).

use serde::{Deserialize, Serialize};

/// Where a contact stands with us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactState {
    /// We added or accepted them: we talk.
    Accepted,
    /// They contacted us; the user has not decided yet.
    Request,
    /// Refused at the handshake, forever (until unblocked).
    Blocked,
}

/// A contact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Their onion address.
    pub address: String,
    /// The display name they announce (may be empty; unverified: anyone
    /// can announce any name).
    pub name: String,
    /// Accepted, request or blocked.
    pub state: ContactState,
    /// A request that came through our mailbox (counted against the
    /// mailbox's share of the request limit).
    #[serde(default)]
    pub from_mailbox: bool,
    /// Our own name for them, if we gave one.
    #[serde(default)]
    pub nickname: Option<String>,
    /// The local sequence number of the last message the user read.
    #[serde(default)]
    pub read_upto: u64,
}

impl Contact {
    /// A contact we know only by address.
    pub fn new(address: &str, state: ContactState) -> Self {
        Contact {
            address: address.to_string(),
            name: String::new(),
            state,
            from_mailbox: false,
            nickname: None,
            read_upto: 0,
        }
    }

    /// The name to show: our nickname, else the name they announce, else
    /// the start of the address.
    pub fn shown_name(&self) -> String {
        match &self.nickname {
            Some(n) if !n.is_empty() => n.clone(),
            _ if !self.name.is_empty() => self.name.clone(),
            _ => self.address.get(..12).unwrap_or(&self.address).to_string(),
        }
    }
}

/// A contact as listed: the contact, its connection, what waits for it,
/// and what the user has not read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactEntry {
    /// The contact.
    pub contact: Contact,
    /// Its link.
    pub connection: ConnStatus,
    /// Items waiting for its acknowledgement.
    pub pending: u64,
    /// Messages the user has not read.
    pub unread: u64,
}

/// Connection state of a contact or server, as shown to the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    /// No connection and none being made.
    Disconnected,
    /// Dialing (building a Tor circuit).
    Connecting,
    /// The stream is open; the handshake runs.
    Connected,
    /// The handshake finished: the peer is who they claim.
    Authenticated,
    /// (Servers) caught up with everything stored.
    Synced,
    /// The last attempt failed; see the reason.
    Failed,
}

/// A connection status with the reason of the last failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnStatus {
    /// The state now.
    pub state: ConnState,
    /// Why the last attempt failed, in plain words.
    pub last_error: Option<String>,
}

impl Default for ConnStatus {
    fn default() -> Self {
        ConnStatus {
            state: ConnState::Disconnected,
            last_error: None,
        }
    }
}

/// Delivery status of a message, honestly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Ours, not yet acknowledged: it waits in the outgoing queue.
    Pending,
    /// Ours, acknowledged by the recipient (1:1) or stored by the server (group).
    Delivered,
    /// Theirs, received.
    Received,
    /// Theirs, known to exist (a later message or a member's summary says
    /// so) and not received yet: asked for from the members we are
    /// linked with (never from the server again). Shown as a placeholder.
    Missing,
    /// Theirs, received after it had been reported missing (from another
    /// member).
    Recovered,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The author's name as shown (computed when shown, never stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_name: Option<String>,
    /// Local order of arrival or writing.
    pub seq: u64,
    /// The conversation: a contact's address or a group's id.
    pub conversation: String,
    /// The id the sender chose.
    pub id: u64,
    /// Whether we wrote it.
    pub outgoing: bool,
    /// Who wrote it (an address).
    pub author: String,
    /// The text.
    pub text: String,
    /// The author's clock, Unix milliseconds.
    pub sent_at: u64,
    /// Pending, delivered, received, missing or recovered.
    pub status: Delivery,
    /// Why it is in this state, in plain words, when that is worth saying
    /// (a pending message's wait, a missing message's recovery). Computed
    /// when shown, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One queued outgoing item, kept until acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutItem {
    /// Local order.
    pub seq: u64,
    /// The recipient's address.
    pub contact: String,
    /// The id of the message.
    pub id: u64,
    /// What to send.
    pub body: OutBody,
}

/// What an outgoing item carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutBody {
    /// A chat message.
    Text {
        /// The text.
        text: String,
        /// When written, Unix ms.
        sent_at: u64,
    },
    /// A group invite (binary invite form).
    Invite {
        /// The encoded invite.
        invite: Vec<u8>,
    },
}

/// A server of the directory, as shown (`servers`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerView {
    /// Its address.
    pub address: String,
    /// Our score, 0 to 1000.
    pub score: u64,
    /// Whether the last attempt reached it (`null`: never tried).
    pub reachable: Option<bool>,
    /// How we learned of it.
    pub source: Source,
    /// Whether a group or the mailbox uses it.
    pub used: bool,
    /// Our own observations.
    pub observed: Observations,
    /// Its latest verified advert.
    pub advert: Option<AdvertView>,
}

/// A server's advert, as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertView {
    /// Valid now.
    pub valid: bool,
    /// Signed at (Unix seconds).
    pub issued_at: u64,
    /// Valid until (Unix seconds).
    pub expires_at: u64,
    /// What it asks of clients.
    pub requirements: RequirementsView,
    /// What it keeps.
    pub retention: RetentionView,
}

/// A server's requirements (SPEC.md section 13.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequirementsView {
    /// Proof of work at most, bits.
    pub pow_bits: u8,
    /// Posts in a burst.
    pub rate_burst: u16,
    /// Then one per this many ms.
    pub rate_interval_ms: u32,
    /// Clients served at once.
    pub max_connections: u32,
}

/// A server's retention (0: no limit of that kind).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionView {
    /// Blobs.
    pub max_entries: u64,
    /// Bytes.
    pub max_bytes: u64,
    /// Age, seconds.
    pub max_age_secs: u64,
}

/// A group's server, as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupServerView {
    /// The server.
    pub server: String,
    /// Our connection to it.
    pub connection: ConnStatus,
}

/// A group as listed (`group list`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    /// The group id (hex).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its servers and our connections to them.
    pub servers: Vec<GroupServerView>,
    /// Servers it moved away from, still read.
    pub previous_servers: Vec<String>,
    /// Our messages not yet stored by any server.
    pub pending: u64,
    /// Messages known to exist and not received.
    pub missing: u64,
    /// Messages that arrived after being missing.
    pub recovered: u64,
    /// Gap reports, in plain words, newest last.
    pub gaps: Vec<String>,
    /// Messages the user has not read.
    pub unread: u64,
}

/// A group created or joined (`group create`, `group accept`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCreated {
    /// The group id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its servers.
    pub servers: Vec<String>,
}

/// A pending group invite as shown (no secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingInvite {
    /// The group id (hex).
    pub group: String,
    /// The group's name, as the inviter wrote it.
    pub name: String,
    /// The contact who sent it.
    pub from: String,
    /// The servers the group uses (what joining dials).
    pub servers: Vec<String>,
    /// When it arrived, Unix ms.
    pub received_at: u64,
}

/// Our identifier (`identifier`, `mailbox create`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifierView {
    /// The text to share.
    pub identifier: String,
    /// Our address.
    pub address: String,
    /// Our mailbox's server, if any.
    pub mailbox_server: Option<String>,
    /// The connection to it (from a running daemon).
    pub mailbox_connection: Option<ConnStatus>,
    /// Replaced mailboxes still read.
    pub retired_mailboxes: Vec<RetiredView>,
}

/// A replaced mailbox, still read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredView {
    /// Its server.
    pub server: String,
    /// Read until (Unix ms).
    pub read_until_unix_ms: u64,
}

/// The daemon's status (`status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    /// Our address.
    pub address: String,
    /// Our display name.
    pub name: String,
    /// Items in the outgoing queue.
    pub outbox: usize,
    /// Contacts.
    pub contacts: Vec<ContactEntry>,
    /// Groups.
    pub groups: Vec<GroupView>,
    /// Invites waiting.
    pub invites: Vec<PendingInvite>,
    /// First-contact requests not yet stored by their server.
    pub first_contact_pending: usize,
    /// A note on the transport (e.g. "no anonymity: development transport").
    pub transport_note: Option<String>,
}

/// How we first learned of a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// We used it (one of our groups is on it).
    OwnUse,
    /// An accepted contact sent us its advert.
    Contact {
        /// The contact's address.
        address: String,
    },
    /// A member posted it in a group we are in.
    Group {
        /// The group id (hex).
        group: String,
        /// The member's address.
        member: String,
    },
}

/// What we observed of a server ourselves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observations {
    /// Connections that reached the server's hello.
    pub connections: u64,
    /// Connection attempts that failed.
    pub failures: u64,
    /// When it was last reachable (Unix seconds).
    pub last_reachable: Option<u64>,
    /// When an attempt last failed (Unix seconds).
    pub last_failure: Option<u64>,
    /// Our posts it lost by its own evidence.
    pub lost: u64,
}
