//! The peer daemon: a profile, its onion service, its contacts and their
//! links, the outgoing queue with retries.
//!
//! All protocol decisions come from `cwtch-proto` (the handshake, the
//! channel, the message format, the retry schedule); this module keeps the
//! collections that grow with the user's life and persists them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use cwtch_proto::connection::{CloseReason, Config, Connection};
use cwtch_proto::peer::message::MAX_ENCODED_LEN;
use cwtch_proto::peer::requests::request_text_allowed;
use cwtch_proto::peer::session::{admit, keep_new_link};
use cwtch_proto::peer::{
    Backoff, Incoming, PeerEvent, PeerMessage, PeerRefusal, PeerSession, PeerSessionError,
    PendingRequests, RequestOrigin, Standing,
};
use cwtch_proto::{Identity, Instant, OnionAddress, PublicIdentity};
use cwtch_transport_socks::{AnyTransport, IsolationKey, Listener, PEER_PORT, Stream, Transport};
use smol::channel::Sender;
use zeroize::Zeroizing;

use crate::clock;
use crate::link::{self, LinkHandler, LinkSender};
use crate::model::{
    ConnState, ConnStatus, Contact, ContactState, Delivery, OutBody, OutItem, StoredMessage,
};
use crate::profile_store::{ProfileStore, ProfileStoreError as StoreError, Table};

/// The profile's file inside the home directory.
pub const PROFILE_FILE: &str = "profile.db";
/// How many dials may run at once: Tor builds a limited number of circuits
/// at a time, and a big contact list must not stall start-up.
pub const MAX_CONCURRENT_DIALS: usize = 3;

/// Errors the peer reports to the user.
#[derive(Debug)]
pub enum PeerError {
    /// The profile store failed.
    Store(StoreError),
    /// Something the user gave us is wrong.
    Invalid(String),
    /// The profile is damaged (a record does not decode).
    Corrupt(String),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Store(e) => write!(f, "{e}"),
            PeerError::Invalid(e) => f.write_str(e),
            PeerError::Corrupt(e) => write!(f, "profile damaged: {e}"),
        }
    }
}

impl std::error::Error for PeerError {}

