//! The gap tracker: scenarios, capacity limits, a property test against a
//! reference model, and a four-member simulation over a lossy server.

mod group_common;

use std::collections::{BTreeMap, BTreeSet};

use cwtch_proto::group::message::MAX_SEQ;
use cwtch_proto::group::{
    Detector, GapError, GapEvent, GapTracker, Ingested, MemberId, MessageHash, MessageKind,
    MessageRef, MissingRange, SEALED_BLOB_LEN, SeenEntry, SenderChain,
};
use group_common::{group, identity, rng};
use proptest::prelude::*;
use rand_core::Rng;

fn member(n: u8) -> MemberId {
    MemberId([n; 16])
}

/// A stand-in message hash: sender, seq and a content variant.
fn h(sender: u8, seq: u64, variant: u8) -> MessageHash {
    let mut out = [0u8; 32];
    out[0] = sender;
    out[1..9].copy_from_slice(&seq.to_le_bytes());
    out[9] = variant;
    out[31] = 1;
    MessageHash(out)
}

fn prev(sender: u8, seq: u64) -> MessageHash {
    if seq == 0 {
        MessageHash::ZERO
    } else {
        h(sender, seq - 1, 0)
    }
}

fn drain<const S: usize, const W: usize, const G: usize, const E: usize>(
    t: &mut GapTracker<S, W, G, E>,
) -> Vec<GapEvent> {
    core::iter::from_fn(|| t.poll_event()).collect()
}

fn msg<const S: usize, const W: usize, const G: usize, const E: usize>(
    t: &mut GapTracker<S, W, G, E>,
    sender: u8,
    seq: u64,
) -> Ingested {
    t.handle_parts(
        member(sender),
        seq,
        &h(sender, seq, 0),
        &prev(sender, seq),
        &[],
    )
    .unwrap()
}

fn missing(sender: u8, first: u64, last: u64) -> GapEvent {
    GapEvent::Missing(MissingRange {
        member: member(sender),
        first,
        last,
    })
}

fn recovered(sender: u8, seq: u64) -> GapEvent {
    GapEvent::Recovered(MessageRef {
        member: member(sender),
        seq,
    })
}

#[test]
fn in_order_messages_report_nothing() {
    let mut t: GapTracker = GapTracker::new();
    for seq in 0..100 {
        assert_eq!(msg(&mut t, 1, seq), Ingested::New);
    }
    assert!(drain(&mut t).is_empty());
    assert_eq!(t.known_end(member(1)), 100);
}

#[test]
fn a_gap_is_reported_once_and_its_filling_once() {
    let mut t: GapTracker = GapTracker::new();
    msg(&mut t, 1, 0);
    assert_eq!(msg(&mut t, 1, 4), Ingested::New);
    assert_eq!(drain(&mut t), vec![missing(1, 1, 3)]);
    assert_eq!(msg(&mut t, 1, 5), Ingested::New);
    assert!(drain(&mut t).is_empty());
    assert_eq!(msg(&mut t, 1, 2), Ingested::Recovered);
    assert_eq!(drain(&mut t), vec![recovered(1, 2)]);
    assert_eq!(msg(&mut t, 1, 2), Ingested::Duplicate);
    assert!(drain(&mut t).is_empty());
    let open: Vec<_> = t.missing().collect();
    assert_eq!(
        open,
        vec![
            MissingRange {
                member: member(1),
                first: 1,
                last: 1
            },
            MissingRange {
                member: member(1),
                first: 3,
                last: 3
            },
        ]
    );
    msg(&mut t, 1, 1);
    msg(&mut t, 1, 3);
    assert_eq!(drain(&mut t), vec![recovered(1, 1), recovered(1, 3)]);
    assert_eq!(t.missing().count(), 0);
}

#[test]
fn a_silent_senders_gap_shows_through_others_summaries() {
    let mut t: GapTracker = GapTracker::new();
    // Bob says he has Carol's messages up to 3; we never heard from Carol.
    let seen = [SeenEntry {
        member: member(3),
        seq: 3,
    }];
    t.handle_parts(member(2), 0, &h(2, 0, 0), &prev(2, 0), &seen)
        .unwrap();
    assert_eq!(drain(&mut t), vec![missing(3, 0, 3)]);
    // The same news again reports nothing.
    t.handle_parts(member(2), 1, &h(2, 1, 0), &prev(2, 1), &seen)
        .unwrap();
    assert!(drain(&mut t).is_empty());
    // A summary about the sender itself is ignored (its own seq speaks).
    let about_self = [SeenEntry {
        member: member(2),
        seq: 50,
    }];
    t.handle_parts(member(2), 2, &h(2, 2, 0), &prev(2, 2), &about_self)
        .unwrap();
    assert!(drain(&mut t).is_empty());
}

