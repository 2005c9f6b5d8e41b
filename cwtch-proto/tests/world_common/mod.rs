//! One simulated world: two peers (alice, bob) and one server, every state
//! machine of the core driven together on a virtual clock, with no sockets.
//!
//! The model is quinn-proto's `tests/util.rs`: [`World::step`] lets every
//! party do all it can at the current instant (read its input, act on its
//! events, write its output) and says whether anything moved;
//! [`World::drive`] steps until nothing moves; only then does time pass,
//! and only as far as the earliest deadline any machine announced with
//! `poll_timeout` ([`World::run_until`], [`World::run_for`]). After firing
//! the timers that are due, the harness asserts that no deadline is left in
//! the past: a machine whose `handle_timeout` does not move its deadline
//! would make a real driver spin.
//!
//! The world:
//!
//! - a peer link: an initiator and a responder [`Connection`] whose frames
//!   move between two in-memory pipes, with a [`PeerSession`] on each side,
//!   made from the owner's tiny contact list;
//! - a server link per peer: the peer's anonymous [`Connection`] and its
//!   [`ServerClient`], the server's responder [`Connection`] and its
//!   [`ServerSession`], over one shared in-memory store (`MemStore`) with a
//!   group commit after every step ([`ServerSession::handle_durable`]);
//! - per peer, the application: its contact list, stored texts, the
//!   outgoing queue (resent on every link until acknowledged), and for the
//!   group it is in a [`SenderChain`], a [`GapTracker`], a [`Recovery`],
//!   [`OpenRequests`], an [`AnswerBudget`] per contact and the kept blobs.
//!
//! Randomness is seeded and nothing iterates a hash map, so every run is
//! identical. The wall clock used for sealing is derived from the virtual
//! clock ([`wall`]).
#![allow(dead_code)]

use std::collections::VecDeque;

use chacha20::ChaCha20Rng;
use cwtch_proto::channel::frame::FRAME_LEN;
use cwtch_proto::connection::{CloseReason, Config, Connection, ConnectionError};
use cwtch_proto::group::control::{MoveNotice, ResendWanted, WANTED_MAX_LEN};
use cwtch_proto::group::invite::INVITE_MAX_LEN;
use cwtch_proto::group::moving::{NoticeVerdict, judge_notice};
use cwtch_proto::group::recovery::{
    AnswerBudget, AnswerRefused, MAX_ANSWER_BLOBS, OpenRequests, Recovery, RecoveryConfig,
    RecoveryEvent,
};
use cwtch_proto::group::{
    GapEvent, GapTracker, Group, Ingested, Invite, MemberId, MessageHash, MessageKind, OpenError,
    SEALED_BLOB_LEN, SenderChain, ServerList,
};
use cwtch_proto::peer::message::MAX_ENCODED_LEN;
use cwtch_proto::peer::requests::{PendingRequests, RequestOrigin, request_text_allowed};
use cwtch_proto::peer::session::admit;
use cwtch_proto::peer::{
    Incoming, PeerEvent, PeerMessage, PeerRefusal, PeerSession, PeerSessionError, Standing,
};
use cwtch_proto::server::wire::MAX_SERVER_MESSAGE_LEN;
use cwtch_proto::server::{
    ClientConfig, ClientEvent, PostId, RefusalReason, Reply, Request, ServerClient, ServerConfig,
    ServerEvent, ServerSession,
};
use cwtch_proto::{Duration, Identity, Instant, OnionAddress, PublicIdentity, UnixMicros};
use rand_core::{Rng, SeedableRng};

use crate::common::{Ev, own};
use crate::server_common::MemStore;

pub type Blob = [u8; SEALED_BLOB_LEN];

/// The virtual clock's start.
pub const START: Instant = Instant::from_secs(1_000);
/// Our wall clock at [`Instant::ZERO`] (late 2025).
pub const WALL_AT_ZERO_SECS: u64 = 1_764_000_000;
/// Bytes the server may have in flight towards a client before it stops
/// writing (back-pressure: replies wait in the session, not in the pipe).
pub const DOWN_WINDOW: usize = 16 * FRAME_LEN;
/// The one-way delay of every link unless a test says otherwise: messages
/// cross in flight, and timers run while bytes travel.
pub const LATENCY: Duration = Duration::from_millis(50);
/// Steps [`World::drive`] allows before it calls the world livelocked.
pub const MAX_STEPS: u64 = 20_000;

/// The wall clock of every party at virtual time `now` (all clocks agree).
pub fn wall(now: Instant) -> UnixMicros {
    UnixMicros::from_secs(WALL_AT_ZERO_SECS).saturating_add(Duration::from_micros(now.as_micros()))
}

pub fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

/// Encodes a peer message.
pub fn enc(msg: &PeerMessage<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_ENCODED_LEN];
    msg.encode(&mut buf).expect("a valid peer message").to_vec()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Who {
    Alice,
    Bob,
}

pub use Who::{Alice, Bob};

impl Who {
    pub fn i(self) -> usize {
        self as usize
    }
    pub fn other(self) -> Who {
        match self {
            Alice => Bob,
            Bob => Alice,
        }
    }
}

// ----- the application of one peer ---------------------------------------

/// How a group message reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Sealed by us (not yet served back).
    Sealed,
    /// From the server: a page entry or a live push.
    Server { index: u64, live: bool },
    /// A recovery answer from a member.
    Recovered,
    /// A move notice from a member, over the peer link.
    MoveBlob,
}

/// One message of a group's history, as a member holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Said {
    pub sender: PublicIdentity,
    pub seq: u64,
    pub kind: MessageKind,
    pub body: Vec<u8>,
    pub hash: MessageHash,
    pub via: Via,
}

/// A sealed blob kept to answer recovery requests.
pub struct Kept {
    pub member: MemberId,
    pub seq: u64,
    pub blob: Box<Blob>,
}

/// A peer's state in its group.
pub struct Member {
    pub group: Group,
    pub me: MemberId,
    pub chain: SenderChain,
    pub tracker: GapTracker,
    pub recovery: Recovery,
    pub open: OpenRequests,
    pub budgets: Vec<(PublicIdentity, AnswerBudget)>,
    pub kept: Vec<Kept>,
    /// Messages in the order they reached us (own ones when served back).
    pub history: Vec<Said>,
    pub gaps: Vec<(Instant, GapEvent)>,
    pub asks: Vec<Instant>,
    pub gave_up: Vec<Instant>,
    /// Recovery requests of others that we answered: (id, blobs sent).
    pub answered: Vec<(u64, usize)>,
    pub refused_answers: Vec<AnswerRefused>,
    pub open_errors: Vec<OpenError>,
    /// The time of the move notice the servers come from.
    pub notice_at: UnixMicros,
    /// Every server the group was on (current or moved away from).
    pub read_servers: Vec<OnionAddress>,
    pub verdicts: Vec<NoticeVerdict>,
}

