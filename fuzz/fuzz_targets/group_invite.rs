//! Invite parsing never panics, and whatever parses re-encodes to the very
//! same bytes (one canonical form), in binary and in text.
#![no_main]

use cwtch_proto::group::Invite;
use cwtch_proto::group::invite::{INVITE_MAX_LEN, INVITE_TEXT_MAX_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(invite) = Invite::decode(data) {
        let mut out = [0u8; INVITE_MAX_LEN];
        let len = invite
            .encode(&mut out)
            .expect("an invite that decoded encodes");
        assert_eq!(&out[..len], data);
    }
    if let Ok(text) = core::str::from_utf8(data) {
        if let Ok(invite) = Invite::from_text(text) {
            let mut out = [0u8; INVITE_TEXT_MAX_LEN];
            let again = invite
                .to_text(&mut out)
                .expect("an invite that parsed prints");
            assert_eq!(again, text.trim());
        }
    }
});
