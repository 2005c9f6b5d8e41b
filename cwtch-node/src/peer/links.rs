//! Links to contacts: which are up (each with its core `PeerSession`),
//! which are being dialed, when to dial again, and the connection status
//! shown to the user.

use std::collections::{HashMap, HashSet};

use cwtch_proto::peer::session::keep_new_link;
use cwtch_proto::peer::{Backoff, PeerSession, Standing};
use cwtch_proto::{Duration, Instant, OnionAddress};
use rand_core::CryptoRng;

use super::effect::{Ended, LinkId};
use crate::limits::STABLE_LINK;
use crate::model::{ConnState, ConnStatus};

/// How many dials may run at once: Tor builds a limited number of circuits
/// at a time, and a big contact list must not stall start-up.
pub const MAX_CONCURRENT_DIALS: usize = 3;

/// The most outbox items in flight on one link once the contact greeted
/// us (it holds us as a contact too): the rest go as it acknowledges these.
/// Far below the link's command queue (256), which a greeting with a long
/// backlog would otherwise overflow, closing the link every time it came
/// up.
pub const SEND_WINDOW: usize = 64;

/// The window until the contact greets us: it may hold us as a request,
/// and then drops the texts past its limit unacknowledged. Its greeting
/// (once it accepts us) starts the window over, so what it dropped is sent
/// again, and at most this many items twice.
pub const REQUEST_WINDOW: usize = crate::limits::MAX_REQUEST_TEXTS as usize;

/// How long links that end soon are remembered: after this without one,
/// the delay after the next starts from the shortest again.
pub const FLAP_MEMORY: Duration = Duration::from_secs(3600);

/// An established link to a contact.
pub struct LinkEntry {
    /// Its id.
    pub id: LinkId,
    /// Whether we dialed it.
    pub we_dialed: bool,
    /// The link's rules.
    pub session: PeerSession,
    /// The peer sent something its standing did not allow (a group invite
    /// while only a request): it waits in their queue for a new link.
    pub refused_something: bool,
    /// When it came up.
    pub up_at: Instant,
    /// Whether it is an accepted contact's (the only links redialled).
    pub accepted: bool,
    /// Which outbox items went on this link, and how many more may.
    pub window: SendWindow,
}

/// The outbox items in flight on one link: sent in their local order, at
/// most [`SEND_WINDOW`] unacknowledged ([`REQUEST_WINDOW`] until the
/// contact greets us).
#[derive(Debug, Default)]
pub struct SendWindow {
    /// The last item (by its local order) sent on this link.
    sent_through: u64,
    /// Items sent on this link and not acknowledged yet.
    unacked: usize,
    /// The contact greeted us on this link (its `Hello`).
    greeted: bool,
}

impl SendWindow {
    /// Of `items` (in their local order, by `seq`), those to send now;
    /// they count as sent.
    pub fn take<'a, T>(&mut self, items: impl IntoIterator<Item = (u64, &'a T)>) -> Vec<&'a T> {
        let room = if self.greeted {
            SEND_WINDOW
        } else {
            REQUEST_WINDOW
        };
        let mut out = Vec::new();
        for (seq, item) in items {
            if self.unacked >= room {
                break;
            }
            if seq > self.sent_through {
                out.push(item);
                (self.sent_through, self.unacked) = (seq, self.unacked + 1);
            }
        }
        out
    }

    /// The item numbered `seq` was acknowledged (frees a slot if it went
    /// on this link).
    pub fn acked(&mut self, seq: u64) {
        if seq <= self.sent_through {
            self.unacked = self.unacked.saturating_sub(1);
        }
    }

    /// The contact greeted us: it holds us as a contact. What it dropped
    /// while it held us as a request (texts past its limit, never
    /// acknowledged) holds the window: the first greeting of a link starts
    /// it over, wider (it takes what it already has as duplicates).
    pub fn greeted(&mut self) {
        if !self.greeted {
            *self = SendWindow {
                greeted: true,
                ..SendWindow::default()
            };
        }
    }
}

/// A link not established yet: a dial, or an inbound handshake admitted.
struct Pending {
    contact: String,
    we_dialed: bool,
}

