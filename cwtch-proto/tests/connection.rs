//! Two peers on a virtual clock: handshake, channel, timers, and the attacks
//! the channel must survive. Each misuse test is named after what it tries.

mod common;

use common::{Ev, Pair, Side, identity, rng};
use cwtch_proto::channel::frame::FRAME_LEN;
use cwtch_proto::channel::{ChannelError, MAX_MESSAGE_LEN, SendError};
use cwtch_proto::connection::{CloseReason, Config, Connection, ConnectionError, Timeout};
use cwtch_proto::handshake::{HandshakeError, MSG1_LEN, MSG2_LEN};
use cwtch_proto::{Duration, Instant};

fn established_pair() -> Pair {
    let mut p = Pair::alice_bob();
    p.drive();
    assert_eq!(p.a.established(), Some(identity(2).public()));
    assert_eq!(p.b.established(), Some(identity(1).public()));
    p
}

fn send(side: &mut Side, msg: &[u8]) {
    side.conn.send(msg).unwrap();
}

#[test]
fn handshake_completes_and_messages_flow_both_ways() {
    let mut p = established_pair();
    assert_eq!(p.a_sent[0].len(), MSG1_LEN);
    assert_eq!(p.b_sent[0].len(), MSG2_LEN);
    // The responder announced the caller before accepting it.
    assert_eq!(p.b.events[0], Ev::Incoming(identity(1).public()));
    assert_eq!(p.a.conn.handshake_hash(), p.b.conn.handshake_hash());

    send(&mut p.a, b"hello bob");
    p.drive();
    send(&mut p.b, b"hello alice");
    p.drive();
    assert_eq!(p.b.messages(), vec![b"hello bob".to_vec()]);
    assert_eq!(p.a.messages(), vec![b"hello alice".to_vec()]);
}

#[test]
fn multi_frame_messages_of_every_awkward_size_arrive_whole() {
    let mut p = established_pair();
    let sizes = [
        0,
        1,
        478,
        479,
        480,
        958,
        959,
        4000,
        MAX_MESSAGE_LEN - 1,
        MAX_MESSAGE_LEN,
    ];
    for (i, &size) in sizes.iter().enumerate() {
        let msg: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8).collect();
        send(&mut p.a, &msg);
        p.drive();
        send(&mut p.b, &msg);
        p.drive();
        assert_eq!(p.b.messages().last(), Some(&msg), "a->b size {size}");
        assert_eq!(p.a.messages().last(), Some(&msg), "b->a size {size}");
    }
    // Every unit after the handshake is one constant-size frame.
    assert!(p.a_sent[1..].iter().all(|f| f.len() == FRAME_LEN));
    assert!(p.b_sent[1..].iter().all(|f| f.len() == FRAME_LEN));
}

#[test]
fn bytes_fed_one_at_a_time_give_the_same_result() {
    let mut p = established_pair();
    let msg = vec![7u8; 3000];
    send(&mut p.a, &msg);
    let frames = p.a.transmit(p.now);
    let mut delivered = Vec::new();
    for byte in frames.concat() {
        let n = p.b.conn.handle_input(&[byte], p.now).unwrap();
        assert_eq!(n, 1);
        while let Some(ev) = p.b.conn.poll_event() {
            delivered.push(common::own(ev));
        }
    }
    assert_eq!(delivered, vec![Ev::Message(msg)]);
}

#[test]
fn anonymous_initiator_shows_a_fresh_identity_each_time() {
    let server = identity(2);
    let mut seen = Vec::new();
    for seed in 0..3 {
        let now = Instant::from_secs(5);
        let a = Connection::anonymous_initiator(
            Config::default(),
            server.public(),
            &mut rng(100 + seed),
            now,
        );
        let b = Connection::responder(Config::default(), server.clone(), &mut rng(200 + seed), now);
        let mut p = Pair::new(a, b);
        p.drive();
        let caller = p.b.established().expect("established");
        assert_eq!(p.a.established(), Some(server.public()));
        send(&mut p.a, b"post");
        p.drive();
        assert_eq!(p.b.messages(), vec![b"post".to_vec()]);
        seen.push(caller);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "each anonymous session has its own identity");
}