impl From<StoreError> for PeerError {
    fn from(e: StoreError) -> Self {
        PeerError::Store(e)
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, PeerError> {
    serde_json::from_slice(bytes).map_err(|e| PeerError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Zeroizing<Vec<u8>> {
    // Serializing our own plain structs to JSON cannot fail.
    Zeroizing::new(serde_json::to_vec(value).unwrap_or_default())
}

/// Creates a new profile in `home` and returns its address.
pub fn init_profile(home: &Path, name: &str, password: &[u8]) -> Result<OnionAddress, PeerError> {
    if name.len() > cwtch_proto::peer::message::MAX_NAME_LEN {
        return Err(PeerError::Invalid(
            "the name is longer than 64 bytes".into(),
        ));
    }
    crate::home::create_private(home).map_err(|e| PeerError::Invalid(e.to_string()))?;
    let store = ProfileStore::create(home.join(PROFILE_FILE), password)?;
    let identity = Identity::generate(&mut clock::rng());
    store.transaction(|tx| {
        tx.put(Table::Meta, b"seed", identity.seed().as_ref())?;
        tx.put(Table::Meta, b"name", name.as_bytes())?;
        tx.put(Table::Meta, b"seq", &0u64.to_le_bytes())?;
        Ok(())
    })?;
    Ok(identity.address())
}

/// Opens the profile in `home`: its identity and display name.
pub fn open_profile(
    home: &Path,
    password: &[u8],
) -> Result<(ProfileStore, Identity, String), PeerError> {
    let path = home.join(PROFILE_FILE);
    if !path.exists() {
        return Err(PeerError::Invalid(format!(
            "no profile in {} (run `cwtch-node init --name NAME` first)",
            home.display()
        )));
    }
    let store = ProfileStore::open(&path, password)?;
    let seed = store
        .get(Table::Meta, b"seed")?
        .ok_or_else(|| PeerError::Corrupt("no identity".into()))?;
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| PeerError::Corrupt("identity has the wrong length".into()))?;
    let identity = Identity::from_seed(&seed);
    let name = store
        .get(Table::Meta, b"name")?
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .unwrap_or_default();
    Ok((store, identity, name))
}

struct LinkEntry {
    id: u64,
    tx: LinkSender,
    we_dialed: bool,
    /// The link's rules: what we say, what we act upon.
    session: PeerSession,
}

pub(crate) struct State {
    pub(crate) name: String,
    pub(crate) contacts: BTreeMap<String, Contact>,
    status: HashMap<String, ConnStatus>,
    links: HashMap<String, LinkEntry>,
    dialing: HashSet<String>,
    backoff: HashMap<String, (Backoff, Instant)>,
    next_seq: u64,
    next_link: u64,
    pub(crate) followers: Vec<Sender<StoredMessage>>,
    pub(crate) groups: BTreeMap<String, crate::groups::GroupState>,
    /// Per group: the automatic move policy (rate-limited).
    pub(crate) auto_moves: HashMap<String, cwtch_proto::group::moving::AutoMove>,
    /// Per server: its own evidence of withholding our posts.
    pub(crate) withheld: crate::moving::WithheldLog,
    /// Per pending request: the texts stored from it.
    pub(crate) request_texts: HashMap<String, u32>,
    /// Group invites waiting for the user's answer.
    pub(crate) invites: crate::invites::Invites,
    pub(crate) servers: HashMap<String, crate::groups::ServerConn>,
    pub(crate) recovery: crate::recovery::RecoveryState,
    pub(crate) mailbox: Option<crate::mailbox::MailboxState>,
    pub(crate) directory: crate::directory::Directory,
    pub(crate) group_adverts: crate::group_adverts::GroupAdvertState,
}

/// A running peer.
pub struct PeerNode {
    pub(crate) identity: Identity,
    address: String,
    pub(crate) store: ProfileStore,
    pub(crate) transport: AnyTransport,
    state: Mutex<State>,
    /// Where the daemon lives (control socket, logs).
    pub home: PathBuf,
}

impl PeerNode {
    /// Loads everything from the profile.
    pub fn load(
        home: &Path,
        store: ProfileStore,
        identity: Identity,
        name: String,
        transport: AnyTransport,
    ) -> Result<Arc<Self>, PeerError> {
        let mut contacts = BTreeMap::new();
        for (_, value) in store.scan(Table::Contacts)? {
            let c: Contact = decode(&value, "contact")?;
            contacts.insert(c.address.clone(), c);
        }
        let next_seq = store
            .get(Table::Meta, b"seq")?
            .and_then(|v| v.as_slice().try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(0);
        let node = Arc::new(PeerNode {
            address: identity.address().to_string(),
            identity,
            store,
            transport,
            home: home.to_path_buf(),
            state: Mutex::new(State {
                name,
                contacts,
                status: HashMap::new(),
                links: HashMap::new(),
                dialing: HashSet::new(),
                backoff: HashMap::new(),
                next_seq,
                next_link: 1,
                followers: Vec::new(),
                groups: BTreeMap::new(),
                auto_moves: HashMap::new(),
                withheld: Default::default(),
                request_texts: HashMap::new(),
                invites: Default::default(),
                servers: HashMap::new(),
                recovery: Default::default(),
                mailbox: None,
                directory: Default::default(),
                group_adverts: Default::default(),
            }),
        });
        {
            // Texts already stored from each pending request (the limit
            // holds across restarts).
            let mut counts: HashMap<String, u32> = HashMap::new();
            let requests: HashSet<String> = node
                .state()
                .contacts
                .values()
                .filter(|c| c.state == ContactState::Request)
                .map(|c| c.address.clone())
                .collect();
            if !requests.is_empty() {
                for (_, value) in node.store.scan(Table::Messages)? {
                    let m: StoredMessage = decode(&value, "message")?;
                    if !m.outgoing && requests.contains(&m.conversation) {
                        *counts.entry(m.conversation).or_default() += 1;
                    }
                }
            }
            node.state().request_texts = counts;
        }
        node.load_invites()?;
        node.load_groups()?;
        node.load_mailbox()?;
        node.load_directory()?;
        Ok(node)
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Our address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Our display name.
    pub fn name(&self) -> String {
        self.state().name.clone()
    }

    pub(crate) fn next_seq(&self, state: &mut State) -> Result<u64, PeerError> {
        state.next_seq += 1;
        self.store
            .put(Table::Meta, b"seq", &state.next_seq.to_le_bytes())?;
        Ok(state.next_seq)
    }

    // ----- user commands ----------------------------------------------------

    /// Adds a contact (accepted) and optionally queues a first message.
    /// `address` may be an extended identifier (SPEC.md section 12): then a
    /// sealed first-contact request also goes to their mailbox.
    pub fn contact_add(&self, address: &str, message: Option<&str>) -> Result<Contact, PeerError> {
        let identifier = cwtch_proto::mailbox::Identifier::parse(address)
            .map_err(|e| PeerError::Invalid(format!("{address}: {e}")))?;
        crate::mailbox::check_first_contact(&identifier, message)?;
        let address = identifier.owner().to_string();
        if address == self.address {
            return Err(PeerError::Invalid("that is our own address".into()));
        }
        let contact = {
            let mut st = self.state();
            let contact =
                self.set_contact_state(&mut st, &address, ContactState::Accepted, true)?;
            st.backoff.remove(&address);
            contact
        };
        let first = match message {
            Some(text) => Some(self.send_text(&address, text)?),
            None => None,
        };
        self.post_first_contact(&identifier, first.as_ref())?;
        Ok(contact)
    }

    /// Accepts a contact request. On an open link the requester is greeted
    /// now: it learns our name.
    pub fn contact_accept(&self, address: &str) -> Result<Contact, PeerError> {
        let address = canonical(address)?;
        let mut st = self.state();
        self.set_contact_state(&mut st, &address, ContactState::Accepted, false)
    }

    /// Blocks a contact: its open link is closed, and it is refused at the
    /// handshake from now on.
    pub fn contact_block(&self, address: &str) -> Result<Contact, PeerError> {
        let address = canonical(address)?;
        let mut st = self.state();
        self.set_contact_state(&mut st, &address, ContactState::Blocked, true)
    }

    /// Sets a contact's state (creating the contact if `create`), persists
    /// it, and tells the open link's session (which may greet or close).
    fn set_contact_state(
        &self,
        st: &mut State,
        address: &str,
        state: ContactState,
        create: bool,
    ) -> Result<Contact, PeerError> {
        if create {
            st.contacts
                .entry(address.to_string())
                .or_insert_with(|| Contact {
                    address: address.to_string(),
                    name: String::new(),
                    state,
                    from_mailbox: false,
                });
        }
        let contact = st
            .contacts
            .get_mut(address)
            .ok_or_else(|| PeerError::Invalid(format!("no contact request from {address}")))?;
        contact.state = state;
        if state != ContactState::Request {
            contact.from_mailbox = false;
        }
        let contact = contact.clone();
        if state != ContactState::Request {
            st.request_texts.remove(address);
        }
        if state == ContactState::Blocked {
            self.drop_invites_from(st, address);
        }
        self.store
            .put(Table::Contacts, address.as_bytes(), &encode(&contact))?;
        if let Some(link) = st.links.get_mut(address) {
            link.session.handle_standing(standing(Some(state), true));
            let out = self.link_actions(st, address);
            if let Some(link) = st.links.get(address) {
                link::send_all(&link.tx, out);
            }
        }
        Ok(contact)
    }

    /// Carries out what the session of the link to `remote` asks: greets
    /// (the messages to send are returned), records a request, or closes
    /// the link.
    fn link_actions(&self, st: &mut State, remote: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(action) = st
            .links
            .get_mut(remote)
            .and_then(|l| l.session.poll_event())
        {
            match action {
                PeerEvent::Greet => {
                    out.push(self.hello(&st.name));
                    out.extend(self.outbox_for(remote));
                    out.extend(self.directory_to_share(st));
                    out.extend(self.moves_to_share(st, remote));
                }
                PeerEvent::RecordRequest => {
                    // An unknown peer that authenticated: a contact request.
                    let contact = Contact {
                        address: remote.to_string(),
                        name: String::new(),
                        state: ContactState::Request,
                        from_mailbox: false,
                    };
                    if let Err(e) =
                        self.store
                            .put(Table::Contacts, remote.as_bytes(), &encode(&contact))
                    {
                        tracing::warn!("cannot store contact request: {e}");
                    }
                    st.contacts.insert(remote.to_string(), contact);
                }
                PeerEvent::Close(why) => {
                    if why == PeerRefusal::TooManyRequests {
                        crate::limits::log_drop(crate::limits::DropReason::TooManyContactRequests);
                    }
                    if let Some(link) = st.links.remove(remote) {
                        link::close(&link.tx);
                    }
                    st.status.entry(remote.to_string()).or_default().state =
                        ConnState::Disconnected;
                    return Vec::new();
                }
            }
        }
        out
    }

    /// Every contact with its connection status.
    pub fn contacts(&self) -> Vec<(Contact, ConnStatus)> {
        let st = self.state();
        st.contacts
            .values()
            .map(|c| {
                (
                    c.clone(),
                    st.status.get(&c.address).cloned().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Queues a text for a contact; it is sent when a link is up and kept
    /// until acknowledged.
    pub fn send_text(&self, address: &str, text: &str) -> Result<StoredMessage, PeerError> {
        let address = canonical(address)?;
        if text.len() > cwtch_proto::peer::message::MAX_TEXT_LEN {
            return Err(PeerError::Invalid(
                "the text is longer than 4096 bytes".into(),
            ));
        }
        let mut st = self.state();
        match st.contacts.get(&address).map(|c| c.state) {
            Some(ContactState::Accepted) => {}
            Some(ContactState::Request) => {
                return Err(PeerError::Invalid(format!(
                    "accept the contact request first: cwtch-node contact accept {address}"
                )));
            }
            Some(ContactState::Blocked) => {
                return Err(PeerError::Invalid(format!("{address} is blocked")));
            }
            None => {
                return Err(PeerError::Invalid(format!(
                    "{address} is not a contact: cwtch-node contact add {address}"
                )));
            }
        }
        let seq = self.next_seq(&mut st)?;
        let id = clock::random_u64();
        let sent_at = clock::unix_millis();
        let msg = StoredMessage {
            seq,
            conversation: address.clone(),
            id,
            outgoing: true,
            author: self.address.clone(),
            text: text.to_string(),
            sent_at,
            status: Delivery::Pending,
            note: None,
        };
        let item = OutItem {
            seq,
            contact: address.clone(),
            id,
            body: OutBody::Text {
                text: text.to_string(),
                sent_at,
            },
        };
        self.store.transaction(|tx| {
            tx.put(
                Table::Messages,
                &message_key(&address, true, id),
                &encode(&msg),
            )?;
            tx.put(Table::Outbox, &outbox_key(&address, id), &encode(&item))?;
            Ok(())
        })?;
        if let Some(link) = st.links.get(&address) {
            // A full queue closes the link rather than skip this one: the
            // next link sends the whole outbox, in order.
            link::send_all(&link.tx, vec![encode_out(&item)]);
        }
        notify(&mut st, &msg);
        Ok(msg)
    }

    /// The messages of a conversation, in local order.
    pub fn messages(&self, conversation: &str) -> Result<Vec<StoredMessage>, PeerError> {
        let conversation = match OnionAddress::parse(conversation) {
            Ok(a) => a.to_string(),
            Err(_) => self.find_group(conversation)?,
        };
        let mut out = Vec::new();
        for (_, value) in self.store.scan(Table::Messages)? {
            let m: StoredMessage = decode(&value, "message")?;
            if m.conversation == conversation {
                out.push(m);
            }
        }
        if self.state().groups.contains_key(&conversation) {
            return Ok(self.group_view(&conversation, out));
        }
        out.sort_by_key(|m| m.seq);
        let st = self.state();
        for m in out.iter_mut().filter(|m| m.status == Delivery::Pending) {
            m.note = Some(pending_note(&st, &conversation));
        }
        Ok(out)
    }

    /// Subscribes to new and updated messages (for `messages --follow`).
    pub fn follow(&self) -> smol::channel::Receiver<StoredMessage> {
        let (tx, rx) = smol::channel::bounded(256);
        self.state().followers.push(tx);
        rx
    }

    /// Per contact, the messages and invites waiting for its
    /// acknowledgement.
    pub fn pending_per_contact(&self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        if let Ok(rows) = self.store.scan(Table::Outbox) {
            for (_, v) in rows {
                if let Ok(item) = serde_json::from_slice::<OutItem>(&v) {
                    *out.entry(item.contact).or_default() += 1;
                }
            }
        }
        out
    }

    /// The number of items waiting in the outgoing queue.
    pub fn outbox_len(&self) -> Result<usize, PeerError> {
        Ok(self.store.scan(Table::Outbox)?.len())
    }

    // ----- links ------------------------------------------------------------

    fn hello(&self, name: &str) -> Vec<u8> {
        encode_peer(&PeerMessage::Hello { name })
    }

    /// Shows how a dial to `address` goes, unless a link to it is already
    /// up: a dial started just before the peer's own link came up, or one
    /// that loses the tie-break (`keep_new_link`), must not show an
    /// authenticated contact as connecting, connected or failed (it stayed
    /// so while the link was up, and `contact list` said so).
    fn set_dial_status(&self, address: &str, state: ConnState, error: Option<String>) {
        let mut st = self.state();
        if st.links.contains_key(address) {
            return;
        }
        let entry = st.status.entry(address.to_string()).or_default();
        entry.state = state;
        if error.is_some() {
            entry.last_error = error;
        }
    }

    /// Accepts peers on our onion service until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: Listener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let node = self.clone();
                    smol::spawn(async move { node.run_link(stream, None).await }).detach();
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    smol::Timer::after(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Keeps links to accepted contacts: dials those without a link, a few
    /// at a time, those with queued messages first, with backoff and jitter
    /// after failures.
    pub async fn keep_connected(self: Arc<Self>) {
        loop {
            let now = clock::now();
            let candidates = {
                let st = self.state();
                let mut pending: HashSet<String> = HashSet::new();
                if let Ok(items) = self.store.scan(Table::Outbox) {
                    for (_, v) in items {
                        if let Ok(item) = serde_json::from_slice::<OutItem>(&v) {
                            pending.insert(item.contact);
                        }
                    }
                }
                let mut c: Vec<(bool, String)> = st
                    .contacts
                    .values()
                    .filter(|c| c.state == ContactState::Accepted)
                    .filter(|c| {
                        !st.links.contains_key(&c.address) && !st.dialing.contains(&c.address)
                    })
                    .filter(|c| st.backoff.get(&c.address).is_none_or(|(_, at)| *at <= now))
                    .map(|c| (!pending.contains(&c.address), c.address.clone()))
                    .collect();
                c.sort();
                let room = MAX_CONCURRENT_DIALS.saturating_sub(st.dialing.len());
                c.into_iter().take(room).map(|(_, a)| a).collect::<Vec<_>>()
            };
            for address in candidates {
                self.state().dialing.insert(address.clone());
                let node = self.clone();
                smol::spawn(async move { node.dial(address).await }).detach();
            }
            smol::Timer::after(std::time::Duration::from_millis(500)).await;
        }
    }

    async fn dial(self: Arc<Self>, address: String) {
        self.set_dial_status(&address, ConnState::Connecting, None);
        let result = match OnionAddress::parse(&address) {
            Ok(peer) => {
                let isolation = IsolationKey::for_identity(&self.identity.address());
                self.transport
                    .dial(&peer, PEER_PORT, &isolation)
                    .await
                    .map(|s| (s, peer))
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let established = match result {
            Ok((stream, peer)) => {
                self.set_dial_status(&address, ConnState::Connected, None);
                let (established, reason) = self
                    .clone()
                    .run_link(stream, Some(peer.public_identity()))
                    .await;
                if !established {
                    // Else it would stay "connected" with no reason given.
                    let why = reason.map_or_else(
                        || "the handshake did not complete".to_string(),
                        |r| format!("handshake failed: {}", describe_close(r)),
                    );
                    self.set_dial_status(&address, ConnState::Failed, Some(why));
                }
                established
            }
            Err(reason) => {
                tracing::info!("dial failed: {reason}");
                self.set_dial_status(&address, ConnState::Failed, Some(reason));
                false
            }
        };
        let mut st = self.state();
        // An established link gave its dial slot back when it came up (and
        // a later dial to the same contact may hold the slot now).
        if !established {
            st.dialing.remove(&address);
        }
        if !st.links.contains_key(&address) {
            let now = clock::now();
            let entry = st
                .backoff
                .entry(address.clone())
                .or_insert((Backoff::for_peers(), now));
            entry.1 = entry.0.next_attempt(now, &mut clock::rng());
        }
    }

    /// Runs one link, dialed (`remote` known) or accepted, until it ends:
    /// whether it was established, and why it closed (None if it was
    /// evicted).
    async fn run_link(
        self: Arc<Self>,
        stream: Stream,
        remote: Option<PublicIdentity>,
    ) -> (bool, Option<CloseReason>) {
        let mut rng = clock::rng();
        let now = clock::now();
        let conn = match remote {
            Some(r) => {
                Connection::initiator(Config::default(), self.identity.clone(), r, &mut rng, now)
            }
            None => Connection::responder(
                crate::limits::responder_config(),
                self.identity.clone(),
                &mut rng,
                now,
            ),
        };
        // Inbound connections hold one of a bounded number of handshake
        // slots until the peer is authenticated.
        let slot = remote
            .is_none()
            .then(|| std::sync::Arc::new(crate::limits::PEER_HANDSHAKES.admit()));
        let (tx, rx) = smol::channel::bounded(64);
        let id = {
            let mut st = self.state();
            st.next_link += 1;
            st.next_link
        };
        let mut handler = PeerLink {
            node: self.clone(),
            id,
            tx,
            remote: None,
            we_dialed: remote.is_some(),
            slot: slot.clone(),
            closed: None,
        };
        let evicted = async {
            match &slot {
                Some(s) => s.evicted().await,
                None => std::future::pending().await,
            }
        };
        smol::future::or(
            async {
                link::drive(stream, conn, rx, &mut handler).await;
            },
            evicted,
        )
        .await;
        (handler.remote.is_some(), handler.closed)
    }

    fn on_established(&self, link: &PeerLink, remote: &str) -> Vec<Vec<u8>> {
        let mut st = self.state();
        // A dial counts against MAX_CONCURRENT_DIALS until its link is up,
        // not for the link's lifetime: else three long-lived links would
        // stop every other contact from being dialed.
        if link.we_dialed {
            st.dialing.remove(remote);
        }
        // Two links to the same peer (both dialed at once): both sides keep
        // the same one (`keep_new_link`).
        if let Some(existing) = st.links.get(remote) {
            let keep_new = OnionAddress::parse(remote).is_ok_and(|r| {
                keep_new_link(
                    &self.identity.address(),
                    &r,
                    existing.we_dialed,
                    link.we_dialed,
                )
            });
            if !keep_new {
                link::close(&link.tx);
                return Vec::new();
            }
            link::close(&existing.tx);
        }
        let session = PeerSession::new(standing_of(&st, remote));
        st.links.insert(
            remote.to_string(),
            LinkEntry {
                id: link.id,
                tx: link.tx.clone(),
                we_dialed: link.we_dialed,
                session,
            },
        );
        st.backoff.remove(remote);
        let entry = st.status.entry(remote.to_string()).or_default();
        entry.state = ConnState::Authenticated;
        self.link_actions(&mut st, remote)
    }

    fn outbox_for(&self, contact: &str) -> Vec<Vec<u8>> {
        let mut items: Vec<OutItem> = match self.store.scan(Table::Outbox) {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|(_, v)| serde_json::from_slice::<OutItem>(&v).ok())
                .filter(|i| i.contact == contact)
                .collect(),
            Err(e) => {
                tracing::warn!("cannot read the outgoing queue: {e}");
                Vec::new()
            }
        };
        items.sort_by_key(|i| i.seq);
        items.iter().map(encode_out).collect()
    }

    fn on_message(&self, link_id: u64, remote: &str, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut st = self.state();
        // Only the link the session belongs to (not one closing after a
        // tie-break or a block).
        let msg = match st.links.get_mut(remote).filter(|l| l.id == link_id) {
            Some(l) => l.session.handle_message(bytes),
            None => Err(PeerSessionError::Closed),
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                crate::log_throttled!(kind = e; "ignoring a message from a peer: {e}");
                return Vec::new();
            }
        };
        match msg {
            Incoming::Hello { name } => {
                // Once per link: the session refuses a second Hello.
                let name = clean_name(name);
                if let Some(c) = st.contacts.get_mut(remote)
                    && c.name != name
                {
                    c.name = name;
                    let c = c.clone();
                    let _ = self
                        .store
                        .put(Table::Contacts, remote.as_bytes(), &encode(&c));
                }
                Vec::new()
            }
            Incoming::Text {
                id,
                sent_at,
                text,
                ack,
            } => {
                let key = message_key(remote, false, id);
                match self.store.get(Table::Messages, &key) {
                    Ok(Some(_)) => {} // a duplicate (our ack was lost): ack again
                    Ok(None)
                        if st.contacts.get(remote).map(|c| c.state)
                            == Some(ContactState::Request)
                            && !request_text_allowed(
                                st.request_texts.get(remote).copied().unwrap_or(0),
                            ) =>
                    {
                        crate::limits::log_drop(crate::limits::DropReason::TooManyRequestTexts);
                        return Vec::new(); // not stored, not acknowledged
                    }
                    Ok(None) => {
                        let seq = match self.next_seq(&mut st) {
                            Ok(s) => s,
                            Err(_) => return Vec::new(),
                        };
                        // The sender's clock is a claim: never shown later
                        // than ours plus the skew.
                        let sent_at =
                            cwtch_proto::ClaimedTime::from_micros(sent_at.saturating_mul(1000))
                                .clamp_to(clock::unix_now(), cwtch_proto::time::MAX_CLOCK_SKEW)
                                .as_millis();
                        let m = StoredMessage {
                            seq,
                            conversation: remote.to_string(),
                            id,
                            outgoing: false,
                            author: remote.to_string(),
                            text: text.to_string(),
                            sent_at,
                            status: Delivery::Received,
                            note: None,
                        };
                        if self.store.put(Table::Messages, &key, &encode(&m)).is_err() {
                            return Vec::new(); // not stored: no ack, the sender retries
                        }
                        if st.contacts.get(remote).map(|c| c.state) == Some(ContactState::Request) {
                            *st.request_texts.entry(remote.to_string()).or_default() += 1;
                        }
                        notify(&mut st, &m);
                    }
                    Err(_) => return Vec::new(),
                }
                vec![encode_peer(&ack.stored())]
            }
            Incoming::Delivered { id } => {
                let key = message_key(remote, true, id);
                let updated = match self.store.get(Table::Messages, &key) {
                    Ok(Some(v)) => serde_json::from_slice::<StoredMessage>(&v)
                        .ok()
                        .map(|mut m| {
                            m.status = Delivery::Delivered;
                            m
                        }),
                    _ => None,
                };
                let result = self.store.transaction(|tx| {
                    tx.delete(Table::Outbox, &outbox_key(remote, id))?;
                    if let Some(m) = &updated {
                        tx.put(Table::Messages, &key, &encode(m))?;
                    }
                    Ok(())
                });
                if result.is_ok()
                    && let Some(m) = updated
                {
                    notify(&mut st, &m);
                }
                Vec::new()
            }
            Incoming::GroupInvite { invite, ack, .. } => {
                // Only from accepted contacts (the session refuses it from a
                // request, unacknowledged, so it is offered again once we
                // accept). A refused invite is acknowledged too: sending it
                // again would not change the answer.
                drop(st);
                if let Err(e) = self.receive_invite(remote, invite) {
                    crate::log_throttled!(kind = e; "refusing a group invite: {e}");
                }
                vec![encode_peer(&ack.stored())]
            }
            Incoming::ResendRequest { id, wanted } => {
                self.on_resend_request(&mut st, remote, id, wanted)
            }
            Incoming::ResendBlob { id, blob } => {
                self.on_resend_blob(&mut st, remote, id, blob);
                Vec::new()
            }
            Incoming::ServerAdvert { advert } => {
                self.directory_from_contact(&mut st, remote, advert);
                Vec::new()
            }
            Incoming::MoveBlob { blob } => {
                self.on_move_blob(&mut st, remote, blob);
                Vec::new()
            }
        }
    }

    fn on_closed(&self, link: &PeerLink, reason: CloseReason) {
        let Some(remote) = &link.remote else { return };
        let mut st = self.state();
        if st.links.get(remote).is_some_and(|l| l.id == link.id) {
            st.links.remove(remote);
            let entry = st.status.entry(remote.clone()).or_default();
            match reason {
                CloseReason::Local | CloseReason::Remote(_) => {
                    entry.state = ConnState::Disconnected;
                }
                other => {
                    entry.state = ConnState::Failed;
                    entry.last_error = Some(describe_close(other));
                }
            }
        }
    }
}

/// Why a message to `contact` still waits, in plain words.
fn pending_note(st: &State, contact: &str) -> String {
    let status = st.status.get(contact).cloned().unwrap_or_default();
    let state = st.contacts.get(contact).map(|c| c.state);
    match (state, status.state) {
        (Some(ContactState::Blocked), _) => "not sent: the contact is blocked".into(),
        (Some(ContactState::Request), _) => "waiting: accept the contact request to send".into(),
        (_, ConnState::Authenticated) => "sent, waiting for the contact's acknowledgement".into(),
        (_, ConnState::Connecting | ConnState::Connected) => {
            "waiting: connecting to the contact now".into()
        }
        (_, _) => match status.last_error {
            Some(e) => format!("waiting: the contact is not reachable ({e}); retrying"),
            None => "waiting: not connected to the contact yet".into(),
        },
    }
}

/// How we stand with `address`, for its link's session.
fn standing_of(st: &State, address: &str) -> Standing {
    standing(
        st.contacts.get(address).map(|c| c.state),
        can_add_request(st),
    )
}

fn standing(state: Option<ContactState>, room_for_request: bool) -> Standing {
    match state {
        Some(ContactState::Accepted) => Standing::Accepted,
        Some(ContactState::Request) => Standing::Request,
        Some(ContactState::Blocked) => Standing::Blocked,
        None => Standing::Stranger { room_for_request },
    }
}

fn can_add_request(st: &State) -> bool {
    pending_requests(st).room_for(RequestOrigin::Online)
}

/// The pending contact requests, by origin.
pub(crate) fn pending_requests(st: &State) -> PendingRequests {
    let mut p = PendingRequests::default();
    for c in st
        .contacts
        .values()
        .filter(|c| c.state == ContactState::Request)
    {
        if c.from_mailbox {
            p.mailbox += 1;
        } else {
            p.online += 1;
        }
    }
    p
}

/// A name another party chose, made safe to keep and show: control
/// characters (which could forge lines or colours in a terminal) become
/// U+FFFD.
pub fn clean_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

fn describe_close(reason: CloseReason) -> String {
    match reason {
        CloseReason::Local => "closed by us".into(),
        CloseReason::Refused => "refused (blocked)".into(),
        CloseReason::Remote(_) => "closed by the peer".into(),
        CloseReason::TimedOut(t) => format!("timed out ({t:?})"),
        CloseReason::Error(e) => e.to_string(),
    }
}

pub(crate) fn link_sender(st: &State, address: &str) -> Option<LinkSender> {
    st.links.get(address).map(|l| l.tx.clone())
}

pub(crate) fn notify(st: &mut State, msg: &StoredMessage) {
    st.followers
        .retain(|f| f.try_send(msg.clone()).is_ok() || !f.is_closed() && !f.is_full());
}

fn canonical(address: &str) -> Result<String, PeerError> {
    OnionAddress::parse(address)
        .map(|a| a.to_string())
        .map_err(|e| PeerError::Invalid(format!("{address}: {e}")))
}

pub(crate) fn message_key(conversation: &str, outgoing: bool, id: u64) -> Vec<u8> {
    let mut k = conversation.as_bytes().to_vec();
    k.push(if outgoing { b'>' } else { b'<' });
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(crate) fn outbox_key(contact: &str, id: u64) -> Vec<u8> {
    let mut k = contact.as_bytes().to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(crate) fn encode_peer(msg: &PeerMessage<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_ENCODED_LEN];
    match msg.encode(&mut buf) {
        Ok(bytes) => bytes.to_vec(),
        Err(e) => {
            tracing::warn!("cannot encode a peer message: {e}");
            Vec::new()
        }
    }
}

fn encode_out(item: &OutItem) -> Vec<u8> {
    match &item.body {
        OutBody::Text { text, sent_at } => encode_peer(&PeerMessage::Text {
            id: item.id,
            sent_at: *sent_at,
            text,
        }),
        OutBody::Invite { invite } => encode_peer(&PeerMessage::GroupInvite {
            id: item.id,
            invite,
        }),
    }
}

struct PeerLink {
    node: Arc<PeerNode>,
    id: u64,
    tx: LinkSender,
    remote: Option<String>,
    we_dialed: bool,
    /// Inbound only: our handshake slot, released once authenticated.
    slot: Option<Arc<crate::limits::Slot>>,
    /// Why the link closed, once it has.
    closed: Option<CloseReason>,
}

impl LinkHandler for PeerLink {
    fn incoming(&mut self, remote: PublicIdentity) -> bool {
        let address = remote.address().to_string();
        let standing = standing_of(&self.node.state(), &address);
        match admit(standing) {
            Ok(()) => true,
            Err(PeerRefusal::TooManyRequests) => {
                crate::limits::log_drop(crate::limits::DropReason::TooManyContactRequests);
                false
            }
            Err(PeerRefusal::Blocked) => false,
        }
    }

    fn established(&mut self, remote: PublicIdentity) -> Vec<Vec<u8>> {
        if let Some(slot) = &self.slot {
            slot.release();
        }
        let address = remote.address().to_string();
        self.remote = Some(address.clone());
        self.node.on_established(self, &address)
    }

    fn message(&mut self, msg: &[u8]) -> Vec<Vec<u8>> {
        match &self.remote {
            Some(remote) => self.node.on_message(self.id, remote, msg),
            None => Vec::new(),
        }
    }

    fn closed(&mut self, reason: CloseReason) {
        self.closed = Some(reason);
        self.node.on_closed(self, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cwtch_transport_socks::DevTransport;

    fn node(dir: &Path) -> Arc<PeerNode> {
        let store =
            ProfileStore::create_insecure_for_tests(dir.join(PROFILE_FILE), b"pw").expect("store");
        let identity = Identity::from_seed(&[7; 32]);
        let (dev, _) = DevTransport::new(dir.join("dev"));
        PeerNode::load(dir, store, identity, "a".into(), AnyTransport::Dev(dev)).expect("node")
    }

    fn state_of(node: &PeerNode, address: &str) -> ConnState {
        node.state()
            .status
            .get(address)
            .map_or(ConnState::Disconnected, |s| s.state)
    }

    /// The race behind a stuck "connected": a dial that starts just before
    /// the contact's own link comes up (or loses the tie-break to it) used
    /// to overwrite the link's "authenticated".
    #[test]
    fn a_dial_never_hides_a_link_that_is_up() {
        let dir = tempfile::tempdir().unwrap();
        let node = node(dir.path());
        let peer = Identity::from_seed(&[9; 32]).address().to_string();

        // No link: the dial's progress shows.
        node.set_dial_status(&peer, ConnState::Connecting, None);
        assert_eq!(state_of(&node, &peer), ConnState::Connecting);
        node.set_dial_status(&peer, ConnState::Failed, Some("refused".into()));
        assert_eq!(state_of(&node, &peer), ConnState::Failed);

        // The peer's own link comes up while our dial is under way.
        let (tx, _rx) = smol::channel::bounded(1);
        {
            let mut st = node.state();
            st.links.insert(
                peer.clone(),
                LinkEntry {
                    id: 1,
                    tx,
                    we_dialed: false,
                    session: PeerSession::new(Standing::Accepted),
                },
            );
            st.status.entry(peer.clone()).or_default().state = ConnState::Authenticated;
        }
        for (state, error) in [
            (ConnState::Connecting, None),
            (ConnState::Connected, None),
            (ConnState::Failed, Some("lost the tie-break".to_string())),
        ] {
            node.set_dial_status(&peer, state, error);
            assert_eq!(state_of(&node, &peer), ConnState::Authenticated);
        }
    }
}
