//! Sealed first-contact requests.
//!
//! ```text
//! blob (2048) = N (24, random) || T (16, detection tag) || E' (32, masked ephemeral key)
//!             || C (1960, XChaCha20-Poly1305 ciphertext) || A (16, Poly1305 tag)
//! T   = HChaCha20(K_detect, N[0..16])[0..16]           (as group blobs, section 6)
//! E'  = E xor HChaCha20(K_mask, N[0..16])               (uniform to whoever lacks K)
//! k   = HKDF-SHA256(salt "cwtch-rs mailbox request v1", ikm X25519(e, B),
//!                   info "cwtch mailbox request key v1" || E || B)
//! C,A = XChaCha20-Poly1305(k, nonce N, aad N || T || E', plaintext)
//! ```
//!
//! `B` is the recipient's X25519 key, converted from their ed25519 identity
//! as the handshake does; `e` is fresh for every request. The plaintext
//! holds the sender's identity, name, first message and an Ed25519
//! signature over [`LABEL_SIGNATURE`], the recipient's key, the server's key
//! and the content (SPEC.md, section "Offline first contact").

use core::fmt;

use chacha20::R20;
use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, KeyInit, XChaCha20Poly1305};
use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::Sha256;
use x25519_dalek::{PublicKey as XPublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::group::SEALED_BLOB_LEN;
use crate::group::detect::{NONCE_LEN, TAG_LEN};
use crate::identity::{Identity, PUBLIC_KEY_LEN, PublicIdentity, SIGNATURE_LEN};
use crate::onion::OnionAddress;
use crate::time::{ClaimedTime, UnixMicros};

use super::{Mailbox, MailboxKeys, MaskKey};

/// Length of the masked ephemeral key.
pub const EPHEMERAL_LEN: usize = 32;
/// Length of the clear header: nonce, tag, masked ephemeral key.
pub const HEADER_LEN: usize = NONCE_LEN + TAG_LEN + EPHEMERAL_LEN;
/// Length of the Poly1305 tag.
pub const AEAD_TAG_LEN: usize = 16;
/// Length of the plaintext.
pub const PLAINTEXT_LEN: usize = SEALED_BLOB_LEN - HEADER_LEN - AEAD_TAG_LEN;
/// The plaintext layout version.
pub const REQUEST_VERSION: u8 = 1;
/// The longest display name, in UTF-8 bytes.
pub const MAX_NAME_LEN: usize = 64;

const OFF_SENDER: usize = 1;
const OFF_ID: usize = OFF_SENDER + PUBLIC_KEY_LEN;
const OFF_TIME: usize = OFF_ID + 8;
const OFF_NAME_LEN: usize = OFF_TIME + 8;
const OFF_NAME: usize = OFF_NAME_LEN + 1;
const OFF_TEXT_LEN: usize = OFF_NAME + MAX_NAME_LEN;
const OFF_TEXT: usize = OFF_TEXT_LEN + 2;
/// Offset of the signature in the plaintext (the signed content ends here).
pub const OFF_SIGNATURE: usize = PLAINTEXT_LEN - SIGNATURE_LEN;
/// The longest first message, in UTF-8 bytes (1780).
pub const MAX_TEXT_LEN: usize = OFF_SIGNATURE - OFF_TEXT;

/// HKDF salt of the request key.
pub const KDF_SALT: &[u8] = b"cwtch-rs mailbox request v1";
/// HKDF `info` prefix of the request key.
pub const LABEL_KEY: &[u8] = b"cwtch mailbox request key v1";
/// Domain label of the sender's signature.
pub const LABEL_SIGNATURE: &[u8] = b"cwtch mailbox request signature v1";

const SIGNED_LEN: usize = LABEL_SIGNATURE.len() + 2 * PUBLIC_KEY_LEN + OFF_SIGNATURE;

/// What a first-contact request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstContact<'a> {
    /// The sender's display name (at most [`MAX_NAME_LEN`] bytes).
    pub name: &'a str,
    /// The first message's id: the same id as its direct delivery, so the
    /// recipient stores it once.
    pub id: u64,
    /// The sender's clock (ours, when we seal).
    pub timestamp: UnixMicros,
    /// The first message (at most [`MAX_TEXT_LEN`] bytes).
    pub text: &'a str,
}

/// An opened request; strings borrow from the caller's blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenedRequest<'b> {
    /// Who sent it (authenticated by the signature).
    pub sender: PublicIdentity,
    /// The sender's display name.
    pub name: &'b str,
    /// The first message's id.
    pub id: u64,
    /// The sender's clock (a claim).
    pub timestamp: ClaimedTime,
    /// The first message.
    pub text: &'b str,
}

