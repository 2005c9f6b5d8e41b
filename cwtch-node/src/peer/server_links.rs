//! The router's flows on servers' connections: the client's events, what
//! a blob is for (a group, our mailbox, or nobody), taking a group message
//! in, and what servers and members tell the directory.

use cwtch_proto::group::moving::{NoticeVerdict, judge_notice};
use cwtch_proto::group::{GroupAdverts, Ingested, MessageKind, MoveNotice, SEALED_BLOB_LEN};
use cwtch_proto::peer::requests::RequestOrigin;
use cwtch_proto::server::client::{ANSWER_TIMEOUT, ClientError, ClientEvent, STALL_TIMEOUT};
use cwtch_proto::time::MAX_CLOCK_SKEW;
use cwtch_proto::{OnionAddress, UnixMicros};

use super::directory::Learned;
use super::groups::moving::apply_move;
use super::{LinkEvent, LinkId, Now, Peer};
use crate::control::api::Event;
use crate::limits::{DropReason, log_drop};
use crate::model::{ConnState, Contact, ContactState, Delivery, StoredMessage};
use crate::profile_store::Table;
use crate::store::records::{self, KeptBlob, Source, cursor_key, message_key, post_key};

impl Peer {
    pub(super) fn server_link(&mut self, link: LinkId, event: LinkEvent, now: Now) {
        match event {
            LinkEvent::Up { .. } => {
                if let Some(server) = self.servers.on_up(link, &mut self.rng) {
                    self.notify_connection("server", &server);
                    self.transmit_server(&server, now);
                } else {
                    self.close(link);
                }
            }
            LinkEvent::Message(bytes) => {
                let Some(server) = self.servers.server_of(link).map(str::to_string) else {
                    return;
                };
                if let Some(Err(e)) = self.servers.handle_message(link, &bytes, now.mono) {
                    crate::log_throttled!(kind = e; "server reply refused: {e:?}");
                    if matches!(
                        e,
                        ClientError::Unexpected | ClientError::UnsupportedVersion(_)
                    ) {
                        // A server that breaks the protocol: closed, and
                        // counted as its failure (SPEC.md section 8.5). A
                        // reply we cannot read (a newer server's code, say)
                        // is only dropped: if it was an answer, the answer
                        // deadline judges.
                        self.give_up_on(&server, format!("{e}"));
                    }
                }
                for event in self.servers.events(&server) {
                    self.client_event(&server, event, now);
                }
                self.transmit_server(&server, now);
            }
            LinkEvent::Down(end) => {
                if let Some((server, failed)) =
                    self.servers.on_down(link, &end, now.mono, &mut self.rng)
                {
                    if failed {
                        let e = self.directory.note_failed(&server, now.unix_secs()).clone();
                        self.save_entry(&e);
                    }
                    self.notify_connection("server", &server);
                }
            }
        }
    }

    /// Time passed for the servers' clients: posts due for a retry go out,
    /// and a server that left a request unanswered too long is given up on.
    pub(super) fn server_timeouts(&mut self, now: Now) {
        for server in self.servers.handle_timeout(now.mono) {
            for event in self.servers.events(&server) {
                self.client_event(&server, event, now);
            }
            self.transmit_server(&server, now);
        }
    }

    /// Closes `server`'s connection for the server's fault (`why`, shown
    /// and logged); its end counts as a failure of the server.
    fn give_up_on(&mut self, server: &str, why: String) {
        tracing::warn!(server, "giving up on a server's connection ({why})");
        if let Some(link) = self.servers.give_up(server, why) {
            self.close(link);
        }
        self.notify_connection("server", server);
    }

    /// Sends what `server`'s client wants sent now.
    pub(super) fn transmit_server(&mut self, server: &str, now: Now) {
        if let Some((link, msgs)) = self.servers.transmit(server, now.mono) {
            for m in msgs {
                self.send(link, m);
            }
        }
    }

