//! Missing-message detection: a bounded, per-group gap tracker.
//!
//! Each sender numbers its messages 0, 1, 2, ... and chains them by hash;
//! each message also carries a summary of the highest sequence number its
//! sender has received from up to [`SEEN_MAX`]
//! other members. From these a [`GapTracker`] learns, for each sender, an
//! *end*: every sequence number below it exists. Whatever exists and has not
//! arrived is a gap, reported once as [`GapEvent::Missing`]; a late arrival
//! reports [`GapEvent::Recovered`]; two different messages for one (sender,
//! seq), seen directly or through a broken hash chain, report
//! [`GapEvent::Equivocation`].
//!
//! Claims are bounded (SPEC.md section 7, "Claims"): what a seen summary says of
//! another member extends that member's known end by at most
//! [`MAX_CLAIM_AHEAD`] beyond what that member itself has shown us; a
//! claim beyond is ignored and reported ([`GapEvent::ImplausibleClaim`],
//! naming the claimant). A member known only from others' claims holds a
//! *provisional* slot: at most a quarter of the table, replaced oldest
//! first, and given up to any member whose own signed message arrives.
//! Members the application vouches for ([`GapTracker::vouch`]: its
//! contacts) are never displaced by strangers. So made-up ids and absurd
//! claims can neither evict a real member nor hide its messages.
//!
//! Memory is fixed by the type's parameters: `SENDERS` senders, each with a
//! ring of the last `WINDOW` sequence numbers (hash and previous hash, to
//! spot duplicates and equivocation) and up to `GAPS` open missing ranges;
//! `EVENTS` queued events. Every operation is O(SENDERS + GAPS + WINDOW
//! independent of sequence numbers): a jump from 0 to 2^64 - 2 is one
//! range. Running out of room is an event ([`GapEvent::GaveUp`],
//! [`GapEvent::SenderTableFull`]) or an error ([`GapError`]), never a panic.
//!
//! Driving: call [`GapTracker::handle_message`] for every opened message (including
//! one's own, when sealed), then drain [`GapTracker::poll_event`].

use core::fmt;

use super::message::{MAX_SEQ, MessageHash, OpenedMessage, SEEN_MAX, SeenEntry, SeenSummary};
use super::secret::MemberId;

/// Names one message of a group: who sent it (member id) and its sequence
/// number. Travels in recovery requests (postcard: 16 id bytes, then the
/// seq as a varint).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct MessageRef {
    /// The sender.
    pub member: MemberId,
    /// The sender's sequence number.
    pub seq: u64,
}

/// A range of one sender's messages, `first..=last` (postcard: 16 id bytes,
/// then two varints).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct MissingRange {
    /// The sender.
    pub member: MemberId,
    /// First missing sequence number.
    pub first: u64,
    /// Last missing sequence number (inclusive).
    pub last: u64,
}

impl MissingRange {
    /// Number of messages in the range (saturating at `u64::MAX`).
    pub fn count(&self) -> u64 {
        self.last.saturating_sub(self.first).saturating_add(1)
    }

    /// Whether `seq` is in the range.
    pub fn contains(&self, seq: u64) -> bool {
        self.first <= seq && seq <= self.last
    }
}

/// What the tracker tells the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapEvent {
    /// These messages exist (a later message or someone's seen summary
    /// says so) and have not arrived. Reported once per message.
    Missing(MissingRange),
    /// A message reported missing arrived.
    Recovered(MessageRef),
    /// Two different messages claim this (sender, seq): the sender forked
    /// its chain (or a broken chain link points to another version).
    Equivocation(MessageRef),
    /// Too many open gaps for one sender: this (oldest) range is no longer
    /// tracked; a late arrival from it may be reported as stale instead of
    /// recovered.
    GaveUp(MissingRange),
    /// The sender table is full: this member is not tracked. Reported once
    /// until a sender is forgotten.
    SenderTableFull(MemberId),
    /// A member is no longer tracked, to make room: one known only from
    /// others' claims (for a member who wrote), or a stranger (for a member
    /// the application vouches for). Its `missing` messages are no longer
    /// looked for.
    Dropped {
        /// The member.
        member: MemberId,
        /// How many of its messages were open gaps.
        missing: u64,
    },
    /// A member's seen summary claims another member sent up to `claimed`,
    /// more than [`MAX_CLAIM_AHEAD`] beyond what that member has shown us:
    /// the claim is ignored. Reported once per claimant.
    ImplausibleClaim {
        /// Who made the claim (the author of the summary).
        by: MemberId,
        /// Whom it was about.
        about: MemberId,
        /// The sequence number claimed.
        claimed: u64,
    },
}