#[test]
fn equivocation_is_reported() {
    let mut t: GapTracker = GapTracker::new();
    msg(&mut t, 1, 0);
    let other = t
        .handle_parts(member(1), 0, &h(1, 0, 9), &prev(1, 0), &[])
        .unwrap();
    assert_eq!(other, Ingested::Equivocation);
    let eq0 = GapEvent::Equivocation(MessageRef {
        member: member(1),
        seq: 0,
    });
    assert_eq!(drain(&mut t), vec![eq0]);
    // A chain link pointing at another version of message 0.
    t.handle_parts(member(1), 1, &h(1, 1, 0), &h(1, 0, 7), &[])
        .unwrap();
    assert_eq!(drain(&mut t), vec![eq0]);
    // A late predecessor whose hash is not what its successor named.
    msg(&mut t, 1, 3);
    drain(&mut t);
    t.handle_parts(member(1), 2, &h(1, 2, 5), &prev(1, 2), &[])
        .unwrap();
    let events = drain(&mut t);
    assert!(events.contains(&GapEvent::Equivocation(MessageRef {
        member: member(1),
        seq: 2
    })));
}

#[test]
fn absurd_jumps_are_one_range_in_constant_time() {
    let mut t: GapTracker = GapTracker::new();
    msg(&mut t, 1, 0);
    let start = std::time::Instant::now();
    assert_eq!(msg(&mut t, 1, MAX_SEQ), Ingested::New);
    assert_eq!(drain(&mut t), vec![missing(1, 1, MAX_SEQ - 1)]);
    let seen = [SeenEntry {
        member: member(2),
        seq: MAX_SEQ,
    }];
    t.handle_parts(member(1), 5, &h(1, 5, 0), &prev(1, 5), &seen)
        .unwrap();
    // A claim that another member sent 2^62 messages does not add up: it
    // is ignored, and its author named.
    assert_eq!(
        drain(&mut t),
        vec![
            recovered(1, 5),
            GapEvent::ImplausibleClaim {
                by: member(1),
                about: member(2),
                claimed: MAX_SEQ
            }
        ]
    );
    assert_eq!(t.known_end(member(2)), 0);
    assert!(start.elapsed() < core::time::Duration::from_millis(100));
    assert_eq!(
        t.handle_parts(member(1), u64::MAX, &h(1, 0, 0), &prev(1, 0), &[]),
        Err(GapError::SeqOutOfRange)
    );
    let bad = [SeenEntry {
        member: member(2),
        seq: u64::MAX,
    }];
    assert_eq!(
        t.handle_parts(member(1), 6, &h(1, 6, 0), &prev(1, 6), &bad),
        Err(GapError::SeqOutOfRange)
    );
    assert_eq!(
        MissingRange {
            member: member(2),
            first: 0,
            last: MAX_SEQ
        }
        .count(),
        u64::MAX
    );
}

#[test]
fn full_sender_table_is_reported_once() {
    let mut t: GapTracker<2, 8, 4, 32> = GapTracker::new();
    msg(&mut t, 1, 0);
    msg(&mut t, 2, 0);
    assert_eq!(msg(&mut t, 3, 0), Ingested::Untracked);
    assert_eq!(msg(&mut t, 3, 1), Ingested::Untracked);
    assert_eq!(drain(&mut t), vec![GapEvent::SenderTableFull(member(3))]);
    assert!(t.forget(member(2)));
    assert_eq!(msg(&mut t, 3, 2), Ingested::New);
    assert_eq!(drain(&mut t), vec![missing(3, 0, 1)]);
}

