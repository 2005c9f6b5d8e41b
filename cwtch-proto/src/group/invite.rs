//! Group invites: what a new member needs to join.
//!
//! An invite carries the group secret, the group's servers, a name for the
//! group and the inviter's identity. Binary form (sent as a peer message):
//!
//! ```text
//! postcard { version: u8 = 1, secret: [u8; 32], servers: Vec<[u8; 32]> (1..=4 server keys),
//!            name: str (<= 64 bytes UTF-8), inviter: [u8; 32] }
//! ```
//!
//! Text form (pasted by people): `cwtch-invite:` followed by lower-case
//! base32 (no padding) of `binary || SHA-256("cwtch invite checksum v1" ||
//! binary)[0..4]`. The checksum catches typos and truncation; it is not a
//! signature: the `inviter` field is a claim, authenticated only by the
//! channel the invite came through.
//!
//! An invite is a secret: whoever reads it can read and post to the group.
//! [`Invite`] zeroizes its secret and name on drop and prints neither.

use core::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::identity::{PUBLIC_KEY_LEN, PublicIdentity};
use crate::wire::base32::{self, Base32Error};

use super::secret::{GROUP_SECRET_LEN, Group, GroupSecret, MAX_SERVERS, ServerList};

/// The longest group name, in UTF-8 bytes.
pub const MAX_NAME_LEN: usize = 64;
/// The invite format version.
pub const INVITE_VERSION: u8 = 1;
/// The longest binary invite.
pub const INVITE_MAX_LEN: usize =
    1 + GROUP_SECRET_LEN + 1 + MAX_SERVERS * PUBLIC_KEY_LEN + 1 + MAX_NAME_LEN + PUBLIC_KEY_LEN;
/// The text form's prefix.
pub const INVITE_PREFIX: &str = "cwtch-invite:";
/// Length of the text form's checksum.
pub const CHECKSUM_LEN: usize = 4;
/// Domain label of the text form's checksum.
pub const LABEL_CHECKSUM: &[u8] = b"cwtch invite checksum v1";
/// The longest text invite.
pub const INVITE_TEXT_MAX_LEN: usize =
    INVITE_PREFIX.len() + base32::encoded_len(INVITE_MAX_LEN + CHECKSUM_LEN);

/// An invitation to a group.
pub struct Invite {
    secret: GroupSecret,
    servers: ServerList,
    name: heapless::Vec<u8, MAX_NAME_LEN>,
    inviter: PublicIdentity,
}

/// Why an invite cannot be built, encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InviteError {
    /// The group name is longer than [`MAX_NAME_LEN`] bytes.
    NameTooLong,
    /// The group names no server.
    NoServers,
    /// The output buffer is too small.
    BufferTooSmall {
        /// The length needed.
        required: usize,
    },
    /// Not a postcard-encoded invite (or more than [`MAX_SERVERS`] servers,
    /// or a name too long).
    Malformed,
    /// Bytes after the invite.
    TrailingBytes,
    /// Not the one canonical encoding (e.g. an over-long varint).
    NonCanonical,
    /// An unknown invite version.
    UnsupportedVersion(u8),
    /// A server key is not a valid identity.
    BadServer,
    /// The inviter's key is not a valid identity.
    BadInviter,
}

impl fmt::Display for InviteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InviteError::NameTooLong => write!(f, "group name longer than {MAX_NAME_LEN} bytes"),
            InviteError::NoServers => f.write_str("the group names no server"),
            InviteError::BufferTooSmall { required } => {
                write!(f, "the invite needs a {required}-byte buffer")
            }
            InviteError::Malformed => f.write_str("malformed invite"),
            InviteError::TrailingBytes => f.write_str("trailing bytes after the invite"),
            InviteError::NonCanonical => f.write_str("the invite is not in canonical form"),
            InviteError::UnsupportedVersion(v) => write!(f, "unsupported invite version {v}"),
            InviteError::BadServer => f.write_str("the invite names an invalid server key"),
            InviteError::BadInviter => f.write_str("the inviter key is invalid"),
        }
    }
}

impl core::error::Error for InviteError {}