/// Why a request could not be sealed. Nothing useful is written on error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestSealError {
    /// The output buffer is shorter than [`SEALED_BLOB_LEN`].
    BufferTooSmall,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    NameTooLong,
    /// The text is longer than [`MAX_TEXT_LEN`] bytes.
    TextTooLong,
    /// The recipient's key gives no shared secret (a small-order point).
    BadRecipient,
}

impl fmt::Display for RequestSealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestSealError::BufferTooSmall => {
                write!(f, "a request needs a {SEALED_BLOB_LEN}-byte buffer")
            }
            RequestSealError::NameTooLong => write!(f, "name longer than {MAX_NAME_LEN} bytes"),
            RequestSealError::TextTooLong => write!(
                f,
                "a first message through a mailbox holds at most {MAX_TEXT_LEN} bytes"
            ),
            RequestSealError::BadRecipient => f.write_str("the recipient's key is unusable"),
        }
    }
}

impl core::error::Error for RequestSealError {}

/// Why a blob did not open as a request to us. `WrongLength` and
/// `NotForUs` are what every other blob of the server gives; the rest mean
/// a holder of our mailbox key sent something bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestOpenError {
    /// The blob is not [`SEALED_BLOB_LEN`] bytes long.
    WrongLength {
        /// The length found.
        found: usize,
    },
    /// The detection tag is not this mailbox's.
    NotForUs,
    /// The tag matches but the AEAD fails: modified, or sealed to someone
    /// else.
    Tampered,
    /// The plaintext is not a well-formed request.
    Malformed,
    /// The signature does not verify for us and this server: forged, or
    /// replayed onto another server or to another recipient.
    BadSignature,
}

impl fmt::Display for RequestOpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestOpenError::WrongLength { found } => {
                write!(f, "a request has {SEALED_BLOB_LEN} bytes, not {found}")
            }
            RequestOpenError::NotForUs => f.write_str("blob is not for this mailbox"),
            RequestOpenError::Tampered => f.write_str("request failed authentication"),
            RequestOpenError::Malformed => f.write_str("malformed request"),
            RequestOpenError::BadSignature => {
                f.write_str("bad request signature (or another recipient or server)")
            }
        }
    }
}

impl core::error::Error for RequestOpenError {}

fn mask(key: &MaskKey, nonce: &[u8; NONCE_LEN], ephemeral: &mut [u8]) {
    let mut input = [0u8; 16];
    input.copy_from_slice(&nonce[..16]);
    let mut stream = chacha20::hchacha::<R20>(&key.0.into(), &input.into());
    for (e, m) in ephemeral.iter_mut().zip(stream.iter()) {
        *e ^= m;
    }
    stream.as_mut_slice().zeroize();
}

