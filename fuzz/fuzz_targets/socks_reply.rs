//! The SOCKS reply handling: any reply code and any error message the
//! `socks` crate may produce maps to a typed dial error, never a panic.
#![no_main]

use cwtch_transport_socks::socks::{DialError, SocksReply, reply_from_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&code, rest)) = data.split_first() {
        if let Some(reply) = SocksReply::from_code(code) {
            let error = DialError::from_reply(reply);
            let _ = error.is_retryable();
            let _ = error.to_string();
        }
        if let Ok(message) = core::str::from_utf8(rest) {
            let _ = reply_from_message(message).map(DialError::from_reply);
        }
    }
});
