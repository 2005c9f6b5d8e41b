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
//! - [`kept`]: a blob kept to answer recovery, in its short form;
//! - [`detect`]: cheap detection tags and the multi-group [`Detector`];
//! - [`gap`]: the per-group [`GapTracker`];
//! - [`control`]: the move notice and the recovery request;
//! - [`adverts`]: server adverts shared inside a group;
//! - [`recovery`]: when to ask for missing messages, and answer budgets;
//! - [`moving`]: when a group moves, and whether to follow a move.
//!
//! ```
//! use chacha20::ChaCha20Rng;
//! use chacha20::rand_core::SeedableRng;
//! use cwtch_proto::group::{GapTracker, Group, Invite, MessageKind, SenderChain, SEALED_BLOB_LEN};
//! use cwtch_proto::{Identity, UnixMicros};
//!
//! let mut rng = ChaCha20Rng::from_seed([1; 32]);
//! let alice = Identity::generate(&mut rng);
//! let server = Identity::generate(&mut rng).address();
//! let group = Group::generate(&mut rng, [server].into_iter().collect());
//!
//! // Alice invites Bob (the text goes over a peer link, or is pasted).
//! let mut text = [0u8; cwtch_proto::group::invite::INVITE_TEXT_MAX_LEN];
//! let text = Invite::new(&group, "friends", alice.public())?.to_text(&mut text)?;
//! let bobs_group = Invite::from_text(text)?.group();
//!
//! // Alice posts a message: 2048 opaque bytes for the server.
//! let mut chain = SenderChain::new();
//! let mut blob = [0u8; SEALED_BLOB_LEN];
//! chain.seal_next(group.keys(), &alice, &server, MessageKind::TEXT, b"hi Bob",
//!     UnixMicros::from_secs(1_764_000_000), &[], &mut rng, &mut blob)?;
//!
//! // Bob sifts the server's stream cheaply, opens what is his, tracks gaps.
//! assert!(bobs_group.keys().detect(&blob));
//! let msg = bobs_group.keys().open_in_place(&server, &mut blob)?;
//! assert_eq!(msg.text(), Some("hi Bob"));
//! let mut tracker: GapTracker = GapTracker::new();
//! tracker.handle_message(&msg)?;
//! assert_eq!(tracker.poll_event(), None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod adverts;
pub mod control;
pub mod detect;
pub mod gap;
pub mod invite;
pub mod kept;
pub mod message;
pub mod moving;
pub mod recovery;
pub mod seal;
pub mod secret;

pub use adverts::GroupAdverts;
pub use control::{ControlError, MoveNotice, ResendWanted};
pub use detect::{DetectionKey, Detector, DetectorFull};
pub use gap::{GapError, GapEvent, GapTracker, Ingested, MessageRef, MissingRange};
pub use invite::{Invite, InviteError, InviteTextError};
pub use kept::{KEPT_MAX_LEN, KEPT_MIN_LEN, UnkeepError};
pub use message::{
    MAX_BODY_LEN, MessageHash, MessageKind, OpenedMessage, OutgoingMessage, SEEN_MAX, SeenEntry,
    SeenSummary,
};
pub use seal::{OpenError, SealError, Sealed, SenderChain};
pub use secret::{Group, GroupId, GroupKeys, GroupSecret, MemberId, ServerList};

/// Length of every sealed group blob on the wire, whatever its content. The
/// server stores and relays blobs of exactly this length and nothing else.
pub const SEALED_BLOB_LEN: usize = 2048;
