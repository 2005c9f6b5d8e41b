//! The rules of a peer link (SPEC.md section 4, "Rules"; `peer::session`):
//! what each side says on establishment, which messages are acted upon at
//! which standing, acknowledgement only after storing, and the tie-break
//! of two simultaneous links, which both sides must agree on.

use cwtch_proto::peer::message::MAX_ENCODED_LEN;
use cwtch_proto::peer::session::{admit, keep_new_link};
use cwtch_proto::peer::{
    Incoming, PeerEvent, PeerMessage, PeerMessageError, PeerRefusal, PeerSession, PeerSessionError,
    Standing,
};
use cwtch_proto::{Identity, OnionAddress};
use proptest::prelude::*;

fn enc(msg: &PeerMessage<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_ENCODED_LEN];
    msg.encode(&mut buf).unwrap().to_vec()
}

/// One message of every kind, in kind order.
fn every_kind() -> Vec<Vec<u8>> {
    vec![
        enc(&PeerMessage::Hello { name: "bob" }),
        enc(&PeerMessage::Text {
            id: 7,
            sent_at: 1,
            text: "hi",
        }),
        enc(&PeerMessage::Ack { id: 3 }),
        enc(&PeerMessage::GroupInvite {
            id: 8,
            invite: &[1, 2],
        }),
        enc(&PeerMessage::ResendRequest {
            id: 9,
            wanted: &[3],
        }),
        enc(&PeerMessage::ResendBlob { id: 9, blob: &[4] }),
        enc(&PeerMessage::ServerAdvert { advert: &[5] }),
        enc(&PeerMessage::MoveBlob { blob: &[6] }),
    ]
}

fn actions(s: &mut PeerSession) -> Vec<PeerEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Which kinds a session acts upon.
fn acted_upon(s: &PeerSession) -> Vec<u8> {
    every_kind()
        .iter()
        .enumerate()
        .filter(|(_, m)| s.clone().handle_message(m).is_ok())
        .map(|(k, _)| k as u8)
        .collect()
}

#[test]
fn an_accepted_peer_is_greeted_once_and_may_send_everything() {
    let mut s = PeerSession::new(Standing::Accepted);
    assert_eq!(actions(&mut s), vec![PeerEvent::Greet]);
    s.handle_standing(Standing::Accepted);
    assert_eq!(actions(&mut s), vec![], "greeted once per link");
    assert_eq!(acted_upon(&s), (0..8).collect::<Vec<u8>>());
}

#[test]
fn a_pending_request_hears_nothing_and_may_only_say_hello_and_text() {
    let mut s = PeerSession::new(Standing::Request);
    assert_eq!(actions(&mut s), vec![], "not even our name");
    assert_eq!(acted_upon(&s), vec![0, 1]);
    let invite = &every_kind()[3];
    assert_eq!(
        s.handle_message(invite),
        Err(PeerSessionError::NotAllowed {
            kind: 3,
            standing: Standing::Request
        })
    );
    // The user accepts while the link is up: greet now, and invites count.
    s.handle_standing(Standing::Accepted);
    assert_eq!(actions(&mut s), vec![PeerEvent::Greet]);
    assert!(matches!(
        s.handle_message(invite),
        Ok(Incoming::GroupInvite { id: 8, .. })
    ));
}

#[test]
fn a_stranger_becomes_a_request_if_there_is_room_else_is_closed() {
    let mut s = PeerSession::new(Standing::Stranger {
        room_for_request: true,
    });
    assert_eq!(actions(&mut s), vec![PeerEvent::RecordRequest]);
    assert_eq!(s.standing(), Standing::Request);
    assert_eq!(acted_upon(&s), vec![0, 1]);

    let mut s = PeerSession::new(Standing::Stranger {
        room_for_request: false,
    });
    assert_eq!(
        actions(&mut s),
        vec![PeerEvent::Close(PeerRefusal::TooManyRequests)]
    );
    assert!(s.is_closed());
    assert_eq!(acted_upon(&s), vec![]);
    assert_eq!(
        s.handle_message(&every_kind()[0]),
        Err(PeerSessionError::Closed)
    );
}

