//! A simulated world for the peer's core ([`cwtch_node::peer::Peer`]):
//! several peers and servers in one thread, on a virtual clock, with no
//! sockets, no tor and no daemon.
//!
//! - Each peer is the real core over a real (encrypted, on-disk) profile,
//!   driven as the daemon drives it: commands and link events in; effects
//!   and `poll_timeout` out.
//! - Each server is the core's [`ServerSession`] per connection over one
//!   in-memory store with a group commit after every step.
//! - Links carry the plaintext messages the daemon's connection driver
//!   would carry, each after a fixed one-way latency. Dials to a peer that
//!   is offline fail after one latency; a refused peer sees its handshake
//!   fail.
//! - Time moves only when nothing else can: the clock jumps to the
//!   earliest of the next delivery and every core's `poll_timeout`.
//!
//! A peer can be stopped (its core dropped, every link down) and started
//! again from its profile, as after a crash.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;

use chacha20::ChaCha20Rng;
use cwtch_node::control::api::{ApiError, Event, Request};
use cwtch_node::peer::{Effect, Ended, LinkEvent, LinkId, Now, Peer};
use cwtch_node::profile_store::ProfileStore;
use cwtch_node::store::{self, Profile};
use cwtch_proto::group::SEALED_BLOB_LEN;
use cwtch_proto::server::advert::ADVERT_LEN;
use cwtch_proto::server::store::{BlobStore, StoreError};
use cwtch_proto::server::wire::{MAX_SERVER_MESSAGE_LEN, Reply};
use cwtch_proto::server::{ServerConfig, ServerEvent, ServerSession};
use cwtch_proto::{Duration, Identity, Instant, OnionAddress, UnixMicros};
use rand_core::SeedableRng;
use serde_json::Value;

/// The wall clock at the start of every world (2026-01-01).
pub const START_UNIX_SECS: u64 = 1_767_225_600;
/// The one-way latency of every link.
pub const LATENCY: Duration = Duration::from_millis(50);
const PASSWORD: &[u8] = b"sim";

/// A blob store in memory, every append durable at the next commit.
#[derive(Default)]
pub struct MemStore {
    pub entries: Vec<(u64, Box<[u8; SEALED_BLOB_LEN]>)>,
    pub last: u64,
    pub durable: u64,
    pub advert: Option<[u8; ADVERT_LEN]>,
    /// The next this many appends fail (the store is unavailable).
    pub fail_next: u32,
    /// Every append is refused as if the store were full.
    pub full: bool,
}

impl MemStore {
    /// Retention: drops every entry at or below `upto`.
    pub fn prune(&mut self, upto: u64) {
        self.entries.retain(|(i, _)| *i > upto);
    }
}

impl BlobStore for MemStore {
    fn append(&mut self, blob: &[u8; SEALED_BLOB_LEN]) -> Result<u64, StoreError> {
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Err(StoreError::Unavailable);
        }
        if self.full {
            return Err(StoreError::Full);
        }
        self.last += 1;
        self.entries.push((self.last, Box::new(*blob)));
        Ok(self.last)
    }
    fn read_after(
        &self,
        after: u64,
        out: &mut [u8; SEALED_BLOB_LEN],
    ) -> Result<Option<u64>, StoreError> {
        match self.entries.iter().find(|(i, _)| *i > after) {
            Some((i, b)) => {
                out.copy_from_slice(&b[..]);
                Ok(Some(*i))
            }
            None => Ok(None),
        }
    }
    fn durable_head(&self) -> u64 {
        self.durable
    }
    fn advert(&self) -> Option<[u8; ADVERT_LEN]> {
        self.advert
    }
}

/// Whether the server withholds an entry (by index) from a peer (by
/// number): what a cheating server does.
pub type Withhold = Box<dyn FnMut(usize, u64) -> bool>;

struct Session {
    session: ServerSession,
    peer: usize,
    link: LinkId,
    inbox: VecDeque<Vec<u8>>,
}

