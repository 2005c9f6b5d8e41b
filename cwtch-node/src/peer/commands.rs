//! The router's answers to the control API's requests.

use cwtch_proto::group::control::MOVE_NOTICE_MAX_LEN;
use cwtch_proto::group::moving::own_notice_time;
use cwtch_proto::group::{Group, Invite, MessageKind, MoveNotice, ServerList};
use cwtch_proto::mailbox::Identifier;
use cwtch_proto::peer::PeerMessage;
use cwtch_proto::{OnionAddress, UnixMicros};
use serde_json::Value;

use super::groups::moving::apply_move;
use super::mailbox::{POST_PREFIX, check_first_contact, identifier_view, seal_first_contact};
use super::{Now, Peer, encode_peer, invalid, json};
use crate::codec::{hex, parse_server};
use crate::control::api::{ApiError, ErrorCode, Event, Request};
use crate::model::{
    Contact, ContactState, Delivery, GroupCreated, OutBody, OutItem, StatusView, StoredMessage,
};
use crate::profile_store::Table;
use crate::store::records::{self, GroupPost, message_key, outbox_key, post_key};

type Answer = Result<Value, ApiError>;

impl Peer {
    /// One request of the control API (`Subscribe` and `Shutdown` are the
    /// daemon's). The answer is the JSON documented in API.md.
    pub fn handle_command(&mut self, request: Request, now: Now) -> Answer {
        let answer = self.command(request, now);
        // A command may make dials or posts due.
        self.housekeeping(now);
        answer
    }