#[test]
fn a_blocked_peer_is_closed_and_nothing_it_sends_is_acted_upon() {
    let mut s = PeerSession::new(Standing::Blocked);
    assert_eq!(
        actions(&mut s),
        vec![PeerEvent::Close(PeerRefusal::Blocked)]
    );
    assert_eq!(acted_upon(&s), vec![]);

    // Blocked mid-link: a pending greet is dropped, the link closes, and
    // accepting later does not reopen it.
    let mut s = PeerSession::new(Standing::Accepted);
    s.handle_standing(Standing::Blocked);
    assert_eq!(
        actions(&mut s),
        vec![PeerEvent::Close(PeerRefusal::Blocked)]
    );
    s.handle_standing(Standing::Accepted);
    assert_eq!(actions(&mut s), vec![]);
    assert_eq!(acted_upon(&s), vec![]);
}

#[test]
fn the_ack_is_made_only_from_the_token_of_the_stored_message() {
    let mut s = PeerSession::new(Standing::Accepted);
    let text = enc(&PeerMessage::Text {
        id: 300,
        sent_at: 2,
        text: "stored?",
    });
    let Ok(Incoming::Text { id, text, ack, .. }) = s.handle_message(&text) else {
        panic!("a text from a contact is acted upon");
    };
    assert_eq!((id, text, ack.id()), (300, "stored?", 300));
    // SPEC.md section 4 vector: Ack{id:300} = 02 ac 02.
    assert_eq!(enc(&ack.stored()), vec![0x02, 0xac, 0x02]);
    // Their ack of our message is a delivery report, never answered.
    assert_eq!(
        s.handle_message(&[0x02, 0xac, 0x02]),
        Ok(Incoming::Delivered { id: 300 })
    );
}

#[test]
fn malformed_messages_are_refused_typed_and_the_session_stays() {
    let mut s = PeerSession::new(Standing::Accepted);
    let _ = actions(&mut s);
    for bad in [
        &[][..],
        &[0xff][..],
        &[0x01, 0x01][..],
        &[0x00, 0x00, 0x00][..],
    ] {
        assert!(
            matches!(s.handle_message(bad), Err(PeerSessionError::Malformed(_))),
            "{bad:?}"
        );
    }
    let long = enc(&PeerMessage::Hello { name: "x" });
    let mut too_long = vec![0x00, 65];
    too_long.extend(std::iter::repeat_n(b'a', 65));
    assert!(matches!(
        s.handle_message(&too_long),
        Err(PeerSessionError::Malformed(
            PeerMessageError::TooLong { .. }
        ))
    ));
    assert!(s.handle_message(&long).is_ok(), "still serving");
    assert!(!s.is_closed());
}

#[test]
fn admission_at_the_handshake() {
    assert_eq!(admit(Standing::Accepted), Ok(()));
    assert_eq!(admit(Standing::Request), Ok(()));
    assert_eq!(admit(Standing::Blocked), Err(PeerRefusal::Blocked));
    assert_eq!(
        admit(Standing::Stranger {
            room_for_request: true
        }),
        Ok(())
    );
    assert_eq!(
        admit(Standing::Stranger {
            room_for_request: false
        }),
        Err(PeerRefusal::TooManyRequests)
    );
}

fn address(seed: u8) -> OnionAddress {
    Identity::from_seed(&[seed; 32]).address()
}

