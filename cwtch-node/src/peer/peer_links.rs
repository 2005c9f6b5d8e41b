//! The router's flows on contacts' links: who is let in, what is said when
//! a link comes up, and what each peer message does.

use cwtch_proto::group::control::WANTED_MAX_LEN;
use cwtch_proto::group::{MessageKind, MissingRange, ResendWanted, SEALED_BLOB_LEN};
use cwtch_proto::peer::session::admit;
use cwtch_proto::peer::{Incoming, PeerEvent, PeerMessage, PeerRefusal, PeerSessionError};
use cwtch_proto::time::MAX_CLOCK_SKEW;
use cwtch_proto::{ClaimedTime, OnionAddress, PublicIdentity};

use super::commands::encode_out;
use super::links::Up;
use super::{Kind, LinkEvent, LinkId, Now, Peer, encode_peer};
use crate::codec::clean_name;
use crate::control::api::Event;
use crate::limits::{DropReason, log_drop};
use crate::model::{Contact, ContactState, Delivery, StoredMessage};
use crate::profile_store::Table;
use crate::store::records::{self, KeptBlob, KeptMove, message_key, outbox_key};

impl Peer {
    /// A peer that authenticated at the handshake of an inbound
    /// connection: whether to let it in (a blocked peer or, past the
    /// request limit, a stranger is refused), and the link's id if so.
    pub fn handle_admit(&mut self, remote: &PublicIdentity) -> Option<LinkId> {
        let address = remote.address().to_string();
        match admit(self.contacts.standing(&address)) {
            Ok(()) => {
                let link = self.new_link(Kind::Peer);
                self.links.admit(&address, link);
                Some(link)
            }
            Err(PeerRefusal::TooManyRequests) => {
                log_drop(DropReason::TooManyContactRequests);
                None
            }
            Err(PeerRefusal::Blocked) => None,
        }
    }

    /// What a link reports (a contact's, or a server's).
    pub fn handle_link(&mut self, link: LinkId, event: LinkEvent, now: Now) {
        match self.kinds.get(&link).copied() {
            Some(Kind::Peer) => self.peer_link(link, event, now),
            Some(Kind::Server) => self.server_link(link, event, now),
            None => {
                if !matches!(event, LinkEvent::Down(_)) {
                    self.close(link);
                }
            }
        }
        // A link gone from every room: its kind is forgotten.
        if !self.links.knows(link) && self.servers.server_of(link).is_none() {
            self.kinds.remove(&link);
        }
        self.housekeeping(now);
    }

    fn peer_link(&mut self, link: LinkId, event: LinkEvent, now: Now) {
        match event {
            LinkEvent::Up { remote } => {
                let Some(contact) = self.links.contact_of(link).map(str::to_string) else {
                    self.close(link);
                    return;
                };
                // A dialed link must be the contact we dialed.
                if remote.is_some_and(|r| r.address().to_string() != contact) {
                    self.close(link);
                    return;
                }
                let standing = self.contacts.standing(&contact);
                match self.links.on_up(link, &self.me, standing, now.mono) {
                    Up::Kept { replaced } => {
                        if let Some(old) = replaced {
                            self.close(old);
                        }
                        self.notify_connection("contact", &contact);
                        self.link_actions(&contact, link);
                    }
                    Up::Dropped | Up::Unknown => self.close(link),
                }
            }
            LinkEvent::Message(bytes) => {
                let Some(contact) = self.links.contact_of(link).map(str::to_string) else {
                    return;
                };
                self.peer_message(&contact, link, &bytes, now);
            }
            LinkEvent::Down(end) => {
                if let Some(contact) = self.links.on_down(link, &end, now.mono, &mut self.rng) {
                    self.notify_connection("contact", &contact);
                }
            }
        }
    }

    /// Sends `contact`'s outbox items not sent on `link` yet, as far as
    /// its window lets ([`super::links::SendWindow`]).
    pub(super) fn send_window(&mut self, contact: &str, link: LinkId) {
        let Some(l) = self.links.established(contact, link) else {
            return;
        };
        let items = self.outbox.for_contact(contact);
        let out: Vec<Vec<u8>> = l
            .window
            .take(items.into_iter().map(|i| (i.seq, i)))
            .into_iter()
            .map(encode_out)
            .collect();
        for msg in out {
            self.send(link, msg);
        }
    }

