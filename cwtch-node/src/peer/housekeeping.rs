//! The router's flows that time starts: dials, retries, recovery, moves,
//! group adverts, pruning. Run after every input; each part only does work
//! when its rooms say something is due, and the next deadline comes out of
//! `poll_timeout`: there is no periodic tick.

use cwtch_proto::group::MessageKind;
use cwtch_proto::group::moving::{MOVE_AFTER_FAILING, ServerHealth};
use cwtch_proto::group::recovery::RecoveryEvent;
use cwtch_proto::{Duration, Instant, OnionAddress};

use super::groups::adverts::choose;
use super::groups::moving::{expire_previous, next_expiry};
use super::mailbox::POST_PREFIX;
use super::{Kind, Now, Peer};
use crate::control::api::{ApiError, Event};
use crate::profile_store::Table;
use crate::store::records::{self, KeptBlob};

impl Peer {
    /// Everything due at `now`, and the next wall-clock deadline.
    pub(super) fn housekeeping(&mut self, now: Now) {
        self.dial_contacts(now);
        self.dial_servers(now);
        if self
            .recovery
            .poll_timeout()
            .is_some_and(|at| at <= now.mono)
        {
            self.recovery_steps(now);
        }
        if self.wall_dirty || self.wall_deadline.is_some_and(|at| at <= now.mono) {
            self.wall_dirty = false;
            self.wall_clock_work(now);
        }
    }

    /// Dials the contacts that are due. Looks at the whole list only when
    /// the contacts or the links changed or a backoff ran out: not after
    /// every message.
    fn dial_contacts(&mut self, now: Now) {
        let generation = self.contacts.generation();
        if !self.links.needs_dials(now.mono) && self.dialed_contacts_at == Some(generation) {
            return;
        }
        self.dialed_contacts_at = Some(generation);
        let candidates: Vec<(String, bool)> = self
            .contacts
            .all()
            .filter(|c| c.state == crate::model::ContactState::Accepted)
            .map(|c| (c.address.clone(), self.outbox.has_items_for(&c.address)))
            .collect();
        for contact in self.links.due_dials(candidates.into_iter(), now.mono) {
            let Ok(to) = OnionAddress::parse(&contact) else {
                continue;
            };
            let link = self.new_link(Kind::Peer);
            self.links.start_dial(&contact, link);
            self.effects.push_back(super::Effect::DialPeer { link, to });
            self.notify_connection("contact", &contact);
        }
    }

    fn dial_servers(&mut self, now: Now) {
        for server in self.servers.due_dials(now.mono) {
            let Ok(address) = crate::codec::parse_server(&server) else {
                let _ = self.servers.remove(&server);
                continue;
            };
            let link = self.new_link(Kind::Server);
            self.servers.start_dial(&server, link);
            self.effects.push_back(super::Effect::DialServer {
                link,
                server: address,
            });
            self.notify_connection("server", &server);
        }
    }

    fn recovery_steps(&mut self, now: Now) {
        for (gid, step) in self.recovery.handle_timeout(now.mono) {
            let missing: Vec<_> = self
                .groups
                .get(&gid)
                .map(|g| g.tracker.missing().collect())
                .unwrap_or_default();
            match step {
                RecoveryEvent::AskMembers => self.ask_members(&gid, &missing, now),
                RecoveryEvent::GiveUp => {
                    let count = missing
                        .iter()
                        .fold(0u64, |n, r| n.saturating_add(r.count()));
                    tracing::info!(count, "no member we asked had the missing messages");
                    let text = format!(
                        "gave up asking for {count} missing message(s): none of the members we asked had them (asked again when new gaps appear)"
                    );
                    if let Some(g) = self.groups.get_mut(&gid) {
                        g.gaps.push(text.clone());
                    }
                    self.notify(Event::Gap {
                        group: gid.clone(),
                        text,
                        closed: false,
                    });
                }
            }
        }
        if self.recovery.prune_due(now.mono) {
            self.prune_kept(now);
        }
    }

