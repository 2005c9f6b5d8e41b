//! Identities: an ed25519 key whose public half is a Tor v3 onion address.
//!
//! The 32-byte seed is the only secret; everything else (the signing key,
//! the x25519 key for the handshake, the expanded key Tor wants) is derived
//! from it. Secrets are zeroized on drop and never printed by `Debug`.

use core::cmp::Ordering;
use core::fmt;
use core::hash::{Hash, Hasher};

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use sha2::{Digest, Sha512};
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of an identity seed.
pub const SEED_LEN: usize = 32;
/// Length of an ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// A secret identity: the ed25519 seed of a profile, a server, or a
/// throw-away anonymous client.
#[derive(Clone, ZeroizeOnDrop)]
pub struct Identity {
    signing: SigningKey,
}

/// A public identity: a validated ed25519 public key (not of small order).
#[derive(Clone, Copy)]
pub struct PublicIdentity {
    bytes: [u8; PUBLIC_KEY_LEN],
    // Unread when the `fuzzing` stand-ins replace verification.
    #[cfg_attr(feature = "fuzzing", allow(dead_code))]
    key: VerifyingKey,
}

/// The public key bytes do not name a usable identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Not the encoding of a point on the curve.
    NotAPoint,
    /// A point of small order: no one holds a secret for it.
    WeakKey,
    /// A point with a small-order (torsion) component: the holder of the
    /// key `A` could also authenticate as `A + T`, one key under up to
    /// eight addresses (a way around a block). Only torsion-free keys are
    /// identities: one key, one address.
    Torsion,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::NotAPoint => f.write_str("the public key is not a valid ed25519 point"),
            KeyError::WeakKey => f.write_str("the public key is of small order"),
            KeyError::Torsion => f.write_str("the public key has a small-order component"),
        }
    }
}

impl core::error::Error for KeyError {}

/// A signature check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadSignature;

impl fmt::Display for BadSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("signature verification failed")
    }
}

impl core::error::Error for BadSignature {}

/// The 64-byte expanded ed25519 secret key in the form Tor's
/// `ADD_ONION ED25519-V3:<base64>` expects: the clamped scalar followed by the
/// hash prefix, i.e. `SHA-512(seed)` with its first half clamped.
pub struct ExpandedSecretKey(Zeroizing<[u8; 64]>);

impl ExpandedSecretKey {
    /// The 64 bytes, to be base64-encoded into an `ADD_ONION` command.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for ExpandedSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExpandedSecretKey(..)")
    }
}

impl Identity {
    /// The identity of a 32-byte seed.
    pub fn from_seed(seed: &[u8; SEED_LEN]) -> Self {
        Identity {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// A fresh identity from a cryptographically secure RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        rng.fill_bytes(seed.as_mut());
        Identity::from_seed(&seed)
    }

    /// The secret seed, for the caller's encrypted storage. Handle with care.
    pub fn seed(&self) -> Zeroizing<[u8; SEED_LEN]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> PublicIdentity {
        let key = self.signing.verifying_key();
        PublicIdentity {
            bytes: key.to_bytes(),
            key,
        }
    }

    /// Signs `message` (deterministic ed25519).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        #[cfg(feature = "fuzzing")]
        {
            crate::dh::fuzz::signature(self.public().as_bytes(), message)
        }
        #[cfg(not(feature = "fuzzing"))]
        {
            ed25519_dalek::Signer::sign(&self.signing, message).to_bytes()
        }
    }

    /// The expanded secret key Tor needs to publish our onion service.
    pub fn tor_expanded_key(&self) -> ExpandedSecretKey {
        let mut seed = self.seed();
        let mut digest = Sha512::digest(seed.as_ref());
        seed.zeroize();
        let mut out = Zeroizing::new([0u8; 64]);
        out.copy_from_slice(&digest);
        digest.as_mut_slice().zeroize();
        out[0] &= 248;
        out[31] &= 127;
        out[31] |= 64;
        ExpandedSecretKey(out)
    }

    /// The x25519 secret for the static Diffie-Hellman of the handshake:
    /// the ed25519 secret scalar, which x25519 clamps as ed25519 does.
    pub(crate) fn x25519_secret(&self) -> StaticSecret {
        StaticSecret::from(self.signing.to_scalar_bytes())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

impl PublicIdentity {
    /// Validates 32 bytes as an ed25519 public key usable as an identity.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::NotAPoint)?;
        if key.is_weak() {
            return Err(KeyError::WeakKey);
        }
        if !key.to_edwards().is_torsion_free() {
            return Err(KeyError::Torsion);
        }
        Ok(PublicIdentity { bytes: *bytes, key })
    }

    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.bytes
    }

    /// Verifies an ed25519 signature (strict verification: rejects
    /// non-canonical signatures and small-order components).
    pub fn verify(
        &self,
        message: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), BadSignature> {
        #[cfg(feature = "fuzzing")]
        {
            use subtle::ConstantTimeEq;
            let expected = crate::dh::fuzz::signature(&self.bytes, message);
            if bool::from(expected.ct_eq(signature)) {
                Ok(())
            } else {
                Err(BadSignature)
            }
        }
        #[cfg(not(feature = "fuzzing"))]
        {
            let sig = ed25519_dalek::Signature::from_bytes(signature);
            self.key
                .verify_strict(message, &sig)
                .map_err(|_| BadSignature)
        }
    }

    /// The x25519 public key (Montgomery form) for the handshake's DH.
    pub(crate) fn x25519_public(&self) -> x25519_dalek::PublicKey {
        #[cfg(feature = "fuzzing")]
        {
            crate::dh::fuzz::montgomery(&self.bytes)
        }
        #[cfg(not(feature = "fuzzing"))]
        {
            x25519_dalek::PublicKey::from(self.key.to_montgomery().to_bytes())
        }
    }
}

impl PartialEq for PublicIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for PublicIdentity {}
impl PartialOrd for PublicIdentity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PublicIdentity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.bytes.cmp(&other.bytes)
    }
}
impl Hash for PublicIdentity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicIdentity({})", self.address())
    }
}

impl fmt::Display for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.address(), f)
    }
}
