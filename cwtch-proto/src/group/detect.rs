//! Cheap detection tags: is this blob for one of my groups?
//!
//! Every sealed blob starts with a 24-byte random nonce `N` and a 16-byte
//! tag `T = HChaCha20(K_detect, N[0..16])[0..16]`. HChaCha20 is the keyed
//! ChaCha20 permutation XChaCha20 uses to derive its subkeys; it is a PRF,
//! so to anyone without `K_detect` the tag looks random and two blobs of
//! one group (or one sender) cannot be linked by their first 40 bytes.
//!
//! Checking a tag costs one HChaCha20 (about 1/15 of a failed
//! XChaCha20-Poly1305 open of the same 2 KiB blob, see
//! `benches/detection.rs`), so a client can sift a server's whole stream
//! against all its groups and only open what is for it.

use core::fmt;

use chacha20::R20;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of the random nonce at the start of a blob.
pub const NONCE_LEN: usize = 24;
/// Length of the detection tag that follows the nonce.
pub const TAG_LEN: usize = 16;
/// Bytes of the nonce the detection tag is computed from.
const TAG_INPUT_LEN: usize = 16;

/// The key of a group's detection tags.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DetectionKey([u8; 32]);

impl DetectionKey {
    pub(crate) fn from_bytes(bytes: &[u8; 32]) -> Self {
        DetectionKey(*bytes)
    }

    /// The tag of a blob with this nonce.
    pub fn tag(&self, nonce: &[u8; NONCE_LEN]) -> [u8; TAG_LEN] {
        let mut input = [0u8; TAG_INPUT_LEN];
        input.copy_from_slice(&nonce[..TAG_INPUT_LEN]);
        let mut block = chacha20::hchacha::<R20>(&self.0.into(), &input.into());
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&block[..TAG_LEN]);
        block.as_mut_slice().zeroize();
        tag
    }

    /// Whether `blob` carries this key's tag (constant time in the tag).
    /// Anything shorter than a nonce and a tag is not ours.
    pub fn detect(&self, blob: &[u8]) -> bool {
        self.matches(blob).into()
    }

    fn matches(&self, blob: &[u8]) -> Choice {
        let Some((nonce, tag)) = split_header(blob) else {
            return Choice::from(0);
        };
        self.tag(nonce).ct_eq(tag)
    }
}

fn split_header(blob: &[u8]) -> Option<(&[u8; NONCE_LEN], &[u8; TAG_LEN])> {
    let (nonce, rest) = blob.split_at_checked(NONCE_LEN)?;
    let tag = rest.get(..TAG_LEN)?;
    Some((nonce.try_into().ok()?, tag.try_into().ok()?))
}

impl fmt::Debug for DetectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DetectionKey(..)")
    }
}

/// The multi-group detector is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectorFull;

impl fmt::Display for DetectorFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the detector holds as many groups as it can")
    }
}

impl core::error::Error for DetectorFull {}

/// The detection keys of up to `N` groups, each with a caller-chosen label
/// (an index into the caller's group table, say). [`Detector::detect`] says
/// which group a blob is for, checking every key every time so its timing
/// does not depend on which group matched.
pub struct Detector<L: Copy + Eq, const N: usize> {
    entries: heapless::Vec<(L, DetectionKey), N>,
}

impl<L: Copy + Eq, const N: usize> Default for Detector<L, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<L: Copy + Eq, const N: usize> Detector<L, N> {
    /// An empty detector.
    pub const fn new() -> Self {
        Detector {
            entries: heapless::Vec::new(),
        }
    }

    /// Adds a group. A label already present is replaced.
    pub fn insert(&mut self, label: L, key: &DetectionKey) -> Result<(), DetectorFull> {
        if let Some(entry) = self.entries.iter_mut().find(|(l, _)| *l == label) {
            entry.1 = key.clone();
            return Ok(());
        }
        self.entries
            .push((label, key.clone()))
            .map_err(|_| DetectorFull)
    }

    /// Removes a group; returns whether it was there.
    pub fn remove(&mut self, label: L) -> bool {
        match self.entries.iter().position(|(l, _)| *l == label) {
            Some(i) => {
                self.entries.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// How many groups are in the detector.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the detector is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The label of the group `blob` is for, if any. With two groups
    /// matching (a chance of 2^-128), the later-inserted one wins.
    pub fn detect(&self, blob: &[u8]) -> Option<L> {
        let (nonce, tag) = split_header(blob)?;
        let mut found = Choice::from(0);
        let mut index = 0u32;
        for (i, (_, key)) in self.entries.iter().enumerate() {
            let hit = key.tag(nonce).ct_eq(tag);
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            index.conditional_assign(&i, hit);
            found |= hit;
        }
        if bool::from(found) {
            let index = usize::try_from(index).ok()?;
            self.entries.get(index).map(|(label, _)| *label)
        } else {
            None
        }
    }
}

impl<L: Copy + Eq + fmt::Debug, const N: usize> fmt::Debug for Detector<L, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(l, _)| l))
            .finish()
    }
}