/// Why a pasted invite text was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InviteTextError {
    /// It does not start with `cwtch-invite:`.
    MissingPrefix,
    /// The base32 part has an impossible length (truncated or too long).
    WrongLength,
    /// A character outside `a-z2-7`, at this offset after the prefix.
    InvalidCharacter {
        /// Byte offset after the prefix.
        offset: usize,
    },
    /// The last character has non-zero unused bits.
    NonCanonical,
    /// The checksum does not match (a typo?).
    BadChecksum,
    /// The checksum matches but the content is not a valid invite.
    Invite(InviteError),
}

impl fmt::Display for InviteTextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InviteTextError::MissingPrefix => write!(f, "an invite starts with {INVITE_PREFIX}"),
            InviteTextError::WrongLength => f.write_str("the invite has the wrong length"),
            InviteTextError::InvalidCharacter { offset } => {
                write!(f, "invalid character at offset {offset} of the invite")
            }
            InviteTextError::NonCanonical => f.write_str("the invite is not in canonical form"),
            InviteTextError::BadChecksum => {
                f.write_str("the invite checksum is wrong (a typo or a cut?)")
            }
            InviteTextError::Invite(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl core::error::Error for InviteTextError {}

#[derive(serde::Serialize, serde::Deserialize)]
struct Wire<'a> {
    version: u8,
    secret: [u8; GROUP_SECRET_LEN],
    servers: heapless::Vec<[u8; PUBLIC_KEY_LEN], MAX_SERVERS>,
    name: &'a str,
    inviter: [u8; PUBLIC_KEY_LEN],
}

impl Drop for Wire<'_> {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

fn checksum(payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let digest = Sha256::new()
        .chain_update(LABEL_CHECKSUM)
        .chain_update(payload)
        .finalize();
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&digest[..CHECKSUM_LEN]);
    out
}

impl Invite {
    /// An invite to `group`, named `name`, from `inviter`.
    pub fn new(group: &Group, name: &str, inviter: PublicIdentity) -> Result<Self, InviteError> {
        if group.servers().is_empty() {
            return Err(InviteError::NoServers);
        }
        let name =
            heapless::Vec::from_slice(name.as_bytes()).map_err(|_| InviteError::NameTooLong)?;
        let mut servers = ServerList::new();
        for s in group.servers() {
            servers.push(*s).map_err(|_| InviteError::Malformed)?;
        }
        Ok(Invite {
            secret: group.secret().clone(),
            servers,
            name,
            inviter,
        })
    }

    /// The group this invite is for.
    pub fn group(&self) -> Group {
        Group::from_secret(self.secret.clone(), self.servers.clone())
    }

    /// The group secret.
    pub fn secret(&self) -> &GroupSecret {
        &self.secret
    }

    /// The group's servers.
    pub fn servers(&self) -> &[crate::OnionAddress] {
        &self.servers
    }

