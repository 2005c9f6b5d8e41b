//! Wire helpers shared by the protocol's formats.

pub mod base32;
