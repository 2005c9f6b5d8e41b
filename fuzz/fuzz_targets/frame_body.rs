//! The frame body parser: arbitrary 482-byte bodies parse or fail typed,
//! and whatever parses emits back to the same bytes (one canonical form).
#![no_main]

use cwtch_proto::channel::frame::{FRAME_BODY_LEN, FrameBody};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut body = [0u8; FRAME_BODY_LEN];
    let n = data.len().min(FRAME_BODY_LEN);
    body[..n].copy_from_slice(&data[..n]);
    if let Ok(parsed) = FrameBody::parse(&body) {
        let mut again = [0u8; FRAME_BODY_LEN];
        parsed.emit(&mut again).unwrap();
        assert_eq!(again, body);
    }
});
