//! Arbitrary bytes (after an 8-byte clock) as a server advert (SPEC.md
//! section 13): a typed error or an advert whose signature verified; never
//! a panic. An accepted advert checks against the clock with a time error at
//! most, and changing a byte of its signed body makes it fail.
#![no_main]

use cwtch_proto::server::advert::{ADVERT_BODY_LEN, ADVERT_LEN, AdvertError, ServerAdvert};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes are the clock, the rest the advert.
    let (now, bytes) = match data.split_first_chunk::<8>() {
        Some((now, rest)) => (u64::from_le_bytes(*now), rest),
        None => (0, data),
    };
    match ServerAdvert::decode(bytes) {
        Ok(advert) => {
            assert_eq!(bytes.len(), ADVERT_LEN);
            assert!(advert.issued_at < advert.expires_at);
            let timed = ServerAdvert::verify(bytes, Some(&advert.server), now);
            assert!(matches!(
                timed,
                Ok(_) | Err(AdvertError::Expired) | Err(AdvertError::NotYetValid)
            ));
            // Any change to the signed body breaks the signature.
            let mut changed = bytes.to_vec();
            changed[ADVERT_BODY_LEN - 1] ^= 1;
            assert!(ServerAdvert::decode(&changed).is_err());
        }
        Err(_) => {
            assert!(ServerAdvert::verify(bytes, None, now).is_err());
        }
    }
});
