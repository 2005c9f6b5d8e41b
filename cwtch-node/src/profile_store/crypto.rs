//! Key derivation (Argon2id, then HKDF-SHA256) and record sealing
//! (XChaCha20-Poly1305 envelopes, HMAC-SHA256 blinded keys).

use argon2::{Algorithm, Argon2, Block, Params, Version};
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use super::error::{ProfileStoreError, Result};

/// Length of the Argon2 salt stored in the header.
pub const SALT_LEN: usize = 16;
/// Length of every symmetric key.
pub const KEY_LEN: usize = 32;
/// XChaCha20-Poly1305 nonce length (random per envelope).
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Length of a blinded record key (HMAC-SHA256 output).
pub const BLIND_LEN: usize = 32;
/// Every envelope's length is a multiple of this.
pub const PAD_BLOCK: usize = 256;
/// The first byte of every envelope.
pub const ENVELOPE_VERSION: u8 = 1;
/// Bytes of an envelope that are not the padded plaintext.
pub const ENVELOPE_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// Bytes of the plaintext framing: table id, key length, value length.
const FRAMING: usize = 1 + 4 + 4;

const HKDF_SALT: &[u8] = b"cwtch-rs/profile-store/v1/hkdf";
const INFO_RECORD: &[u8] = b"cwtch-rs/profile-store/v1/record-key";
const INFO_BLIND: &[u8] = b"cwtch-rs/profile-store/v1/blind-key";
const INFO_CHECK: &[u8] = b"cwtch-rs/profile-store/v1/check-key";
const AD_RECORD: &[u8] = b"cwtch-rs/profile-store/v1/record";
const AD_CHECK: &[u8] = b"cwtch-rs/profile-store/v1/key-check";
/// The constant the key-check value encrypts.
const CHECK_PLAINTEXT: &[u8; 32] = b"cwtch-rs profile store key check";

/// Argon2id (version 0x13) cost parameters.
///
/// They are stored in the profile's header, so a profile opens with the
/// parameters it was created with even after [`KdfParams::RECOMMENDED`] changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes over the memory.
    pub t_cost: u32,
    /// Lanes (parallelism).
    pub p_cost: u32,
}

impl KdfParams {
    /// What every new profile uses: 64 MiB, 3 passes, 1 lane (RFC 9106's
    /// second recommended option, "if much less memory is available").
    pub const RECOMMENDED: Self = Self {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };

    /// The weakest parameters `open` accepts in a normal build (OWASP's
    /// minimum for Argon2id: 19 MiB, 2 passes). Anything weaker can only have
    /// been written by a test build.
    pub const MINIMUM: Self = Self {
        m_cost_kib: 19 * 1024,
        t_cost: 2,
        p_cost: 1,
    };

    /// The strongest parameters `open` attempts (so that a damaged or hostile
    /// header cannot make it allocate unbounded memory or loop for hours).
    pub const MAXIMUM: Self = Self {
        m_cost_kib: 4 * 1024 * 1024,
        t_cost: 64,
        p_cost: 16,
    };

    /// Cheap parameters for tests only (8 KiB, 1 pass): brute-forceable.
    #[cfg(any(test, feature = "insecure-test-kdf"))]
    pub const INSECURE_FOR_TESTS: Self = Self {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    };

    /// The floor `open` enforces in this build.
    pub(crate) const fn floor() -> Self {
        #[cfg(any(test, feature = "insecure-test-kdf"))]
        {
            Self::INSECURE_FOR_TESTS
        }
        #[cfg(not(any(test, feature = "insecure-test-kdf")))]
        {
            Self::MINIMUM
        }
    }

    /// Whether these parameters are within `[floor(), MAXIMUM]`.
    pub(crate) fn acceptable(self) -> bool {
        let lo = Self::floor();
        let hi = Self::MAXIMUM;
        (lo.m_cost_kib..=hi.m_cost_kib).contains(&self.m_cost_kib)
            && (lo.t_cost..=hi.t_cost).contains(&self.t_cost)
            && (lo.p_cost..=hi.p_cost).contains(&self.p_cost)
            && self.m_cost_kib >= 8 * self.p_cost
    }