impl Member {
    pub fn new(group: Group, me: &PublicIdentity, config: RecoveryConfig) -> Self {
        let me = group.id().member_id(me);
        let read_servers = group.servers().to_vec();
        Member {
            group,
            me,
            chain: SenderChain::new(),
            tracker: GapTracker::new(),
            recovery: Recovery::new(config),
            open: OpenRequests::new(),
            budgets: Vec::new(),
            kept: Vec::new(),
            history: Vec::new(),
            gaps: Vec::new(),
            asks: Vec::new(),
            gave_up: Vec::new(),
            answered: Vec::new(),
            refused_answers: Vec::new(),
            open_errors: Vec::new(),
            notice_at: UnixMicros::EPOCH,
            read_servers,
            verdicts: Vec::new(),
        }
    }

    pub fn member_id(&self, who: &PublicIdentity) -> MemberId {
        self.group.id().member_id(who)
    }

    fn drain_gaps(&mut self, now: Instant) {
        while let Some(e) = self.tracker.poll_event() {
            self.gaps.push((now, e));
        }
        self.recovery.handle_gaps(now, self.tracker.missing_count());
    }

    fn keep(&mut self, member: MemberId, seq: u64, blob: &[u8]) {
        if !self.kept.iter().any(|k| k.member == member && k.seq == seq) {
            let mut b = Box::new([0u8; SEALED_BLOB_LEN]);
            b.copy_from_slice(blob);
            self.kept.push(Kept {
                member,
                seq,
                blob: b,
            });
        }
    }

    /// Verifies and takes in a blob from `servers` (the one it was fetched
    /// from, or every server the group reads for a blob from a member).
    /// `answer`: it answers our recovery request `id` sent to that peer.
    fn ingest(
        &mut self,
        blob: &[u8],
        servers: &[OnionAddress],
        via: Via,
        now: Instant,
        answer: Option<(u64, OnionAddress)>,
    ) -> Option<Ingested> {
        let keys = self.group.keys().clone();
        if let Some((id, peer)) = answer {
            match self.open.expected(id, &peer, now) {
                Ok(g) if g == *keys.id().as_bytes() => {}
                Ok(_) => return None, // another group: not ours in this world
                Err(e) => {
                    self.refused_answers.push(e);
                    return None;
                }
            }
        }
        let mut work = [0u8; SEALED_BLOB_LEN];
        for server in servers {
            let msg = match keys.open(server, blob, &mut work) {
                Ok(m) => m,
                Err(OpenError::WrongServer) => continue,
                Err(e) => {
                    self.open_errors.push(e);
                    return None;
                }
            };
            if let Some((id, peer)) = answer
                && let Err(e) =
                    self.open
                        .take_answer(id, &peer, keys.id().as_bytes(), msg.member, msg.seq, now)
            {
                self.refused_answers.push(e);
                return None;
            }
            let ingested = self
                .tracker
                .handle_message(&msg)
                .expect("the tracker's events are drained after every input");
            self.drain_gaps(now);
            // A duplicate, or a stale message (older than the tracker's
            // window), is new to us if our storage does not hold it: our own
            // messages come back from the server as either.
            let stored = self.history.iter().any(|s| s.hash == msg.hash);
            if ingested != Ingested::Equivocation && !stored {
                self.history.push(Said {
                    sender: msg.sender,
                    seq: msg.seq,
                    kind: msg.kind,
                    body: msg.body.to_vec(),
                    hash: msg.hash,
                    via,
                });
                self.keep(msg.member, msg.seq, blob);
                if msg.kind == MessageKind::MOVE && msg.member != self.me {
                    let verdict = match MoveNotice::decode(msg.body) {
                        Ok(notice) => {
                            let verdict = judge_notice(msg.timestamp, self.notice_at, wall(now));
                            if let NoticeVerdict::Follow { at } = verdict {
                                self.follow(notice.servers(), at);
                            }
                            Some(verdict)
                        }
                        Err(_) => None,
                    };
                    self.verdicts.extend(verdict);
                }
            }
            return Some(ingested);
        }
        self.open_errors.push(OpenError::WrongServer);
        None
    }

    /// The group uses `servers` from now on (a followed notice of time `at`,
    /// or our own move).
    pub fn follow(&mut self, servers: &[OnionAddress], at: UnixMicros) {
        self.notice_at = at;
        let list: ServerList = servers.iter().copied().collect();
        self.group = Group::from_secret(self.group.secret().clone(), list);
        for s in servers {
            if !self.read_servers.contains(s) {
                self.read_servers.push(*s);
            }
        }
    }

    /// The history as (sender, seq, body), for comparing members.
    pub fn said(&self) -> Vec<(PublicIdentity, u64, Vec<u8>)> {
        self.history
            .iter()
            .map(|s| (s.sender, s.seq, s.body.clone()))
            .collect()
    }
}

/// One peer: its identity and its application state.
pub struct Peer {
    pub who: Who,
    pub name: &'static str,
    pub identity: Identity,
    pub rng: ChaCha20Rng,
    /// The tiny contact list.
    pub contacts: Vec<(PublicIdentity, Standing)>,
    /// Contact requests recorded (`PeerEvent::RecordRequest`).
    pub requests: Vec<PublicIdentity>,
    /// Names learned from `Hello`s.
    pub names: Vec<(PublicIdentity, String)>,
    /// Texts stored: (from, id, text), each (from, id) once.
    pub texts: Vec<(PublicIdentity, u64, String)>,
    /// Texts and invites not acknowledged yet: (id, encoded message). Sent
    /// on every link once it greets, in order, until the `Ack` comes.
    pub outbox: Vec<(u64, Vec<u8>)>,
    /// Ids the peer acknowledged (`Incoming::Delivered`), in order.
    pub delivered: Vec<u64>,
    /// Messages sent once, on the next greeted link (recovery, moves).
    pub unsent: VecDeque<Vec<u8>>,
    /// Messages the session refused.
    pub refused: Vec<PeerSessionError>,
    /// Peers turned away at the handshake.
    pub turned_away: Vec<PeerRefusal>,
    pub member: Option<Member>,
    /// Sealed posts waiting for room in the server client.
    pub to_post: VecDeque<(PostId, Box<Blob>)>,
    pub next_post: u64,
    /// `Posted` events: (post, index, when).
    pub posted: Vec<(PostId, u64, Instant)>,
    /// `PostRefused` events: (post, reason, retry_at, when).
    pub post_refused: Vec<(PostId, RefusalReason, Option<Instant>, Instant)>,
    /// Every blob the server gave us: (index, live).
    pub server_blobs: Vec<(u64, bool)>,
    /// The other client events.
    pub client_events: Vec<ClientEvent>,
    /// Test hook: answer a recovery request with every kept blob of the
    /// member asked about, named or not (a careless or hostile member).
    pub answer_everything: bool,
    pub recovery_config: RecoveryConfig,
}

