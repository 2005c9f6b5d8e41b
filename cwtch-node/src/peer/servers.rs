//! Connections to servers: one anonymous connection to each server a group
//! or the mailbox reads, each with the core's `ServerClient` (sync, posts in
//! flight, retries, proof of work), the saved cursor, reconnects with
//! backoff, and the status shown to the user.

use std::collections::HashMap;

use cwtch_proto::peer::Backoff;
use cwtch_proto::server::client::{ClientConfig, ClientError, ClientEvent, PostId, ServerClient};
use cwtch_proto::server::wire::MAX_SERVER_MESSAGE_LEN;
use cwtch_proto::{Duration, Instant};
use rand_core::CryptoRng;

use super::effect::{Ended, LinkId};
use crate::limits::STABLE_LINK;
use crate::model::{ConnState, ConnStatus};

/// Why we close a server's connection, when it is the server's doing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// It said it closes it (`ClientEvent::Closing`): its end counts as
    /// the server's, as if it had closed the stream.
    ServerSaid,
    /// We gave up on it for its fault (a request left unanswered, posts
    /// never stored, a broken protocol; the reason shown): its end counts
    /// as a failure of the server.
    GivenUp(String),
}

/// One server.
pub struct ServerConn {
    /// Its status.
    pub status: ConnStatus,
    /// The connection being dialed, or up.
    link: Option<LinkId>,
    /// The client, once the connection is up.
    client: Option<ServerClient>,
    next_try: Instant,
    backoff: Backoff,
    /// When this connection's session said hello.
    hello_at: Option<Instant>,
    /// Why we are closing this connection, when it is the server's doing:
    /// its end is then not ours.
    ending: Option<Ending>,
    /// The saved cursor.
    pub cursor: u64,
    /// Since when every attempt failed, or ended soon (what the move
    /// policy looks at, through [`ServerConn::failing_at`]).
    failing_since: Option<Instant>,
    /// Read from this index on the next connection.
    rewind: Option<u64>,
    /// Posts handed to this connection's client: PostId → (owner, seq).
    posts: HashMap<u64, (String, u64)>,
    /// Entries of its log this run found gone (pruned under its retention,
    /// or withheld): what missing messages are explained by.
    pub pruned: u64,
    /// Posts this connection refused for good: not handed to it again (the
    /// next connection tries them once more).
    refused: std::collections::HashSet<(String, u64)>,
    next_post: u64,
}

impl ServerConn {
    fn new(cursor: u64) -> Self {
        ServerConn {
            status: ConnStatus::default(),
            link: None,
            client: None,
            next_try: Instant::ZERO,
            hello_at: None,
            ending: None,
            backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(300)),
            cursor,
            failing_since: None,
            rewind: None,
            posts: HashMap::new(),
            refused: Default::default(),
            pruned: 0,
            next_post: 0,
        }
    }

    /// Since when every connection failed or ended soon: `None` while a
    /// session is up (it said hello). The spell itself ends only once a
    /// session has lasted [`STABLE_LINK`] after its hello: a server that
    /// says hello and closes, or never says it, is failing again the
    /// moment it closes.
    pub fn failing_at(&self) -> Option<Instant> {
        let up = self.client.is_some() && self.hello_at.is_some();
        self.failing_since.filter(|_| !up)
    }

    /// Whether this connection's session said hello at least
    /// [`STABLE_LINK`] before `now`.
    fn lasted(&self, now: Instant) -> bool {
        self.client.is_some()
            && self
                .hello_at
                .is_some_and(|at| now.saturating_duration_since(at) >= STABLE_LINK)
    }

    /// Whether a session is up now and has answered: it synced (a hello
    /// alone proves nothing: a server can say hello and answer nothing).
    pub fn healthy_now(&self) -> bool {
        self.status.state == ConnState::Synced
    }
}

/// The servers room.
#[derive(Default)]
pub struct Servers {
    map: HashMap<String, ServerConn>,
    by_link: HashMap<LinkId, String>,
    /// The time of the last look for dials: a server due by then waits for
    /// a dial slot (a link event), not for a timer.
    looked: Instant,
}

/// The most server dials in flight at once, however many servers our groups
/// name (a member can name many).
pub const MAX_SERVER_DIALS: usize = 3;

