//! What a sealed blob holds: the plaintext layout of a group message.
//!
//! The plaintext is [`PLAINTEXT_LEN`] bytes, always, laid out at fixed
//! offsets (SPEC.md section 6 has the table):
//!
//! ```text
//!    0   1  version (1)
//!    1   1  kind
//!    2  32  group id
//!   34  32  sender's ed25519 public key
//!   66   8  sequence number (u64 LE), per sender, from 0
//!   74   8  timestamp (u64 LE, microseconds since the Unix epoch, a claim)
//!   82  32  hash of the sender's previous message (zero for seq 0)
//!  114   1  n, number of seen entries (<= 8)
//!  115 192  8 seen entries: member id (16) || highest seq (u64 LE); unused ones zero
//!  307   2  body length L (u16 LE, <= 1587)
//!  309   L  body, then zeros up to 1896
//! 1896  32  ed25519 key of the server the blob was posted to
//! 1928  64  signature
//! ```
//!
//! `hash = SHA-256("cwtch group message v1" || plaintext[0..1896])` names
//! the message independently of the server it was posted to (a message
//! posted to two servers of the group is one message), and the signature is
//! `Ed25519(sender, "cwtch group message signature v1" || hash || server key)`.

use core::fmt;

use sha2::{Digest, Sha256};

use crate::identity::{PUBLIC_KEY_LEN, PublicIdentity, SIGNATURE_LEN};
use crate::time::{ClaimedTime, UnixMicros};

use super::SEALED_BLOB_LEN;
use super::detect::{NONCE_LEN, TAG_LEN};
use super::secret::{GROUP_ID_LEN, MEMBER_ID_LEN, MemberId};

/// Length of the Poly1305 tag at the end of a blob.
pub const AEAD_TAG_LEN: usize = 16;
/// Length of the plaintext inside a blob.
pub const PLAINTEXT_LEN: usize = SEALED_BLOB_LEN - NONCE_LEN - TAG_LEN - AEAD_TAG_LEN;
/// How many (member, highest seq) pairs a message's seen summary carries.
pub const SEEN_MAX: usize = 8;
/// The plaintext layout version.
pub const MESSAGE_VERSION: u8 = 1;
/// The highest sequence number a sender may use (`u64::MAX` is reserved so
/// "one past the last" always fits in a `u64`).
pub const MAX_SEQ: u64 = u64::MAX - 1;

pub(crate) const OFF_VERSION: usize = 0;
pub(crate) const OFF_KIND: usize = 1;
pub(crate) const OFF_GROUP: usize = 2;
pub(crate) const OFF_SENDER: usize = OFF_GROUP + GROUP_ID_LEN;
pub(crate) const OFF_SEQ: usize = OFF_SENDER + PUBLIC_KEY_LEN;
pub(crate) const OFF_TIME: usize = OFF_SEQ + 8;
pub(crate) const OFF_PREV: usize = OFF_TIME + 8;
pub(crate) const OFF_SEEN_COUNT: usize = OFF_PREV + 32;
pub(crate) const OFF_SEEN: usize = OFF_SEEN_COUNT + 1;
pub(crate) const SEEN_ENTRY_LEN: usize = MEMBER_ID_LEN + 8;
pub(crate) const OFF_BODY_LEN: usize = OFF_SEEN + SEEN_MAX * SEEN_ENTRY_LEN;
pub(crate) const OFF_BODY: usize = OFF_BODY_LEN + 2;
/// Length of the part of the plaintext the message hash covers.
pub(crate) const CONTENT_LEN: usize = PLAINTEXT_LEN - SIGNATURE_LEN - PUBLIC_KEY_LEN;
pub(crate) const OFF_SERVER: usize = CONTENT_LEN;
pub(crate) const OFF_SIGNATURE: usize = OFF_SERVER + PUBLIC_KEY_LEN;

/// The longest body (text in UTF-8 bytes) a sealed message can carry: 1587.
pub const MAX_BODY_LEN: usize = CONTENT_LEN - OFF_BODY;

const _: () = assert!(OFF_SIGNATURE + SIGNATURE_LEN == PLAINTEXT_LEN);
const _: () = assert!(MAX_BODY_LEN == 1587);
const _: () = assert!(MAX_BODY_LEN <= u16::MAX as usize);

