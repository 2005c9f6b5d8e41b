//! Identifier parsing never panics, and whatever parses prints back to the
//! same text (one canonical form; a plain address prints as its 56
//! characters).
#![no_main]

use cwtch_proto::mailbox::{IDENTIFIER_TEXT_MAX_LEN, Identifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = core::str::from_utf8(data) {
        if let Ok(id) = Identifier::parse(text) {
            let mut out = [0u8; IDENTIFIER_TEXT_MAX_LEN];
            let again = id.to_text(&mut out).to_string();
            assert_eq!(
                Identifier::parse(&again).expect("a printed identifier parses"),
                id
            );
            if id.mailbox().is_some() {
                assert_eq!(again, text.trim());
            }
        }
    }
});
