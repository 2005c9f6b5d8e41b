//! The server directory (SPEC.md section 13): every server we know of, with
//! its latest verified advert, how we learned of it, and what we observed
//! of it ourselves. `cwtch-node servers` lists it best first.
//!
//! - We learn a server by using it (we fetch its advert each time we connect
//!   and verify it against the address we dialed) or from an accepted
//!   contact, who sends the adverts it knows over the peer link
//!   ([`PeerMessage::ServerAdvert`]). An advert is only stored after its
//!   signature verified and while it is valid; nothing else a contact says
//!   is taken in.
//! - Observations are ours only: successful connections, failures, the last
//!   time the server was reachable, and messages lost on groups using it
//!   (reported by the gap tracker through [`PeerNode::note_lost`]).
//! - The directory is bounded ([`MAX_ENTRIES`]); a new server from a contact
//!   evicts the worst-scored server we do not use, or is dropped.
//! - It lives in the encrypted profile, table `Servers`, keys `dir:<address>`.

use std::collections::BTreeMap;

use cwtch_proto::OnionAddress;
use cwtch_proto::peer::PeerMessage;
use cwtch_proto::server::advert::ServerAdvert;
use serde::{Deserialize, Serialize};

use crate::clock;
use crate::link::LinkCommand;
use crate::model::ContactState;
use crate::peer::{PeerError, PeerNode, State, decode, encode, encode_peer, link_sender};
use crate::profile_store::Table;

/// The most servers the directory keeps.
pub const MAX_ENTRIES: usize = 256;

/// The most adverts sent to a contact when a link is established.
pub const MAX_SHARED: usize = 16;

/// Score penalty per message lost on the server (see [`Entry::score`]).
pub const LOST_PENALTY: u64 = 50;

/// The most a server loses for lost messages.
pub const MAX_LOST_PENALTY: u64 = 500;

const KEY_PREFIX: &str = "dir:";

/// How we first learned of a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// We used it (one of our groups is on it).
    OwnUse,
    /// An accepted contact sent us its advert.
    Contact {
        /// The contact's address.
        address: String,
    },
    /// A member posted it in a group we are in (SPEC.md section 13.4).
    Group {
        /// The group id (hex).
        group: String,
        /// The member's address.
        member: String,
    },
}

/// What we observed of a server ourselves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observations {
    /// Connections that reached the server's hello.
    pub connections: u64,
    /// Connection attempts that failed.
    pub failures: u64,
    /// When it was last reachable (Unix seconds).
    pub last_reachable: Option<u64>,
    /// When an attempt last failed (Unix seconds).
    pub last_failure: Option<u64>,
    /// Messages lost on groups using it (gaps the tracker reported).
    pub lost: u64,
}

/// One server of the directory, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its onion address.
    pub address: String,
    /// Its latest verified advert (hex), if any.
    pub advert: Option<String>,
    /// How we first learned of it.
    pub source: Source,
    /// Whether we use it (it stays even if it was learned from a contact).
    pub used: bool,
    /// What we observed.
    pub observed: Observations,
}

impl Entry {
    fn new(address: &str, source: Source) -> Self {
        Entry {
            address: address.to_string(),
            advert: None,
            used: source == Source::OwnUse,
            source,
            observed: Observations::default(),
        }
    }

    /// The decoded advert, if it is stored and its signature verifies.
    pub fn advert(&self) -> Option<ServerAdvert> {
        let bytes = unhex(self.advert.as_deref()?)?;
        ServerAdvert::decode(&bytes).ok()
    }

    /// The advert bytes if the advert is valid at `now` (Unix seconds).
    pub(crate) fn valid_advert(&self, now: u64) -> Option<Vec<u8>> {
        let bytes = unhex(self.advert.as_deref()?)?;
        let address = OnionAddress::parse(&self.address).ok()?;
        ServerAdvert::verify(&bytes, Some(&address.public_identity()), now).ok()?;
        Some(bytes)
    }

    /// Our score for the server, 0 to 1000, from our own observations only:
    /// the smoothed success rate `1000 · (ok + 1) / (ok + failed + 2)` (500
    /// for a server never tried), minus [`LOST_PENALTY`] per lost message up
    /// to [`MAX_LOST_PENALTY`].
    pub fn score(&self) -> u64 {
        let o = &self.observed;
        let rate = 1000 * (o.connections.saturating_add(1))
            / o.connections.saturating_add(o.failures).saturating_add(2);
        let penalty = o.lost.saturating_mul(LOST_PENALTY).min(MAX_LOST_PENALTY);
        rate.saturating_sub(penalty)
    }

