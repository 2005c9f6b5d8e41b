//! Two connections driven by an arbitrary sequence of steps: genuine
//! traffic, garbage injected into either stream, bit flips, drops and
//! duplicates of frames in flight, sends, closes, EOFs and virtual time.
//! Invariants: no panic; no message is delivered that was not sent, and
//! messages arrive in order; `Closed` is the last event and comes once; the
//! deadline never lies in the past after `handle_timeout`.
#![no_main]

use arbitrary::Arbitrary;
use chacha20::ChaCha20Rng;
use cwtch_proto::channel::frame::FRAME_LEN;
use cwtch_proto::connection::{Config, Connection, ConnectionEvent};
use cwtch_proto::{Duration, Instant};
use libfuzzer_sys::fuzz_target;
use rand_core::SeedableRng;

#[derive(Arbitrary, Debug)]
enum Step {
    /// Move up to n bytes of in-flight data from one side to the other.
    Deliver {
        to_b: bool,
        n: u16,
    },
    /// Inject arbitrary bytes into a side's input.
    Garbage {
        to_b: bool,
        bytes: Vec<u8>,
    },
    /// Flip a bit of the data in flight.
    Flip {
        to_b: bool,
        pos: u16,
    },
    /// Drop up to n bytes in flight.
    Drop {
        to_b: bool,
        n: u16,
    },
    /// Duplicate the first n bytes in flight.
    Duplicate {
        to_b: bool,
        n: u16,
    },
    /// The application sends a message of this length.
    Send {
        from_a: bool,
        len: u16,
    },
    Close {
        a: bool,
    },
    Eof {
        a: bool,
    },
    Tick {
        millis: u32,
    },
}

struct Side {
    conn: Connection,
    inbox: Vec<u8>,
    sent: Vec<Vec<u8>>,
    got: Vec<Vec<u8>>,
    closed: bool,
}

impl Side {
    fn pump(&mut self, now: Instant, out: &mut Vec<u8>) {
        let mut buf = [0u8; FRAME_LEN];
        while let Ok(Some(n)) = self.conn.poll_transmit(now, &mut buf) {
            out.extend_from_slice(&buf[..n]);
        }
        for _ in 0..64 {
            let consumed = match self.conn.handle_input(&self.inbox, now) {
                Ok(n) => n,
                Err(_) => self.inbox.len(),
            };
            self.inbox.drain(..consumed.min(self.inbox.len()));
            let mut any = false;
            while let Some(ev) = self.conn.poll_event() {
                any = true;
                assert!(!self.closed, "an event after Closed");
                match ev {
                    ConnectionEvent::IncomingPeer { .. } => {
                        let _ = self.conn.accept(now);
                    }
                    ConnectionEvent::Message(m) => self.got.push(m.to_vec()),
                    ConnectionEvent::Closed(_) => self.closed = true,
                    ConnectionEvent::Established { .. } => {}
                }
            }
            if !any {
                break;
            }
        }
    }
}

fn check_prefix(sent: &[Vec<u8>], got: &[Vec<u8>]) {
    assert!(got.len() <= sent.len(), "more messages than were sent");
    assert_eq!(
        got,
        &sent[..got.len()],
        "a message that was not sent, or out of order"
    );
}

fuzz_target!(|steps: Vec<Step>| {
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let mut now = Instant::from_secs(1);
    let config = Config {
        rekey_interval: 4,
        ..Config::default()
    };
    let alice = cwtch_fuzz::identity(1);
    let bob = cwtch_fuzz::identity(2);
    let mut a = Side {
        conn: Connection::initiator(config, alice, bob.public(), &mut rng, now),
        inbox: Vec::new(),
        sent: Vec::new(),
        got: Vec::new(),
        closed: false,
    };
    let mut b = Side {
        conn: Connection::responder(config, bob, &mut rng, now),
        inbox: Vec::new(),
        sent: Vec::new(),
        got: Vec::new(),
        closed: false,
    };
    let (mut a_to_b, mut b_to_a) = (Vec::new(), Vec::new());
    for step in steps.into_iter().take(128) {
        a.pump(now, &mut a_to_b);
        b.pump(now, &mut b_to_a);
        match step {
            Step::Deliver { to_b, n } => {
                let (wire, side) = if to_b {
                    (&mut a_to_b, &mut b)
                } else {
                    (&mut b_to_a, &mut a)
                };
                let n = usize::from(n).min(wire.len());
                side.inbox.extend(wire.drain(..n));
            }
            Step::Garbage { to_b, bytes } => {
                let side = if to_b { &mut b } else { &mut a };
                side.inbox.extend(bytes.iter().take(4096));
            }
            Step::Flip { to_b, pos } => {
                let wire = if to_b { &mut a_to_b } else { &mut b_to_a };
                if !wire.is_empty() {
                    let bit = usize::from(pos) % (wire.len() * 8);
                    wire[bit / 8] ^= 1 << (bit % 8);
                }
            }
            Step::Drop { to_b, n } => {
                let wire = if to_b { &mut a_to_b } else { &mut b_to_a };
                let n = usize::from(n).min(wire.len());
                wire.drain(..n);
            }
            Step::Duplicate { to_b, n } => {
                let wire = if to_b { &mut a_to_b } else { &mut b_to_a };
                let n = usize::from(n).min(wire.len());
                let copy: Vec<u8> = wire[..n].to_vec();
                wire.splice(0..0, copy);
            }
            Step::Send { from_a, len } => {
                let side = if from_a { &mut a } else { &mut b };
                // Mostly short messages (up to 3 frames), sometimes up to
                // and past the 8 KiB limit: long messages cost the fuzzer
                // many AEAD calls and teach it little more.
                let len = if len >= 0xf000 {
                    usize::from(len - 0xf000) % 9000
                } else {
                    usize::from(len) % 1500
                };
                let msg: Vec<u8> = (0..len)
                    .map(|i| (i % 251) as u8 ^ side.sent.len() as u8)
                    .collect();
                if side.conn.send(&msg).is_ok() {
                    side.sent.push(msg);
                }
            }
            Step::Close { a: is_a } => {
                if is_a {
                    a.conn.close()
                } else {
                    b.conn.close()
                }
            }
            Step::Eof { a: is_a } => {
                if is_a {
                    a.conn.handle_eof()
                } else {
                    b.conn.handle_eof()
                }
            }
            Step::Tick { millis } => {
                now = now + Duration::from_millis(u64::from(millis));
                for side in [&mut a, &mut b] {
                    if side.conn.poll_timeout().is_some_and(|t| t <= now) {
                        side.conn.handle_timeout(now);
                        // The deadline moved past now: no busy loop.
                        assert!(side.conn.poll_timeout().is_none_or(|t| t > now));
                    }
                }
            }
        }
        // Bounded: nothing in the core grows; our test wires are capped.
        a_to_b.truncate(1 << 16);
        b_to_a.truncate(1 << 16);
        check_prefix(&a.sent, &b.got);
        check_prefix(&b.sent, &a.got);
    }
});
