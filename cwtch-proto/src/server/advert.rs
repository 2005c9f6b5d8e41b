//! Server adverts: what a server says about itself, signed with its key.
//!
//! An advert names the server (its ed25519 key, which is its onion address),
//! what it demands of clients (proof of work, rate limit, connections) and
//! what it keeps (retention), with a validity window in Unix seconds. It is
//! signed by the server's identity key under a domain label, so it can be
//! passed from peer to peer (SPEC.md section 13) and checked by anyone
//! against the address alone: nobody but the server can forge or alter one.
//!
//! The encoding is fixed-length (`ADVERT_LEN` bytes), little-endian, with
//! no optional fields, so every advert has exactly one encoding. Decoding is
//! strict: a wrong length, an unknown version, an invalid key, a validity
//! window that is empty or too long, a difficulty over the cap or a bad
//! signature are refused. What an advert does **not** say (and cannot: it
//! is the server's own claim) is whether the server is reachable or keeps
//! its word; peers observe that themselves.

use core::fmt;

use crate::identity::{Identity, PUBLIC_KEY_LEN, PublicIdentity, SIGNATURE_LEN};
use crate::server::admission::MAX_POW_BITS;

/// The advert format version this module writes and reads.
pub const ADVERT_VERSION: u8 = 1;

/// The domain label the signature covers before the advert's bytes.
pub const ADVERT_SIGNATURE_LABEL: &[u8] = b"cwtch-server-advert-v1";

/// Length of the signed part of an advert (everything but the signature).
pub const ADVERT_BODY_LEN: usize = 1 + PUBLIC_KEY_LEN + 8 + 8 + 1 + 2 + 4 + 4 + 8 + 8 + 8;

/// Encoded length of an advert.
pub const ADVERT_LEN: usize = ADVERT_BODY_LEN + SIGNATURE_LEN;

/// The longest validity window accepted: 30 days.
pub const MAX_ADVERT_LIFETIME_SECS: u64 = 30 * 86_400;

/// How far in the future `issued_at` may be (clock skew): one hour.
pub const MAX_CLOCK_SKEW_SECS: u64 = 3_600;

/// What a server demands of its clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requirements {
    /// Proof of work per post, in leading zero bits (0: none).
    pub pow_bits: u8,
    /// Posts a connection may make in a burst.
    pub rate_burst: u16,
    /// Then one post per this many milliseconds (0: no rate limit).
    pub rate_interval_ms: u32,
    /// The most clients served at once (0: not stated).
    pub max_connections: u32,
}

/// What a server keeps (0 in a field: no limit of that kind).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// The most blobs kept.
    pub max_entries: u64,
    /// The most bytes of blobs kept.
    pub max_bytes: u64,
    /// Blobs older than this many seconds are dropped.
    pub max_age_secs: u64,
}

/// A server advert (decoded and verified, or about to be signed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerAdvert {
    /// The server's identity; its onion address is where it is reached.
    pub server: PublicIdentity,
    /// When the advert was signed (Unix seconds).
    pub issued_at: u64,
    /// When it stops being valid (Unix seconds, exclusive).
    pub expires_at: u64,
    /// What the server demands.
    pub requirements: Requirements,
    /// What the server keeps.
    pub retention: Retention,
}

/// Why bytes are not a valid advert, or not one to use now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdvertError {
    /// The bytes are not an advert: wrong length, invalid key, empty or too
    /// long validity window, difficulty over the cap.
    Malformed,
    /// An advert of a version this code does not read.
    UnsupportedVersion(u8),
    /// The signature does not verify under the advert's key.
    BadSignature,
    /// A valid advert, but of another server than the one expected.
    WrongServer,
    /// A valid advert whose validity window has ended.
    Expired,
    /// A valid advert issued further in the future than the clock skew allows.
    NotYetValid,
    /// The identity asked to sign is not the advert's server.
    WrongSigner,
}