/// What became of a link that came up.
#[derive(Debug, PartialEq, Eq)]
pub enum Up {
    /// It is the contact's link now; the one it replaced (if any) must be
    /// closed.
    Kept {
        /// A link it replaced.
        replaced: Option<LinkId>,
    },
    /// The contact's existing link wins the tie-break: close this one.
    Dropped,
    /// Not a link we know.
    Unknown,
}

/// The links room.
#[derive(Default)]
pub struct Links {
    up: HashMap<String, LinkEntry>,
    pending: HashMap<LinkId, Pending>,
    dialing: HashSet<String>,
    backoff: HashMap<String, (Backoff, Instant)>,
    /// Accepted contacts whose links the other side ended soon
    /// ([`STABLE_LINK`]): a backoff of its own, apart from the dials'
    /// (which a link that comes up forgets), and when the last such link
    /// ended. It grows while links keep ending soon, and starts over after
    /// a link that lasted or [`FLAP_MEMORY`] without a short one.
    short: HashMap<String, (Backoff, Instant)>,
    status: HashMap<String, ConnStatus>,
    /// When a dial held back by its backoff becomes due.
    wake: Option<Instant>,
    /// Whether the last `due_dials` still holds: no link came up or went
    /// down and no backoff was forgotten since. Starts false.
    settled: bool,
}

impl Links {
    /// The contacts to dial now, at most as many as free dial slots:
    /// accepted contacts without a link or a dial, past their backoff,
    /// those with queued items first. `candidates` are (address, has
    /// queued items).
    pub fn due_dials(
        &mut self,
        candidates: impl Iterator<Item = (String, bool)>,
        now: Instant,
    ) -> Vec<String> {
        let mut wake: Option<Instant> = None;
        let mut due: Vec<(bool, String)> = Vec::new();
        for (address, queued) in candidates {
            if self.up.contains_key(&address) || self.dialing.contains(&address) {
                continue;
            }
            match self.backoff.get(&address) {
                Some((_, at)) if *at > now => {
                    wake = Some(wake.map_or(*at, |w| w.min(*at)));
                }
                _ => due.push((!queued, address)),
            }
        }
        due.sort();
        // Beyond the free slots, the rest go when a dial ends (a link
        // event), not on a timer.
        let room = MAX_CONCURRENT_DIALS.saturating_sub(self.dialing.len());
        self.wake = wake;
        self.settled = true;
        due.into_iter().take(room).map(|(_, a)| a).collect()
    }

    /// Whether `due_dials` may name a contact it did not name last time
    /// (for the same candidates): a link came up or went down, a backoff
    /// was forgotten or ran out. Dials it named and that started only
    /// narrow the choice.
    pub fn needs_dials(&self, now: Instant) -> bool {
        !self.settled || self.wake.is_some_and(|at| at <= now)
    }

    /// A dial to `contact` starts on `link`.
    pub fn start_dial(&mut self, contact: &str, link: LinkId) {
        self.dialing.insert(contact.to_string());
        self.pending.insert(
            link,
            Pending {
                contact: contact.to_string(),
                we_dialed: true,
            },
        );
        self.set_dial_status(contact, ConnState::Connecting, None);
    }

    /// An inbound handshake from `contact` was admitted on `link`.
    pub fn admit(&mut self, contact: &str, link: LinkId) {
        self.pending.insert(
            link,
            Pending {
                contact: contact.to_string(),
                we_dialed: false,
            },
        );
    }

    /// Whose link `link` is (established or not).
    pub fn contact_of(&self, link: LinkId) -> Option<&str> {
        if let Some(p) = self.pending.get(&link) {
            return Some(&p.contact);
        }
        self.up
            .iter()
            .find(|(_, e)| e.id == link)
            .map(|(a, _)| a.as_str())
    }

    /// Whether `link` is a peer link we know.
    pub fn knows(&self, link: LinkId) -> bool {
        self.contact_of(link).is_some()
    }

