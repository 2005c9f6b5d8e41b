//! Sealing group messages into fixed-size blobs, and opening them.
//!
//! ```text
//! blob (2048 bytes) = N (24, random) || T (16, detection tag)
//!                   || C (1992, XChaCha20-Poly1305 ciphertext) || A (16, Poly1305 tag)
//! ```
//!
//! `C, A = XChaCha20-Poly1305(K_seal, nonce = N, aad = N || T, plaintext)`
//! where the plaintext is laid out as [`super::message`] says.
//!
//! [`GroupKeys::open_in_place`] checks, in order: the length
//! ([`OpenError::WrongLength`]), the detection tag ([`OpenError::NotForUs`]),
//! the AEAD ([`OpenError::Tampered`]), the layout
//! ([`OpenError::Malformed`]), the signature ([`OpenError::BadSignature`]),
//! and last that the group and the server the signature binds are the ones
//! the blob was fetched for ([`OpenError::WrongGroup`],
//! [`OpenError::WrongServer`]).

use core::fmt;

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, KeyInit, XChaCha20Poly1305};
use rand_core::CryptoRng;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::identity::Identity;
use crate::onion::OnionAddress;
use crate::time::UnixMicros;

use super::SEALED_BLOB_LEN;
use super::detect::{NONCE_LEN, TAG_LEN};
use super::message::{
    self, AEAD_TAG_LEN, EncodeError, MAX_BODY_LEN, MAX_SEQ, Malformed, MessageHash, MessageKind,
    OFF_BODY, OFF_SERVER, OFF_SIGNATURE, OpenedMessage, OutgoingMessage, PLAINTEXT_LEN, SEEN_MAX,
    SeenEntry,
};
use super::secret::GroupKeys;

/// Length of the clear header a server sees: nonce and detection tag.
pub const HEADER_LEN: usize = NONCE_LEN + TAG_LEN;
const CT_END: usize = HEADER_LEN + PLAINTEXT_LEN;
const _: () = assert!(CT_END + AEAD_TAG_LEN == SEALED_BLOB_LEN);

/// Why a message could not be sealed. Nothing useful is written on error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// The output buffer is shorter than [`SEALED_BLOB_LEN`].
    BufferTooSmall {
        /// The length needed.
        required: usize,
    },
    /// The body is longer than [`MAX_BODY_LEN`]; split it or shorten it.
    BodyTooLong {
        /// The body's length.
        len: usize,
        /// The longest body that fits.
        max: usize,
    },
    /// More than [`SEEN_MAX`] seen entries.
    TooManySeen,
    /// A sequence number above [`MAX_SEQ`].
    SeqOutOfRange,
    /// A text message whose body is not UTF-8.
    NotUtf8,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::BufferTooSmall { required } => {
                write!(f, "a sealed blob needs a {required}-byte buffer")
            }
            SealError::BodyTooLong { len, max } => {
                write!(
                    f,
                    "message of {len} bytes is longer than the {max} that fit"
                )
            }
            SealError::TooManySeen => write!(f, "at most {SEEN_MAX} seen entries"),
            SealError::SeqOutOfRange => write!(f, "sequence number above {MAX_SEQ}"),
            SealError::NotUtf8 => f.write_str("text message is not UTF-8"),
        }
    }
}

impl core::error::Error for SealError {}

/// Why a blob did not open. The first three say nothing about the content
/// and are what non-members produce; the others mean a member (someone who
/// holds the group secret) misbehaved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// The blob is not [`SEALED_BLOB_LEN`] bytes long.
    WrongLength {
        /// The length found.
        found: usize,
    },
    /// The detection tag is not this group's: the blob is for someone else.
    NotForUs,
    /// The tag matches but the AEAD fails: the blob was modified.
    Tampered,
    /// The plaintext is not a well-formed message.
    Malformed(Malformed),
    /// The sender's signature does not verify.
    BadSignature,
    /// A validly signed message of another group, replayed into this one.
    WrongGroup,
    /// A validly signed message posted to another server, replayed here.
    WrongServer,
    /// The output buffer is too short ([`GroupKeys::keep`]).
    BufferTooSmall {
        /// The length needed.
        required: usize,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::WrongLength { found } => {
                write!(f, "a sealed blob has {SEALED_BLOB_LEN} bytes, not {found}")
            }
            OpenError::NotForUs => f.write_str("blob is not for this group"),
            OpenError::Tampered => f.write_str("blob failed authentication"),
            OpenError::Malformed(m) => write!(f, "malformed group message: {m}"),
            OpenError::BadSignature => f.write_str("bad sender signature"),
            OpenError::WrongGroup => f.write_str("message was signed for another group"),
            OpenError::WrongServer => f.write_str("message was signed for another server"),
            OpenError::BufferTooSmall { required } => {
                write!(f, "the output buffer needs {required} bytes")
            }
        }
    }
}

impl core::error::Error for OpenError {}

/// A sealed blob: its length (always [`SEALED_BLOB_LEN`]) and the message's
/// hash, the `prev_hash` of the sender's next message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// Bytes written to the output buffer.
    pub len: usize,
    /// The message hash.
    pub hash: MessageHash,
}