    /// Carries out what the session of `contact`'s link asks: greets (our
    /// name, the outgoing queue in order, adverts, moves), records a
    /// request, or closes the link.
    pub(super) fn link_actions(&mut self, contact: &str, link: LinkId) {
        while let Some(action) = self
            .links
            .established(contact, link)
            .and_then(|l| l.session.poll_event())
        {
            match action {
                PeerEvent::Greet => {
                    // Adverts and move notices wait for the contact's own
                    // Hello: until it has accepted us it ignores them.
                    self.send(link, encode_peer(&PeerMessage::Hello { name: &self.name }));
                    self.send_window(contact, link);
                }
                PeerEvent::RecordRequest => {
                    // An unknown peer that authenticated: a contact request.
                    let c = Contact::new(contact, ContactState::Request);
                    if let Err(e) = self.store.put(Table::Contacts, contact.as_bytes(), &c) {
                        tracing::warn!("cannot store a contact request: {e}");
                    }
                    self.contacts.put(c);
                    let entry = self.contact_entry(contact);
                    self.notify(Event::ContactRequest {
                        contact: super::json(&entry),
                    });
                }
                PeerEvent::Close(why) => {
                    if why == PeerRefusal::TooManyRequests {
                        log_drop(DropReason::TooManyContactRequests);
                    }
                    if let Some(id) = self.links.drop_link(contact) {
                        self.close(id);
                    }
                    self.notify_connection("contact", contact);
                    return;
                }
            }
        }
    }

    fn peer_message(&mut self, remote: &str, link: LinkId, bytes: &[u8], now: Now) {
        // Only the link the session belongs to (not one closing after a
        // tie-break or a block).
        let msg = match self.links.established(remote, link) {
            Some(l) => match l.session.handle_message(bytes) {
                Ok(m) => m,
                Err(e) => {
                    if matches!(e, PeerSessionError::NotAllowed { .. }) {
                        l.refused_something = true;
                    }
                    crate::log_throttled!(kind = e; "ignoring a message from a peer: {e}");
                    return;
                }
            },
            None => return,
        };
        match msg {
            Incoming::Hello { name } => {
                // An accepted contact greets us once it has accepted us too
                // (at once, or when its user accepts our request while the
                // link is up): now it acts on adverts and move notices.
                if self.contacts.is_accepted(remote) {
                    let mut out = Vec::new();
                    for advert in self.directory.to_share(now.unix_secs()) {
                        out.push(encode_peer(&PeerMessage::ServerAdvert { advert: &advert }));
                    }
                    out.extend(self.moves_to_share(remote, now));
                    for msg in out {
                        self.send(link, msg);
                    }
                }
                // Also when we hold it as a request: the window is then wide
                // once we accept it.
                if let Some(l) = self.links.established(remote, link) {
                    l.window.greeted();
                }
                self.send_window(remote, link);
                let name = clean_name(name);
                if let Some(mut c) = self.contacts.get(remote).cloned()
                    && c.name != name
                {
                    c.name = name;
                    if self
                        .store
                        .put(Table::Contacts, remote.as_bytes(), &c)
                        .is_ok()
                    {
                        self.contacts.put(c);
                        self.notify_contact(remote);
                    }
                }
            }
            Incoming::Text {
                id,
                sent_at,
                text,
                ack,
            } => {
                let key = message_key(remote, false, id);
                match self.store.exists(Table::Messages, &key) {
                    Ok(true) => {} // a duplicate (our ack was lost): ack again
                    Ok(false) => {
                        let request = self.contacts.state(remote) == Some(ContactState::Request);
                        if request && !self.contacts.request_text_allowed(remote) {
                            log_drop(DropReason::TooManyRequestTexts);
                            return; // not stored, not acknowledged
                        }
                        let Ok(seq) = self.next_seq() else { return };
                        // The sender's clock is a claim: never shown later
                        // than ours plus the skew.
                        let sent_at = ClaimedTime::from_micros(sent_at.saturating_mul(1000))
                            .clamp_to(now.unix, MAX_CLOCK_SKEW)
                            .as_millis();
                        let m = StoredMessage {
                            author_name: None,
                            seq,
                            conversation: remote.to_string(),
                            id,
                            outgoing: false,
                            author: remote.to_string(),
                            text: text.to_string(),
                            sent_at,
                            status: Delivery::Received,
                            note: None,
                        };
                        if self.store.put(Table::Messages, &key, &m).is_err() {
                            return; // not stored: no ack, the sender retries
                        }
                        self.contacts.note_request_text(remote);
                        self.note_unread(remote);
                        self.notify_message(&m);
                    }
                    Err(_) => return,
                }
                self.send(link, encode_peer(&ack.stored()));
            }
            Incoming::Delivered { id } => {
                let key = message_key(remote, true, id);
                let updated = self
                    .store
                    .get::<StoredMessage>(Table::Messages, &key)
                    .ok()
                    .flatten()
                    .map(|mut m| {
                        m.status = Delivery::Delivered;
                        m
                    });
                let result = self.store.transaction(|tx| {
                    tx.delete(Table::Outbox, &outbox_key(remote, id))?;
                    if let Some(m) = &updated {
                        tx.put(Table::Messages, &key, m)?;
                    }
                    Ok(())
                });
                if result.is_ok() {
                    let item = self.outbox.acked(remote, id);
                    if let (Some(l), Some(item)) = (self.links.established(remote, link), item) {
                        l.window.acked(item.seq);
                    }
                    self.send_window(remote, link);
                    if let Some(m) = updated {
                        self.notify_message(&m);
                    }
                }
            }
            Incoming::GroupInvite { invite, ack, .. } => {
                // Only from accepted contacts (the session refuses it from a
                // request, unacknowledged, so it is offered again once we
                // accept). A refused invite is acknowledged too: sending it
                // again would not change the answer.
                let groups = &self.groups;
                match self
                    .invites
                    .check(remote, invite, |g| groups.contains(g), now.unix_ms())
                {
                    Ok(record) => {
                        let key = records::invite_key(&record.group);
                        if self.store.put(Table::Groups, &key, &record).is_err() {
                            return; // not kept: not acknowledged, offered again
                        }
                        let view = self.invites.insert(record);
                        tracing::info!("a group invite waits for an answer");
                        self.notify(Event::GroupInvite {
                            invite: super::json(&view),
                        });
                    }
                    Err(e) => crate::log_throttled!(kind = e; "refusing a group invite: {e}"),
                }
                self.send(link, encode_peer(&ack.stored()));
            }
            Incoming::ResendRequest { id, wanted } => {
                self.answer_resend(remote, link, id, wanted, now);
            }
            Incoming::ResendBlob { id, blob } => self.resend_blob(remote, id, blob, now),
            Incoming::ServerAdvert { advert } => {
                if self.contacts.is_accepted(remote) {
                    let source = records::Source::Contact {
                        address: remote.to_string(),
                    };
                    self.take_advert(advert, None, source, Some(remote), now);
                }
            }
            Incoming::MoveBlob { blob } => self.move_blob(remote, blob, now),
        }
    }