impl Peer {
    fn new(who: Who, name: &'static str, seed: u8) -> Self {
        Peer {
            who,
            name,
            identity: Identity::from_seed(&[seed; 32]),
            rng: rng(seed.wrapping_add(100)),
            contacts: Vec::new(),
            requests: Vec::new(),
            names: Vec::new(),
            texts: Vec::new(),
            outbox: Vec::new(),
            delivered: Vec::new(),
            unsent: VecDeque::new(),
            refused: Vec::new(),
            turned_away: Vec::new(),
            member: None,
            to_post: VecDeque::new(),
            next_post: 0,
            posted: Vec::new(),
            post_refused: Vec::new(),
            server_blobs: Vec::new(),
            client_events: Vec::new(),
            answer_everything: false,
            recovery_config: RecoveryConfig::default(),
        }
    }

    pub fn public(&self) -> PublicIdentity {
        self.identity.public()
    }

    pub fn member(&self) -> &Member {
        self.member.as_ref().expect("in the group")
    }

    /// How we stand with `remote`, as the contact list says.
    pub fn standing(&self, remote: &PublicIdentity) -> Standing {
        match self.contacts.iter().find(|(p, _)| p == remote) {
            Some((_, s)) => *s,
            None => Standing::Stranger {
                room_for_request: PendingRequests {
                    online: self.requests.len(),
                    mailbox: 0,
                }
                .room_for(RequestOrigin::Online),
            },
        }
    }

    pub fn set_contact(&mut self, remote: PublicIdentity, standing: Standing) {
        self.contacts.retain(|(p, _)| *p != remote);
        self.contacts.push((remote, standing));
    }

    fn texts_from(&self, remote: &PublicIdentity) -> u32 {
        self.texts.iter().filter(|(p, _, _)| p == remote).count() as u32
    }

    /// Acts on one message the session let through; replies go to `out`.
    fn on_incoming(
        &mut self,
        remote: PublicIdentity,
        incoming: Incoming<'_>,
        now: Instant,
        out: &mut VecDeque<Vec<u8>>,
    ) {
        match incoming {
            Incoming::Hello { name } => self.names.push((remote, name.to_string())),
            Incoming::Text { id, text, ack, .. } => {
                let stored = self.texts.iter().any(|(p, i, _)| *p == remote && *i == id);
                if !stored {
                    if self.standing(&remote) == Standing::Request
                        && !request_text_allowed(self.texts_from(&remote))
                    {
                        return; // neither stored nor acknowledged
                    }
                    self.texts.push((remote, id, text.to_string()));
                }
                out.push_back(enc(&ack.stored()));
            }
            Incoming::Delivered { id } => {
                self.outbox.retain(|(i, _)| *i != id);
                self.delivered.push(id);
            }
            Incoming::GroupInvite { invite, ack, .. } => {
                if let Ok(invite) = Invite::decode(invite)
                    && self.member.is_none()
                {
                    let mut m = Member::new(invite.group(), &self.public(), self.recovery_config);
                    let inviter = m.member_id(invite.inviter());
                    m.tracker.vouch(inviter);
                    self.member = Some(m);
                }
                out.push_back(enc(&ack.stored()));
            }
            Incoming::ResendRequest { id, wanted } => self.answer(remote, id, wanted, now, out),
            Incoming::ResendBlob { id, blob } => {
                if let Some(m) = &mut self.member {
                    let servers = m.read_servers.clone();
                    m.ingest(
                        blob,
                        &servers,
                        Via::Recovered,
                        now,
                        Some((id, remote.address())),
                    );
                }
            }
            Incoming::ServerAdvert { .. } => {}
            Incoming::MoveBlob { blob } => {
                if let Some(m) = &mut self.member {
                    let servers = m.read_servers.clone();
                    m.ingest(blob, &servers, Via::MoveBlob, now, None);
                }
            }
        }
    }

    /// A member asks us for blobs: answer from the kept ones, within the
    /// contact's budget.
    fn answer(
        &mut self,
        remote: PublicIdentity,
        id: u64,
        wanted: &[u8],
        now: Instant,
        out: &mut VecDeque<Vec<u8>>,
    ) {
        let everything = self.answer_everything;
        let Some(m) = &mut self.member else { return };
        let Ok(wanted) = ResendWanted::decode(wanted) else {
            return;
        };
        if wanted.group() != m.group.id().as_bytes() {
            return; // not a group we are in: say nothing
        }
        if !m.budgets.iter().any(|(p, _)| *p == remote) {
            m.budgets.push((remote, AnswerBudget::new(now)));
        }
        let Some((_, budget)) = m.budgets.iter_mut().find(|(p, _)| *p == remote) else {
            return;
        };
        if !budget.take_request(now) {
            return;
        }
        let mut sent = 0;
        if everything {
            // Unasked-for blobs first: the asker must drop them.
            for r in wanted.ranges() {
                for k in m
                    .kept
                    .iter()
                    .filter(|k| k.member == r.member && !r.contains(k.seq))
                {
                    out.push_back(enc(&PeerMessage::ResendBlob {
                        id,
                        blob: &k.blob[..],
                    }));
                    sent += 1;
                }
            }
        }
        'ranges: for r in wanted.ranges() {
            for seq in r.first..=r.last {
                if sent >= MAX_ANSWER_BLOBS || !budget.take(now) {
                    break 'ranges;
                }
                if let Some(k) = m.kept.iter().find(|k| k.member == r.member && k.seq == seq) {
                    out.push_back(enc(&PeerMessage::ResendBlob {
                        id,
                        blob: &k.blob[..],
                    }));
                    sent += 1;
                }
            }
        }
        m.answered.push((id, sent));
    }

    fn on_client_event(&mut self, event: ClientEvent, server: OnionAddress, now: Instant) {
        match event {
            ClientEvent::Blob { index, blob, live } => {
                self.server_blobs.push((index, live));
                if let Some(m) = &mut self.member
                    && m.group.keys().detect(&blob)
                {
                    m.ingest(&blob, &[server], Via::Server { index, live }, now, None);
                }
            }
            ClientEvent::Posted { post, index } => self.posted.push((post, index, now)),
            ClientEvent::PostRefused {
                post,
                reason,
                retry_at,
            } => self.post_refused.push((post, reason, retry_at, now)),
            other => self.client_events.push(other),
        }
    }
}