impl fmt::Display for AdvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdvertError::Malformed => f.write_str("malformed server advert"),
            AdvertError::UnsupportedVersion(v) => {
                write!(f, "server advert version {v} is not supported")
            }
            AdvertError::BadSignature => f.write_str("the server advert's signature is wrong"),
            AdvertError::WrongServer => f.write_str("the advert names another server"),
            AdvertError::Expired => f.write_str("the server advert has expired"),
            AdvertError::NotYetValid => f.write_str("the server advert is not valid yet"),
            AdvertError::WrongSigner => f.write_str("only the server itself signs its advert"),
        }
    }
}

impl core::error::Error for AdvertError {}

fn take<'a, const N: usize>(bytes: &mut &'a [u8]) -> Result<&'a [u8; N], AdvertError> {
    let (head, rest) = bytes
        .split_first_chunk::<N>()
        .ok_or(AdvertError::Malformed)?;
    *bytes = rest;
    Ok(head)
}

impl ServerAdvert {
    /// The signed bytes (without the signature).
    fn body(&self) -> [u8; ADVERT_BODY_LEN] {
        let mut out = [0u8; ADVERT_BODY_LEN];
        let mut pos = 0;
        let mut put = |bytes: &[u8]| {
            if let Some(dst) = out.get_mut(pos..pos + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
            pos += bytes.len();
        };
        put(&[ADVERT_VERSION]);
        put(self.server.as_bytes());
        put(&self.issued_at.to_le_bytes());
        put(&self.expires_at.to_le_bytes());
        put(&[self.requirements.pow_bits]);
        put(&self.requirements.rate_burst.to_le_bytes());
        put(&self.requirements.rate_interval_ms.to_le_bytes());
        put(&self.requirements.max_connections.to_le_bytes());
        put(&self.retention.max_entries.to_le_bytes());
        put(&self.retention.max_bytes.to_le_bytes());
        put(&self.retention.max_age_secs.to_le_bytes());
        out
    }

    /// The fields a decoder accepts (the same rules both ways).
    fn check_fields(&self) -> Result<(), AdvertError> {
        let window = self.expires_at.checked_sub(self.issued_at);
        let window_ok = matches!(window, Some(w) if w > 0 && w <= MAX_ADVERT_LIFETIME_SECS);
        if !window_ok || self.requirements.pow_bits > MAX_POW_BITS {
            return Err(AdvertError::Malformed);
        }
        Ok(())
    }

    /// Signs the advert with the server's identity and returns its encoding.
    pub fn sign(&self, identity: &Identity) -> Result<[u8; ADVERT_LEN], AdvertError> {
        if identity.public() != self.server {
            return Err(AdvertError::WrongSigner);
        }
        self.check_fields()?;
        let body = self.body();
        let mut signed = [0u8; ADVERT_SIGNATURE_LABEL.len() + ADVERT_BODY_LEN];
        let (label, rest) = signed.split_at_mut(ADVERT_SIGNATURE_LABEL.len());
        label.copy_from_slice(ADVERT_SIGNATURE_LABEL);
        rest.copy_from_slice(&body);
        let signature = identity.sign(&signed);
        let mut out = [0u8; ADVERT_LEN];
        let (b, s) = out.split_at_mut(ADVERT_BODY_LEN);
        b.copy_from_slice(&body);
        s.copy_from_slice(&signature);
        Ok(out)
    }

    /// Decodes an advert and verifies its signature, without looking at the
    /// clock (see [`ServerAdvert::verify`] for the validity window).
    pub fn decode(bytes: &[u8]) -> Result<ServerAdvert, AdvertError> {
        let version = *bytes.first().ok_or(AdvertError::Malformed)?;
        if version != ADVERT_VERSION {
            return Err(AdvertError::UnsupportedVersion(version));
        }
        if bytes.len() != ADVERT_LEN {
            return Err(AdvertError::Malformed);
        }
        let (body, signature) = bytes.split_at(ADVERT_BODY_LEN);
        let signature: &[u8; SIGNATURE_LEN] =
            signature.try_into().map_err(|_| AdvertError::Malformed)?;
        let mut r = body.get(1..).ok_or(AdvertError::Malformed)?;
        let u64_at = |r: &mut &[u8]| take::<8>(r).map(|b| u64::from_le_bytes(*b));
        let server = PublicIdentity::from_bytes(take::<PUBLIC_KEY_LEN>(&mut r)?)
            .map_err(|_| AdvertError::Malformed)?;
        let issued_at = u64_at(&mut r)?;
        let expires_at = u64_at(&mut r)?;
        let pow_bits = take::<1>(&mut r)?[0];
        let rate_burst = u16::from_le_bytes(*take::<2>(&mut r)?);
        let rate_interval_ms = u32::from_le_bytes(*take::<4>(&mut r)?);
        let max_connections = u32::from_le_bytes(*take::<4>(&mut r)?);
        let retention = Retention {
            max_entries: u64_at(&mut r)?,
            max_bytes: u64_at(&mut r)?,
            max_age_secs: u64_at(&mut r)?,
        };
        let advert = ServerAdvert {
            server,
            issued_at,
            expires_at,
            requirements: Requirements {
                pow_bits,
                rate_burst,
                rate_interval_ms,
                max_connections,
            },
            retention,
        };
        advert.check_fields()?;
        let mut signed = [0u8; ADVERT_SIGNATURE_LABEL.len() + ADVERT_BODY_LEN];
        let (label, rest) = signed.split_at_mut(ADVERT_SIGNATURE_LABEL.len());
        label.copy_from_slice(ADVERT_SIGNATURE_LABEL);
        rest.copy_from_slice(body);
        server
            .verify(&signed, signature)
            .map_err(|_| AdvertError::BadSignature)?;
        Ok(advert)
    }

    /// Whether the advert is valid at `now` (Unix seconds).
    pub fn check_time(&self, now: u64) -> Result<(), AdvertError> {
        if self.issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(AdvertError::NotYetValid);
        }
        if now >= self.expires_at {
            return Err(AdvertError::Expired);
        }
        Ok(())
    }

