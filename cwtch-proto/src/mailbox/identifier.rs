//! The extended identifier: an address plus, optionally, a mailbox.
//!
//! Text form: `cwtch:<address>?server=<server address>&key=<k>` where `<k>`
//! is lower-case base32 (no padding) of `K || SHA-256("cwtch mailbox
//! identifier checksum v1" || owner key || server key || K)[0..4]`: 58
//! characters, 189 in all. The checksum covers the whole identifier, so a
//! typo anywhere in it is caught (the two addresses also carry their own).
//! A plain address (with or without `.onion`, or as `cwtch:<address>`) is
//! an identifier without a mailbox.
//!
//! The parser is strict: one order of fields, lower case, no other fields,
//! whitespace around the text ignored.

use core::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::onion::{AddressError, ONION_ADDRESS_LEN, OnionAddress};
use crate::wire::base32::{self, Base32Error};

use super::{MAILBOX_KEY_LEN, Mailbox, MailboxKey};

/// The text form's prefix.
pub const IDENTIFIER_PREFIX: &str = "cwtch:";
/// What separates the owner's address from the server's.
pub const SERVER_FIELD: &str = "?server=";
/// What separates the server's address from the key.
pub const KEY_FIELD: &str = "&key=";
/// Length of the checksum appended to the key.
pub const CHECKSUM_LEN: usize = 4;
/// Domain label of the checksum.
pub const LABEL_CHECKSUM: &[u8] = b"cwtch mailbox identifier checksum v1";
/// Length of the key field's base32 text.
pub const KEY_TEXT_LEN: usize = base32::encoded_len(MAILBOX_KEY_LEN + CHECKSUM_LEN);
/// The length of an extended identifier's text (189).
pub const IDENTIFIER_TEXT_MAX_LEN: usize = IDENTIFIER_PREFIX.len()
    + ONION_ADDRESS_LEN
    + SERVER_FIELD.len()
    + ONION_ADDRESS_LEN
    + KEY_FIELD.len()
    + KEY_TEXT_LEN;

/// Someone's identifier: their address and, if they keep one, their mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identifier {
    owner: OnionAddress,
    mailbox: Option<Mailbox>,
}

/// Why an identifier text was refused, in order of checking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentifierError {
    /// The owner's address is not a valid onion address.
    Address(AddressError),
    /// After the address: not exactly `?server=<address>&key=<58 characters>`.
    Malformed,
    /// The server's address is not a valid onion address.
    Server(AddressError),
    /// The key field is not canonical base32 of 36 bytes.
    Key(Base32Error),
    /// The checksum does not match (a typo or a cut?).
    BadChecksum,
}

impl fmt::Display for IdentifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentifierError::Address(e) => write!(f, "bad address in the identifier: {e}"),
            IdentifierError::Malformed => f.write_str(
                "an extended identifier is cwtch:<address>?server=<address>&key=<58 characters>",
            ),
            IdentifierError::Server(e) => write!(f, "bad server in the identifier: {e}"),
            IdentifierError::Key(_) => f.write_str("bad mailbox key in the identifier"),
            IdentifierError::BadChecksum => {
                f.write_str("the identifier checksum is wrong (a typo or a cut?)")
            }
        }
    }
}

impl core::error::Error for IdentifierError {}

fn checksum(owner: &OnionAddress, server: &OnionAddress, key: &[u8]) -> [u8; CHECKSUM_LEN] {
    let digest = Sha256::new()
        .chain_update(LABEL_CHECKSUM)
        .chain_update(owner.public_identity().as_bytes())
        .chain_update(server.public_identity().as_bytes())
        .chain_update(key)
        .finalize();
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&digest[..CHECKSUM_LEN]);
    out
}

impl Identifier {
    /// The identifier of `owner`, with `mailbox` if any.
    pub fn new(owner: OnionAddress, mailbox: Option<Mailbox>) -> Self {
        Identifier { owner, mailbox }
    }