/// Domain label of the message hash.
pub const LABEL_MESSAGE_HASH: &[u8] = b"cwtch group message v1";
/// Domain label of the message signature.
pub const LABEL_SIGNATURE: &[u8] = b"cwtch group message signature v1";

/// What a message's body is. `0x01` is text (UTF-8); `0x02..=0x7f` are
/// reserved for other content, `0x80..=0xff` for control messages (such as
/// "the group moved to server X"); `0x00` is invalid. Receivers pass kinds
/// they do not know to the application, which may ignore them; gap tracking
/// works the same for every kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageKind(u8);

impl MessageKind {
    /// A text message: the body is UTF-8.
    pub const TEXT: MessageKind = MessageKind(0x01);
    /// A control message: the group moves to the servers named in the body,
    /// a [`MoveNotice`](super::control::MoveNotice) (SPEC.md section 15).
    pub const MOVE: MessageKind = MessageKind(0x80);
    /// A control message: signed server adverts for members' directories,
    /// a [`GroupAdverts`](super::adverts::GroupAdverts) (SPEC.md section
    /// 13.4). Not shown as a message.
    pub const ADVERTS: MessageKind = MessageKind(0x81);

    /// The kind of this byte; `None` for the invalid `0x00`.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        if byte == 0 {
            None
        } else {
            Some(MessageKind(byte))
        }
    }

    /// The kind's byte.
    pub const fn as_byte(self) -> u8 {
        self.0
    }

    /// Whether this is a control kind (`0x80..=0xff`).
    pub const fn is_control(self) -> bool {
        self.0 >= 0x80
    }
}

/// The hash of a message (see the module docs). Names a message for chains
/// (`prev_hash`) and equivocation checks.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct MessageHash(pub [u8; 32]);

impl MessageHash {
    /// The `prev_hash` of a sender's first message.
    pub const ZERO: MessageHash = MessageHash([0; 32]);
}

impl fmt::Debug for MessageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageHash(")?;
        for b in self.0.iter().take(8) {
            write!(f, "{b:02x}")?;
        }
        f.write_str("..)")
    }
}

/// "I have seen `member`'s messages up to `seq`": one entry of a seen
/// summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SeenEntry {
    /// The member.
    pub member: MemberId,
    /// The highest sequence number received from that member.
    pub seq: u64,
}

/// A bounded summary of what a sender has seen from other members.
pub type SeenSummary = heapless::Vec<SeenEntry, SEEN_MAX>;

/// A message to seal.
#[derive(Clone, Copy, Debug)]
pub struct OutgoingMessage<'a> {
    /// The body's kind.
    pub kind: MessageKind,
    /// The body (UTF-8 if `kind` is [`MessageKind::TEXT`]), at most
    /// [`MAX_BODY_LEN`] bytes.
    pub body: &'a [u8],
    /// The sender's sequence number for this message.
    pub seq: u64,
    /// The sender's wall-clock time (our own clock, read by the driver).
    pub timestamp: UnixMicros,
    /// The hash of the sender's previous message ([`MessageHash::ZERO`] for
    /// sequence number 0).
    pub prev_hash: MessageHash,
    /// What the sender has seen from the others.
    pub seen: &'a [SeenEntry],
}

/// A message opened and verified.
#[derive(Clone, Debug)]
pub struct OpenedMessage<'b> {
    /// Who sent it (signature verified).
    pub sender: PublicIdentity,
    /// The sender's member id in this group.
    pub member: MemberId,
    /// The body's kind.
    pub kind: MessageKind,
    /// The body (UTF-8 checked if `kind` is text).
    pub body: &'b [u8],
    /// The sender's sequence number.
    pub seq: u64,
    /// The sender's wall-clock time: a claim (SPEC.md section 6, "Time claims").
    pub timestamp: ClaimedTime,
    /// The hash of the sender's previous message.
    pub prev_hash: MessageHash,
    /// What the sender had seen from others.
    pub seen: SeenSummary,
    /// This message's hash.
    pub hash: MessageHash,
}

impl OpenedMessage<'_> {
    /// The text, for a text message.
    pub fn text(&self) -> Option<&str> {
        if self.kind == MessageKind::TEXT {
            core::str::from_utf8(self.body).ok()
        } else {
            None
        }
    }
}