/// A server of the world.
pub struct SimServer {
    pub identity: Identity,
    pub address: OnionAddress,
    pub config: ServerConfig,
    pub store: MemStore,
    rng: ChaCha20Rng,
    sessions: BTreeMap<u64, Session>,
    /// Entries withheld from readers.
    pub withhold: Option<Withhold>,
    /// Requests the sessions took.
    pub requests: u64,
    /// Of which posts.
    pub posts: u64,
    /// Whether it answers dials.
    pub online: bool,
    /// Keeps its connections up and answers nothing but its hello: what a
    /// server that black-holes requests does.
    pub silent: bool,
    /// Answers nothing at all, not even a hello.
    pub mute: bool,
}

impl SimServer {
    /// The string a peer uses to name it.
    pub fn id(&self) -> String {
        format!("cwtch-server:{}", self.address)
    }
}

/// The capacity of a link's command queue in the daemon
/// (`daemon::dial`, `daemon::accept`).
pub const LINK_QUEUE: usize = 256;

/// A peer of the world.
pub struct SimPeer {
    pub name: String,
    pub identity: Identity,
    pub address: String,
    home: PathBuf,
    /// The core, while the peer runs.
    pub core: Option<Peer>,
    /// Every event it published.
    pub events: Vec<Event>,
    seed: u8,
    starts: u64,
}

/// Where a link's messages go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Peer(usize, LinkId),
    Server(usize, u64),
}

enum Delivery {
    ToPeer(usize, LinkId, LinkEvent),
    ToServer(usize, u64, Vec<u8>),
    /// A server connection's handshake is done: its session starts, and
    /// the peer learns the link is up.
    OpenSession(usize, u64, usize, LinkId),
}

/// The world.
pub struct Sim {
    pub mono: Instant,
    pub unix: UnixMicros,
    pub peers: Vec<SimPeer>,
    pub servers: Vec<SimServer>,
    queue: BTreeMap<(Instant, u64), Delivery>,
    order: u64,
    links: HashMap<(usize, LinkId), End>,
    next_session: u64,
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

impl Sim {
    /// An empty world at the start time.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_path_buf();
        Sim {
            mono: Instant::from_micros(1_000_000),
            unix: UnixMicros::from_secs(START_UNIX_SECS),
            peers: Vec::new(),
            servers: Vec::new(),
            queue: BTreeMap::new(),
            order: 0,
            links: HashMap::new(),
            next_session: 1,
            _dir: dir,
            dir: path,
        }
    }

    /// The clocks now.
    pub fn now(&self) -> Now {
        Now {
            mono: self.mono,
            unix: self.unix,
        }
    }

    /// Adds a peer (running) and returns its number.
    pub fn add_peer(&mut self, name: &str) -> usize {
        let seed = self.peers.len() as u8 + 1;
        let identity = Identity::from_seed(&[seed; 32]);
        let home = self.dir.join(format!("{name}-{seed}"));
        std::fs::create_dir_all(&home).expect("home");
        let raw = ProfileStore::create_insecure_for_tests(home.join(store::PROFILE_FILE), PASSWORD)
            .expect("profile");
        store::init_store(&raw, &identity, name).expect("init");
        drop(raw);
        self.peers.push(SimPeer {
            name: name.into(),
            address: identity.address().to_string(),
            identity,
            home,
            core: None,
            events: Vec::new(),
            seed,
            starts: 0,
        });
        let i = self.peers.len() - 1;
        self.start(i);
        i
    }

    /// Adds a server and returns its number.
    pub fn add_server(&mut self, config: ServerConfig) -> usize {
        let seed = 0x80 + self.servers.len() as u8;
        let identity = Identity::from_seed(&[seed; 32]);
        self.servers.push(SimServer {
            address: identity.address(),
            identity,
            config,
            store: MemStore::default(),
            rng: ChaCha20Rng::from_seed([seed; 32]),
            sessions: BTreeMap::new(),
            withhold: None,
            requests: 0,
            posts: 0,
            online: true,
            silent: false,
            mute: false,
        });
        self.servers.len() - 1
    }