#[test]
fn wrong_responder_key_fails_authentication() {
    let now = Instant::from_secs(5);
    // Alice believes she dialed carol (seed 3), but bob (seed 2) answers.
    let a = Connection::initiator(
        Config::default(),
        identity(1),
        identity(3).public(),
        &mut rng(1),
        now,
    );
    let b = Connection::responder(Config::default(), identity(2), &mut rng(2), now);
    let mut p = Pair::new(a, b);
    p.drive();
    assert_eq!(
        p.b.closed(),
        Some(CloseReason::Error(ConnectionError::Handshake(
            HandshakeError::Authentication
        )))
    );
    assert_eq!(p.a.established(), None);
    // Bob sent nothing back; alice gives up at her handshake deadline.
    assert!(p.b_sent.is_empty());
    p.advance(Duration::from_secs(61));
    assert_eq!(
        p.a.closed(),
        Some(CloseReason::TimedOut(Timeout::Handshake))
    );
}

#[test]
fn replayed_handshake_message_never_establishes() {
    let original = established_pair();
    let msg1 = original.a_sent[0].clone();
    let confirm = original.a_sent[1].clone();
    // An attacker replays alice's message 1 (and her first frame) to bob.
    let now = Instant::from_secs(2_000);
    let mut bob = Side::new(Connection::responder(
        Config::default(),
        identity(2),
        &mut rng(77),
        now,
    ));
    bob.inbox.extend(&msg1);
    bob.receive(now);
    // Message 1 alone authenticates alice's static key (as in Noise IK), so
    // bob answers; but only alice can derive the new session's keys.
    assert_eq!(bob.events[0], Ev::Incoming(identity(1).public()));
    let _msg2 = bob.transmit(now);
    bob.inbox.extend(&confirm);
    bob.receive(now);
    assert_eq!(bob.established(), None);
    assert_eq!(
        bob.closed(),
        Some(CloseReason::Error(ConnectionError::Channel(
            ChannelError::Authentication
        )))
    );
    // Replaying bob's old message 2 to a new alice fails too.
    let mut alice = Side::new(Connection::initiator(
        Config::default(),
        identity(1),
        identity(2).public(),
        &mut rng(78),
        now,
    ));
    let _ = alice.transmit(now);
    alice.inbox.extend(&original.b_sent[0]);
    alice.receive(now);
    assert_eq!(
        alice.closed(),
        Some(CloseReason::Error(ConnectionError::Handshake(
            HandshakeError::Authentication
        )))
    );
}

/// Sends three messages from alice and returns their frames, undelivered.
fn three_frames(p: &mut Pair) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for m in [&b"one"[..], b"two", b"three"] {
        send(&mut p.a, m);
        frames.extend(p.a.transmit(p.now));
    }
    assert_eq!(frames.len(), 3);
    frames
}

fn deliver(p: &mut Pair, frame: &[u8]) {
    p.b.inbox.extend(frame);
    p.b.receive(p.now);
}

fn assert_failed_with(side: &Side, error: ChannelError) {
    assert_eq!(
        side.closed(),
        Some(CloseReason::Error(ConnectionError::Channel(error)))
    );
}

#[test]
fn replayed_frame_is_rejected_and_ends_the_session() {
    let mut p = established_pair();
    let frames = three_frames(&mut p);
    deliver(&mut p, &frames[0]);
    deliver(&mut p, &frames[0]);
    assert_eq!(p.b.messages(), vec![b"one".to_vec()]);
    assert_failed_with(&p.b, ChannelError::Authentication);
    // Nothing is accepted afterwards, not even the genuine next frame.
    deliver(&mut p, &frames[1]);
    assert_eq!(p.b.messages().len(), 1);
}

