//! Recovery of missing group messages (SPEC.md section 14).
//!
//! When a group's gap tracker knows of messages that have not arrived, the
//! core's [`Recovery`] schedule says when to ask the members we are linked
//! with, over peer links, for the sealed blobs ([`ResendWanted`] in a
//! [`PeerMessage::ResendRequest`]), and when to give up. The server is
//! never asked again for a gap: where a member re-reads from would tell a
//! withholding server which blobs belong to one sender (SPEC.md section
//! 14). The core's [`OpenRequests`] takes only answers to what we asked. Members keep the blobs they received
//! or sent for [`KEEP_FOR_MS`], at most [`KEEP_MAX_PER_GROUP`] per group,
//! and answer with [`PeerMessage::ResendBlob`]s within the core's
//! [`AnswerBudget`]. A recovered blob goes
//! through exactly the same checks as one from a server
//! ([`PeerNode::accept_blob`]): detection tag, AEAD, signature, group,
//! server key, gap tracker.

use std::collections::HashMap;
use std::sync::Arc;

use cwtch_proto::OnionAddress;
use cwtch_proto::group::control::WANTED_MAX_LEN;
use cwtch_proto::group::recovery::{
    AnswerBudget, MAX_ANSWER_BLOBS, OpenRequests, Recovery, RecoveryConfig, RecoveryEvent,
};
use cwtch_proto::group::{MissingRange, ResendWanted, SEALED_BLOB_LEN};
use cwtch_proto::peer::PeerMessage;
use cwtch_proto::{Duration, Instant};
use serde::{Deserialize, Serialize};

use crate::clock;
use crate::groups::{hex, parse_server, unhex};
use crate::link::LinkCommand;
use crate::model::ContactState;
use crate::peer::{PeerNode, State, encode_peer};
use crate::profile_store::Table;

/// How long a member keeps the sealed blobs it received or sent, to answer
/// other members' recovery requests: 30 days.
pub const KEEP_FOR_MS: u64 = cwtch_proto::group::recovery::KEEP_FOR.as_millis();
/// The most blobs a member keeps per group (about 8 MiB of profile).
pub const KEEP_MAX_PER_GROUP: usize = cwtch_proto::group::recovery::KEEP_MAX_PER_GROUP;

/// A blob kept for recovery.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct KeptBlob {
    /// The server it was sealed for.
    pub server: String,
    /// Its index there, when it came from that server.
    #[serde(default)]
    pub index: Option<u64>,
    /// When we kept it, Unix ms.
    pub at: u64,
    /// The blob, hex.
    pub blob: String,
}

impl KeptBlob {
    pub(crate) fn new(server: &str, index: Option<u64>, blob: &[u8]) -> Self {
        KeptBlob {
            server: server.to_string(),
            index,
            at: clock::unix_millis(),
            blob: hex(blob),
        }
    }
}

