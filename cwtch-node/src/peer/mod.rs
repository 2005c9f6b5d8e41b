//! The peer's core: everything the peer daemon decides, as synchronous code
//! with no async, no locks, no clock and no OS randomness, driven like the
//! protocol core's machines.
//!
//! - **In:** [`Peer::handle_command`] (a control API request),
//!   [`Peer::handle_admit`] (a stranger or contact at the handshake),
//!   [`Peer::handle_link`] (what a link to a contact or a server reports),
//!   [`Peer::handle_timeout`], [`Peer::handle_work`] (a bounded step of
//!   proof of work). Every input carries the driver's clocks ([`Now`]).
//! - **Out:** [`Peer::poll_effect`] ([`Effect`]: dial, send, close, notify),
//!   [`Peer::poll_timeout`] (the earliest deadline of every room), and
//!   [`Peer::wants_work`].
//!
//! This file is the router: the only one that sees every room. The rooms
//! (contacts, links, outbox, servers, mailbox, directory, invites, groups
//! and their recovery, moves and adverts) never import the router or each
//! other; what one needs from another, the router passes in. The flows
//! that cross rooms are the router's too, split by what starts them:
//! [`commands`] (the API), [`peer_links`] (contacts' links), [`server_links`]
//! (servers' connections and what they deliver), [`housekeeping`] (time).
//!
//! Storage is synchronous (the profile is a SQLite database): the daemon
//! runs the core on a thread of its own, never on the async executor.

pub mod contacts;
pub mod directory;
pub mod effect;
pub mod groups;
pub mod invites;
pub mod links;
pub mod mailbox;
pub mod outbox;
pub mod servers;

mod commands;
mod housekeeping;
mod peer_links;
mod server_links;

use std::collections::{HashMap, VecDeque};

use chacha20::ChaCha20Rng;
use cwtch_proto::peer::PeerMessage;
use cwtch_proto::peer::message::MAX_ENCODED_LEN;
use cwtch_proto::{Identity, Instant, OnionAddress};
use rand_core::Rng;

use crate::control::api::{ApiError, ErrorCode, Event};
use crate::model::{ConnState, ContactEntry, StoredMessage};
use crate::store::{Profile, StoreFailure};
pub use effect::{Effect, Ended, LinkEvent, LinkId, Now};

/// The proof-of-work hashes one [`Peer::handle_work`] step tries.
pub const WORK_STEP: u64 = cwtch_proto::server::client::POW_STEP_MAX;

/// What a link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Peer,
    Server,
}

/// The peer's core. See the [module docs](self).
pub struct Peer {
    identity: Identity,
    me: OnionAddress,
    name: String,
    store: Profile,
    rng: ChaCha20Rng,
    seq: u64,
    contacts: contacts::Contacts,
    links: links::Links,
    outbox: outbox::Outbox,
    servers: servers::Servers,
    groups: groups::Groups,
    recovery: groups::recovery::RecoveryRoom,
    moves: groups::moving::Moves,
    adverts: groups::adverts::AdvertsRoom,
    mailbox: Option<mailbox::MailboxState>,
    directory: directory::Directory,
    invites: invites::Invites,
    /// Per conversation: received messages the user has not read.
    unread: HashMap<String, u64>,
    kinds: HashMap<LinkId, Kind>,
    next_link: u64,
    effects: VecDeque<Effect>,
    /// Deadlines on our wall clock (group adverts, servers moved away from
    /// expiring, automatic moves), as the monotonic time they fall at.
    wall_deadline: Option<Instant>,
    /// Something the wall-clock work depends on changed (the directory, a
    /// group, a server's health): look again at the next input.
    wall_dirty: bool,
    /// The contacts' generation when we last looked for contacts to dial.
    dialed_contacts_at: Option<u64>,
    /// A note on the transport, shown in `status`.
    transport_note: Option<String>,
}

impl From<StoreFailure> for ApiError {
    fn from(e: StoreFailure) -> Self {
        match e {
            StoreFailure::Invalid(m) => ApiError::new(ErrorCode::Invalid, m),
            other => ApiError::new(ErrorCode::Internal, other.to_string()),
        }
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Invalid, message)
}

/// A peer message's bytes.
fn encode_peer(msg: &PeerMessage<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_ENCODED_LEN];
    match msg.encode(&mut buf) {
        Ok(bytes) => bytes.to_vec(),
        Err(e) => {
            tracing::warn!("cannot encode a peer message: {e}");
            Vec::new()
        }
    }
}