#[test]
fn reordered_frames_are_rejected() {
    let mut p = established_pair();
    let frames = three_frames(&mut p);
    deliver(&mut p, &frames[1]);
    assert!(p.b.messages().is_empty());
    assert_failed_with(&p.b, ChannelError::Authentication);
}

#[test]
fn bit_flipped_frame_is_rejected_at_every_position() {
    for bit in (0..FRAME_LEN * 8).step_by(37).chain([FRAME_LEN * 8 - 1]) {
        let mut p = established_pair();
        let mut frames = three_frames(&mut p);
        frames[0][bit / 8] ^= 1 << (bit % 8);
        deliver(&mut p, &frames[0]);
        assert!(p.b.messages().is_empty(), "bit {bit}");
        assert_failed_with(&p.b, ChannelError::Authentication);
    }
}

#[test]
fn truncated_frame_then_end_of_stream_is_reported_as_truncation() {
    let mut p = established_pair();
    let frames = three_frames(&mut p);
    deliver(&mut p, &frames[0][..FRAME_LEN - 1]);
    assert!(p.b.messages().is_empty());
    p.b.conn.handle_eof();
    p.b.receive(p.now);
    assert_eq!(
        p.b.closed(),
        Some(CloseReason::Error(ConnectionError::Truncated))
    );
}

#[test]
fn end_of_stream_after_a_close_frame_is_clean() {
    let mut p = established_pair();
    send(&mut p.a, b"last words");
    p.a.conn.close();
    assert_eq!(p.a.conn.send(b"more"), Err(SendError::Closed));
    p.drive();
    assert_eq!(p.a.closed(), Some(CloseReason::Local));
    assert_eq!(p.b.messages(), vec![b"last words".to_vec()]);
    assert_eq!(p.b.closed(), Some(CloseReason::Remote(0)));
    p.b.conn.handle_eof();
    p.b.receive(p.now);
    assert_eq!(
        p.b.events
            .iter()
            .filter(|e| matches!(e, Ev::Closed(_)))
            .count(),
        1,
        "Closed is reported once"
    );
}

#[test]
fn oversize_message_is_refused_before_anything_is_sent() {
    let mut p = established_pair();
    let big = vec![0u8; MAX_MESSAGE_LEN + 1];
    assert_eq!(
        p.a.conn.send(&big),
        Err(SendError::TooLarge {
            len: MAX_MESSAGE_LEN + 1
        })
    );
    assert!(p.a.transmit(p.now).is_empty());
}

#[test]
fn second_message_while_one_is_in_flight_is_busy() {
    let mut p = established_pair();
    send(&mut p.a, b"first");
    assert_eq!(p.a.conn.send(b"second"), Err(SendError::Busy));
    assert!(!p.a.conn.can_send());
    p.drive();
    assert!(p.a.conn.can_send());
}

#[test]
fn sending_before_the_handshake_finishes_is_refused() {
    let p = Pair::alice_bob();
    let mut a = p.a;
    assert_eq!(a.conn.send(b"too early"), Err(SendError::NotEstablished));
}

#[test]
fn too_small_output_buffer_is_an_error_value() {
    let mut p = Pair::alice_bob();
    let mut small = [0u8; MSG1_LEN - 1];
    assert_eq!(
        p.a.conn.poll_transmit(p.now, &mut small),
        Err(ConnectionError::BufferTooSmall { required: MSG1_LEN })
    );
    // Nothing was lost: a big enough buffer gets message 1.
    let mut buf = [0u8; FRAME_LEN];
    assert_eq!(p.a.conn.poll_transmit(p.now, &mut buf), Ok(Some(MSG1_LEN)));
    p.b.inbox.extend(&buf[..MSG1_LEN]);
    p.drive();
    send(&mut p.a, b"x");
    let mut small = [0u8; FRAME_LEN - 1];
    assert_eq!(
        p.a.conn.poll_transmit(p.now, &mut small),
        Err(ConnectionError::BufferTooSmall {
            required: FRAME_LEN
        })
    );
}

