//! The peer handshake: Noise `IK` over X25519, ChaCha20-Poly1305 and
//! SHA-256, with ed25519 identities converted to X25519 for the static DH.
//!
//! ```text
//! IK:
//!   <- s                      (the initiator dialed the responder's onion address)
//!   ...
//!   -> version, e, es, s, ss  (message 1, 97 bytes)
//!   <- e, ee, se              (message 2, 48 bytes)
//!   -> first channel frame    (key confirmation for the responder)
//! ```
//!
//! See SPEC.md, section 2, for the byte layout and the security argument.
//! The handshake holds no timers and does no I/O; [`crate::connection`]
//! drives it. Both sides are separate types so that only the legal next
//! step can be called.

pub(crate) mod symmetric;
#[cfg(feature = "fuzzing")]
pub use symmetric::fuzzing as aead_for_fuzzing;

use core::fmt;

use rand_core::CryptoRng;
use x25519_dalek::{PublicKey as XPublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::identity::{Identity, PUBLIC_KEY_LEN, PublicIdentity};
use symmetric::{HASH_LEN, KEY_LEN, SymmetricState, TAG_LEN};

/// The protocol name mixed into the initial handshake hash.
pub const PROTOCOL_NAME: &[u8] = b"Cwtch-rs_IK_Ed25519toX25519_ChaChaPoly_SHA256";
/// The protocol version carried in the first byte of message 1.
pub const VERSION: u8 = 1;
/// The prologue: a label and the version, mixed in before any message.
pub const PROLOGUE_LABEL: &[u8] = b"cwtch-rs peer link";
/// Length of message 1 (initiator to responder).
pub const MSG1_LEN: usize = 1 + 32 + (PUBLIC_KEY_LEN + TAG_LEN) + TAG_LEN;
/// Length of message 2 (responder to initiator).
pub const MSG2_LEN: usize = 32 + TAG_LEN;

/// Why a handshake failed. Deliberately coarse where detail would help an
/// attacker probe (any authentication failure is `Authentication`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer speaks a protocol version we do not.
    UnsupportedVersion {
        /// The version byte it sent.
        version: u8,
    },
    /// A handshake message did not authenticate: the initiator dialed a key
    /// the responder does not hold, or the message was forged, replayed
    /// into another session, or corrupted.
    Authentication,
    /// The peer's identity key is not a usable ed25519 key.
    InvalidPeerKey,
    /// A Diffie-Hellman result was all zeros: the peer sent a point of
    /// small order.
    NonContributory,
    /// A message had the wrong length.
    WrongLength {
        /// The length this step expects.
        expected: usize,
        /// The length it got.
        found: usize,
    },
    /// The output buffer cannot hold the message.
    BufferTooSmall {
        /// The size needed.
        required: usize,
    },
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::UnsupportedVersion { version } => {
                write!(
                    f,
                    "the peer speaks protocol version {version}, we speak {VERSION}"
                )
            }
            HandshakeError::Authentication => f.write_str(
                "the handshake did not authenticate (wrong key, forged or replayed message)",
            ),
            HandshakeError::InvalidPeerKey => f.write_str("the peer's identity key is invalid"),
            HandshakeError::NonContributory => {
                f.write_str("the peer sent a small-order Diffie-Hellman key")
            }
            HandshakeError::WrongLength { expected, found } => {
                write!(f, "handshake message of {found} bytes, expected {expected}")
            }
            HandshakeError::BufferTooSmall { required } => {
                write!(f, "output buffer too small: {required} bytes needed")
            }
        }
    }
}

impl core::error::Error for HandshakeError {}

/// What a finished handshake gives the channel.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SessionKeys {
    pub(crate) send: [u8; KEY_LEN],
    pub(crate) recv: [u8; KEY_LEN],
    /// The final handshake hash: a unique, secret-free name for the session
    /// that both sides share (channel binding).
    pub handshake_hash: [u8; HASH_LEN],
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys").finish_non_exhaustive()
    }
}

/// X25519 of `secret` (whose public key `local` gives, see [`crate::dh`])
/// and `remote`, refusing low-order points.
fn dh(
    secret: &StaticSecret,
    local: impl FnOnce() -> XPublicKey,
    remote: &XPublicKey,
) -> Result<Zeroizing<[u8; 32]>, HandshakeError> {
    crate::dh::shared(secret, local, remote).ok_or(HandshakeError::NonContributory)
}