    /// The link came up with `remote` at `now` (`me` is our address): the
    /// tie-break of two simultaneous links decides which one both sides
    /// keep. The contact's backoff is forgotten, unless its last link
    /// ended soon ([`STABLE_LINK`]): then it is kept, and grows if this
    /// one ends soon too.
    pub fn on_up(
        &mut self,
        link: LinkId,
        me: &OnionAddress,
        standing: Standing,
        now: Instant,
    ) -> Up {
        let Some(p) = self.pending.remove(&link) else {
            return Up::Unknown;
        };
        self.settled = false;
        let remote = p.contact;
        // A dial counts against MAX_CONCURRENT_DIALS until its link is up.
        if p.we_dialed {
            self.dialing.remove(&remote);
        }
        let mut replaced = None;
        if let Some(existing) = self.up.get(&remote) {
            let keep_new = OnionAddress::parse(&remote)
                .is_ok_and(|r| keep_new_link(me, &r, existing.we_dialed, p.we_dialed));
            if !keep_new {
                return Up::Dropped;
            }
            replaced = Some(existing.id);
        }
        self.up.insert(
            remote.clone(),
            LinkEntry {
                id: link,
                we_dialed: p.we_dialed,
                session: PeerSession::new(standing),
                refused_something: false,
                up_at: now,
                accepted: standing == Standing::Accepted,
                window: SendWindow::default(),
            },
        );
        self.backoff.remove(&remote);
        let entry = self.status.entry(remote).or_default();
        entry.state = ConnState::Authenticated;
        Up::Kept { replaced }
    }

    /// The link went down (or its dial failed). Returns the contact whose
    /// shown status changed, if any. An accepted contact's link that the
    /// other side ended within [`STABLE_LINK`] holds the next dial back,
    /// longer each time links keep ending soon; one we closed ourselves
    /// changes nothing.
    pub fn on_down<R: CryptoRng + ?Sized>(
        &mut self,
        link: LinkId,
        end: &Ended,
        now: Instant,
        rng: &mut R,
    ) -> Option<String> {
        let (reason, failed, by_us) = (end.reason.as_str(), end.failed, end.by_us);
        self.settled = false;
        if let Some(p) = self.pending.remove(&link) {
            if p.we_dialed {
                self.dialing.remove(&p.contact);
                if !self.up.contains_key(&p.contact) {
                    let entry = self
                        .backoff
                        .entry(p.contact.clone())
                        .or_insert((Backoff::for_peers(), now));
                    entry.1 = entry.0.next_attempt(now, rng);
                    self.set_dial_status(&p.contact, ConnState::Failed, Some(reason.to_string()));
                    return Some(p.contact);
                }
            }
            return None;
        }
        let (contact, up_at, accepted) = self
            .up
            .iter()
            .find(|(_, e)| e.id == link)
            .map(|(a, e)| (a.clone(), e.up_at, e.accepted))?;
        self.up.remove(&contact);
        let short = now.saturating_duration_since(up_at) < STABLE_LINK;
        if !short {
            self.short.remove(&contact);
        } else if accepted && !by_us {
            let flaps = self
                .short
                .entry(contact.clone())
                .or_insert((Backoff::for_peers(), now));
            if now.saturating_duration_since(flaps.1) > FLAP_MEMORY {
                flaps.0.reset();
            }
            flaps.1 = now;
            let at = flaps.0.next_attempt(now, rng);
            // Dials that fail after it back off from the shortest delay.
            self.backoff
                .insert(contact.clone(), (Backoff::for_peers(), at));
        }
        let entry = self.status.entry(contact.clone()).or_default();
        if failed {
            entry.state = ConnState::Failed;
            entry.last_error = Some(reason.to_string());
        } else {
            entry.state = ConnState::Disconnected;
        }
        Some(contact)
    }

    /// Shows how a dial goes, unless a link to the contact is already up (a
    /// dial that started just before the contact's own link came up, or
    /// that loses the tie-break, must not hide it).
    fn set_dial_status(&mut self, contact: &str, state: ConnState, error: Option<String>) {
        if self.up.contains_key(contact) {
            return;
        }
        let entry = self.status.entry(contact.to_string()).or_default();
        entry.state = state;
        if error.is_some() {
            entry.last_error = error;
        }
    }

    /// The established link to `contact`.
    pub fn get(&self, contact: &str) -> Option<&LinkEntry> {
        self.up.get(contact)
    }

    /// The established link to `contact`, to change.
    pub fn get_mut(&mut self, contact: &str) -> Option<&mut LinkEntry> {
        self.up.get_mut(contact)
    }

    /// The link `link` if it is `contact`'s established one.
    pub fn established(&mut self, contact: &str, link: LinkId) -> Option<&mut LinkEntry> {
        self.up.get_mut(contact).filter(|e| e.id == link)
    }