    // ----- recovery over links ----------------------------------------------

    /// Asks every member of group `gid` we are linked with for the missing
    /// blobs.
    pub(super) fn ask_members(&mut self, gid: &str, missing: &[MissingRange], now: Now) {
        let Some(group_id) = crate::codec::hex::decode_array::<32>(gid) else {
            return;
        };
        let Some(wanted) = ResendWanted::from_missing(&group_id, missing.iter().copied()) else {
            return;
        };
        let mut buf = [0u8; WANTED_MAX_LEN];
        let Ok(bytes) = wanted.encode(&mut buf) else {
            return;
        };
        let bytes = bytes.to_vec();
        let members: Vec<String> = self
            .groups
            .get(gid)
            .map(|g| g.record.members.clone())
            .unwrap_or_default();
        let mut asked = 0;
        for member in members {
            if !self.contacts.is_accepted(&member) {
                continue;
            }
            let (Some(link), Ok(peer)) = (
                self.links.get(&member).map(|l| l.id),
                OnionAddress::parse(&member),
            ) else {
                continue;
            };
            let id = self.random_u64();
            self.recovery.register(id, &peer, &wanted, now.mono);
            self.send(
                link,
                encode_peer(&PeerMessage::ResendRequest { id, wanted: &bytes }),
            );
            asked += 1;
        }
        tracing::info!(asked, "asked members for missing group messages");
    }

