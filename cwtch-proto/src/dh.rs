//! X25519 for the handshake and first-contact requests, with the one place
//! where the `fuzzing` feature swaps the public-key cryptography out.
//!
//! A Montgomery ladder costs about 0.6 M instructions and a handshake runs
//! eight, so a fuzzer that drives two connections gets a few hundred inputs
//! per second: far too few to reach deep states. With the `fuzzing` feature
//! (and only under `cargo fuzz`, which sets `cfg(fuzzing)`; see `lib.rs`),
//! public keys and shared secrets become hashes. Both sides still agree on
//! every secret and a wrong key still fails, so every state is reachable
//! exactly as with real keys, at a fraction of the cost. Ed25519
//! signatures get the same treatment in [`crate::identity`].

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// The public key of an X25519 secret.
pub(crate) fn public_key(secret: &StaticSecret) -> PublicKey {
    #[cfg(feature = "fuzzing")]
    {
        fuzz::public_key(secret)
    }
    #[cfg(not(feature = "fuzzing"))]
    {
        PublicKey::from(secret)
    }
}

/// The shared secret of `secret` and `remote`, or `None` when `remote` is
/// a low-order point (the result would not depend on our secret). `local`
/// gives the public key of `secret`; only the fuzzing stand-in calls it.
pub(crate) fn shared(
    secret: &StaticSecret,
    local: impl FnOnce() -> PublicKey,
    remote: &PublicKey,
) -> Option<Zeroizing<[u8; 32]>> {
    #[cfg(feature = "fuzzing")]
    {
        let _ = secret;
        fuzz::shared(&local(), remote)
    }
    #[cfg(not(feature = "fuzzing"))]
    {
        let _ = local;
        let shared = secret.diffie_hellman(remote);
        shared
            .was_contributory()
            .then(|| Zeroizing::new(*shared.as_bytes()))
    }
}

#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz {
    //! Stand-ins for the fuzzer: fast, deterministic, and consistent (both
    //! sides of an exchange agree), with no security at all.
    use sha2::{Digest, Sha256, Sha512};
    use x25519_dalek::{PublicKey, StaticSecret};
    use zeroize::Zeroizing;

    pub(crate) fn public_key(secret: &StaticSecret) -> PublicKey {
        let digest = Sha256::new()
            .chain_update(b"cwtch fuzzing public key")
            .chain_update(secret.as_bytes())
            .finalize();
        PublicKey::from(<[u8; 32]>::from(digest))
    }

    /// The stand-in for an identity key's Montgomery form (only ever used
    /// as input to [`shared`], on both sides).
    pub(crate) fn montgomery(ed25519: &[u8; 32]) -> PublicKey {
        let digest = Sha256::new()
            .chain_update(b"cwtch fuzzing montgomery")
            .chain_update(ed25519)
            .finalize();
        PublicKey::from(<[u8; 32]>::from(digest))
    }

    pub(crate) fn shared(local: &PublicKey, remote: &PublicKey) -> Option<Zeroizing<[u8; 32]>> {
        if remote.as_bytes() == &[0u8; 32] {
            return None;
        }
        let (a, b) = if local.as_bytes() <= remote.as_bytes() {
            (local, remote)
        } else {
            (remote, local)
        };
        let digest = Sha256::new()
            .chain_update(b"cwtch fuzzing dh")
            .chain_update(a.as_bytes())
            .chain_update(b.as_bytes())
            .finalize();
        Some(Zeroizing::new(digest.into()))
    }

    pub(crate) fn signature(public: &[u8; 32], message: &[u8]) -> [u8; 64] {
        Sha512::new()
            .chain_update(b"cwtch fuzzing signature")
            .chain_update(public)
            .chain_update(message)
            .finalize()
            .into()
    }
}
