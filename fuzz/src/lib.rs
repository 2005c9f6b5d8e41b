//! What the fuzz targets share.
#![forbid(unsafe_code)]

use std::sync::{Mutex, PoisonError};

use cwtch_proto::group::{Group, GroupSecret};
use cwtch_proto::{Identity, OnionAddress};

/// The identity with seed `[seed; 32]`, made once per process: key
/// generation (a base-point multiplication, instrumented for coverage) would
/// otherwise be most of the cost of an execution.
pub fn identity(seed: u8) -> Identity {
    static CACHE: Mutex<Vec<(u8, Identity)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, id)) = cache.iter().find(|(s, _)| *s == seed) {
        return id.clone();
    }
    let id = Identity::from_seed(&[seed; 32]);
    cache.push((seed, id.clone()));
    id
}

/// A group of secret `[secret; 32]` on one server (the address of
/// [`identity`]`(0x80)`), and that server.
pub fn group(secret: u8) -> (Group, OnionAddress) {
    let server = identity(0x80).address();
    let group = Group::from_secret(
        GroupSecret::from_bytes(&[secret; 32]),
        [server].into_iter().collect(),
    );
    (group, server)
}
