//! What the fuzz targets share.
#![forbid(unsafe_code)]

use std::sync::{Mutex, PoisonError};

use cwtch_proto::Identity;

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