#[test]
fn refused_peer_gets_no_reply() {
    let mut p = Pair::alice_bob();
    p.b.accept_incoming = false;
    p.drive();
    assert_eq!(p.b.events, vec![Ev::Incoming(identity(1).public())]);
    p.b.conn.refuse().unwrap();
    p.drive();
    assert_eq!(p.b.closed(), Some(CloseReason::Refused));
    assert!(p.b_sent.is_empty(), "a blocked peer learns nothing");
    assert_eq!(p.b.conn.accept(p.now), Err(ConnectionError::InvalidState));
}

#[test]
fn unsupported_version_is_named() {
    let p = Pair::alice_bob();
    let mut a = p.a;
    let mut msg1 = a.transmit(p.now).remove(0);
    msg1[0] = 2;
    let mut b = p.b;
    b.inbox.extend(&msg1);
    b.receive(p.now);
    assert_eq!(
        b.closed(),
        Some(CloseReason::Error(ConnectionError::Handshake(
            HandshakeError::UnsupportedVersion { version: 2 }
        )))
    );
}

#[test]
fn keepalive_frames_flow_when_idle_and_idle_peers_time_out() {
    let mut p = established_pair();
    let sent_before = p.a_sent.len();
    // Twenty seconds of silence: both send a padding frame, and stay up.
    p.advance(Duration::from_secs(21));
    assert!(p.a_sent.len() > sent_before);
    assert!(p.a.closed().is_none() && p.b.closed().is_none());
    assert!(p.b.messages().is_empty(), "padding is not a message");
    // The deadline moved after firing (no busy loop).
    assert!(p.a.conn.poll_timeout().unwrap() > p.now);
    // Bob goes silent (his frames are dropped): alice closes after 90 s.
    for _ in 0..10 {
        p.now = p.now + Duration::from_secs(10);
        if p.a.conn.poll_timeout().is_some_and(|t| t <= p.now) {
            p.a.conn.handle_timeout(p.now);
        }
        let _ = p.a.transmit(p.now);
        p.a.receive(p.now);
    }
    assert_eq!(p.a.closed(), Some(CloseReason::TimedOut(Timeout::Idle)));
    assert_eq!(p.a.conn.poll_timeout(), None);
}

#[test]
fn a_spurious_timeout_is_a_no_op() {
    let mut p = established_pair();
    let deadline = p.a.conn.poll_timeout().unwrap();
    p.a.conn.handle_timeout(p.now);
    assert_eq!(p.a.conn.poll_timeout(), Some(deadline));
    assert!(p.a.transmit(p.now).is_empty());
}

#[test]
fn rekeying_every_few_frames_keeps_the_session_working() {
    let config = Config {
        rekey_interval: 3,
        ..Config::default()
    };
    let mut p = Pair::with_config(config);
    p.drive();
    for i in 0..20u32 {
        let msg = vec![i as u8; 1200]; // three frames each
        send(&mut p.a, &msg);
        send(&mut p.b, &msg);
        p.drive();
        assert_eq!(p.b.messages().last(), Some(&msg));
        assert_eq!(p.a.messages().last(), Some(&msg));
    }
    // A peer that does not rekey cannot talk to one that does.
    let mut p = Pair::new(
        Connection::initiator(
            config,
            identity(1),
            identity(2).public(),
            &mut rng(1),
            p.now,
        ),
        Connection::responder(Config::default(), identity(2), &mut rng(2), p.now),
    );
    p.drive();
    let msg = vec![1u8; 479 * 4];
    send(&mut p.a, &msg);
    p.drive();
    assert!(p.b.messages().is_empty());
    assert_failed_with(&p.b, ChannelError::Authentication);
}
