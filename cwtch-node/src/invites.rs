//! Group invites waiting for the user's answer.
//!
//! An accepted contact's invite is not joined on its own (joining costs Tor
//! dials to servers the inviter chose, and memory): it is kept, shown in
//! `group invites` and `status`, and joined only when the user accepts it
//! (`group accept`), as the original Cwtch does. At most
//! [`MAX_PENDING_INVITES`] wait at once, [`MAX_INVITES_PER_CONTACT`] from
//! any one contact; further invites are acknowledged and dropped. Blocking
//! a contact drops its invites.

use std::collections::BTreeMap;

use cwtch_proto::group::Invite;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::clock;
use crate::groups::{GroupRecord, hex, unhex_vec};
use crate::peer::{PeerError, PeerNode, clean_name, decode, encode};
use crate::profile_store::Table;

/// Where invites are kept (table `Groups`, before the group id).
pub const KEY_PREFIX: &[u8] = b"invite:";
/// The most invites that wait for an answer at once.
pub const MAX_PENDING_INVITES: usize = 32;
/// The most invites from one contact that wait at once.
pub const MAX_INVITES_PER_CONTACT: usize = 4;

/// An invite as stored (inside the encrypted profile): it carries the
/// group secret, so it is never printed (no `Debug`) and wiped on drop.
#[derive(Clone, Serialize, Deserialize)]
struct InviteRecord {
    /// The group id, hex.
    group: String,
    /// The group's name, as the inviter wrote it (cleaned).
    name: String,
    /// Who sent it.
    from: String,
    /// The servers the group uses.
    servers: Vec<String>,
    /// When it arrived, Unix ms.
    received_at: u64,
    /// The binary invite, hex.
    invite: String,
}

impl Drop for InviteRecord {
    fn drop(&mut self) {
        self.invite.zeroize();
    }
}

/// A pending invite as shown (no secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingInvite {
    /// The group id (hex).
    pub group: String,
    /// The group's name, as the inviter wrote it.
    pub name: String,
    /// The contact who sent it.
    pub from: String,
    /// The servers the group uses (what joining dials).
    pub servers: Vec<String>,
    /// When it arrived, Unix ms.
    pub received_at: u64,
}

/// The invites waiting, by group id.
#[derive(Default)]
pub(crate) struct Invites {
    list: BTreeMap<String, InviteRecord>,
}

impl Invites {
    fn view(r: &InviteRecord) -> PendingInvite {
        PendingInvite {
            group: r.group.clone(),
            name: r.name.clone(),
            from: r.from.clone(),
            servers: r.servers.clone(),
            received_at: r.received_at,
        }
    }

    /// Every pending invite, oldest first.
    pub(crate) fn all(&self) -> Vec<PendingInvite> {
        let mut v: Vec<PendingInvite> = self.list.values().map(Self::view).collect();
        v.sort_by_key(|i| i.received_at);
        v
    }

    /// The group id of the invite named `which` (a group name or an id
    /// prefix).
    fn find(&self, which: &str) -> Result<String, PeerError> {
        let matches: Vec<&String> = self
            .list
            .iter()
            .filter(|(id, r)| r.name == which || id.starts_with(which))
            .map(|(id, _)| id)
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(PeerError::Invalid(format!(
                "no pending invite named {which}"
            ))),
            many => Err(PeerError::Invalid(format!(
                "{which} names several invites: {}",
                many.iter()
                    .map(|id| id.get(..12).unwrap_or(id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

fn key(gid: &str) -> Vec<u8> {
    let mut k = KEY_PREFIX.to_vec();
    k.extend_from_slice(gid.as_bytes());
    k
}

impl PeerNode {
    pub(crate) fn load_invites(&self) -> Result<(), PeerError> {
        let mut st = self.state();
        for (k, v) in self.store.scan(Table::Groups)? {
            if k.starts_with(KEY_PREFIX) {
                let r: InviteRecord = decode(&v, "invite")?;
                st.invites.list.insert(r.group.clone(), r);
            }
        }
        Ok(())
    }

    /// An invite from the accepted contact `from`: checked and kept for the
    /// user's answer (or dropped past the limits). `Ok` means it is handled
    /// either way: the caller acknowledges it.
    pub(crate) fn receive_invite(&self, from: &str, bytes: &[u8]) -> Result<(), PeerError> {
        let invite = Invite::decode(bytes).map_err(|e| PeerError::Invalid(e.to_string()))?;
        if invite.inviter().address().to_string() != from {
            return Err(PeerError::Invalid(
                "an invite naming another inviter".into(),
            ));
        }
        let gid = hex(invite.group().id().as_bytes());
        let mut st = self.state();
        if st.groups.contains_key(&gid) || st.invites.list.contains_key(&gid) {
            return Ok(()); // already in it, or already asked
        }
        let from_them = st.invites.list.values().filter(|r| r.from == from).count();
        if st.invites.list.len() >= MAX_PENDING_INVITES || from_them >= MAX_INVITES_PER_CONTACT {
            return Err(PeerError::Invalid(
                "too many group invites wait for an answer: dropped one".into(),
            ));
        }
        let record = InviteRecord {
            group: gid.clone(),
            name: clean_name(invite.name()),
            from: from.to_string(),
            servers: invite.servers().iter().map(|s| s.to_string()).collect(),
            received_at: clock::unix_millis(),
            invite: hex(bytes),
        };
        self.store
            .put(Table::Groups, &key(&gid), &encode(&record))?;
        st.invites.list.insert(gid, record);
        tracing::info!("a group invite waits for an answer");
        Ok(())
    }

    /// The invites waiting for an answer.
    pub fn invites(&self) -> Vec<PendingInvite> {
        self.state().invites.all()
    }

    /// Joins the group of a pending invite.
    pub fn invite_accept(&self, which: &str) -> Result<GroupRecord, PeerError> {
        let (gid, record) = {
            let st = self.state();
            let gid = st.invites.find(which)?;
            let record = st
                .invites
                .list
                .get(&gid)
                .cloned()
                .ok_or_else(|| PeerError::Invalid("the invite vanished".into()))?;
            (gid, record)
        };
        let mut bytes = unhex_vec(&record.invite)
            .ok_or_else(|| PeerError::Corrupt("a stored invite".into()))?;
        let joined = self.join_group_from_invite(&record.from, &bytes);
        bytes.zeroize();
        let joined = joined?;
        self.store.delete(Table::Groups, &key(&gid))?;
        self.state().invites.list.remove(&gid);
        Ok(joined)
    }

    /// Refuses a pending invite: it is forgotten.
    pub fn invite_refuse(&self, which: &str) -> Result<PendingInvite, PeerError> {
        let mut st = self.state();
        let gid = st.invites.find(which)?;
        self.store.delete(Table::Groups, &key(&gid))?;
        let record = st
            .invites
            .list
            .remove(&gid)
            .ok_or_else(|| PeerError::Invalid("the invite vanished".into()))?;
        Ok(Invites::view(&record))
    }

    /// Drops every invite from `from` (a contact we block).
    pub(crate) fn drop_invites_from(&self, st: &mut crate::peer::State, from: &str) {
        let gone: Vec<String> = st
            .invites
            .list
            .iter()
            .filter(|(_, r)| r.from == from)
            .map(|(id, _)| id.clone())
            .collect();
        for gid in gone {
            let _ = self.store.delete(Table::Groups, &key(&gid));
            st.invites.list.remove(&gid);
        }
    }
}
