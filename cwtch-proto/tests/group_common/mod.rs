//! Helpers shared by the group tests.
#![allow(dead_code)]

use chacha20::ChaCha20Rng;
use cwtch_proto::group::{Group, GroupSecret, ServerList};
use cwtch_proto::{Identity, OnionAddress};
use rand_core::SeedableRng;

pub fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

pub fn identity(seed: u8) -> Identity {
    Identity::from_seed(&[seed; 32])
}

pub fn server(seed: u8) -> OnionAddress {
    Identity::from_seed(&[seed.wrapping_add(0x80); 32]).address()
}

pub fn servers(seeds: &[u8]) -> ServerList {
    seeds.iter().map(|&s| server(s)).collect()
}

pub fn group(secret: u8, server_seeds: &[u8]) -> Group {
    Group::from_secret(
        GroupSecret::from_bytes(&[secret; 32]),
        servers(server_seeds),
    )
}