    pub(super) fn command(&mut self, request: Request, now: Now) -> Answer {
        match request {
            Request::Status => Ok(json(&self.status(now))),
            Request::Address => Ok(serde_json::json!({"address": self.me.to_string()})),
            Request::Identifier => Ok(json(&self.identifier(now))),
            Request::ContactAdd {
                address,
                message,
                nickname,
            } => self.contact_add(&address, message.as_deref(), nickname, now),
            Request::ContactAccept { contact } => {
                let address = self.resolve_request(&contact)?;
                self.set_state(&address, ContactState::Accepted)
            }
            Request::ContactRefuse { contact } => self.contact_refuse(&contact),
            Request::ContactBlock { contact } => {
                let address = self.contacts.resolve(&contact)?;
                // A stranger's address can be blocked before they ask.
                if self.contacts.get(&address).is_none() {
                    if address == self.me.to_string() {
                        return Err(invalid("that is our own address"));
                    }
                    self.contacts
                        .put(Contact::new(&address, ContactState::Request));
                }
                self.set_state(&address, ContactState::Blocked)
            }
            Request::ContactUnblock { contact } => {
                let address = self.contacts.resolve(&contact)?;
                if self.contacts.state(&address) != Some(ContactState::Blocked) {
                    return Err(invalid(format!("{contact} is not blocked")));
                }
                self.set_state(&address, ContactState::Accepted)
            }
            Request::ContactRename { contact, nickname } => self.rename(&contact, nickname),
            Request::ContactList => Ok(json(&self.contact_list())),
            Request::Send { to, text } => {
                let address = self.contacts.resolve(&to)?;
                self.send_text(&address, &text, now)
                    .map(|m| json(&self.shown(m)))
            }
            Request::Messages { conversation } => self.messages(&conversation),
            Request::Resolve { name } => {
                let conversation = self.conversation(&name)?;
                let kind = if self.groups.contains(&conversation) {
                    "group"
                } else {
                    "contact"
                };
                Ok(serde_json::json!({"kind": kind, "conversation": conversation}))
            }
            Request::ConversationRead { conversation } => self.mark_read(&conversation),
            Request::ConversationDelete { conversation } => self.delete_conversation(&conversation),
            Request::GroupCreate { name, server } => self.group_create(&name, &server),
            Request::GroupInvite { group, contact } => self.group_invite(&group, &contact, now),
            Request::GroupSend { group, text } => {
                let gid = self.groups.find(&group)?;
                if text.len() > cwtch_proto::group::message::MAX_BODY_LEN {
                    return Err(invalid(format!(
                        "the text is longer than {} bytes, the most one sealed message holds",
                        cwtch_proto::group::message::MAX_BODY_LEN
                    )));
                }
                self.post_message(
                    &gid,
                    MessageKind::TEXT,
                    text.as_bytes(),
                    &text,
                    &[],
                    now.unix,
                    now,
                )
                .map(|m| json(&self.shown(m)))
            }
            Request::GroupMove { group, server } => self.group_move(&group, &server, now),
            Request::GroupLeave { group } => self.group_leave(&group, now),
            Request::GroupList => Ok(json(&self.group_list(now))),
            Request::GroupInvites => Ok(json(&self.invites.all())),
            Request::GroupAccept { group } => self.invite_accept(&group, now),
            Request::GroupRefuse { group } => {
                let gid = self.invites.find(&group)?.group.clone();
                self.store
                    .delete(Table::Groups, &records::invite_key(&gid))?;
                let r = self
                    .invites
                    .remove(&gid)
                    .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "the invite is gone"))?;
                Ok(json(&super::invites::view(&r)))
            }
            Request::MailboxCreate { server, revoke_old } => {
                self.mailbox_create(&server, revoke_old, now)
            }
            Request::Servers => Ok(json(&self.directory.view(now.unix_secs()))),
            Request::Subscribe { .. } | Request::Shutdown => Err(ApiError::new(
                ErrorCode::BadRequest,
                "handled by the daemon, not the core",
            )),
        }
    }

    // ----- status -----------------------------------------------------------

    fn status(&self, now: Now) -> StatusView {
        StatusView {
            address: self.me.to_string(),
            name: self.name.clone(),
            outbox: self.outbox.len(),
            contacts: self.contact_list(),
            groups: self.group_list(now),
            invites: self.invites.all(),
            first_contact_pending: self
                .outbox
                .posts_of_any()
                .filter(|p| p.group.starts_with(POST_PREFIX))
                .count(),
            transport_note: self.transport_note.clone(),
        }
    }

    fn contact_list(&self) -> Vec<crate::model::ContactEntry> {
        self.contacts
            .all()
            .filter_map(|c| self.contact_entry(&c.address))
            .collect()
    }

    fn identifier(&self, now: Now) -> crate::model::IdentifierView {
        let now_ms = now.unix_ms();
        let mailbox = self.mailbox.as_ref();
        identifier_view(
            &self.me,
            mailbox.map(|m| m.mailbox()),
            mailbox.map(|m| self.servers.status(&m.server())),
            mailbox.map(|m| m.retired_view(now_ms)).unwrap_or_default(),
        )
    }

    // ----- contacts ---------------------------------------------------------

    /// `name` must be a pending request.
    fn resolve_request(&self, name: &str) -> Result<String, ApiError> {
        let address = self.contacts.resolve(name)?;
        if self.contacts.get(&address).is_none() {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no contact request from {name}"),
            ));
        }
        Ok(address)
    }

    fn contact_add(
        &mut self,
        address: &str,
        message: Option<&str>,
        nickname: Option<String>,
        now: Now,
    ) -> Answer {
        let identifier =
            Identifier::parse(address).map_err(|e| invalid(format!("{address}: {e}")))?;
        check_first_contact(&identifier, message).map_err(invalid)?;
        let address = identifier.owner().to_string();
        if address == self.me.as_str() {
            return Err(invalid("that is our own address"));
        }
        if let Some(n) = &nickname {
            self.check_nickname(&address, n)?;
        }
        let mut contact = self
            .contacts
            .get(&address)
            .cloned()
            .unwrap_or_else(|| Contact::new(&address, ContactState::Accepted));
        contact.state = ContactState::Accepted;
        contact.from_mailbox = false;
        if nickname.is_some() {
            contact.nickname = nickname;
        }
        self.store_contact(contact)?;
        self.links.forget_backoff(&address);
        let first = match message {
            Some(text) => Some(self.send_text(&address, text, now)?),
            None => None,
        };
        self.post_first_contact(&identifier, first.as_ref(), now)?;
        Ok(json(&self.contacts.get(&address)))
    }

    fn check_nickname(&self, address: &str, nickname: &str) -> Result<(), ApiError> {
        if nickname.len() > cwtch_proto::peer::message::MAX_NAME_LEN
            || nickname.chars().any(char::is_control)
        {
            return Err(invalid(
                "a nickname is at most 64 bytes, without control characters",
            ));
        }
        if OnionAddress::parse(nickname).is_ok() {
            return Err(invalid("a nickname cannot be an address"));
        }
        if let Some(other) = self
            .contacts
            .all()
            .find(|c| c.address != address && c.nickname.as_deref() == Some(nickname))
        {
            return Err(invalid(format!(
                "{nickname} is already the nickname of {}",
                other.address
            )));
        }
        Ok(())
    }

    fn rename(&mut self, name: &str, nickname: String) -> Answer {
        let address = self.contacts.resolve(name)?;
        if !nickname.is_empty() {
            self.check_nickname(&address, &nickname)?;
        }
        let mut c = self
            .contacts
            .get(&address)
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such contact"))?;
        c.nickname = (!nickname.is_empty()).then_some(nickname);
        self.store.put(Table::Contacts, address.as_bytes(), &c)?;
        self.contacts.put(c);
        self.notify_contact(&address);
        Ok(json(&self.contacts.get(&address)))
    }

    /// Stores a contact, and tells its open link's session (which may greet
    /// or close) and the subscribers.
    pub(super) fn store_contact(&mut self, contact: Contact) -> Result<(), ApiError> {
        let address = contact.address.clone();
        let state = contact.state;
        self.store
            .put(Table::Contacts, address.as_bytes(), &contact)?;
        self.contacts.put(contact);
        if state == ContactState::Blocked {
            for gid in self.invites.from_contact(&address) {
                self.store
                    .delete(Table::Groups, &records::invite_key(&gid))?;
                self.invites.remove(&gid);
            }
        }
        let standing = self.contacts.standing(&address);
        if let Some(link) = self.links.get_mut(&address) {
            link.session.handle_standing(standing);
            let id = link.id;
            self.link_actions(&address, id);
        }
        self.notify_contact(&address);
        Ok(())
    }

    fn set_state(&mut self, address: &str, state: ContactState) -> Answer {
        let mut c = self.contacts.get(address).cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no contact request from {address}"),
            )
        })?;
        let was = c.state;
        c.state = state;
        if state != ContactState::Request {
            c.from_mailbox = false;
        }
        self.store_contact(c)?;
        if state == ContactState::Accepted {
            self.links.forget_backoff(address);
            // What they sent while only a request and we could not take
            // (a group invite) waits in their queue for a new link: start
            // one now, after our greeting goes out, rather than when this
            // link happens to end.
            if was == ContactState::Request
                && self.links.get(address).is_some_and(|l| l.refused_something)
                && let Some(link) = self.links.drop_link(address)
            {
                self.close(link);
                self.notify_connection("contact", address);
            }
        }
        Ok(json(&self.contacts.get(address)))
    }

    /// Refuses a pending request: it is forgotten, with its messages.
    fn contact_refuse(&mut self, name: &str) -> Answer {
        let address = self.contacts.resolve(name)?;
        if self.contacts.state(&address) != Some(ContactState::Request) {
            return Err(invalid(format!(
                "{name} is not a contact request (block it instead)"
            )));
        }
        let keys: Vec<Vec<u8>> = self
            .store
            .scan::<StoredMessage>(Table::Messages, b"")?
            .into_iter()
            .filter(|(_, m)| m.conversation == address)
            .map(|(k, _)| k)
            .collect();
        let seq = self.seq;
        self.store.transaction(|tx| {
            for k in &keys {
                tx.delete(Table::Messages, k)?;
            }
            tx.delete(Table::Contacts, address.as_bytes())?;
            // The numbers of the deleted messages are never given again.
            tx.put_raw(Table::Meta, b"seq", &seq.to_le_bytes())?;
            Ok(())
        })?;
        let c = self.contacts.remove(&address);
        self.unread.remove(&address);
        if let Some(link) = self.links.drop_link(&address) {
            self.close(link);
        }
        self.notify(Event::ContactChanged {
            contact: Value::Null,
            address: address.clone(),
        });
        Ok(json(&c))
    }

    // ----- messages ---------------------------------------------------------

    /// Queues a text for a contact; it is sent when a link is up and kept
    /// until acknowledged.
    pub(super) fn send_text(
        &mut self,
        address: &str,
        text: &str,
        now: Now,
    ) -> Result<StoredMessage, ApiError> {
        if text.len() > cwtch_proto::peer::message::MAX_TEXT_LEN {
            return Err(invalid("the text is longer than 4096 bytes"));
        }
        match self.contacts.state(address) {
            Some(ContactState::Accepted) => {}
            Some(ContactState::Request) => {
                return Err(invalid(format!(
                    "accept the contact request first: cwtch-node contact accept {address}"
                )));
            }
            Some(ContactState::Blocked) => return Err(invalid(format!("{address} is blocked"))),
            None => {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("{address} is not a contact: cwtch-node contact add {address}"),
                ));
            }
        }
        let seq = self.next_seq()?;
        let id = self.random_u64();
        let sent_at = now.unix_ms();
        let msg = StoredMessage {
            author_name: None,
            seq,
            conversation: address.to_string(),
            id,
            outgoing: true,
            author: self.me.to_string(),
            text: text.to_string(),
            sent_at,
            status: Delivery::Pending,
            note: None,
        };
        let item = OutItem {
            seq,
            contact: address.to_string(),
            id,
            body: OutBody::Text {
                text: text.to_string(),
                sent_at,
            },
        };
        self.store.transaction(|tx| {
            tx.put(Table::Messages, &message_key(address, true, id), &msg)?;
            tx.put(Table::Outbox, &outbox_key(address, id), &item)?;
            Ok(())
        })?;
        self.outbox.push(item);
        if let Some(link) = self.links.get(address).map(|l| l.id) {
            self.send_window(address, link);
        }
        self.notify_message(&msg);
        Ok(msg)
    }

    /// The conversation `name` means: a contact, or a group. A name that
    /// fits both is refused as ambiguous: a contact's announced name must
    /// never shadow a group (or a group's name a contact).
    fn conversation(&self, name: &str) -> Result<String, ApiError> {
        let contact = self.contacts.resolve(name);
        let group = self.groups.find(name);
        match (contact, group) {
            (Err(e), _) | (_, Err(e)) if e.code == ErrorCode::Ambiguous => Err(e),
            (Ok(a), Ok(g)) => {
                let mut e = ApiError::new(
                    ErrorCode::Ambiguous,
                    format!("{name} names a contact and a group: use an address or the group's id"),
                );
                e.candidates = vec![format!("contact {a}"), format!("group {g}")];
                Err(e)
            }
            (Ok(a), Err(_)) => Ok(a),
            (Err(_), Ok(g)) => Ok(g),
            (Err(_), Err(_)) => match OnionAddress::parse(name) {
                Ok(a) => Ok(a.to_string()),
                Err(_) => Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("no contact or group named {name}"),
                )),
            },
        }
    }

    /// The messages of a conversation, as shown.
    fn messages(&self, name: &str) -> Answer {
        let conversation = self.conversation(name)?;
        let list: Vec<StoredMessage> = self
            .store
            .scan::<StoredMessage>(Table::Messages, b"")?
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| m.conversation == conversation)
            .collect();
        let mut list = if self.groups.contains(&conversation) {
            let asking = if self.recovery.gave_up(&conversation) {
                "none of the members we asked had it; asked again when new gaps appear"
            } else {
                "asking the members we are linked with"
            };
            // A server that pruned its log (under its stated retention)
            // explains the gap: said so, never held against it.
            let expired = self.groups.get(&conversation).and_then(|g| {
                g.record
                    .servers
                    .iter()
                    .find_map(|s| self.servers.retention_note(s))
            });
            let note = match expired {
                Some(why) => format!("{why}; {asking}"),
                None => asking.to_string(),
            };
            self.groups.view(
                &conversation,
                list,
                &self.identity,
                |s| self.servers.status(s),
                &note,
            )
        } else {
            let mut list = list;
            list.sort_by_key(|m| m.seq);
            let note = self.pending_note(&conversation);
            for m in list.iter_mut().filter(|m| m.status == Delivery::Pending) {
                m.note = Some(note.clone());
            }
            list
        };
        list = list.into_iter().map(|m| self.shown(m)).collect();
        Ok(json(&list))
    }

    fn mark_read(&mut self, name: &str) -> Answer {
        let conversation = self.conversation(name)?;
        let upto = self.seq;
        // The counter is stored with the mark: a restart never gives again
        // a number at or below a read mark (those messages would count as
        // read).
        let counter = upto.to_le_bytes();
        if let Some(mut c) = self.contacts.get(&conversation).cloned() {
            c.read_upto = upto;
            self.store.transaction(|tx| {
                tx.put(Table::Contacts, conversation.as_bytes(), &c)?;
                tx.put_raw(Table::Meta, b"seq", &counter)
            })?;
            self.contacts.put(c);
        } else if let Some(g) = self.groups.get_mut(&conversation) {
            g.record.read_upto = upto;
            let record = g.record.clone();
            self.store.transaction(|tx| {
                tx.put(Table::Groups, record.id.as_bytes(), &record)?;
                tx.put_raw(Table::Meta, b"seq", &counter)
            })?;
        }
        self.unread.remove(&conversation);
        Ok(serde_json::json!({"conversation": conversation, "unread": 0}))
    }

    fn delete_conversation(&mut self, name: &str) -> Answer {
        let conversation = self.conversation(name)?;
        // Our own queued items stay queued (they are not shown any more).
        let keys: Vec<Vec<u8>> = self
            .store
            .scan::<StoredMessage>(Table::Messages, b"")?
            .into_iter()
            .filter(|(_, m)| m.conversation == conversation)
            .map(|(k, _)| k)
            .collect();
        let deleted = keys.len();
        let seq = self.seq;
        self.store.transaction(|tx| {
            for k in &keys {
                tx.delete(Table::Messages, k)?;
            }
            // The numbers of the deleted messages are never given again.
            tx.put_raw(Table::Meta, b"seq", &seq.to_le_bytes())?;
            Ok(())
        })?;
        self.unread.remove(&conversation);
        Ok(serde_json::json!({"conversation": conversation, "deleted": deleted}))
    }

    // ----- groups -----------------------------------------------------------

    fn group_create(&mut self, name: &str, server: &str) -> Answer {
        if name.len() > cwtch_proto::group::invite::MAX_NAME_LEN {
            return Err(invalid("the group name is longer than 64 bytes"));
        }
        let server = parse_server(server).map_err(invalid)?;
        let mut servers = ServerList::new();
        let _ = servers.push(server);
        let group = Group::generate(&mut self.rng, servers);
        let (record, _) = self.groups.add(group, name, &self.identity);
        self.store
            .put(Table::Groups, record.id.as_bytes(), &record)?;
        for s in &record.servers {
            self.servers.ensure(s, 0);
        }
        self.notify(Event::GroupChanged {
            group: record.id.clone(),
        });
        Ok(json(&GroupCreated {
            id: record.id,
            name: record.name,
            servers: record.servers,
        }))
    }

    /// Invites a contact: the invite travels as a peer message, queued and
    /// retried like a text until acknowledged.
    fn group_invite(&mut self, which: &str, contact: &str, now: Now) -> Answer {
        let gid = self.groups.find(which)?;
        let address = self.contacts.resolve_verified(contact)?;
        if !self.contacts.is_accepted(&address) {
            return Err(invalid(format!("{address} is not an accepted contact")));
        }
        let g = self
            .groups
            .get(&gid)
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "the group is gone"))?;
        let invite = Invite::new(&g.group, &g.record.name, self.identity.public())
            .map_err(|e| invalid(e.to_string()))?;
        let mut buf = vec![0u8; cwtch_proto::group::invite::INVITE_MAX_LEN];
        let n = invite
            .encode(&mut buf)
            .map_err(|e| invalid(e.to_string()))?;
        buf.truncate(n);
        let seq = self.next_seq()?;
        let item = OutItem {
            seq,
            contact: address.clone(),
            id: self.random_u64(),
            body: OutBody::Invite { invite: buf },
        };
        self.store
            .put(Table::Outbox, &outbox_key(&address, item.id), &item)?;
        self.outbox.push(item);
        if let Some(link) = self.links.get(&address).map(|l| l.id) {
            self.send_window(&address, link);
        }
        // Whom to ask for missing messages and tell of moves.
        self.note_member(&gid, &address)?;
        let _ = now;
        Ok(serde_json::json!({"invited": address}))
    }

    /// Remembers `address` as a member of group `gid`.
    pub(super) fn note_member(&mut self, gid: &str, address: &str) -> Result<(), ApiError> {
        let contacts = &self.contacts;
        if self
            .groups
            .note_member(gid, address, self.me.as_str(), |a| contacts.is_accepted(a))
            && let Some(g) = self.groups.get(gid)
        {
            let record = g.record.clone();
            self.store
                .put(Table::Groups, record.id.as_bytes(), &record)?;
        }
        Ok(())
    }

    fn invite_accept(&mut self, which: &str, now: Now) -> Answer {
        let record = self.invites.find(which)?.clone();
        let invite = Invite::decode(&record.invite)
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("a stored invite: {e}")))?;
        let group = invite.group();
        let (joined, new) = self.groups.add(
            group,
            &crate::codec::clean_name(invite.name()),
            &self.identity,
        );
        self.store.transaction(|tx| {
            tx.put(Table::Groups, joined.id.as_bytes(), &joined)?;
            tx.delete(Table::Groups, &records::invite_key(&record.group))?;
            Ok(())
        })?;
        self.invites.remove(&record.group);
        self.note_member(&joined.id, &record.from)?;
        for server in &joined.servers {
            self.servers.ensure(server, 0);
            if new {
                // The group's earlier posts may be behind the cursor of a
                // server we already read for another group: read it again
                // from the start (an invite carries no time). Messages of
                // our other groups come again and are dropped as duplicates.
                self.rewind_server(server, 0, now)?;
            }
        }
        self.notify(Event::GroupChanged {
            group: joined.id.clone(),
        });
        Ok(json(&GroupCreated {
            id: joined.id,
            name: joined.name,
            servers: joined.servers,
        }))
    }

    /// Moves a group to `server`: a signed notice to the old servers and
    /// the new one, dated after the notice we follow, so it takes effect
    /// for us at once.
    fn group_move(&mut self, which: &str, server: &str, now: Now) -> Answer {
        let gid = self.groups.find(which)?;
        let new = parse_server(server).map_err(invalid)?;
        let current = {
            let g = self
                .groups
                .get(&gid)
                .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "the group is gone"))?;
            if g.record.servers == [new.to_string()] {
                return Err(invalid(format!("the group already uses {new}")));
            }
            UnixMicros::from_micros(g.record.moved_at)
        };
        let notice =
            MoveNotice::new(std::slice::from_ref(&new)).map_err(|e| invalid(e.to_string()))?;
        let mut buf = [0u8; MOVE_NOTICE_MAX_LEN];
        let body = notice
            .encode(&mut buf)
            .map_err(|e| invalid(e.to_string()))?
            .to_vec();
        let shown = format!("[moved this group to {new}]");
        let at = own_notice_time(now.unix, current);
        let stored = self.post_message(&gid, MessageKind::MOVE, &body, &shown, &[new], at, now)?;
        // Our own copies, to tell members who missed it.
        let copies: Vec<GroupPost> = self
            .outbox
            .posts_of(&gid)
            .filter(|p| p.group_seq == stored.id)
            .cloned()
            .collect();
        for p in copies {
            self.keep_move(&gid, &p.server, at.as_micros(), &p.blob)?;
        }
        let now_ms = now.unix_ms();
        if let Some(g) = self.groups.get_mut(&gid) {
            // We post the notice first: nothing of the group is on the new
            // server before it, so there is nothing to read again.
            let _ = apply_move(&mut g.record, &notice, at, now_ms);
            let record = g.record.clone();
            self.groups.rebuild(&gid);
            self.store
                .put(Table::Groups, record.id.as_bytes(), &record)?;
            for s in record.servers_to_read(now_ms) {
                self.servers.ensure(&s, 0);
            }
            self.notify(Event::GroupMoved {
                group: gid.clone(),
                servers: record.servers.clone(),
                by: self.me.to_string(),
            });
        }
        tracing::info!("moved a group to another server");
        Ok(json(&self.shown(stored)))
    }

    /// Leaves a group: its secret, keys and messages are forgotten here (the
    /// others keep the group; a member who leaves cannot be removed from
    /// what they already know).
    fn group_leave(&mut self, which: &str, now: Now) -> Answer {
        let gid = self.groups.find(which)?;
        let Some(g) = self.groups.remove(&gid) else {
            return Err(ApiError::new(ErrorCode::NotFound, "the group is gone"));
        };
        let mut keys: Vec<(Table, Vec<u8>)> = self
            .store
            .scan::<StoredMessage>(Table::Messages, b"")?
            .into_iter()
            .filter(|(_, m)| m.conversation == gid)
            .map(|(k, _)| (Table::Messages, k))
            .collect();
        for k in self.store.keys(Table::Blobs)? {
            let tail = |p: &str| {
                k.strip_prefix(p.as_bytes())
                    .is_some_and(|r| r.starts_with(gid.as_bytes()))
            };
            if tail("chain:") || tail("keep:") || tail("move:") {
                keys.push((Table::Blobs, k));
            }
        }
        for (server, owner, seq) in self.outbox.drop_posts_of(&gid) {
            keys.push((Table::Outbox, post_key(&server, &owner, seq)));
        }
        keys.push((Table::Servers, records::adverts_key(&gid)));
        let seq = self.seq;
        self.store.transaction(|tx| {
            for (t, k) in &keys {
                tx.delete(*t, k)?;
            }
            tx.delete(Table::Groups, gid.as_bytes())?;
            // The numbers of the deleted messages are never given again.
            tx.put_raw(Table::Meta, b"seq", &seq.to_le_bytes())?;
            Ok(())
        })?;
        self.recovery.forget(&gid);
        self.adverts.forget(&gid);
        self.unread.remove(&gid);
        self.notify(Event::GroupChanged { group: gid.clone() });
        self.drop_unused_servers(now)?;
        Ok(serde_json::json!({"left": g.record.name, "id": gid}))
    }

    fn group_list(&self, now: Now) -> Vec<crate::model::GroupView> {
        let now_ms = now.unix_ms();
        // One pass over the messages for every group's recovered count.
        let mut recovered: std::collections::HashMap<String, u64> = Default::default();
        let mut pending: std::collections::HashMap<String, u64> = Default::default();
        if let Ok(rows) = self.store.scan::<StoredMessage>(Table::Messages, b"") {
            for (_, m) in rows {
                if !self.groups.contains(&m.conversation) {
                    continue;
                }
                match m.status {
                    Delivery::Recovered => *recovered.entry(m.conversation).or_default() += 1,
                    Delivery::Pending => *pending.entry(m.conversation).or_default() += 1,
                    _ => {}
                }
            }
        }
        self.groups
            .all()
            .filter_map(|(gid, _)| {
                self.groups.list_view(
                    gid,
                    |s| self.servers.status(s),
                    pending.get(gid).copied().unwrap_or(0),
                    recovered.get(gid).copied().unwrap_or(0),
                    self.unread.get(gid).copied().unwrap_or(0),
                    now_ms,
                )
            })
            .collect()
    }

    // ----- mailbox ----------------------------------------------------------

    fn mailbox_create(&mut self, server: &str, revoke_old: bool, now: Now) -> Answer {
        let server = parse_server(server).map_err(invalid)?;
        let old = crate::store::mailbox_of(self.store.raw())?;
        let (record, state) = super::mailbox::MailboxState::create(
            server,
            old,
            revoke_old,
            now.unix_ms(),
            &mut self.rng,
        )
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.0))?;
        self.store.put(Table::Meta, b"mailbox", &record)?;
        for s in state.servers_to_read(now.unix_ms()) {
            self.servers.ensure(&s, 0);
        }
        self.mailbox = Some(state);
        self.drop_unused_servers(now)?;
        Ok(json(&self.identifier(now)))
    }

    /// Seals and queues a first-contact request to `to`'s mailbox, carrying
    /// `first` (already queued for direct delivery under the same id).
    fn post_first_contact(
        &mut self,
        to: &Identifier,
        first: Option<&StoredMessage>,
        now: Now,
    ) -> Result<(), ApiError> {
        let (id, text, sent_at) = match first {
            Some(m) => (m.id, m.text.clone(), UnixMicros::from_millis(m.sent_at)),
            None => (self.random_u64(), String::new(), now.unix),
        };
        let name = self.name.clone();
        let Some(sealed) =
            seal_first_contact(&self.identity, to, &name, id, &text, sent_at, &mut self.rng)
        else {
            return Ok(()); // a plain address: no mailbox
        };
        let (server, blob) = sealed.map_err(invalid)?;
        let owner = format!("{POST_PREFIX}{}", to.owner());
        let post = GroupPost {
            group: owner.clone(),
            group_seq: id,
            server: server.clone(),
            blob,
        };
        self.store
            .put(Table::Outbox, &post_key(&server, &owner, id), &post)?;
        self.servers.ensure(&server, 0);
        self.servers.queue_post(&server, &owner, id, &post.blob);
        self.outbox.push_post(post);
        self.transmit_server(&server, now);
        Ok(())
    }

    // ----- posting to groups --------------------------------------------

    /// Seals one message of `kind` and posts it to each of the group's
    /// servers and to `also`, dated `timestamp`. Stored with `shown` as its
    /// text (server adverts are not stored as messages); pending until a
    /// server stores it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn post_message(
        &mut self,
        gid: &str,
        kind: MessageKind,
        body: &[u8],
        shown: &str,
        also: &[OnionAddress],
        timestamp: UnixMicros,
        now: Now,
    ) -> Result<StoredMessage, ApiError> {
        let seq_local = self.next_seq()?;
        let draft = super::groups::Draft {
            kind,
            body,
            timestamp,
        };
        let sealed = self
            .groups
            .seal(gid, &self.identity, draft, also, &mut self.rng)?;
        let record = self
            .groups
            .get(gid)
            .map(|g| g.record.clone())
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "the group is gone"))?;
        let hidden = kind == MessageKind::ADVERTS;
        let stored = StoredMessage {
            author_name: None,
            seq: seq_local,
            conversation: gid.to_string(),
            id: sealed.seq,
            outgoing: true,
            author: self.me.to_string(),
            text: shown.to_string(),
            sent_at: timestamp.as_millis(),
            status: Delivery::Pending,
            note: None,
        };
        let kept = sealed
            .blobs
            .first()
            .map(|(server, blob)| records::KeptBlob {
                server: server.clone(),
                index: None,
                at: now.unix_ms(),
                blob: self.groups.keep(gid, blob),
            });
        let posts: Vec<GroupPost> = sealed
            .blobs
            .iter()
            .map(|(server, blob)| GroupPost {
                group: gid.to_string(),
                group_seq: sealed.seq,
                server: server.clone(),
                blob: blob.clone(),
            })
            .collect();
        let member = sealed.member;
        self.store.transaction(|tx| {
            tx.put(Table::Groups, record.id.as_bytes(), &record)?;
            if !hidden {
                tx.put(
                    Table::Messages,
                    &records::group_message_key(gid, &member.0, sealed.seq),
                    &stored,
                )?;
            }
            tx.put(
                Table::Blobs,
                &records::chain_key(gid, &member.0, sealed.seq),
                &sealed.chain,
            )?;
            if let Some(kept) = &kept {
                tx.put(
                    Table::Blobs,
                    &records::keep_key(gid, &member.0, sealed.seq),
                    kept,
                )?;
            }
            for p in &posts {
                tx.put(Table::Outbox, &post_key(&p.server, gid, p.group_seq), p)?;
            }
            Ok(())
        })?;
        for p in posts {
            self.servers.ensure(&p.server, 0);
            self.servers
                .queue_post(&p.server, gid, p.group_seq, &p.blob);
            let server = p.server.clone();
            self.outbox.push_post(p);
            self.transmit_server(&server, now);
        }
        if !hidden {
            self.notify_message(&stored);
        }
        Ok(stored)
    }

    /// Keeps the copy of a move notice of time `at` (µs) sealed for
    /// `server`, unless we hold a newer notice for that server.
    pub(super) fn keep_move(
        &self,
        gid: &str,
        server: &str,
        at: u64,
        blob: &[u8],
    ) -> Result<(), ApiError> {
        let k = records::move_key(gid, server);
        let older = self
            .store
            .get::<records::KeptMove>(Table::Blobs, &k)?
            .is_none_or(|old| old.at <= at);
        if older {
            self.store.put(
                Table::Blobs,
                &k,
                &records::KeptMove {
                    at,
                    blob: blob.to_vec(),
                },
            )?;
        }
        Ok(())
    }
}

/// An outgoing item as its peer message.
pub(super) fn encode_out(item: &OutItem) -> Vec<u8> {
    match &item.body {
        OutBody::Text { text, sent_at } => encode_peer(&PeerMessage::Text {
            id: item.id,
            sent_at: *sent_at,
            text,
        }),
        OutBody::Invite { invite } => encode_peer(&PeerMessage::GroupInvite {
            id: item.id,
            invite,
        }),
    }
}

/// Hex of a group id, for callers outside the groups room.
pub(super) fn gid_of(id: &[u8]) -> String {
    hex::encode(id)
}
