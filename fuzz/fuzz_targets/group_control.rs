//! Move notices and recovery requests: decoding never panics, whatever
//! decodes re-encodes to the very same bytes (one canonical form), and a
//! request built from arbitrary ranges always decodes back to itself.
#![no_main]

use cwtch_proto::group::control::{MAX_RANGE_SPAN, MOVE_NOTICE_MAX_LEN, WANTED_MAX_LEN};
use cwtch_proto::group::{MemberId, MissingRange, MoveNotice, ResendWanted};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = MoveNotice::decode(data) {
        let mut out = [0u8; MOVE_NOTICE_MAX_LEN];
        assert_eq!(n.encode(&mut out).expect("a decoded notice encodes"), data);
    }
    if let Ok(w) = ResendWanted::decode(data) {
        let mut out = [0u8; WANTED_MAX_LEN];
        assert_eq!(w.encode(&mut out).expect("a decoded request encodes"), data);
    }
    // Arbitrary ranges (17 bytes each: member byte, first, last) through the
    // builder: always canonical and within limits.
    let ranges = data.chunks_exact(17).map(|c| MissingRange {
        member: MemberId([c[0]; 16]),
        first: u64::from_le_bytes(c[1..9].try_into().unwrap()),
        last: u64::from_le_bytes(c[9..17].try_into().unwrap()),
    });
    if let Some(w) = ResendWanted::from_missing(&[7; 32], ranges) {
        let mut out = [0u8; WANTED_MAX_LEN];
        let bytes = w.encode(&mut out).expect("a built request encodes");
        let back = ResendWanted::decode(bytes).expect("a built request decodes");
        assert_eq!(back, w);
        for r in back.ranges() {
            assert!(r.first <= r.last && r.last - r.first < MAX_RANGE_SPAN);
        }
    }
});
