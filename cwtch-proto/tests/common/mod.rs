//! Two connections wired back to back in memory, on a virtual clock.
#![allow(dead_code)]

use std::collections::VecDeque;

use chacha20::ChaCha20Rng;
use cwtch_proto::channel::frame::FRAME_LEN;
use cwtch_proto::connection::{CloseReason, Config, Connection, ConnectionEvent};
use cwtch_proto::{Duration, Identity, Instant, PublicIdentity};
use rand_core::SeedableRng;

pub fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

pub fn identity(seed: u8) -> Identity {
    Identity::from_seed(&[seed; 32])
}

/// An owned copy of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    Incoming(PublicIdentity),
    Established(PublicIdentity),
    Message(Vec<u8>),
    Closed(CloseReason),
}

pub fn own(event: ConnectionEvent<'_>) -> Ev {
    match event {
        ConnectionEvent::IncomingPeer { remote } => Ev::Incoming(remote),
        ConnectionEvent::Established { remote } => Ev::Established(remote),
        ConnectionEvent::Message(m) => Ev::Message(m.to_vec()),
        ConnectionEvent::Closed(r) => Ev::Closed(r),
    }
}

/// One side: its connection, what it has received but not yet consumed,
/// and the events it produced.
pub struct Side {
    pub conn: Connection,
    pub inbox: VecDeque<u8>,
    pub events: Vec<Ev>,
    pub accept_incoming: bool,
    pub errors: Vec<cwtch_proto::connection::ConnectionError>,
}

impl Side {
    pub fn new(conn: Connection) -> Self {
        Side {
            conn,
            inbox: VecDeque::new(),
            events: Vec::new(),
            accept_incoming: true,
            errors: Vec::new(),
        }
    }

    /// Everything this side wants to send now, as separate wire units.
    pub fn transmit(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; FRAME_LEN];
        while let Ok(Some(n)) = self.conn.poll_transmit(now, &mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    }

    /// Feeds the inbox and drains events; returns whether anything moved.
    pub fn receive(&mut self, now: Instant) -> bool {
        let mut progress = false;
        loop {
            let data: Vec<u8> = self.inbox.iter().copied().collect();
            let consumed = match self.conn.handle_input(&data, now) {
                Ok(n) => n,
                Err(e) => {
                    self.errors.push(e);
                    data.len()
                }
            };
            self.inbox.drain(..consumed);
            progress |= consumed > 0;
            let mut any_event = false;
            while let Some(ev) = self.conn.poll_event() {
                any_event = true;
                let ev = own(ev);
                if matches!(ev, Ev::Incoming(_)) && self.accept_incoming {
                    self.events.push(ev);
                    self.conn.accept(now).unwrap();
                    continue;
                }
                self.events.push(ev);
            }
            progress |= any_event;
            if !any_event || self.inbox.is_empty() {
                return progress;
            }
        }
    }

    pub fn messages(&self) -> Vec<Vec<u8>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Ev::Message(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn closed(&self) -> Option<CloseReason> {
        self.events.iter().find_map(|e| match e {
            Ev::Closed(r) => Some(*r),
            _ => None,
        })
    }

    pub fn established(&self) -> Option<PublicIdentity> {
        self.events.iter().find_map(|e| match e {
            Ev::Established(r) => Some(*r),
            _ => None,
        })
    }
}

/// Initiator `a` and responder `b`, with a log of every wire unit each sent.
pub struct Pair {
    pub a: Side,
    pub b: Side,
    pub now: Instant,
    pub a_sent: Vec<Vec<u8>>,
    pub b_sent: Vec<Vec<u8>>,
}

impl Pair {
    pub fn new(a: Connection, b: Connection) -> Self {
        Pair {
            a: Side::new(a),
            b: Side::new(b),
            now: Instant::from_secs(1_000),
            a_sent: Vec::new(),
            b_sent: Vec::new(),
        }
    }

    /// Alice (seed 1) dials Bob (seed 2) with the default config.
    pub fn alice_bob() -> Self {
        Pair::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> Self {
        let now = Instant::from_secs(1_000);
        let a = Connection::initiator(config, identity(1), identity(2).public(), &mut rng(11), now);
        let b = Connection::responder(config, identity(2), &mut rng(12), now);
        Pair::new(a, b)
    }

    /// One round: both transmit, both receive. Returns whether anything moved.
    pub fn step(&mut self) -> bool {
        let now = self.now;
        let from_a = self.a.transmit(now);
        let from_b = self.b.transmit(now);
        let mut progress = !from_a.is_empty() || !from_b.is_empty();
        for unit in from_a {
            self.b.inbox.extend(&unit);
            self.a_sent.push(unit);
        }
        for unit in from_b {
            self.a.inbox.extend(&unit);
            self.b_sent.push(unit);
        }
        progress |= self.b.receive(now);
        progress |= self.a.receive(now);
        progress
    }

    /// Steps until nothing moves.
    pub fn drive(&mut self) {
        for _ in 0..10_000 {
            if !self.step() {
                return;
            }
        }
        panic!("no quiescence after 10000 steps");
    }

    /// Advances the virtual clock, firing timers that are due.
    pub fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        for side in [&mut self.a, &mut self.b] {
            if side.conn.poll_timeout().is_some_and(|t| t <= self.now) {
                side.conn.handle_timeout(self.now);
            }
        }
        self.drive();
    }
}