/// The store key of a kept blob.
pub(crate) fn keep_key(gid: &str, member: &[u8], seq: u64) -> Vec<u8> {
    let mut k = format!("keep:{gid}").into_bytes();
    k.extend_from_slice(member);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Where recovery stands, in memory.
#[derive(Default)]
pub(crate) struct RecoveryState {
    /// Our open requests (the core checks answers against them).
    requests: OpenRequests,
    /// Per group with open gaps: the core's recovery schedule.
    pub(crate) groups: HashMap<String, Recovery>,
    /// Per contact: what we may still do for them.
    answered: HashMap<String, AnswerBudget>,
    last_prune: Option<Instant>,
}

impl PeerNode {
    /// Runs recovery and the group upkeep (expiring old servers, the move
    /// policy) until the process ends.
    pub async fn keep_recovering(self: Arc<Self>) {
        loop {
            smol::Timer::after(std::time::Duration::from_secs(2)).await;
            self.recovery_tick(clock::now());
            self.moving_tick(clock::now());
            self.group_adverts_tick();
        }
    }

    fn recovery_tick(&self, now: Instant) {
        let steps = {
            let mut guard = self.state();
            let st = &mut *guard;
            st.recovery.requests.handle_timeout(now);
            let mut steps = Vec::new();
            for (gid, g) in &st.groups {
                let count = g.tracker.missing_count();
                let recovery = st
                    .recovery
                    .groups
                    .entry(gid.clone())
                    .or_insert_with(|| Recovery::new(RecoveryConfig::default()));
                recovery.handle_gaps(now, count);
                recovery.handle_timeout(now);
                if let Some(step) = recovery.poll_event() {
                    steps.push((step, gid.clone(), g.tracker.missing().collect::<Vec<_>>()));
                }
            }
            st.recovery
                .groups
                .retain(|gid, r| (r.is_active() || r.gave_up()) && st.groups.contains_key(gid));
            steps
        };
        for (step, gid, missing) in steps {
            match step {
                RecoveryEvent::AskMembers => self.ask_members(&gid, &missing, now),
                RecoveryEvent::GiveUp => {
                    let count = missing
                        .iter()
                        .fold(0u64, |n, r| n.saturating_add(r.count()));
                    tracing::info!(count, "no member we asked had the missing messages");
                    let mut st = self.state();
                    if let Some(g) = st.groups.get_mut(&gid) {
                        g.gaps.push(format!(
                            "gave up asking for {count} missing message(s): none of the members we asked had them (asked again when new gaps appear)"
                        ));
                    }
                }
            }
        }
        let prune = {
            let mut st = self.state();
            let due = st
                .recovery
                .last_prune
                .is_none_or(|at| now >= at + Duration::from_secs(600));
            if due {
                st.recovery.last_prune = Some(now);
            }
            due
        };
        if prune {
            self.prune_kept();
        }
    }

    /// Asks every member we are linked with for the missing blobs.
    fn ask_members(&self, gid: &str, missing: &[MissingRange], now: Instant) {
        let Some(group_id) = unhex::<32>(gid) else {
            return;
        };
        let Some(wanted) = ResendWanted::from_missing(&group_id, missing.iter().copied()) else {
            return;
        };
        let mut buf = [0u8; WANTED_MAX_LEN];
        let Ok(bytes) = wanted.encode(&mut buf) else {
            return;
        };
        let mut guard = self.state();
        let st = &mut *guard;
        let Some(g) = st.groups.get(gid) else {
            return;
        };
        let mut asked = 0;
        for member in &g.record.members {
            let accepted = st
                .contacts
                .get(member)
                .is_some_and(|c| c.state == ContactState::Accepted);
            let Some(link) = crate::peer::link_sender(st, member) else {
                continue;
            };
            if !accepted {
                continue;
            }
            let Ok(peer) = OnionAddress::parse(member) else {
                continue;
            };
            let id = clock::random_u64();
            st.recovery.requests.register(id, &peer, &wanted, now);
            let msg = encode_peer(&PeerMessage::ResendRequest { id, wanted: bytes });
            if link.try_send(LinkCommand::Send(msg)).is_ok() {
                asked += 1;
            }
        }
        tracing::info!(asked, "asked members for missing group messages");
    }

    /// A member's request: answer with the blobs we keep, within budget.
    pub(crate) fn on_resend_request(
        &self,
        st: &mut State,
        remote: &str,
        id: u64,
        wanted: &[u8],
    ) -> Vec<Vec<u8>> {
        if st.contacts.get(remote).map(|c| c.state) != Some(ContactState::Accepted) {
            return Vec::new();
        }
        let wanted = match ResendWanted::decode(wanted) {
            Ok(w) => w,
            Err(e) => {
                crate::log_throttled!(kind = e; "a bad recovery request: {e}");
                return Vec::new();
            }
        };
        let gid = hex(wanted.group());
        if !st.groups.contains_key(&gid) {
            return Vec::new(); // not a group we are in: say nothing
        }
        let now = clock::now();
        if st.recovery.answered.len() > 4 * crate::groups::MAX_KNOWN_MEMBERS
            && !st.recovery.answered.contains_key(remote)
        {
            st.recovery.answered.clear(); // only accepted contacts get here
        }
        let budget = st
            .recovery
            .answered
            .entry(remote.to_string())
            .or_insert_with(|| AnswerBudget::new(now));
        if !budget.take_request(now) {
            crate::log_throttled!("a contact asks for recovery too often: ignored");
            return Vec::new();
        }
        let mut out = Vec::new();
        'ranges: for r in wanted.ranges() {
            for seq in r.first..=r.last {
                if out.len() >= MAX_ANSWER_BLOBS || !budget.take(now) {
                    break 'ranges;
                }
                let Ok(Some(v)) = self
                    .store
                    .get(Table::Blobs, &keep_key(&gid, &r.member.0, seq))
                else {
                    continue;
                };
                let Some(blob) = serde_json::from_slice::<KeptBlob>(&v)
                    .ok()
                    .and_then(|k| unhex::<SEALED_BLOB_LEN>(&k.blob))
                else {
                    continue;
                };
                out.push(encode_peer(&PeerMessage::ResendBlob { id, blob: &blob }));
            }
        }
        crate::log_throttled!(blobs = out.len(), "answered a recovery request");
        out
    }

    /// A blob answering one of our requests: taken only from the member
    /// asked, under a live request, if it is a message that request named
    /// (the core's [`OpenRequests`]); then verified like one from the
    /// server it was sealed for (we try each server the group reads). What
    /// a member supplies never counts against a server: only the server's
    /// own evidence does (`ClientEvent::Withheld`).
    pub(crate) fn on_resend_blob(&self, st: &mut State, remote: &str, id: u64, blob: &[u8]) {
        let Ok(peer) = OnionAddress::parse(remote) else {
            return;
        };
        let now = clock::now();
        let group_id = match st.recovery.requests.expected(id, &peer, now) {
            Ok(g) => g,
            Err(e) => {
                crate::log_throttled!(kind = e; "ignoring a recovery answer: {e}");
                return;
            }
        };
        let gid = hex(&group_id);
        let Ok(blob) = <&[u8; SEALED_BLOB_LEN]>::try_from(blob) else {
            return;
        };
        let servers = match st.groups.get(&gid) {
            Some(g) => g.record.servers_to_read(clock::unix_millis()),
            None => return,
        };
        let mut work = vec![0u8; SEALED_BLOB_LEN];
        for server in servers {
            let Ok(addr) = parse_server(&server) else {
                continue;
            };
            let Some(g) = st.groups.get(&gid) else {
                return;
            };
            let (member, seq) = match g.group.keys().open(&addr, blob, &mut work) {
                Ok(m) => (m.member, m.seq),
                Err(cwtch_proto::group::OpenError::WrongServer) => continue,
                Err(e) => {
                    crate::log_throttled!(kind = e; "a recovery answer failed to open: {e}");
                    return;
                }
            };
            if let Err(e) = st
                .recovery
                .requests
                .take_answer(id, &peer, &group_id, member, seq, now)
            {
                crate::log_throttled!(kind = e; "ignoring a recovery answer: {e}");
                return;
            }
            if let Ok(Some(_)) = self.accept_blob(st, &gid, &addr, None, blob) {
                tracing::info!("recovered a missing group message from a member");
            }
            return;
        }
    }

    /// Drops kept blobs older than [`KEEP_FOR_MS`] and beyond
    /// [`KEEP_MAX_PER_GROUP`] per group (oldest first).
    fn prune_kept(&self) {
        let Ok(rows) = self.store.scan(Table::Blobs) else {
            return;
        };
        let now = clock::unix_millis();
        let mut per_group: HashMap<Vec<u8>, Vec<(u64, Vec<u8>)>> = HashMap::new();
        for (key, value) in rows {
            let Some(rest) = key.strip_prefix(b"keep:") else {
                continue;
            };
            let Some(k) = serde_json::from_slice::<KeptBlob>(&value).ok() else {
                continue;
            };
            let gid = rest.get(..64).unwrap_or(rest).to_vec();
            per_group.entry(gid).or_default().push((k.at, key));
        }
        let mut dropped = 0usize;
        for (_, mut list) in per_group {
            list.sort();
            let excess = list.len().saturating_sub(KEEP_MAX_PER_GROUP);
            for (i, (at, key)) in list.iter().enumerate() {
                if i < excess || now.saturating_sub(*at) > KEEP_FOR_MS {
                    let _ = self.store.delete(Table::Blobs, key);
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            tracing::info!(dropped, "dropped old kept blobs");
        }
    }
}