#[test]
fn the_link_dialed_by_the_smaller_address_survives() {
    let (a, b) = (address(1), address(2));
    let (small, big) = if a.as_str() < b.as_str() {
        (a, b)
    } else {
        (b, a)
    };
    // From the smaller side: a link we dialed is kept against theirs.
    assert!(!keep_new_link(&small, &big, true, false));
    assert!(keep_new_link(&small, &big, false, true));
    // From the bigger side: the link they dialed is kept against ours.
    assert!(!keep_new_link(&big, &small, false, true));
    assert!(keep_new_link(&big, &small, true, false));
    // A reconnect by the same side replaces the old link.
    for (l, r) in [(&small, &big), (&big, &small)] {
        assert!(keep_new_link(l, r, true, true));
        assert!(keep_new_link(l, r, false, false));
    }
}

fn standing() -> impl Strategy<Value = Standing> {
    prop_oneof![
        Just(Standing::Accepted),
        Just(Standing::Request),
        Just(Standing::Blocked),
        any::<bool>().prop_map(|room_for_request| Standing::Stranger { room_for_request }),
    ]
}

proptest! {
    /// Both ends of two simultaneous links keep the same one.
    #[test]
    fn both_sides_keep_the_same_link(x in any::<u8>(), y in any::<u8>(),
                                      first_by_x in any::<bool>(), second_by_x in any::<bool>()) {
        prop_assume!(x != y);
        let (ax, ay) = (address(x), address(y));
        // The link that survives, named by who dialed it, as each side sees it.
        let survivor = |local_is_x: bool| {
            let (l, r) = if local_is_x { (&ax, &ay) } else { (&ay, &ax) };
            let existing_we = first_by_x == local_is_x;
            let new_we = second_by_x == local_is_x;
            if keep_new_link(l, r, existing_we, new_we) { second_by_x } else { first_by_x }
        };
        prop_assert_eq!(survivor(true), survivor(false));
    }

    /// Whatever the standing changes and the bytes: no panic; nothing from
    /// a blocked peer or after a close; from a pending request only Hello
    /// and Text; a Greet at most once.
    #[test]
    fn the_table_holds_for_any_history(
        first in standing(),
        changes in proptest::collection::vec(standing(), 0..6),
        inputs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..12),
    ) {
        let mut s = PeerSession::new(first);
        let mut greets = actions(&mut s).iter().filter(|a| **a == PeerEvent::Greet).count();
        let mut history = vec![first];
        let mut inputs = inputs.into_iter();
        for change in changes {
            history.push(change);
            s.handle_standing(change);
            greets += actions(&mut s).iter().filter(|a| **a == PeerEvent::Greet).count();
            for bytes in inputs.by_ref().take(2).chain(every_kind()) {
                let result = s.handle_message(&bytes);
                if s.is_closed() {
                    prop_assert_eq!(result, Err(PeerSessionError::Closed));
                    continue;
                }
                if let Ok(m) = result {
                    match s.standing() {
                        Standing::Accepted => {}
                        Standing::Request => {
                            let chat = matches!(m, Incoming::Hello { .. } | Incoming::Text { .. });
                            prop_assert!(chat, "more than chat from a request");
                        }
                        other => prop_assert!(false, "acted upon at {:?}", other),
                    }
                }
            }
        }
        prop_assert!(greets <= 1);
        if history.contains(&Standing::Blocked) {
            prop_assert!(s.is_closed());
        }
    }
}

/// A name is taken once per link: a stranger renaming itself every frame
/// would cost the application a durable write each time.
#[test]
fn a_second_hello_on_one_link_is_refused() {
    let mut s = PeerSession::new(Standing::Stranger {
        room_for_request: true,
    });
    let a = enc(&PeerMessage::Hello { name: "a" });
    let b = enc(&PeerMessage::Hello { name: "b" });
    assert!(matches!(
        s.handle_message(&a),
        Ok(cwtch_proto::peer::Incoming::Hello { name: "a" })
    ));
    assert_eq!(
        s.handle_message(&b),
        Err(cwtch_proto::peer::PeerSessionError::HelloAgain)
    );
    // A new link starts over.
    let mut t = PeerSession::new(Standing::Accepted);
    assert!(t.handle_message(&b).is_ok());
}