// ----- transports ----------------------------------------------------------

/// One direction of a stream: bytes written at `t` can be read from
/// `t + latency` on, in order.
pub struct Pipe {
    pub latency: Duration,
    flight: VecDeque<(Instant, Vec<u8>)>,
    /// Arrived and not yet consumed by the reader.
    pub ready: VecDeque<u8>,
    /// Bytes written so far.
    pub written: u64,
}

impl Pipe {
    pub fn new(latency: Duration) -> Self {
        Pipe {
            latency,
            flight: VecDeque::new(),
            ready: VecDeque::new(),
            written: 0,
        }
    }

    fn write(&mut self, now: Instant, bytes: &[u8]) {
        self.written += bytes.len() as u64;
        if self.latency == Duration::ZERO {
            self.ready.extend(bytes);
        } else {
            self.flight.push_back((now + self.latency, bytes.to_vec()));
        }
    }

    /// Moves what has arrived by `now` to `ready`.
    fn deliver(&mut self, now: Instant) -> bool {
        let mut moved = false;
        while self.flight.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, bytes)) = self.flight.pop_front() {
                self.ready.extend(bytes);
                moved = true;
            }
        }
        moved
    }

    /// When the next bytes in flight arrive.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.flight.front().map(|(at, _)| *at)
    }

    /// Bytes written and not yet read.
    pub fn backlog(&self) -> usize {
        self.ready.len() + self.flight.iter().map(|(_, b)| b.len()).sum::<usize>()
    }
}

/// One side of the peer link.
pub struct LinkEnd {
    pub owner: Who,
    pub conn: Connection,
    pub session: Option<PeerSession>,
    pub remote: Option<PublicIdentity>,
    pub greeted: bool,
    /// Outbox ids already sent on this link.
    pub outbox_sent: Vec<u64>,
    /// Messages waiting for the channel.
    pub out: VecDeque<Vec<u8>>,
    /// Every message written to the channel, in order.
    pub sent: Vec<Vec<u8>>,
    pub events: Vec<Ev>,
    pub errors: Vec<ConnectionError>,
    pub frames: u64,
}

impl LinkEnd {
    fn new(owner: Who, conn: Connection) -> Self {
        LinkEnd {
            owner,
            conn,
            session: None,
            remote: None,
            greeted: false,
            outbox_sent: Vec::new(),
            out: VecDeque::new(),
            sent: Vec::new(),
            events: Vec::new(),
            errors: Vec::new(),
            frames: 0,
        }
    }

    pub fn closed(&self) -> Option<CloseReason> {
        self.events.iter().find_map(|e| match e {
            Ev::Closed(r) => Some(*r),
            _ => None,
        })
    }

    /// One turn: input, the session's events, the application, output.
    fn step(&mut self, peer: &mut Peer, input: &mut Pipe, output: &mut Pipe, now: Instant) -> bool {
        let mut moved = false;
        let input = &mut input.ready;
        loop {
            let consumed = match self.conn.handle_input(input.make_contiguous(), now) {
                Ok(n) => n,
                Err(e) => {
                    self.errors.push(e);
                    input.len()
                }
            };
            input.drain(..consumed);
            moved |= consumed > 0;
            let mut any = false;
            while let Some(ev) = self.conn.poll_event() {
                any = true;
                let ev = own(ev);
                match &ev {
                    Ev::Incoming(remote) => match admit(peer.standing(remote)) {
                        Ok(()) => self.conn.accept(now).expect("a peer is waiting"),
                        Err(why) => {
                            peer.turned_away.push(why);
                            self.conn.refuse().expect("a peer is waiting");
                        }
                    },
                    Ev::Established(remote) => {
                        self.remote = Some(*remote);
                        self.session = Some(PeerSession::new(peer.standing(remote)));
                    }
                    Ev::Message(bytes) => {
                        if let (Some(session), Some(remote)) = (&mut self.session, self.remote) {
                            match session.handle_message(bytes) {
                                Ok(incoming) => {
                                    peer.on_incoming(remote, incoming, now, &mut self.out)
                                }
                                Err(e) => peer.refused.push(e),
                            }
                        }
                    }
                    Ev::Closed(_) => {}
                }
                self.events.push(ev);
            }
            moved |= any;
            if !any || input.is_empty() {
                break;
            }
        }
        moved |= self.act(peer);
        let mut buf = [0u8; FRAME_LEN];
        loop {
            while let Ok(Some(n)) = self.conn.poll_transmit(now, &mut buf) {
                output.write(now, &buf[..n]);
                self.frames += 1;
                moved = true;
            }
            if !self.conn.can_send() {
                break;
            }
            let Some(msg) = self.out.pop_front() else {
                break;
            };
            self.conn.send(&msg).expect("can_send said so");
            self.sent.push(msg);
        }
        moved
    }

    /// What the session asks for, and what the application has to say.
    fn act(&mut self, peer: &mut Peer) -> bool {
        let mut moved = false;
        let (Some(session), Some(remote)) = (&mut self.session, self.remote) else {
            return false;
        };
        while let Some(event) = session.poll_event() {
            moved = true;
            match event {
                PeerEvent::Greet => {
                    self.out
                        .push_back(enc(&PeerMessage::Hello { name: peer.name }));
                    self.greeted = true;
                }
                PeerEvent::RecordRequest => {
                    peer.requests.push(remote);
                    peer.set_contact(remote, Standing::Request);
                }
                PeerEvent::Close(_) => self.conn.close(),
            }
        }
        if self.greeted && !session.is_closed() {
            for (id, msg) in &peer.outbox {
                if !self.outbox_sent.contains(id) {
                    self.outbox_sent.push(*id);
                    self.out.push_back(msg.clone());
                    moved = true;
                }
            }
            while let Some(msg) = peer.unsent.pop_front() {
                self.out.push_back(msg);
                moved = true;
            }
        }
        moved
    }
}