fn initial_state(responder: &PublicIdentity) -> SymmetricState {
    let mut sym = SymmetricState::new(PROTOCOL_NAME);
    let mut prologue = [0u8; 32];
    let len = PROLOGUE_LABEL.len();
    prologue[..len].copy_from_slice(PROLOGUE_LABEL);
    prologue[len] = VERSION;
    sym.mix_hash(&prologue[..=len]);
    // Pre-message pattern `<- s`: the responder's ed25519 key.
    sym.mix_hash(responder.as_bytes());
    sym
}

/// The initiator's side: it dialed the responder's address, so it knows the
/// responder's key.
pub struct InitiatorHandshake {
    sym: SymmetricState,
    e: StaticSecret,
    s: Identity,
    /// `s` as an X25519 secret, derived once (SHA-512 of the seed) for the
    /// two static DHs (`ss` in message 1, `se` in message 2).
    s_x: StaticSecret,
    rs: PublicIdentity,
    /// `rs` in Montgomery form, converted once (a field inversion).
    rs_x: XPublicKey,
}

impl InitiatorHandshake {
    /// Starts a handshake from `local` to `remote`, drawing the ephemeral key
    /// from `rng`.
    pub fn new<R: CryptoRng + ?Sized>(
        local: Identity,
        remote: PublicIdentity,
        rng: &mut R,
    ) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let e = StaticSecret::from(seed);
        seed.zeroize();
        InitiatorHandshake {
            sym: initial_state(&remote),
            e,
            s_x: local.x25519_secret(),
            s: local,
            rs_x: remote.x25519_public(),
            rs: remote,
        }
    }

    /// The responder this handshake authenticates.
    pub fn remote(&self) -> PublicIdentity {
        self.rs
    }

    /// Writes message 1 into `out` and returns its length ([`MSG1_LEN`]).
    /// Call once; the handshake state moves on.
    pub fn write_message1(&mut self, out: &mut [u8]) -> Result<usize, HandshakeError> {
        let out = out
            .get_mut(..MSG1_LEN)
            .ok_or(HandshakeError::BufferTooSmall { required: MSG1_LEN })?;
        let mut sym = self.sym.clone();
        let (version, rest) = out.split_at_mut(1);
        version.copy_from_slice(&[VERSION]);
        let (e_out, rest) = rest.split_at_mut(32);
        let (s_out, payload) = rest.split_at_mut(PUBLIC_KEY_LEN + TAG_LEN);
        let e_pub = crate::dh::public_key(&self.e);
        e_out.copy_from_slice(e_pub.as_bytes());
        sym.mix_hash(e_pub.as_bytes());
        sym.mix_key(&dh(&self.e, || e_pub, &self.rs_x)?[..]);
        s_out[..PUBLIC_KEY_LEN].copy_from_slice(self.s.public().as_bytes());
        sym.encrypt_and_hash(s_out);
        sym.mix_key(&dh(&self.s_x, || self.s.public().x25519_public(), &self.rs_x)?[..]);
        payload.fill(0);
        sym.encrypt_and_hash(payload);
        self.sym = sym;
        Ok(MSG1_LEN)
    }

    /// Reads message 2 and returns the session keys. On error the
    /// handshake state is unchanged.
    pub fn read_message2(&self, msg: &[u8]) -> Result<SessionKeys, HandshakeError> {
        let msg: &[u8; MSG2_LEN] = msg.try_into().map_err(|_| HandshakeError::WrongLength {
            expected: MSG2_LEN,
            found: msg.len(),
        })?;
        let mut buf = *msg;
        let mut sym = self.sym.clone();
        let (re, payload) = buf.split_at_mut(32);
        let mut re_bytes = [0u8; 32];
        re_bytes.copy_from_slice(re);
        let re = XPublicKey::from(re_bytes);
        sym.mix_hash(re.as_bytes());
        sym.mix_key(&dh(&self.e, || crate::dh::public_key(&self.e), &re)?[..]);
        sym.mix_key(&dh(&self.s_x, || self.s.public().x25519_public(), &re)?[..]);
        sym.decrypt_and_hash(payload)
            .map_err(|_| HandshakeError::Authentication)?;
        let (i2r, r2i) = sym.split();
        Ok(SessionKeys {
            send: i2r,
            recv: r2i,
            handshake_hash: sym.handshake_hash(),
        })
    }
}