    /// Hands `server`'s client the waiting posts, as many as it takes.
    fn feed_posts(&mut self, server: &str, now: Now) {
        let room = self.servers.post_room(server);
        if room == 0 {
            return;
        }
        let posts: Vec<(String, u64, Vec<u8>)> = self
            .outbox
            .posts_for(server)
            .into_iter()
            .filter(|p| !self.servers.post_handed(server, &p.group, p.group_seq))
            .take(room)
            .map(|p| (p.group.clone(), p.group_seq, p.blob.clone()))
            .collect();
        for (owner, seq, blob) in posts {
            self.servers.queue_post(server, &owner, seq, &blob);
        }
        self.transmit_server(server, now);
    }

    fn client_event(&mut self, server: &str, event: ClientEvent, now: Now) {
        tracing::debug!(?event, "server event");
        match event {
            ClientEvent::Connected(_) => {
                self.servers
                    .set_state(server, ConnState::Authenticated, None);
                self.servers.hello(server, now.mono);
                let e = self
                    .directory
                    .note_connected(server, now.unix_secs())
                    .clone();
                self.save_entry(&e);
                self.servers.request_advert(server);
                self.feed_posts(server, now);
                self.notify_connection("server", server);
            }
            ClientEvent::Synced { .. } => {
                self.servers.set_state(server, ConnState::Synced, None);
                self.notify_connection("server", server);
            }
            ClientEvent::Advert(advert) => {
                if let Ok(address) = OnionAddress::parse(server) {
                    self.take_advert(&advert, Some(&address), Source::OwnUse, None, now);
                }
            }
            ClientEvent::Posted { post, .. } => {
                let Some((owner, seq)) = self.servers.take_post(server, post) else {
                    return;
                };
                let _ = self
                    .store
                    .delete(Table::Outbox, &post_key(server, &owner, seq));
                self.outbox.post_done(server, &owner, seq);
                if let Some(g) = self.groups.get(&owner) {
                    let member = g.group.id().member_id(&self.identity.public());
                    let key = records::group_message_key(&owner, &member.0, seq);
                    if let Ok(Some(mut m)) = self.store.get::<StoredMessage>(Table::Messages, &key)
                        && m.status != Delivery::Delivered
                    {
                        m.status = Delivery::Delivered;
                        if self.store.put(Table::Messages, &key, &m).is_ok() {
                            self.notify_message(&m);
                        }
                    }
                }
                self.feed_posts(server, now);
            }
            ClientEvent::PostRefused {
                post,
                reason,
                retry_at,
            } => {
                crate::log_throttled!(kind = reason; "server refused a post: {reason:?}");
                self.servers.set_error(
                    server,
                    match retry_at {
                        Some(_) => format!(
                            "refused a post for now ({}); posting it again",
                            describe_refusal(reason)
                        ),
                        None => format!("refused a post ({})", describe_refusal(reason)),
                    },
                );
                if retry_at.is_none() {
                    // Dropped by the client: it stays in the outgoing queue
                    // and goes out again on the next connection, never
                    // again on this one.
                    self.servers.refuse_post(server, post);
                }
            }
            ClientEvent::PowTooHard { bits } => self.servers.set_error(
                server,
                format!(
                    "demands {bits} bits of proof of work per post, more than we pay: posts wait"
                ),
            ),
            ClientEvent::Blob { index, blob, .. } => {
                self.on_blob(server, index, &blob, now);
                if self.servers.advance_cursor(server, index) {
                    let _ = self.store.put_raw(
                        Table::Servers,
                        &cursor_key(server),
                        &index.to_le_bytes(),
                    );
                }
            }
            ClientEvent::HeadBehindCursor { cursor, head } => {
                tracing::warn!(
                    cursor,
                    head,
                    "a server's log is shorter than what we read from it: reading it from its head"
                );
                self.servers.set_cursor(server, head);
                self.servers.set_error(
                    server,
                    format!(
                        "its log ends at {head}, before the {cursor} entries we read from it (restored from a backup, or lying)"
                    ),
                );
                let _ =
                    self.store
                        .put_raw(Table::Servers, &cursor_key(server), &head.to_le_bytes());
            }
            ClientEvent::Withheld { index, count } => {
                tracing::warn!(
                    index,
                    count,
                    "a server acknowledged our post and then served past it without it"
                );
                self.moves
                    .note_withheld(server, u64::from(count), now.unix_ms());
                let e = self.directory.note_lost(server, u64::from(count)).clone();
                self.save_entry(&e);
                self.servers.set_error(
                    server,
                    format!(
                        "withheld {count} of our acknowledged post(s) (first at index {index})"
                    ),
                );
            }
            ClientEvent::Expired { index, count } => {
                // Pruned under the retention the server states: not held
                // against it (no score, no move).
                tracing::info!(
                    index,
                    count,
                    "a server pruned our acknowledged post(s) under its stated retention"
                );
            }
            ClientEvent::Skipped { after, before } => {
                self.servers.note_skipped(server, after, before);
            }
            ClientEvent::Unanswered { request } => {
                let what = match request {
                    None => "its hello".to_string(),
                    Some(kind) => format!("a request ({kind:?})"),
                };
                let secs = ANSWER_TIMEOUT.as_secs();
                self.give_up_on(server, format!("did not answer {what} in {secs} s"));
            }
            ClientEvent::Stalled => {
                let mins = STALL_TIMEOUT.as_secs() / 60;
                self.give_up_on(
                    server,
                    format!("stored none of our posts in {mins} minutes"),
                );
            }
            ClientEvent::Closing(reason) => {
                tracing::debug!(server, ?reason, "the server closes the connection");
                if let Some(link) = self.servers.closing(server) {
                    self.close(link);
                }
            }
            ClientEvent::Refused(r) => {
                crate::log_throttled!(kind = r.reason; "server refused a request: {r:?}");
                self.servers
                    .set_error(server, format!("refused: {}", describe_refusal(r.reason)));
            }
            _ => {}
        }
    }