/// How far beyond a member's own highest message another member's claim
/// may extend what we believe that member sent (SPEC.md section 7, "Claims").
pub const MAX_CLAIM_AHEAD: u64 = 256;

/// What happened to one ingested message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ingested {
    /// A message not seen before.
    New,
    /// A message that had been reported missing.
    Recovered,
    /// The same message again: drop it.
    Duplicate,
    /// A different message with the same (sender, seq) as one already
    /// received (an [`GapEvent::Equivocation`] was queued).
    Equivocation,
    /// Older than the tracking window and not among the open gaps: either a
    /// duplicate or a message from a range given up; the application's
    /// storage knows which.
    Stale,
    /// The sender could not be tracked (the sender table is full).
    Untracked,
}

/// Why the tracker refused an input. The state is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapError {
    /// Not enough room in the event queue for what this input may report:
    /// drain [`GapTracker::poll_event`] and retry.
    EventQueueFull,
    /// A sequence number above [`MAX_SEQ`].
    SeqOutOfRange,
}

impl fmt::Display for GapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GapError::EventQueueFull => f.write_str("gap tracker event queue is full"),
            GapError::SeqOutOfRange => f.write_str("sequence number out of range"),
        }
    }
}

impl core::error::Error for GapError {}

/// Bytes of the hashes kept per received message in the window.
const HASH_PREFIX: usize = 16;

#[derive(Clone, Copy)]
struct Slot {
    used: bool,
    seq: u64,
    hash: [u8; HASH_PREFIX],
    prev: [u8; HASH_PREFIX],
}

impl Slot {
    const EMPTY: Slot = Slot {
        used: false,
        seq: 0,
        hash: [0; HASH_PREFIX],
        prev: [0; HASH_PREFIX],
    };
}

fn prefix(hash: &MessageHash) -> [u8; HASH_PREFIX] {
    let mut out = [0u8; HASH_PREFIX];
    out.copy_from_slice(&hash.0[..HASH_PREFIX]);
    out
}

#[derive(Clone)]
struct SenderState<const WINDOW: usize, const GAPS: usize> {
    id: MemberId,
    /// Known only from others' claims: no message of its own yet.
    provisional: bool,
    /// The application vouches for this member (a contact).
    vouched: bool,
    /// Its claims were reported as implausible once already.
    claim_reported: bool,
    /// When it was last active (the tracker's tick), for eviction.
    touched: u64,
    /// Every seq below `end` exists; every received seq is below `end`;
    /// every seq below `end` was received or reported missing.
    end: u64,
    max_received: Option<u64>,
    /// Received messages with seq in `end - WINDOW .. end`, at `seq % WINDOW`.
    slots: [Slot; WINDOW],
    /// Open gaps, sorted, disjoint, inclusive.
    missing: heapless::Vec<(u64, u64), GAPS>,
}

/// Where queued events go; `push` never fails because room is checked
/// before any input is processed.
struct Events<'a, const EVENTS: usize>(&'a mut heapless::Deque<GapEvent, EVENTS>);

impl<const EVENTS: usize> Events<'_, EVENTS> {
    fn push(&mut self, event: GapEvent) {
        // Room was reserved by the caller; a failure would only lose an event.
        let _ = self.0.push_back(event);
    }
}

