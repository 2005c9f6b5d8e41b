//! Server adverts shared inside groups (SPEC.md section 13.4), the node's
//! side.
//!
//! Contacts pass adverts over peer links; members of a group who are not
//! contacts learn servers from each other through the group itself: a
//! sealed group message of kind `ADVERTS` whose body is a `GroupAdverts` (up
//! to 8 signed adverts), never shown as a message.
//!
//! - **What is posted**: the servers of our directory that we reached
//!   ourselves the last time we tried, whose advert is valid now, and that
//!   the group does not read already; best first, at most
//!   `MAX_GROUP_ADVERTS`. A server we only heard of is not passed on.
//! - **When** (the core's cadence): when such a server is not yet known in
//!   the group, at most once per `NEW_ADVERTS_EVERY` per group; otherwise
//!   once per `REFRESH_ADVERTS_EVERY`.

use std::collections::HashMap;

use cwtch_proto::group::GroupAdverts;
use cwtch_proto::group::adverts::{
    GROUP_ADVERTS_MAX_LEN, MAX_GROUP_ADVERTS, NEW_ADVERTS_EVERY, REFRESH_ADVERTS_EVERY,
};

use crate::store::records::SharedAdverts;

/// The most server addresses remembered as known in one group.
const MAX_KNOWN: usize = 256;

/// An adverts post: its body, and the servers it names.
pub type AdvertPost = (Vec<u8>, Vec<String>);

/// What to post to one group now, if anything, and when to look again:
/// the body, the servers it names, and the next time (Unix ms) something
/// may be due. `good` are our good servers, best first, with their adverts;
/// `reads` the servers the group reads; `shared` what it has heard.
pub fn choose(
    good: &[(String, Vec<u8>)],
    reads: &[String],
    shared: &SharedAdverts,
    now_ms: u64,
) -> (Option<AdvertPost>, Option<u64>) {
    let candidates = good.iter().filter(|(a, _)| !reads.contains(a));
    let (fresh, known): (Vec<_>, Vec<_>) =
        candidates.partition(|(a, _)| !shared.servers.contains(a));
    if fresh.is_empty() && known.is_empty() {
        return (None, None); // looked at again when the directory changes
    }
    let wait = if fresh.is_empty() {
        REFRESH_ADVERTS_EVERY.as_millis()
    } else {
        NEW_ADVERTS_EVERY.as_millis()
    };
    let due = shared.at.saturating_add(wait);
    if now_ms < due {
        return (None, Some(due));
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
    match list.encode(&mut buf) {
        Ok(body) => (
            Some((body.to_vec(), names)),
            Some(now_ms.saturating_add(NEW_ADVERTS_EVERY.as_millis())),
        ),
        Err(_) => (None, None),
    }
}

/// The adverts room: what each group has heard of servers.
#[derive(Default)]
pub struct AdvertsRoom {
    shared: HashMap<String, SharedAdverts>,
}

impl AdvertsRoom {
    /// As loaded.
    pub fn new(shared: HashMap<String, SharedAdverts>) -> Self {
        AdvertsRoom { shared }
    }

    /// What group `gid` has heard.
    pub fn shared(&self, gid: &str) -> SharedAdverts {
        self.shared.get(gid).cloned().unwrap_or_default()
    }

    /// We posted `names` to group `gid` at `now_ms`; the record to store.
    pub fn posted(&mut self, gid: &str, names: &[String], now_ms: u64) -> SharedAdverts {
        let s = self.shared.entry(gid.to_string()).or_default();
        s.at = now_ms;
        for n in names {
            know(s, n);
        }
        s.clone()
    }

    /// A member posted `server` in group `gid`; the record to store.
    pub fn heard(&mut self, gid: &str, server: &str) -> SharedAdverts {
        let s = self.shared.entry(gid.to_string()).or_default();
        know(s, server);
        s.clone()
    }

    /// Forgets a group.
    pub fn forget(&mut self, gid: &str) {
        self.shared.remove(gid);
    }
}

fn know(s: &mut SharedAdverts, server: &str) {
    if !s.servers.iter().any(|x| x == server) {
        s.servers.push(server.to_string());
        let excess = s.servers.len().saturating_sub(MAX_KNOWN);
        s.servers.drain(..excess);
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
        let a = ServerAdvert {
            server: id.public(),
            issued_at: NOW / 1000,
            expires_at: NOW / 1000 + 7 * 86_400,
            requirements: Requirements::default(),
            retention: Retention::default(),
        };
        (id.address().to_string(), a.sign(&id).unwrap().to_vec())
    }

    #[test]
    fn posts_new_servers_at_a_modest_rate_and_refreshes_daily() {
        let good = vec![server(1), server(2)];
        let reads = vec![good[0].0.clone()];
        let mut shared = SharedAdverts::default();
        let (post, _) = choose(&good, &reads, &shared, NOW);
        let (_, names) = post.expect("a new server is posted at once");
        assert_eq!(
            names,
            vec![good[1].0.clone()],
            "not the one the group reads"
        );
        shared.at = NOW;
        shared.servers = names;
        // Known now: only the daily refresh, and the deadline says when.
        let (post, next) = choose(&good, &reads, &shared, NOW + 1);
        assert!(post.is_none());
        assert_eq!(next, Some(NOW + REFRESH_ADVERTS_EVERY.as_millis()));
        assert!(
            choose(
                &good,
                &reads,
                &shared,
                NOW + REFRESH_ADVERTS_EVERY.as_millis()
            )
            .0
            .is_some()
        );
        // A fresh server goes out once NEW_ADVERTS_EVERY passed.
        let more = vec![server(1), server(2), server(3)];
        let (post, next) = choose(&more, &reads, &shared, NOW + 1);
        assert!(post.is_none());
        assert_eq!(next, Some(NOW + NEW_ADVERTS_EVERY.as_millis()));
        // Nothing to say: no deadline at all.
        assert_eq!(choose(&[], &reads, &shared, NOW), (None, None));
    }
}
