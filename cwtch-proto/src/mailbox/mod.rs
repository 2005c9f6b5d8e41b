//! Mailboxes: offline first contact.
//!
//! A person who wants strangers to reach them while they are offline keeps a
//! *mailbox*: a server (any Cwtch server) and a random 32-byte mailbox key
//! `K`. Both go into their *extended identifier* ([`Identifier`]), which
//! they share like an address. Whoever holds the identifier can leave a
//! sealed first-contact request ([`seal_request`]) on that server; the owner
//! finds it with the same cheap detection tag as group messages and opens it
//! with their identity key ([`MailboxKeys::open_request`]).
//!
//! `K` only lets one *detect* and *post*: the request's content is sealed to
//! the owner's static X25519 key (their ed25519 identity converted as the
//! handshake does) with an ephemeral key, so other holders of the identifier
//! can tell that a blob is a request to its owner but cannot read it or learn
//! who sent it, and the server learns nothing: a request is a
//! [`SEALED_BLOB_LEN`](crate::group::SEALED_BLOB_LEN)-byte blob like any
//! group message.
//!
//! Specified in SPEC.md, section "Offline first contact".
//!
//! ```
//! use chacha20::ChaCha20Rng;
//! use chacha20::rand_core::SeedableRng;
//! use cwtch_proto::group::SEALED_BLOB_LEN;
//! use cwtch_proto::mailbox::{FirstContact, Identifier, Mailbox, MailboxKey, seal_request};
//! use cwtch_proto::{Identity, UnixMicros};
//!
//! let mut rng = ChaCha20Rng::from_seed([1; 32]);
//! let (alice, bob) = (Identity::generate(&mut rng), Identity::generate(&mut rng));
//! let server = Identity::generate(&mut rng).address();
//!
//! // Bob makes a mailbox and shares his extended identifier.
//! let mailbox = Mailbox { server, key: MailboxKey::generate(&mut rng) };
//! let mut text = [0u8; cwtch_proto::mailbox::IDENTIFIER_TEXT_MAX_LEN];
//! let text = Identifier::new(bob.address(), Some(mailbox.clone())).to_text(&mut text);
//!
//! // Alice, with only that text, seals a request for the server.
//! let id = Identifier::parse(text)?;
//! let their_box = id.mailbox().expect("an extended identifier");
//! let first = FirstContact { name: "alice", id: 7, timestamp: UnixMicros::from_secs(1_764_000_000),
//!     text: "hi bob, it's alice" };
//! let mut blob = [0u8; SEALED_BLOB_LEN];
//! seal_request(&alice, &id.owner().public_identity(), their_box, &first, &mut rng, &mut blob)?;
//!
//! // Bob, later, sifts the server's blobs and opens his.
//! let keys = mailbox.key.derive_keys();
//! assert!(keys.detect(&blob));
//! let req = keys.open_request(&bob, &mailbox.server, &mut blob)?;
//! assert_eq!((req.sender, req.name, req.id, req.text), (alice.public(), "alice", 7, "hi bob, it's alice"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod identifier;
pub mod request;

pub use identifier::{IDENTIFIER_TEXT_MAX_LEN, Identifier, IdentifierError};
pub use request::{
    FirstContact, MAX_NAME_LEN, MAX_TEXT_LEN, OpenedRequest, RequestOpenError, RequestSealError,
    seal_request,
};

use core::fmt;

use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::group::DetectionKey;
use crate::onion::OnionAddress;

/// Length of a mailbox key.
pub const MAILBOX_KEY_LEN: usize = 32;
/// HKDF salt of the mailbox key schedule.
pub const KDF_SALT: &[u8] = b"cwtch-rs mailbox key schedule v1";
/// HKDF `info` of the detection-tag key.
pub const LABEL_DETECT: &[u8] = b"cwtch mailbox detection key v1";
/// HKDF `info` of the key that masks the ephemeral public key.
pub const LABEL_MASK: &[u8] = b"cwtch mailbox mask key v1";

/// The random key of a mailbox: whoever holds it can detect requests to
/// the mailbox's owner and post them, not read them.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MailboxKey([u8; MAILBOX_KEY_LEN]);

impl MailboxKey {
    /// A fresh random key.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; MAILBOX_KEY_LEN];
        rng.fill_bytes(&mut bytes);
        MailboxKey(bytes)
    }

    /// The key of these bytes (from an identifier or storage).
    pub fn from_bytes(bytes: &[u8; MAILBOX_KEY_LEN]) -> Self {
        MailboxKey(*bytes)
    }

    /// The key bytes, for the caller's encrypted storage.
    pub fn to_bytes(&self) -> Zeroizing<[u8; MAILBOX_KEY_LEN]> {
        Zeroizing::new(self.0)
    }

    /// Derives the detection and mask keys.
    pub fn derive_keys(&self) -> MailboxKeys {
        let hk = Hkdf::<Sha256>::new(Some(KDF_SALT), &self.0);
        let mut detect = Zeroizing::new([0u8; 32]);
        let mut mask = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's output limit: cannot fail.
        let _ = hk.expand(LABEL_DETECT, detect.as_mut());
        let _ = hk.expand(LABEL_MASK, &mut mask);
        MailboxKeys {
            detect: DetectionKey::from_bytes(&detect),
            mask: MaskKey(mask),
        }
    }
}

impl PartialEq for MailboxKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for MailboxKey {}

impl fmt::Debug for MailboxKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MailboxKey(..)")
    }
}

/// The key masking a request's ephemeral public key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct MaskKey(pub(crate) [u8; 32]);

/// The keys derived from a [`MailboxKey`].
#[derive(Clone)]
pub struct MailboxKeys {
    detect: DetectionKey,
    mask: MaskKey,
}

impl MailboxKeys {
    /// The detection key, to put into a multi-key
    /// [`Detector`](crate::group::Detector) next to group keys.
    pub fn detection_key(&self) -> &DetectionKey {
        &self.detect
    }

    /// Whether `blob` carries this mailbox's detection tag (cheap).
    pub fn detect(&self, blob: &[u8]) -> bool {
        self.detect.detect(blob)
    }
}

impl fmt::Debug for MailboxKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MailboxKeys(..)")
    }
}

/// A mailbox: the server it lives on and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    /// The server requests are posted to.
    pub server: OnionAddress,
    /// The mailbox key.
    pub key: MailboxKey,
}

/// How long a mailbox replaced by rotation is still read, so that requests
/// sent to the old identifier are found: 30 days (unless revoked).
pub const RETIRED_READ_FOR: crate::Duration = crate::Duration::from_secs(30 * 24 * 3600);
/// The most retired mailboxes read at once (the newest).
pub const MAX_RETIRED: usize = 4;