#[test]
fn too_many_gaps_gives_up_the_oldest() {
    let mut t: GapTracker<4, 8, 2, 32> = GapTracker::new();
    msg(&mut t, 1, 0);
    msg(&mut t, 1, 2);
    msg(&mut t, 1, 4);
    assert_eq!(drain(&mut t), vec![missing(1, 1, 1), missing(1, 3, 3)]);
    msg(&mut t, 1, 6);
    assert_eq!(
        drain(&mut t),
        vec![
            GapEvent::GaveUp(MissingRange {
                member: member(1),
                first: 1,
                last: 1
            }),
            missing(1, 5, 5)
        ]
    );
    // Given up but still inside the window: a late arrival is a recovery.
    assert_eq!(msg(&mut t, 1, 1), Ingested::Recovered);
    assert_eq!(drain(&mut t), vec![recovered(1, 1)]);
    // Splitting a range with no room left gives up part of it.
    let mut t: GapTracker<4, 8, 1, 32> = GapTracker::new();
    msg(&mut t, 1, 10);
    drain(&mut t);
    assert_eq!(msg(&mut t, 1, 5), Ingested::Recovered);
    assert_eq!(
        drain(&mut t),
        vec![
            GapEvent::GaveUp(MissingRange {
                member: member(1),
                first: 0,
                last: 4
            }),
            recovered(1, 5)
        ]
    );
}

#[test]
fn old_messages_outside_the_window_are_stale() {
    let mut t: GapTracker<4, 4, 4, 32> = GapTracker::new();
    for seq in 0..10 {
        msg(&mut t, 1, seq);
    }
    assert_eq!(msg(&mut t, 1, 2), Ingested::Stale);
    assert_eq!(msg(&mut t, 1, 8), Ingested::Duplicate);
    assert!(drain(&mut t).is_empty());
}

#[test]
fn a_full_event_queue_refuses_input_and_changes_nothing() {
    let mut t: GapTracker<4, 8, 64, 32> = GapTracker::new();
    let mut seq = 0;
    let err = loop {
        match t.handle_parts(member(1), seq, &h(1, seq, 0), &prev(1, seq), &[]) {
            Ok(_) => seq += 2,
            Err(e) => break e,
        }
    };
    assert_eq!(err, GapError::EventQueueFull);
    let end = t.known_end(member(1));
    assert_eq!(end, seq - 1);
    assert!(
        t.handle_parts(member(1), seq, &h(1, seq, 0), &prev(1, seq), &[])
            .is_err()
    );
    assert_eq!(t.known_end(member(1)), end);
    let events = drain(&mut t);
    assert_eq!(events.len(), (seq / 2 - 1) as usize);
    assert_eq!(msg(&mut t, 1, seq), Ingested::New);
}

#[test]
fn summaries_take_turns() {
    let mut t: GapTracker = GapTracker::new();
    for s in 1..=12 {
        msg(&mut t, s, u64::from(s));
    }
    drain(&mut t);
    let a = t.seen_summary(Some(member(1)));
    let b = t.seen_summary(Some(member(1)));
    assert_eq!(a.len(), 8);
    let named: BTreeSet<_> = a.iter().chain(b.iter()).map(|e| e.member).collect();
    assert_eq!(named.len(), 11, "all others named within two messages");
    assert!(!named.contains(&member(1)));
    assert!(a.iter().all(|e| e.seq == u64::from(e.member.0[0])));
}

#[test]
fn message_refs_have_a_stable_postcard_encoding() {
    let r = MessageRef {
        member: member(0xaa),
        seq: 300,
    };
    let mut buf = [0u8; 64];
    let bytes = postcard::to_slice(&r, &mut buf).unwrap().to_vec();
    let mut expect = vec![0xaa; 16];
    expect.extend_from_slice(&[0xac, 0x02]);
    assert_eq!(bytes, expect);
    assert_eq!(postcard::from_bytes::<MessageRef>(&bytes).unwrap(), r);
    let m = MissingRange {
        member: member(1),
        first: 1,
        last: 3,
    };
    let bytes = postcard::to_slice(&m, &mut buf).unwrap().to_vec();
    assert_eq!(bytes.len(), 18);
    assert_eq!(postcard::from_bytes::<MissingRange>(&bytes).unwrap(), m);
    assert!(postcard::from_bytes::<MessageRef>(&bytes[..10]).is_err());
}

// ---------------------------------------------------------------------------
// A member who lies in its seen summaries (issue 14, item 4).

fn claim(about: u8, seq: u64) -> SeenEntry {
    SeenEntry {
        member: member(about),
        seq,
    }
}