fn request_key(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> XChaCha20Poly1305 {
    let hk = Hkdf::<Sha256>::new(Some(KDF_SALT), shared);
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's output limit: cannot fail.
    let _ = hk.expand_multi_info(&[LABEL_KEY, ephemeral, recipient], key.as_mut());
    XChaCha20Poly1305::new(&(*key).into())
}

fn signed_bytes(
    recipient: &PublicIdentity,
    server: &OnionAddress,
    content: &[u8],
) -> Zeroizing<[u8; SIGNED_LEN]> {
    let mut out = Zeroizing::new([0u8; SIGNED_LEN]);
    let mut at = 0;
    for part in [
        LABEL_SIGNATURE,
        recipient.as_bytes(),
        server.public_identity().as_bytes(),
        content,
    ] {
        if let Some(dst) = out.get_mut(at..at + part.len()) {
            dst.copy_from_slice(part);
        }
        at += part.len();
    }
    out
}

/// Seals a first-contact request from `sender` to `recipient`, for posting
/// to `mailbox.server`, into the first [`SEALED_BLOB_LEN`] bytes of `out`.
pub fn seal_request<R: CryptoRng + ?Sized>(
    sender: &Identity,
    recipient: &PublicIdentity,
    mailbox: &Mailbox,
    msg: &FirstContact<'_>,
    rng: &mut R,
    out: &mut [u8],
) -> Result<usize, RequestSealError> {
    if msg.name.len() > MAX_NAME_LEN {
        return Err(RequestSealError::NameTooLong);
    }
    if msg.text.len() > MAX_TEXT_LEN {
        return Err(RequestSealError::TextTooLong);
    }
    let blob: &mut [u8; SEALED_BLOB_LEN] = out
        .get_mut(..SEALED_BLOB_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or(RequestSealError::BufferTooSmall)?;
    let keys = mailbox.key.derive_keys();
    let (header, rest) = blob.split_at_mut(HEADER_LEN);
    let (body, aead_tag) = rest.split_at_mut(PLAINTEXT_LEN);
    body.fill(0);
    // Content.
    let pt = body;
    pt[0] = REQUEST_VERSION;
    pt[OFF_SENDER..OFF_ID].copy_from_slice(sender.public().as_bytes());
    pt[OFF_ID..OFF_TIME].copy_from_slice(&msg.id.to_le_bytes());
    pt[OFF_TIME..OFF_NAME_LEN].copy_from_slice(&msg.timestamp.as_micros().to_le_bytes());
    pt[OFF_NAME_LEN] = msg.name.len() as u8; // <= 64, checked above
    pt[OFF_NAME..OFF_NAME + msg.name.len()].copy_from_slice(msg.name.as_bytes());
    pt[OFF_TEXT_LEN..OFF_TEXT].copy_from_slice(&(msg.text.len() as u16).to_le_bytes());
    pt[OFF_TEXT..OFF_TEXT + msg.text.len()].copy_from_slice(msg.text.as_bytes());
    let signature =
        sender.sign(signed_bytes(recipient, &mailbox.server, &pt[..OFF_SIGNATURE]).as_ref());
    pt[OFF_SIGNATURE..].copy_from_slice(&signature);
    // Envelope.
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let mut seed = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(seed.as_mut());
    let e = StaticSecret::from(*seed);
    let e_pub = crate::dh::public_key(&e);
    let b = recipient.x25519_public();
    let Some(shared) = crate::dh::shared(&e, || e_pub, &b) else {
        blob.zeroize();
        return Err(RequestSealError::BadRecipient);
    };
    let aead = request_key(&shared, e_pub.as_bytes(), b.as_bytes());
    header[..NONCE_LEN].copy_from_slice(&nonce);
    header[NONCE_LEN..NONCE_LEN + TAG_LEN].copy_from_slice(&keys.detect.tag(&nonce));
    header[NONCE_LEN + TAG_LEN..].copy_from_slice(e_pub.as_bytes());
    mask(&keys.mask, &nonce, &mut header[NONCE_LEN + TAG_LEN..]);
    match aead.encrypt_inout_detached(&nonce.into(), header, InOutBuf::from(&mut pt[..])) {
        Ok(t) => aead_tag.copy_from_slice(&t),
        Err(_) => {
            blob.zeroize();
            return Err(RequestSealError::BufferTooSmall);
        }
    }
    Ok(SEALED_BLOB_LEN)
}

impl MailboxKeys {
    /// Opens a request fetched from `server` with our identity `me`,
    /// decrypting in place. On failure after decryption the plaintext is
    /// wiped from `blob`.
    pub fn open_request<'b>(
        &self,
        me: &Identity,
        server: &OnionAddress,
        blob: &'b mut [u8],
    ) -> Result<OpenedRequest<'b>, RequestOpenError> {
        let found = blob.len();
        let blob: &'b mut [u8; SEALED_BLOB_LEN] = blob
            .try_into()
            .map_err(|_| RequestOpenError::WrongLength { found })?;
        if !self.detect.detect(blob) {
            return Err(RequestOpenError::NotForUs);
        }
        let (header, rest) = blob.split_at_mut(HEADER_LEN);
        let (body, aead_tag) = rest.split_at_mut(PLAINTEXT_LEN);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&header[..NONCE_LEN]);
        let mut e_bytes = [0u8; EPHEMERAL_LEN];
        e_bytes.copy_from_slice(&header[NONCE_LEN + TAG_LEN..]);
        mask(&self.mask, &nonce, &mut e_bytes);
        let e_pub = XPublicKey::from(e_bytes);
        let b = me.public().x25519_public();
        let shared = crate::dh::shared(&me.x25519_secret(), || b, &e_pub)
            .ok_or(RequestOpenError::Tampered)?;
        let aead = request_key(&shared, e_pub.as_bytes(), b.as_bytes());
        let mut tag = [0u8; AEAD_TAG_LEN];
        tag.copy_from_slice(aead_tag);
        aead.decrypt_inout_detached(
            &nonce.into(),
            header,
            InOutBuf::from(&mut body[..]),
            &tag.into(),
        )
        .map_err(|_| RequestOpenError::Tampered)?;
        let pt: &'b mut [u8; PLAINTEXT_LEN] = body
            .try_into()
            .map_err(|_| RequestOpenError::WrongLength { found })?;
        match verify(me, server, pt) {
            Ok(parsed) => {
                let pt: &'b [u8; PLAINTEXT_LEN] = pt;
                let name = pt.get(OFF_NAME..OFF_NAME + parsed.name_len).unwrap_or(&[]);
                let text = pt.get(OFF_TEXT..OFF_TEXT + parsed.text_len).unwrap_or(&[]);
                Ok(OpenedRequest {
                    sender: parsed.sender,
                    name: core::str::from_utf8(name).unwrap_or(""),
                    id: parsed.id,
                    timestamp: parsed.timestamp,
                    text: core::str::from_utf8(text).unwrap_or(""),
                })
            }
            Err(e) => {
                pt.zeroize();
                Err(e)
            }
        }
    }
}

