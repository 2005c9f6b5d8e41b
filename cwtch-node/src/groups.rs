//! Groups in the peer daemon: creating, inviting, posting through servers,
//! and syncing every server a group uses: fetch what was missed since the
//! saved cursor, subscribe, detect our blobs with the cheap tag, open them,
//! and feed the core's gap tracker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cwtch_proto::connection::{CloseReason, Config, Connection};
use cwtch_proto::group::MoveNotice;
use cwtch_proto::group::SEALED_BLOB_LEN;
use cwtch_proto::group::message::{MessageHash, MessageKind};
use cwtch_proto::group::moving::{NoticeVerdict, judge_notice};
use cwtch_proto::group::{
    GapEvent, GapTracker, Group, GroupSecret, Invite, SenderChain, ServerList,
};
use cwtch_proto::peer::PeerMessage;
use cwtch_proto::server::client::{ClientConfig, ClientEvent, PostId, ServerClient};
use cwtch_proto::server::wire::MAX_SERVER_MESSAGE_LEN;
use cwtch_proto::time::MAX_CLOCK_SKEW;
use cwtch_proto::{Instant, OnionAddress, PublicIdentity, UnixMicros};
use cwtch_transport_socks::{IsolationKey, PEER_PORT, Transport};
use serde::{Deserialize, Serialize};

use crate::clock;
use crate::link::{self, LinkHandler, LinkSender};
use crate::model::{ConnState, ConnStatus, Delivery, OutBody, OutItem, StoredMessage};
use crate::peer::{PeerError, PeerNode, decode, encode, notify, outbox_key};
use crate::profile_store::Table;

/// A group as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The group id (hex), members' name for the group.
    pub id: String,
    /// The name shown.
    pub name: String,
    /// The secret (hex). Only ever inside the encrypted profile; wiped
    /// when dropped, never printed.
    pub secret: SecretHex,
    /// The servers it uses.
    pub servers: Vec<String>,
    /// Our chain: next sequence number and hash of our last message.
    pub next_seq: u64,
    /// Hex of the hash of our last message.
    pub prev_hash: String,
    /// Addresses of the members we know of (authors seen, the inviter):
    /// whom to ask for missing messages. At most [`MAX_KNOWN_MEMBERS`].
    #[serde(default)]
    pub members: Vec<String>,
    /// Servers the group used before a move, still read until `until`.
    #[serde(default)]
    pub previous: Vec<PreviousServer>,
    /// The timestamp (µs) of the move notice the servers come from; an
    /// older notice arriving late does not undo a newer one.
    #[serde(default)]
    pub moved_at: u64,
}

/// A secret in hex, as stored inside the encrypted profile: wiped from
/// memory when dropped (every clone too), and never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretHex(pub String);

impl std::ops::Deref for SecretHex {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHex(..)")
    }
}

impl Drop for SecretHex {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// A server a group moved away from, still read for a while.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousServer {
    /// The server.
    pub server: String,
    /// Read until then (Unix ms).
    pub until: u64,
}

/// The most member addresses a group record keeps.
pub const MAX_KNOWN_MEMBERS: usize = 64;

/// Adds `address` to a group's known members (whom recovery asks and moves
/// are told to). When the list is full, an accepted contact takes the place
/// of a member who is not one: members of a liar's making (anyone with the
/// secret can sign as many keys as it likes) cannot crowd our contacts out.
/// Whether the list changed.
pub(crate) fn remember_member(
    members: &mut Vec<String>,
    address: &str,
    is_contact: impl Fn(&str) -> bool,
) -> bool {
    if members.iter().any(|m| m == address) {
        return false;
    }
    if members.len() < MAX_KNOWN_MEMBERS {
        members.push(address.to_string());
        return true;
    }
    if !is_contact(address) {
        return false;
    }
    match members.iter().position(|m| !is_contact(m)) {
        Some(i) => {
            members.remove(i);
            members.push(address.to_string());
            true
        }
        None => false,
    }
}

impl GroupRecord {
    /// Every server to read: the current ones, then those moved away from
    /// and not yet expired at `now_ms`.
    pub fn servers_to_read(&self, now_ms: u64) -> Vec<String> {
        let mut out = self.servers.clone();
        for p in &self.previous {
            if p.until > now_ms && !out.contains(&p.server) {
                out.push(p.server.clone());
            }
        }
        out
    }
}

/// One received or sent group message's chain data, to rebuild the gap
/// tracker at start.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ChainRecord {
    member: String,
    seq: u64,
    hash: String,
    prev_hash: String,
}

/// The node's gap tracker: 32 members (a quarter of them for members known
/// only from others' claims), a window of 32 messages, 8 open gaps each.
pub(crate) type Tracker = GapTracker<32, 32, 8, 64>;

/// A group in memory.
pub struct GroupState {
    /// The stored form.
    pub record: GroupRecord,
    pub(crate) group: Group,
    pub(crate) tracker: Tracker,
    /// Gaps reported by the tracker, in plain words, newest last.
    pub gaps: Vec<String>,
}