    /// `Some(true)` if the last attempt reached it, `Some(false)` if the last
    /// attempt failed, `None` if we never tried.
    pub fn reachable(&self) -> Option<bool> {
        match (self.observed.last_reachable, self.observed.last_failure) {
            (None, None) => None,
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (Some(ok), Some(failed)) => Some(ok >= failed),
        }
    }

    /// Best first: score, then the most recently reachable, then the ones we
    /// use, then the address (so the order is total and stable).
    fn order(a: &Entry, b: &Entry) -> std::cmp::Ordering {
        b.score()
            .cmp(&a.score())
            .then(b.observed.last_reachable.cmp(&a.observed.last_reachable))
            .then(b.used.cmp(&a.used))
            .then(a.address.cmp(&b.address))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What adding an advert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// A server we did not know.
    New,
    /// A newer advert of a known server.
    Updated,
    /// Nothing new (same or older advert), or no room.
    Nothing,
}

/// The directory in memory.
#[derive(Debug, Default)]
pub struct Directory {
    entries: BTreeMap<String, Entry>,
}

impl Directory {
    /// The entries, best first.
    pub fn ranked(&self) -> Vec<&Entry> {
        let mut list: Vec<&Entry> = self.entries.values().collect();
        list.sort_by(|a, b| Entry::order(a, b));
        list
    }

    /// The entry of a server.
    pub fn get(&self, address: &str) -> Option<&Entry> {
        self.entries.get(address)
    }

    /// The number of servers known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no server is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn entry_mut(&mut self, address: &str) -> &mut Entry {
        self.entries
            .entry(address.to_string())
            .or_insert_with(|| Entry::new(address, Source::OwnUse))
    }

    /// We connected to a server we use (its hello arrived) at `now`.
    pub fn note_connected(&mut self, address: &str, now: u64) -> &Entry {
        let e = self.entry_mut(address);
        e.used = true;
        e.observed.connections = e.observed.connections.saturating_add(1);
        e.observed.last_reachable = Some(now);
        e
    }

    /// An attempt to reach a server we use failed at `now`.
    pub fn note_failed(&mut self, address: &str, now: u64) -> &Entry {
        let e = self.entry_mut(address);
        e.used = true;
        e.observed.failures = e.observed.failures.saturating_add(1);
        e.observed.last_failure = Some(now);
        e
    }

    /// We no longer use `address` (no group or mailbox reads it): it can
    /// be displaced like any server learned from others.
    pub fn note_unused(&mut self, address: &str) -> Option<&Entry> {
        let e = self.entries.get_mut(address)?;
        e.used = false;
        Some(e)
    }

    /// `n` messages of groups on this server were lost.
    pub fn note_lost(&mut self, address: &str, n: u64) -> &Entry {
        let e = self.entry_mut(address);
        e.observed.lost = e.observed.lost.saturating_add(n);
        e
    }

    /// Takes in an advert: verified (and, with `expected`, of that server)
    /// and valid at `now`, or refused. A new server from a contact takes the
    /// place of the worst server we do not use when the directory is full.
    /// Returns what changed and the address, and the address evicted if any.
    pub fn learn(
        &mut self,
        bytes: &[u8],
        expected: Option<&OnionAddress>,
        source: Source,
        now: u64,
    ) -> Result<(Learned, String, Option<String>), PeerError> {
        let expected_key = expected.map(|a| a.public_identity());
        let advert = ServerAdvert::verify(bytes, expected_key.as_ref(), now)
            .map_err(|e| PeerError::Invalid(e.to_string()))?;
        let address = advert.server.address().to_string();
        if let Some(e) = self.entries.get_mut(&address) {
            if source == Source::OwnUse {
                e.used = true;
            }
            let newer = e
                .advert()
                .is_none_or(|old| advert.issued_at > old.issued_at);
            if newer {
                e.advert = Some(hex(bytes));
                return Ok((Learned::Updated, address, None));
            }
            return Ok((Learned::Nothing, address, None));
        }
        let mut evicted = None;
        if self.entries.len() >= MAX_ENTRIES {
            let worst = self
                .ranked()
                .into_iter()
                .rev()
                .find(|e| !e.used)
                .map(|e| e.address.clone());
            // A server a contact names starts at the score of one never
            // tried: it only displaces a server that does no better.
            let unknown = Entry::new(&address, Source::OwnUse).score();
            let displaceable = |w: &String| {
                source == Source::OwnUse
                    || self.entries.get(w).is_some_and(|e| e.score() <= unknown)
            };
            match worst {
                Some(w) if displaceable(&w) => {
                    self.entries.remove(&w);
                    evicted = Some(w);
                }
                _ => return Ok((Learned::Nothing, address, None)),
            }
        }
        let mut e = Entry::new(&address, source);
        e.advert = Some(hex(bytes));
        self.entries.insert(address.clone(), e);
        Ok((Learned::New, address, evicted))
    }

