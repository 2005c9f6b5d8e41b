//! Moving a group to another server (SPEC.md section 15).
//!
//! Any member may move a group: it posts a signed [`MoveNotice`] (a group
//! message of kind [`MessageKind::MOVE`]) to the old servers *and* the new
//! one, then uses the new servers. Members who read the notice (online, or
//! later from an old server, or from a member during recovery) follow
//! it if the core's `judge_notice` says so: only a newer notice, never one
//! dated beyond our clock plus the skew. Our own explicit move always
//! applies for us ([`own_notice_time`] dates it after the notice we follow). The old servers stay in the group's
//! reading list for [`READ_OLD_FOR`], so
//! a member who was offline during the move still finds the notice there.
//! Sequence numbers are per member and independent of servers, so gap
//! detection runs across the move unchanged.
//!
//! The node also moves a group itself when the core's `AutoMove` says so
//! (every server of the group failing for a day, or caught withholding our
//! acknowledged posts, and another server healthy), at most once per
//! `AUTO_MOVE_EVERY`.

use cwtch_proto::group::control::MOVE_NOTICE_MAX_LEN;
use cwtch_proto::group::moving::{AutoMoveEvent, READ_OLD_FOR, ServerHealth, own_notice_time};
use cwtch_proto::group::{Group, GroupSecret, MessageKind, MoveNotice, ServerList};
use cwtch_proto::{Instant, OnionAddress, UnixMicros};

use crate::clock;
use crate::groups::{GroupState, PreviousServer, new_server_conn, parse_server, unhex};
use crate::model::{ConnState, StoredMessage};
use crate::peer::{PeerError, PeerNode};
use crate::profile_store::Table;

/// The most servers a group remembers having moved away from (the oldest
/// is forgotten first).
pub const MAX_PREVIOUS_SERVERS: usize = cwtch_proto::group::moving::MAX_PREVIOUS_SERVERS;

/// Per server, the posts it acknowledged and then did not serve (its own
/// evidence, `ClientEvent::Withheld`), counted over the last
/// [`WITHHELD_WINDOW_MS`]: what the move policy and the directory weigh.
#[derive(Default)]
pub(crate) struct WithheldLog {
    /// server → (count, first time counted, Unix ms).
    counts: std::collections::HashMap<String, (u64, u64)>,
}

/// How long withholding evidence counts: 7 days.
pub const WITHHELD_WINDOW_MS: u64 = cwtch_proto::group::moving::WITHHELD_COUNTS_FOR.as_millis();

impl WithheldLog {
    /// `count` posts withheld by `server`, seen at `now_ms`.
    pub(crate) fn note(&mut self, server: &str, count: u64, now_ms: u64) {
        let entry = self.counts.entry(server.to_string()).or_insert((0, now_ms));
        if now_ms.saturating_sub(entry.1) > WITHHELD_WINDOW_MS {
            *entry = (0, now_ms);
        }
        entry.0 = entry.0.saturating_add(count);
    }

    /// The evidence against `server` that still counts at `now_ms`.
    pub(crate) fn count(&self, server: &str, now_ms: u64) -> u64 {
        match self.counts.get(server) {
            Some(&(n, since)) if now_ms.saturating_sub(since) <= WITHHELD_WINDOW_MS => n,
            _ => 0,
        }
    }

    /// Forgets servers no longer used.
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.counts.retain(|s, _| keep(s));
    }
}

impl PeerNode {
    /// Moves a group to `server`: posts a signed move notice to the old
    /// servers and the new one, then uses the new one.
    pub fn group_move(&self, which: &str, server: &str) -> Result<StoredMessage, PeerError> {
        let gid = self.find_group(which)?;
        let new = parse_server(server)?;
        {
            let st = self.state();
            if let Some(g) = st.groups.get(&gid)
                && g.record.servers == [new.to_string()]
            {
                return Err(PeerError::Invalid(format!("the group already uses {new}")));
            }
        }
        let notice = MoveNotice::new(std::slice::from_ref(&new))
            .map_err(|e| PeerError::Invalid(e.to_string()))?;
        let mut buf = [0u8; MOVE_NOTICE_MAX_LEN];
        let body = notice
            .encode(&mut buf)
            .map_err(|e| PeerError::Invalid(e.to_string()))?
            .to_vec();
        let shown = format!("[moved this group to {new}]");
        // Dated after the notice we follow now, so it outranks it: our own
        // explicit move always takes effect for us.
        let current = {
            let st = self.state();
            st.groups.get(&gid).map_or(UnixMicros::EPOCH, |g| {
                UnixMicros::from_micros(g.record.moved_at)
            })
        };
        let at = own_notice_time(clock::unix_now(), current);
        let stored = self.post_message_at(&gid, MessageKind::MOVE, &body, &shown, &[new], at)?;
        let mut st = self.state();
        if let Some(g) = st.groups.get(&gid) {
            // The copy kept for recovery (sealed for an old server): what a
            // member who missed the move and can no longer reach the old
            // servers gets from us over a peer link.
            let member = g.group.id().member_id(&self.identity.public());
            let kept = crate::recovery::keep_key(&gid, &member.0, stored.id);
            if let Ok(Some(v)) = self.store.get(Table::Blobs, &kept)
                && let Ok(k) = serde_json::from_slice::<crate::recovery::KeptBlob>(&v)
                && let Some(blob) = unhex::<{ cwtch_proto::group::SEALED_BLOB_LEN }>(&k.blob)
            {
                self.keep_own_move(g, &k.server, &blob);
            }
        }
        if let Some(g) = st.groups.get_mut(&gid) {
            // We post the notice first: nothing of the group is on the
            // new server before it, so there is nothing to read again.
            let _ = self.apply_move(g, &notice, at);
            let record = g.record.clone();
            for s in record.servers_to_read(clock::unix_millis()) {
                st.servers.entry(s).or_insert_with(|| new_server_conn(0));
            }
            drop(st);
            self.save_group(&record)?;
        }
        tracing::info!("moved a group to another server");
        Ok(stored)
    }