    /// Work on our wall clock: servers moved away from expiring (and
    /// servers no longer read), automatic moves, group adverts. Sets the
    /// next deadline.
    fn wall_clock_work(&mut self, now: Now) {
        let now_ms = now.unix_ms();
        let mut next_ms: Option<u64> = None;
        let mut earliest = |t: Option<u64>| {
            if let Some(t) = t.filter(|t| *t > now_ms) {
                next_ms = Some(next_ms.map_or(t, |n| n.min(t)));
            }
        };
        // Servers moved away from that expired.
        let mut changed = Vec::new();
        for (_, g) in self.groups.all_mut() {
            if expire_previous(&mut g.record, now_ms) {
                changed.push(g.record.clone());
            }
            earliest(next_expiry(&g.record));
        }
        for record in changed {
            let _ = self.store.put(Table::Groups, record.id.as_bytes(), &record);
        }
        if let Err(e) = self.drop_unused_servers(now) {
            tracing::warn!("cannot drop servers no longer read: {e}");
        }
        // Automatic moves.
        let mut auto_deadline: Option<Instant> = None;
        for (gid, to) in self.auto_moves(now, &mut auto_deadline) {
            match self.command(
                crate::control::api::Request::GroupMove {
                    group: gid,
                    server: to.to_string(),
                },
                now,
            ) {
                Ok(_) => {
                    tracing::warn!("a group's server kept failing: moved it to another server")
                }
                Err(e) => tracing::info!("could not move a failing group: {e}"),
            }
        }
        // Group adverts.
        earliest(self.group_adverts(now));
        let wall = next_ms.map(|t| now.mono + Duration::from_millis(t.saturating_sub(now_ms)));
        self.wall_deadline = match (wall, auto_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// The groups to move now, by the core's policy; `deadline` learns when
    /// a failing server becomes bad enough.
    fn auto_moves(
        &mut self,
        now: Now,
        deadline: &mut Option<Instant>,
    ) -> Vec<(String, OnionAddress)> {
        let now_ms = now.unix_ms();
        let health = |server: &String| {
            let conn = self.servers.get(server);
            Some(ServerHealth {
                server: OnionAddress::parse(server).ok()?,
                failing_since: conn.and_then(|c| c.failing_at()),
                withheld: self.moves.withheld(server, now_ms),
                healthy_now: conn.is_some_and(|c| c.healthy_now()),
            })
        };
        let all: Vec<ServerHealth> = self.servers.names().filter_map(health).collect();
        for h in &all {
            if let Some(since) = h.failing_since {
                let at = since + MOVE_AFTER_FAILING;
                if at > now.mono {
                    *deadline = Some(deadline.map_or(at, |d| d.min(at)));
                }
            }
        }
        let groups: Vec<(String, Vec<ServerHealth>)> = self
            .groups
            .all()
            .map(|(gid, g)| {
                (
                    gid.clone(),
                    g.record.servers.iter().filter_map(health).collect(),
                )
            })
            .collect();
        let mut out = Vec::new();
        for (gid, current) in groups {
            if let Some(to) = self.moves.auto_move(&gid, now.mono, &current, &all) {
                out.push((gid, to));
            }
        }
        let groups = &self.groups;
        let servers = &self.servers;
        self.moves
            .retain(|s| servers.get(s).is_some(), |g| groups.contains(g));
        if let Some(at) = self.moves.poll_timeout().filter(|at| *at > now.mono) {
            *deadline = Some(deadline.map_or(at, |d| d.min(at)));
        }
        out
    }

    /// Posts our good servers' adverts to the groups that should hear them;
    /// when to look again (Unix ms).
    fn group_adverts(&mut self, now: Now) -> Option<u64> {
        let now_ms = now.unix_ms();
        let good = self.directory.good(now.unix_secs());
        if good.is_empty() {
            return None;
        }
        let mut next: Option<u64> = None;
        let groups: Vec<(String, Vec<String>)> = self
            .groups
            .all()
            .map(|(gid, g)| (gid.clone(), g.record.servers_to_read(now_ms)))
            .collect();
        for (gid, reads) in groups {
            let shared = self.adverts.shared(&gid);
            let (post, due) = choose(&good, &reads, &shared, now_ms);
            if let Some(t) = due {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
            let Some((body, names)) = post else { continue };
            match self.post_message(&gid, MessageKind::ADVERTS, &body, "", &[], now.unix, now) {
                Ok(_) => {
                    let s = self.adverts.posted(&gid, &names, now_ms);
                    let _ = self
                        .store
                        .put(Table::Servers, &records::adverts_key(&gid), &s);
                    tracing::info!(servers = names.len(), "shared server adverts in a group");
                }
                Err(e) => tracing::info!("could not share server adverts in a group: {e}"),
            }
        }
        next
    }

    /// Stops reading servers no group or mailbox reads any more. Group
    /// posts that can never be stored there are dropped; a server that
    /// still has other posts waiting (first-contact requests to someone's
    /// mailbox) is kept.
    pub(super) fn drop_unused_servers(&mut self, now: Now) -> Result<(), ApiError> {
        let in_use = self.servers_to_read(now.unix_ms());
        let unused: Vec<String> = self
            .servers
            .names()
            .filter(|s| !in_use.contains(s))
            .cloned()
            .collect();
        for server in unused {
            let gone = self
                .outbox
                .drop_posts_for(&server, |p| p.group.starts_with(POST_PREFIX));
            for (s, owner, seq) in gone {
                self.store
                    .delete(Table::Outbox, &records::post_key(&s, &owner, seq))?;
            }
            if self.outbox.has_posts_for_with(&server, POST_PREFIX) {
                continue;
            }
            if let Some(link) = self.servers.remove(&server) {
                self.close(link);
            }
            if let Some(e) = self.directory.note_unused(&server).cloned() {
                self.save_entry(&e);
            }
        }
        for server in in_use {
            self.servers.ensure(&server, 0);
        }
        Ok(())
    }

    /// Drops kept blobs older than the core's `KEEP_FOR` and beyond
    /// `KEEP_MAX_PER_GROUP` per group (oldest first).
    fn prune_kept(&mut self, now: Now) {
        let Ok(rows) = self.store.scan::<KeptBlob>(Table::Blobs, b"keep:") else {
            return;
        };
        let now_ms = now.unix_ms();
        let keep_for = cwtch_proto::group::recovery::KEEP_FOR.as_millis();
        let mut per_group: std::collections::HashMap<Vec<u8>, Vec<(u64, Vec<u8>)>> =
            Default::default();
        for (key, k) in rows {
            let rest = key.get(5..).unwrap_or_default();
            let gid = rest.get(..64).unwrap_or(rest).to_vec();
            per_group.entry(gid).or_default().push((k.at, key));
        }
        let mut dropped = 0usize;
        for (_, mut list) in per_group {
            list.sort();
            let excess = list
                .len()
                .saturating_sub(cwtch_proto::group::recovery::KEEP_MAX_PER_GROUP);
            for (i, (at, key)) in list.iter().enumerate() {
                if i < excess || now_ms.saturating_sub(*at) > keep_for {
                    let _ = self.store.delete(Table::Blobs, key);
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            tracing::info!(dropped, "dropped old kept blobs");
        }
    }
}