/// The group's sealing AEAD (also [`super::kept`]'s).
pub(super) fn aead(keys: &GroupKeys) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&keys.seal.0.into())
}

impl GroupKeys {
    /// Seals `msg`, signed by `sender`, for posting to `server`, into the
    /// first [`SEALED_BLOB_LEN`] bytes of `out`.
    pub fn seal<R: CryptoRng + ?Sized>(
        &self,
        sender: &Identity,
        server: &OnionAddress,
        msg: &OutgoingMessage<'_>,
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<Sealed, SealError> {
        let Some(blob) = out
            .get_mut(..SEALED_BLOB_LEN)
            .and_then(|b| <&mut [u8; SEALED_BLOB_LEN]>::try_from(b).ok())
        else {
            return Err(SealError::BufferTooSmall {
                required: SEALED_BLOB_LEN,
            });
        };
        let (header, rest) = blob.split_at_mut(HEADER_LEN);
        let (body, aead_tag) = rest.split_at_mut(PLAINTEXT_LEN);
        let pt: &mut [u8; PLAINTEXT_LEN] =
            body.try_into().map_err(|_| SealError::BufferTooSmall {
                required: SEALED_BLOB_LEN,
            })?;
        let public = sender.public();
        message::encode_content(pt, self.id.as_bytes(), &public, msg).map_err(|e| match e {
            EncodeError::BodyTooLong => SealError::BodyTooLong {
                len: msg.body.len(),
                max: MAX_BODY_LEN,
            },
            EncodeError::TooManySeen => SealError::TooManySeen,
            EncodeError::Seq => SealError::SeqOutOfRange,
            EncodeError::NotUtf8 => SealError::NotUtf8,
        })?;
        let hash = message::message_hash(pt);
        let server_key = *server.public_identity().as_bytes();
        pt[OFF_SERVER..OFF_SIGNATURE].copy_from_slice(&server_key);
        let signature = sender.sign(&message::signed_bytes(&hash, &server_key));
        pt[OFF_SIGNATURE..].copy_from_slice(&signature);

        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let tag = self.detect.tag(&nonce);
        header[..NONCE_LEN].copy_from_slice(&nonce);
        header[NONCE_LEN..].copy_from_slice(&tag);
        // The plaintext is far below XChaCha20-Poly1305's length limit.
        match aead(self).encrypt_inout_detached(&nonce.into(), header, InOutBuf::from(&mut pt[..]))
        {
            Ok(t) => aead_tag.copy_from_slice(&t),
            Err(_) => {
                blob.zeroize();
                return Err(SealError::BufferTooSmall {
                    required: SEALED_BLOB_LEN,
                });
            }
        }
        Ok(Sealed {
            len: SEALED_BLOB_LEN,
            hash,
        })
    }

    /// Whether `blob` carries this group's detection tag (cheap; no
    /// decryption).
    pub fn detect(&self, blob: &[u8]) -> bool {
        self.detect.detect(blob)
    }

    /// Opens a blob fetched from `server`, decrypting it in place. On
    /// success the message's body borrows from `blob`. On failure after
    /// decryption, the plaintext is wiped from `blob`.
    pub fn open_in_place<'b>(
        &self,
        server: &OnionAddress,
        blob: &'b mut [u8],
    ) -> Result<OpenedMessage<'b>, OpenError> {
        let found = blob.len();
        let blob: &'b mut [u8; SEALED_BLOB_LEN] = blob
            .try_into()
            .map_err(|_| OpenError::WrongLength { found })?;
        if !self.detect.detect(blob) {
            return Err(OpenError::NotForUs);
        }
        let (header, rest) = blob.split_at_mut(HEADER_LEN);
        let (body, aead_tag) = rest.split_at_mut(PLAINTEXT_LEN);
        let nonce: [u8; NONCE_LEN] = header[..NONCE_LEN]
            .try_into()
            .map_err(|_| OpenError::WrongLength { found })?;
        let tag: [u8; AEAD_TAG_LEN] = (&*aead_tag)
            .try_into()
            .map_err(|_| OpenError::WrongLength { found })?;
        aead(self)
            .decrypt_inout_detached(
                &nonce.into(),
                header,
                InOutBuf::from(&mut body[..]),
                &tag.into(),
            )
            .map_err(|_| OpenError::Tampered)?;
        let pt: &'b mut [u8; PLAINTEXT_LEN] = body
            .try_into()
            .map_err(|_| OpenError::WrongLength { found })?;
        match self.verify(server, pt) {
            Ok((parsed, hash)) => {
                let pt: &'b [u8; PLAINTEXT_LEN] = pt;
                let body = pt.get(OFF_BODY..OFF_BODY + parsed.body_len).unwrap_or(&[]);
                Ok(OpenedMessage {
                    member: self.id.member_id(&parsed.sender),
                    sender: parsed.sender,
                    kind: parsed.kind,
                    body,
                    seq: parsed.seq,
                    timestamp: parsed.timestamp,
                    prev_hash: parsed.prev_hash,
                    seen: parsed.seen,
                    hash,
                })
            }
            Err(e) => {
                pt.zeroize();
                Err(e)
            }
        }
    }

    /// Opens a blob fetched from `server` into `work` (which must be at
    /// least [`SEALED_BLOB_LEN`] bytes), leaving `blob` untouched.
    pub fn open<'b>(
        &self,
        server: &OnionAddress,
        blob: &[u8],
        work: &'b mut [u8],
    ) -> Result<OpenedMessage<'b>, OpenError> {
        if blob.len() != SEALED_BLOB_LEN {
            return Err(OpenError::WrongLength { found: blob.len() });
        }
        if !self.detect.detect(blob) {
            return Err(OpenError::NotForUs);
        }
        let work = work
            .get_mut(..SEALED_BLOB_LEN)
            .ok_or(OpenError::WrongLength { found: blob.len() })?;
        work.copy_from_slice(blob);
        self.open_in_place(server, work)
    }

    fn verify(
        &self,
        server: &OnionAddress,
        pt: &[u8; PLAINTEXT_LEN],
    ) -> Result<(message::Parsed, MessageHash), OpenError> {
        let parsed = message::parse(pt).map_err(OpenError::Malformed)?;
        let hash = message::message_hash(pt);
        parsed
            .sender
            .verify(
                &message::signed_bytes(&hash, &parsed.server_key),
                &parsed.signature,
            )
            .map_err(|_| OpenError::BadSignature)?;
        if !bool::from(parsed.group_id.ct_eq(self.id.as_bytes())) {
            return Err(OpenError::WrongGroup);
        }
        if parsed.server_key != *server.public_identity().as_bytes() {
            return Err(OpenError::WrongServer);
        }
        Ok((parsed, hash))
    }
}

