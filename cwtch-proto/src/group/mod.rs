//! Groups: a random secret plus the servers it uses; sealed group messages,
//! cheap detection tags, invites, and missing-message detection.
//!
//! Specified in SPEC.md, sections "Groups", "Sealed group messages" and
//! "Missing-message detection".
//!
//! - [`secret`]: the group secret and its key schedule ([`Group`],
//!   [`GroupKeys`], [`GroupId`], [`MemberId`]);
//! - [`invite`]: what a new member needs, in binary and text forms;
//! - [`message`]: the plaintext inside a blob;
//! - [`seal`]: sealing into and opening [`SEALED_BLOB_LEN`]-byte blobs;
//! - [`detect`]: cheap detection tags and the multi-group [`Detector`];
//! - [`gap`]: the per-group [`GapTracker`].

pub mod detect;
pub mod gap;
pub mod invite;
pub mod message;
pub mod seal;
pub mod secret;

pub use detect::{DetectionKey, Detector, DetectorFull};
pub use gap::{GapError, GapEvent, GapTracker, Ingested, MessageRef, MissingRange};
pub use invite::{Invite, InviteError, InviteTextError};
pub use message::{
    MAX_BODY_LEN, MessageHash, MessageKind, OpenedMessage, OutgoingMessage, SEEN_MAX, SeenEntry,
    SeenSummary,
};
pub use seal::{OpenError, SealError, Sealed, SenderChain};
pub use secret::{Group, GroupId, GroupKeys, GroupSecret, MemberId, ServerList};

/// Length of every sealed group blob on the wire, whatever its content. The
/// server stores and relays blobs of exactly this length and nothing else.
pub const SEALED_BLOB_LEN: usize = 2048;
