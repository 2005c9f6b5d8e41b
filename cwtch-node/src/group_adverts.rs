//! Server adverts shared inside groups (SPEC.md section 13.4).
//!
//! Contacts pass adverts over peer links ([`crate::directory`]); members of
//! a group who are not contacts learn servers from each other through the
//! group itself: a sealed group message of kind [`MessageKind::ADVERTS`]
//! whose body is a [`GroupAdverts`] (up to 8 signed adverts). It is chained
//! and gap-tracked like any group message and never shown as one.
//!
//! - **What is posted**: the servers of our directory that we reached
//!   ourselves the last time we tried, whose advert is valid now, and that
//!   the group does not read already; best first, at most
//!   [`MAX_GROUP_ADVERTS`]. A server we only heard of is not passed on.
//! - **When**: when such a server is not yet known in the group (neither
//!   posted by us nor received from a member there), at most once per
//!   [`NEW_EVERY_MS`] per group; otherwise once per [`REFRESH_EVERY_MS`]
//!   per group (new members, adverts that expire).
//! - **Receiving**: every advert is verified (signature when decoding,
//!   validity window in the directory) and stored with the source "group,
//!   member"; a server new to us is passed on to contacts as usual.

use std::collections::HashMap;

use cwtch_proto::group::adverts::{GROUP_ADVERTS_MAX_LEN, MAX_GROUP_ADVERTS};
use cwtch_proto::group::{GroupAdverts, MessageKind};
use serde::{Deserialize, Serialize};

use crate::clock;
use crate::directory::Source;
use crate::peer::{PeerNode, State, encode};
use crate::profile_store::Table;

/// A server not yet known in a group is posted there at most this often:
/// 10 minutes.
pub const NEW_EVERY_MS: u64 = cwtch_proto::group::adverts::NEW_ADVERTS_EVERY.as_millis();
/// Otherwise a group hears our servers once a day.
pub const REFRESH_EVERY_MS: u64 = cwtch_proto::group::adverts::REFRESH_ADVERTS_EVERY.as_millis();
/// How often the node looks (the decisions above are what bound traffic).
const TICK_MS: u64 = 5_000;
/// The most server addresses remembered as known in one group.
const MAX_KNOWN: usize = 256;

/// What one group has heard of servers, as far as we know (stored in table
/// `Servers`, key `gadv:<group id>`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Shared {
    /// When we last posted adverts there (Unix ms), 0: never.
    at: u64,
    /// Servers posted there by us or by members, oldest first.
    servers: Vec<String>,
}

impl Shared {
    fn know(&mut self, server: &str) {
        if !self.servers.iter().any(|s| s == server) {
            self.servers.push(server.to_string());
            let excess = self.servers.len().saturating_sub(MAX_KNOWN);
            self.servers.drain(..excess);
        }
    }
}

/// In memory: per group, what it has heard; when we last looked.
#[derive(Default)]
pub(crate) struct GroupAdvertState {
    groups: HashMap<String, Shared>,
    last_tick: Option<u64>,
}

/// What to post to one group now, if anything: the body and the servers
/// it names. `good` are our good servers, best first, with their adverts;
/// `reads` the servers the group reads; `shared` what it has heard.
fn choose(
    good: &[(String, Vec<u8>)],
    reads: &[String],
    shared: &Shared,
    now_ms: u64,
) -> Option<(Vec<u8>, Vec<String>)> {
    let candidates = good.iter().filter(|(a, _)| !reads.contains(a));
    let (fresh, known): (Vec<_>, Vec<_>) =
        candidates.partition(|(a, _)| !shared.servers.contains(a));
    let wait = if fresh.is_empty() {
        REFRESH_EVERY_MS
    } else {
        NEW_EVERY_MS
    };
    if (fresh.is_empty() && known.is_empty()) || now_ms < shared.at.saturating_add(wait) {
        return None;
    }
    let mut list = GroupAdverts::new();
    let mut names = Vec::new();
    for (address, bytes) in fresh.into_iter().chain(known) {
        if list.len() >= MAX_GROUP_ADVERTS {
            break;
        }
        if list.push(bytes).is_ok() {
            names.push(address.clone());
        }
    }
    let mut buf = [0u8; GROUP_ADVERTS_MAX_LEN];
    let body = list.encode(&mut buf).ok()?.to_vec();
    Some((body, names))
}

fn key(gid: &str) -> Vec<u8> {
    format!("gadv:{gid}").into_bytes()
}