impl Peer {
    /// The core of the profile in `store` (opened), with randomness from
    /// `rng` and the driver's clocks at start.
    pub fn new(
        store: Profile,
        identity: Identity,
        name: String,
        rng: ChaCha20Rng,
        now: Now,
    ) -> Result<Self, StoreFailure> {
        let loaded = store.load()?;
        let me = identity.address();
        let contacts = contacts::Contacts::new(loaded.contacts, loaded.request_texts);
        let is_contact = |a: &str| contacts.is_accepted(a);
        let groups = groups::Groups::new(
            loaded.groups,
            loaded.chains,
            &identity,
            is_contact,
            now.unix,
        )
        .map_err(StoreFailure::Corrupt)?;
        let mut unread = HashMap::new();
        for (conv, seqs) in &loaded.received {
            let read = match contacts.get(conv) {
                Some(c) => c.read_upto,
                None => groups.get(conv).map_or(0, |g| g.record.read_upto),
            };
            let n = seqs.iter().filter(|s| **s > read).count() as u64;
            if n > 0 {
                unread.insert(conv.clone(), n);
            }
        }
        let mailbox = match &loaded.mailbox {
            Some(r) => Some(
                mailbox::MailboxState::from_record(r, now.unix_ms())
                    .map_err(|e| StoreFailure::Corrupt(e.0))?,
            ),
            None => None,
        };
        let mut peer = Peer {
            identity,
            me,
            name,
            store,
            rng,
            seq: loaded.seq,
            contacts,
            links: links::Links::default(),
            outbox: outbox::Outbox::new(loaded.outbox, loaded.posts),
            servers: servers::Servers::default(),
            groups,
            recovery: Default::default(),
            moves: Default::default(),
            adverts: groups::adverts::AdvertsRoom::new(loaded.adverts),
            mailbox,
            directory: directory::Directory::new(loaded.directory),
            invites: invites::Invites::new(loaded.invites),
            unread,
            kinds: HashMap::new(),
            next_link: 1,
            effects: VecDeque::new(),
            wall_deadline: None,
            wall_dirty: true,
            dialed_contacts_at: None,
            transport_note: None,
        };
        for server in peer.servers_to_read(now.unix_ms()) {
            let cursor = loaded.cursors.get(&server).copied().unwrap_or(0);
            peer.servers.ensure(&server, cursor);
        }
        // Posts may wait for servers no group reads any more (first-contact
        // requests to someone's mailbox): read those too, to post.
        let post_servers: Vec<String> = peer
            .outbox
            .posts_of_any()
            .map(|p| p.server.clone())
            .collect();
        for server in post_servers {
            let cursor = loaded.cursors.get(&server).copied().unwrap_or(0);
            peer.servers.ensure(&server, cursor);
        }
        for gid in peer
            .groups
            .all()
            .map(|(g, _)| g.clone())
            .collect::<Vec<_>>()
        {
            let count = peer
                .groups
                .get(&gid)
                .map_or(0, |g| g.tracker.missing_count());
            peer.recovery.handle_gaps(&gid, count, now.mono);
        }
        peer.housekeeping(now);
        Ok(peer)
    }

    /// A note on the transport for `status` (e.g. that it is not Tor).
    pub fn set_transport_note(&mut self, note: Option<String>) {
        self.transport_note = note;
    }

    /// Our address.
    pub fn address(&self) -> &OnionAddress {
        &self.me
    }

    /// Our identity (the daemon publishes our onion service with it).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The next effect to carry out.
    #[must_use]
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When [`Peer::handle_timeout`] is due next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.links.poll_timeout(),
            self.servers.poll_timeout(),
            self.recovery.poll_timeout(),
            self.moves.poll_timeout(),
            self.wall_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether a server connection has proof of work to do: call
    /// [`Peer::handle_work`] in steps, taking other input in between.
    pub fn wants_work(&self, now: Now) -> bool {
        self.servers.wants_work(now.mono)
    }

    /// One bounded step of proof of work ([`WORK_STEP`] hashes at most).
    pub fn handle_work(&mut self, now: Now) {
        if let Some(server) = self.servers.work(now.mono, WORK_STEP) {
            self.transmit_server(&server, now);
        }
    }

    /// Time passed: dials, retries, recovery, moves, adverts, pruning.
    pub fn handle_timeout(&mut self, now: Now) {
        // Servers' deadlines are judged here only, not after each input: the
        // daemon hands over the input that came before a due deadline
        // first, so an answer that came in time is taken before it.
        self.server_timeouts(now);
        self.housekeeping(now);
    }

    // ----- shared helpers of the router ---------------------------------

    fn new_link(&mut self, kind: Kind) -> LinkId {
        let id = LinkId(self.next_link);
        self.next_link += 1;
        self.kinds.insert(id, kind);
        id
    }