impl Servers {
    /// Reads `server` (from `cursor` if it is new).
    pub fn ensure(&mut self, server: &str, cursor: u64) {
        self.map
            .entry(server.to_string())
            .or_insert_with(|| ServerConn::new(cursor));
    }

    /// A server's entry.
    pub fn get(&self, server: &str) -> Option<&ServerConn> {
        self.map.get(server)
    }

    /// Every server read.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.map.keys()
    }

    /// The server of a link.
    pub fn server_of(&self, link: LinkId) -> Option<&str> {
        self.by_link.get(&link).map(String::as_str)
    }

    /// Stops reading `server`: its link, if any, is to be closed.
    pub fn remove(&mut self, server: &str) -> Option<LinkId> {
        let c = self.map.remove(server)?;
        let link = c.link?;
        self.by_link.remove(&link);
        Some(link)
    }

    /// The servers to dial now: without a connection, past their backoff,
    /// within [`MAX_SERVER_DIALS`] in flight.
    pub fn due_dials(&mut self, now: Instant) -> Vec<String> {
        self.looked = self.looked.max(now);
        let in_flight = self
            .map
            .values()
            .filter(|c| {
                c.link.is_some()
                    && c.client.is_none()
                    && !matches!(c.ending, Some(Ending::GivenUp(_)))
            })
            .count();
        let mut due: Vec<&String> = self
            .map
            .iter()
            .filter(|(_, c)| c.link.is_none() && c.next_try <= now)
            .map(|(s, _)| s)
            .collect();
        due.sort();
        due.into_iter()
            .take(MAX_SERVER_DIALS.saturating_sub(in_flight))
            .cloned()
            .collect()
    }

    /// A dial to `server` starts on `link`.
    pub fn start_dial(&mut self, server: &str, link: LinkId) {
        if let Some(c) = self.map.get_mut(server) {
            c.link = Some(link);
            c.status.state = ConnState::Connecting;
            self.by_link.insert(link, server.to_string());
        }
    }

    /// The connection is up: its client starts, from the saved cursor (or
    /// where a rewind asks), with the core's jitter, pipelining and retry
    /// rules.
    pub fn on_up<R: CryptoRng + ?Sized>(&mut self, link: LinkId, rng: &mut R) -> Option<String> {
        let server = self.by_link.get(&link)?.clone();
        let c = self.map.get_mut(&server)?;
        c.hello_at = None;
        c.ending = None;
        if let Some(from) = c.rewind.take()
            && from < c.cursor
        {
            c.cursor = from;
        }
        c.client = Some(ServerClient::new(ClientConfig::default(), c.cursor, rng));
        c.status.state = ConnState::Connected;
        c.posts.clear();
        c.refused.clear();
        Some(server)
    }

    /// A reply on `link`: into its client. The caller drains the events
    /// ([`Servers::events`]) and the requests ([`Servers::transmit`]).
    pub fn handle_message(
        &mut self,
        link: LinkId,
        msg: &[u8],
        now: Instant,
    ) -> Option<Result<(), ClientError>> {
        let server = self.by_link.get(&link)?;
        let client = self.map.get_mut(server)?.client.as_mut()?;
        Some(client.handle_message(msg, now))
    }

    /// What `server`'s client has to say.
    pub fn events(&mut self, server: &str) -> Vec<ClientEvent> {
        let Some(client) = self.map.get_mut(server).and_then(|c| c.client.as_mut()) else {
            return Vec::new();
        };
        std::iter::from_fn(|| client.poll_event()).collect()
    }

    /// The requests `server`'s client wants sent now, with its link.
    pub fn transmit(&mut self, server: &str, now: Instant) -> Option<(LinkId, Vec<Vec<u8>>)> {
        let c = self.map.get_mut(server)?;
        let link = c.link?;
        let client = c.client.as_mut()?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; MAX_SERVER_MESSAGE_LEN];
        while let Ok(Some(n)) = client.poll_transmit(now, &mut buf) {
            out.push(buf.get(..n).unwrap_or_default().to_vec());
        }
        Some((link, out))
    }

    /// Asks `server` for its signed advert.
    pub fn request_advert(&mut self, server: &str) {
        if let Some(client) = self.map.get_mut(server).and_then(|c| c.client.as_mut()) {
            client.request_advert();
        }
    }

    /// The connection is down (or its dial failed): back off, unless it
    /// closed to read again from earlier. Returns the server, and whether
    /// the end counts as a failure of it (the link failed, or we gave up on
    /// the server: [`Servers::give_up`]).
    pub fn on_down<R: CryptoRng + ?Sized>(
        &mut self,
        link: LinkId,
        end: &Ended,
        now: Instant,
        rng: &mut R,
    ) -> Option<(String, bool)> {
        let server = self.by_link.remove(&link)?;
        let c = self.map.get_mut(&server)?;
        if c.link != Some(link) {
            return None;
        }
        let ending = c.ending.take();
        let given_up = match &ending {
            Some(Ending::GivenUp(why)) => Some(why.as_str()),
            _ => None,
        };
        let failed = end.failed || given_up.is_some();
        let by_us = end.by_us && ending.is_none();
        let reason = given_up.unwrap_or(end.reason.as_str());
        // A session that lasted starts the delays over and ends a failing
        // spell; a connection the server ended soon (it says hello and
        // closes, or never says it) lets them grow, and counts as failing.
        // One we closed soon says nothing either way, unless we gave up on
        // the server.
        if c.lasted(now) && given_up.is_none() {
            c.backoff.reset();
            c.failing_since = None;
        } else if (c.client.is_some() || given_up.is_some()) && !by_us {
            c.failing_since.get_or_insert(now);
        }
        c.link = None;
        c.client = None;
        c.posts.clear();
        c.refused.clear();
        if failed {
            c.status.state = ConnState::Failed;
            c.status.last_error = Some(reason.to_string());
            c.failing_since.get_or_insert(now);
        } else {
            c.status.state = ConnState::Disconnected;
        }
        c.next_try = if !failed && c.rewind.is_some() {
            now // closed to read again from earlier
        } else {
            c.backoff.next_attempt(now, rng)
        };
        Some((server, failed))
    }

    /// We give up on `server`'s connection for the server's fault (`why`:
    /// it left a request unanswered past the client's deadline,
    /// `ClientEvent::Unanswered`, or broke the protocol): the connection,
    /// returned, is to be closed, and its end counts as a failure of the
    /// server.
    pub fn give_up(&mut self, server: &str, why: String) -> Option<LinkId> {
        let c = self.map.get_mut(server)?;
        let link = c.link?;
        c.status.state = ConnState::Failed;
        c.status.last_error = Some(why.clone());
        c.ending = Some(Ending::GivenUp(why));
        // Nothing more goes out on it, and nothing it says counts.
        c.client = None;
        Some(link)
    }

    /// `server` said it closes the connection (`ClientEvent::Closing`):
    /// the connection, returned, is to be closed on our side too (a server
    /// that says so and keeps it open would otherwise hold it), and its
    /// end counts as the server's.
    pub fn closing(&mut self, server: &str) -> Option<LinkId> {
        let c = self.map.get_mut(server)?;
        let link = c.link?;
        c.ending.get_or_insert(Ending::ServerSaid);
        Some(link)
    }

    /// `server`'s session said hello (once per connection).
    pub fn hello(&mut self, server: &str, now: Instant) {
        if let Some(c) = self.map.get_mut(server) {
            c.hello_at.get_or_insert(now);
        }
    }

    /// Sets the state shown. (A session that came up ends a failing spell
    /// and the growth of the delays only once it has lasted
    /// [`STABLE_LINK`]: [`ServerConn::failing_at`], [`Servers::on_down`].)
    pub fn set_state(&mut self, server: &str, state: ConnState, error: Option<String>) {
        if let Some(c) = self.map.get_mut(server) {
            c.status.state = state;
            if error.is_some() {
                c.status.last_error = error;
            }
        }
    }

    /// Says why, keeping the state.
    pub fn set_error(&mut self, server: &str, error: String) {
        if let Some(c) = self.map.get_mut(server) {
            c.status.last_error = Some(error);
        }
    }

    /// The cursor advanced (returns whether it did).
    pub fn advance_cursor(&mut self, server: &str, index: u64) -> bool {
        match self.map.get_mut(server) {
            Some(c) if index > c.cursor => {
                c.cursor = index;
                true
            }
            _ => false,
        }
    }

    /// The cursor is set back (a server's head below it).
    pub fn set_cursor(&mut self, server: &str, cursor: u64) {
        if let Some(c) = self.map.get_mut(server) {
            c.cursor = cursor;
        }
    }

    /// Reads `server` again from `from` on its next connection; a live one
    /// is to be closed (returned). Returns whether the cursor moved back.
    pub fn rewind(&mut self, server: &str, from: u64, now: Instant) -> (bool, Option<LinkId>) {
        let c = self
            .map
            .entry(server.to_string())
            .or_insert_with(|| ServerConn::new(from));
        let from = c.rewind.map_or(from, |r| r.min(from));
        if c.link.is_none() && c.cursor <= from {
            return (false, None); // the next connection starts there anyway
        }
        c.rewind = Some(from);
        c.next_try = now;
        (true, c.link.filter(|_| c.client.is_some()))
    }

    /// Hands a post to `server`'s client, if it is up and has room; else it
    /// waits in the outgoing queue (handed over as room frees).
    pub fn queue_post(&mut self, server: &str, owner: &str, seq: u64, blob: &[u8]) -> bool {
        let Some(c) = self.map.get_mut(server) else {
            return false;
        };
        let Some(client) = c.client.as_mut() else {
            return false;
        };
        let Ok(blob) = <&[u8; cwtch_proto::group::SEALED_BLOB_LEN]>::try_from(blob) else {
            return false;
        };
        if c.posts.values().any(|(o, s)| o == owner && *s == seq) {
            return true; // handed over already
        }
        let id = c.next_post;
        if client.queue_post(PostId(id), blob).is_err() {
            return false;
        }
        c.next_post += 1;
        c.posts.insert(id, (owner.to_string(), seq));
        true
    }

    /// How many more posts `server`'s client takes now.
    pub fn post_room(&self, server: &str) -> usize {
        self.map
            .get(server)
            .and_then(|c| c.client.as_ref())
            .map_or(0, ServerClient::queue_room)
    }

    /// Whether `(owner, seq)` is with `server`'s client.
    pub fn post_handed(&self, server: &str, owner: &str, seq: u64) -> bool {
        self.map.get(server).is_some_and(|c| {
            c.posts.values().any(|(o, s)| o == owner && *s == seq)
                || c.refused.contains(&(owner.to_string(), seq))
        })
    }

    /// The post a client reported on, and done with it.
    pub fn take_post(&mut self, server: &str, post: PostId) -> Option<(String, u64)> {
        self.map.get_mut(server)?.posts.remove(&post.0)
    }

    /// The post a client dropped after a refusal for good: it stays in the
    /// outgoing queue, and is not handed to this connection again.
    pub fn refuse_post(&mut self, server: &str, post: PostId) {
        if let Some(c) = self.map.get_mut(server)
            && let Some(p) = c.posts.remove(&post.0)
        {
            c.refused.insert(p);
        }
    }

    /// Whether some client has proof of work to do.
    pub fn wants_work(&self, now: Instant) -> bool {
        self.map
            .values()
            .filter_map(|c| c.client.as_ref())
            .any(|c| c.wants_work(now))
    }

    /// One bounded step of proof of work on the first client that wants
    /// some; that server's name.
    pub fn work(&mut self, now: Instant, budget: u64) -> Option<String> {
        let (server, c) = self
            .map
            .iter_mut()
            .find(|(_, c)| c.client.as_ref().is_some_and(|c| c.wants_work(now)))?;
        c.client.as_mut()?.poll_work(now, budget);
        Some(server.clone())
    }

    /// Time passed for the clients (posts waiting for a retry).
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        for (s, c) in self.map.iter_mut() {
            if let Some(client) = c.client.as_mut()
                && client.poll_timeout().is_some_and(|at| at <= now)
            {
                client.handle_timeout(now);
                due.push(s.clone());
            }
        }
        due
    }

    /// The next deadline: a reconnect, or a client's retry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.map
            .values()
            .filter_map(|c| match (&c.client, c.link) {
                (Some(client), _) => client.poll_timeout(),
                (None, None) if c.next_try > self.looked => Some(c.next_try),
                (None, None) => None,    // due: waits for a dial slot
                (None, Some(_)) => None, // dialing
            })
            .min()
    }

    /// A server's status (the default, "not connected", for one we do not
    /// read).
    /// Entries between `after` and `before` are gone from `server`'s log.
    pub fn note_skipped(&mut self, server: &str, after: u64, before: u64) {
        if let Some(c) = self.map.get_mut(server) {
            c.pruned = c
                .pruned
                .saturating_add(before.saturating_sub(after).saturating_sub(1));
        }
    }

    /// Why messages may be missing from `server`, in plain words, when its
    /// log was found shorter than what was written: its stated retention.
    pub fn retention_note(&self, server: &str) -> Option<String> {
        let c = self.map.get(server)?;
        if c.pruned == 0 {
            return None;
        }
        let p = c.client.as_ref()?.policy()?;
        let mut keeps = Vec::new();
        if p.retention_max_age_secs > 0 {
            let days = p.retention_max_age_secs / 86_400;
            keeps.push(if days > 0 {
                format!("{days} days")
            } else {
                format!("{} s", p.retention_max_age_secs)
            });
        }
        if p.retention_max_entries > 0 {
            keeps.push(format!("{} messages", p.retention_max_entries));
        }
        Some(if keeps.is_empty() {
            "the server no longer serves it, though it says it keeps everything".to_string()
        } else {
            format!(
                "expired on the server, which keeps {}",
                keeps.join(" and at most ")
            )
        })
    }

    pub fn status(&self, server: &str) -> ConnStatus {
        self.map
            .get(server)
            .map(|c| c.status.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> chacha20::ChaCha20Rng {
        rand_core::SeedableRng::from_seed([5; 32])
    }

    fn remote_close() -> Ended {
        Ended {
            reason: "closed by the other side".into(),
            failed: false,
            by_us: false,
        }
    }

    /// A server that says hello and closes at once cannot keep us
    /// reconnecting every two seconds: the delays grow until a connection
    /// lasts [`STABLE_LINK`], and then start over.
    #[test]
    fn a_connection_that_ends_soon_lets_the_delays_grow() {
        let mut servers = Servers::default();
        let name = "server";
        servers.ensure(name, 0);
        let mut rng = rng();
        let mut now = Instant::from_secs(1_000);
        let mut waits = Vec::new();
        for round in 0..6u64 {
            assert_eq!(servers.due_dials(now), vec![name.to_string()]);
            servers.start_dial(name, LinkId(round));
            assert!(servers.on_up(LinkId(round), &mut rng).is_some());
            servers.set_state(name, ConnState::Authenticated, None);
            servers.hello(name, now);
            now = now + Duration::from_secs(1);
            servers.on_down(LinkId(round), &remote_close(), now, &mut rng);
            let next = servers.get(name).expect("known").next_try;
            waits.push(next.saturating_duration_since(now));
            assert!(servers.due_dials(now).is_empty(), "round {round}");
            now = next;
        }
        let start = Instant::from_secs(1_000) + Duration::from_secs(1);
        assert_eq!(
            servers.get(name).and_then(ServerConn::failing_at),
            Some(start),
            "a server that says hello and closes is failing, since the first time"
        );
        for (i, wait) in waits.iter().enumerate() {
            let cap = Duration::from_secs((2u64 << i).min(300));
            let half = Duration::from_micros(cap.as_micros() / 2);
            assert!(
                *wait >= half && *wait <= cap,
                "wait {i}: {wait:?} for a cap of {cap:?}"
            );
        }
        // One that lasts: the next delay is the shortest again.
        servers.start_dial(name, LinkId(100));
        let _ = servers.on_up(LinkId(100), &mut rng);
        servers.hello(name, now);
        now = now + STABLE_LINK;
        servers.on_down(LinkId(100), &remote_close(), now, &mut rng);
        let next = servers.get(name).expect("known").next_try;
        assert!(next.saturating_duration_since(now) <= Duration::from_secs(2));
        assert_eq!(servers.get(name).and_then(ServerConn::failing_at), None);
    }

    /// A session up hides a failing spell; one that closes within a minute
    /// of its hello leaves it as it was, one that lasted ends it.
    #[test]
    fn a_connection_up_ends_the_failing_spell_once_it_lasts() {
        let mut servers = Servers::default();
        let name = "server";
        servers.ensure(name, 0);
        let mut rng = rng();
        let t0 = Instant::from_secs(1_000);
        servers.start_dial(name, LinkId(1));
        let failure = Ended {
            reason: "offline".into(),
            failed: true,
            by_us: false,
        };
        servers.on_down(LinkId(1), &failure, t0, &mut rng);
        let t1 = servers.get(name).expect("known").next_try;
        servers.start_dial(name, LinkId(2));
        let _ = servers.on_up(LinkId(2), &mut rng);
        assert_eq!(
            servers.get(name).and_then(ServerConn::failing_at),
            Some(t0),
            "no hello: still failing"
        );
        servers.set_state(name, ConnState::Authenticated, None);
        servers.hello(name, t1);
        assert_eq!(
            servers.get(name).and_then(ServerConn::failing_at),
            None,
            "up"
        );
        // It closes within the minute: failing again, since t0.
        let t2 = t1 + Duration::from_secs(59);
        servers.on_down(LinkId(2), &remote_close(), t2, &mut rng);
        assert_eq!(servers.get(name).and_then(ServerConn::failing_at), Some(t0));
        // A session that lasts ends the spell for good.
        let t3 = servers.get(name).expect("known").next_try;
        servers.start_dial(name, LinkId(3));
        let _ = servers.on_up(LinkId(3), &mut rng);
        servers.hello(name, t3);
        servers.on_down(LinkId(3), &remote_close(), t3 + STABLE_LINK, &mut rng);
        assert_eq!(servers.get(name).and_then(ServerConn::failing_at), None);
    }

    /// A connection to `name` on `link`, up and synced, its hello at `at`.
    fn synced(
        servers: &mut Servers,
        name: &str,
        link: LinkId,
        at: Instant,
        rng: &mut impl CryptoRng,
    ) {
        servers.ensure(name, 0);
        servers.start_dial(name, link);
        let _ = servers.on_up(link, rng);
        servers.set_state(name, ConnState::Synced, None);
        servers.hello(name, at);
    }

    fn closed_by_us() -> Ended {
        Ended {
            reason: "closed by us".into(),
            failed: false,
            by_us: true,
        }
    }

    /// A session that lasted, which we close because the server left a
    /// request unanswered, counts as a failure: the spell starts, the
    /// delays do not start over, and the reason is kept, although we
    /// closed it ourselves.
    #[test]
    fn a_connection_closed_for_an_unanswered_request_counts_as_failing() {
        let (mut servers, name, t0) = (Servers::default(), "server", Instant::from_secs(1_000));
        let mut rng = rng();
        synced(&mut servers, name, LinkId(1), t0, &mut rng);
        let later = t0 + STABLE_LINK + STABLE_LINK;
        assert_eq!(
            servers.give_up(name, "did not answer".into()),
            Some(LinkId(1))
        );
        assert!(!servers.get(name).expect("known").healthy_now());
        let ours = closed_by_us();
        assert_eq!(
            servers.on_down(LinkId(1), &ours, later, &mut rng),
            Some((name.to_string(), true))
        );
        let c = servers.get(name).expect("known");
        assert_eq!(c.failing_at(), Some(later));
        assert_eq!(c.status.state, ConnState::Failed);
        assert_eq!(c.status.last_error.as_deref(), Some("did not answer"));
        assert!(c.next_try > later, "backs off");
        // The next connection starts clean: a close of ours says nothing.
        servers.start_dial(name, LinkId(2));
        let _ = servers.on_up(LinkId(2), &mut rng);
        assert_eq!(
            servers.on_down(LinkId(2), &ours, later, &mut rng),
            Some((name.to_string(), false))
        );
    }

    /// A server that says it closes (and may keep the connection open) is
    /// closed by us, and the end is the server's: one that closes soon
    /// after its hello is failing, as if it had closed the stream itself.
    #[test]
    fn a_connection_the_server_says_it_closes_ends_as_the_servers() {
        let (mut servers, name, t0) = (Servers::default(), "server", Instant::from_secs(1_000));
        let mut rng = rng();
        synced(&mut servers, name, LinkId(1), t0, &mut rng);
        assert_eq!(servers.closing(name), Some(LinkId(1)));
        let ours = closed_by_us();
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            servers.on_down(LinkId(1), &ours, t1, &mut rng),
            Some((name.to_string(), false)),
            "not a failure of the link"
        );
        assert_eq!(
            servers.get(name).and_then(ServerConn::failing_at),
            Some(t1),
            "but a server that ends its sessions soon is failing"
        );
    }
}