    /// A blob from a server: a group's (one tag check per group reading the
    /// server), our mailbox's, or nobody's.
    fn on_blob(&mut self, server: &str, _index: u64, blob: &[u8; SEALED_BLOB_LEN], now: Now) {
        let Ok(server_addr) = crate::codec::parse_server(server) else {
            return;
        };
        match self.groups.detect(server, blob, now.unix_ms()) {
            Some(gid) => {
                let _ = self.accept_blob(&gid, &server_addr, Some(_index), blob, now);
            }
            None => self.mailbox_blob(server, blob, now),
        }
    }

    /// Opens a blob of group `gid` sealed for `server` (from that server, or
    /// from a member answering a recovery request: verified alike), feeds
    /// the gap tracker, judges and follows a move notice, stores and shows
    /// the message. `Some(true)` when it is new.
    pub(super) fn accept_blob(
        &mut self,
        gid: &str,
        server: &OnionAddress,
        index: Option<u64>,
        blob: &[u8; SEALED_BLOB_LEN],
        now: Now,
    ) -> Option<bool> {
        let opened = match self.groups.open(gid, server, blob)? {
            Ok(m) => m,
            Err(e) => {
                crate::log_throttled!(kind = e; "a blob with our tag failed to open: {e}");
                return Some(false);
            }
        };
        let moved_at = self.groups.get(gid)?.record.moved_at;
        // A move notice's time is a claim: judged against our clock and the
        // notice the group follows now.
        let verdict = (opened.kind == MessageKind::MOVE).then(|| {
            judge_notice(
                opened.timestamp,
                UnixMicros::from_micros(moved_at),
                now.unix,
            )
        });
        match verdict {
            // Kept per server, ours too, to tell members who missed it; a
            // notice from the future is never kept nor passed on.
            Some(NoticeVerdict::Follow { at }) => {
                let _ = self.keep_move(gid, &server.to_string(), at.as_micros(), blob);
            }
            Some(NoticeVerdict::Older) => {
                let at = opened
                    .timestamp
                    .clamp_to(now.unix, MAX_CLOCK_SKEW)
                    .as_micros();
                let _ = self.keep_move(gid, &server.to_string(), at, blob);
            }
            _ => {}
        }
        let tracked = self.groups.track(gid, &opened, &self.identity)?;
        for (text, closed) in tracked.reports {
            self.notify(Event::Gap {
                group: gid.to_string(),
                text,
                closed,
            });
        }
        let count = self
            .groups
            .get(gid)
            .map_or(0, |g| g.tracker.missing_count());
        self.recovery.handle_gaps(gid, count, now.mono);
        if matches!(tracked.ingested, Ok(Ingested::Duplicate)) {
            return Some(false);
        }
        let recovered = matches!(tracked.ingested, Ok(Ingested::Recovered));
        let key = records::group_message_key(gid, &opened.member.0, opened.seq);
        if matches!(self.store.exists(Table::Messages, &key), Ok(true)) {
            return Some(false); // ours, or already stored (posted on two servers)
        }
        let chain_key = records::chain_key(gid, &opened.member.0, opened.seq);
        if opened.kind == MessageKind::ADVERTS
            && matches!(self.store.exists(Table::Blobs, &chain_key), Ok(true))
        {
            return Some(false); // its chain record says we had it
        }
        let sender = opened.sender.address().to_string();
        // Shown and ordered by the author's time, but never later than our
        // clock plus the skew.
        let timestamp = opened
            .timestamp
            .clamp_to(now.unix, MAX_CLOCK_SKEW)
            .as_micros();
        let now_ms = now.unix_ms();
        let mut added = Vec::new();
        let mut moved_to = None;
        let text = if opened.kind == MessageKind::MOVE {
            match (MoveNotice::decode(&opened.body), verdict) {
                (Ok(notice), Some(verdict)) => {
                    let names = notice
                        .servers()
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ");
                    match verdict {
                        NoticeVerdict::Follow { at } => {
                            if let Some(g) = self.groups.get_mut(gid) {
                                added = apply_move(&mut g.record, &notice, at, now_ms);
                                moved_to = Some(g.record.servers.clone());
                            }
                            self.groups.rebuild(gid);
                            format!("[moved this group to {names}]")
                        }
                        NoticeVerdict::Older => format!(
                            "[a move to {names}, older than the move the group follows: not followed]"
                        ),
                        NoticeVerdict::FromTheFuture(e) => format!(
                            "[a move to {names} dated {} s beyond our clock: not followed (a wrong clock, or a member trying to pin the group)]",
                            e.by.as_secs()
                        ),
                    }
                }
                (Err(e), _) => format!("[a move notice that could not be read: {e}]"),
                (Ok(_), None) => String::new(),
            }
        } else {
            opened.text().unwrap_or("").to_string()
        };
        let adverts = (opened.kind == MessageKind::ADVERTS).then(|| opened.body.clone());
        let contacts = &self.contacts;
        if sender != self.me.as_str() {
            self.groups
                .note_member(gid, &sender, self.me.as_str(), |a| contacts.is_accepted(a));
        }
        let record = self.groups.get(gid)?.record.clone();
        let Ok(seq_local) = self.next_seq() else {
            return Some(false);
        };
        let m = StoredMessage {
            author_name: None,
            seq: seq_local,
            conversation: gid.to_string(),
            id: opened.seq,
            outgoing: false,
            author: sender.clone(),
            text,
            sent_at: timestamp / 1000,
            status: if recovered {
                Delivery::Recovered
            } else {
                Delivery::Received
            },
            note: None,
        };
        let kept = KeptBlob {
            server: server.to_string(),
            index,
            at: now_ms,
            blob: self.groups.keep(gid, blob),
        };
        let chain = opened.chain();
        let keep_key = records::keep_key(gid, &opened.member.0, opened.seq);
        let stored = self.store.transaction(|tx| {
            if adverts.is_none() {
                tx.put(Table::Messages, &key, &m)?;
            }
            tx.put(Table::Blobs, &chain_key, &chain)?;
            tx.put(Table::Blobs, &keep_key, &kept)?;
            tx.put(Table::Groups, record.id.as_bytes(), &record)?;
            Ok(())
        });
        if stored.is_err() {
            return Some(false);
        }
        for s in record.servers_to_read(now_ms) {
            self.servers.ensure(&s, 0);
        }
        for s in &added {
            // Posts made there before we followed may be behind its cursor.
            let _ = self.rewind_server(s, 0, now);
        }
        if let Some(servers) = moved_to {
            self.notify(Event::GroupMoved {
                group: gid.to_string(),
                servers,
                by: sender.clone(),
            });
        }
        match adverts {
            Some(body) => self.group_adverts_received(gid, &sender, &body, now),
            None => {
                self.note_unread(gid);
                self.notify_message(&m);
            }
        }
        Some(true)
    }