/// The peer link: `ends[0]` dialed `ends[1]`; `wires[i]` carries what
/// `ends[i]` wrote.
pub struct PeerLink {
    pub ends: [LinkEnd; 2],
    pub wires: [Pipe; 2],
}

impl PeerLink {
    pub fn end(&self, who: Who) -> &LinkEnd {
        self.ends
            .iter()
            .find(|e| e.owner == who)
            .expect("both peers are on the link")
    }
    pub fn end_mut(&mut self, who: Who) -> &mut LinkEnd {
        self.ends
            .iter_mut()
            .find(|e| e.owner == who)
            .expect("both peers are on the link")
    }
}

/// What the server does with a reply it is about to send to one client.
pub type Filter = Box<dyn FnMut(&Reply<'_>) -> bool>;

/// A peer's connection to the server, both sides.
pub struct ServerLink {
    pub owner: Who,
    pub client_conn: Connection,
    pub client: ServerClient,
    pub server_conn: Connection,
    pub session: Option<ServerSession>,
    /// Client to server bytes.
    pub up: Pipe,
    /// Server to client bytes.
    pub down: Pipe,
    /// Requests read from the channel that the session did not want yet.
    pub server_in: VecDeque<Vec<u8>>,
    /// Every request the session took, decoded to a short form.
    pub requests: Vec<Req>,
    pub server_events: Vec<ServerEvent>,
    pub client_conn_events: Vec<Ev>,
    pub server_conn_events: Vec<Ev>,
    /// Replies the server drops instead of sending (`true`: withhold).
    pub withhold: Option<Filter>,
    pub withheld: u64,
    /// `poll_work` calls made.
    pub work_steps: u64,
}

/// A request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Req {
    Post { pow: bool },
    Fetch { after: u64 },
    Subscribe { after: u64 },
    Other,
}

impl ServerLink {
    fn step(
        &mut self,
        peer: &mut Peer,
        server: &mut ServerSide,
        now: Instant,
        work: Option<u64>,
    ) -> bool {
        let mut moved = false;
        let mut buf = vec![0u8; MAX_SERVER_MESSAGE_LEN];
        // --- the server's side: read only while no request waits (the
        // bytes stay in the pipe: that is the back-pressure).
        while self.server_in.is_empty() {
            let up = &mut self.up.ready;
            let consumed = match self.server_conn.handle_input(up.make_contiguous(), now) {
                Ok(n) => n,
                Err(_) => up.len(),
            };
            up.drain(..consumed);
            moved |= consumed > 0;
            let mut any = false;
            while let Some(ev) = self.server_conn.poll_event() {
                any = true;
                let ev = own(ev);
                match &ev {
                    Ev::Incoming(_) => self.server_conn.accept(now).expect("a client waits"),
                    Ev::Established(_) => {
                        self.session = Some(ServerSession::new(
                            server.config,
                            &server.store,
                            &mut server.rng,
                            now,
                        ));
                    }
                    Ev::Message(m) => self.server_in.push_back(m.clone()),
                    Ev::Closed(_) => {}
                }
                self.server_conn_events.push(ev);
            }
            moved |= any;
            if !any || self.up.ready.is_empty() {
                break;
            }
        }
        if let Some(s) = &mut self.session {
            while s.wants_request() {
                let Some(req) = self.server_in.pop_front() else {
                    break;
                };
                self.requests.push(match Request::decode(&req) {
                    Ok(Request::Post { pow, .. }) => Req::Post { pow: pow.is_some() },
                    Ok(Request::Fetch { after, .. }) => Req::Fetch { after },
                    Ok(Request::Subscribe { after }) => Req::Subscribe { after },
                    _ => Req::Other,
                });
                s.handle_message(&req, now, &mut server.store)
                    .expect("taken only when wanted");
                moved = true;
            }
            while let Some(e) = s.poll_event() {
                if matches!(e, ServerEvent::Closed { .. }) {
                    self.server_conn.close();
                }
                self.server_events.push(e);
                moved = true;
            }
        }
        loop {
            while let Ok(Some(n)) = self.server_conn.poll_transmit(now, &mut buf) {
                self.down.write(now, &buf[..n]);
                moved = true;
            }
            let Some(s) = &mut self.session else { break };
            if !self.server_conn.can_send() || self.down.backlog() >= DOWN_WINDOW {
                break;
            }
            let Some(n) = s
                .poll_transmit(&server.store, &mut buf)
                .expect("the buffer holds any reply")
            else {
                break;
            };
            moved = true;
            let reply = Reply::decode(&buf[..n]).expect("the session sends valid replies");
            if self.withhold.as_mut().is_some_and(|f| f(&reply)) {
                self.withheld += 1;
                continue;
            }
            self.server_conn.send(&buf[..n]).expect("can_send said so");
        }
        // --- the client's side.
        loop {
            let down = &mut self.down.ready;
            let consumed = match self.client_conn.handle_input(down.make_contiguous(), now) {
                Ok(n) => n,
                Err(_) => down.len(),
            };
            down.drain(..consumed);
            moved |= consumed > 0;
            let mut any = false;
            while let Some(ev) = self.client_conn.poll_event() {
                any = true;
                if let cwtch_proto::connection::ConnectionEvent::Message(m) = ev {
                    self.client
                        .handle_message(m, now)
                        .expect("an honest server, and events are drained");
                    while let Some(e) = self.client.poll_event() {
                        peer.on_client_event(e, server.address, now);
                    }
                } else {
                    self.client_conn_events.push(own(ev));
                }
            }
            moved |= any;
            if !any || self.down.ready.is_empty() {
                break;
            }
        }
        while self.client.queue_room() > 0 {
            let Some((id, blob)) = peer.to_post.pop_front() else {
                break;
            };
            self.client.queue_post(id, &blob).expect("room was checked");
            moved = true;
        }
        // The proof of work: one bounded step per turn, interleaved with
        // everything else.
        if let Some(budget) = work
            && self.client.wants_work(now)
        {
            self.client.poll_work(now, budget);
            self.work_steps += 1;
            moved = true;
        }
        loop {
            while let Ok(Some(n)) = self.client_conn.poll_transmit(now, &mut buf) {
                self.up.write(now, &buf[..n]);
                moved = true;
            }
            if !self.client_conn.can_send() {
                break;
            }
            let Some(n) = self
                .client
                .poll_transmit(now, &mut buf)
                .expect("the buffer holds any request")
            else {
                break;
            };
            self.client_conn.send(&buf[..n]).expect("can_send said so");
            moved = true;
        }
        moved
    }
}

