//! The group secret and the keys derived from it.
//!
//! A group is a random 32-byte secret plus the servers it uses. Everything
//! else is derived with HKDF-SHA256 (salt [`KDF_SALT`], one `info` label per
//! key), so keys for different purposes are independent:
//!
//! | label (`info`)                  | output                                   |
//! |---------------------------------|------------------------------------------|
//! | `cwtch group seal key v1`       | XChaCha20-Poly1305 key of sealed blobs   |
//! | `cwtch group detection key v1`  | HChaCha20 key of detection tags          |
//! | `cwtch group id v1`             | the group id, members' internal name     |
//!
//! None of these, nor the secret, ever reaches a server: a server only sees
//! random nonces, detection tags and ciphertexts.

use core::fmt;

use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::identity::PublicIdentity;
use crate::onion::OnionAddress;

use super::detect::DetectionKey;

/// Length of a group secret.
pub const GROUP_SECRET_LEN: usize = 32;
/// Length of a group id.
pub const GROUP_ID_LEN: usize = 32;
/// Length of a member id.
pub const MEMBER_ID_LEN: usize = 16;
/// How many servers a group can name.
pub const MAX_SERVERS: usize = 4;

/// HKDF salt of the group key schedule.
pub const KDF_SALT: &[u8] = b"cwtch-rs group key schedule v1";
/// HKDF `info` of the sealing key.
pub const LABEL_SEAL: &[u8] = b"cwtch group seal key v1";
/// HKDF `info` of the detection-tag key.
pub const LABEL_DETECT: &[u8] = b"cwtch group detection key v1";
/// HKDF `info` of the group id.
pub const LABEL_GROUP_ID: &[u8] = b"cwtch group id v1";
/// Domain label of member ids: `SHA-256(label || group id || key)[..16]`.
pub const LABEL_MEMBER_ID: &[u8] = b"cwtch group member id v1";

/// The servers a group uses (at most [`MAX_SERVERS`]).
pub type ServerList = heapless::Vec<OnionAddress, MAX_SERVERS>;

/// The 32-byte secret of a group. Whoever holds it is a member.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct GroupSecret([u8; GROUP_SECRET_LEN]);

impl GroupSecret {
    /// A fresh random secret.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; GROUP_SECRET_LEN];
        rng.fill_bytes(&mut bytes);
        GroupSecret(bytes)
    }

    /// The secret of these bytes (from an invite or the caller's storage).
    pub fn from_bytes(bytes: &[u8; GROUP_SECRET_LEN]) -> Self {
        GroupSecret(*bytes)
    }

    /// The secret bytes, for the caller's encrypted storage. Handle with care.
    pub fn to_bytes(&self) -> Zeroizing<[u8; GROUP_SECRET_LEN]> {
        Zeroizing::new(self.0)
    }

    /// Derives the group's keys.
    pub fn derive_keys(&self) -> GroupKeys {
        let hk = Hkdf::<Sha256>::new(Some(KDF_SALT), &self.0);
        let mut seal = Zeroizing::new([0u8; 32]);
        let mut detect = Zeroizing::new([0u8; 32]);
        let mut id = [0u8; GROUP_ID_LEN];
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32: cannot fail.
        let ok = hk.expand(LABEL_SEAL, seal.as_mut()).is_ok()
            && hk.expand(LABEL_DETECT, detect.as_mut()).is_ok()
            && hk.expand(LABEL_GROUP_ID, &mut id).is_ok();
        debug_assert!(ok);
        GroupKeys {
            seal: SealKey(*seal),
            detect: DetectionKey::from_bytes(&detect),
            id: GroupId(id),
        }
    }
}

impl PartialEq for GroupSecret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for GroupSecret {}

impl fmt::Debug for GroupSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GroupSecret(..)")
    }
}

/// The XChaCha20-Poly1305 key of a group's sealed blobs.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct SealKey(pub(crate) [u8; 32]);

/// The group id: a name members use internally (to bind signatures to the
/// group, to derive member ids, to file messages). Derived from the secret,
/// never shown to a server.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub(crate) [u8; GROUP_ID_LEN]);

impl GroupId {
    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; GROUP_ID_LEN] {
        &self.0
    }

    /// The member id of `member` in this group.
    pub fn member_id(&self, member: &PublicIdentity) -> MemberId {
        let digest = Sha256::new()
            .chain_update(LABEL_MEMBER_ID)
            .chain_update(self.0)
            .chain_update(member.as_bytes())
            .finalize();
        let mut id = [0u8; MEMBER_ID_LEN];
        if let Some(prefix) = digest.get(..MEMBER_ID_LEN) {
            id.copy_from_slice(prefix);
        }
        MemberId(id)
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not a key, but derived from the secret and never meant for logs.
        f.write_str("GroupId(..)")
    }
}

/// A member's short id inside one group: `SHA-256("cwtch group member id v1"
/// || group id || public key)[..16]`. Seen summaries and [`MessageRef`]s
/// name senders by it; it differs from group to group, so it does not link
/// a member's groups.
///
/// [`MessageRef`]: super::gap::MessageRef
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct MemberId(pub [u8; MEMBER_ID_LEN]);

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemberId(")?;
        for b in self.0.iter().take(4) {
            write!(f, "{b:02x}")?;
        }
        f.write_str("..)")
    }
}

/// The keys derived from a group secret.
#[derive(Clone)]
pub struct GroupKeys {
    pub(crate) seal: SealKey,
    pub(crate) detect: DetectionKey,
    pub(crate) id: GroupId,
}

impl GroupKeys {
    /// The group id.
    pub fn id(&self) -> &GroupId {
        &self.id
    }

    /// The detection key, to be put in a multi-group [`Detector`].
    ///
    /// [`Detector`]: super::detect::Detector
    pub fn detection_key(&self) -> &DetectionKey {
        &self.detect
    }
}

impl fmt::Debug for GroupKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GroupKeys(..)")
    }
}

/// A group: its secret, the servers it uses, and the derived keys.
#[derive(Clone)]
pub struct Group {
    secret: GroupSecret,
    servers: ServerList,
    keys: GroupKeys,
}

impl Group {
    /// A new group with a fresh secret, using `servers`.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R, servers: ServerList) -> Self {
        Group::from_secret(GroupSecret::generate(rng), servers)
    }

    /// The group of a known secret.
    pub fn from_secret(secret: GroupSecret, servers: ServerList) -> Self {
        let keys = secret.derive_keys();
        Group {
            secret,
            servers,
            keys,
        }
    }

    /// The secret.
    pub fn secret(&self) -> &GroupSecret {
        &self.secret
    }

    /// The servers, in order of preference.
    pub fn servers(&self) -> &[OnionAddress] {
        &self.servers
    }

    /// The derived keys.
    pub fn keys(&self) -> &GroupKeys {
        &self.keys
    }

    /// The group id.
    pub fn id(&self) -> &GroupId {
        &self.keys.id
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}