    /// Reads `server` again from index `from` (the next connection starts
    /// there; a live one is closed). Every blob is checked as always: the
    /// gap tracker and the stored messages drop what we already hold.
    pub(super) fn rewind_server(
        &mut self,
        server: &str,
        from: u64,
        now: Now,
    ) -> Result<(), crate::control::api::ApiError> {
        let (moved, close) = self.servers.rewind(server, from, now.mono);
        if moved {
            self.store
                .put_raw(Table::Servers, &cursor_key(server), &from.to_le_bytes())?;
        }
        if let Some(link) = close {
            self.close(link);
        }
        Ok(())
    }

    /// A blob no group claimed: is it a request to our mailbox? One tag
    /// check; then open, verify, and turn it into a contact request with
    /// its first message, within the same limits as strangers online.
    fn mailbox_blob(&mut self, server: &str, blob: &[u8; SEALED_BLOB_LEN], now: Now) {
        let Some(mb) = &self.mailbox else { return };
        let req = match mb.open(&self.identity, server, blob, now.unix_ms()) {
            None => return, // not ours: it cost one tag check
            Some(Err(e)) => {
                crate::log_throttled!("a blob with our mailbox tag failed to open: {e}");
                return;
            }
            Some(Ok(r)) => r,
        };
        let sender = req.sender.address().to_string();
        if sender == self.me.as_str() {
            return;
        }
        match self.contacts.state(&sender) {
            Some(ContactState::Blocked) => return,
            Some(_) => {}
            None => {
                // The same limits as a stranger online, and never more than
                // a share of them: a flood of sealed requests cannot lock
                // online strangers out.
                if !self.contacts.room_for(RequestOrigin::Mailbox) {
                    log_drop(DropReason::TooManyContactRequests);
                    return;
                }
                let mut c = Contact::new(&sender, ContactState::Request);
                c.name = crate::codec::clean_name(&req.name);
                c.from_mailbox = true;
                if let Err(e) = self.store.put(Table::Contacts, sender.as_bytes(), &c) {
                    tracing::warn!("cannot store a contact request: {e}");
                    return;
                }
                self.contacts.put(c);
                let entry = self.contact_entry(&sender);
                self.notify(Event::ContactRequest {
                    contact: super::json(&entry),
                });
            }
        }
        if req.text.is_empty() {
            return;
        }
        // Stored under the sender's message id: the same message delivered
        // later over a peer link is a duplicate (acked, not shown twice),
        // and so is a request replayed onto the server.
        let key = message_key(&sender, false, req.id);
        if !matches!(self.store.exists(Table::Messages, &key), Ok(false)) {
            return;
        }
        let request = self.contacts.state(&sender) == Some(ContactState::Request);
        if request && !self.contacts.request_text_allowed(&sender) {
            log_drop(DropReason::TooManyRequestTexts);
            return;
        }
        let Ok(seq) = self.next_seq() else {
            return;
        };
        let m = StoredMessage {
            author_name: None,
            seq,
            conversation: sender.clone(),
            id: req.id,
            outgoing: false,
            author: sender.clone(),
            text: req.text,
            sent_at: req.timestamp.clamp_to(now.unix, MAX_CLOCK_SKEW).as_millis(),
            status: Delivery::Received,
            note: None,
        };
        if self.store.put(Table::Messages, &key, &m).is_ok() {
            self.contacts.note_request_text(&sender);
            self.note_unread(&sender);
            self.notify_message(&m);
        }
    }