    /// The group's name (as the inviter calls it).
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name).unwrap_or("")
    }

    /// Who sent the invite (a claim; see the module docs).
    pub fn inviter(&self) -> &PublicIdentity {
        &self.inviter
    }

    /// Writes the binary form into `out`; returns its length (at most
    /// [`INVITE_MAX_LEN`]).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, InviteError> {
        let mut servers = heapless::Vec::new();
        for s in &self.servers {
            servers
                .push(*s.public_identity().as_bytes())
                .map_err(|_| InviteError::Malformed)?;
        }
        let wire = Wire {
            version: INVITE_VERSION,
            secret: *self.secret.to_bytes(),
            servers,
            name: self.name(),
            inviter: *self.inviter.as_bytes(),
        };
        let mut buf = Zeroizing::new([0u8; INVITE_MAX_LEN]);
        let len = postcard::to_slice(&wire, buf.as_mut())
            .map_err(|_| InviteError::Malformed)?
            .len();
        let dst = out
            .get_mut(..len)
            .ok_or(InviteError::BufferTooSmall { required: len })?;
        dst.copy_from_slice(buf.get(..len).unwrap_or(&[]));
        Ok(len)
    }

    /// Parses the binary form (strictly: no trailing bytes).
    pub fn decode(bytes: &[u8]) -> Result<Self, InviteError> {
        let (wire, rest): (Wire<'_>, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|_| InviteError::Malformed)?;
        if !rest.is_empty() {
            return Err(InviteError::TrailingBytes);
        }
        if wire.version != INVITE_VERSION {
            return Err(InviteError::UnsupportedVersion(wire.version));
        }
        if wire.servers.is_empty() {
            return Err(InviteError::NoServers);
        }
        let mut servers = ServerList::new();
        for key in &wire.servers {
            let id = PublicIdentity::from_bytes(key).map_err(|_| InviteError::BadServer)?;
            servers
                .push(id.address())
                .map_err(|_| InviteError::Malformed)?;
        }
        let inviter =
            PublicIdentity::from_bytes(&wire.inviter).map_err(|_| InviteError::BadInviter)?;
        let name = heapless::Vec::from_slice(wire.name.as_bytes())
            .map_err(|_| InviteError::NameTooLong)?;
        let invite = Invite {
            secret: GroupSecret::from_bytes(&wire.secret),
            servers,
            name,
            inviter,
        };
        // Postcard accepts over-long varints; one invite has one encoding.
        let mut again = Zeroizing::new([0u8; INVITE_MAX_LEN]);
        let len = invite.encode(again.as_mut())?;
        if again.get(..len) != Some(bytes) {
            return Err(InviteError::NonCanonical);
        }
        Ok(invite)
    }

    /// Writes the text form into `out` (at most [`INVITE_TEXT_MAX_LEN`]
    /// bytes) and returns it.
    pub fn to_text<'o>(&self, out: &'o mut [u8]) -> Result<&'o str, InviteError> {
        let mut buf = Zeroizing::new([0u8; INVITE_MAX_LEN + CHECKSUM_LEN]);
        let len = self.encode(buf.as_mut())?;
        let sum = checksum(buf.get(..len).unwrap_or(&[]));
        let total = len + CHECKSUM_LEN;
        if let Some(dst) = buf.get_mut(len..total) {
            dst.copy_from_slice(&sum);
        }
        let required = INVITE_PREFIX.len() + base32::encoded_len(total);
        let out = out
            .get_mut(..required)
            .ok_or(InviteError::BufferTooSmall { required })?;
        let (prefix, body) = out.split_at_mut(INVITE_PREFIX.len());
        prefix.copy_from_slice(INVITE_PREFIX.as_bytes());
        base32::encode_into(buf.get(..total).unwrap_or(&[]), body)
            .ok_or(InviteError::BufferTooSmall { required })?;
        core::str::from_utf8(out).map_err(|_| InviteError::Malformed)
    }

    /// Parses the text form. Whitespace around it is ignored.
    pub fn from_text(text: &str) -> Result<Self, InviteTextError> {
        let body = text
            .trim()
            .strip_prefix(INVITE_PREFIX)
            .ok_or(InviteTextError::MissingPrefix)?
            .as_bytes();
        let len = body.len() * 5 / 8;
        if len <= CHECKSUM_LEN
            || len > INVITE_MAX_LEN + CHECKSUM_LEN
            || base32::encoded_len(len) != body.len()
        {
            return Err(InviteTextError::WrongLength);
        }
        let mut buf = Zeroizing::new([0u8; INVITE_MAX_LEN + CHECKSUM_LEN]);
        let raw = buf.get_mut(..len).ok_or(InviteTextError::WrongLength)?;
        base32::decode_into(body, raw).map_err(|e| match e {
            Base32Error::InvalidCharacter(offset) => InviteTextError::InvalidCharacter { offset },
            Base32Error::WrongLength => InviteTextError::WrongLength,
            Base32Error::NonCanonical => InviteTextError::NonCanonical,
        })?;
        let (payload, sum) = raw
            .split_at_checked(len - CHECKSUM_LEN)
            .ok_or(InviteTextError::WrongLength)?;
        if !bool::from(checksum(payload).ct_eq(sum)) {
            return Err(InviteTextError::BadChecksum);
        }
        Invite::decode(payload).map_err(InviteTextError::Invite)
    }
}

impl Drop for Invite {
    fn drop(&mut self) {
        self.name.as_mut_slice().zeroize();
    }
}

impl Clone for Invite {
    fn clone(&self) -> Self {
        Invite {
            secret: self.secret.clone(),
            servers: self.servers.clone(),
            name: self.name.clone(),
            inviter: self.inviter,
        }
    }
}

impl fmt::Debug for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invite")
            .field("servers", &self.servers)
            .field("inviter", &self.inviter)
            .finish_non_exhaustive()
    }
}
