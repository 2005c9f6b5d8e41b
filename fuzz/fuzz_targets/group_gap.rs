//! The gap tracker never panics, stays within its bounds, and keeps its
//! open gaps sorted and disjoint, whatever the messages (absurd sequence
//! numbers included) and whenever events are drained.
#![no_main]

use arbitrary::Arbitrary;
use cwtch_proto::group::{GapTracker, MemberId, MessageHash, SeenEntry};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Message {
        sender: u8,
        seq: u64,
        hash: u8,
        prev: u8,
        seen: Vec<(u8, u64)>,
    },
    Poll(u8),
    Summary(u8),
    Forget(u8),
}

fuzz_target!(|ops: Vec<Op>| {
    let mut t: GapTracker<3, 4, 2, 32> = GapTracker::new();
    for op in ops {
        match op {
            Op::Message {
                sender,
                seq,
                hash,
                prev,
                seen,
            } => {
                let seen: Vec<SeenEntry> = seen
                    .into_iter()
                    .take(8)
                    .map(|(m, s)| SeenEntry {
                        member: MemberId([m % 5; 16]),
                        seq: s,
                    })
                    .collect();
                let _ = t.handle_parts(
                    MemberId([sender % 5; 16]),
                    seq,
                    &MessageHash([hash; 32]),
                    &MessageHash([prev; 32]),
                    &seen,
                );
            }
            Op::Poll(n) => {
                for _ in 0..n {
                    if t.poll_event().is_none() {
                        break;
                    }
                }
            }
            Op::Summary(m) => {
                let s = t.seen_summary(Some(MemberId([m % 5; 16])));
                assert!(s.len() <= 3);
            }
            Op::Forget(m) => {
                t.forget(MemberId([m % 5; 16]));
            }
        }
        let mut last: Option<(MemberId, u64)> = None;
        for r in t.missing() {
            assert!(r.first <= r.last);
            assert!(r.last < t.known_end(r.member));
            if let Some((m, l)) = last {
                if m == r.member {
                    assert!(l < r.first, "open gaps overlap or are unsorted");
                }
            }
            last = Some((r.member, r.last));
        }
    }
});