/// The server: its identity, policy, store, and randomness.
pub struct ServerSide {
    pub identity: Identity,
    pub address: OnionAddress,
    pub config: ServerConfig,
    pub store: MemStore,
    pub rng: ChaCha20Rng,
    pub commits: u64,
}

// ----- the world -----------------------------------------------------------

pub struct World {
    pub now: Instant,
    pub peers: [Peer; 2],
    pub server: ServerSide,
    pub link: Option<PeerLink>,
    pub srv: [Option<ServerLink>; 2],
    pub conn_config: Config,
    pub client_config: ClientConfig,
    /// Hashes per `poll_work` call; `None`: the driver does no work.
    pub work_budget: Option<u64>,
    /// How long bytes take from writer to reader on links made from now on.
    pub latency: Duration,
    pub steps: u64,
    /// Every instant the world slept to.
    pub wakeups: Vec<Instant>,
}

impl World {
    pub fn new(server: ServerConfig) -> Self {
        let identity = Identity::from_seed(&[0x53; 32]);
        World {
            now: START,
            peers: [Peer::new(Alice, "alice", 1), Peer::new(Bob, "bob", 2)],
            server: ServerSide {
                address: identity.address(),
                identity,
                config: server,
                store: MemStore::new(),
                rng: rng(0x53),
                commits: 0,
            },
            link: None,
            srv: [None, None],
            // Keys rotate every few frames, so rekeying runs on every link.
            conn_config: Config {
                rekey_interval: 7,
                ..Config::default()
            },
            client_config: ClientConfig::default(),
            work_budget: Some(64),
            latency: LATENCY,
            steps: 0,
            wakeups: Vec::new(),
        }
    }

    pub fn peer(&self, who: Who) -> &Peer {
        &self.peers[who.i()]
    }
    pub fn peer_mut(&mut self, who: Who) -> &mut Peer {
        &mut self.peers[who.i()]
    }
    pub fn member(&self, who: Who) -> &Member {
        self.peer(who).member()
    }
    pub fn member_mut(&mut self, who: Who) -> &mut Member {
        self.peer_mut(who).member.as_mut().expect("in the group")
    }
    pub fn srv(&self, who: Who) -> &ServerLink {
        self.srv[who.i()].as_ref().expect("connected to the server")
    }
    pub fn srv_mut(&mut self, who: Who) -> &mut ServerLink {
        self.srv[who.i()].as_mut().expect("connected to the server")
    }
    pub fn end(&self, who: Who) -> &LinkEnd {
        self.link.as_ref().expect("a peer link").end(who)
    }
    pub fn public(&self, who: Who) -> PublicIdentity {
        self.peer(who).public()
    }

    /// Both peers have each other as accepted contacts.
    pub fn befriend(&mut self) {
        let (a, b) = (self.public(Alice), self.public(Bob));
        self.peer_mut(Alice).set_contact(b, Standing::Accepted);
        self.peer_mut(Bob).set_contact(a, Standing::Accepted);
    }

    /// `from` dials the other peer: a new peer link.
    pub fn dial(&mut self, from: Who) {
        let to = from.other();
        let now = self.now;
        let remote = self.public(to);
        let [a, b] = &mut self.peers;
        let (p_from, p_to) = if from == Alice { (a, b) } else { (b, a) };
        let dialer = Connection::initiator(
            self.conn_config,
            p_from.identity.clone(),
            remote,
            &mut p_from.rng,
            now,
        );
        let listener =
            Connection::responder(self.conn_config, p_to.identity.clone(), &mut p_to.rng, now);
        self.link = Some(PeerLink {
            ends: [LinkEnd::new(from, dialer), LinkEnd::new(to, listener)],
            wires: [Pipe::new(self.latency), Pipe::new(self.latency)],
        });
    }

    /// The user of `who` changes how they stand with the other peer.
    pub fn set_standing(&mut self, who: Who, standing: Standing) {
        let remote = self.public(who.other());
        let peer = &mut self.peers[who.i()];
        peer.set_contact(remote, standing);
        if standing != Standing::Request {
            peer.requests.retain(|p| *p != remote);
        }
        if let Some(link) = &mut self.link
            && let Some(session) = &mut link.end_mut(who).session
        {
            session.handle_standing(standing);
        }
    }

    /// `who` connects to the server over a fresh anonymous channel,
    /// resuming from `cursor`.
    pub fn connect_server(&mut self, who: Who, cursor: u64) {
        let now = self.now;
        let peer = &mut self.peers[who.i()];
        let client_conn = Connection::anonymous_initiator(
            self.conn_config,
            self.server.identity.public(),
            &mut peer.rng,
            now,
        );
        let client = ServerClient::new(self.client_config, cursor, &mut peer.rng);
        let server_conn = Connection::responder(
            self.conn_config,
            self.server.identity.clone(),
            &mut self.server.rng,
            now,
        );
        self.srv[who.i()] = Some(ServerLink {
            owner: who,
            client_conn,
            client,
            server_conn,
            session: None,
            up: Pipe::new(self.latency),
            down: Pipe::new(self.latency),
            server_in: VecDeque::new(),
            requests: Vec::new(),
            server_events: Vec::new(),
            client_conn_events: Vec::new(),
            server_conn_events: Vec::new(),
            withhold: None,
            withheld: 0,
            work_steps: 0,
        });
    }

    /// `who` founds a group on the server.
    pub fn found_group(&mut self, who: Who) {
        let server = self.server.address;
        let peer = &mut self.peers[who.i()];
        let group = Group::generate(&mut peer.rng, [server].into_iter().collect());
        let me = peer.public();
        peer.member = Some(Member::new(group, &me, peer.recovery_config));
    }