    /// Follows a move notice of time `at` (the caller decided to follow it:
    /// the core's `judge_notice`, or our own move): the group uses the
    /// notice's servers and keeps reading the old ones for
    /// [`READ_OLD_FOR`]. The caller saves the record. Returns the servers
    /// the group did not read before: what others posted there before we
    /// followed may be behind their cursors (the caller rewinds them).
    pub(crate) fn apply_move(
        &self,
        g: &mut GroupState,
        notice: &MoveNotice,
        at: UnixMicros,
    ) -> Vec<String> {
        let new: Vec<String> = notice.servers().iter().map(|s| s.to_string()).collect();
        let read_before = g.record.servers_to_read(clock::unix_millis());
        let added: Vec<String> = new
            .iter()
            .filter(|s| !read_before.contains(s))
            .cloned()
            .collect();
        let until = clock::unix_millis().saturating_add(READ_OLD_FOR.as_micros() / 1000);
        for old in &g.record.servers {
            if !new.contains(old) {
                g.record.previous.retain(|p| &p.server != old);
                g.record.previous.push(PreviousServer {
                    server: old.clone(),
                    until,
                });
            }
        }
        g.record.previous.retain(|p| !new.contains(&p.server));
        // Bounded: a member who moves the group again and again, each time
        // naming fresh servers, cannot make us read without end.
        let excess = g.record.previous.len().saturating_sub(MAX_PREVIOUS_SERVERS);
        g.record.previous.drain(..excess);
        g.record.servers = new;
        g.record.moved_at = at.as_micros();
        let mut servers = ServerList::new();
        for s in notice.servers() {
            let _ = servers.push(*s);
        }
        if let Some(secret) = unhex::<32>(&g.record.secret).map(zeroize::Zeroizing::new) {
            g.group = Group::from_secret(GroupSecret::from_bytes(&secret), servers);
        }
        added
    }

    /// Expires servers moved away from, and applies the move policy.
    pub(crate) fn moving_tick(&self, now: Instant) {
        let now_ms = clock::unix_millis();
        let mut proposals = Vec::new();
        let mut changed = Vec::new();
        {
            let mut guard = self.state();
            let st = &mut *guard;
            for g in st.groups.values_mut() {
                let before = g.record.previous.len();
                g.record.previous.retain(|p| p.until > now_ms);
                if g.record.previous.len() != before {
                    changed.push(g.record.clone());
                }
            }
            let mut in_use: std::collections::HashSet<String> = st
                .groups
                .values()
                .flat_map(|g| g.record.servers_to_read(now_ms))
                .collect();
            if let Some(m) = &st.mailbox {
                in_use.extend(m.servers_to_read(now_ms));
            }
            let mut unused: Vec<String> = st
                .servers
                .keys()
                .filter(|s| !in_use.contains(*s))
                .cloned()
                .collect();
            if !unused.is_empty() {
                // Group posts that can never be stored there any more are
                // dropped; a server that still has other posts waiting
                // (first-contact requests to someone's mailbox) is kept.
                let rows = self.store.scan(Table::Outbox).unwrap_or_default();
                for (key, _) in rows {
                    let Some(rest) = key.strip_prefix(b"post:") else {
                        continue;
                    };
                    let Some(server) = unused
                        .iter()
                        .find(|s| rest.starts_with(format!("{s}:").as_bytes()))
                        .cloned()
                    else {
                        continue;
                    };
                    let owner = &rest[server.len() + 1..];
                    if owner.starts_with(crate::mailbox::POST_PREFIX.as_bytes()) {
                        unused.retain(|s| s != &server);
                    } else {
                        let _ = self.store.delete(Table::Outbox, &key);
                    }
                }
            }
            st.withheld.retain(|s| in_use.contains(s));
            for s in unused {
                self.directory_unused(st, &s);
                if let Some(c) = st.servers.remove(&s)
                    && let Some(tx) = c.tx
                {
                    crate::link::close(&tx);
                }
            }
            let health = |server: &String| {
                let conn = st.servers.get(server);
                Some(ServerHealth {
                    server: OnionAddress::parse(server).ok()?,
                    failing_since: conn.and_then(|c| c.failing_since),
                    withheld: st.withheld.count(server, clock::unix_millis()),
                    healthy_now: conn.is_some_and(|c| {
                        matches!(c.status.state, ConnState::Authenticated | ConnState::Synced)
                    }),
                })
            };
            let all: Vec<ServerHealth> = st.servers.keys().filter_map(health).collect();
            let mut decided = Vec::new();
            for (gid, g) in &st.groups {
                let current: Vec<ServerHealth> =
                    g.record.servers.iter().filter_map(health).collect();
                decided.push((gid.clone(), current));
            }
            for (gid, current) in decided {
                let auto = st.auto_moves.entry(gid.clone()).or_default();
                auto.handle_health(now, &current, &all);
                if let Some(AutoMoveEvent::MoveTo(to)) = auto.poll_event() {
                    proposals.push((gid, to.to_string()));
                }
            }
            st.auto_moves.retain(|gid, _| st.groups.contains_key(gid));
        }
        for record in changed {
            let _ = self.save_group(&record);
        }
        for (gid, to) in proposals {
            match self.group_move(&gid, &to) {
                Ok(_) => {
                    tracing::warn!("a group's server kept failing: moved it to another server")
                }
                Err(e) => tracing::info!("could not move a failing group: {e}"),
            }
        }
    }
}
