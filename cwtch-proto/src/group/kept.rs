//! A sealed blob kept to answer recovery requests, in fewer bytes.
//!
//! Every member keeps the blobs it sent and received so that it can give
//! them to a member who missed them (SPEC.md section 14). A blob is 2048
//! bytes whatever it carries, and most of its plaintext is zeros that
//! opening *requires* to be zeros (unused seen entries, the padding after
//! the body). With the group's keys the blob is therefore fully determined
//! by its nonce and the rest of its plaintext, and XChaCha20-Poly1305 is
//! deterministic given key, nonce and associated data:
//!
//! ```text
//! kept = N (24)
//!     || plaintext[0 .. 115 + 24 n]          version .. seen entries in use
//!     || plaintext[307 .. 309 + L]           body length and body
//!     || plaintext[1896 .. 1992]             server key and signature
//! ```
//!
//! 24 + 115 + 24 n + 2 + L + 96 bytes: 237 for an empty body with no seen
//! entries, at most [`KEPT_MAX_LEN`] = 2016, always less than a blob, so a
//! store can tell a kept form from a whole blob by its length.
//! [`GroupKeys::keep`] makes it from a blob (decrypting it and checking its
//! layout and group; the signature was checked when the blob was opened),
//! and [`GroupKeys::unkeep`] seals it again into the very same blob.
//!
//! That the kept form determines the blob rests on
//! [`message::parse`](super::message) refusing non-zero unused seen entries
//! and padding: a looser parser would need this form to carry them.

use core::fmt;

use chacha20poly1305::AeadInOut;
use chacha20poly1305::aead::inout::InOutBuf;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::SEALED_BLOB_LEN;
use super::detect::NONCE_LEN;
use super::message::{
    self, AEAD_TAG_LEN, CONTENT_LEN, MAX_BODY_LEN, Malformed, OFF_BODY, OFF_BODY_LEN, OFF_SEEN,
    OFF_SEEN_COUNT, OFF_SERVER, PLAINTEXT_LEN, SEEN_ENTRY_LEN, SEEN_MAX,
};
use super::seal::{HEADER_LEN, OpenError, aead};
use super::secret::GroupKeys;

/// The server key and the signature at the end of the plaintext.
const TAIL_LEN: usize = PLAINTEXT_LEN - OFF_SERVER;
/// The shortest kept form: no seen entry, an empty body.
pub const KEPT_MIN_LEN: usize = NONCE_LEN + OFF_SEEN + 2 + TAIL_LEN;
/// The longest kept form: every seen entry, the longest body.
pub const KEPT_MAX_LEN: usize =
    NONCE_LEN + OFF_SEEN + SEEN_MAX * SEEN_ENTRY_LEN + 2 + MAX_BODY_LEN + TAIL_LEN;
const _: () = assert!(KEPT_MIN_LEN == 237);
const _: () = assert!(KEPT_MAX_LEN == 2016);
const _: () = assert!(KEPT_MAX_LEN < SEALED_BLOB_LEN);

/// Why a kept form could not be sealed back into its blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnkeepError {
    /// The output buffer is shorter than [`SEALED_BLOB_LEN`].
    BufferTooSmall,
    /// The kept form's length does not match what it says it holds.
    WrongLength {
        /// The length found.
        found: usize,
    },
    /// What it holds is not a well-formed message.
    Malformed(Malformed),
    /// What it holds is another group's message: sealing it under these
    /// keys would hand that group's plaintext to this one.
    WrongGroup,
}

impl fmt::Display for UnkeepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnkeepError::BufferTooSmall => {
                write!(f, "a sealed blob needs {SEALED_BLOB_LEN} bytes of buffer")
            }
            UnkeepError::WrongLength { found } => {
                write!(
                    f,
                    "a kept blob of {found} bytes does not match its contents"
                )
            }
            UnkeepError::Malformed(m) => write!(f, "a kept blob holds a malformed message: {m}"),
            UnkeepError::WrongGroup => f.write_str("a kept blob holds another group's message"),
        }
    }
}

impl core::error::Error for UnkeepError {}

