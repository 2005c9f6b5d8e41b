//! Groups: each group's record, its keys, its gap tracker and its gap
//! reports; sealing our posts, opening what servers and members hand us,
//! and showing a group's messages in their authors' order with a
//! placeholder for what is missing.
//!
//! The subrooms are the rules' node-side homes: [`recovery`] (asking members
//! for missing messages, answering them), [`moving`] (moves, their
//! policy, withholding evidence) and [`adverts`] (server adverts shared
//! inside groups). None of them imports another; the router passes what one
//! needs from another.

pub mod adverts;
pub mod moving;
pub mod recovery;

use std::collections::{BTreeMap, HashMap};

use cwtch_proto::group::message::{MessageHash, MessageKind, SeenEntry, SeenSummary};
use cwtch_proto::group::{
    GapEvent, GapTracker, Group, GroupSecret, Ingested, MemberId, OpenError, SEALED_BLOB_LEN,
    SenderChain, ServerList,
};
use cwtch_proto::{ClaimedTime, Identity, OnionAddress, PublicIdentity, UnixMicros};
use rand_core::CryptoRng;

use crate::codec::{hex, parse_server};
use crate::control::api::{ApiError, ErrorCode};
use crate::model::{ConnState, ConnStatus, Delivery, GroupServerView, GroupView, StoredMessage};
use crate::store::records::{ChainRecord, GroupRecord, SecretHex};

/// The node's gap tracker: 32 members (a quarter of them for members known
/// only from others' claims), a window of 32 messages, 8 open gaps each.
pub type Tracker = GapTracker<32, 32, 8, 64>;

/// The most member addresses a group record keeps.
pub const MAX_KNOWN_MEMBERS: usize = 64;
/// The most gap reports a group keeps (the newest).
pub const MAX_GAP_REPORTS: usize = 100;

/// A message of ours before it is sealed.
#[derive(Clone, Copy, Debug)]
pub struct Draft<'a> {
    /// Its kind.
    pub kind: MessageKind,
    /// Its body.
    pub body: &'a [u8],
    /// Its time, by our clock.
    pub timestamp: UnixMicros,
}

/// A group in memory.
pub struct GroupState {
    /// The stored form.
    pub record: GroupRecord,
    /// Its keys and servers.
    pub group: Group,
    /// Its missing messages (boxed: it is 57 KiB, and a map node holds
    /// eleven entries).
    pub tracker: Box<Tracker>,
    /// Gap reports, in plain words, newest last.
    pub gaps: Vec<String>,
}

/// A message opened from a blob, owned.
pub struct Opened {
    /// Who sent it (signature verified).
    pub sender: PublicIdentity,
    /// Its member id.
    pub member: MemberId,
    /// Its kind.
    pub kind: MessageKind,
    /// Its body.
    pub body: Vec<u8>,
    /// Its sequence number.
    pub seq: u64,
    /// Its author's time (a claim).
    pub timestamp: ClaimedTime,
    /// Its previous hash.
    pub prev_hash: MessageHash,
    /// What the sender had seen.
    pub seen: SeenSummary,
    /// Its hash.
    pub hash: MessageHash,
}

impl Opened {
    /// The text of a text message.
    pub fn text(&self) -> Option<&str> {
        (self.kind == MessageKind::TEXT)
            .then(|| std::str::from_utf8(&self.body).ok())
            .flatten()
    }

    /// Its chain data, as stored.
    pub fn chain(&self) -> ChainRecord {
        ChainRecord {
            member: hex::encode(&self.member.0),
            seq: self.seq,
            hash: hex::encode(&self.hash.0),
            prev_hash: hex::encode(&self.prev_hash.0),
        }
    }
}

/// What the tracker made of an opened message.
pub struct Tracked {
    /// The tracker's verdict.
    pub ingested: Result<Ingested, cwtch_proto::group::GapError>,
    /// What it reported, in plain words: (text, whether a gap closed).
    pub reports: Vec<(String, bool)>,
}