    /// `who` invites the other peer to its group over the peer link.
    pub fn invite(&mut self, who: Who, name: &str) -> u64 {
        let peer = &mut self.peers[who.i()];
        let invite =
            Invite::new(&peer.member().group, name, peer.public()).expect("a valid invite");
        let mut buf = [0u8; INVITE_MAX_LEN];
        let len = invite.encode(&mut buf).expect("fits");
        let id = peer.rng.next_u64();
        let msg = enc(&PeerMessage::GroupInvite {
            id,
            invite: &buf[..len],
        });
        peer.outbox.push((id, msg));
        id
    }

    /// `who` writes a text to the other peer (kept until acknowledged).
    pub fn send_text(&mut self, who: Who, text: &str) -> u64 {
        let now = self.now;
        let peer = &mut self.peers[who.i()];
        let id = peer.rng.next_u64();
        let msg = enc(&PeerMessage::Text {
            id,
            sent_at: wall(now).as_millis(),
            text,
        });
        peer.outbox.push((id, msg));
        id
    }

    /// `who` sends a message once, on the next greeted link.
    pub fn send_once(&mut self, who: Who, msg: &PeerMessage<'_>) {
        self.peer_mut(who).unsent.push_back(enc(msg));
    }

    /// `who` seals the next message of its chain for `server`, dated
    /// `timestamp`, and takes it into its own tracker and kept blobs.
    pub fn seal(
        &mut self,
        who: Who,
        kind: MessageKind,
        body: &[u8],
        timestamp: UnixMicros,
        server: OnionAddress,
    ) -> Box<Blob> {
        let now = self.now;
        let Peer {
            member,
            identity,
            rng,
            ..
        } = &mut self.peers[who.i()];
        let m = member.as_mut().expect("in the group");
        let seen = m.tracker.seen_summary(Some(m.me));
        let (seq, prev) = (m.chain.next_seq(), m.chain.prev_hash());
        let mut blob = Box::new([0u8; SEALED_BLOB_LEN]);
        let sealed = m
            .chain
            .seal_next(
                m.group.keys(),
                identity,
                &server,
                kind,
                body,
                timestamp,
                &seen,
                rng,
                &mut blob[..],
            )
            .expect("a valid message");
        m.tracker
            .handle_parts(m.me, seq, &sealed.hash, &prev, &seen)
            .expect("the tracker's events are drained");
        m.drain_gaps(now);
        let me = m.me;
        m.keep(me, seq, &blob[..]);
        blob
    }

    /// `who` posts a message of `kind` to the server, dated `timestamp`.
    pub fn post_at(
        &mut self,
        who: Who,
        kind: MessageKind,
        body: &[u8],
        timestamp: UnixMicros,
    ) -> (PostId, Box<Blob>) {
        let server = self.server.address;
        let blob = self.seal(who, kind, body, timestamp, server);
        let peer = self.peer_mut(who);
        let id = PostId(peer.next_post);
        peer.next_post += 1;
        peer.to_post.push_back((id, blob.clone()));
        (id, blob)
    }

    /// `who` posts a text to the group, dated now.
    pub fn post(&mut self, who: Who, text: &str) -> (PostId, Box<Blob>) {
        self.post_at(who, MessageKind::TEXT, text.as_bytes(), wall(self.now))
    }

    // ----- driving --------------------------------------------------------

    /// One turn of every party at the current instant. Returns whether
    /// anything moved.
    pub fn step(&mut self) -> bool {
        self.steps += 1;
        let now = self.now;
        let mut moved = false;
        let World {
            peers,
            link,
            srv,
            server,
            work_budget,
            ..
        } = self;
        if let Some(link) = link {
            let [wa, wb] = &mut link.wires;
            moved |= wa.deliver(now) | wb.deliver(now);
            let [ea, eb] = &mut link.ends;
            moved |= ea.step(&mut peers[ea.owner.i()], wb, wa, now);
            moved |= eb.step(&mut peers[eb.owner.i()], wa, wb, now);
        }
        for l in srv.iter_mut().flatten() {
            moved |= l.up.deliver(now) | l.down.deliver(now);
            moved |= l.step(&mut peers[l.owner.i()], server, now, *work_budget);
        }
        // Group commit: everything appended in this turn becomes durable,
        // and every session hears of it.
        if server.store.last_index > server.store.durable {
            let durable = server.store.commit();
            server.commits += 1;
            for s in srv.iter_mut().flatten().filter_map(|l| l.session.as_mut()) {
                s.handle_durable(durable);
            }
            moved = true;
        }
        moved |= self.recovery_steps();
        moved
    }

    /// What the peers' `Recovery` machines ask for.
    fn recovery_steps(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        for who in [Alice, Bob] {
            let linked = self
                .link
                .as_ref()
                .is_some_and(|l| l.end(who).greeted && l.end(who).closed().is_none());
            let other = self.public(who.other());
            let peer = &mut self.peers[who.i()];
            let accepted = peer.standing(&other) == Standing::Accepted;
            let Some(m) = &mut peer.member else { continue };
            while let Some(event) = m.recovery.poll_event() {
                moved = true;
                match event {
                    RecoveryEvent::AskMembers => {
                        m.asks.push(now);
                        let Some(wanted) = ResendWanted::from_missing(
                            m.group.id().as_bytes(),
                            m.tracker.missing(),
                        ) else {
                            continue;
                        };
                        if linked && accepted {
                            let mut buf = [0u8; WANTED_MAX_LEN];
                            let bytes = wanted.encode(&mut buf).expect("fits");
                            let id = peer.rng.next_u64();
                            m.open.register(id, &other.address(), &wanted, now);
                            peer.unsent
                                .push_back(enc(&PeerMessage::ResendRequest { id, wanted: bytes }));
                        }
                    }
                    RecoveryEvent::GiveUp => m.gave_up.push(now),
                }
            }
        }
        moved
    }

    /// Steps until nothing moves, at the current instant. In this honest
    /// world no channel ever fails.
    pub fn drive(&mut self) {
        for _ in 0..MAX_STEPS {
            if !self.step() {
                if let Some(link) = &self.link {
                    for e in &link.ends {
                        assert!(e.errors.is_empty(), "{:?}: {:?}", e.owner, e.errors);
                    }
                }
                for l in self.srv.iter().flatten() {
                    for ev in l.client_conn_events.iter().chain(&l.server_conn_events) {
                        assert!(
                            !matches!(ev, Ev::Closed(CloseReason::Error(_))),
                            "{:?} server link: {ev:?}",
                            l.owner
                        );
                    }
                }
                return;
            }
        }
        panic!(
            "the world is still busy after {MAX_STEPS} steps at {:?}",
            self.now
        );
    }