/// Why a decrypted plaintext is not a well-formed message. Only a member
/// (who holds the sealing key) can produce one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// An unknown layout version.
    Version(u8),
    /// Kind byte 0.
    Kind,
    /// The sender's key is not a usable ed25519 key.
    SenderKey,
    /// More seen entries than [`SEEN_MAX`], or unused entries not zero.
    SeenSummary,
    /// A sequence number above [`MAX_SEQ`].
    Seq,
    /// The body length exceeds [`MAX_BODY_LEN`].
    BodyLength,
    /// The padding after the body is not zero.
    Padding,
    /// A text body that is not UTF-8.
    NotUtf8,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Version(v) => write!(f, "unknown group message version {v}"),
            Malformed::Kind => f.write_str("invalid message kind 0"),
            Malformed::SenderKey => f.write_str("the sender key is not a valid identity"),
            Malformed::SeenSummary => f.write_str("malformed seen summary"),
            Malformed::Seq => f.write_str("sequence number out of range"),
            Malformed::BodyLength => f.write_str("body length out of range"),
            Malformed::Padding => f.write_str("non-zero padding"),
            Malformed::NotUtf8 => f.write_str("text body is not UTF-8"),
        }
    }
}

/// The message hash of a plaintext.
pub(crate) fn message_hash(plaintext: &[u8; PLAINTEXT_LEN]) -> MessageHash {
    let digest = Sha256::new()
        .chain_update(LABEL_MESSAGE_HASH)
        .chain_update(&plaintext[..CONTENT_LEN])
        .finalize();
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    MessageHash(out)
}

/// The bytes the sender signs.
pub(crate) fn signed_bytes(
    hash: &MessageHash,
    server_key: &[u8; PUBLIC_KEY_LEN],
) -> [u8; LABEL_SIGNATURE.len() + 64] {
    let mut out = [0u8; LABEL_SIGNATURE.len() + 64];
    let (label, rest) = out.split_at_mut(LABEL_SIGNATURE.len());
    label.copy_from_slice(LABEL_SIGNATURE);
    let (h, s) = rest.split_at_mut(32);
    h.copy_from_slice(&hash.0);
    s.copy_from_slice(server_key);
    out
}

/// Why a message cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EncodeError {
    BodyTooLong,
    TooManySeen,
    Seq,
    NotUtf8,
}

/// Writes the content part (everything the hash covers) of `msg` into
/// `pt`, which it fully overwrites except for the server key and signature.
pub(crate) fn encode_content(
    pt: &mut [u8; PLAINTEXT_LEN],
    group_id: &[u8; GROUP_ID_LEN],
    sender: &PublicIdentity,
    msg: &OutgoingMessage<'_>,
) -> Result<(), EncodeError> {
    if msg.body.len() > MAX_BODY_LEN {
        return Err(EncodeError::BodyTooLong);
    }
    if msg.seen.len() > SEEN_MAX {
        return Err(EncodeError::TooManySeen);
    }
    if msg.seq > MAX_SEQ || msg.seen.iter().any(|e| e.seq > MAX_SEQ) {
        return Err(EncodeError::Seq);
    }
    if msg.kind == MessageKind::TEXT && core::str::from_utf8(msg.body).is_err() {
        return Err(EncodeError::NotUtf8);
    }
    pt.fill(0);
    pt[OFF_VERSION] = MESSAGE_VERSION;
    pt[OFF_KIND] = msg.kind.as_byte();
    pt[OFF_GROUP..OFF_SENDER].copy_from_slice(group_id);
    pt[OFF_SENDER..OFF_SEQ].copy_from_slice(sender.as_bytes());
    pt[OFF_SEQ..OFF_TIME].copy_from_slice(&msg.seq.to_le_bytes());
    pt[OFF_TIME..OFF_PREV].copy_from_slice(&msg.timestamp.as_micros().to_le_bytes());
    pt[OFF_PREV..OFF_SEEN_COUNT].copy_from_slice(&msg.prev_hash.0);
    // Bounded by SEEN_MAX (8) above.
    pt[OFF_SEEN_COUNT] = msg.seen.len() as u8;
    let seen_area = &mut pt[OFF_SEEN..OFF_BODY_LEN];
    for (entry, slot) in msg
        .seen
        .iter()
        .zip(seen_area.chunks_exact_mut(SEEN_ENTRY_LEN))
    {
        let (id, seq) = slot.split_at_mut(MEMBER_ID_LEN);
        id.copy_from_slice(&entry.member.0);
        seq.copy_from_slice(&entry.seq.to_le_bytes());
    }
    // Bounded by MAX_BODY_LEN (< u16::MAX) above.
    let len = msg.body.len() as u16;
    pt[OFF_BODY_LEN..OFF_BODY].copy_from_slice(&len.to_le_bytes());
    pt[OFF_BODY..OFF_BODY + msg.body.len()].copy_from_slice(msg.body);
    Ok(())
}