    fn notify(&mut self, event: Event) {
        if matches!(event, Event::GroupChanged { .. } | Event::GroupMoved { .. }) {
            self.wall_dirty = true;
        }
        self.effects.push_back(Effect::Notify(event));
    }

    fn send(&mut self, link: LinkId, msg: Vec<u8>) {
        if !msg.is_empty() {
            self.effects.push_back(Effect::Send { link, msg });
        }
    }

    fn close(&mut self, link: LinkId) {
        self.effects.push_back(Effect::Close { link });
    }

    fn random_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn next_seq(&mut self) -> Result<u64, StoreFailure> {
        self.store.next_seq(&mut self.seq)
    }

    /// Every server to read at `now_ms`: the groups', the mailbox's.
    fn servers_to_read(&self, now_ms: u64) -> Vec<String> {
        let mut out = self.groups.servers_to_read(now_ms);
        if let Some(m) = &self.mailbox {
            for s in m.servers_to_read(now_ms) {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// A message as shown: the author's name, and why it waits if it does.
    fn shown(&self, mut m: StoredMessage) -> StoredMessage {
        m.author_name = Some(if m.outgoing || m.author == self.me.as_str() {
            self.name.clone()
        } else {
            match self.contacts.get(&m.author) {
                // A name they announce is a claim: marked, as chat marks it.
                Some(c) if c.nickname.is_none() && !c.name.is_empty() => {
                    format!("{}?", c.name)
                }
                Some(c) => c.shown_name(),
                None => m.author.get(..12).unwrap_or(&m.author).to_string(),
            }
        });
        m
    }

    /// Tells subscribers of a new or changed message.
    fn notify_message(&mut self, m: &StoredMessage) {
        let mut shown = self.shown(m.clone());
        if shown.status == crate::model::Delivery::Pending && !self.groups.contains(&m.conversation)
        {
            shown.note = Some(self.pending_note(&m.conversation));
        }
        self.notify(Event::Message {
            message: json(&shown),
        });
    }

    /// A contact as listed.
    fn contact_entry(&self, address: &str) -> Option<ContactEntry> {
        let c = self.contacts.get(address)?;
        Some(ContactEntry {
            contact: c.clone(),
            connection: self.links.status(address),
            pending: self.outbox.pending_for(address),
            unread: self.unread.get(address).copied().unwrap_or(0),
        })
    }

    fn notify_contact(&mut self, address: &str) {
        let entry = self.contact_entry(address);
        self.notify(Event::ContactChanged {
            contact: entry.map(|e| json(&e)).unwrap_or(serde_json::Value::Null),
            address: address.to_string(),
        });
    }

    fn notify_connection(&mut self, kind: &str, address: &str) {
        if kind == "server" {
            self.wall_dirty = true;
        }
        let status = if kind == "contact" {
            self.links.status(address)
        } else {
            self.servers.status(address)
        };
        self.notify(Event::Connection {
            kind: kind.to_string(),
            address: address.to_string(),
            state: state_word(status.state).to_string(),
            reason: match status.state {
                ConnState::Failed => status.last_error,
                _ => None,
            },
        });
    }

    /// Why a message to `contact` still waits, in plain words.
    fn pending_note(&self, contact: &str) -> String {
        let status = self.links.status(contact);
        match (self.contacts.state(contact), status.state) {
            (Some(crate::model::ContactState::Blocked), _) => {
                "not sent: the contact is blocked".into()
            }
            (Some(crate::model::ContactState::Request), _) => {
                "waiting: accept the contact request to send".into()
            }
            (_, ConnState::Authenticated) => {
                "sent, waiting for the contact's acknowledgement".into()
            }
            (_, ConnState::Connecting | ConnState::Connected) => {
                "waiting: connecting to the contact now".into()
            }
            (_, _) => match status.last_error {
                Some(e) => format!("waiting: the contact is not reachable ({e}); retrying"),
                None => "waiting: not connected to the contact yet".into(),
            },
        }
    }

    /// A received message the user has not read yet.
    fn note_unread(&mut self, conversation: &str) {
        *self.unread.entry(conversation.to_string()).or_default() += 1;
    }
}

/// The word for a connection state, as the API and `--json` say it.
pub fn state_word(state: ConnState) -> &'static str {
    match state {
        ConnState::Disconnected => "disconnected",
        ConnState::Connecting => "connecting",
        ConnState::Connected => "connected",
        ConnState::Authenticated => "authenticated",
        ConnState::Synced => "synced",
        ConnState::Failed => "failed",
    }
}

/// A view as JSON (our own plain structs always serialize).
pub fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}