impl<const WINDOW: usize, const GAPS: usize> SenderState<WINDOW, GAPS> {
    fn new(id: MemberId, provisional: bool, touched: u64) -> Self {
        SenderState {
            id,
            provisional,
            vouched: false,
            claim_reported: false,
            touched,
            end: 0,
            max_received: None,
            slots: [Slot::EMPTY; WINDOW],
            missing: heapless::Vec::new(),
        }
    }

    fn window_start(&self) -> u64 {
        self.end.saturating_sub(WINDOW as u64)
    }

    fn slot_index(seq: u64) -> usize {
        // WINDOW >= 1 is checked at construction; the result is < WINDOW.
        (seq % (WINDOW.max(1) as u64)) as usize
    }

    fn slot(&self, seq: u64) -> Option<&Slot> {
        if seq >= self.end {
            return None;
        }
        self.slots
            .get(Self::slot_index(seq))
            .filter(|s| s.used && s.seq == seq)
    }

    /// Where claims about this member may reach: [`MAX_CLAIM_AHEAD`] past
    /// its own highest message (or past the start, if none yet).
    fn claim_limit(&self) -> u64 {
        self.max_received
            .map_or(0, |m| m.saturating_add(1))
            .saturating_add(MAX_CLAIM_AHEAD)
    }

    fn range(&self, first: u64, last: u64) -> MissingRange {
        MissingRange {
            member: self.id,
            first,
            last,
        }
    }

    /// Learns that every seq up to `last` exists.
    fn extend_to<const E: usize>(&mut self, last: u64, events: &mut Events<'_, E>) {
        if last < self.end {
            return;
        }
        let first = self.end;
        // `last <= MAX_SEQ`, so `last + 1` fits.
        self.end = last.saturating_add(1);
        if self.missing.is_full() && GAPS > 0 {
            let (a, b) = self.missing.remove(0);
            events.push(GapEvent::GaveUp(self.range(a, b)));
        }
        if GAPS == 0 {
            events.push(GapEvent::Missing(self.range(first, last)));
            events.push(GapEvent::GaveUp(self.range(first, last)));
            return;
        }
        let _ = self.missing.push((first, last));
        events.push(GapEvent::Missing(self.range(first, last)));
    }

    /// Removes `seq` from the open gaps; whether it was there.
    fn fill<const E: usize>(&mut self, seq: u64, events: &mut Events<'_, E>) -> bool {
        let Some(idx) = self.missing.iter().position(|&(a, b)| a <= seq && seq <= b) else {
            return false;
        };
        let Some(&(a, b)) = self.missing.get(idx) else {
            return false;
        };
        if a == b {
            self.missing.remove(idx);
        } else if seq == a {
            if let Some(r) = self.missing.get_mut(idx) {
                r.0 = a + 1;
            }
        } else if seq == b {
            if let Some(r) = self.missing.get_mut(idx) {
                r.1 = b - 1;
            }
        } else if self.missing.is_full() && idx == 0 {
            // No room to split the oldest range: give up its lower part.
            events.push(GapEvent::GaveUp(self.range(a, seq - 1)));
            if let Some(r) = self.missing.get_mut(idx) {
                r.0 = seq + 1;
            }
        } else {
            let mut idx = idx;
            if self.missing.is_full() {
                let (oa, ob) = self.missing.remove(0);
                events.push(GapEvent::GaveUp(self.range(oa, ob)));
                idx -= 1;
            }
            if let Some(r) = self.missing.get_mut(idx) {
                r.1 = seq - 1;
            }
            let _ = self.missing.insert(idx + 1, (seq + 1, b));
        }
        true
    }

