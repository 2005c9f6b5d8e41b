//! Moving a group to another server (SPEC.md section 15).
//!
//! Any member may move a group: it posts a signed [`MoveNotice`] (a group
//! message of kind [`MessageKind::MOVE`]) to the old servers *and* the new
//! one, then uses the new servers. Members who read the notice (online, or
//! later from an old server, or from a member during recovery) follow. The
//! old servers stay in the group's reading list for [`READ_OLD_FOR_MS`], so
//! a member who was offline during the move still finds the notice there.
//! Sequence numbers are per member and independent of servers, so gap
//! detection runs across the move unchanged.
//!
//! The node also proposes a move itself ([`choose_move`]) when every
//! server of a group has failed for [`MOVE_AFTER_FAILING`], or a server
//! withheld [`MOVE_AFTER_WITHHELD`] messages that members had to supply,
//! and another server it uses is healthy.

use cwtch_proto::group::control::MOVE_NOTICE_MAX_LEN;
use cwtch_proto::group::{Group, GroupSecret, MessageKind, MoveNotice, ServerList};
use cwtch_proto::{Duration, Instant};

use crate::clock;
use crate::groups::{GroupState, PreviousServer, new_server_conn, parse_server, unhex};
use crate::link::LinkCommand;
use crate::model::{ConnState, StoredMessage};
use crate::peer::{PeerError, PeerNode};
use crate::profile_store::Table;

/// How long the servers a group moved away from are still read: 14 days.
pub const READ_OLD_FOR_MS: u64 = 14 * 24 * 3600 * 1000;
/// A group whose every server failed for this long is moved: 24 hours.
pub const MOVE_AFTER_FAILING: Duration = Duration::from_secs(24 * 3600);
/// A server that withheld this many messages (members supplied them) is
/// left.
pub const MOVE_AFTER_WITHHELD: u64 = 5;

/// What the move policy knows of one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerHealth {
    /// The server.
    pub server: String,
    /// Since when every attempt failed, if it is failing.
    pub failing_since: Option<Instant>,
    /// Messages members had to supply because this server did not.
    pub withheld: u64,
    /// Whether a session with it is up now.
    pub healthy_now: bool,
}

/// The move policy: given the health of a group's servers and of other
/// servers we use, the server to move to, if the group should move.
pub fn choose_move(
    now: Instant,
    current: &[ServerHealth],
    others: &[ServerHealth],
) -> Option<String> {
    let bad = |h: &ServerHealth| {
        h.withheld >= MOVE_AFTER_WITHHELD
            || h.failing_since
                .is_some_and(|at| now >= at + MOVE_AFTER_FAILING)
    };
    if current.is_empty() || !current.iter().all(bad) {
        return None;
    }
    others
        .iter()
        .filter(|h| h.healthy_now && !bad(h))
        .filter(|h| !current.iter().any(|c| c.server == h.server))
        .min_by_key(|h| (h.withheld, h.server.clone()))
        .map(|h| h.server.clone())
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
        let stored = self.post_message(&gid, MessageKind::MOVE, &body, &shown, &[new])?;
        let mut st = self.state();
        if let Some(g) = st.groups.get_mut(&gid) {
            self.apply_move(g, &notice, stored.sent_at.saturating_mul(1000));
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

    /// Follows a move notice of time `timestamp` (µs): unless a newer
    /// notice was already followed, the group uses the notice's servers and
    /// keeps reading the old ones for [`READ_OLD_FOR_MS`]. The caller
    /// saves the record.
    pub(crate) fn apply_move(&self, g: &mut GroupState, notice: &MoveNotice, timestamp: u64) {
        if timestamp <= g.record.moved_at {
            return; // an older notice, arriving late
        }
        let new: Vec<String> = notice.servers().iter().map(|s| s.to_string()).collect();
        let until = clock::unix_millis().saturating_add(READ_OLD_FOR_MS);
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
        g.record.servers = new;
        g.record.moved_at = timestamp;
        let mut servers = ServerList::new();
        for s in notice.servers() {
            let _ = servers.push(*s);
        }
        if let Some(secret) = unhex::<32>(&g.record.secret) {
            g.group = Group::from_secret(GroupSecret::from_bytes(&secret), servers);
        }
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
            let in_use: std::collections::HashSet<String> = st
                .groups
                .values()
                .flat_map(|g| g.record.servers_to_read(now_ms))
                .collect();
            let unused: Vec<String> = st
                .servers
                .keys()
                .filter(|s| !in_use.contains(*s))
                .cloned()
                .collect();
            for s in unused {
                if let Some(c) = st.servers.remove(&s)
                    && let Some(tx) = c.tx
                {
                    let _ = tx.try_send(LinkCommand::Close);
                }
                // Posts that can never be stored there any more.
                if let Ok(rows) = self.store.scan(Table::Outbox) {
                    for (key, _) in rows {
                        if key.starts_with(format!("post:{s}:").as_bytes()) {
                            let _ = self.store.delete(Table::Outbox, &key);
                        }
                    }
                }
            }
            let health = |server: &String| ServerHealth {
                server: server.clone(),
                failing_since: st.servers.get(server).and_then(|c| c.failing_since),
                withheld: st.recovery.withheld.get(server).copied().unwrap_or(0),
                healthy_now: st.servers.get(server).is_some_and(|c| {
                    matches!(c.status.state, ConnState::Authenticated | ConnState::Synced)
                }),
            };
            let all: Vec<ServerHealth> = st.servers.keys().map(health).collect();
            for (gid, g) in &st.groups {
                let current: Vec<ServerHealth> = g.record.servers.iter().map(health).collect();
                if let Some(to) = choose_move(now, &current, &all) {
                    proposals.push((gid.clone(), to));
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn h(
        server: &str,
        failing_since: Option<u64>,
        withheld: u64,
        healthy_now: bool,
    ) -> ServerHealth {
        ServerHealth {
            server: server.into(),
            failing_since: failing_since.map(Instant::from_secs),
            withheld,
            healthy_now,
        }
    }

    #[test]
    fn a_healthy_group_does_not_move() {
        let now = Instant::from_secs(100_000);
        let others = [h("b", None, 0, true)];
        assert_eq!(choose_move(now, &[h("a", None, 0, true)], &others), None);
        // Failing, but not for long enough.
        assert_eq!(
            choose_move(now, &[h("a", Some(99_000), 0, false)], &others),
            None
        );
        assert_eq!(choose_move(now, &[h("a", None, 4, true)], &others), None);
        assert_eq!(choose_move(now, &[], &others), None);
    }

    #[test]
    fn a_failing_or_withholding_server_is_left_for_a_healthy_one() {
        let now = Instant::from_secs(200_000);
        let failing = h("a", Some(200_000 - 24 * 3600), 0, false);
        let others = [
            h("a", Some(200_000 - 24 * 3600), 0, false),
            h("b", None, 2, true),
            h("c", None, 0, true),
            h("d", None, 0, false),
            h("e", None, MOVE_AFTER_WITHHELD, true),
        ];
        assert_eq!(
            choose_move(now, std::slice::from_ref(&failing), &others),
            Some("c".into())
        );
        let withholding = h("a", None, MOVE_AFTER_WITHHELD, true);
        assert_eq!(choose_move(now, &[withholding], &others), Some("c".into()));
        // Two servers, one of them fine: stay.
        assert_eq!(
            choose_move(now, &[failing.clone(), h("f", None, 0, true)], &others),
            None
        );
        // Nowhere healthy to go: stay.
        assert_eq!(
            choose_move(now, &[failing], &[h("d", None, 0, false)]),
            None
        );
    }
}