/// A server connection in memory.
pub struct ServerConn {
    /// Its status.
    pub status: ConnStatus,
    client: Option<Arc<Mutex<ServerClient>>>,
    pub(crate) tx: Option<LinkSender>,
    dialing: bool,
    /// The connection task that owns this entry (see [`next_run`]): a task
    /// left over from an entry that was dropped and made again touches
    /// only its own.
    run: u64,
    pub(crate) next_try: Instant,
    backoff: cwtch_proto::peer::Backoff,
    /// The saved cursor.
    pub cursor: u64,
    /// Since when every attempt failed (cleared by a session that
    /// authenticates): what the move policy looks at.
    pub(crate) failing_since: Option<Instant>,
    /// Read the server again from this index on the next connection: a
    /// group was joined there after the cursor passed its earlier posts, or
    /// recovery asks the server again ([`PeerNode::rewind_server`]).
    pub(crate) rewind: Option<u64>,
    /// The posts handed to this connection's client, by the client's
    /// `PostId`: (group, group seq). The client owns their sending,
    /// pipelining and retries (the core's rules); a new connection starts
    /// with none and is handed the outgoing queue again.
    posts: HashMap<u64, (String, u64)>,
    next_post: u64,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex of any length, back to bytes.
pub(crate) fn unhex_vec(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

pub(crate) fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Parses `cwtch-server:<address>` or a bare address.
pub fn parse_server(text: &str) -> Result<OnionAddress, PeerError> {
    let address = text.strip_prefix("cwtch-server:").unwrap_or(text);
    let address = address.split('?').next().unwrap_or(address);
    OnionAddress::parse(address).map_err(|e| PeerError::Invalid(format!("server {text}: {e}")))
}

fn group_from_record(record: &GroupRecord) -> Result<Group, PeerError> {
    let secret = zeroize::Zeroizing::new(
        unhex::<32>(&record.secret).ok_or_else(|| PeerError::Corrupt("group secret".into()))?,
    );
    let mut servers = ServerList::new();
    for s in &record.servers {
        let _ = servers.push(parse_server(s)?);
    }
    Ok(Group::from_secret(
        GroupSecret::from_bytes(&secret),
        servers,
    ))
}

pub(crate) fn cursor_key(server: &str) -> Vec<u8> {
    format!("cursor:{server}").into_bytes()
}

/// The saved cursor of a server (0 when none).
pub(crate) fn saved_cursor(store: &crate::profile_store::ProfileStore, server: &str) -> u64 {
    store
        .get(Table::Servers, &cursor_key(server))
        .ok()
        .flatten()
        .and_then(|v| v.as_slice().try_into().ok().map(u64::from_le_bytes))
        .unwrap_or(0)
}

impl PeerNode {
    pub(crate) fn load_groups(&self) -> Result<(), PeerError> {
        let mut chains: HashMap<String, Vec<ChainRecord>> = HashMap::new();
        for (key, value) in self.store.scan(Table::Blobs)? {
            if let Some(gid) = key
                .strip_prefix(b"chain:")
                .and_then(|k| std::str::from_utf8(k.get(..64)?).ok())
            {
                let c: ChainRecord = decode(&value, "chain")?;
                chains.entry(gid.to_string()).or_default().push(c);
            }
        }
        let mut st = self.state();
        let now = clock::unix_now();
        for (key, value) in self.store.scan(Table::Groups)? {
            if key.starts_with(crate::invites::KEY_PREFIX) {
                continue; // a pending invite, not a group
            }
            let mut record: GroupRecord = decode(&value, "group")?;
            // A notice time an older version took without a bound (the
            // pinning attack) is brought back within the clock skew.
            let repaired = cwtch_proto::group::moving::repair_notice_time(
                UnixMicros::from_micros(record.moved_at),
                now,
            );
            record.moved_at = repaired.as_micros();
            let group = group_from_record(&record)?;
            let mut tracker = Tracker::new();
            // Our contacts in the group, and ourselves, are never displaced
            // by members we know only from others' claims.
            tracker.vouch(group.id().member_id(&self.identity.public()));
            for m in &record.members {
                if st.contacts.get(m).map(|c| c.state) == Some(crate::model::ContactState::Accepted)
                    && let Ok(a) = OnionAddress::parse(m)
                {
                    tracker.vouch(group.id().member_id(&a.public_identity()));
                }
            }
            while tracker.poll_event().is_some() {}
            let mut list = chains.remove(&record.id).unwrap_or_default();
            list.sort_by_key(|c| c.seq);
            for c in list {
                if let (Some(member), Some(hash), Some(prev)) = (
                    unhex::<16>(&c.member),
                    unhex::<32>(&c.hash),
                    unhex::<32>(&c.prev_hash),
                ) {
                    let _ = tracker.handle_parts(
                        cwtch_proto::group::MemberId(member),
                        c.seq,
                        &MessageHash(hash),
                        &MessageHash(prev),
                        &[],
                    );
                    while tracker.poll_event().is_some() {}
                }
            }
            for server in &record.servers_to_read(clock::unix_millis()) {
                let cursor = self
                    .store
                    .get(Table::Servers, &cursor_key(server))?
                    .and_then(|v| v.as_slice().try_into().ok().map(u64::from_le_bytes))
                    .unwrap_or(0);
                st.servers
                    .entry(server.clone())
                    .or_insert_with(|| new_server_conn(cursor));
            }
            st.groups.insert(
                record.id.clone(),
                GroupState {
                    record,
                    group,
                    tracker,
                    gaps: Vec::new(),
                },
            );
        }
        Ok(())
    }

    pub(crate) fn save_group(&self, g: &GroupRecord) -> Result<(), PeerError> {
        self.store.put(Table::Groups, g.id.as_bytes(), &encode(g))?;
        Ok(())
    }

    fn add_group(&self, group: Group, name: &str) -> Result<GroupRecord, PeerError> {
        let record = GroupRecord {
            id: hex(group.id().as_bytes()),
            name: name.to_string(),
            secret: SecretHex(hex(group.secret().to_bytes().as_ref())),
            servers: group.servers().iter().map(|s| s.to_string()).collect(),
            next_seq: 0,
            prev_hash: hex(&[0u8; 32]),
            members: Vec::new(),
            previous: Vec::new(),
            moved_at: 0,
        };
        let mut st = self.state();
        if let Some(existing) = st.groups.get(&record.id) {
            return Ok(existing.record.clone());
        }
        self.save_group(&record)?;
        for server in &record.servers {
            st.servers
                .entry(server.clone())
                .or_insert_with(|| new_server_conn(0));
        }
        st.groups.insert(
            record.id.clone(),
            GroupState {
                record: record.clone(),
                tracker: {
                    let mut t = Tracker::new();
                    t.vouch(group.id().member_id(&self.identity.public()));
                    while t.poll_event().is_some() {}
                    t
                },
                group,
                gaps: Vec::new(),
            },
        );
        Ok(record)
    }

    /// Creates a group on `server`.
    pub fn group_create(&self, name: &str, server: &str) -> Result<GroupRecord, PeerError> {
        if name.len() > cwtch_proto::group::invite::MAX_NAME_LEN {
            return Err(PeerError::Invalid(
                "the group name is longer than 64 bytes".into(),
            ));
        }
        let server = parse_server(server)?;
        let mut servers = ServerList::new();
        let _ = servers.push(server);
        let group = Group::generate(&mut clock::rng(), servers);
        self.add_group(group, name)
    }

    /// The id of the group named `which` (a name or an id prefix).
    pub fn find_group(&self, which: &str) -> Result<String, PeerError> {
        let st = self.state();
        let matches: Vec<&String> = st
            .groups
            .iter()
            .filter(|(id, g)| g.record.name == which || id.starts_with(which))
            .map(|(id, _)| id)
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(PeerError::Invalid(format!("no group named {which}"))),
            _ => Err(PeerError::Invalid(format!(
                "{which} names several groups; use its id"
            ))),
        }
    }

    /// Invites a contact: the invite travels as a peer message, queued and
    /// retried like a text until acknowledged.
    pub fn group_invite(&self, which: &str, address: &str) -> Result<(), PeerError> {
        let gid = self.find_group(which)?;
        let address = OnionAddress::parse(address)
            .map_err(|e| PeerError::Invalid(format!("{address}: {e}")))?
            .to_string();
        let mut st = self.state();
        if st.contacts.get(&address).map(|c| c.state) != Some(crate::model::ContactState::Accepted)
        {
            return Err(PeerError::Invalid(format!(
                "{address} is not an accepted contact"
            )));
        }
        let g = st
            .groups
            .get(&gid)
            .ok_or_else(|| PeerError::Invalid("group vanished".into()))?;
        let invite = Invite::new(&g.group, &g.record.name, self.identity.public())
            .map_err(|e| PeerError::Invalid(e.to_string()))?;
        let mut buf = vec![0u8; cwtch_proto::group::invite::INVITE_MAX_LEN];
        let n = invite
            .encode(&mut buf)
            .map_err(|e| PeerError::Invalid(e.to_string()))?;
        buf.truncate(n);
        let seq = self.next_seq(&mut st)?;
        let item = OutItem {
            seq,
            contact: address.clone(),
            id: clock::random_u64(),
            body: OutBody::Invite { invite: buf },
        };
        self.store.put(
            Table::Outbox,
            &outbox_key(&address, item.id),
            &encode(&item),
        )?;
        if let (Some(link), OutBody::Invite { invite }) = (st_link(&st, &address), &item.body) {
            let bytes = crate::peer::encode_peer(&PeerMessage::GroupInvite {
                id: item.id,
                invite,
            });
            link::send_all(&link, vec![bytes]);
        }
        drop(st);
        // Whom to ask for missing messages and tell of moves.
        self.note_member(&gid, &address);
        Ok(())
    }

    pub(crate) fn join_group_from_invite(
        &self,
        from: &str,
        bytes: &[u8],
    ) -> Result<GroupRecord, PeerError> {
        let invite = Invite::decode(bytes).map_err(|e| PeerError::Invalid(e.to_string()))?;
        if invite.inviter().address().to_string() != from {
            return Err(PeerError::Invalid(
                "an invite naming another inviter".into(),
            ));
        }
        let group = invite.group();
        let known = self
            .state()
            .groups
            .contains_key(&hex(group.id().as_bytes()));
        let record = self.add_group(group, &crate::peer::clean_name(invite.name()))?;
        self.note_member(&record.id, from);
        if !known {
            // The group's earlier posts may be behind the cursor of a
            // server we already read for another group: read it again from
            // the start (an invite carries no time). Messages of our other
            // groups come again and are dropped as duplicates.
            let mut st = self.state();
            for server in &record.servers {
                self.rewind_server(&mut st, server, 0);
            }
        }
        Ok(record)
    }

    /// Reads `server` again from index `from` (the next connection starts
    /// there; a live one is closed). Every blob is checked as always: the
    /// gap tracker and the stored messages drop what we already hold.
    pub(crate) fn rewind_server(&self, st: &mut crate::peer::State, server: &str, from: u64) {
        let c = st
            .servers
            .entry(server.to_string())
            .or_insert_with(|| new_server_conn(from));
        let from = c.rewind.map_or(from, |r| r.min(from));
        if c.tx.is_none() && !c.dialing && c.cursor <= from {
            return; // the next connection starts there anyway
        }
        c.rewind = Some(from);
        if let Some(tx) = &c.tx {
            link::close(tx);
        }
        c.next_try = clock::now();
        let _ = self
            .store
            .put(Table::Servers, &cursor_key(server), &from.to_le_bytes());
    }

    /// Posts a text to a group on each of its servers. Pending until a
    /// server acknowledges it as durable.
    pub fn group_send(&self, which: &str, text: &str) -> Result<StoredMessage, PeerError> {
        let gid = self.find_group(which)?;
        if text.len() > cwtch_proto::group::message::MAX_BODY_LEN {
            return Err(PeerError::Invalid(format!(
                "the text is longer than {} bytes, the most one sealed message holds",
                cwtch_proto::group::message::MAX_BODY_LEN
            )));
        }
        self.post_message(&gid, MessageKind::TEXT, text.as_bytes(), text, &[])
    }

    /// Seals one message of `kind` and posts it to each of the group's
    /// servers and to `also` (a move notice also goes to the new server).
    /// Stored with `shown` as its text; pending until a server stores it.
    pub(crate) fn post_message(
        &self,
        gid: &str,
        kind: MessageKind,
        body: &[u8],
        shown: &str,
        also: &[OnionAddress],
    ) -> Result<StoredMessage, PeerError> {
        self.post_message_at(gid, kind, body, shown, also, clock::unix_now())
    }

    /// [`PeerNode::post_message`] dated `timestamp` (a move notice is dated
    /// after the notice the group follows now).
    pub(crate) fn post_message_at(
        &self,
        gid: &str,
        kind: MessageKind,
        body: &[u8],
        shown: &str,
        also: &[OnionAddress],
        timestamp: UnixMicros,
    ) -> Result<StoredMessage, PeerError> {
        let mut st = self.state();
        let seq_local = self.next_seq(&mut st)?;
        let me = self.identity.public();
        let g = st
            .groups
            .get_mut(gid)
            .ok_or_else(|| PeerError::Invalid("group vanished".into()))?;
        let member = g.group.id().member_id(&me);
        let seen = g.tracker.seen_summary(Some(member));
        let prev = unhex::<32>(&g.record.prev_hash).unwrap_or([0; 32]);
        let mut chain = SenderChain::resume(g.record.next_seq, MessageHash(prev));
        let msg = chain.next_message(kind, body, timestamp, &seen);
        let mut targets: Vec<OnionAddress> = g.group.servers().to_vec();
        for extra in also {
            if !targets.contains(extra) {
                targets.push(*extra);
            }
        }
        let mut blobs = Vec::new();
        let mut hash = None;
        for server in &targets {
            let mut out = vec![0u8; SEALED_BLOB_LEN];
            let sealed = g
                .group
                .keys()
                .seal(&self.identity, server, &msg, &mut clock::rng(), &mut out)
                .map_err(|e| PeerError::Invalid(e.to_string()))?;
            hash = Some(sealed.hash);
            blobs.push((server.to_string(), out));
        }
        let Some(hash) = hash else {
            return Err(PeerError::Invalid("the group has no server".into()));
        };
        let group_seq = msg.seq;
        chain.advance(hash);
        g.record.next_seq = chain.next_seq();
        g.record.prev_hash = hex(&chain.prev_hash().0);
        let _ = g
            .tracker
            .handle_parts(member, group_seq, &hash, &MessageHash(prev), &seen);
        while g.tracker.poll_event().is_some() {}
        let record = g.record.clone();
        // Server adverts are for the directory, not the conversation.
        let hidden = kind == MessageKind::ADVERTS;
        let stored = StoredMessage {
            seq: seq_local,
            conversation: gid.to_string(),
            id: group_seq,
            outgoing: true,
            author: self.address().to_string(),
            text: shown.to_string(),
            sent_at: timestamp.as_millis(),
            status: Delivery::Pending,
            note: None,
        };
        let chain_rec = ChainRecord {
            member: hex(&member.0),
            seq: group_seq,
            hash: hex(&hash.0),
            prev_hash: hex(&prev),
        };
        let kept = blobs
            .first()
            .map(|(server, blob)| crate::recovery::KeptBlob::new(server, None, blob));
        self.store.transaction(|tx| {
            tx.put(Table::Groups, record.id.as_bytes(), &encode(&record))?;
            if !hidden {
                tx.put(
                    Table::Messages,
                    &group_message_key(gid, &member.0, group_seq),
                    &encode(&stored),
                )?;
            }
            tx.put(
                Table::Blobs,
                &chain_key(gid, &member.0, group_seq),
                &encode(&chain_rec),
            )?;
            if let Some(kept) = &kept {
                tx.put(
                    Table::Blobs,
                    &crate::recovery::keep_key(gid, &member.0, group_seq),
                    &encode(kept),
                )?;
            }
            for (server, blob) in &blobs {
                let post = GroupPost {
                    group: gid.to_string(),
                    group_seq,
                    server: server.clone(),
                    blob: hex(blob),
                };
                tx.put(
                    Table::Outbox,
                    &post_key(server, gid, group_seq),
                    &encode(&post),
                )?;
            }
            Ok(())
        })?;
        for (server, _) in &blobs {
            st.servers
                .entry(server.clone())
                .or_insert_with(|| new_server_conn(0));
        }
        for (server, blob) in blobs {
            self.post_now(&mut st, &server, gid, group_seq, &blob);
        }
        if !hidden {
            notify(&mut st, &stored);
        }
        Ok(stored)
    }

    /// Hands a post to `server`'s client, if connected and it has room;
    /// otherwise it waits in the outgoing queue, which is handed over as
    /// room frees ([`PeerNode::feed_posts`]).
    pub(crate) fn post_now(
        &self,
        st: &mut crate::peer::State,
        server: &str,
        gid: &str,
        group_seq: u64,
        blob: &[u8],
    ) {
        let Some(conn) = st.servers.get_mut(server) else {
            return;
        };
        let (Some(client), Some(tx)) = (&conn.client, &conn.tx) else {
            return;
        };
        let Ok(blob) = <&[u8; SEALED_BLOB_LEN]>::try_from(blob) else {
            return;
        };
        if conn
            .posts
            .values()
            .any(|(g, s)| g == gid && *s == group_seq)
        {
            return; // handed over already
        }
        let id = conn.next_post;
        let queued = client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queue_post(PostId(id), blob);
        if queued.is_ok() {
            conn.next_post += 1;
            conn.posts.insert(id, (gid.to_string(), group_seq));
            // The link's driver sends it (after any proof of work).
            link::poke(tx);
        }
    }

    /// Hands `server`'s client the pending posts of the outgoing queue, as
    /// many as it takes, oldest first.
    pub(crate) fn feed_posts(&self, st: &mut crate::peer::State, server: &str) {
        let room = st
            .servers
            .get(server)
            .and_then(|c| c.client.as_ref())
            .map_or(0, |c| {
                c.lock().unwrap_or_else(|e| e.into_inner()).queue_room()
            });
        if room == 0 {
            return;
        }
        let handed: std::collections::HashSet<(String, u64)> = st
            .servers
            .get(server)
            .map(|c| c.posts.values().cloned().collect())
            .unwrap_or_default();
        let posts: Vec<GroupPost> = self
            .pending_posts(server)
            .into_iter()
            .filter(|p| !handed.contains(&(p.group.clone(), p.group_seq)))
            .take(room)
            .collect();
        for post in posts {
            if let Some(blob) = unhex::<SEALED_BLOB_LEN>(&post.blob) {
                self.post_now(st, server, &post.group, post.group_seq, &blob);
            }
        }
    }

    /// Every group with its servers' states and reported gaps.
    pub fn groups(&self) -> Vec<serde_json::Value> {
        let now_ms = clock::unix_millis();
        // Per group: our messages not yet stored by any server, and
        // messages that arrived after being reported missing.
        let mut pending: HashMap<String, u64> = HashMap::new();
        let mut recovered: HashMap<String, u64> = HashMap::new();
        if let Ok(rows) = self.store.scan(Table::Messages) {
            for (_, v) in rows {
                if let Ok(m) = serde_json::from_slice::<StoredMessage>(&v) {
                    match m.status {
                        Delivery::Recovered => *recovered.entry(m.conversation).or_default() += 1,
                        Delivery::Pending => *pending.entry(m.conversation).or_default() += 1,
                        _ => {}
                    }
                }
            }
        }
        let st = self.state();
        st.groups
            .values()
            .map(|g| {
                let servers: Vec<_> = g
                    .record
                    .servers
                    .iter()
                    .map(|s| serde_json::json!({"server": s, "connection": server_status(&st, s)}))
                    .collect();
                let missing: u64 = g.tracker.missing_count();
                let pending = pending.get(&g.record.id).copied().unwrap_or(0);
                let previous: Vec<&String> = g
                    .record
                    .previous
                    .iter()
                    .filter(|p| p.until > now_ms)
                    .map(|p| &p.server)
                    .collect();
                serde_json::json!({
                    "id": g.record.id,
                    "name": g.record.name,
                    "servers": servers,
                    "previous_servers": previous,
                    "pending": pending,
                    "missing": missing,
                    "recovered": recovered.get(&g.record.id).copied().unwrap_or(0),
                    "gaps": g.gaps,
                })
            })
            .collect()
    }

    /// Keeps one anonymous connection to every server our groups use.
    pub async fn keep_servers(self: Arc<Self>) {
        loop {
            let now = clock::now();
            let due = {
                let mut st = self.state();
                // At most MAX_CONCURRENT_DIALS dials in flight, however many
                // servers our groups name (a member can name many).
                let in_flight = st
                    .servers
                    .values()
                    .filter(|c| c.dialing && c.tx.is_none())
                    .count();
                let due: Vec<String> = st
                    .servers
                    .iter()
                    .filter(|(_, c)| c.tx.is_none() && !c.dialing && c.next_try <= now)
                    .map(|(s, _)| s.clone())
                    .take(crate::peer::MAX_CONCURRENT_DIALS.saturating_sub(in_flight))
                    .collect();
                due.into_iter()
                    .filter_map(|s| {
                        let c = st.servers.get_mut(&s)?;
                        c.dialing = true;
                        c.run = next_run();
                        Some((s, c.run))
                    })
                    .collect::<Vec<_>>()
            };
            for (server, run) in due {
                let node = self.clone();
                smol::spawn(async move { node.run_server(server, run).await }).detach();
            }
            smol::Timer::after(std::time::Duration::from_millis(500)).await;
        }
    }

    fn set_server_status(&self, server: &str, state: ConnState, error: Option<String>) {
        let mut st = self.state();
        if let Some(c) = st.servers.get_mut(server) {
            c.status.state = state;
            if matches!(state, ConnState::Authenticated | ConnState::Synced) {
                // A session came up: the next reconnect starts from the
                // shortest delay again.
                c.failing_since = None;
                c.backoff.reset();
            }
            if error.is_some() {
                c.status.last_error = error;
            }
        }
    }

    /// The entry of `server` if connection task `run` still owns it.
    fn server_run<'a>(
        st: &'a mut crate::peer::State,
        server: &str,
        run: u64,
    ) -> Option<&'a mut ServerConn> {
        st.servers.get_mut(server).filter(|c| c.run == run)
    }

    /// Sets the state of `server`'s connection if task `run` owns it.
    fn set_run_state(&self, server: &str, run: u64, state: ConnState) {
        if let Some(c) = Self::server_run(&mut self.state(), server, run) {
            c.status.state = state;
        }
    }

    async fn run_server(self: Arc<Self>, server: String, run: u64) {
        self.set_run_state(&server, run, ConnState::Connecting);
        let result = match parse_server(&server) {
            Ok(addr) => {
                // A fresh isolation key per connection: tor never shares a
                // circuit between two anonymous server sessions.
                let isolation = IsolationKey::new(format!("server-{:016x}", clock::random_u64()))
                    .unwrap_or_else(|_| IsolationKey::for_identity(&addr));
                self.transport
                    .dial(&addr, PEER_PORT, &isolation)
                    .await
                    .map(|s| (s, addr))
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok((stream, addr)) => {
                self.set_run_state(&server, run, ConnState::Connected);
                let mut rng = clock::rng();
                let conn = Connection::anonymous_initiator(
                    Config::default(),
                    addr.public_identity(),
                    &mut rng,
                    clock::now(),
                );
                let cursor = {
                    let mut st = self.state();
                    match Self::server_run(&mut st, &server, run) {
                        Some(c) => {
                            if let Some(from) = c.rewind.take()
                                && from < c.cursor
                            {
                                c.cursor = from;
                            }
                            c.cursor
                        }
                        // The entry was dropped (or made again) while we
                        // dialed: this connection is no longer wanted.
                        None => return,
                    }
                };
                let client = Arc::new(Mutex::new(ServerClient::new(
                    // The core's jitter, pipelining and retry rules.
                    ClientConfig::default(),
                    cursor,
                    &mut rng,
                )));
                let (tx, rx) = smol::channel::bounded(256);
                {
                    let mut st = self.state();
                    let Some(c) = Self::server_run(&mut st, &server, run) else {
                        return;
                    };
                    c.client = Some(client.clone());
                    c.tx = Some(tx.clone());
                    if c.rewind.is_some() {
                        // Asked to rewind while this one was dialing.
                        link::close(&tx);
                    }
                }
                let mut handler = ServerLink {
                    node: self.clone(),
                    server: server.clone(),
                    run,
                    client,
                };
                let reason = link::drive(stream, conn, rx, &mut handler).await;
                let mut st = self.state();
                if let Some(c) = Self::server_run(&mut st, &server, run) {
                    c.client = None;
                    c.tx = None;
                    c.dialing = false;
                    c.status.state = ConnState::Disconnected;
                    let now = clock::now();
                    let failed = !matches!(reason, CloseReason::Local | CloseReason::Remote(_));
                    if failed {
                        c.status.state = ConnState::Failed;
                        c.status.last_error = Some(format!("{reason:?}"));
                        c.failing_since.get_or_insert(now);
                    }
                    c.next_try = if !failed && c.rewind.is_some() {
                        now // closed to read again from earlier
                    } else {
                        c.backoff.next_attempt(now, &mut clock::rng())
                    };
                    if failed {
                        self.directory_failed(&mut st, &server);
                    }
                }
            }
            Err(reason) => {
                let mut st = self.state();
                if let Some(c) = Self::server_run(&mut st, &server, run) {
                    c.dialing = false;
                    c.status.state = ConnState::Failed;
                    c.status.last_error = Some(reason);
                    let now = clock::now();
                    c.failing_since.get_or_insert(now);
                    c.next_try = c.backoff.next_attempt(now, &mut clock::rng());
                    self.directory_failed(&mut st, &server);
                }
            }
        }
    }

    fn pending_posts(&self, server: &str) -> Vec<GroupPost> {
        let mut posts: Vec<GroupPost> = self
            .store
            .scan(Table::Outbox)
            .map(|rows| {
                rows.into_iter()
                    .filter(|(k, _)| k.starts_with(b"post:"))
                    .filter_map(|(_, v)| serde_json::from_slice::<GroupPost>(&v).ok())
                    .filter(|p| p.server == server)
                    .collect()
            })
            .unwrap_or_default();
        posts.sort_by_key(|p| p.group_seq);
        posts
    }

    fn on_server_event(&self, server: &str, event: ClientEvent) {
        match event {
            ClientEvent::Connected(_) => {
                self.set_server_status(server, ConnState::Authenticated, None);
                let mut st = self.state();
                self.directory_connected(&mut st, server);
                if let Some(client) = st.servers.get(server).and_then(|c| c.client.as_ref()) {
                    client
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .request_advert();
                }
                // The outgoing queue, as much as the client takes.
                self.feed_posts(&mut st, server);
            }
            ClientEvent::Synced { .. } => self.set_server_status(server, ConnState::Synced, None),
            ClientEvent::HeadBehindCursor { cursor, head } => {
                tracing::warn!(
                    cursor,
                    head,
                    "a server's log is shorter than what we read from it: reading it from its head"
                );
                let mut st = self.state();
                if let Some(c) = st.servers.get_mut(server) {
                    c.cursor = head;
                    c.status.last_error = Some(format!(
                        "its log ends at {head}, before the {cursor} entries we read from it (restored from a backup, or lying)"
                    ));
                }
                let _ = self
                    .store
                    .put(Table::Servers, &cursor_key(server), &head.to_le_bytes());
            }
            ClientEvent::Withheld { index, count } => {
                tracing::warn!(
                    index,
                    count,
                    "a server acknowledged our post and then served past it without it"
                );
                let mut st = self.state();
                st.withheld
                    .note(server, u64::from(count), clock::unix_millis());
                self.note_lost_in(&mut st, server, u64::from(count));
                if let Some(c) = st.servers.get_mut(server) {
                    c.status.last_error = Some(format!(
                        "withheld {count} of our acknowledged post(s) (first at index {index})"
                    ));
                }
            }
            ClientEvent::Advert(advert) => {
                let mut st = self.state();
                self.directory_own_advert(&mut st, server, &advert);
            }
            ClientEvent::Posted { post, .. } => {
                let me = self.identity.public();
                let mut st = self.state();
                let Some((gid, group_seq)) = st
                    .servers
                    .get_mut(server)
                    .and_then(|c| c.posts.remove(&post.0))
                else {
                    return;
                };
                let member = st.groups.get(&gid).map(|g| g.group.id().member_id(&me));
                let _ = self
                    .store
                    .delete(Table::Outbox, &post_key(server, &gid, group_seq));
                if let Some(member) = member {
                    let mkey = group_message_key(&gid, &member.0, group_seq);
                    if let Ok(Some(v)) = self.store.get(Table::Messages, &mkey)
                        && let Ok(mut m) = serde_json::from_slice::<StoredMessage>(&v)
                        && m.status != Delivery::Delivered
                    {
                        m.status = Delivery::Delivered;
                        let _ = self.store.put(Table::Messages, &mkey, &encode(&m));
                        notify(&mut st, &m);
                    }
                }
                // Room in the client's queue: hand it what waits.
                self.feed_posts(&mut st, server);
            }
            ClientEvent::PostRefused {
                post,
                reason,
                retry_at,
            } => {
                crate::log_throttled!(kind = reason; "server refused a post: {reason:?}");
                let mut st = self.state();
                let Some(c) = st.servers.get_mut(server) else {
                    return;
                };
                c.status.last_error = Some(match retry_at {
                    Some(_) => format!("refused a post for now ({reason:?}); posting it again"),
                    None => format!("refused a post ({reason:?})"),
                });
                if retry_at.is_none() {
                    // Dropped by the client: it stays in the outgoing queue
                    // and goes out again on the next connection.
                    c.posts.remove(&post.0);
                }
            }
            ClientEvent::PowTooHard { bits } => {
                let mut st = self.state();
                if let Some(c) = st.servers.get_mut(server) {
                    c.status.last_error = Some(format!(
                        "demands {bits} bits of proof of work per post, more than we pay: posts wait"
                    ));
                }
            }
            ClientEvent::Blob { index, blob, .. } => {
                self.on_blob(server, index, &blob);
                let mut st = self.state();
                if let Some(c) = st.servers.get_mut(server)
                    && index > c.cursor
                {
                    c.cursor = index;
                    let _ =
                        self.store
                            .put(Table::Servers, &cursor_key(server), &index.to_le_bytes());
                }
            }
            ClientEvent::Refused(r) => {
                crate::log_throttled!(kind = r.reason; "server refused a request: {r:?}");
                // The session goes on: keep its state, say why.
                let mut st = self.state();
                if let Some(c) = st.servers.get_mut(server) {
                    c.status.last_error = Some(format!("refused: {:?}", r.reason));
                }
            }
            _ => {}
        }
    }

    /// A blob from a server: detect with each group's tag (cheap), open the
    /// one it is for, verify, store, track gaps.
    fn on_blob(&self, server: &str, index: u64, blob: &[u8; SEALED_BLOB_LEN]) {
        let Ok(server_addr) = parse_server(server) else {
            return;
        };
        let now_ms = clock::unix_millis();
        let mut st = self.state();
        let Some(gid) = st
            .groups
            .iter()
            .find(|(_, g)| {
                g.record.servers_to_read(now_ms).iter().any(|s| s == server)
                    && g.group.keys().detection_key().detect(blob)
            })
            .map(|(id, _)| id.clone())
        else {
            // Not a group's: maybe a first-contact request to our mailbox.
            drop(st);
            self.mailbox_blob(server, blob);
            return; // otherwise not ours: cost was one tag check per key
        };
        let _ = self.accept_blob(&mut st, &gid, &server_addr, Some(index), blob);
    }

    /// Opens a blob of group `gid` sealed for `server` (from that server, or
    /// from a member answering a recovery request: verified alike), feeds
    /// the gap tracker, applies a move notice, stores and shows the
    /// message. Returns the stored message when it is new.
    pub(crate) fn accept_blob(
        &self,
        st: &mut crate::peer::State,
        gid: &str,
        server: &OnionAddress,
        index: Option<u64>,
        blob: &[u8; SEALED_BLOB_LEN],
    ) -> Result<Option<StoredMessage>, cwtch_proto::group::OpenError> {
        let mut work = vec![0u8; SEALED_BLOB_LEN];
        let Some(g) = st.groups.get_mut(gid) else {
            return Ok(None);
        };
        let opened = match g.group.keys().open(server, blob, &mut work) {
            Ok(m) => m,
            Err(e) => {
                crate::log_throttled!(kind = e; "a blob with our tag failed to open: {e}");
                return Err(e);
            }
        };
        let now = clock::unix_now();
        // A move notice's time is a claim: judged against our clock and the
        // notice the group follows now (SPEC.md section 15).
        let verdict = (opened.kind == MessageKind::MOVE).then(|| {
            judge_notice(
                opened.timestamp,
                UnixMicros::from_micros(g.record.moved_at),
                now,
            )
        });
        match verdict {
            // Kept per server, ours too, to tell members who missed it; a
            // notice from the future is never kept nor passed on.
            Some(NoticeVerdict::Follow { at }) => {
                self.keep_move(gid, &server.to_string(), at.as_micros(), blob)
            }
            Some(NoticeVerdict::Older) => self.keep_move(
                gid,
                &server.to_string(),
                opened.timestamp.clamp_to(now, MAX_CLOCK_SKEW).as_micros(),
                blob,
            ),
            _ => {}
        }
        let ingested = g.tracker.handle_message(&opened);
        let mut gaps = Vec::new();
        while let Some(ev) = g.tracker.poll_event() {
            gaps.push(describe_gap(&ev, |m| {
                member_name(g, &self.identity, m, Some(&opened.sender))
            }));
        }
        g.gaps.extend(gaps);
        let excess = g.gaps.len().saturating_sub(100);
        g.gaps.drain(..excess);
        if matches!(ingested, Ok(cwtch_proto::group::Ingested::Duplicate)) {
            return Ok(None);
        }
        let recovered = matches!(ingested, Ok(cwtch_proto::group::Ingested::Recovered));
        let key = group_message_key(gid, &opened.member.0, opened.seq);
        if matches!(self.store.get(Table::Messages, &key), Ok(Some(_))) {
            return Ok(None); // ours, or already stored (posted on two servers)
        }
        if opened.kind == MessageKind::ADVERTS
            && matches!(
                self.store
                    .get(Table::Blobs, &chain_key(gid, &opened.member.0, opened.seq)),
                Ok(Some(_))
            )
        {
            return Ok(None); // not stored as a message: its chain record says we had it
        }
        let sender = opened.sender.address().to_string();
        // Shown and ordered by the author's time, but never later than our
        // clock plus the skew: a message dated in the far future must not
        // stay last forever.
        let timestamp = opened.timestamp.clamp_to(now, MAX_CLOCK_SKEW).as_micros();
        let mut added = Vec::new();
        let text = if opened.kind == MessageKind::MOVE {
            match (MoveNotice::decode(opened.body), verdict) {
                (Ok(notice), Some(verdict)) => {
                    let names: Vec<String> =
                        notice.servers().iter().map(|s| s.to_string()).collect();
                    let names = names.join(", ");
                    match verdict {
                        NoticeVerdict::Follow { at } => {
                            added = self.apply_move(g, &notice, at);
                            format!("[moved this group to {names}]")
                        }
                        NoticeVerdict::Older => format!(
                            "[a move to {names}, older than the move the group follows: not followed]"
                        ),
                        NoticeVerdict::FromTheFuture(e) => format!(
                            "[a move to {names} dated {} s beyond our clock: not followed (a wrong clock, or a member trying to pin the group)]",
                            e.by.as_micros() / 1_000_000
                        ),
                    }
                }
                (Err(e), _) => format!("[a move notice that could not be read: {e}]"),
                (Ok(_), None) => String::new(),
            }
        } else {
            opened.text().unwrap_or("").to_string()
        };
        // Server adverts go to the directory, not the conversation.
        let adverts = (opened.kind == MessageKind::ADVERTS).then(|| opened.body.to_vec());
        let chain_rec = ChainRecord {
            member: hex(&opened.member.0),
            seq: opened.seq,
            hash: hex(&opened.hash.0),
            prev_hash: hex(&opened.prev_hash.0),
        };
        let member = opened.member;
        let seq = opened.seq;
        drop(work);
        if sender != self.address() {
            let contact = |a: &str| {
                st.contacts.get(a).map(|c| c.state) == Some(crate::model::ContactState::Accepted)
            };
            remember_member(&mut g.record.members, &sender, contact);
        }
        let record = g.record.clone();
        let seq_local = match self.next_seq(st) {
            Ok(s) => s,
            Err(_) => return Ok(None),
        };
        let m = StoredMessage {
            seq: seq_local,
            conversation: gid.to_string(),
            id: seq,
            outgoing: false,
            author: sender,
            text,
            sent_at: timestamp / 1000,
            status: if recovered {
                Delivery::Recovered
            } else {
                Delivery::Received
            },
            note: None,
        };
        let kept = crate::recovery::KeptBlob::new(&server.to_string(), index, blob);
        let _ = self.store.transaction(|tx| {
            if adverts.is_none() {
                tx.put(Table::Messages, &key, &encode(&m))?;
            }
            tx.put(
                Table::Blobs,
                &chain_key(gid, &member.0, seq),
                &encode(&chain_rec),
            )?;
            tx.put(
                Table::Blobs,
                &crate::recovery::keep_key(gid, &member.0, seq),
                &encode(&kept),
            )?;
            tx.put(Table::Groups, record.id.as_bytes(), &encode(&record))?;
            Ok(())
        });
        for s in record.servers_to_read(clock::unix_millis()) {
            st.servers.entry(s).or_insert_with(|| new_server_conn(0));
        }
        for s in &added {
            // Posts made there before we followed may be behind its cursor.
            self.rewind_server(st, s, 0);
        }
        match adverts {
            Some(body) => self.group_adverts_received(st, gid, &m.author, &body),
            None => notify(st, &m),
        }
        Ok(Some(m))
    }

    /// A group's messages as shown: in the authors' order of writing (their
    /// timestamps; a recovered message takes its place), with a placeholder
    /// for every run of messages known to be missing, and a note on why a
    /// message of ours is still pending.
    pub(crate) fn group_view(&self, gid: &str, mut list: Vec<StoredMessage>) -> Vec<StoredMessage> {
        let st = self.state();
        let Some(g) = st.groups.get(gid) else {
            return list;
        };
        // Member id → address, for the members we know.
        let mut names: HashMap<cwtch_proto::group::MemberId, String> = HashMap::new();
        for address in g
            .record
            .members
            .iter()
            .map(String::as_str)
            .chain([self.address()])
        {
            if let Ok(a) = OnionAddress::parse(address) {
                names.insert(
                    g.group.id().member_id(&a.public_identity()),
                    address.to_string(),
                );
            }
        }
        for r in g.tracker.missing() {
            let author = names.get(&r.member).cloned().unwrap_or_default();
            // Just before the author's next message we hold, if any.
            let next = list
                .iter()
                .filter(|m| m.author == author && m.id > r.last)
                .min_by_key(|m| m.id)
                .map(|m| m.sent_at.saturating_sub(1));
            let count = r.count();
            let who = if author.is_empty() {
                "a member".to_string()
            } else {
                author.clone()
            };
            list.push(StoredMessage {
                seq: u64::MAX,
                conversation: gid.to_string(),
                id: r.first,
                outgoing: false,
                author: author.clone(),
                text: format!("{count} message(s) from {who} not received yet"),
                sent_at: next.unwrap_or(u64::MAX),
                status: Delivery::Missing,
                note: Some("asked the server again; asking the members we are linked with".into()),
            });
        }
        for m in list.iter_mut().filter(|m| m.status == Delivery::Pending) {
            let waits: Vec<String> = g
                .record
                .servers
                .iter()
                .map(|s| {
                    let status = server_status(&st, s);
                    match (status.state, status.last_error) {
                        (ConnState::Authenticated | ConnState::Synced, _) => {
                            format!("sent to {s}, waiting for it to store it")
                        }
                        (ConnState::Connecting | ConnState::Connected, _) => {
                            format!("connecting to {s}")
                        }
                        (_, Some(e)) => format!("{s} is not reachable ({e}); retrying"),
                        (_, None) => format!("{s} is not reachable yet; retrying"),
                    }
                })
                .collect();
            m.note = Some(format!("waiting: {}", waits.join("; ")));
        }
        list.sort_by_key(|m| (m.sent_at, m.seq));
        list
    }

    /// Remembers `address` as a member of group `gid` (whom to ask for
    /// missing messages).
    pub(crate) fn note_member(&self, gid: &str, address: &str) {
        let mut guard = self.state();
        let st = &mut *guard;
        let Some(g) = st.groups.get_mut(gid) else {
            return;
        };
        // A contact of ours in the group: never displaced in the tracker.
        if st.contacts.get(address).map(|c| c.state) == Some(crate::model::ContactState::Accepted)
            && let Ok(a) = OnionAddress::parse(address)
        {
            g.tracker
                .vouch(g.group.id().member_id(&a.public_identity()));
            while g.tracker.poll_event().is_some() {}
        }
        if address == self.address() {
            return;
        }
        let contacts = &st.contacts;
        let contact = |a: &str| {
            contacts.get(a).map(|c| c.state) == Some(crate::model::ContactState::Accepted)
        };
        if !remember_member(&mut g.record.members, address, contact) {
            return;
        }
        let record = g.record.clone();
        drop(guard);
        let _ = self.save_group(&record);
    }
}

