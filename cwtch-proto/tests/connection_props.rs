//! Property tests: whatever happens to the byte stream (random splits,
//! drops, duplicates, reorders, corruption), a connection never panics,
//! never delivers a message that was not sent or out of order, and either
//! completes correctly or fails with a typed error.

mod common;

use common::{Ev, Pair};
use cwtch_proto::connection::CloseReason;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Perturb {
    Drop(usize),
    Duplicate(usize),
    Swap(usize, usize),
    Flip(usize, u16),
}

fn perturb() -> impl Strategy<Value = Perturb> {
    prop_oneof![
        any::<usize>().prop_map(Perturb::Drop),
        any::<usize>().prop_map(Perturb::Duplicate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Perturb::Swap(a, b)),
        (any::<usize>(), any::<u16>()).prop_map(|(a, b)| Perturb::Flip(a, b)),
    ]
}

fn apply(units: &mut Vec<Vec<u8>>, p: &Perturb) {
    if units.is_empty() {
        return;
    }
    let n = units.len();
    match *p {
        Perturb::Drop(i) => {
            units.remove(i % n);
        }
        Perturb::Duplicate(i) => {
            let u = units[i % n].clone();
            units.insert(i % n, u);
        }
        Perturb::Swap(i, j) => units.swap(i % n, j % n),
        Perturb::Flip(i, bit) => {
            let u = &mut units[i % n];
            let bit = usize::from(bit) % (u.len() * 8);
            u[bit / 8] ^= 1 << (bit % 8);
        }
    }
}

fn feed_in_chunks(
    side: &mut common::Side,
    bytes: &[u8],
    splits: &[usize],
    now: cwtch_proto::Instant,
) {
    let mut rest = bytes;
    let mut i = 0;
    while !rest.is_empty() {
        let take = (splits.get(i).copied().unwrap_or(rest.len()) % 700 + 1).min(rest.len());
        side.inbox.extend(&rest[..take]);
        side.receive(now);
        rest = &rest[take..];
        i += 1;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_splits_never_change_what_arrives(
        sizes in prop::collection::vec(0usize..3000, 1..6),
        splits in prop::collection::vec(any::<usize>(), 0..64),
    ) {
        let mut p = Pair::alice_bob();
        p.drive();
        let msgs: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| vec![i as u8; n]).collect();
        let mut wire = Vec::new();
        for m in &msgs {
            p.a.conn.send(m).unwrap();
            wire.extend(p.a.transmit(p.now).concat());
        }
        feed_in_chunks(&mut p.b, &wire, &splits, p.now);
        prop_assert_eq!(p.b.messages(), msgs);
        prop_assert!(p.b.closed().is_none());
    }

    #[test]
    fn perturbed_streams_never_deliver_forgeries_or_reorderings(
        sizes in prop::collection::vec(0usize..1500, 1..5),
        perturbations in prop::collection::vec(perturb(), 1..4),
        splits in prop::collection::vec(any::<usize>(), 0..32),
    ) {
        // The whole initiator-to-responder stream is attacked, handshake included.
        let mut p = Pair::alice_bob();
        let msg1 = p.a.transmit(p.now);
        p.b.inbox.extend(msg1.concat());
        p.b.receive(p.now);
        let msg2 = p.b.transmit(p.now);
        p.a.inbox.extend(msg2.concat());
        p.a.receive(p.now);
        let msgs: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| vec![i as u8 + 1; n]).collect();
        let mut units = msg1;
        units.extend(p.a.transmit(p.now)); // the confirmation frame
        for m in &msgs {
            if p.a.conn.send(m).is_ok() {
                units.extend(p.a.transmit(p.now));
            }
        }
        let original = units.clone();
        for pert in &perturbations {
            apply(&mut units, pert);
        }
        // Rebuild a fresh responder and feed it the attacked stream.
        let mut b = common::Side::new(cwtch_proto::connection::Connection::responder(
            Default::default(), common::identity(2), &mut common::rng(12), p.now));
        feed_in_chunks(&mut b, &units.concat(), &splits, p.now);
        let got = b.messages();
        prop_assert!(got.len() <= msgs.len());
        prop_assert_eq!(&got[..], &msgs[..got.len()], "only a prefix of what was sent, in order");
        if units == original {
            prop_assert_eq!(got, msgs);
        } else if got.len() < msgs.len() {
            // Something was lost: the responder either failed with a typed
            // error or is still waiting for the rest (a dropped tail).
            let failed = matches!(b.closed(), Some(CloseReason::Error(_)));
            let waiting = b.closed().is_none();
            prop_assert!(failed || waiting);
        }
        prop_assert!(b.events.iter().filter(|e| matches!(e, Ev::Closed(_))).count() <= 1);
    }
}