    /// The adverts to share: the best [`MAX_SHARED`] servers with an advert
    /// valid at `now`, as peer messages.
    pub fn to_share(&self, now: u64) -> Vec<Vec<u8>> {
        self.ranked()
            .into_iter()
            .filter_map(|e| e.valid_advert(now))
            .take(MAX_SHARED)
            .map(|bytes| encode_peer(&PeerMessage::ServerAdvert { advert: &bytes }))
            .collect()
    }
}

fn key(address: &str) -> Vec<u8> {
    format!("{KEY_PREFIX}{address}").into_bytes()
}

fn unix_now() -> u64 {
    clock::unix_millis() / 1000
}

impl PeerNode {
    /// Loads the directory from the profile.
    pub(crate) fn load_directory(&self) -> Result<(), PeerError> {
        let mut dir = Directory::default();
        for (k, value) in self.store.scan(Table::Servers)? {
            if k.starts_with(KEY_PREFIX.as_bytes()) {
                let e: Entry = decode(&value, "server directory entry")?;
                dir.entries.insert(e.address.clone(), e);
            }
        }
        self.state().directory = dir;
        Ok(())
    }

    fn save_entry(&self, e: &Entry) {
        if let Err(e) = self.store.put(Table::Servers, &key(&e.address), &encode(e)) {
            tracing::warn!("cannot store the server directory: {e}");
        }
    }

    /// Hook: the connection to a server we use reached its hello.
    pub(crate) fn directory_connected(&self, st: &mut State, server: &str) {
        let e = st.directory.note_connected(server, unix_now()).clone();
        self.save_entry(&e);
    }

    /// Hook: no group or mailbox uses `server` any more.
    pub(crate) fn directory_unused(&self, st: &mut State, server: &str) {
        if let Some(e) = st.directory.note_unused(server).cloned() {
            self.save_entry(&e);
        }
    }

    /// Hook: an attempt to reach a server we use failed.
    pub(crate) fn directory_failed(&self, st: &mut State, server: &str) {
        let e = st.directory.note_failed(server, unix_now()).clone();
        self.save_entry(&e);
    }

    /// `n` of our posts were withheld by `server`, by its own evidence
    /// (`ClientEvent::Withheld`: it acknowledged them, then served past
    /// them). Lowers the server's score. Nothing a member or contact says
    /// comes here.
    pub fn note_lost(&self, server: &str, n: u64) {
        let mut st = self.state();
        self.note_lost_in(&mut st, server, n);
    }

    /// [`PeerNode::note_lost`] for a caller that holds the state.
    pub(crate) fn note_lost_in(&self, st: &mut State, server: &str, n: u64) {
        if n > 0 {
            let e = st.directory.note_lost(server, n).clone();
            self.save_entry(&e);
        }
    }

    /// Hook: the advert a server we connected to sent. It must be that
    /// server's (the address we dialed).
    pub(crate) fn directory_own_advert(&self, st: &mut State, server: &str, bytes: &[u8]) {
        let Ok(address) = OnionAddress::parse(server) else {
            return;
        };
        self.take_advert(st, bytes, Some(&address), Source::OwnUse, None);
    }

    /// Hook: a contact sent an advert. Only accepted contacts are heard.
    pub(crate) fn directory_from_contact(&self, st: &mut State, remote: &str, bytes: &[u8]) {
        if st.contacts.get(remote).map(|c| c.state) != Some(ContactState::Accepted) {
            return;
        }
        let source = Source::Contact {
            address: remote.to_string(),
        };
        self.take_advert(st, bytes, None, source, Some(remote));
    }

    pub(crate) fn take_advert(
        &self,
        st: &mut State,
        bytes: &[u8],
        expected: Option<&OnionAddress>,
        source: Source,
        from: Option<&str>,
    ) {
        let now = unix_now();
        let (learned, address, evicted) = match st.directory.learn(bytes, expected, source, now) {
            Ok(r) => r,
            Err(e) => {
                crate::log_throttled!(kind = e; "ignoring a server advert: {e}");
                return;
            }
        };
        if let Some(gone) = evicted {
            let _ = self.store.delete(Table::Servers, &key(&gone));
        }
        if learned == Learned::Nothing {
            return;
        }
        if let Some(e) = st.directory.get(&address).cloned() {
            self.save_entry(&e);
        }
        if learned == Learned::New {
            // Pass a new server on to the other contacts online now.
            let msg = encode_peer(&PeerMessage::ServerAdvert { advert: bytes });
            for (addr, c) in &st.contacts {
                if c.state == ContactState::Accepted
                    && Some(addr.as_str()) != from
                    && let Some(tx) = link_sender(st, addr)
                {
                    let _ = tx.try_send(LinkCommand::Send(msg.clone()));
                }
            }
        }
    }