    /// Drives the world and lets time pass while bytes are in flight, until
    /// everything sent has arrived and nothing moves (timers that come due
    /// meanwhile fire too).
    pub fn settle(&mut self) {
        loop {
            self.drive();
            let arrival = self
                .deadlines()
                .into_iter()
                .filter(|(name, _)| name.contains("pipe"))
                .map(|(_, t)| t)
                .min();
            match arrival {
                Some(t) => self.sleep_until(t.max(self.now)),
                None => return,
            }
        }
    }

    /// Every deadline of every machine, named.
    pub fn deadlines(&self) -> Vec<(String, Instant)> {
        let mut out = Vec::new();
        let mut add = |name: String, t: Option<Instant>| {
            if let Some(t) = t {
                out.push((name, t));
            }
        };
        if let Some(link) = &self.link {
            for e in &link.ends {
                add(format!("{:?} peer link", e.owner), e.conn.poll_timeout());
            }
            for (i, pipe) in link.wires.iter().enumerate() {
                add(format!("peer link pipe {i}"), pipe.next_arrival());
            }
        }
        for l in self.srv.iter().flatten() {
            add(format!("{:?} server pipe up", l.owner), l.up.next_arrival());
            add(
                format!("{:?} server pipe down", l.owner),
                l.down.next_arrival(),
            );
            add(
                format!("{:?} client conn", l.owner),
                l.client_conn.poll_timeout(),
            );
            add(format!("{:?} client", l.owner), l.client.poll_timeout());
            add(
                format!("{:?} server conn", l.owner),
                l.server_conn.poll_timeout(),
            );
            add(
                format!("{:?} server session", l.owner),
                l.session.as_ref().and_then(|s| s.poll_timeout()),
            );
        }
        for p in &self.peers {
            if let Some(m) = &p.member {
                add(format!("{:?} recovery", p.who), m.recovery.poll_timeout());
                add(format!("{:?} open requests", p.who), m.open.poll_timeout());
            }
        }
        out
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines().into_iter().map(|(_, t)| t).min()
    }

    /// Moves the clock to `t` and fires every timer that is due; then no
    /// deadline may be left at or before `t`.
    pub fn sleep_until(&mut self, t: Instant) {
        assert!(t >= self.now, "time never goes backwards");
        self.now = t;
        self.wakeups.push(t);
        let now = t;
        let due = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        if let Some(link) = &mut self.link {
            for e in &mut link.ends {
                if due(e.conn.poll_timeout()) {
                    e.conn.handle_timeout(now);
                }
            }
            for pipe in &mut link.wires {
                pipe.deliver(now);
            }
        }
        for l in self.srv.iter_mut().flatten() {
            l.up.deliver(now);
            l.down.deliver(now);
            if due(l.client_conn.poll_timeout()) {
                l.client_conn.handle_timeout(now);
            }
            if due(l.client.poll_timeout()) {
                l.client.handle_timeout(now);
            }
            if due(l.server_conn.poll_timeout()) {
                l.server_conn.handle_timeout(now);
            }
            if let Some(s) = &mut l.session
                && due(s.poll_timeout())
            {
                s.handle_timeout(now);
            }
        }
        for p in &mut self.peers {
            if let Some(m) = &mut p.member {
                if due(m.recovery.poll_timeout()) {
                    m.recovery.handle_timeout(now);
                }
                if due(m.open.poll_timeout()) {
                    m.open.handle_timeout(now);
                }
            }
        }
        for (name, d) in self.deadlines() {
            assert!(
                d > now,
                "{name}: deadline {d:?} still due after handle_timeout at {now:?}"
            );
        }
    }

    /// Drives the world, sleeping to the next deadline whenever nothing
    /// moves, until `done` holds. Panics if nothing is left to happen or
    /// it takes more than `limit` of virtual time.
    pub fn run_until(&mut self, what: &str, limit: Duration, mut done: impl FnMut(&World) -> bool) {
        let end = self.now + limit;
        loop {
            self.drive();
            if done(self) {
                return;
            }
            let next = self
                .next_deadline()
                .unwrap_or_else(|| panic!("{what}: nothing is left to happen at {:?}", self.now));
            assert!(
                next <= end,
                "{what}: not done within {limit:?} (next deadline {next:?})"
            );
            self.sleep_until(next.max(self.now));
        }
    }

    /// Lets `d` of virtual time pass, firing every timer on the way.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.drive();
            match self.next_deadline() {
                Some(t) if t <= end => self.sleep_until(t.max(self.now)),
                _ => break,
            }
        }
        self.sleep_until(end);
        self.drive();
    }

    /// What a run leaves behind, byte for byte: the server's log (sealed
    /// with random nonces), every wake-up, every `Posted`, and the bytes
    /// each pipe carried. Two runs of one scenario must agree.
    pub fn fingerprint(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, blob) in &self.server.store.entries {
            out.extend(index.to_le_bytes());
            out.extend(&blob[..]);
        }
        for t in &self.wakeups {
            out.extend(t.as_micros().to_le_bytes());
        }
        for p in &self.peers {
            for (id, index, at) in &p.posted {
                out.extend(id.0.to_le_bytes());
                out.extend(index.to_le_bytes());
                out.extend(at.as_micros().to_le_bytes());
            }
        }
        let mut pipes: Vec<&Pipe> = Vec::new();
        if let Some(link) = &self.link {
            pipes.extend(&link.wires);
        }
        for l in self.srv.iter().flatten() {
            pipes.push(&l.up);
            pipes.push(&l.down);
        }
        for pipe in pipes {
            out.extend(pipe.written.to_le_bytes());
        }
        out
    }

    /// Both peers are friends, linked, in one group (alice's, bob invited
    /// over the link), and connected to the server with a live
    /// subscription.
    pub fn grouped(server: ServerConfig) -> World {
        let mut w = World::new(server);
        w.befriend();
        w.dial(Alice);
        w.found_group(Alice);
        w.invite(Alice, "friends");
        w.connect_server(Alice, 0);
        w.connect_server(Bob, 0);
        w.run_until("bob joins, both subscribe", Duration::from_secs(10), |w| {
            w.peer(Bob).member.is_some()
                && w.peer(Alice).outbox.is_empty()
                && [Alice, Bob]
                    .iter()
                    .all(|&p| w.srv(p).client.is_subscribed())
        });
        w
    }
}