    fn record<const E: usize>(
        &mut self,
        seq: u64,
        hash: &MessageHash,
        prev: &MessageHash,
        events: &mut Events<'_, E>,
    ) {
        let hash = prefix(hash);
        let prev = prefix(prev);
        if let Some(before) = seq.checked_sub(1).and_then(|p| self.slot(p))
            && before.hash != prev
        {
            events.push(GapEvent::Equivocation(MessageRef {
                member: self.id,
                seq: seq - 1,
            }));
        }
        if let Some(after) = self.slot(seq.saturating_add(1))
            && after.prev != hash
        {
            events.push(GapEvent::Equivocation(MessageRef {
                member: self.id,
                seq,
            }));
        }
        // A slot keeps the newest message that maps to it: received
        // messages are remembered whatever a claim did to `end`.
        if let Some(slot) = self.slots.get_mut(Self::slot_index(seq))
            && (!slot.used || slot.seq <= seq)
        {
            *slot = Slot {
                used: true,
                seq,
                hash,
                prev,
            };
        }
        self.max_received = Some(self.max_received.map_or(seq, |m| m.max(seq)));
    }

    fn ingest<const E: usize>(
        &mut self,
        seq: u64,
        hash: &MessageHash,
        prev: &MessageHash,
        events: &mut Events<'_, E>,
    ) -> Ingested {
        if seq >= self.end {
            if seq > self.end {
                self.extend_to(seq - 1, events);
            }
            self.end = seq.saturating_add(1);
            self.record(seq, hash, prev, events);
            return Ingested::New;
        }
        if let Some(slot) = self.slot(seq) {
            return if slot.hash == prefix(hash) {
                Ingested::Duplicate
            } else {
                events.push(GapEvent::Equivocation(MessageRef {
                    member: self.id,
                    seq,
                }));
                Ingested::Equivocation
            };
        }
        let in_window = seq >= self.window_start();
        let was_missing = self.fill(seq, events);
        if was_missing || in_window {
            // In the window and not received means it was reported missing
            // (possibly given up since): either way a recovery.
            events.push(GapEvent::Recovered(MessageRef {
                member: self.id,
                seq,
            }));
            self.record(seq, hash, prev, events);
            Ingested::Recovered
        } else {
            Ingested::Stale
        }
    }
}

/// Events one ingested message can queue at most: a gap plus a give-up, a
/// recovery, a split give-up, two broken chain links, a full table or a
/// dropped sender, and an implausible claim.
const EVENTS_PER_MESSAGE: usize = 8;
/// Events one seen entry can queue at most: a dropped sender, a gap plus a
/// give-up.
const EVENTS_PER_SEEN: usize = 3;

/// The gap tracker of one group. See the [module docs](self).
///
/// `EVENTS` must be at least `8 + 3 * SEEN_MAX` (32) for
/// [`GapTracker::handle_message`] to accept a message with a full seen summary.
pub struct GapTracker<
    const SENDERS: usize = 16,
    const WINDOW: usize = 32,
    const GAPS: usize = 8,
    const EVENTS: usize = 64,
> {
    senders: heapless::Vec<SenderState<WINDOW, GAPS>, SENDERS>,
    events: heapless::Deque<GapEvent, EVENTS>,
    table_full_reported: bool,
    cursor: usize,
    /// Counts inputs, to find the least recently active sender.
    tick: u64,
}

/// Why a member is looked up: it wrote a message, a summary claims it
/// wrote, or the application vouches for it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Author,
    Claimed,
    Vouched,
}