/// A gap tracker event in plain words; `name` says who a member is.
fn describe_gap(ev: &GapEvent, name: impl Fn(cwtch_proto::group::MemberId) -> String) -> String {
    match *ev {
        GapEvent::Missing(r) => format!(
            "missing: messages {}..={} of {}",
            r.first,
            r.last,
            name(r.member)
        ),
        GapEvent::Recovered(r) => format!("recovered: message {} of {}", r.seq, name(r.member)),
        GapEvent::Equivocation(r) => format!(
            "equivocation: {} sent two different messages numbered {}",
            name(r.member),
            r.seq
        ),
        GapEvent::GaveUp(r) => format!(
            "gave up tracking messages {}..={} of {}",
            r.first,
            r.last,
            name(r.member)
        ),
        GapEvent::SenderTableFull(m) => {
            format!("too many members to track: {} is not tracked", name(m))
        }
        GapEvent::Dropped { member, missing } => format!(
            "stopped tracking {} to make room ({missing} of its messages were missing)",
            name(member)
        ),
        GapEvent::ImplausibleClaim { by, about, claimed } => format!(
            "claims that do not add up: {} says {} sent message {claimed}, far beyond what we have seen; ignored",
            name(by),
            name(about)
        ),
        _ => "gap tracker event".into(),
    }
}