    /// Forgets `contact`'s link (it is being closed).
    pub fn drop_link(&mut self, contact: &str) -> Option<LinkId> {
        let e = self.up.remove(contact)?;
        self.settled = false;
        self.status.entry(contact.to_string()).or_default().state = ConnState::Disconnected;
        Some(e.id)
    }

    /// Dial again at once (a contact was just added).
    pub fn forget_backoff(&mut self, contact: &str) {
        self.settled = false;
        self.backoff.remove(contact);
        self.short.remove(contact);
    }

    /// The connection status shown for `contact`.
    pub fn status(&self, contact: &str) -> ConnStatus {
        self.status.get(contact).cloned().unwrap_or_default()
    }

    /// The contacts with an established link.
    pub fn linked(&self) -> impl Iterator<Item = (&String, &LinkEntry)> {
        self.up.iter()
    }

    /// When a dial held back by its backoff becomes due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wake
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cwtch_proto::Identity;

    fn addr(seed: u8) -> OnionAddress {
        Identity::from_seed(&[seed; 32]).address()
    }

    fn rng() -> chacha20::ChaCha20Rng {
        rand_core::SeedableRng::from_seed([3; 32])
    }

    fn failure(reason: &str) -> Ended {
        Ended {
            reason: reason.into(),
            failed: true,
            by_us: false,
        }
    }

    fn closed(by_us: bool) -> Ended {
        Ended {
            reason: "closed".into(),
            failed: false,
            by_us,
        }
    }

    /// The race behind a stuck "connected": a dial that starts just before
    /// the contact's own link comes up (or loses the tie-break to it) never
    /// overwrites the link's "authenticated".
    #[test]
    fn a_dial_never_hides_a_link_that_is_up() {
        let me = addr(1);
        let peer = addr(9).to_string();
        let mut links = Links::default();
        links.start_dial(&peer, LinkId(1));
        assert_eq!(links.status(&peer).state, ConnState::Connecting);
        links.admit(&peer, LinkId(2));
        assert!(matches!(
            links.on_up(LinkId(2), &me, Standing::Accepted, Instant::ZERO),
            Up::Kept { replaced: None }
        ));
        assert_eq!(links.status(&peer).state, ConnState::Authenticated);
        // Our dial fails while their link is up: still authenticated.
        links.on_down(LinkId(1), &failure("refused"), Instant::ZERO, &mut rng());
        assert_eq!(links.status(&peer).state, ConnState::Authenticated);
    }

    #[test]
    fn dials_are_bounded_and_backed_off() {
        let mut links = Links::default();
        let all: Vec<String> = (10..20).map(|s| addr(s).to_string()).collect();
        let t0 = Instant::from_secs(100);
        let due = links.due_dials(all.iter().map(|a| (a.clone(), false)), t0);
        assert_eq!(due.len(), MAX_CONCURRENT_DIALS);
        for (i, a) in due.iter().enumerate() {
            links.start_dial(a, LinkId(i as u64));
        }
        assert!(
            links
                .due_dials(all.iter().map(|a| (a.clone(), false)), t0)
                .is_empty()
        );
        links.on_down(LinkId(0), &failure("offline"), t0, &mut rng());
        let next = links.due_dials(all.iter().map(|a| (a.clone(), false)), t0);
        assert_eq!(next.len(), 1);
        assert!(
            !next.contains(&due[0]),
            "the failed one waits for its backoff"
        );
        assert!(links.poll_timeout().is_some_and(|w| w > t0));
    }