    // ----- the directory ----------------------------------------------------

    pub(super) fn save_entry(&mut self, e: &records::DirectoryEntry) {
        self.wall_dirty = true;
        if let Err(err) = self
            .store
            .put(Table::Servers, &records::directory_key(&e.address), e)
        {
            tracing::warn!("cannot store the server directory: {err}");
        }
    }

    /// Takes in an advert (verified, valid, and with `expected` of that
    /// server); a server new to us is passed on to the other contacts
    /// online now.
    pub(super) fn take_advert(
        &mut self,
        bytes: &[u8],
        expected: Option<&OnionAddress>,
        source: Source,
        from: Option<&str>,
        now: Now,
    ) {
        let (learned, address, evicted) =
            match self
                .directory
                .learn(bytes, expected, source, now.unix_secs())
            {
                Ok(r) => r,
                Err(e) => {
                    crate::log_throttled!(kind = e; "ignoring a server advert: {e}");
                    return;
                }
            };
        if let Some(gone) = evicted {
            let _ = self
                .store
                .delete(Table::Servers, &records::directory_key(&gone));
        }
        if learned == Learned::Nothing {
            return;
        }
        if let Some(e) = self.directory.get(&address).cloned() {
            self.save_entry(&e);
        }
        if learned == Learned::New {
            let msg =
                super::encode_peer(&cwtch_proto::peer::PeerMessage::ServerAdvert { advert: bytes });
            let to: Vec<LinkId> = self
                .links
                .linked()
                .filter(|(a, _)| self.contacts.is_accepted(a) && Some(a.as_str()) != from)
                .map(|(_, l)| l.id)
                .collect();
            for link in to {
                self.send(link, msg.clone());
            }
        }
    }