#[test]
fn made_up_ids_in_summaries_cannot_evict_or_untrack_real_members() {
    let mut t: GapTracker = GapTracker::new(); // 16 senders
    // The liar (member 100) writes messages naming 8 made-up ids each,
    // over and over: before the fix two such messages filled the table.
    for round in 0..10u8 {
        let made_up: Vec<SeenEntry> = (0..8)
            .map(|i| claim(200 + (round * 8 + i) % 50, 3))
            .collect();
        t.handle_parts(
            member(100),
            u64::from(round),
            &h(100, u64::from(round), 0),
            &prev(100, u64::from(round)),
            &made_up,
        )
        .unwrap();
        drain(&mut t);
    }
    // Fifteen real members who write are all tracked.
    for m in 1..=15 {
        assert_eq!(msg(&mut t, m, 0), Ingested::New);
        assert_eq!(msg(&mut t, m, 2), Ingested::New);
    }
    let events = drain(&mut t);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, GapEvent::SenderTableFull(_))),
        "{events:?}"
    );
    for m in 1..=15 {
        assert_eq!(t.known_end(member(m)), 3, "member {m} tracked");
        assert_eq!(msg(&mut t, m, 2), Ingested::Duplicate);
    }
    // And more made-up claims now displace nobody who writes.
    let made_up: Vec<SeenEntry> = (0..8).map(|i| claim(150 + i, 5)).collect();
    t.handle_parts(member(100), 10, &h(100, 10, 0), &prev(100, 10), &made_up)
        .unwrap();
    for m in 1..=15 {
        assert_eq!(t.known_end(member(m)), 3);
    }
}

#[test]
fn a_max_seq_claim_cannot_hide_a_members_messages() {
    let mut t: GapTracker = GapTracker::new();
    msg(&mut t, 1, 0);
    // The liar claims member 1 sent MAX_SEQ messages.
    t.handle_parts(member(9), 0, &h(9, 0, 0), &prev(9, 0), &[claim(1, MAX_SEQ)])
        .unwrap();
    let events = drain(&mut t);
    assert_eq!(
        events,
        vec![GapEvent::ImplausibleClaim {
            by: member(9),
            about: member(1),
            claimed: MAX_SEQ
        }]
    );
    // Member 1's messages still enter the tracking window: new, then
    // duplicates and equivocations are seen.
    assert_eq!(t.known_end(member(1)), 1);
    assert_eq!(msg(&mut t, 1, 1), Ingested::New);
    assert_eq!(msg(&mut t, 1, 1), Ingested::Duplicate);
    assert_eq!(
        t.handle_parts(member(1), 1, &h(1, 1, 7), &prev(1, 1), &[]),
        Ok(Ingested::Equivocation)
    );
    drain(&mut t);
    assert_eq!(t.missing_count(), 0);
    // Repeating the lie is reported once per liar, and changes nothing.
    t.handle_parts(member(9), 1, &h(9, 1, 0), &prev(9, 1), &[claim(1, MAX_SEQ)])
        .unwrap();
    assert_eq!(drain(&mut t).len(), 0);
    // A plausible claim (a few messages ahead) still opens a gap.
    t.handle_parts(member(9), 2, &h(9, 2, 0), &prev(9, 2), &[claim(1, 4)])
        .unwrap();
    assert_eq!(drain(&mut t), vec![missing(1, 2, 4)]);
    // Claims creep no further than MAX_CLAIM_AHEAD past what the member
    // itself has shown, however many messages repeat them.
    for i in 0..50u64 {
        let far = 2 + cwtch_proto::group::gap::MAX_CLAIM_AHEAD * (i + 1);
        t.handle_parts(
            member(9),
            3 + i,
            &h(9, 3 + i, 0),
            &prev(9, 3 + i),
            &[claim(1, far)],
        )
        .unwrap();
    }
    drain(&mut t);
    assert!(t.known_end(member(1)) <= 2 + cwtch_proto::group::gap::MAX_CLAIM_AHEAD);
}

#[test]
fn signing_sybils_cannot_displace_a_vouched_member() {
    let mut t: GapTracker<4, 8, 4, 32> = GapTracker::new();
    assert!(t.vouch(member(1)));
    msg(&mut t, 1, 0);
    // Sybils that really write (fresh keys) fill the rest of the table.
    for s in 50..60 {
        msg(&mut t, s, 0);
    }
    assert_eq!(t.known_end(member(1)), 1, "the vouched member stays");
    // A contact we vouch for later takes a stranger's place.
    assert!(t.vouch(member(2)));
    assert_eq!(msg(&mut t, 2, 0), Ingested::New);
    let events = drain(&mut t);
    assert!(events.iter().any(|e| matches!(e, GapEvent::Dropped { .. })));
    assert_eq!(t.known_end(member(1)), 1);
    assert_eq!(t.known_end(member(2)), 1);
    assert_eq!(t.missing_count(), 0);
}