    /// Starts peer `i` from its profile (as the daemon would at a start).
    pub fn start(&mut self, i: usize) {
        let now = self.now();
        let p = &mut self.peers[i];
        assert!(p.core.is_none(), "{} runs already", p.name);
        p.starts += 1;
        let (raw, identity, name) = store::open_profile(&p.home, PASSWORD).expect("open");
        let mut seed = [p.seed; 32];
        seed[31] = p.starts as u8;
        let core = Peer::new(
            Profile::new(raw),
            identity,
            name,
            ChaCha20Rng::from_seed(seed),
            now,
        )
        .expect("the core loads");
        p.core = Some(core);
        p.events.clear();
    }

    /// Stops peer `i` at once (a crash): its links go down for the others.
    pub fn stop(&mut self, i: usize) {
        self.peers[i].core = None;
        let mine: Vec<(usize, LinkId)> = self
            .links
            .keys()
            .filter(|(p, _)| *p == i)
            .copied()
            .collect();
        for key in mine {
            if let Some(end) = self.links.remove(&key) {
                self.hang_up(end, "the other side closed the connection", true);
            }
        }
    }

    /// Takes server `s` off the network (its connections close) or puts it
    /// back.
    pub fn set_server_online(&mut self, s: usize, online: bool) {
        self.servers[s].online = online;
        if !online {
            let sessions: Vec<u64> = self.servers[s].sessions.keys().copied().collect();
            for sid in sessions {
                self.close_session(s, sid, "the server went away");
            }
        }
    }

    /// The home directory of peer `i` (its profile).
    pub fn peer_home(&self, i: usize) -> PathBuf {
        self.peers[i].home.clone()
    }

    /// Peer `i`'s profile, opened as the daemon would (the peer must be
    /// stopped: one writer at a time).
    pub fn open_profile(&self, i: usize) -> Profile {
        assert!(self.peers[i].core.is_none(), "stop the peer first");
        let (raw, _, _) = store::open_profile(&self.peers[i].home, PASSWORD).expect("open");
        Profile::new(raw)
    }

    /// The core of peer `i`.
    pub fn core(&mut self, i: usize) -> &mut Peer {
        self.peers[i].core.as_mut().expect("the peer runs")
    }

    /// A control request to peer `i`, answered at once.
    pub fn cmd(&mut self, i: usize, request: Request) -> Result<Value, ApiError> {
        let now = self.now();
        self.core(i).handle_command(request, now)
    }

    /// [`Sim::cmd`] that must succeed.
    pub fn ok(&mut self, i: usize, request: Request) -> Value {
        let what = format!("{request:?}");
        self.cmd(i, request)
            .unwrap_or_else(|e| panic!("{what} failed: {e}"))
    }

    /// The messages of a conversation, as listed.
    pub fn messages(&mut self, i: usize, conversation: &str) -> Vec<Value> {
        match self.cmd(
            i,
            Request::Messages {
                conversation: conversation.into(),
            },
        ) {
            Ok(Value::Array(list)) => list,
            _ => Vec::new(),
        }
    }

