//! Links to contacts: which are up (each with its core `PeerSession`),
//! which are being dialed, when to dial again, and the connection status
//! shown to the user.

use std::collections::{HashMap, HashSet};

use cwtch_proto::peer::session::keep_new_link;
use cwtch_proto::peer::{Backoff, PeerSession, Standing};
use cwtch_proto::{Instant, OnionAddress};
use rand_core::CryptoRng;

use super::effect::LinkId;
use crate::limits::STABLE_LINK;
use crate::model::{ConnState, ConnStatus};

/// How many dials may run at once: Tor builds a limited number of circuits
/// at a time, and a big contact list must not stall start-up.
pub const MAX_CONCURRENT_DIALS: usize = 3;

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
    /// keep. The contact's backoff is kept until the link has lasted
    /// [`STABLE_LINK`].
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
            },
        );
        let entry = self.status.entry(remote).or_default();
        entry.state = ConnState::Authenticated;
        Up::Kept { replaced }
    }

    /// The link went down (or its dial failed). Returns the contact whose
    /// shown status changed, if any.
    pub fn on_down<R: CryptoRng + ?Sized>(
        &mut self,
        link: LinkId,
        reason: &str,
        failed: bool,
        now: Instant,
        rng: &mut R,
    ) -> Option<String> {
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
        let (contact, up_at) = self
            .up
            .iter()
            .find(|(_, e)| e.id == link)
            .map(|(a, e)| (a.clone(), e.up_at))?;
        self.up.remove(&contact);
        if now.saturating_duration_since(up_at) >= STABLE_LINK {
            self.backoff.remove(&contact);
        } else {
            let entry = self
                .backoff
                .entry(contact.clone())
                .or_insert((Backoff::for_peers(), now));
            entry.1 = entry.0.next_attempt(now, rng);
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
    use cwtch_proto::Duration;
    use cwtch_proto::Identity;

    fn addr(seed: u8) -> OnionAddress {
        Identity::from_seed(&[seed; 32]).address()
    }

    fn rng() -> chacha20::ChaCha20Rng {
        rand_core::SeedableRng::from_seed([3; 32])
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
        links.on_down(LinkId(1), "refused", true, Instant::ZERO, &mut rng());
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
        links.on_down(LinkId(0), "offline", true, t0, &mut rng());
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
        links.on_down(LinkId(0), "offline", true, t0, &mut rng());
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
    /// link that lasted is redialled at once, from the shortest delay.
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
            links.on_down(
                LinkId(round),
                "closed by the other side",
                false,
                now,
                &mut rng(),
            );
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
        assert_eq!(links.due_dials(candidates(), now), vec![peer.clone()]);
        links.start_dial(&peer, LinkId(100));
        let _ = links.on_up(LinkId(100), &me, Standing::Accepted, now);
        now = now + STABLE_LINK;
        links.on_down(
            LinkId(100),
            "closed by the other side",
            false,
            now,
            &mut rng(),
        );
        assert_eq!(links.due_dials(candidates(), now), vec![peer.clone()]);
        links.start_dial(&peer, LinkId(101));
        let _ = links.on_up(LinkId(101), &me, Standing::Accepted, now);
        links.on_down(
            LinkId(101),
            "closed by the other side",
            false,
            now,
            &mut rng(),
        );
        assert!(links.due_dials(candidates(), now).is_empty());
        let wait = links
            .poll_timeout()
            .map(|due| due.saturating_duration_since(now));
        assert!(
            wait.is_some_and(|w| w <= Duration::from_secs(5)),
            "a short link after a long one waits the shortest delay: {wait:?}"
        );
    }
}