/// A post sealed for each server it goes to.
pub struct SealedPost {
    /// Our sequence number in the group.
    pub seq: u64,
    /// Our member id.
    pub member: MemberId,
    /// The chain data.
    pub chain: ChainRecord,
    /// One blob per server.
    pub blobs: Vec<(String, Vec<u8>)>,
}

/// The groups room.
#[derive(Default)]
pub struct Groups {
    map: BTreeMap<String, GroupState>,
}

fn group_from_record(record: &GroupRecord) -> Result<Group, String> {
    let secret = zeroize::Zeroizing::new(
        hex::decode_array::<32>(&record.secret).ok_or_else(|| "group secret".to_string())?,
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

impl Groups {
    /// The groups as loaded: each record, its chain data (to rebuild the gap
    /// tracker), our own identity and which members are our contacts (whom
    /// the tracker never lets a stranger displace). Stored move times are
    /// repaired within the clock skew of `now`.
    pub fn new(
        records: Vec<GroupRecord>,
        mut chains: HashMap<String, Vec<ChainRecord>>,
        me: &Identity,
        is_contact: impl Fn(&str) -> bool,
        now: UnixMicros,
    ) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for mut record in records {
            record.moved_at = cwtch_proto::group::moving::repair_notice_time(
                UnixMicros::from_micros(record.moved_at),
                now,
            )
            .as_micros();
            let group = group_from_record(&record)?;
            let mut tracker = Box::new(Tracker::new());
            tracker.vouch(group.id().member_id(&me.public()));
            for m in &record.members {
                if is_contact(m)
                    && let Ok(a) = OnionAddress::parse(m)
                {
                    tracker.vouch(group.id().member_id(&a.public_identity()));
                }
            }
            let mut list = chains.remove(&record.id).unwrap_or_default();
            list.sort_by_key(|c| c.seq);
            for c in list {
                if let (Some(member), Some(hash), Some(prev)) = (
                    hex::decode_array::<16>(&c.member),
                    hex::decode_array::<32>(&c.hash),
                    hex::decode_array::<32>(&c.prev_hash),
                ) {
                    let _ = tracker.handle_parts(
                        MemberId(member),
                        c.seq,
                        &MessageHash(hash),
                        &MessageHash(prev),
                        &[],
                    );
                }
                while tracker.poll_event().is_some() {}
            }
            while tracker.poll_event().is_some() {}
            map.insert(
                record.id.clone(),
                GroupState {
                    record,
                    group,
                    tracker,
                    gaps: Vec::new(),
                },
            );
        }
        Ok(Groups { map })
    }

    /// A group.
    pub fn get(&self, gid: &str) -> Option<&GroupState> {
        self.map.get(gid)
    }

    /// A group, to change.
    pub fn get_mut(&mut self, gid: &str) -> Option<&mut GroupState> {
        self.map.get_mut(gid)
    }

    /// Whether we are in group `gid`.
    pub fn contains(&self, gid: &str) -> bool {
        self.map.contains_key(gid)
    }

    /// Every group.
    pub fn all(&self) -> impl Iterator<Item = (&String, &GroupState)> {
        self.map.iter()
    }

    /// Every group, to change.
    pub fn all_mut(&mut self) -> impl Iterator<Item = (&String, &mut GroupState)> {
        self.map.iter_mut()
    }

    /// The id of the group named `which` (its name or an id prefix).
    pub fn find(&self, which: &str) -> Result<String, ApiError> {
        let matches: Vec<(&String, &GroupState)> = self
            .map
            .iter()
            .filter(|(id, g)| g.record.name == which || id.starts_with(which))
            .collect();
        match matches.as_slice() {
            [(one, _)] => Ok((*one).clone()),
            [] => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no group named {which}"),
            )),
            many => {
                let mut e = ApiError::new(
                    ErrorCode::Ambiguous,
                    format!("{which} names several groups; use its id"),
                );
                e.candidates = many
                    .iter()
                    .map(|(id, g)| format!("{} ({id})", g.record.name))
                    .collect();
                Err(e)
            }
        }
    }

    /// Adds a group (new, or joined from an invite): its record, and
    /// whether it is new to us.
    pub fn add(&mut self, group: Group, name: &str, me: &Identity) -> (GroupRecord, bool) {
        let id = hex::encode(group.id().as_bytes());
        if let Some(existing) = self.map.get(&id) {
            return (existing.record.clone(), false);
        }
        let record = GroupRecord {
            id: id.clone(),
            name: name.to_string(),
            secret: SecretHex(hex::encode(group.secret().to_bytes().as_ref())),
            servers: group.servers().iter().map(|s| s.to_string()).collect(),
            next_seq: 0,
            prev_hash: hex::encode(&[0u8; 32]),
            members: Vec::new(),
            previous: Vec::new(),
            moved_at: 0,
            read_upto: 0,
        };
        let mut tracker = Box::new(Tracker::new());
        tracker.vouch(group.id().member_id(&me.public()));
        while tracker.poll_event().is_some() {}
        self.map.insert(
            id,
            GroupState {
                record: record.clone(),
                group,
                tracker,
                gaps: Vec::new(),
            },
        );
        (record, true)
    }

    /// Forgets a group (we leave it).
    pub fn remove(&mut self, gid: &str) -> Option<GroupState> {
        self.map.remove(gid)
    }

    /// Every server some group reads at `now_ms`.
    pub fn servers_to_read(&self, now_ms: u64) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for g in self.map.values() {
            for s in g.record.servers_to_read(now_ms) {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// The group a blob from `server` is for, by its tag (one check per
    /// group reading that server).
    pub fn detect(&self, server: &str, blob: &[u8], now_ms: u64) -> Option<String> {
        self.map
            .iter()
            .find(|(_, g)| {
                g.record.servers_to_read(now_ms).iter().any(|s| s == server)
                    && g.group.keys().detection_key().detect(blob)
            })
            .map(|(id, _)| id.clone())
    }

    /// Opens a blob of group `gid` sealed for `server`: tag, AEAD,
    /// signature, group, server.
    pub fn open(
        &self,
        gid: &str,
        server: &OnionAddress,
        blob: &[u8; SEALED_BLOB_LEN],
    ) -> Option<Result<Opened, OpenError>> {
        let g = self.map.get(gid)?;
        let mut work = zeroize::Zeroizing::new(vec![0u8; SEALED_BLOB_LEN]);
        Some(
            g.group
                .keys()
                .open(server, blob, &mut work)
                .map(|m| Opened {
                    sender: m.sender,
                    member: m.member,
                    kind: m.kind,
                    body: m.body.to_vec(),
                    seq: m.seq,
                    timestamp: m.timestamp,
                    prev_hash: m.prev_hash,
                    seen: m.seen.clone(),
                    hash: m.hash,
                }),
        )
    }

    /// What to keep of one of group `gid`'s blobs to answer recovery
    /// requests: its kept form (SPEC.md section 14, 237 + 24 n + L bytes
    /// for a body of L bytes and n seen entries), checked to seal back into
    /// the same blob; else (never seen: it opened, or we sealed it) the
    /// whole blob.
    pub fn keep(&self, gid: &str, blob: &[u8]) -> Vec<u8> {
        let Some(keys) = self.map.get(gid).map(|g| g.group.keys()) else {
            return blob.to_vec();
        };
        let mut out = zeroize::Zeroizing::new([0u8; cwtch_proto::group::KEPT_MAX_LEN]);
        let mut again = [0u8; SEALED_BLOB_LEN];
        match keys.keep(blob, &mut out[..]) {
            Ok(n) => {
                let kept = out.get(..n).unwrap_or_default();
                if keys.unkeep(kept, &mut again).is_ok() && again[..] == *blob {
                    kept.to_vec()
                } else {
                    tracing::warn!("a blob's kept form does not seal back into it: kept whole");
                    blob.to_vec()
                }
            }
            Err(e) => {
                crate::log_throttled!(kind = e; "a blob does not keep ({e}): kept whole");
                blob.to_vec()
            }
        }
    }

    /// A kept blob of group `gid` as it was sealed: kept whole (what
    /// profiles before the kept form hold: a blob's length), or sealed
    /// again from its kept form. `None` if the group is gone or the record
    /// does not seal.
    pub fn unkeep(&self, gid: &str, kept: &[u8]) -> Option<Vec<u8>> {
        if kept.len() == SEALED_BLOB_LEN {
            return Some(kept.to_vec());
        }
        let g = self.map.get(gid)?;
        let mut blob = vec![0u8; SEALED_BLOB_LEN];
        match g.group.keys().unkeep(kept, &mut blob) {
            Ok(()) => Some(blob),
            Err(e) => {
                crate::log_throttled!(kind = e; "a kept blob does not seal: {e}");
                None
            }
        }
    }

    /// Feeds an opened message to group `gid`'s gap tracker; the reports
    /// are kept (the newest [`MAX_GAP_REPORTS`]) and returned in plain
    /// words.
    pub fn track(&mut self, gid: &str, m: &Opened, me: &Identity) -> Option<Tracked> {
        let g = self.map.get_mut(gid)?;
        let ingested = g
            .tracker
            .handle_parts(m.member, m.seq, &m.hash, &m.prev_hash, &m.seen);
        let mut reports = Vec::new();
        while let Some(ev) = g.tracker.poll_event() {
            let closed = matches!(ev, GapEvent::Recovered(_));
            let text = describe_gap(&ev, |who| member_name(g, me, who, Some(&m.sender)));
            reports.push((text, closed));
        }
        g.gaps.extend(reports.iter().map(|(t, _)| t.clone()));
        let excess = g.gaps.len().saturating_sub(MAX_GAP_REPORTS);
        g.gaps.drain(..excess);
        Some(Tracked { ingested, reports })
    }

    /// Seals our next message of `kind` for each of group `gid`'s servers
    /// and `also` (a move notice also goes to the new server), dated
    /// `timestamp`; the chain advances and our own tracker takes it.
    pub fn seal<R: CryptoRng + ?Sized>(
        &mut self,
        gid: &str,
        me: &Identity,
        draft: Draft<'_>,
        also: &[OnionAddress],
        rng: &mut R,
    ) -> Result<SealedPost, ApiError> {
        let Draft {
            kind,
            body,
            timestamp,
        } = draft;
        let g = self
            .map
            .get_mut(gid)
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "the group is gone"))?;
        let member = g.group.id().member_id(&me.public());
        let seen: SeenSummary = g.tracker.seen_summary(Some(member));
        let prev = hex::decode_array::<32>(&g.record.prev_hash).unwrap_or([0; 32]);
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
                .seal(me, server, &msg, rng, &mut out)
                .map_err(|e| ApiError::new(ErrorCode::Invalid, e.to_string()))?;
            hash = Some(sealed.hash);
            blobs.push((server.to_string(), out));
        }
        let hash =
            hash.ok_or_else(|| ApiError::new(ErrorCode::Invalid, "the group has no server"))?;
        let seq = msg.seq;
        chain.advance(hash);
        g.record.next_seq = chain.next_seq();
        g.record.prev_hash = hex::encode(&chain.prev_hash().0);
        let _ = g
            .tracker
            .handle_parts(member, seq, &hash, &MessageHash(prev), &seen);
        while g.tracker.poll_event().is_some() {}
        Ok(SealedPost {
            seq,
            member,
            chain: ChainRecord {
                member: hex::encode(&member.0),
                seq,
                hash: hex::encode(&hash.0),
                prev_hash: hex::encode(&prev),
            },
            blobs,
        })
    }

    /// Remembers `address` as a member of group `gid` (whom to ask for
    /// missing messages and tell of moves); an accepted contact is vouched
    /// for in the tracker and takes the place of a member who is not one
    /// when the list is full. Whether the record changed.
    pub fn note_member(
        &mut self,
        gid: &str,
        address: &str,
        me: &str,
        is_contact: impl Fn(&str) -> bool,
    ) -> bool {
        let Some(g) = self.map.get_mut(gid) else {
            return false;
        };
        if address == me {
            return false;
        }
        if is_contact(address)
            && let Ok(a) = OnionAddress::parse(address)
        {
            g.tracker
                .vouch(g.group.id().member_id(&a.public_identity()));
            while g.tracker.poll_event().is_some() {}
        }
        remember_member(&mut g.record.members, address, is_contact)
    }

    /// Rebuilds group `gid`'s keys for its current servers (after a move).
    pub fn rebuild(&mut self, gid: &str) {
        if let Some(g) = self.map.get_mut(gid)
            && let Ok(group) = group_from_record(&g.record)
        {
            g.group = group;
        }
    }

    /// A group's messages as shown: in the authors' order of writing (their
    /// timestamps, clamped when stored; a recovered message takes its
    /// place), with a placeholder for every run of messages known to be
    /// missing, and a note on why a message of ours is still pending.
    pub fn view(
        &self,
        gid: &str,
        mut list: Vec<StoredMessage>,
        me: &Identity,
        server_status: impl Fn(&str) -> ConnStatus,
        missing_note: &str,
    ) -> Vec<StoredMessage> {
        let Some(g) = self.map.get(gid) else {
            return list;
        };
        let my_address = me.address().to_string();
        let mut names: HashMap<MemberId, String> = HashMap::new();
        for address in g
            .record
            .members
            .iter()
            .map(String::as_str)
            .chain([my_address.as_str()])
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
            let next = list
                .iter()
                .filter(|m| m.author == author && m.id > r.last)
                .min_by_key(|m| m.id)
                .map(|m| m.sent_at.saturating_sub(1));
            let who = if author.is_empty() {
                "a member".to_string()
            } else {
                author.clone()
            };
            list.push(StoredMessage {
                author_name: None,
                seq: u64::MAX,
                conversation: gid.to_string(),
                id: r.first,
                outgoing: false,
                author: author.clone(),
                text: format!("{} message(s) from {who} not received yet", r.count()),
                sent_at: next.unwrap_or(u64::MAX),
                status: Delivery::Missing,
                note: Some(missing_note.to_string()),
            });
        }
        for m in list.iter_mut().filter(|m| m.status == Delivery::Pending) {
            let waits: Vec<String> = g
                .record
                .servers
                .iter()
                .map(|s| {
                    let status = server_status(s);
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

    /// A group as listed.
    #[allow(clippy::too_many_arguments)]
    pub fn list_view(
        &self,
        gid: &str,
        server_status: impl Fn(&str) -> ConnStatus,
        pending: u64,
        recovered: u64,
        unread: u64,
        now_ms: u64,
    ) -> Option<GroupView> {
        let g = self.map.get(gid)?;
        Some(GroupView {
            id: g.record.id.clone(),
            name: g.record.name.clone(),
            servers: g
                .record
                .servers
                .iter()
                .map(|s| GroupServerView {
                    server: s.clone(),
                    connection: server_status(s),
                })
                .collect(),
            previous_servers: g
                .record
                .previous
                .iter()
                .filter(|p| p.until > now_ms)
                .map(|p| p.server.clone())
                .collect(),
            pending,
            missing: g.tracker.missing_count(),
            recovered,
            gaps: g.gaps.clone(),
            unread,
        })
    }
}

/// Adds `address` to a group's known members (whom recovery asks and moves
/// are told to). When the list is full, an accepted contact takes the place
/// of a member who is not one: members of a liar's making (anyone with the
/// secret can sign as many keys as it likes) cannot crowd our contacts out.
/// Whether the list changed.
pub fn remember_member(
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

/// A gap tracker event in plain words; `name` says who a member is.
fn describe_gap(ev: &GapEvent, name: impl Fn(MemberId) -> String) -> String {
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
    me: &Identity,
    member: MemberId,
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
        .unwrap_or_else(|| format!("an unknown member ({})", hex::encode(&member.0[..4])))
}

/// The seen summary type, for callers that build messages by hand.
pub type Seen = [SeenEntry];