impl<const SENDERS: usize, const WINDOW: usize, const GAPS: usize, const EVENTS: usize> Default
    for GapTracker<SENDERS, WINDOW, GAPS, EVENTS>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<const SENDERS: usize, const WINDOW: usize, const GAPS: usize, const EVENTS: usize>
    GapTracker<SENDERS, WINDOW, GAPS, EVENTS>
{
    const CHECK: () =
        assert!(WINDOW >= 1 && EVENTS >= EVENTS_PER_MESSAGE + EVENTS_PER_SEEN * SEEN_MAX);

    /// An empty tracker.
    pub fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK;
        GapTracker {
            senders: heapless::Vec::new(),
            events: heapless::Deque::new(),
            table_full_reported: false,
            cursor: 0,
            tick: 0,
        }
    }

    /// Ingests an opened message: its sender, sequence number, hash chain
    /// link and seen summary.
    pub fn handle_message(&mut self, msg: &OpenedMessage<'_>) -> Result<Ingested, GapError> {
        self.handle_parts(msg.member, msg.seq, &msg.hash, &msg.prev_hash, &msg.seen)
    }

    /// [`GapTracker::handle_message`] from the message's parts (for one's own
    /// messages, or storage replays).
    pub fn handle_parts(
        &mut self,
        member: MemberId,
        seq: u64,
        hash: &MessageHash,
        prev_hash: &MessageHash,
        seen: &[SeenEntry],
    ) -> Result<Ingested, GapError> {
        if seq > MAX_SEQ || seen.iter().any(|e| e.seq > MAX_SEQ) {
            return Err(GapError::SeqOutOfRange);
        }
        let needed = EVENTS_PER_MESSAGE + EVENTS_PER_SEEN * seen.len();
        if EVENTS - self.events.len() < needed {
            return Err(GapError::EventQueueFull);
        }
        self.tick = self.tick.wrapping_add(1);
        let outcome = match self.sender_index(member, Role::Author) {
            Some(i) => {
                let mut events = Events(&mut self.events);
                match self.senders.get_mut(i) {
                    Some(s) => s.ingest(seq, hash, prev_hash, &mut events),
                    None => Ingested::Untracked,
                }
            }
            None => Ingested::Untracked,
        };
        let mut implausible = None;
        for entry in seen.iter().filter(|e| e.member != member) {
            let Some(i) = self.sender_index(entry.member, Role::Claimed) else {
                continue;
            };
            let mut events = Events(&mut self.events);
            if let Some(s) = self.senders.get_mut(i) {
                if entry.seq >= s.claim_limit() {
                    implausible.get_or_insert((entry.member, entry.seq));
                } else {
                    s.extend_to(entry.seq, &mut events);
                }
            }
        }
        if let Some((about, claimed)) = implausible
            && let Some(author) = self.senders.iter_mut().find(|s| s.id == member)
            && !author.claim_reported
        {
            author.claim_reported = true;
            Events(&mut self.events).push(GapEvent::ImplausibleClaim {
                by: member,
                about,
                claimed,
            });
        }
        Ok(outcome)
    }

    /// The application vouches for `member` (a contact of ours in the
    /// group): it is tracked from now on, and no stranger can displace it.
    /// Returns false only when every slot holds a vouched member.
    pub fn vouch(&mut self, member: MemberId) -> bool {
        self.tick = self.tick.wrapping_add(1);
        match self.sender_index(member, Role::Vouched) {
            Some(i) => {
                if let Some(s) = self.senders.get_mut(i) {
                    s.vouched = true;
                }
                true
            }
            None => false,
        }
    }

    /// The open gaps' total size, saturating (a liar's ranges may be huge).
    pub fn missing_count(&self) -> u64 {
        self.missing()
            .fold(0u64, |sum, r| sum.saturating_add(r.count()))
    }

    /// The index of `member`, adding it if there is room for its role
    /// (see the module docs), or reporting the full table once.
    fn sender_index(&mut self, member: MemberId, role: Role) -> Option<usize> {
        let tick = self.tick;
        if let Some(i) = self.senders.iter().position(|s| s.id == member) {
            let s = self.senders.get_mut(i)?;
            if role != Role::Claimed {
                s.provisional = false;
                s.touched = tick;
            }
            return Some(i);
        }
        let provisional = role == Role::Claimed;
        let new = SenderState::new(member, provisional, tick);
        if provisional {
            let quota = (SENDERS / 4).max(1);
            let held = self.senders.iter().filter(|s| s.provisional).count();
            if held < quota && self.senders.len() < SENDERS {
                let _ = self.senders.push(new);
                return Some(self.senders.len() - 1);
            }
            // Replace the oldest provisional slot, if any: a claim never
            // displaces a member that has written.
            let i = self.oldest(|s| s.provisional)?;
            self.replace(i, new);
            return Some(i);
        }
        if self.senders.len() < SENDERS {
            let _ = self.senders.push(new);
            return Some(self.senders.len() - 1);
        }
        // Full: a provisional slot first, then (for a vouched member) the
        // least recently active stranger.
        let victim = self.oldest(|s| s.provisional).or_else(|| match role {
            Role::Vouched => self.oldest(|s| !s.vouched),
            _ => None,
        });
        if let Some(i) = victim {
            self.replace(i, new);
            return Some(i);
        }
        if !self.table_full_reported {
            self.table_full_reported = true;
            let _ = self.events.push_back(GapEvent::SenderTableFull(member));
        }
        None
    }

    /// The least recently active sender that `pick` accepts.
    fn oldest(&self, pick: impl Fn(&SenderState<WINDOW, GAPS>) -> bool) -> Option<usize> {
        self.senders
            .iter()
            .enumerate()
            .filter(|(_, s)| pick(s))
            .min_by_key(|(_, s)| s.touched)
            .map(|(i, _)| i)
    }

    /// Puts `new` in slot `i`; the one it replaces is no longer tracked
    /// (reported).
    fn replace(&mut self, i: usize, new: SenderState<WINDOW, GAPS>) {
        if let Some(old) = self.senders.get_mut(i) {
            let missing = old.missing.iter().fold(0u64, |n, &(a, b)| {
                n.saturating_add(b.saturating_sub(a).saturating_add(1))
            });
            let _ = self.events.push_back(GapEvent::Dropped {
                member: old.id,
                missing,
            });
            *old = new;
        }
    }

    /// The next event, if any. Call after every input until `None`.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<GapEvent> {
        self.events.pop_front()
    }

    /// A seen summary for one's next message: up to [`SEEN_MAX`] senders
    /// (never `exclude`, normally oneself) with the highest seq received
    /// from each, taken in turn so that every sender is named now and then.
    pub fn seen_summary(&mut self, exclude: Option<MemberId>) -> SeenSummary {
        let mut out = SeenSummary::new();
        let n = self.senders.len();
        let mut examined = 0;
        while examined < n && !out.is_full() {
            let i = (self.cursor + examined) % n;
            examined += 1;
            if let Some(s) = self.senders.get(i) {
                if Some(s.id) == exclude {
                    continue;
                }
                if let Some(seq) = s.max_received {
                    let _ = out.push(SeenEntry { member: s.id, seq });
                }
            }
        }
        if n > 0 {
            self.cursor = (self.cursor + examined) % n;
        }
        out
    }

    /// The open gaps of every sender.
    pub fn missing(&self) -> impl Iterator<Item = MissingRange> + '_ {
        self.senders
            .iter()
            .flat_map(|s| s.missing.iter().map(|&(a, b)| s.range(a, b)))
    }

    /// The highest seq received from `member`.
    pub fn max_received(&self, member: MemberId) -> Option<u64> {
        self.senders
            .iter()
            .find(|s| s.id == member)
            .and_then(|s| s.max_received)
    }

    /// How many sequence numbers of `member` are known to exist (0 for an
    /// unknown member).
    pub fn known_end(&self, member: MemberId) -> u64 {
        self.senders
            .iter()
            .find(|s| s.id == member)
            .map_or(0, |s| s.end)
    }

    /// Stops tracking `member` (a member who left); frees its room.
    pub fn forget(&mut self, member: MemberId) -> bool {
        match self.senders.iter().position(|s| s.id == member) {
            Some(i) => {
                self.senders.remove(i);
                self.table_full_reported = false;
                true
            }
            None => false,
        }
    }
}

impl<const SENDERS: usize, const WINDOW: usize, const GAPS: usize, const EVENTS: usize> fmt::Debug
    for GapTracker<SENDERS, WINDOW, GAPS, EVENTS>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GapTracker")
            .field("senders", &self.senders.len())
            .field("queued_events", &self.events.len())
            .finish_non_exhaustive()
    }
}