impl GroupKeys {
    /// The kept form of `blob`, one of this group's blobs, written to the
    /// start of `out` (at least [`KEPT_MAX_LEN`] bytes, else
    /// `BufferTooSmall`); returns its length.
    ///
    /// Checks the length, the tag, the AEAD, the layout and that the
    /// message names this group, as opening does, but not the signature:
    /// keep only blobs that opened.
    pub fn keep(&self, blob: &[u8], out: &mut [u8]) -> Result<usize, OpenError> {
        let found = blob.len();
        let blob: &[u8; SEALED_BLOB_LEN] = blob
            .try_into()
            .map_err(|_| OpenError::WrongLength { found })?;
        if !self.detect.detect(blob) {
            return Err(OpenError::NotForUs);
        }
        if out.len() < KEPT_MAX_LEN {
            return Err(OpenError::BufferTooSmall {
                required: KEPT_MAX_LEN,
            });
        }
        let (header, rest) = blob.split_at(HEADER_LEN);
        let (ct, tag) = rest.split_at(PLAINTEXT_LEN);
        let mut pt = [0u8; PLAINTEXT_LEN];
        pt.copy_from_slice(ct);
        let nonce: [u8; NONCE_LEN] = header[..NONCE_LEN]
            .try_into()
            .map_err(|_| OpenError::WrongLength { found })?;
        let tag: [u8; AEAD_TAG_LEN] = tag
            .try_into()
            .map_err(|_| OpenError::WrongLength { found })?;
        let opened = aead(self).decrypt_inout_detached(
            &nonce.into(),
            header,
            InOutBuf::from(&mut pt[..]),
            &tag.into(),
        );
        if opened.is_err() {
            pt.zeroize();
            return Err(OpenError::Tampered);
        }
        let parsed = match message::parse(&pt) {
            Ok(p) => p,
            Err(e) => {
                pt.zeroize();
                return Err(OpenError::Malformed(e));
            }
        };
        if !bool::from(parsed.group_id.ct_eq(self.id.as_bytes())) {
            pt.zeroize();
            return Err(OpenError::WrongGroup);
        }
        let seen_end = OFF_SEEN + parsed.seen.len() * SEEN_ENTRY_LEN;
        let body_end = OFF_BODY + parsed.body_len;
        let parts: [&[u8]; 4] = [
            &nonce,
            pt.get(..seen_end).unwrap_or_default(),
            pt.get(OFF_BODY_LEN..body_end).unwrap_or_default(),
            pt.get(OFF_SERVER..).unwrap_or_default(),
        ];
        // Parse bounds n and L, so the parts fit in KEPT_MAX_LEN (checked
        // above).
        let mut at = 0;
        for part in parts {
            if let Some(dst) = out.get_mut(at..at + part.len()) {
                dst.copy_from_slice(part);
            }
            at += part.len();
        }
        pt.zeroize();
        Ok(at)
    }

    /// Seals a kept form (from [`keep`](Self::keep)) back into its blob,
    /// the same 2048 bytes, in the first [`SEALED_BLOB_LEN`] bytes of
    /// `out`. Checks the layout and that the message names this group (a
    /// kept form of another group is never sealed under these keys), not
    /// the signature.
    pub fn unkeep(&self, kept: &[u8], out: &mut [u8]) -> Result<(), UnkeepError> {
        let found = kept.len();
        let wrong = UnkeepError::WrongLength { found };
        let Some(blob) = out
            .get_mut(..SEALED_BLOB_LEN)
            .and_then(|b| <&mut [u8; SEALED_BLOB_LEN]>::try_from(b).ok())
        else {
            return Err(UnkeepError::BufferTooSmall);
        };
        if !(KEPT_MIN_LEN..=KEPT_MAX_LEN).contains(&found) {
            return Err(wrong);
        }
        let (nonce, rest) = kept.split_at_checked(NONCE_LEN).ok_or(wrong)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| wrong)?;
        let count = usize::from(*rest.get(OFF_SEEN_COUNT).ok_or(wrong)?);
        if count > SEEN_MAX {
            return Err(UnkeepError::Malformed(Malformed::SeenSummary));
        }
        let seen_end = OFF_SEEN + count * SEEN_ENTRY_LEN;
        let (head, rest) = rest.split_at_checked(seen_end).ok_or(wrong)?;
        let len_bytes: [u8; 2] = rest.get(..2).ok_or(wrong)?.try_into().map_err(|_| wrong)?;
        let body_len = usize::from(u16::from_le_bytes(len_bytes));
        if body_len > MAX_BODY_LEN {
            return Err(UnkeepError::Malformed(Malformed::BodyLength));
        }
        let (body, tail) = rest.split_at_checked(2 + body_len).ok_or(wrong)?;
        if tail.len() != TAIL_LEN {
            return Err(wrong);
        }
        let mut pt = [0u8; PLAINTEXT_LEN];
        let placed = [(0, head), (OFF_BODY_LEN, body), (CONTENT_LEN, tail)]
            .into_iter()
            .all(|(at, part)| match pt.get_mut(at..at + part.len()) {
                Some(dst) => {
                    dst.copy_from_slice(part);
                    true
                }
                None => false,
            });
        if !placed {
            pt.zeroize();
            return Err(wrong);
        }
        match message::parse(&pt) {
            Err(e) => {
                pt.zeroize();
                return Err(UnkeepError::Malformed(e));
            }
            Ok(parsed) if !bool::from(parsed.group_id.ct_eq(self.id.as_bytes())) => {
                pt.zeroize();
                return Err(UnkeepError::WrongGroup);
            }
            Ok(_) => {}
        }
        let (header, rest) = blob.split_at_mut(HEADER_LEN);
        let (ct, aead_tag) = rest.split_at_mut(PLAINTEXT_LEN);
        header[..NONCE_LEN].copy_from_slice(&nonce);
        header[NONCE_LEN..].copy_from_slice(&self.detect.tag(&nonce));
        ct.copy_from_slice(&pt);
        pt.zeroize();
        match aead(self).encrypt_inout_detached(&nonce.into(), header, InOutBuf::from(&mut ct[..]))
        {
            Ok(t) => {
                aead_tag.copy_from_slice(&t);
                Ok(())
            }
            Err(_) => {
                blob.zeroize();
                Err(UnkeepError::BufferTooSmall)
            }
        }
    }
}