struct Parsed {
    sender: PublicIdentity,
    id: u64,
    timestamp: ClaimedTime,
    name_len: usize,
    text_len: usize,
}

fn le_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

fn verify(
    me: &Identity,
    server: &OnionAddress,
    pt: &[u8; PLAINTEXT_LEN],
) -> Result<Parsed, RequestOpenError> {
    let bad = RequestOpenError::Malformed;
    if pt.first() != Some(&REQUEST_VERSION) {
        return Err(bad);
    }
    let sender_bytes: [u8; PUBLIC_KEY_LEN] = pt
        .get(OFF_SENDER..OFF_ID)
        .and_then(|s| s.try_into().ok())
        .ok_or(bad)?;
    let sender = PublicIdentity::from_bytes(&sender_bytes).map_err(|_| bad)?;
    let id = pt.get(OFF_ID..OFF_TIME).and_then(le_u64).ok_or(bad)?;
    let timestamp = pt.get(OFF_TIME..OFF_NAME_LEN).and_then(le_u64).ok_or(bad)?;
    let name_len = usize::from(*pt.get(OFF_NAME_LEN).ok_or(bad)?);
    if name_len > MAX_NAME_LEN {
        return Err(bad);
    }
    let name_area = pt.get(OFF_NAME..OFF_TEXT_LEN).ok_or(bad)?;
    let (name, name_pad) = name_area.split_at_checked(name_len).ok_or(bad)?;
    let text_len = pt
        .get(OFF_TEXT_LEN..OFF_TEXT)
        .and_then(|b| Some(usize::from(u16::from_le_bytes(b.try_into().ok()?))))
        .ok_or(bad)?;
    if text_len > MAX_TEXT_LEN {
        return Err(bad);
    }
    let text_area = pt.get(OFF_TEXT..OFF_SIGNATURE).ok_or(bad)?;
    let (text, text_pad) = text_area.split_at_checked(text_len).ok_or(bad)?;
    if name_pad.iter().chain(text_pad).any(|&b| b != 0)
        || core::str::from_utf8(name).is_err()
        || core::str::from_utf8(text).is_err()
    {
        return Err(bad);
    }
    let signature: [u8; SIGNATURE_LEN] = pt
        .get(OFF_SIGNATURE..)
        .and_then(|s| s.try_into().ok())
        .ok_or(bad)?;
    let content = pt.get(..OFF_SIGNATURE).ok_or(bad)?;
    sender
        .verify(
            signed_bytes(&me.public(), server, content).as_ref(),
            &signature,
        )
        .map_err(|_| RequestOpenError::BadSignature)?;
    Ok(Parsed {
        sender,
        id,
        timestamp: ClaimedTime::from_micros(timestamp),
        name_len,
        text_len,
    })
}

/// Fuzzing hook: seals an arbitrary plaintext to `recipient` under
/// `mailbox` (no layout checks, no signature), so a fuzzer reaches the
/// parser and signature check of [`MailboxKeys::open_request`]. Only with
/// the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
pub fn seal_raw_for_fuzzing(
    recipient: &PublicIdentity,
    mailbox: &Mailbox,
    plaintext: &[u8; PLAINTEXT_LEN],
    nonce: &[u8; NONCE_LEN],
    ephemeral_seed: [u8; 32],
) -> [u8; SEALED_BLOB_LEN] {
    let mut blob = [0u8; SEALED_BLOB_LEN];
    let keys = mailbox.key.derive_keys();
    let (header, rest) = blob.split_at_mut(HEADER_LEN);
    let (body, aead_tag) = rest.split_at_mut(PLAINTEXT_LEN);
    body.copy_from_slice(plaintext);
    let e = StaticSecret::from(ephemeral_seed);
    let e_pub = crate::dh::public_key(&e);
    let b = recipient.x25519_public();
    let shared = crate::dh::shared(&e, || e_pub, &b).unwrap_or_default();
    let aead = request_key(&shared, e_pub.as_bytes(), b.as_bytes());
    header[..NONCE_LEN].copy_from_slice(nonce);
    header[NONCE_LEN..NONCE_LEN + TAG_LEN].copy_from_slice(&keys.detect.tag(nonce));
    header[NONCE_LEN + TAG_LEN..].copy_from_slice(e_pub.as_bytes());
    mask(&keys.mask, nonce, &mut header[NONCE_LEN + TAG_LEN..]);
    if let Ok(t) =
        aead.encrypt_inout_detached(&(*nonce).into(), header, InOutBuf::from(&mut body[..]))
    {
        aead_tag.copy_from_slice(&t);
    }
    blob
}
