//! What the peer keeps about its world, as stored (JSON inside encrypted
//! records) and as shown by the control interface (`--json`).

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
    /// The display name they sent (may be empty).
    pub name: String,
    /// Accepted, request or blocked.
    pub state: ContactState,
    /// A request that came through our mailbox (counted against the
    /// mailbox's share of the request limit).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_mailbox: bool,
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
    /// so) and not received yet: being asked for again from the server,
    /// then from other members. Shown as a placeholder.
    Missing,
    /// Theirs, received after it had been reported missing (from the
    /// server again, or from another member).
    Recovered,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
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