/// A plaintext parsed (not yet verified).
pub(crate) struct Parsed {
    pub(crate) kind: MessageKind,
    pub(crate) group_id: [u8; GROUP_ID_LEN],
    pub(crate) sender: PublicIdentity,
    pub(crate) seq: u64,
    pub(crate) timestamp: ClaimedTime,
    pub(crate) prev_hash: MessageHash,
    pub(crate) seen: SeenSummary,
    pub(crate) body_len: usize,
    pub(crate) server_key: [u8; PUBLIC_KEY_LEN],
    pub(crate) signature: [u8; SIGNATURE_LEN],
}

fn array<const N: usize>(pt: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = pt.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

/// Parses a plaintext strictly (canonical form only).
pub(crate) fn parse(pt: &[u8; PLAINTEXT_LEN]) -> Result<Parsed, Malformed> {
    if pt[OFF_VERSION] != MESSAGE_VERSION {
        return Err(Malformed::Version(pt[OFF_VERSION]));
    }
    let kind = MessageKind::from_byte(pt[OFF_KIND]).ok_or(Malformed::Kind)?;
    let sender =
        PublicIdentity::from_bytes(&array(pt, OFF_SENDER)).map_err(|_| Malformed::SenderKey)?;
    let seq = u64::from_le_bytes(array(pt, OFF_SEQ));
    if seq > MAX_SEQ {
        return Err(Malformed::Seq);
    }
    let timestamp = ClaimedTime::from_micros(u64::from_le_bytes(array(pt, OFF_TIME)));
    let prev_hash = MessageHash(array(pt, OFF_PREV));
    let count = usize::from(pt[OFF_SEEN_COUNT]);
    if count > SEEN_MAX {
        return Err(Malformed::SeenSummary);
    }
    let mut seen = SeenSummary::new();
    for (i, slot) in pt[OFF_SEEN..OFF_BODY_LEN]
        .chunks_exact(SEEN_ENTRY_LEN)
        .enumerate()
    {
        if i < count {
            let member = MemberId(array(slot, 0));
            let seq = u64::from_le_bytes(array(slot, MEMBER_ID_LEN));
            if seq > MAX_SEQ {
                return Err(Malformed::SeenSummary);
            }
            seen.push(SeenEntry { member, seq })
                .map_err(|_| Malformed::SeenSummary)?;
        } else if slot.iter().any(|&b| b != 0) {
            return Err(Malformed::SeenSummary);
        }
    }
    let body_len = usize::from(u16::from_le_bytes(array(pt, OFF_BODY_LEN)));
    if body_len > MAX_BODY_LEN {
        return Err(Malformed::BodyLength);
    }
    let padding = pt.get(OFF_BODY + body_len..CONTENT_LEN).unwrap_or(&[]);
    if padding.iter().any(|&b| b != 0) {
        return Err(Malformed::Padding);
    }
    if kind == MessageKind::TEXT
        && core::str::from_utf8(pt.get(OFF_BODY..OFF_BODY + body_len).unwrap_or(&[])).is_err()
    {
        return Err(Malformed::NotUtf8);
    }
    Ok(Parsed {
        kind,
        group_id: array(pt, OFF_GROUP),
        sender,
        seq,
        timestamp,
        prev_hash,
        seen,
        body_len,
        server_key: array(pt, OFF_SERVER),
        signature: array(pt, OFF_SIGNATURE),
    })
}