/// Who a member of `g` is: its address if we know it (a member we noted,
/// ourselves, or `author`), else "an unknown member" with its id's start.
fn member_name(
    g: &GroupState,
    me: &cwtch_proto::Identity,
    member: cwtch_proto::group::MemberId,
    author: Option<&PublicIdentity>,
) -> String {
    let id = g.group.id();
    if id.member_id(&me.public()) == member {
        return "us".into();
    }
    if let Some(a) = author
        && id.member_id(a) == member
    {
        return format!("member {}", a.address());
    }
    g.record
        .members
        .iter()
        .filter_map(|m| OnionAddress::parse(m).ok())
        .find(|a| id.member_id(&a.public_identity()) == member)
        .map(|a| format!("member {a}"))
        .unwrap_or_else(|| format!("an unknown member ({})", hex(&member.0[..4])))
}

fn st_link(st: &crate::peer::State, address: &str) -> Option<LinkSender> {
    crate::peer::link_sender(st, address)
}

pub(crate) fn new_server_conn(cursor: u64) -> ServerConn {
    ServerConn {
        status: ConnStatus::default(),
        client: None,
        tx: None,
        dialing: false,
        run: 0,
        next_try: Instant::ZERO,
        backoff: cwtch_proto::peer::Backoff::new(
            cwtch_proto::Duration::from_secs(2),
            cwtch_proto::Duration::from_secs(300),
        ),
        cursor,
        failing_since: None,
        rewind: None,
        posts: HashMap::new(),
        next_post: 0,
    }
}