    /// The owner's address: where to reach them online.
    pub fn owner(&self) -> &OnionAddress {
        &self.owner
    }

    /// Their mailbox, if the identifier names one.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        self.mailbox.as_ref()
    }

    /// Writes the text form (the plain address when there is no mailbox).
    pub fn to_text<'o>(&self, out: &'o mut [u8; IDENTIFIER_TEXT_MAX_LEN]) -> &'o str {
        let Some(mailbox) = &self.mailbox else {
            let (dst, _) = out.split_at_mut(ONION_ADDRESS_LEN);
            dst.copy_from_slice(self.owner.as_bytes());
            return core::str::from_utf8(dst).unwrap_or("");
        };
        let mut raw = Zeroizing::new([0u8; MAILBOX_KEY_LEN + CHECKSUM_LEN]);
        let key = mailbox.key.to_bytes();
        raw[..MAILBOX_KEY_LEN].copy_from_slice(key.as_ref());
        raw[MAILBOX_KEY_LEN..].copy_from_slice(&checksum(
            &self.owner,
            &mailbox.server,
            key.as_ref(),
        ));
        let mut at = 0;
        for part in [
            IDENTIFIER_PREFIX.as_bytes(),
            self.owner.as_bytes(),
            SERVER_FIELD.as_bytes(),
            mailbox.server.as_bytes(),
            KEY_FIELD.as_bytes(),
        ] {
            if let Some(dst) = out.get_mut(at..at + part.len()) {
                dst.copy_from_slice(part);
            }
            at += part.len();
        }
        if let Some(dst) = out.get_mut(at..) {
            // The buffer is exactly long enough: cannot fail.
            let _ = base32::encode_into(raw.as_ref(), dst);
        }
        core::str::from_utf8(out).unwrap_or("")
    }

    /// Parses an identifier: an extended one, or a plain address.
    pub fn parse(text: &str) -> Result<Self, IdentifierError> {
        let text = text.trim();
        let text = text.strip_prefix(IDENTIFIER_PREFIX).unwrap_or(text);
        let Some((address, rest)) = text.split_at_checked(ONION_ADDRESS_LEN) else {
            let owner = OnionAddress::parse(text).map_err(IdentifierError::Address)?;
            return Ok(Identifier::new(owner, None));
        };
        if rest.is_empty() || rest == ".onion" {
            let owner = OnionAddress::parse(text).map_err(IdentifierError::Address)?;
            return Ok(Identifier::new(owner, None));
        }
        let owner = OnionAddress::parse(address).map_err(IdentifierError::Address)?;
        let rest = rest
            .strip_prefix(SERVER_FIELD)
            .ok_or(IdentifierError::Malformed)?;
        let (server, rest) = rest
            .split_at_checked(ONION_ADDRESS_LEN)
            .ok_or(IdentifierError::Malformed)?;
        let key_text = rest
            .strip_prefix(KEY_FIELD)
            .ok_or(IdentifierError::Malformed)?;
        if key_text.len() != KEY_TEXT_LEN {
            return Err(IdentifierError::Malformed);
        }
        let server = OnionAddress::parse(server).map_err(IdentifierError::Server)?;
        let mut raw = Zeroizing::new([0u8; MAILBOX_KEY_LEN + CHECKSUM_LEN]);
        base32::decode_into(key_text.as_bytes(), raw.as_mut()).map_err(IdentifierError::Key)?;
        let (key, sum) = raw.split_at(MAILBOX_KEY_LEN);
        if !bool::from(checksum(&owner, &server, key).ct_eq(sum)) {
            return Err(IdentifierError::BadChecksum);
        }
        let mut bytes = Zeroizing::new([0u8; MAILBOX_KEY_LEN]);
        bytes.copy_from_slice(key);
        Ok(Identifier::new(
            owner,
            Some(Mailbox {
                server,
                key: MailboxKey::from_bytes(&bytes),
            }),
        ))
    }
}