    /// The router skips the scan of all contacts while nothing that could
    /// change its answer happened: a link up or down, a forgotten backoff
    /// or one that runs out each make it look again.
    #[test]
    fn the_scan_is_needed_only_after_a_change() {
        let me = addr(1);
        let mut links = Links::default();
        let all: Vec<String> = (10..20).map(|s| addr(s).to_string()).collect();
        let t0 = Instant::from_secs(100);
        assert!(links.needs_dials(t0), "never scanned yet");
        let due = links.due_dials(all.iter().map(|a| (a.clone(), false)), t0);
        for (i, a) in due.iter().enumerate() {
            links.start_dial(a, LinkId(i as u64));
        }
        assert!(
            !links.needs_dials(t0),
            "dials it named only narrow the choice"
        );
        // A dial fails: a slot is free.
        links.on_down(LinkId(0), &failure("offline"), t0, &mut rng());
        assert!(links.needs_dials(t0));
        let _ = links.due_dials(all.iter().map(|a| (a.clone(), false)), t0);
        assert!(!links.needs_dials(t0));
        // Its backoff runs out.
        let wake = links.poll_timeout().expect("a backoff deadline");
        assert!(wake > t0 && !links.needs_dials(t0));
        assert!(links.needs_dials(wake));
        let _ = links.due_dials(all.iter().map(|a| (a.clone(), false)), wake);
        // A link comes up, then goes down.
        links.admit(&all[9], LinkId(50));
        assert!(
            !links.needs_dials(wake),
            "an admitted handshake is not a link yet"
        );
        let _ = links.on_up(LinkId(50), &me, Standing::Accepted, wake);
        assert!(links.needs_dials(wake));
        let _ = links.due_dials(all.iter().map(|a| (a.clone(), false)), wake);
        let _ = links.drop_link(&all[9]);
        assert!(links.needs_dials(wake));
        let _ = links.due_dials(all.iter().map(|a| (a.clone(), false)), wake);
        links.forget_backoff(&all[0]);
        assert!(links.needs_dials(wake));
    }

    /// A contact that accepts our link and closes it at once cannot keep
    /// us redialling: each short link backs the next dial off further. A
    /// link that lasted, or that we closed, is redialled at once.
    #[test]
    fn a_link_that_ends_soon_is_redialled_after_a_growing_backoff() {
        let me = addr(1);
        let peer = addr(9).to_string();
        let candidates = || std::iter::once((peer.clone(), true));
        let mut links = Links::default();
        let mut now = Instant::from_secs(1_000);
        let mut waits = Vec::new();
        for round in 0..6u64 {
            assert_eq!(links.due_dials(candidates(), now), vec![peer.clone()]);
            links.start_dial(&peer, LinkId(round));
            now = now + Duration::from_secs(2);
            let up = links.on_up(LinkId(round), &me, Standing::Accepted, now);
            assert_eq!(up, Up::Kept { replaced: None });
            now = now + Duration::from_secs(1);
            links.on_down(LinkId(round), &closed(false), now, &mut rng());
            assert!(
                links.due_dials(candidates(), now).is_empty(),
                "round {round}: not redialled at once"
            );
            let due = links.poll_timeout().expect("a backoff deadline");
            waits.push(due.saturating_duration_since(now));
            now = due;
        }
        // Equal jitter: each wait is in [cap/2, cap], cap 5 s doubling.
        for (i, wait) in waits.iter().enumerate() {
            let cap = Duration::from_secs(5 << i);
            let half = Duration::from_micros(cap.as_micros() / 2);
            assert!(
                *wait >= half && *wait <= cap,
                "wait {i}: {wait:?} for a cap of {cap:?}"
            );
        }

        // A link that lasts is redialled at once when it ends, and the
        // backoff starts over.
        let mut cycle = |links: &mut Links, id: u64, lasts: Duration, end: Ended| {
            assert_eq!(links.due_dials(candidates(), now), vec![peer.clone()]);
            links.start_dial(&peer, LinkId(id));
            let _ = links.on_up(LinkId(id), &me, Standing::Accepted, now);
            now = now + lasts;
            links.on_down(LinkId(id), &end, now, &mut rng());
            let again = !links.due_dials(candidates(), now).is_empty();
            let wait = links
                .poll_timeout()
                .map(|due| due.saturating_duration_since(now));
            if let Some(w) = wait {
                now = now + w;
            }
            (again, wait)
        };
        assert_eq!(
            cycle(&mut links, 100, STABLE_LINK, closed(false)),
            (true, None)
        );
        let (again, wait) = cycle(&mut links, 101, Duration::ZERO, closed(false));
        assert!(
            !again && wait.is_some_and(|w| w <= Duration::from_secs(5)),
            "a short link after a long one waits the shortest delay: {wait:?}"
        );
        // One we close ourselves says nothing about them.
        let (again, _) = cycle(&mut links, 102, Duration::ZERO, closed(true));
        assert!(again, "our own close is redialled at once");
    }