/// A post waiting for the server's durable acknowledgement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct GroupPost {
    pub(crate) group: String,
    pub(crate) group_seq: u64,
    pub(crate) server: String,
    pub(crate) blob: String,
}

/// A new connection task's number, never 0 (an entry nobody dials).
fn next_run() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn post_key(server: &str, gid: &str, group_seq: u64) -> Vec<u8> {
    let mut k = format!("post:{server}:{gid}:").into_bytes();
    k.extend_from_slice(&group_seq.to_be_bytes());
    k
}

pub(crate) fn group_message_key(gid: &str, member: &[u8], seq: u64) -> Vec<u8> {
    let mut k = gid.as_bytes().to_vec();
    k.extend_from_slice(member);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn chain_key(gid: &str, member: &[u8], seq: u64) -> Vec<u8> {
    let mut k = format!("chain:{gid}").into_bytes();
    k.extend_from_slice(member);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

struct ServerLink {
    node: Arc<PeerNode>,
    server: String,
    /// The connection task this link belongs to.
    run: u64,
    client: Arc<Mutex<ServerClient>>,
}

impl ServerLink {
    /// Whether the server's entry still belongs to this link's task.
    fn is_current(&self) -> bool {
        self.node
            .state()
            .servers
            .get(&self.server)
            .is_some_and(|c| c.run == self.run)
    }

    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut events = Vec::new();
        {
            let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
            let mut buf = vec![0u8; MAX_SERVER_MESSAGE_LEN];
            while let Ok(Some(n)) = client.poll_transmit(clock::now(), &mut buf) {
                out.push(buf[..n].to_vec());
            }
            while let Some(ev) = client.poll_event() {
                events.push(ev);
            }
        }
        // A link whose entry was dropped (it is closing) acts on nothing.
        if self.is_current() {
            for ev in events {
                tracing::debug!(?ev, "server event");
                self.node.on_server_event(&self.server, ev);
            }
        }
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        let mut buf = vec![0u8; MAX_SERVER_MESSAGE_LEN];
        while let Ok(Some(n)) = client.poll_transmit(clock::now(), &mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    }
}

impl LinkHandler for ServerLink {
    fn established(&mut self, _remote: PublicIdentity) -> Vec<Vec<u8>> {
        self.drain()
    }

    fn message(&mut self, msg: &[u8]) -> Vec<Vec<u8>> {
        let result = {
            let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
            client.handle_message(msg, clock::now())
        };
        if let Err(e) = result {
            crate::log_throttled!(kind = e; "server reply refused: {e:?}");
        }
        self.drain()
    }

    fn closed(&mut self, _reason: CloseReason) {
        // Not the posts of a newer connection to the same server.
        if self.is_current()
            && let Some(c) = self.node.state().servers.get_mut(&self.server)
        {
            c.posts.clear(); // the next connection is handed the queue again
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .poll_timeout()
    }

    fn timeout(&mut self) -> Vec<Vec<u8>> {
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .handle_timeout(clock::now());
        self.drain()
    }

    fn wants_work(&self) -> bool {
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .wants_work(clock::now())
    }

    fn work(&mut self) -> Vec<Vec<u8>> {
        // One bounded step (POW_STEP_MAX hashes); the driver yields after.
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .poll_work(clock::now(), cwtch_proto::server::client::POW_STEP_MAX);
        self.drain()
    }
}

/// The connection status of `server` as the node last saw it (the default,
/// "not connected", for a server it has no connection record of).
fn server_status(st: &crate::peer::State, server: &str) -> ConnStatus {
    st.servers
        .get(server)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}
