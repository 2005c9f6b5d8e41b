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

use crate::codec::clean_name;
use crate::codec::hex;
use crate::control::api::{ApiError, ErrorCode};
use crate::model::PendingInvite;
use crate::store::records::InviteRecord;

/// The most invites that wait for an answer at once.
pub const MAX_PENDING_INVITES: usize = 32;
/// The most invites from one contact that wait at once.
pub const MAX_INVITES_PER_CONTACT: usize = 4;

/// Why an invite is not kept.
#[derive(Debug, PartialEq, Eq)]
pub enum InviteRefused {
    /// It does not decode.
    Malformed(String),
    /// It names another inviter than the contact who sent it.
    WrongInviter,
    /// We are in that group, or an invite to it waits already.
    Known,
    /// Too many invites wait (in all, or from this contact).
    TooMany,
}

impl std::fmt::Display for InviteRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InviteRefused::Malformed(e) => write!(f, "a group invite that does not decode: {e}"),
            InviteRefused::WrongInviter => f.write_str("an invite naming another inviter"),
            InviteRefused::Known => f.write_str("an invite to a group we know"),
            InviteRefused::TooMany => {
                f.write_str("too many group invites wait for an answer: dropped one")
            }
        }
    }
}

/// The invites room.
#[derive(Default)]
pub struct Invites {
    list: BTreeMap<String, InviteRecord>,
}

impl Invites {
    /// The invites as loaded.
    pub fn new(list: Vec<InviteRecord>) -> Self {
        Invites {
            list: list.into_iter().map(|r| (r.group.clone(), r)).collect(),
        }
    }

    /// Checks an invite from the accepted contact `from`, received at
    /// `now_ms`; `in_group` says whether we are in that group already. The
    /// record to keep (and store), or why not.
    pub fn check(
        &self,
        from: &str,
        bytes: &[u8],
        in_group: impl Fn(&str) -> bool,
        now_ms: u64,
    ) -> Result<InviteRecord, InviteRefused> {
        let invite = Invite::decode(bytes).map_err(|e| InviteRefused::Malformed(e.to_string()))?;
        if invite.inviter().address().to_string() != from {
            return Err(InviteRefused::WrongInviter);
        }
        let gid = hex::encode(invite.group().id().as_bytes());
        if in_group(&gid) || self.list.contains_key(&gid) {
            return Err(InviteRefused::Known);
        }
        let from_them = self.list.values().filter(|r| r.from == from).count();
        if self.list.len() >= MAX_PENDING_INVITES || from_them >= MAX_INVITES_PER_CONTACT {
            return Err(InviteRefused::TooMany);
        }
        Ok(InviteRecord {
            group: gid,
            name: clean_name(invite.name()),
            from: from.to_string(),
            servers: invite.servers().iter().map(|s| s.to_string()).collect(),
            received_at: now_ms,
            invite: bytes.to_vec(),
        })
    }

    /// Keeps an invite (checked).
    pub fn insert(&mut self, record: InviteRecord) -> PendingInvite {
        let view = view(&record);
        self.list.insert(record.group.clone(), record);
        view
    }

    /// Every pending invite, oldest first.
    pub fn all(&self) -> Vec<PendingInvite> {
        let mut v: Vec<PendingInvite> = self.list.values().map(view).collect();
        v.sort_by_key(|i| i.received_at);
        v
    }

    /// The invite named `which` (a group name or an id prefix).
    pub fn find(&self, which: &str) -> Result<&InviteRecord, ApiError> {
        let matches: Vec<&InviteRecord> = self
            .list
            .iter()
            .filter(|(id, r)| r.name == which || id.starts_with(which))
            .map(|(_, r)| r)
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no pending invite named {which}"),
            )),
            many => {
                let mut e = ApiError::new(
                    ErrorCode::Ambiguous,
                    format!("{which} names several invites: use an id"),
                );
                e.candidates = many
                    .iter()
                    .map(|r| format!("{} ({})", r.name, r.group))
                    .collect();
                Err(e)
            }
        }
    }

    /// Forgets the invite to group `gid`.
    pub fn remove(&mut self, gid: &str) -> Option<InviteRecord> {
        self.list.remove(gid)
    }

    /// The groups of `from`'s invites (a contact we block).
    pub fn from_contact(&self, from: &str) -> Vec<String> {
        self.list
            .iter()
            .filter(|(_, r)| r.from == from)
            .map(|(g, _)| g.clone())
            .collect()
    }
}

/// An invite as shown (no secret).
pub fn view(r: &InviteRecord) -> PendingInvite {
    PendingInvite {
        group: r.group.clone(),
        name: r.name.clone(),
        from: r.from.clone(),
        servers: r.servers.clone(),
        received_at: r.received_at,
    }
}