    /// Hours offline grow the backoff to its cap; the first link after
    /// that starts it over, so a blip right after costs the shortest delay.
    #[test]
    fn a_link_after_a_long_absence_starts_the_backoff_over() {
        let me = addr(1);
        let peer = addr(9).to_string();
        let candidates = || std::iter::once((peer.clone(), true));
        let mut links = Links::default();
        let mut now = Instant::from_secs(1_000);
        for round in 0..12u64 {
            assert_eq!(links.due_dials(candidates(), now), vec![peer.clone()]);
            links.start_dial(&peer, LinkId(round));
            links.on_down(LinkId(round), &failure("offline"), now, &mut rng());
            assert!(links.due_dials(candidates(), now).is_empty());
            now = links.poll_timeout().expect("backoff");
        }
        links.start_dial(&peer, LinkId(50));
        let _ = links.on_up(LinkId(50), &me, Standing::Accepted, now);
        now = now + Duration::from_secs(1);
        links.on_down(LinkId(50), &closed(false), now, &mut rng());
        assert!(links.due_dials(candidates(), now).is_empty());
        let wait = links
            .poll_timeout()
            .map(|due| due.saturating_duration_since(now));
        assert!(
            wait.is_some_and(|w| w <= Duration::from_secs(5)),
            "{wait:?}"
        );
    }

    /// Links that end soon are forgotten after an hour without one: a
    /// peer that flapped this morning is not held back this evening.
    #[test]
    fn short_links_are_forgotten_after_a_quiet_hour() {
        let me = addr(1);
        let peer = addr(9).to_string();
        let candidates = || std::iter::once((peer.clone(), true));
        let mut links = Links::default();
        let mut now = Instant::from_secs(1_000);
        let short_link = |links: &mut Links, id: u64, now: Instant| {
            assert_eq!(links.due_dials(candidates(), now), vec![peer.clone()]);
            links.start_dial(&peer, LinkId(id));
            let _ = links.on_up(LinkId(id), &me, Standing::Accepted, now);
            links.on_down(LinkId(id), &closed(false), now, &mut rng());
            assert!(links.due_dials(candidates(), now).is_empty());
            links.poll_timeout().expect("held back")
        };
        for id in 0..4 {
            now = short_link(&mut links, id, now);
        }
        let before = now;
        now = short_link(&mut links, 10, now);
        assert!(now.saturating_duration_since(before) > Duration::from_secs(40));
        now = now + FLAP_MEMORY + Duration::from_secs(1);
        let at = short_link(&mut links, 11, now);
        assert!(at.saturating_duration_since(now) <= Duration::from_secs(5));
    }

    /// Only accepted contacts are redialled, so only their short links
    /// are remembered.
    #[test]
    fn a_short_link_of_a_stranger_leaves_nothing_behind() {
        let me = addr(1);
        let stranger = addr(7).to_string();
        let mut links = Links::default();
        let now = Instant::from_secs(1_000);
        links.admit(&stranger, LinkId(1));
        let standing = Standing::Stranger {
            room_for_request: true,
        };
        let _ = links.on_up(LinkId(1), &me, standing, now);
        links.on_down(LinkId(1), &closed(false), now, &mut rng());
        assert!(links.backoff.is_empty() && links.short.is_empty());
    }

    /// The window: 10 until the greeting, 64 after; an ack frees a slot
    /// only for an item that went on this link; the first greeting starts
    /// over, a second changes nothing.
    #[test]
    fn the_send_window_counts_what_went_on_its_link() {
        let items: Vec<u64> = (1..=100).collect();
        let all = || items.iter().map(|s| (*s, s));
        let mut w = SendWindow::default();
        assert_eq!(
            w.take(all()),
            (1..=10).collect::<Vec<_>>().iter().collect::<Vec<_>>()
        );
        assert!(w.take(all()).is_empty(), "full");
        w.acked(50);
        assert!(w.take(all()).is_empty(), "item 50 never went on this link");
        w.acked(3);
        assert_eq!(w.take(all()), vec![&11]);
        w.greeted();
        let again = w.take(all());
        assert_eq!(again.len(), SEND_WINDOW);
        assert_eq!(again.first(), Some(&&1), "from the start again");
        w.greeted();
        assert!(w.take(all()).is_empty(), "one greeting per link");
    }
}