    /// A member's request: answer with the blobs we keep, within budget.
    fn answer_resend(&mut self, remote: &str, link: LinkId, id: u64, wanted: &[u8], now: Now) {
        if !self.contacts.is_accepted(remote) {
            return;
        }
        let wanted = match ResendWanted::decode(wanted) {
            Ok(w) => w,
            Err(e) => {
                crate::log_throttled!(kind = e; "a bad recovery request: {e}");
                return;
            }
        };
        let gid = super::commands::gid_of(wanted.group());
        if !self.groups.contains(&gid) {
            return; // not a group we are in: say nothing
        }
        if !self
            .recovery
            .budget(remote, now.mono)
            .take_request(now.mono)
        {
            crate::log_throttled!("a contact asks for recovery too often: ignored");
            return;
        }
        let mut out = Vec::new();
        'ranges: for r in wanted.ranges() {
            for seq in r.first..=r.last {
                if out.len() >= cwtch_proto::group::recovery::MAX_ANSWER_BLOBS
                    || !self.recovery.budget(remote, now.mono).take(now.mono)
                {
                    break 'ranges;
                }
                let key = records::keep_key(&gid, &r.member.0, seq);
                if let Ok(Some(k)) = self.store.get::<KeptBlob>(Table::Blobs, &key)
                    && let Some(blob) = self.groups.unkeep(&gid, &k.blob)
                {
                    out.push(encode_peer(&PeerMessage::ResendBlob { id, blob: &blob }));
                }
            }
        }
        crate::log_throttled!(blobs = out.len(), "answered a recovery request");
        for msg in out {
            self.send(link, msg);
        }
    }

    /// A blob answering one of our requests: taken only from the member
    /// asked, under a live request, if it is a message that request named;
    /// then verified like one from the server it was sealed for. What a
    /// member supplies never counts against a server.
    fn resend_blob(&mut self, remote: &str, id: u64, blob: &[u8], now: Now) {
        let Ok(peer) = OnionAddress::parse(remote) else {
            return;
        };
        let group_id = match self.recovery.expected(id, &peer, now.mono) {
            Ok(g) => g,
            Err(e) => {
                crate::log_throttled!(kind = e; "ignoring a recovery answer: {e}");
                return;
            }
        };
        let gid = super::commands::gid_of(&group_id);
        let Ok(blob) = <&[u8; SEALED_BLOB_LEN]>::try_from(blob) else {
            return;
        };
        let servers = match self.groups.get(&gid) {
            Some(g) => g.record.servers_to_read(now.unix_ms()),
            None => return,
        };
        for server in servers {
            let Ok(addr) = crate::codec::parse_server(&server) else {
                continue;
            };
            let (member, seq) = match self.groups.open(&gid, &addr, blob) {
                Some(Ok(m)) => (m.member, m.seq),
                Some(Err(cwtch_proto::group::OpenError::WrongServer)) => continue,
                Some(Err(e)) => {
                    crate::log_throttled!(kind = e; "a recovery answer failed to open: {e}");
                    return;
                }
                None => return,
            };
            if let Err(e) = self
                .recovery
                .take_answer(id, &peer, &group_id, member, seq, now.mono)
            {
                crate::log_throttled!(kind = e; "ignoring a recovery answer: {e}");
                return;
            }
            if let Some(true) = self.accept_blob(&gid, &addr, None, blob, now) {
                tracing::info!("recovered a missing group message from a member");
            }
            return;
        }
    }

    // ----- moves over links -------------------------------------------------

    /// On a new link with the accepted contact `remote`: the copies of the
    /// latest move notice of each group it is a member of.
    fn moves_to_share(&self, remote: &str, now: Now) -> Vec<Vec<u8>> {
        let now_ms = now.unix_ms();
        let tell_for = cwtch_proto::group::moving::TELL_FOR.as_millis();
        let mut out = Vec::new();
        for (gid, g) in self.groups.all() {
            let moved_ms = g.record.moved_at / 1000;
            if g.record.moved_at == 0
                || now_ms.saturating_sub(moved_ms) > tell_for
                || !g.record.members.iter().any(|m| m == remote)
            {
                continue;
            }
            let mut servers = g.record.servers.clone();
            servers.extend(g.record.previous.iter().map(|p| p.server.clone()));
            let copies: Vec<KeptMove> = servers
                .iter()
                .filter_map(|s| {
                    self.store
                        .get::<KeptMove>(Table::Blobs, &records::move_key(gid, s))
                        .ok()
                        .flatten()
                })
                .collect();
            let latest = copies.iter().map(|c| c.at).max().unwrap_or(0);
            for c in copies.iter().filter(|c| c.at == latest) {
                out.push(encode_peer(&PeerMessage::MoveBlob { blob: &c.blob }));
            }
        }
        out
    }

    /// A move notice from a contact: only from an accepted contact, only a
    /// blob that one of our groups' tags claims, that opens for a server
    /// that group reads, and that is a move notice; then taken exactly like
    /// one from that server.
    fn move_blob(&mut self, remote: &str, blob: &[u8], now: Now) {
        if !self.contacts.is_accepted(remote) {
            return;
        }
        let Ok(blob) = <&[u8; SEALED_BLOB_LEN]>::try_from(blob) else {
            return;
        };
        let now_ms = now.unix_ms();
        let Some((gid, servers)) = self
            .groups
            .all()
            .find(|(_, g)| g.group.keys().detection_key().detect(blob))
            .map(|(id, g)| (id.clone(), g.record.servers_to_read(now_ms)))
        else {
            return; // not for a group of ours
        };
        for server in servers {
            let Ok(addr) = crate::codec::parse_server(&server) else {
                continue;
            };
            match self.groups.open(&gid, &addr, blob) {
                Some(Ok(m)) if m.kind == MessageKind::MOVE => {
                    let _ = self.accept_blob(&gid, &addr, None, blob, now);
                    tracing::info!("a contact told us of a group's move");
                    return;
                }
                Some(Ok(_)) => return, // only move notices travel this way
                Some(Err(cwtch_proto::group::OpenError::WrongServer)) => continue,
                Some(Err(e)) => {
                    crate::log_throttled!(kind = e; "a move notice from a contact failed to open: {e}");
                    return;
                }
                None => return,
            }
        }
    }
}
