//! Any string either parses as an onion address that re-encodes to itself,
//! or fails with a typed error; never a panic.
#![no_main]

use cwtch_proto::OnionAddress;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = core::str::from_utf8(data) {
        if let Ok(address) = OnionAddress::parse(text) {
            let canonical = text.strip_suffix(".onion").unwrap_or(text);
            assert_eq!(address.as_str(), canonical);
            assert_eq!(address.public_identity().address(), address);
        }
    }
});