    /// Whether every cost is at least `other`'s.
    pub(crate) fn at_least(self, other: Self) -> bool {
        self.m_cost_kib >= other.m_cost_kib
            && self.t_cost >= other.t_cost
            && self.p_cost >= other.p_cost
    }
}

/// Fills `buf` from the operating system's random number generator.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|_| ProfileStoreError::Rng)
}

/// Runs Argon2id into a 32-byte master key, on memory that is wiped afterwards.
fn argon2id(
    password: &[u8],
    salt: &[u8; SALT_LEN],
    params: KdfParams,
) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let kdf_err = |e: argon2::Error| ProfileStoreError::Kdf(e.to_string());
    let p = Params::new(
        params.m_cost_kib,
        params.t_cost,
        params.p_cost,
        Some(KEY_LEN),
    )
    .map_err(kdf_err)?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
    // Our own allocation (the crate's does not wipe its blocks on drop),
    // failing with an error rather than aborting when memory is short.
    let mut blocks: Vec<Block> = Vec::new();
    blocks
        .try_reserve_exact(argon.params().block_count())
        .map_err(|_| ProfileStoreError::Kdf("out of memory".into()))?;
    blocks.resize(argon.params().block_count(), Block::new());
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    let res = argon.hash_password_into_with_memory(password, salt, &mut out[..], &mut blocks[..]);
    blocks.zeroize();
    res.map_err(kdf_err)?;
    Ok(out)
}

/// The keys of an open profile. Wiped on drop; no `Debug`.
pub(crate) struct Keys {
    record: XChaCha20Poly1305,
    check: XChaCha20Poly1305,
    blind: Zeroizing<[u8; KEY_LEN]>,
}

/// A decrypted record.
pub(crate) struct Opened {
    pub table_id: u8,
    pub key: Vec<u8>,
    pub value: Zeroizing<Vec<u8>>,
}

