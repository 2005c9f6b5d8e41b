//! Moving a group to another server (SPEC.md section 15), the node's side.
//!
//! Any member may move a group: it posts a signed move notice to the old
//! servers *and* the new one, then uses the new servers. Members follow a
//! notice the core's `judge_notice` accepts (only a newer one, never one
//! dated beyond our clock plus the skew); our own explicit move always
//! applies for us (`own_notice_time`). The old servers stay in the reading
//! list for `READ_OLD_FOR` (at most `MAX_PREVIOUS_SERVERS` of them).
//!
//! The node moves a group by itself when the core's `AutoMove` says so
//! (every server of the group failing for a day, or caught withholding our
//! acknowledged posts, and another server healthy), at most once per
//! `AUTO_MOVE_EVERY`.

use std::collections::HashMap;

use cwtch_proto::group::MoveNotice;
use cwtch_proto::group::moving::{
    AutoMove, AutoMoveEvent, MAX_PREVIOUS_SERVERS, READ_OLD_FOR, ServerHealth, WITHHELD_COUNTS_FOR,
};
use cwtch_proto::{Instant, OnionAddress, UnixMicros};

use crate::store::records::{GroupRecord, PreviousServer};

/// Follows a move notice of time `at` (judged already, or our own move):
/// the group uses the notice's servers and keeps reading the old ones for
/// `READ_OLD_FOR`. Returns the servers the group did not read before: what
/// others posted there before we followed may be behind their cursors.
pub fn apply_move(
    record: &mut GroupRecord,
    notice: &MoveNotice,
    at: UnixMicros,
    now_ms: u64,
) -> Vec<String> {
    let new: Vec<String> = notice.servers().iter().map(|s| s.to_string()).collect();
    let read_before = record.servers_to_read(now_ms);
    let added: Vec<String> = new
        .iter()
        .filter(|s| !read_before.contains(s))
        .cloned()
        .collect();
    let until = now_ms.saturating_add(READ_OLD_FOR.as_millis());
    for old in &record.servers {
        if !new.contains(old) {
            record.previous.retain(|p| &p.server != old);
            record.previous.push(PreviousServer {
                server: old.clone(),
                until,
            });
        }
    }
    record.previous.retain(|p| !new.contains(&p.server));
    // Bounded: a member who moves the group again and again, each time
    // naming fresh servers, cannot make us read without end.
    let excess = record.previous.len().saturating_sub(MAX_PREVIOUS_SERVERS);
    record.previous.drain(..excess);
    record.servers = new;
    record.moved_at = at.as_micros();
    added
}

/// Drops the servers moved away from that expired at `now_ms`; whether any
/// did.
pub fn expire_previous(record: &mut GroupRecord, now_ms: u64) -> bool {
    let before = record.previous.len();
    record.previous.retain(|p| p.until > now_ms);
    record.previous.len() != before
}

/// When the next server moved away from expires (Unix ms).
pub fn next_expiry(record: &GroupRecord) -> Option<u64> {
    record.previous.iter().map(|p| p.until).min()
}

/// The moves room: the automatic move policy per group, and per server its
/// own evidence of withholding.
#[derive(Default)]
pub struct Moves {
    auto: HashMap<String, AutoMove>,
    /// server → (count, first time counted, Unix ms).
    withheld: HashMap<String, (u64, u64)>,
}

impl Moves {
    /// `count` of our posts withheld by `server` (its own evidence), seen at
    /// `now_ms`.
    pub fn note_withheld(&mut self, server: &str, count: u64, now_ms: u64) {
        let entry = self
            .withheld
            .entry(server.to_string())
            .or_insert((0, now_ms));
        if now_ms.saturating_sub(entry.1) > WITHHELD_COUNTS_FOR.as_millis() {
            *entry = (0, now_ms);
        }
        entry.0 = entry.0.saturating_add(count);
    }

    /// The evidence against `server` that still counts at `now_ms`.
    pub fn withheld(&self, server: &str, now_ms: u64) -> u64 {
        match self.withheld.get(server) {
            Some(&(n, since))
                if now_ms.saturating_sub(since) <= WITHHELD_COUNTS_FOR.as_millis() =>
            {
                n
            }
            _ => 0,
        }
    }

    /// Forgets servers no longer used, and groups no longer ours.
    pub fn retain(
        &mut self,
        server_used: impl Fn(&str) -> bool,
        group_kept: impl Fn(&str) -> bool,
    ) {
        self.withheld.retain(|s, _| server_used(s));
        self.auto.retain(|g, _| group_kept(g));
    }

    /// The automatic move policy of group `gid`, given its servers' health
    /// and every server's: where to move it now, if anywhere.
    pub fn auto_move(
        &mut self,
        gid: &str,
        now: Instant,
        current: &[ServerHealth],
        all: &[ServerHealth],
    ) -> Option<OnionAddress> {
        let auto = self.auto.entry(gid.to_string()).or_default();
        auto.handle_health(now, current, all);
        auto.poll_event().map(|AutoMoveEvent::MoveTo(to)| to)
    }

    /// When an automatic move may be proposed again, at the earliest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.auto.values().filter_map(AutoMove::poll_timeout).min()
    }
}