/// Fuzzing hook: seals an arbitrary plaintext (no layout checks, no
/// signature) so a fuzzer can reach the parser and signature checks of
/// [`GroupKeys::open_in_place`]. Only with the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
pub fn seal_raw_for_fuzzing(
    keys: &GroupKeys,
    plaintext: &[u8; PLAINTEXT_LEN],
    nonce: &[u8; NONCE_LEN],
) -> [u8; SEALED_BLOB_LEN] {
    let mut blob = [0u8; SEALED_BLOB_LEN];
    let (header, rest) = blob.split_at_mut(HEADER_LEN);
    let (body, aead_tag) = rest.split_at_mut(PLAINTEXT_LEN);
    header[..NONCE_LEN].copy_from_slice(nonce);
    header[NONCE_LEN..].copy_from_slice(&keys.detect.tag(nonce));
    body.copy_from_slice(plaintext);
    if let Ok(t) = aead(keys).encrypt_inout_detached(&(*nonce).into(), header, InOutBuf::from(body))
    {
        aead_tag.copy_from_slice(&t);
    }
    blob
}

/// A sender's side of its message chain in one group: the next sequence
/// number and the hash of its last message. Advances only when a seal
/// succeeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderChain {
    next_seq: u64,
    prev_hash: MessageHash,
}

impl Default for SenderChain {
    fn default() -> Self {
        Self::new()
    }
}

impl SenderChain {
    /// A chain that has sent nothing yet.
    pub const fn new() -> Self {
        SenderChain {
            next_seq: 0,
            prev_hash: MessageHash::ZERO,
        }
    }

    /// A chain restored from storage.
    pub const fn resume(next_seq: u64, prev_hash: MessageHash) -> Self {
        SenderChain {
            next_seq,
            prev_hash,
        }
    }

    /// The next sequence number.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The hash of the last message sent.
    pub fn prev_hash(&self) -> MessageHash {
        self.prev_hash
    }

    /// The chain's next message, to seal once per server (one message
    /// posted to several servers keeps one hash); then call
    /// [`SenderChain::advance`] with that hash.
    pub fn next_message<'a>(
        &self,
        kind: MessageKind,
        body: &'a [u8],
        timestamp: UnixMicros,
        seen: &'a [SeenEntry],
    ) -> OutgoingMessage<'a> {
        OutgoingMessage {
            kind,
            body,
            seq: self.next_seq,
            timestamp,
            prev_hash: self.prev_hash,
            seen,
        }
    }

    /// Records that the message [`SenderChain::next_message`] described was
    /// sealed with this hash.
    pub fn advance(&mut self, hash: MessageHash) {
        self.next_seq = self.next_seq.saturating_add(1);
        self.prev_hash = hash;
    }

    /// Seals the chain's next message for one server and advances the chain.
    #[allow(clippy::too_many_arguments)]
    pub fn seal_next<R: CryptoRng + ?Sized>(
        &mut self,
        keys: &GroupKeys,
        sender: &Identity,
        server: &OnionAddress,
        kind: MessageKind,
        body: &[u8],
        timestamp: UnixMicros,
        seen: &[SeenEntry],
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<Sealed, SealError> {
        let msg = self.next_message(kind, body, timestamp, seen);
        let sealed = keys.seal(sender, server, &msg, rng, out)?;
        self.advance(sealed.hash);
        Ok(sealed)
    }
}