/// The responder's side: it learns who is calling from message 1.
pub struct ResponderHandshake {
    sym: SymmetricState,
    e: StaticSecret,
    s: Identity,
    rs: Option<PublicIdentity>,
    /// `rs` in Montgomery form, converted once in message 1 and used again
    /// for `se` in message 2.
    rs_x: Option<XPublicKey>,
    re: Option<XPublicKey>,
}

impl ResponderHandshake {
    /// Prepares to answer a handshake as `local`, drawing the ephemeral key
    /// from `rng`.
    pub fn new<R: CryptoRng + ?Sized>(local: Identity, rng: &mut R) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let e = StaticSecret::from(seed);
        seed.zeroize();
        ResponderHandshake {
            sym: initial_state(&local.public()),
            e,
            s: local,
            rs: None,
            rs_x: None,
            re: None,
        }
    }

    /// Reads message 1 and returns the authenticated identity of the
    /// initiator. On error the handshake state is unchanged.
    pub fn read_message1(&mut self, msg: &[u8]) -> Result<PublicIdentity, HandshakeError> {
        let msg: &[u8; MSG1_LEN] = msg.try_into().map_err(|_| HandshakeError::WrongLength {
            expected: MSG1_LEN,
            found: msg.len(),
        })?;
        let mut buf = *msg;
        let (version, rest) = buf.split_at_mut(1);
        if version != [VERSION] {
            return Err(HandshakeError::UnsupportedVersion {
                version: version.first().copied().unwrap_or(0),
            });
        }
        let mut sym = self.sym.clone();
        let (re, rest) = rest.split_at_mut(32);
        let (s_in, payload) = rest.split_at_mut(PUBLIC_KEY_LEN + TAG_LEN);
        let mut re_bytes = [0u8; 32];
        re_bytes.copy_from_slice(re);
        let re = XPublicKey::from(re_bytes);
        sym.mix_hash(re.as_bytes());
        let local_x = self.s.x25519_secret();
        sym.mix_key(&dh(&local_x, || self.s.public().x25519_public(), &re)?[..]);
        sym.decrypt_and_hash(s_in)
            .map_err(|_| HandshakeError::Authentication)?;
        let mut rs_bytes = [0u8; PUBLIC_KEY_LEN];
        rs_bytes.copy_from_slice(&s_in[..PUBLIC_KEY_LEN]);
        let rs =
            PublicIdentity::from_bytes(&rs_bytes).map_err(|_| HandshakeError::InvalidPeerKey)?;
        let rs_x = rs.x25519_public();
        sym.mix_key(&dh(&local_x, || self.s.public().x25519_public(), &rs_x)?[..]);
        sym.decrypt_and_hash(payload)
            .map_err(|_| HandshakeError::Authentication)?;
        self.sym = sym;
        self.rs = Some(rs);
        self.rs_x = Some(rs_x);
        self.re = Some(re);
        Ok(rs)
    }

    /// The initiator, once message 1 was read.
    pub fn remote(&self) -> Option<PublicIdentity> {
        self.rs
    }

    /// Writes message 2 into `out` and returns its length ([`MSG2_LEN`])
    /// and the session keys. Fails with [`HandshakeError::Authentication`]
    /// if message 1 was not read yet.
    pub fn write_message2(&self, out: &mut [u8]) -> Result<(usize, SessionKeys), HandshakeError> {
        let (Some(rs_x), Some(re)) = (self.rs_x, self.re) else {
            return Err(HandshakeError::Authentication);
        };
        let out = out
            .get_mut(..MSG2_LEN)
            .ok_or(HandshakeError::BufferTooSmall { required: MSG2_LEN })?;
        let mut sym = self.sym.clone();
        let (e_out, payload) = out.split_at_mut(32);
        let e_pub = crate::dh::public_key(&self.e);
        e_out.copy_from_slice(e_pub.as_bytes());
        sym.mix_hash(e_pub.as_bytes());
        sym.mix_key(&dh(&self.e, || e_pub, &re)?[..]);
        sym.mix_key(&dh(&self.e, || e_pub, &rs_x)?[..]);
        payload.fill(0);
        sym.encrypt_and_hash(payload);
        let (i2r, r2i) = sym.split();
        Ok((
            MSG2_LEN,
            SessionKeys {
                send: r2i,
                recv: i2r,
                handshake_hash: sym.handshake_hash(),
            },
        ))
    }
}