impl PeerNode {
    fn shared<'a>(&self, st: &'a mut State, gid: &str) -> &'a mut Shared {
        st.group_adverts
            .groups
            .entry(gid.to_string())
            .or_insert_with(|| {
                self.store
                    .get(Table::Servers, &key(gid))
                    .ok()
                    .flatten()
                    .and_then(|v| serde_json::from_slice(&v).ok())
                    .unwrap_or_default()
            })
    }

    fn save_shared(&self, st: &mut State, gid: &str) {
        let value = encode(&*self.shared(st, gid));
        if let Err(e) = self.store.put(Table::Servers, &key(gid), &value) {
            tracing::warn!("cannot store what a group heard of servers: {e}");
        }
    }

    /// Posts our good servers' adverts to the groups that should hear them
    /// (see the module docs). Called every few seconds.
    pub(crate) fn group_adverts_tick(&self) {
        let now_ms = clock::unix_millis();
        let now = now_ms / 1000;
        let mut posts = Vec::new();
        {
            let mut guard = self.state();
            let st = &mut *guard;
            if st
                .group_adverts
                .last_tick
                .is_some_and(|t| now_ms < t.saturating_add(TICK_MS))
            {
                return;
            }
            st.group_adverts.last_tick = Some(now_ms);
            let good: Vec<(String, Vec<u8>)> = st
                .directory
                .ranked()
                .into_iter()
                .filter(|e| e.reachable() == Some(true))
                .filter_map(|e| Some((e.address.clone(), e.valid_advert(now)?)))
                .collect();
            if good.is_empty() {
                return;
            }
            let groups: Vec<(String, Vec<String>)> = st
                .groups
                .iter()
                .map(|(gid, g)| (gid.clone(), g.record.servers_to_read(now_ms)))
                .collect();
            for (gid, reads) in groups {
                let shared = self.shared(st, &gid);
                if let Some((body, names)) = choose(&good, &reads, shared, now_ms) {
                    posts.push((gid, body, names));
                }
            }
        }
        for (gid, body, names) in posts {
            match self.post_message(&gid, MessageKind::ADVERTS, &body, "", &[]) {
                Ok(_) => {
                    let mut st = self.state();
                    let shared = self.shared(&mut st, &gid);
                    shared.at = now_ms;
                    for n in &names {
                        shared.know(n);
                    }
                    self.save_shared(&mut st, &gid);
                    tracing::info!(servers = names.len(), "shared server adverts in a group");
                }
                Err(e) => tracing::info!("could not share server adverts in a group: {e}"),
            }
        }
    }

    /// A member's advert message in group `gid`, already opened and
    /// verified as a group message: each advert is verified and taken into
    /// the directory with the group and the member as its source.
    pub(crate) fn group_adverts_received(
        &self,
        st: &mut State,
        gid: &str,
        member: &str,
        body: &[u8],
    ) {
        let list = match GroupAdverts::decode(body) {
            Ok(l) => l,
            Err(e) => {
                crate::log_throttled!(kind = e; "ignoring server adverts from a group member: {e}");
                return;
            }
        };
        for (raw, advert) in list.iter() {
            self.shared(st, gid)
                .know(&advert.server.address().to_string());
            let source = Source::Group {
                group: gid.to_string(),
                member: member.to_string(),
            };
            self.take_advert(st, raw, None, source, None);
        }
        self.save_shared(st, gid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cwtch_proto::Identity;
    use cwtch_proto::server::advert::{Requirements, Retention, ServerAdvert};

    const NOW: u64 = 1_767_225_600_000;

    fn server(seed: u8) -> (String, Vec<u8>) {
        let id = Identity::from_seed(&[seed; 32]);
        let bytes = ServerAdvert {
            server: id.public(),
            issued_at: NOW / 1000,
            expires_at: NOW / 1000 + 86_400,
            requirements: Requirements::default(),
            retention: Retention::default(),
        }
        .sign(&id)
        .unwrap();
        (id.address().to_string(), bytes.to_vec())
    }

    fn named(body: &[u8]) -> Vec<String> {
        GroupAdverts::decode(body)
            .unwrap()
            .iter()
            .map(|(_, a)| a.server.address().to_string())
            .collect()
    }

    #[test]
    fn posts_new_servers_at_a_modest_rate_and_refreshes_daily() {
        let good: Vec<_> = (1..=10).map(server).collect();
        let addr = |i: usize| good[i].0.clone();
        let mut shared = Shared::default();
        // Nothing to say: every good server is one the group reads.
        let all: Vec<String> = good.iter().map(|(a, _)| a.clone()).collect();
        assert!(choose(&good, &all, &shared, NOW).is_none());
        // A new group hears at once, at most 8, never its own server.
        let (body, names) = choose(&good, &[addr(0)], &shared, NOW).unwrap();
        assert_eq!(names.len(), MAX_GROUP_ADVERTS);
        assert!(!names.contains(&addr(0)));
        assert_eq!(named(&body), names);
        shared.at = NOW;
        for n in &names {
            shared.know(n);
        }
        // The one left over is new to the group: posted, but not within
        // 10 minutes of the last post; then first in the list.
        assert!(choose(&good, &[addr(0)], &shared, NOW + NEW_EVERY_MS - 1).is_none());
        let (_, names) = choose(&good, &[addr(0)], &shared, NOW + NEW_EVERY_MS).unwrap();
        assert_eq!(names[0], addr(9));
        shared.at = NOW + NEW_EVERY_MS;
        shared.know(&addr(9));
        // All known: nothing until a day has passed, then a refresh.
        let later = NOW + NEW_EVERY_MS;
        assert!(choose(&good, &[addr(0)], &shared, later + NEW_EVERY_MS).is_none());
        assert!(choose(&good, &[addr(0)], &shared, later + REFRESH_EVERY_MS - 1).is_none());
        let (_, names) = choose(&good, &[addr(0)], &shared, later + REFRESH_EVERY_MS).unwrap();
        assert_eq!(names.len(), MAX_GROUP_ADVERTS);
    }

    #[test]
    fn what_a_group_heard_is_bounded() {
        let mut shared = Shared::default();
        for i in 0..MAX_KNOWN + 10 {
            shared.know(&format!("s{i}"));
            shared.know(&format!("s{i}"));
        }
        assert_eq!(shared.servers.len(), MAX_KNOWN);
        assert_eq!(shared.servers[0], "s10", "the oldest are forgotten first");
    }
}