    /// `(text, status)` of every message of a conversation.
    pub fn texts(&mut self, i: usize, conversation: &str) -> Vec<(String, String)> {
        self.messages(i, conversation)
            .iter()
            .map(|m| {
                (
                    m["text"].as_str().unwrap_or_default().to_string(),
                    m["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn push(&mut self, at: Instant, d: Delivery) {
        self.order += 1;
        self.queue.insert((at, self.order), d);
    }

    fn later(&self) -> Instant {
        self.mono + LATENCY
    }

    /// The other end of a link learns that it went down.
    fn hang_up(&mut self, end: End, reason: &str, failed: bool) {
        match end {
            End::Peer(j, lj) => {
                self.links.remove(&(j, lj));
                let at = self.later();
                self.push(
                    at,
                    Delivery::ToPeer(
                        j,
                        lj,
                        LinkEvent::Down(Ended {
                            reason: reason.into(),
                            failed,
                            by_us: false,
                        }),
                    ),
                );
            }
            End::Server(s, sid) => {
                self.servers[s].sessions.remove(&sid);
            }
        }
    }

    fn close_session(&mut self, s: usize, sid: u64, reason: &str) {
        if let Some(session) = self.servers[s].sessions.remove(&sid) {
            self.links.remove(&(session.peer, session.link));
            let at = self.later();
            self.push(
                at,
                Delivery::ToPeer(
                    session.peer,
                    session.link,
                    LinkEvent::Down(Ended {
                        reason: reason.into(),
                        failed: false,
                        by_us: false,
                    }),
                ),
            );
        }
    }

    /// Carries out one effect of peer `i`.
    fn effect(&mut self, i: usize, effect: Effect) {
        let at = self.later();
        match effect {
            Effect::DialPeer { link, to } => {
                let target = self
                    .peers
                    .iter()
                    .position(|p| p.address == to.as_str() && p.core.is_some());
                let Some(j) = target else {
                    self.push(
                        at,
                        Delivery::ToPeer(
                            i,
                            link,
                            LinkEvent::Down(Ended {
                                reason: "they could not be reached: they are probably offline"
                                    .into(),
                                failed: true,
                                by_us: false,
                            }),
                        ),
                    );
                    return;
                };
                let me = self.peers[i].identity.public();
                let them = self.peers[j].identity.public();
                match self.core(j).handle_admit(&me) {
                    Some(lj) => {
                        self.links.insert((i, link), End::Peer(j, lj));
                        self.links.insert((j, lj), End::Peer(i, link));
                        // The handshake takes a round trip.
                        let up = self.mono + LATENCY + LATENCY;
                        self.push(
                            up,
                            Delivery::ToPeer(
                                j,
                                lj,
                                LinkEvent::Up {
                                    remote: Some(Box::new(me)),
                                },
                            ),
                        );
                        self.push(
                            up,
                            Delivery::ToPeer(
                                i,
                                link,
                                LinkEvent::Up {
                                    remote: Some(Box::new(them)),
                                },
                            ),
                        );
                    }
                    None => self.push(
                        at + LATENCY,
                        Delivery::ToPeer(
                            i,
                            link,
                            LinkEvent::Down(Ended {
                                reason: "handshake failed: refused".into(),
                                failed: true,
                                by_us: false,
                            }),
                        ),
                    ),
                }
            }
            Effect::DialServer { link, server } => {
                let Some(s) = self
                    .servers
                    .iter()
                    .position(|x| x.address == server && x.online)
                else {
                    self.push(
                        at,
                        Delivery::ToPeer(
                            i,
                            link,
                            LinkEvent::Down(Ended {
                                reason: "the server could not be reached".into(),
                                failed: true,
                                by_us: false,
                            }),
                        ),
                    );
                    return;
                };
                let sid = self.next_session;
                self.next_session += 1;
                self.links.insert((i, link), End::Server(s, sid));
                let up = self.mono + LATENCY + LATENCY;
                self.push(up, Delivery::OpenSession(s, sid, i, link));
            }
            Effect::Send { link, msg } => match self.links.get(&(i, link)).copied() {
                Some(End::Peer(j, lj)) => {
                    self.push(at, Delivery::ToPeer(j, lj, LinkEvent::Message(msg)))
                }
                Some(End::Server(s, sid)) => self.push(at, Delivery::ToServer(s, sid, msg)),
                None => {}
            },
            Effect::Close { link } => {
                if let Some(end) = self.links.remove(&(i, link)) {
                    self.hang_up(end, "closed by the other side", false);
                    self.push(
                        at,
                        Delivery::ToPeer(
                            i,
                            link,
                            LinkEvent::Down(Ended {
                                reason: "closed by us".into(),
                                failed: false,
                                by_us: true,
                            }),
                        ),
                    );
                }
            }
            Effect::Notify(event) => self.peers[i].events.push(event),
        }
    }

    /// Every running core's effects and proof of work, until none is left.
    /// The messages one burst queues on one link must fit the daemon's
    /// command queue of that link ([`LINK_QUEUE`]), which closes the link
    /// when it overflows.
    fn drain_peers(&mut self) -> bool {
        let mut moved = false;
        for i in 0..self.peers.len() {
            let mut burst: BTreeMap<LinkId, usize> = BTreeMap::new();
            loop {
                let now = self.now();
                let Some(core) = self.peers[i].core.as_mut() else {
                    break;
                };
                if let Some(e) = core.poll_effect() {
                    if let Effect::Send { link, .. } = &e {
                        let n = burst.entry(*link).or_default();
                        *n += 1;
                        assert!(
                            *n <= LINK_QUEUE,
                            "{}: more than {LINK_QUEUE} messages at once on one link: the \
                             daemon would close it",
                            self.peers[i].name
                        );
                    }
                    moved = true;
                    self.effect(i, e);
                    continue;
                }
                if core.wants_work(now) {
                    core.handle_work(now);
                    moved = true;
                    continue;
                }
                break;
            }
        }
        moved
    }

    /// Every server session: requests in, one commit, replies out.
    fn step_servers(&mut self) -> bool {
        let mut moved = false;
        let now = self.mono;
        let at = self.later();
        let mut out = vec![0u8; MAX_SERVER_MESSAGE_LEN];
        for s in 0..self.servers.len() {
            let mut sends: Vec<(usize, LinkId, Vec<u8>)> = Vec::new();
            let mut closed: Vec<u64> = Vec::new();
            let srv = &mut self.servers[s];
            let ids: Vec<u64> = srv.sessions.keys().copied().collect();
            for sid in &ids {
                let Some(sess) = srv.sessions.get_mut(sid) else {
                    continue;
                };
                while sess.session.wants_request() {
                    let Some(req) = sess.inbox.pop_front() else {
                        break;
                    };
                    srv.requests += 1;
                    if matches!(
                        cwtch_proto::server::wire::Request::decode(&req),
                        Ok(cwtch_proto::server::wire::Request::Post { .. })
                    ) {
                        srv.posts += 1;
                    }
                    if sess
                        .session
                        .handle_message(&req, now, &mut srv.store)
                        .is_err()
                    {
                        break;
                    }
                    moved = true;
                }
            }
            // The group commit.
            srv.store.durable = srv.store.last;
            for sid in &ids {
                let Some(sess) = srv.sessions.get_mut(sid) else {
                    continue;
                };
                sess.session.handle_durable(srv.store.durable);
                while let Some(e) = sess.session.poll_event() {
                    if matches!(e, ServerEvent::Closed { .. }) {
                        closed.push(*sid);
                    }
                }
                while let Ok(Some(n)) = sess.session.poll_transmit(&srv.store, &mut out) {
                    moved = true;
                    let withheld = match Reply::decode(&out[..n]) {
                        _ if srv.mute => true,
                        Ok(Reply::Hello(_)) => false,
                        _ if srv.silent => true,
                        Ok(Reply::Entry { index, .. } | Reply::Push { index, .. }) => {
                            srv.withhold.as_mut().is_some_and(|f| f(sess.peer, index))
                        }
                        _ => false,
                    };
                    if !withheld {
                        sends.push((sess.peer, sess.link, out[..n].to_vec()));
                    }
                }
            }
            for (peer, link, msg) in sends {
                if self.links.contains_key(&(peer, link)) {
                    self.push(at, Delivery::ToPeer(peer, link, LinkEvent::Message(msg)));
                }
            }
            for sid in closed {
                self.close_session(s, sid, "closed by the server");
            }
        }
        moved
    }

    /// Delivers what is due now.
    fn deliver_due(&mut self) -> bool {
        let mut moved = false;
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > self.mono {
                break;
            }
            let d = entry.remove();
            moved = true;
            match d {
                Delivery::ToPeer(i, link, event) => {
                    let now = self.now();
                    if let Some(core) = self.peers[i].core.as_mut() {
                        core.handle_link(link, event, now);
                    }
                }
                Delivery::OpenSession(s, sid, i, link) => {
                    if !self.links.contains_key(&(i, link)) {
                        continue; // closed meanwhile
                    }
                    let now = self.now();
                    let srv = &mut self.servers[s];
                    let session =
                        ServerSession::new(srv.config, &srv.store, &mut srv.rng, now.mono);
                    srv.sessions.insert(
                        sid,
                        Session {
                            session,
                            peer: i,
                            link,
                            inbox: VecDeque::new(),
                        },
                    );
                    if let Some(core) = self.peers[i].core.as_mut() {
                        core.handle_link(link, LinkEvent::Up { remote: None }, now);
                    }
                }
                Delivery::ToServer(s, sid, msg) => {
                    if let Some(sess) = self.servers[s].sessions.get_mut(&sid) {
                        sess.inbox.push_back(msg);
                    }
                }
            }
        }
        moved
    }

    /// Runs until nothing is left to do before `until`, then sets the
    /// clock to `until`.
    pub fn run_until(&mut self, until: Instant) {
        let mut guard = 0u64;
        loop {
            guard += 1;
            assert!(guard < 5_000_000, "the world does not settle");
            let mut moved = self.drain_peers();
            moved |= self.step_servers();
            moved |= self.deliver_due();
            if moved {
                continue;
            }
            // Time moves: to the next delivery or deadline.
            let mut next = self.queue.keys().next().map(|(t, _)| *t);
            for p in &self.peers {
                if let Some(t) = p.core.as_ref().and_then(|c| c.poll_timeout()) {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
            for s in &self.servers {
                for sess in s.sessions.values() {
                    if let Some(t) = sess.session.poll_timeout() {
                        next = Some(next.map_or(t, |n| n.min(t)));
                    }
                }
            }
            let next = match next {
                Some(t) if t <= until => t.max(self.mono),
                _ => {
                    self.advance_to(until);
                    return;
                }
            };
            self.advance_to(next);
            let now = self.now();
            for p in &mut self.peers {
                if let Some(core) = p.core.as_mut()
                    && core.poll_timeout().is_some_and(|t| t <= now.mono)
                {
                    core.handle_timeout(now);
                }
            }
            for s in &mut self.servers {
                for sess in s.sessions.values_mut() {
                    if sess.session.poll_timeout().is_some_and(|t| t <= now.mono) {
                        sess.session.handle_timeout(now.mono);
                    }
                }
            }
        }
    }

    fn advance_to(&mut self, t: Instant) {
        if t > self.mono {
            let d = t.saturating_duration_since(self.mono);
            self.mono = t;
            self.unix = UnixMicros::from_micros(self.unix.as_micros() + d.as_micros());
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.mono + d;
        self.run_until(until);
    }

    /// Runs until `check` holds (checked after every settled step, at
    /// least every virtual second), or panics after `limit`.
    pub fn run_until_true(
        &mut self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut(&mut Sim) -> bool,
    ) {
        let end = self.mono + limit;
        loop {
            if check(self) {
                return;
            }
            assert!(self.mono < end, "not within {limit:?}: {what}");
            let step = (self.mono + Duration::from_secs(1)).min(end);
            self.run_until(step);
        }
    }

    /// Makes `a` and `b` accepted contacts of each other (a asks, b
    /// accepts), with the link up.
    pub fn befriend(&mut self, a: usize, b: usize) {
        let addr_b = self.peers[b].address.clone();
        let addr_a = self.peers[a].address.clone();
        self.ok(
            a,
            Request::ContactAdd {
                address: addr_b,
                message: None,
                nickname: None,
            },
        );
        self.run_until_true("the request to arrive", Duration::from_secs(60), |w| {
            w.peers[b].events.iter().any(|e| {
                matches!(e, Event::ContactRequest { contact } if contact["contact"]["address"] == addr_a.as_str())
            })
        });
        self.ok(
            b,
            Request::ContactAccept {
                contact: addr_a.clone(),
            },
        );
        self.run_for(Duration::from_secs(1));
    }

    /// Events of peer `i` that match.
    pub fn events_of(&self, i: usize, f: impl Fn(&Event) -> bool) -> Vec<Event> {
        self.peers[i]
            .events
            .iter()
            .filter(|e| f(e))
            .cloned()
            .collect()
    }
}
