//! A `#![no_std]` staticlib with its own `#[panic_handler]` that depends on
//! `cwtch-proto` with default features off. If any std crate creeps into the
//! core's dependency graph, this fails to build with "duplicate lang item
//! panic_impl".
#![no_std]
#![forbid(unsafe_code)]

use cwtch_proto::Identity;

/// Exercises a little of the core so the linker keeps it.
pub fn address_of_seed(seed: &[u8; 32], out: &mut [u8; 56]) {
    out.copy_from_slice(Identity::from_seed(seed).address().as_bytes());
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
