//! The Noise symmetric state: chaining key, handshake hash, and the cipher
//! state used while the handshake runs (Noise spec, sections 5.1 and 5.2).

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of hashes and chaining keys.
pub const HASH_LEN: usize = 32;
/// Length of cipher keys.
pub const KEY_LEN: usize = 32;
/// Length of an AEAD tag.
pub const TAG_LEN: usize = 16;

/// The AEAD failed to authenticate a ciphertext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AeadFailure;

/// The 12-byte AEAD nonce of a 64-bit counter: 4 zero bytes, then the
/// counter little-endian (Noise's ChaChaPoly nonce).
pub(crate) fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(n)
}

/// Encrypts `buf` in place and returns the tag.
pub(crate) fn seal(key: &[u8; KEY_LEN], counter: u64, ad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    match cipher.encrypt_inout_detached(&nonce(counter), ad, buf.into()) {
        Ok(tag) => tag.into(),
        // Only fails for inputs longer than 2^38 bytes; ours are at most a
        // frame. Returning a zero tag would make the peer reject the frame.
        Err(_) => [0u8; TAG_LEN],
    }
}

/// Decrypts `buf` in place if `tag` authenticates it. On failure `buf` is
/// left as it was.
pub(crate) fn open(
    key: &[u8; KEY_LEN],
    counter: u64,
    ad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), AeadFailure> {
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    cipher
        .decrypt_inout_detached(&nonce(counter), ad, buf.into(), &Tag::from(*tag))
        .map_err(|_| AeadFailure)
}

/// Noise `REKEY(k)`: the first 32 bytes of `ENCRYPT(k, 2^64-1, "", zeros)`.
pub(crate) fn rekey(key: &mut [u8; KEY_LEN]) {
    let mut next = [0u8; KEY_LEN];
    let _tag = seal(key, u64::MAX, &[], &mut next);
    key.copy_from_slice(&next);
    next.zeroize();
}

/// Noise `HKDF(ck, ikm)` with two outputs.
pub(crate) fn hkdf2(ck: &[u8; HASH_LEN], ikm: &[u8]) -> ([u8; HASH_LEN], [u8; HASH_LEN]) {
    let mut okm = [0u8; 2 * HASH_LEN];
    // 64 bytes is far below HKDF-SHA256's limit of 255 * 32.
    let _ = Hkdf::<Sha256>::new(Some(ck), ikm).expand(&[], &mut okm);
    let mut a = [0u8; HASH_LEN];
    let mut b = [0u8; HASH_LEN];
    a.copy_from_slice(&okm[..HASH_LEN]);
    b.copy_from_slice(&okm[HASH_LEN..]);
    okm.zeroize();
    (a, b)
}

/// Chaining key, handshake hash and the current handshake key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct SymmetricState {
    ck: [u8; HASH_LEN],
    h: [u8; HASH_LEN],
    k: Option<[u8; KEY_LEN]>,
    n: u64,
}

impl SymmetricState {
    /// `InitializeSymmetric(protocol_name)`.
    pub(crate) fn new(protocol_name: &[u8]) -> Self {
        let mut h = [0u8; HASH_LEN];
        if protocol_name.len() <= HASH_LEN {
            h[..protocol_name.len()].copy_from_slice(protocol_name);
        } else {
            h.copy_from_slice(&Sha256::digest(protocol_name));
        }
        SymmetricState {
            ck: h,
            h,
            k: None,
            n: 0,
        }
    }

    /// `MixHash(data)`.
    pub(crate) fn mix_hash(&mut self, data: &[u8]) {
        let mut hasher = Sha256::new();
        hasher.update(self.h);
        hasher.update(data);
        self.h.copy_from_slice(&hasher.finalize());
    }

    /// `MixKey(ikm)`.
    pub(crate) fn mix_key(&mut self, ikm: &[u8]) {
        let (ck, k) = hkdf2(&self.ck, ikm);
        self.ck = ck;
        self.k = Some(k);
        self.n = 0;
    }

    /// `EncryptAndHash`: encrypts `buf[..len-16]` in place, writes the tag
    /// into the last 16 bytes, and mixes the ciphertext into the hash.
    /// `buf` must be at least [`TAG_LEN`] long when a key is set; callers
    /// only pass fixed-size slices of handshake messages.
    pub(crate) fn encrypt_and_hash(&mut self, buf: &mut [u8]) {
        if let Some(k) = &self.k {
            let split = buf.len().saturating_sub(TAG_LEN);
            let (body, tag_out) = buf.split_at_mut(split);
            let tag = seal(k, self.n, &self.h, body);
            tag_out.copy_from_slice(&tag);
            self.n = self.n.wrapping_add(1);
        }
        self.mix_hash(buf);
    }

    /// `DecryptAndHash`: the inverse of [`Self::encrypt_and_hash`]; on
    /// success `buf[..len-16]` holds the plaintext.
    pub(crate) fn decrypt_and_hash(&mut self, buf: &mut [u8]) -> Result<(), AeadFailure> {
        let mut h = Sha256::new();
        h.update(self.h);
        h.update(&*buf);
        let next_h = h.finalize();
        if let Some(k) = &self.k {
            let split = buf.len().checked_sub(TAG_LEN).ok_or(AeadFailure)?;
            let (body, tag_in) = buf.split_at_mut(split);
            let mut tag = [0u8; TAG_LEN];
            tag.copy_from_slice(tag_in);
            open(k, self.n, &self.h, body, &tag)?;
            self.n = self.n.wrapping_add(1);
        }
        self.h.copy_from_slice(&next_h);
        Ok(())
    }

    /// The handshake hash so far.
    pub(crate) fn handshake_hash(&self) -> [u8; HASH_LEN] {
        self.h
    }

    /// `Split()`: the initiator-to-responder and responder-to-initiator keys.
    pub(crate) fn split(&self) -> ([u8; KEY_LEN], [u8; KEY_LEN]) {
        hkdf2(&self.ck, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypt_inverts_encrypt_and_keeps_hashes_in_step() {
        let mut a = SymmetricState::new(b"test");
        let mut b = a.clone();
        a.mix_key(b"ikm");
        b.mix_key(b"ikm");
        let mut buf = [0u8; 5 + TAG_LEN];
        buf[..5].copy_from_slice(b"hello");
        a.encrypt_and_hash(&mut buf);
        assert_ne!(&buf[..5], b"hello");
        b.decrypt_and_hash(&mut buf).unwrap();
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(a.handshake_hash(), b.handshake_hash());
        assert_eq!(a.split(), b.split());
    }

    #[test]
    fn failed_decrypt_leaves_state_untouched() {
        let mut a = SymmetricState::new(b"test");
        a.mix_key(b"ikm");
        let mut b = a.clone();
        let mut buf = [0u8; 3 + TAG_LEN];
        a.encrypt_and_hash(&mut buf);
        buf[0] ^= 1;
        let before = b.handshake_hash();
        assert_eq!(b.decrypt_and_hash(&mut buf), Err(AeadFailure));
        assert_eq!(b.handshake_hash(), before);
        assert_eq!(b.n, 0);
    }

    #[test]
    fn rekey_changes_the_key_deterministically() {
        let mut k1 = [7u8; KEY_LEN];
        let mut k2 = [7u8; KEY_LEN];
        rekey(&mut k1);
        rekey(&mut k2);
        assert_eq!(k1, k2);
        assert_ne!(k1, [7u8; KEY_LEN]);
    }
}