    /// A member's advert message in group `gid`: each advert is verified and
    /// taken into the directory with the group and the member as source.
    fn group_adverts_received(&mut self, gid: &str, member: &str, body: &[u8], now: Now) {
        let list = match GroupAdverts::decode(body) {
            Ok(l) => l,
            Err(e) => {
                crate::log_throttled!(kind = e; "ignoring server adverts from a group member: {e}");
                return;
            }
        };
        let mut shared = None;
        for (raw, advert) in list.iter() {
            shared = Some(
                self.adverts
                    .heard(gid, &advert.server.address().to_string()),
            );
            let source = Source::Group {
                group: gid.to_string(),
                member: member.to_string(),
            };
            self.take_advert(raw, None, source, None, now);
        }
        if let Some(s) = shared {
            let _ = self
                .store
                .put(Table::Servers, &records::adverts_key(gid), &s);
        }
    }
}

/// Why a server refused, in plain words (never a debug form: this is shown
/// in `status` and `group list`).
pub fn describe_refusal(reason: cwtch_proto::server::RefusalReason) -> String {
    use cwtch_proto::server::RefusalReason as R;
    match reason {
        R::Full => "the server is full".into(),
        R::RateLimited { retry_after_ms } => {
            format!("too many posts: the server asks to wait {retry_after_ms} ms")
        }
        R::Malformed => "the server did not understand a request".into(),
        R::TooManySubscriptions => "the server takes no more readers".into(),
        R::PowMissing => "the server asks for proof of work".into(),
        R::PowWrong => "the proof of work was not enough".into(),
        R::WrongBlobSize { found } => format!("a post of the wrong size ({found} bytes)"),
        R::Unavailable => "the server's storage failed; it asks to try later".into(),
        _ => "the server refused".into(),
    }
}