    /// Decodes an advert, verifies its signature and that it is valid at
    /// `now` (Unix seconds). With `expected`, also that it is that server's.
    pub fn verify(
        bytes: &[u8],
        expected: Option<&PublicIdentity>,
        now: u64,
    ) -> Result<ServerAdvert, AdvertError> {
        let advert = ServerAdvert::decode(bytes)?;
        if expected.is_some_and(|e| *e != advert.server) {
            return Err(AdvertError::WrongServer);
        }
        advert.check_time(now)?;
        Ok(advert)
    }
}

/// How long a server's advert is valid: 7 days.
pub const ADVERT_LIFETIME: crate::Duration = crate::Duration::from_secs(7 * 86_400);
/// How often a server signs a fresh advert: daily.
pub const ADVERT_REFRESH: crate::Duration = crate::Duration::from_secs(86_400);

#[cfg(test)]
mod tests {
    use super::*;

    fn advert(identity: &Identity) -> ServerAdvert {
        ServerAdvert {
            server: identity.public(),
            issued_at: 1_700_000_000,
            expires_at: 1_700_000_000 + 7 * 86_400,
            requirements: Requirements {
                pow_bits: 16,
                rate_burst: 32,
                rate_interval_ms: 500,
                max_connections: 10_000,
            },
            retention: Retention {
                max_entries: 100_000,
                max_bytes: 0,
                max_age_secs: 30 * 86_400,
            },
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let id = Identity::from_seed(&[7; 32]);
        let a = advert(&id);
        let bytes = a.sign(&id).unwrap();
        assert_eq!(bytes.len(), 148);
        assert_eq!(bytes[0], ADVERT_VERSION);
        assert_eq!(&bytes[1..33], id.public().as_bytes());
        assert_eq!(ServerAdvert::decode(&bytes), Ok(a));
        assert_eq!(
            ServerAdvert::verify(&bytes, Some(&id.public()), 1_700_000_001),
            Ok(a)
        );
    }

    #[test]
    fn only_the_server_signs() {
        let id = Identity::from_seed(&[7; 32]);
        let other = Identity::from_seed(&[8; 32]);
        assert_eq!(advert(&id).sign(&other), Err(AdvertError::WrongSigner));
    }
}