    /// Hook: the adverts to send to an accepted contact on a new link.
    pub(crate) fn directory_to_share(&self, st: &State) -> Vec<Vec<u8>> {
        st.directory.to_share(unix_now())
    }

    /// The directory, best first, for `cwtch-node servers`.
    pub fn servers(&self) -> Vec<serde_json::Value> {
        let st = self.state();
        let now = unix_now();
        st.directory
            .ranked()
            .into_iter()
            .map(|e| {
                let advert = e.advert().map(|a| {
                    serde_json::json!({
                        "valid": a.check_time(now).is_ok(),
                        "issued_at": a.issued_at,
                        "expires_at": a.expires_at,
                        "requirements": {
                            "pow_bits": a.requirements.pow_bits,
                            "rate_burst": a.requirements.rate_burst,
                            "rate_interval_ms": a.requirements.rate_interval_ms,
                            "max_connections": a.requirements.max_connections,
                        },
                        "retention": {
                            "max_entries": a.retention.max_entries,
                            "max_bytes": a.retention.max_bytes,
                            "max_age_secs": a.retention.max_age_secs,
                        },
                    })
                });
                serde_json::json!({
                    "address": e.address,
                    "score": e.score(),
                    "reachable": e.reachable(),
                    "source": e.source,
                    "used": e.used,
                    "observed": e.observed,
                    "advert": advert,
                })
            })
            .collect()
    }
}

