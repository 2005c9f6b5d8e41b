//! Recovery of missing group messages (SPEC.md section 14), the node's side:
//! the core's `Recovery` per group (when to ask members, when to give up),
//! its `OpenRequests` (which answers to take), an `AnswerBudget` per contact
//! (what we serve), and when to prune the blobs we keep for others.

use std::collections::HashMap;

use cwtch_proto::group::MemberId;
use cwtch_proto::group::ResendWanted;
use cwtch_proto::group::recovery::{
    AnswerBudget, AnswerRefused, OpenRequests, Recovery, RecoveryConfig, RecoveryEvent,
};
use cwtch_proto::group::secret::GROUP_ID_LEN;
use cwtch_proto::{Duration, Instant, OnionAddress};

/// How often kept blobs are pruned: every 10 minutes.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// The most contacts whose answer budget is remembered (only accepted
/// contacts ask; beyond, all are forgotten, which only resets budgets).
const MAX_BUDGETS: usize = 256;

/// The recovery room.
#[derive(Default)]
pub struct RecoveryRoom {
    requests: OpenRequests,
    groups: HashMap<String, Recovery>,
    answered: HashMap<String, AnswerBudget>,
    next_prune: Option<Instant>,
}

impl RecoveryRoom {
    /// Group `gid` misses `count` messages now.
    pub fn handle_gaps(&mut self, gid: &str, count: u64, now: Instant) {
        if count == 0 && !self.groups.contains_key(gid) {
            return;
        }
        self.groups
            .entry(gid.to_string())
            .or_insert_with(|| Recovery::new(RecoveryConfig::default()))
            .handle_gaps(now, count);
    }

    /// Time passed: the steps due, per group.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<(String, RecoveryEvent)> {
        self.requests.handle_timeout(now);
        let mut steps = Vec::new();
        for (gid, r) in self.groups.iter_mut() {
            r.handle_timeout(now);
            if let Some(step) = r.poll_event() {
                steps.push((gid.clone(), step));
            }
        }
        self.groups.retain(|_, r| r.is_active() || r.gave_up());
        steps
    }

    /// Forgets a group (we left it).
    pub fn forget(&mut self, gid: &str) {
        self.groups.remove(gid);
    }

    /// Whether recovery gave up on group `gid`'s open gaps.
    pub fn gave_up(&self, gid: &str) -> bool {
        self.groups.get(gid).is_some_and(Recovery::gave_up)
    }

    /// How many times members were asked about group `gid`'s gaps.
    pub fn asks(&self, gid: &str) -> u32 {
        self.groups.get(gid).map_or(0, Recovery::asks)
    }

    /// We sent request `id` asking `peer` for `wanted`.
    pub fn register(&mut self, id: u64, peer: &OnionAddress, wanted: &ResendWanted, now: Instant) {
        self.requests.register(id, peer, wanted, now);
    }

    /// The group an answer under `id` from `peer` would be about.
    pub fn expected(
        &self,
        id: u64,
        peer: &OnionAddress,
        now: Instant,
    ) -> Result<[u8; GROUP_ID_LEN], AnswerRefused> {
        self.requests.expected(id, peer, now)
    }

    /// Takes an opened answer, if the request named it.
    pub fn take_answer(
        &mut self,
        id: u64,
        peer: &OnionAddress,
        group: &[u8; GROUP_ID_LEN],
        member: MemberId,
        seq: u64,
        now: Instant,
    ) -> Result<(), AnswerRefused> {
        self.requests.take_answer(id, peer, group, member, seq, now)
    }

    /// What we may still do for `contact` asking us for blobs.
    pub fn budget(&mut self, contact: &str, now: Instant) -> &mut AnswerBudget {
        if self.answered.len() >= MAX_BUDGETS && !self.answered.contains_key(contact) {
            self.answered.clear();
        }
        self.answered
            .entry(contact.to_string())
            .or_insert_with(|| AnswerBudget::new(now))
    }

    /// Whether kept blobs are due for pruning now (then the next time is
    /// set).
    pub fn prune_due(&mut self, now: Instant) -> bool {
        match self.next_prune {
            Some(at) if now < at => false,
            _ => {
                self.next_prune = Some(now + PRUNE_EVERY);
                true
            }
        }
    }

    /// The next deadline: a group's next ask, a request's expiry, the next
    /// prune.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.groups
            .values()
            .filter_map(Recovery::poll_timeout)
            .chain(self.requests.poll_timeout())
            .chain(self.next_prune)
            .min()
    }
}
