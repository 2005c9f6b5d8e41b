//! Tor v3 onion addresses (rend-spec-v3, "Encoding onion addresses").
//!
//! `address = base32(PUBKEY(32) || CHECKSUM(2) || VERSION(1))`, lower case,
//! 56 characters, where `CHECKSUM = SHA3-256(".onion checksum" || PUBKEY ||
//! VERSION)[..2]` and `VERSION = 0x03`. An [`OnionAddress`] can only be
//! built from a valid ed25519 public key or by [`OnionAddress::parse`], which
//! checks everything, so holding one means the address is well formed.

use core::fmt;

use sha3::{Digest, Sha3_256};

use crate::identity::{Identity, PublicIdentity};
use crate::wire::base32::{self, Base32Error};

/// Length of an onion address without the `.onion` suffix.
pub const ONION_ADDRESS_LEN: usize = 56;
/// The only onion address version we accept.
pub const ONION_VERSION: u8 = 0x03;
const SUFFIX: &[u8] = b".onion";

/// A validated Tor v3 onion address, stored as its 56 lower-case characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OnionAddress {
    text: [u8; ONION_ADDRESS_LEN],
    id: PublicIdentity,
}

/// Every way a string can fail to be an onion address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressError {
    /// Not 56 characters (after removing an optional `.onion`).
    WrongLength {
        /// The length that was found.
        found: usize,
    },
    /// A character outside the lower-case base32 alphabet, at this offset.
    InvalidCharacter {
        /// Byte offset of the offending character.
        offset: usize,
    },
    /// The base32 tail is not in canonical form.
    NonCanonical,
    /// The version byte is not 3 (v2 and unknown versions are refused).
    UnsupportedVersion {
        /// The version byte that was found.
        version: u8,
    },
    /// The two checksum bytes do not match the key.
    BadChecksum,
    /// The embedded key is not a valid ed25519 point, or is of small order.
    InvalidKey,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::WrongLength { found } => write!(
                f,
                "an onion address has {ONION_ADDRESS_LEN} characters, this has {found}"
            ),
            AddressError::InvalidCharacter { offset } => write!(
                f,
                "character {offset} is not one of a-z or 2-7 (addresses are lower case)"
            ),
            AddressError::NonCanonical => f.write_str("the address is not in canonical form"),
            AddressError::UnsupportedVersion { version } => {
                write!(
                    f,
                    "onion address version {version} is not supported (only v3)"
                )
            }
            AddressError::BadChecksum => {
                f.write_str("the address checksum is wrong (a typo in the address?)")
            }
            AddressError::InvalidKey => f.write_str("the address does not hold a valid key"),
        }
    }
}

impl core::error::Error for AddressError {}

fn checksum(pubkey: &[u8; 32]) -> [u8; 2] {
    let mut h = Sha3_256::new();
    h.update(b".onion checksum");
    h.update(pubkey);
    h.update([ONION_VERSION]);
    let digest = h.finalize();
    let mut out = [0u8; 2];
    out.copy_from_slice(&digest[..2]);
    out
}

impl OnionAddress {
    /// The address of a validated public key.
    pub(crate) fn from_identity(id: PublicIdentity) -> Self {
        let pubkey = id.as_bytes();
        let mut raw = [0u8; 35];
        raw[..32].copy_from_slice(pubkey);
        raw[32..34].copy_from_slice(&checksum(pubkey));
        raw[34] = ONION_VERSION;
        let mut text = [0u8; ONION_ADDRESS_LEN];
        // 35 bytes always encode to exactly 56 characters.
        let _ = base32::encode_into(&raw, &mut text);
        OnionAddress { text, id }
    }

    /// Parses an address, with or without the `.onion` suffix. Only the
    /// canonical lower-case form is accepted.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let bytes = input.as_bytes();
        let bytes = bytes.strip_suffix(SUFFIX).unwrap_or(bytes);
        if bytes.len() != ONION_ADDRESS_LEN {
            return Err(AddressError::WrongLength { found: bytes.len() });
        }
        let mut raw = [0u8; 35];
        base32::decode_into(bytes, &mut raw).map_err(|e| match e {
            Base32Error::InvalidCharacter(offset) => AddressError::InvalidCharacter { offset },
            Base32Error::WrongLength => AddressError::WrongLength { found: bytes.len() },
            Base32Error::NonCanonical => AddressError::NonCanonical,
        })?;
        let (key, rest) = raw.split_at(32);
        let mut pubkey = [0u8; 32];
        pubkey.copy_from_slice(key);
        let version = rest.get(2).copied().unwrap_or(0);
        if version != ONION_VERSION {
            return Err(AddressError::UnsupportedVersion { version });
        }
        if rest.get(..2) != Some(&checksum(&pubkey)[..]) {
            return Err(AddressError::BadChecksum);
        }
        PublicIdentity::from_bytes(&pubkey)
            .map(OnionAddress::from_identity)
            .map_err(|_| AddressError::InvalidKey)
    }

    /// The ed25519 public key the address names, validated.
    pub fn public_identity(&self) -> PublicIdentity {
        self.id
    }

    /// The 56 characters, without `.onion`.
    pub fn as_str(&self) -> &str {
        // Only base32 alphabet bytes are ever stored.
        core::str::from_utf8(&self.text).unwrap_or("")
    }

    /// The 56 characters as bytes.
    pub fn as_bytes(&self) -> &[u8; ONION_ADDRESS_LEN] {
        &self.text
    }
}

impl fmt::Display for OnionAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for OnionAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnionAddress({})", self.as_str())
    }
}

impl core::str::FromStr for OnionAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OnionAddress::parse(s)
    }
}

// The addresses of keys live here, with the address type: `identity`
// knows nothing of onion addresses (no import cycle).
impl Identity {
    /// The onion address of this identity.
    pub fn address(&self) -> OnionAddress {
        self.public().address()
    }
}

impl PublicIdentity {
    /// The onion address of this key.
    pub fn address(&self) -> OnionAddress {
        OnionAddress::from_identity(*self)
    }
}