/// The human form of `cwtch-node servers`: one line per server, best
/// first, then what it demands and keeps.
pub fn human(list: &serde_json::Value) -> String {
    let mut out = String::new();
    for s in list.as_array().into_iter().flatten() {
        let reachable = match s["reachable"].as_bool() {
            Some(true) => "reachable",
            Some(false) => "unreachable",
            None => "never tried",
        };
        let source = match (
            s["source"]["contact"]["address"].as_str(),
            s["source"]["group"]["member"].as_str(),
        ) {
            (Some(c), _) => format!("from contact {}", c.get(..12).unwrap_or(c)),
            (None, Some(m)) => format!("from a group member {}", m.get(..12).unwrap_or(m)),
            (None, None) => "own use".to_string(),
        };
        let o = &s["observed"];
        out.push_str(&format!(
            "{}  score {:>4}  {:<11}  {}{}  ({} ok, {} failed, {} lost)\n",
            s["address"].as_str().unwrap_or_default(),
            s["score"],
            reachable,
            source,
            if s["used"].as_bool() == Some(true) && s["source"] != "own_use" {
                ", used"
            } else {
                ""
            },
            o["connections"],
            o["failures"],
            o["lost"],
        ));
        let a = &s["advert"];
        if a.is_null() {
            out.push_str("    no advert yet\n");
            continue;
        }
        let r = &a["requirements"];
        let k = &a["retention"];
        let limit = |v: &serde_json::Value, unit: &str| match v.as_u64() {
            Some(0) | None => "no limit".to_string(),
            Some(n) => format!("{n}{unit}"),
        };
        out.push_str(&format!(
            "    {}proof of work {} bits, {} posts then 1 per {} ms, keeps {} blobs / {} / {}\n",
            if a["valid"].as_bool() == Some(true) {
                ""
            } else {
                "(advert expired) "
            },
            r["pow_bits"],
            r["rate_burst"],
            r["rate_interval_ms"],
            limit(&k["max_entries"], ""),
            limit(&k["max_bytes"], " bytes"),
            match k["max_age_secs"].as_u64() {
                Some(0) | None => "no age limit".to_string(),
                Some(s) if s % 86_400 == 0 => format!("{} days", s / 86_400),
                Some(s) => format!("{s} s"),
            },
        ));
    }
    if out.is_empty() {
        out.push_str("no servers known yet (use one with `group create`, or add contacts who do)");
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cwtch_proto::Identity;
    use cwtch_proto::server::advert::{Requirements, Retention};

    const NOW: u64 = 1_767_225_600;

    fn advert(seed: u16, issued_at: u64) -> (String, Vec<u8>) {
        let mut s = [7u8; 32];
        s[..2].copy_from_slice(&seed.to_le_bytes());
        let id = Identity::from_seed(&s);
        let a = ServerAdvert {
            server: id.public(),
            issued_at,
            expires_at: issued_at + 7 * 86_400,
            requirements: Requirements::default(),
            retention: Retention::default(),
        };
        (id.address().to_string(), a.sign(&id).unwrap().to_vec())
    }

    fn contact() -> Source {
        Source::Contact {
            address: "c".into(),
        }
    }

    #[test]
    fn only_verified_valid_adverts_are_taken() {
        let mut d = Directory::default();
        let (addr, bytes) = advert(1, NOW);
        let mut bad = bytes.clone();
        bad[60] ^= 1;
        assert!(d.learn(&bad, None, contact(), NOW).is_err());
        assert!(d.learn(&bytes, None, contact(), NOW + 8 * 86_400).is_err());
        let other = OnionAddress::parse(&advert(2, NOW).0).unwrap();
        assert!(d.learn(&bytes, Some(&other), Source::OwnUse, NOW).is_err());
        assert!(d.is_empty());
        let (learned, a, _) = d.learn(&bytes, None, contact(), NOW).unwrap();
        assert_eq!((learned, a.as_str()), (Learned::New, addr.as_str()));
        assert_eq!(
            d.learn(&bytes, None, contact(), NOW).unwrap().0,
            Learned::Nothing
        );
        let (_, newer) = advert(1, NOW + 10);
        assert_eq!(
            d.learn(&newer, None, contact(), NOW + 10).unwrap().0,
            Learned::Updated
        );
        assert_eq!(d.get(&addr).unwrap().source, contact());
        assert_eq!(d.to_share(NOW + 10).len(), 1);
        assert!(
            d.to_share(NOW + 30 * 86_400).is_empty(),
            "expired adverts are not shared"
        );
    }

    #[test]
    fn score_uses_our_observations_only() {
        let mut d = Directory::default();
        let (a, bytes_a) = advert(1, NOW);
        let (b, bytes_b) = advert(2, NOW);
        d.learn(&bytes_a, None, contact(), NOW).unwrap();
        d.learn(&bytes_b, None, contact(), NOW).unwrap();
        assert_eq!(d.get(&a).unwrap().score(), 500);
        assert_eq!(d.get(&a).unwrap().reachable(), None);
        d.note_connected(&b, NOW);
        d.note_connected(&b, NOW);
        assert_eq!(d.get(&b).unwrap().score(), 750);
        assert_eq!(d.ranked()[0].address, b);
        d.note_failed(&b, NOW + 1);
        assert_eq!(d.get(&b).unwrap().reachable(), Some(false));
        assert_eq!(d.get(&b).unwrap().score(), 600);
        d.note_lost(&b, 3);
        assert_eq!(d.get(&b).unwrap().score(), 450);
        assert_eq!(d.ranked()[0].address, a);
        d.note_lost(&b, 100);
        assert_eq!(
            d.get(&b).unwrap().score(),
            100,
            "the loss penalty is capped"
        );
    }

    #[test]
    fn the_directory_is_bounded_and_keeps_servers_we_use() {
        let mut d = Directory::default();
        let (used, used_bytes) = advert(0, NOW);
        d.learn(&used_bytes, None, Source::OwnUse, NOW).unwrap();
        d.note_failed(&used, NOW);
        d.note_failed(&used, NOW);
        for seed in 1..MAX_ENTRIES as u16 {
            let (_, bytes) = advert(seed, NOW);
            d.learn(&bytes, None, contact(), NOW).unwrap();
        }
        assert_eq!(d.len(), MAX_ENTRIES);
        let (newcomer, bytes) = advert(1000, NOW);
        let (learned, _, evicted) = d.learn(&bytes, None, contact(), NOW).unwrap();
        assert_eq!(learned, Learned::New);
        assert!(evicted.is_some());
        assert_ne!(
            evicted.as_deref(),
            Some(used.as_str()),
            "a server we use stays"
        );
        assert_eq!(d.len(), MAX_ENTRIES);
        assert!(d.get(&newcomer).is_some());
        assert!(d.get(&used).is_some());
        // When every server we do not use does better than an unknown one,
        // a newcomer from a contact is dropped.
        let addresses: Vec<String> = d.ranked().iter().map(|e| e.address.clone()).collect();
        for a in &addresses {
            if *a != used {
                d.entries.get_mut(a).unwrap().observed.connections = 5;
            }
        }
        let (late, bytes) = advert(1001, NOW);
        let (learned, _, evicted) = d.learn(&bytes, None, contact(), NOW).unwrap();
        assert_eq!((learned, evicted), (Learned::Nothing, None));
        assert!(d.get(&late).is_none());
        assert_eq!(d.len(), MAX_ENTRIES);
    }
}