// ---------------------------------------------------------------------------
// Property test against a reference model.

#[derive(Clone, Debug)]
struct Op {
    sender: u8,
    seq: u64,
    /// 0 is the real message; anything else a conflicting version.
    variant: u8,
    seen: Option<(u8, u64)>,
}

fn op() -> impl Strategy<Value = Op> {
    (
        0u8..4,
        0u64..40,
        prop_oneof![8 => Just(0u8), 1 => 1u8..3],
        proptest::option::of((0u8..4, 0u64..40)),
    )
        .prop_map(|(sender, seq, variant, seen)| Op {
            sender,
            seq,
            variant,
            seen,
        })
}

#[derive(Default)]
struct Model {
    /// Received (sender, seq) with the first variant received.
    received: BTreeMap<(u8, u64), u8>,
    end: BTreeMap<u8, u64>,
    reported: BTreeSet<(u8, u64)>,
    /// Every (sender, seq) some conflicting version of which was ingested.
    conflicting: BTreeSet<(u8, u64)>,
}

impl Model {
    fn learn(&mut self, sender: u8, last: u64) -> Option<(u64, u64)> {
        let end = self.end.entry(sender).or_insert(0);
        if last < *end {
            return None;
        }
        let first = *end;
        *end = last + 1;
        Some((first, last))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn tracker_matches_the_reference_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut t: GapTracker<16, 64, 64, 32> = GapTracker::new();
        let mut m = Model::default();
        let mut ever_missing: BTreeSet<(u8, u64)> = BTreeSet::new();
        for o in ops {
            let seen: Vec<SeenEntry> = o.seen.iter().map(|&(s, q)| SeenEntry { member: member(s), seq: q }).collect();
            if o.variant != 0 {
                m.conflicting.insert((o.sender, o.seq));
            }
            let got = t.handle_parts(member(o.sender), o.seq, &h(o.sender, o.seq, o.variant), &prev(o.sender, o.seq), &seen).unwrap();

            // Expected outcome and gap events from the model.
            let mut expect_missing = vec![];
            let expected = match m.received.get(&(o.sender, o.seq)) {
                Some(&v) if v == o.variant => Ingested::Duplicate,
                Some(_) => Ingested::Equivocation,
                None => {
                    let end = m.end.get(&o.sender).copied().unwrap_or(0);
                    m.received.insert((o.sender, o.seq), o.variant);
                    if o.seq < end {
                        Ingested::Recovered
                    } else {
                        if o.seq > end {
                            expect_missing.push(missing(o.sender, end, o.seq - 1));
                        }
                        m.end.insert(o.sender, o.seq + 1);
                        Ingested::New
                    }
                }
            };
            prop_assert_eq!(got, expected);
            if let Some((s, q)) = o.seen
                && s != o.sender
                && let Some((a, b)) = m.learn(s, q)
            {
                expect_missing.push(missing(s, a, b));
            }

            let events = drain(&mut t);
            let gaps: Vec<_> = events.iter().filter(|e| matches!(e, GapEvent::Missing(_))).copied().collect();
            prop_assert_eq!(gaps, expect_missing);
            for e in &events {
                match *e {
                    GapEvent::Missing(r) => {
                        for q in r.first..=r.last {
                            let s = r.member.0[0];
                            prop_assert!(!m.received.contains_key(&(s, q)) || (s == o.sender && q == o.seq));
                            // Never reported twice.
                            prop_assert!(ever_missing.insert((s, q)));
                            m.reported.insert((s, q));
                        }
                    }
                    GapEvent::Recovered(r) => {
                        prop_assert_eq!(expected, Ingested::Recovered);
                        prop_assert_eq!((r.member, r.seq), (member(o.sender), o.seq));
                        prop_assert!(m.reported.contains(&(o.sender, o.seq)));
                    }
                    GapEvent::Equivocation(r) => {
                        prop_assert!(m.conflicting.contains(&(r.member.0[0], r.seq)), "{:?}", r);
                    }
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
            if expected == Ingested::Equivocation {
                let eq = GapEvent::Equivocation(MessageRef { member: member(o.sender), seq: o.seq });
                prop_assert!(events.contains(&eq), "no equivocation event");
            }

            // The open gaps are exactly what was reported and not received.
            let open: BTreeSet<(u8, u64)> = t.missing().flat_map(|r| (r.first..=r.last).map(move |q| (r.member.0[0], q))).collect();
            let model_open: BTreeSet<(u8, u64)> = m.reported.iter().filter(|k| !m.received.contains_key(k)).copied().collect();
            prop_assert_eq!(open, model_open);
            for s in 0..4u8 {
                prop_assert_eq!(t.known_end(member(s)), m.end.get(&s).copied().unwrap_or(0));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Four members, one lossy server, real sealed blobs.

struct Member {
    id: cwtch_proto::Identity,
    mid: MemberId,
    chain: SenderChain,
    tracker: GapTracker,
    /// Everything the member learned from its tracker.
    events: Vec<GapEvent>,
    /// (sender, seq) the member received.
    have: BTreeSet<(MemberId, u64)>,
}

#[test]
fn four_members_over_a_lossy_server_see_every_gap_once() {
    let g = group(0x77, &[1]);
    let srv = g.servers()[0];
    let mut r = rng(0x99);
    let mut members: Vec<Member> = (0..4u8)
        .map(|i| {
            let id = identity(0x40 + i);
            let mid = g.id().member_id(&id.public());
            Member {
                id,
                mid,
                chain: SenderChain::new(),
                tracker: GapTracker::new(),
                events: vec![],
                have: BTreeSet::new(),
            }
        })
        .collect();
    // Members use a multi-group detector with a decoy group, as a client would.
    let decoy = group(0x78, &[1]);
    let mut detector: Detector<u8, 2> = Detector::new();
    detector.insert(0, g.keys().detection_key()).unwrap();
    detector.insert(1, decoy.keys().detection_key()).unwrap();

    // The server's log: every blob ever posted, with its (sender, seq).
    let mut log: Vec<(usize, u64, [u8; SEALED_BLOB_LEN])> = vec![];
    let silent_after_round = 4;
    let rounds = 10;

    let deliver = |m: &mut Member, blob: &[u8; SEALED_BLOB_LEN]| {
        assert_eq!(detector.detect(blob), Some(0));
        let mut work = [0u8; SEALED_BLOB_LEN];
        let opened = g.keys().open(&srv, blob, &mut work).unwrap();
        let fresh = m.have.insert((opened.member, opened.seq));
        let outcome = m.tracker.handle_message(&opened).unwrap();
        if opened.member != m.mid {
            assert_eq!(
                fresh,
                matches!(outcome, Ingested::New | Ingested::Recovered),
                "{outcome:?}"
            );
        }
        m.events
            .extend(core::iter::from_fn(|| m.tracker.poll_event()));
    };

    let send = |members: &mut Vec<Member>,
                who: usize,
                r: &mut chacha20::ChaCha20Rng,
                log: &mut Vec<(usize, u64, [u8; SEALED_BLOB_LEN])>| {
        let m = &mut members[who];
        let seen = m.tracker.seen_summary(Some(m.mid));
        let seq = m.chain.next_seq();
        let prev = m.chain.prev_hash();
        let mut blob = [0u8; SEALED_BLOB_LEN];
        let text = format!("message {seq} from {who}");
        let sealed = m
            .chain
            .seal_next(
                g.keys(),
                &m.id,
                &srv,
                MessageKind::TEXT,
                text.as_bytes(),
                cwtch_proto::UnixMicros::from_secs(seq),
                &seen,
                r,
                &mut blob,
            )
            .unwrap();
        // One's own message goes into one's own tracker right away.
        m.tracker
            .handle_parts(m.mid, seq, &sealed.hash, &prev, &seen)
            .unwrap();
        m.have.insert((m.mid, seq));
        m.events
            .extend(core::iter::from_fn(|| m.tracker.poll_event()));
        log.push((who, seq, blob));
    };

    for round in 0..rounds {
        // Who speaks this round: members 0-2 often, member 3 until it goes silent.
        let start = log.len();
        for who in 0..4 {
            if who == 3 && round >= silent_after_round {
                continue;
            }
            let times = (r.next_u32() % 3) as usize;
            for _ in 0..times {
                send(&mut members, who, &mut r, &mut log);
            }
        }
        // The server delivers the round's blobs to each member: withholding
        // some (never from everyone), duplicating some, in shuffled order.
        let new: Vec<usize> = (start..log.len()).collect();
        let mut withheld_from_all_but: BTreeMap<usize, usize> = BTreeMap::new();
        for &i in &new {
            withheld_from_all_but.insert(i, (r.next_u32() % 4) as usize);
        }
        for (k, m) in members.iter_mut().enumerate() {
            let mut queue: Vec<usize> = vec![];
            for &i in &new {
                let (sender, _, _) = log[i];
                if sender == k {
                    continue;
                }
                let keep = withheld_from_all_but[&i] == k || !r.next_u32().is_multiple_of(3);
                if keep {
                    queue.push(i);
                    if r.next_u32().is_multiple_of(5) {
                        queue.push(i);
                    }
                }
            }
            for j in (1..queue.len()).rev() {
                queue.swap(j, (r.next_u32() as usize) % (j + 1));
            }
            for i in queue {
                let blob = log[i].2;
                deliver(m, &blob);
            }
        }
    }
    // A last, reliable round: members 0-2 each speak once (member 3 stays
    // silent), and everyone receives these.
    let start = log.len();
    for who in 0..3 {
        send(&mut members, who, &mut r, &mut log);
    }
    for (k, m) in members.iter_mut().enumerate() {
        for (sender, _, blob) in &log[start..] {
            if *sender != k {
                deliver(m, blob);
            }
        }
    }

    // Every message a member lacks was reported missing exactly once, and
    // nothing it has was reported without a later recovery.
    let mut total_gaps = 0;
    let mut silent_gaps = 0;
    for (k, m) in members.iter().enumerate() {
        let mut reported: BTreeMap<(MemberId, u64), usize> = BTreeMap::new();
        for e in &m.events {
            match e {
                GapEvent::Missing(r) => {
                    for q in r.first..=r.last {
                        *reported.entry((r.member, q)).or_default() += 1;
                    }
                }
                GapEvent::Recovered(_) => {}
                other => panic!("member {k}: unexpected {other:?}"),
            }
        }
        assert!(
            reported.values().all(|&n| n == 1),
            "member {k}: a gap reported twice"
        );
        for (sender, seq, _) in &log {
            let key = (members[*sender].mid, *seq);
            if !m.have.contains(&key) {
                assert!(
                    reported.contains_key(&key),
                    "member {k} never learned that {sender}/{seq} is missing"
                );
                total_gaps += 1;
                if *sender == 3 {
                    silent_gaps += 1;
                }
            }
        }
        for key in reported.keys() {
            let recovered = m.events.contains(&GapEvent::Recovered(MessageRef {
                member: key.0,
                seq: key.1,
            }));
            assert_eq!(m.have.contains(key), recovered, "member {k}: {key:?}");
        }
        let open: BTreeSet<_> = m
            .tracker
            .missing()
            .flat_map(|r| (r.first..=r.last).map(move |q| (r.member, q)))
            .collect();
        let lacking: BTreeSet<_> = log
            .iter()
            .map(|(s, q, _)| (members[*s].mid, *q))
            .filter(|key| !m.have.contains(key))
            .collect();
        assert_eq!(open, lacking, "member {k}");
    }
    assert!(
        total_gaps > 10,
        "the server lost too little to test anything: {total_gaps}"
    );
    assert!(silent_gaps > 0, "no gap of the silent member to detect");

    // Recovery: each member fetches what it lacks (from another member or
    // server) by MessageRef; every gap closes.
    for k in 0..4 {
        let lacking: Vec<_> = members[k].tracker.missing().collect();
        for range in lacking {
            for q in range.first..=range.last {
                let (_, _, blob) = log
                    .iter()
                    .find(|(s, seq, _)| members[*s].mid == range.member && *seq == q)
                    .unwrap();
                let blob = *blob;
                deliver(&mut members[k], &blob);
            }
        }
        assert_eq!(members[k].tracker.missing().count(), 0);
    }
    eprintln!(
        "{} blobs, {total_gaps} gaps ({silent_gaps} of the silent member), all reported once and recovered",
        log.len()
    );
}

#[test]
fn default_tracker_memory_is_bounded() {
    let size = core::mem::size_of::<GapTracker>();
    eprintln!("GapTracker default size: {size} bytes");
    assert!(size <= 32 * 1024, "{size}");
}