impl Keys {
    /// Derives the keys from a password: Argon2id, then HKDF-SHA256 into one
    /// key per purpose.
    pub fn derive(password: &[u8], salt: &[u8; SALT_LEN], params: KdfParams) -> Result<Self> {
        let master = argon2id(password, salt, params)?;
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), &master[..]);
        let mut record = Zeroizing::new([0u8; KEY_LEN]);
        let mut check = Zeroizing::new([0u8; KEY_LEN]);
        let mut blind = Zeroizing::new([0u8; KEY_LEN]);
        for (info, out) in [
            (INFO_RECORD, &mut record),
            (INFO_CHECK, &mut check),
            (INFO_BLIND, &mut blind),
        ] {
            hk.expand(info, &mut out[..])
                .map_err(|_| ProfileStoreError::Kdf("hkdf expand".into()))?;
        }
        drop(hk);
        let key_err = |_| ProfileStoreError::Kdf("key length".into());
        Ok(Self {
            record: XChaCha20Poly1305::new_from_slice(&record[..]).map_err(key_err)?,
            check: XChaCha20Poly1305::new_from_slice(&check[..]).map_err(key_err)?,
            blind,
        })
    }

    /// The blinded lookup key: HMAC-SHA256(blind key, table id || key).
    pub fn blind(&self, table_id: u8, key: &[u8]) -> [u8; BLIND_LEN] {
        // An HMAC accepts keys of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.blind[..])
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&[table_id]);
        mac.update(key);
        mac.finalize().into_bytes().into()
    }

    /// Seals a key-check value bound to the header fields in `header_ad`.
    pub fn seal_check(&self, header_ad: &[u8]) -> Result<Vec<u8>> {
        let mut ad = Vec::with_capacity(AD_CHECK.len() + header_ad.len());
        ad.extend_from_slice(AD_CHECK);
        ad.extend_from_slice(header_ad);
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let ct = self
            .check
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: CHECK_PLAINTEXT,
                    aad: &ad,
                },
            )
            .map_err(|_| ProfileStoreError::Kdf("key check encryption".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Verifies the key-check value: `WrongPassword` if these keys do not open it.
    pub fn verify_check(&self, header_ad: &[u8], blob: &[u8]) -> Result<()> {
        let (nonce, ct) = blob
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(ProfileStoreError::Corrupt("key check value too short"))?;
        let mut ad = Vec::with_capacity(AD_CHECK.len() + header_ad.len());
        ad.extend_from_slice(AD_CHECK);
        ad.extend_from_slice(header_ad);
        let pt = self
            .check
            .decrypt(&(*nonce).into(), Payload { msg: ct, aad: &ad })
            .map_err(|_| ProfileStoreError::WrongPassword)?;
        if pt.as_slice() == CHECK_PLAINTEXT {
            Ok(())
        } else {
            // Authentic but not our constant: a different program's file.
            Err(ProfileStoreError::Corrupt("key check value"))
        }
    }

    /// Seals one record into a padded envelope bound to its blinded key.
    pub fn seal(
        &self,
        blind: &[u8; BLIND_LEN],
        table_id: u8,
        key: &[u8],
        value: &[u8],
    ) -> Result<Vec<u8>> {
        let key_len =
            u32::try_from(key.len()).map_err(|_| ProfileStoreError::Corrupt("key length"))?;
        let value_len =
            u32::try_from(value.len()).map_err(|_| ProfileStoreError::Corrupt("value length"))?;
        let padded_len = padded_plaintext_len(FRAMING + key.len() + value.len());
        // Exact capacity: no reallocation leaves a copy of the value behind.
        let mut pt = Zeroizing::new(Vec::with_capacity(padded_len));
        pt.push(table_id);
        pt.extend_from_slice(&key_len.to_le_bytes());
        pt.extend_from_slice(key);
        pt.extend_from_slice(&value_len.to_le_bytes());
        pt.extend_from_slice(value);
        pt.resize(padded_len, 0);

        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let ad = record_ad(blind);
        let ct = self
            .record
            .encrypt(&nonce.into(), Payload { msg: &pt, aad: &ad })
            .map_err(|_| ProfileStoreError::Corrupt("record too large to encrypt"))?;
        let mut env = Vec::with_capacity(ENVELOPE_OVERHEAD + padded_len);
        env.push(ENVELOPE_VERSION);
        env.extend_from_slice(&nonce);
        env.extend_from_slice(&ct);
        debug_assert_eq!(env.len() % PAD_BLOCK, 0);
        Ok(env)
    }

    /// Opens an envelope stored under `blind`. `Tampered` if it does not
    /// authenticate under this blinded key.
    pub fn open(&self, blind: &[u8], envelope: &[u8]) -> Result<Opened> {
        let blind: &[u8; BLIND_LEN] = blind
            .try_into()
            .map_err(|_| ProfileStoreError::Corrupt("blinded key length"))?;
        let (&version, rest) = envelope
            .split_first()
            .ok_or(ProfileStoreError::Corrupt("empty envelope"))?;
        if version != ENVELOPE_VERSION {
            return Err(ProfileStoreError::UnsupportedVersion(i64::from(version)));
        }
        let (nonce, ct) = rest
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(ProfileStoreError::Tampered)?;
        if ct.len() < TAG_LEN + FRAMING {
            return Err(ProfileStoreError::Tampered);
        }
        let ad = record_ad(blind);
        let pt = Zeroizing::new(
            self.record
                .decrypt(&(*nonce).into(), Payload { msg: ct, aad: &ad })
                .map_err(|_| ProfileStoreError::Tampered)?,
        );
        parse_plaintext(&pt)
    }
}

/// The associated data of a record: a label, the envelope version, the blinded key.
fn record_ad(blind: &[u8; BLIND_LEN]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(AD_RECORD.len() + 1 + BLIND_LEN);
    ad.extend_from_slice(AD_RECORD);
    ad.push(ENVELOPE_VERSION);
    ad.extend_from_slice(blind);
    ad
}

/// The padded plaintext length for `framed` bytes of framed record, such
/// that the whole envelope is a multiple of [`PAD_BLOCK`].
fn padded_plaintext_len(framed: usize) -> usize {
    (framed + ENVELOPE_OVERHEAD).div_ceil(PAD_BLOCK) * PAD_BLOCK - ENVELOPE_OVERHEAD
}

/// Parses an authenticated plaintext (never panics on malformed input).
fn parse_plaintext(pt: &[u8]) -> Result<Opened> {
    const BAD: ProfileStoreError = ProfileStoreError::Corrupt("record framing");
    let (&table_id, rest) = pt.split_first().ok_or(BAD)?;
    let (klen, rest) = rest.split_first_chunk::<4>().ok_or(BAD)?;
    let klen = usize::try_from(u32::from_le_bytes(*klen)).map_err(|_| BAD)?;
    let (key, rest) = rest.split_at_checked(klen).ok_or(BAD)?;
    let (vlen, rest) = rest.split_first_chunk::<4>().ok_or(BAD)?;
    let vlen = usize::try_from(u32::from_le_bytes(*vlen)).map_err(|_| BAD)?;
    let (value, padding) = rest.split_at_checked(vlen).ok_or(BAD)?;
    if padding.iter().any(|&b| b != 0) {
        return Err(BAD);
    }
    Ok(Opened {
        table_id,
        key: key.to_vec(),
        value: Zeroizing::new(value.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_padded_to_the_block() {
        for framed in [0, 1, 100, 214, 215, 216, 1000, 5000] {
            let p = padded_plaintext_len(framed);
            assert!(p >= framed);
            assert_eq!((p + ENVELOPE_OVERHEAD) % PAD_BLOCK, 0);
            assert!(p - framed < PAD_BLOCK);
        }
    }

    #[test]
    fn parse_rejects_garbage_without_panicking() {
        for pt in [
            &[][..],
            &[1],
            &[1, 255, 255, 255, 255],
            &[1, 0, 0, 0, 0, 9, 0, 0],
        ] {
            assert!(parse_plaintext(pt).is_err());
        }
        // Non-zero padding.
        assert!(parse_plaintext(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 7]).is_err());
        let ok = parse_plaintext(&[3, 1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v', 0, 0]).unwrap();
        assert_eq!(
            (ok.table_id, &ok.key[..], &ok.value[..]),
            (3, &b"k"[..], &b"v"[..])
        );
    }

    #[test]
    fn seal_open_and_bindings() {
        let keys = Keys::derive(b"pw", &[7; SALT_LEN], KdfParams::INSECURE_FOR_TESTS).unwrap();
        let b1 = keys.blind(1, b"a");
        let b2 = keys.blind(2, b"a");
        assert_ne!(b1, b2);
        let env = keys.seal(&b1, 1, b"a", b"hello").unwrap();
        assert_eq!(env.len(), PAD_BLOCK);
        let o = keys.open(&b1, &env).unwrap();
        assert_eq!(
            (o.table_id, &o.key[..], &o.value[..]),
            (1, &b"a"[..], &b"hello"[..])
        );
        assert!(matches!(
            keys.open(&b2, &env),
            Err(ProfileStoreError::Tampered)
        ));
        let mut bad = env.clone();
        bad[40] ^= 1;
        assert!(matches!(
            keys.open(&b1, &bad),
            Err(ProfileStoreError::Tampered)
        ));
        assert!(keys.open(&b1, &env[..30]).is_err());
        let other = Keys::derive(b"px", &[7; SALT_LEN], KdfParams::INSECURE_FOR_TESTS).unwrap();
        assert!(matches!(
            other.open(&b1, &env),
            Err(ProfileStoreError::Tampered)
        ));
        let check = keys.seal_check(b"hdr").unwrap();
        keys.verify_check(b"hdr", &check).unwrap();
        assert!(matches!(
            other.verify_check(b"hdr", &check),
            Err(ProfileStoreError::WrongPassword)
        ));
        assert!(keys.verify_check(b"hdx", &check).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        #[test]
        fn open_never_panics_on_arbitrary_envelopes(
            env in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            blind in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let keys = test_keys();
            proptest::prop_assert!(keys.open(&blind, &env).is_err());
        }

        #[test]
        fn any_change_to_an_envelope_is_detected(
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            pos in proptest::prelude::any::<usize>(),
            bit in 0u8..8,
        ) {
            let keys = test_keys();
            let blind = keys.blind(3, b"key");
            let mut env = keys.seal(&blind, 3, b"key", &value).unwrap();
            let i = pos % env.len();
            env[i] ^= 1 << bit;
            proptest::prop_assert!(keys.open(&blind, &env).is_err());
        }
    }

    fn test_keys() -> Keys {
        Keys::derive(b"pw", &[1; SALT_LEN], KdfParams::INSECURE_FOR_TESTS).unwrap()
    }
}
