//! Offline first contact in the peer daemon (SPEC.md section 12).
//!
//! - The owner side: one optional mailbox (server + key) kept in the
//!   encrypted profile (`Meta`, key `mailbox`); the node keeps a connection
//!   to the mailbox's server like a group's (`st.servers`), and
//!   [`PeerNode::mailbox_blob`] is called for every blob no group claims: a
//!   cheap tag check, then opening, then a contact request with its first
//!   message stored under the sender's message id.
//! - The sender side: `contact add <extended identifier> --message TEXT`
//!   queues the message for direct delivery as always, and also posts one
//!   sealed request to the mailbox's server, kept in the outgoing queue (as
//!   a group post, pseudo-group `mailbox:<address>`) until the server
//!   acknowledges it durably.

use cwtch_proto::group::SEALED_BLOB_LEN;
use cwtch_proto::mailbox::{
    FirstContact, IDENTIFIER_TEXT_MAX_LEN, Identifier, Mailbox, MailboxKey, MailboxKeys,
    seal_request,
};
use cwtch_proto::peer::requests::{RequestOrigin, request_text_allowed};
use cwtch_proto::time::MAX_CLOCK_SKEW;
use cwtch_proto::{Identity, OnionAddress, UnixMicros};
use serde::{Deserialize, Serialize};

use crate::clock;
use crate::groups::{self, GroupPost};
use crate::model::{Contact, ContactState, Delivery, StoredMessage};
use crate::peer::{PeerError, PeerNode, decode, encode, message_key, notify};
use crate::profile_store::{ProfileStore, Table};

/// Where the mailbox lives in the profile's `Meta` table.
const META_KEY: &[u8] = b"mailbox";
/// The pseudo-group prefix of mailbox posts in the outgoing queue.
pub const POST_PREFIX: &str = "mailbox:";

/// How long a mailbox replaced by rotation is still read, so that requests
/// already sent to the old identifier (or sent by people who have not seen
/// the new one yet) are found. `mailbox create --revoke-old` skips it.
pub const RETIRED_GRACE_MILLIS: u64 = cwtch_proto::mailbox::RETIRED_READ_FOR.as_millis();
/// Retired mailboxes kept at once (the newest); older ones are dropped.
pub const MAX_RETIRED: usize = cwtch_proto::mailbox::MAX_RETIRED;

/// The mailbox as stored (inside the encrypted profile).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct MailboxRecord {
    server: String,
    /// The key, hex.
    key: String,
    /// Mailboxes replaced by rotation, still read until their deadline.
    #[serde(default)]
    retired: Vec<RetiredRecord>,
}

/// A mailbox replaced by rotation, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RetiredRecord {
    server: String,
    /// The key, hex.
    key: String,
    /// Read until then (Unix milliseconds).
    until: u64,
}

/// The mailbox in memory.
pub struct MailboxState {
    mailbox: Mailbox,
    keys: MailboxKeys,
    /// Retired mailboxes and the time (Unix ms) until which they are read.
    retired: Vec<(Mailbox, MailboxKeys, u64)>,
}

impl MailboxState {
    /// The server our mailbox is on.
    pub fn server(&self) -> String {
        self.mailbox.server.to_string()
    }

    /// The servers to keep reading at `now_ms` (Unix ms): the mailbox's,
    /// and those of retired mailboxes still in their grace period.
    pub fn servers_to_read(&self, now_ms: u64) -> Vec<String> {
        std::iter::once(&self.mailbox)
            .chain(
                self.retired
                    .iter()
                    .filter(|r| r.2 > now_ms)
                    .map(|(m, _, _)| m),
            )
            .map(|m| m.server.to_string())
            .collect()
    }

    /// The state of a stored record: its mailbox (which must parse) and the
    /// retired ones still live at `now_ms` (one that does not parse is
    /// skipped with a warning: it must not stop the profile from opening).
    fn from_record(record: &MailboxRecord, now_ms: u64) -> Result<Self, PeerError> {
        let mailbox = parse_mailbox(&record.server, &record.key)?;
        let mut retired = Vec::new();
        for r in live_retired(record.retired.clone(), now_ms) {
            match parse_mailbox(&r.server, &r.key) {
                Ok(old) => retired.push((old.clone(), old.key.derive_keys(), r.until)),
                Err(e) => tracing::warn!("skipping a retired mailbox that does not parse: {e}"),
            }
        }
        Ok(MailboxState {
            keys: mailbox.key.derive_keys(),
            mailbox,
            retired,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn parse_mailbox(server: &str, key: &str) -> Result<Mailbox, PeerError> {
    let server = groups::parse_server(server)?;
    let key = unhex32(key).ok_or_else(|| PeerError::Corrupt("mailbox key".into()))?;
    Ok(Mailbox {
        server,
        key: MailboxKey::from_bytes(&key),
    })
}

fn read_record(store: &ProfileStore) -> Result<Option<MailboxRecord>, PeerError> {
    match store.get(Table::Meta, META_KEY)? {
        Some(bytes) => Ok(Some(decode(&bytes, "mailbox")?)),
        None => Ok(None),
    }
}

fn read_mailbox(store: &ProfileStore) -> Result<Option<Mailbox>, PeerError> {
    read_record(store)?
        .map(|r| parse_mailbox(&r.server, &r.key))
        .transpose()
}

/// The retired mailboxes of a record still read at `now` (Unix ms), the
/// newest [`MAX_RETIRED`].
fn live_retired(retired: Vec<RetiredRecord>, now: u64) -> Vec<RetiredRecord> {
    let mut live: Vec<RetiredRecord> = retired.into_iter().filter(|r| r.until > now).collect();
    live.sort_by_key(|r| std::cmp::Reverse(r.until));
    live.truncate(MAX_RETIRED);
    live
}

/// What `identifier` prints: the text to share, and its parts.
pub fn describe(owner: &OnionAddress, mailbox: Option<&Mailbox>) -> serde_json::Value {
    let id = Identifier::new(*owner, mailbox.cloned());
    let mut buf = [0u8; IDENTIFIER_TEXT_MAX_LEN];
    serde_json::json!({
        "identifier": id.to_text(&mut buf),
        "address": owner.to_string(),
        "mailbox_server": mailbox.map(|m| m.server.to_string()),
    })
}

/// The identifier read straight from a profile (no daemon running).
pub fn identifier_from_store(
    store: &ProfileStore,
    identity: &Identity,
) -> Result<serde_json::Value, PeerError> {
    Ok(describe(&identity.address(), read_mailbox(store)?.as_ref()))
}

/// Checks, before anything is stored, that a first message fits a request.
pub fn check_first_contact(
    identifier: &Identifier,
    message: Option<&str>,
) -> Result<(), PeerError> {
    let max = cwtch_proto::mailbox::MAX_TEXT_LEN;
    if identifier.mailbox().is_some() && message.is_some_and(|m| m.len() > max) {
        return Err(PeerError::Invalid(format!(
            "a first message through a mailbox holds at most {max} bytes"
        )));
    }
    Ok(())
}

impl PeerNode {
    pub(crate) fn load_mailbox(&self) -> Result<(), PeerError> {
        if let Some(record) = read_record(&self.store)? {
            let state = MailboxState::from_record(&record, clock::unix_millis())?;
            self.install_mailbox(state);
        }
        Ok(())
    }

    /// Takes the mailbox and its live retired ones in use, keeping a
    /// connection to each one's server.
    fn install_mailbox(&self, state: MailboxState) {
        let servers = state.servers_to_read(clock::unix_millis());
        let cursors: Vec<u64> = servers
            .iter()
            .map(|s| groups::saved_cursor(&self.store, s))
            .collect();
        let mut st = self.state();
        for (server, cursor) in servers.into_iter().zip(cursors) {
            st.servers
                .entry(server)
                .or_insert_with(|| groups::new_server_conn(cursor));
        }
        st.mailbox = Some(state);
    }

    /// Creates (or replaces: rotation) our mailbox on `server` with a fresh
    /// key. The replaced mailbox is still read for
    /// [`RETIRED_GRACE_MILLIS`], so that requests sent to the old
    /// identifier are found; with `revoke_old`, it and every earlier
    /// retired one reach nobody from now on.
    pub fn mailbox_create(
        &self,
        server: &str,
        revoke_old: bool,
    ) -> Result<serde_json::Value, PeerError> {
        let server = groups::parse_server(server)?;
        let key = MailboxKey::generate(&mut clock::rng());
        let now = clock::unix_millis();
        let mut retired = Vec::new();
        if !revoke_old && let Some(old) = read_record(&self.store)? {
            retired = old.retired;
            retired.push(RetiredRecord {
                server: old.server,
                key: old.key,
                until: now.saturating_add(RETIRED_GRACE_MILLIS),
            });
        }
        let record = MailboxRecord {
            server: server.to_string(),
            key: hex(key.to_bytes().as_ref()),
            retired: live_retired(retired, now),
        };
        // Parsed before it is stored: what is stored is what runs.
        let state = MailboxState::from_record(&record, now)?;
        self.store.put(Table::Meta, META_KEY, &encode(&record))?;
        self.install_mailbox(state);
        Ok(self.identifier())
    }

    /// Our identifier: extended when we keep a mailbox.
    /// With a mailbox, also the state of the connection to its server.
    pub fn identifier(&self) -> serde_json::Value {
        let st = self.state();
        let mailbox = st.mailbox.as_ref().map(|m| &m.mailbox);
        let mut value = describe(&self.identity.address(), mailbox);
        if let Some(m) = mailbox
            && let Some(conn) = st.servers.get(&m.server.to_string())
        {
            value["mailbox_connection"] = serde_json::to_value(&conn.status).unwrap_or_default();
        }
        if let Some(m) = &st.mailbox {
            let now = clock::unix_millis();
            value["retired_mailboxes"] = m
                .retired
                .iter()
                .filter(|r| r.2 > now)
                .map(|(old, _, until)| {
                    serde_json::json!({ "server": old.server.to_string(), "read_until_unix_ms": until })
                })
                .collect();
        }
        value
    }

    /// Seals and queues a first-contact request to `to`'s mailbox, carrying
    /// `first` (already queued for direct delivery under the same id).
    pub(crate) fn post_first_contact(
        &self,
        to: &Identifier,
        first: Option<&StoredMessage>,
    ) -> Result<(), PeerError> {
        let Some(mailbox) = to.mailbox() else {
            return Ok(());
        };
        let name = self.name();
        let (id, text, sent_at) = match first {
            Some(m) => (m.id, m.text.as_str(), m.sent_at),
            None => (clock::random_u64(), "", clock::unix_millis()),
        };
        let msg = FirstContact {
            name: name.get(..name.len().min(64)).unwrap_or(""),
            id,
            timestamp: UnixMicros::from_millis(sent_at),
            text,
        };
        let mut blob = vec![0u8; SEALED_BLOB_LEN];
        seal_request(
            &self.identity,
            &to.owner().public_identity(),
            mailbox,
            &msg,
            &mut clock::rng(),
            &mut blob,
        )
        .map_err(|e| PeerError::Invalid(e.to_string()))?;
        let server = mailbox.server.to_string();
        let pseudo = format!("{POST_PREFIX}{}", to.owner());
        let post = GroupPost {
            group: pseudo.clone(),
            group_seq: id,
            server: server.clone(),
            blob: hex(&blob),
        };
        self.store.put(
            Table::Outbox,
            &groups::post_key(&server, &pseudo, id),
            &encode(&post),
        )?;
        let mut st = self.state();
        st.servers
            .entry(server.clone())
            .or_insert_with(|| groups::new_server_conn(0));
        self.post_now(&mut st, &server, &pseudo, id, &blob);
        Ok(())
    }

    /// First-contact requests still waiting for their server's durable
    /// acknowledgement.
    pub fn first_contact_pending(&self) -> usize {
        self.store
            .scan(Table::Outbox)
            .map(|rows| {
                rows.iter()
                    .filter(|(k, _)| {
                        k.starts_with(b"post:")
                            && k.windows(POST_PREFIX.len())
                                .any(|w| w == POST_PREFIX.as_bytes())
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// A blob no group claimed: is it a request to our mailbox? One tag
    /// check; then open, verify, and turn it into a contact request with
    /// its first message.
    pub(crate) fn mailbox_blob(&self, server: &str, blob: &[u8; SEALED_BLOB_LEN]) {
        let mut st = self.state();
        let Some(mb) = &st.mailbox else { return };
        let now = clock::unix_millis();
        // The current mailbox, then the retired ones still read.
        let Some((mailbox, keys)) = std::iter::once((&mb.mailbox, &mb.keys))
            .chain(
                mb.retired
                    .iter()
                    .filter(|r| r.2 > now)
                    .map(|(m, k, _)| (m, k)),
            )
            .find(|(m, k)| m.server.to_string() == server && k.detect(blob))
        else {
            return;
        };
        let mut work = blob.to_vec();
        let req = match keys.open_request(&self.identity, &mailbox.server, &mut work) {
            Ok(r) => r,
            Err(e) => {
                crate::log_throttled!(kind = e; "a blob with our mailbox tag failed to open: {e}");
                return;
            }
        };
        let sender = req.sender.address().to_string();
        if sender == self.address() {
            return;
        }
        let state = st.contacts.get(&sender).map(|c| c.state);
        match state {
            Some(ContactState::Blocked) => return,
            Some(_) => {}
            None => {
                // The same limits as a stranger online, and never more than
                // a share of them: a flood of sealed requests cannot lock
                // online strangers out (SPEC.md section 4, "Contact requests").
                if !crate::peer::pending_requests(&st).room_for(RequestOrigin::Mailbox) {
                    crate::limits::log_drop(crate::limits::DropReason::TooManyContactRequests);
                    return;
                }
                let contact = Contact {
                    address: sender.clone(),
                    name: crate::peer::clean_name(req.name),
                    state: ContactState::Request,
                    from_mailbox: true,
                };
                if let Err(e) =
                    self.store
                        .put(Table::Contacts, sender.as_bytes(), &encode(&contact))
                {
                    tracing::warn!("cannot store contact request: {e}");
                    return;
                }
                st.contacts.insert(sender.clone(), contact);
            }
        }
        if req.text.is_empty() {
            return;
        }
        // Stored under the sender's message id: the same message delivered
        // later over a peer link is a duplicate (acked, not shown twice),
        // and so is a request replayed onto the server.
        let key = message_key(&sender, false, req.id);
        if !matches!(self.store.get(Table::Messages, &key), Ok(None)) {
            return;
        }
        let is_request = st.contacts.get(&sender).map(|c| c.state) == Some(ContactState::Request);
        if is_request && !request_text_allowed(st.request_texts.get(&sender).copied().unwrap_or(0))
        {
            crate::limits::log_drop(crate::limits::DropReason::TooManyRequestTexts);
            return;
        }
        let Ok(seq) = self.next_seq(&mut st) else {
            return;
        };
        let m = StoredMessage {
            seq,
            conversation: sender.clone(),
            id: req.id,
            outgoing: false,
            author: sender,
            text: req.text.to_string(),
            sent_at: req
                .timestamp
                .clamp_to(clock::unix_now(), MAX_CLOCK_SKEW)
                .as_millis(),
            status: Delivery::Received,
            note: None,
        };
        if self.store.put(Table::Messages, &key, &encode(&m)).is_ok() {
            if is_request {
                *st.request_texts.entry(m.author.clone()).or_default() += 1;
            }
            notify(&mut st, &m);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use cwtch_transport_socks::{AnyTransport, DevTransport};

    use super::*;

    fn node(dir: &Path, name: &str) -> Arc<PeerNode> {
        let home = dir.join(name);
        crate::peer::init_profile(&home, name, b"pw").unwrap();
        let (store, identity, name) = crate::peer::open_profile(&home, b"pw").unwrap();
        let transport = AnyTransport::Dev(DevTransport::new(dir.join("dev")).0);
        PeerNode::load(&home, store, identity, name, transport).unwrap()
    }

    fn request(from: &Identity, to: &Identifier, id: u64) -> [u8; SEALED_BLOB_LEN] {
        let mut blob = [0u8; SEALED_BLOB_LEN];
        let first = FirstContact {
            name: "alice",
            id,
            timestamp: UnixMicros::from_secs(1_764_000_000),
            text: "hi bob",
        };
        let owner = to.owner().public_identity();
        let mailbox = to.mailbox().unwrap();
        seal_request(from, &owner, mailbox, &first, &mut clock::rng(), &mut blob).unwrap();
        blob
    }

    #[test]
    fn replayed_request_is_stored_once_and_blocked_or_misplaced_ones_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let bob = node(tmp.path(), "bob");
        let server = Identity::from_seed(&[0x81; 32]).address().to_string();
        let id = bob
            .mailbox_create(&format!("cwtch-server:{server}"), false)
            .unwrap();
        let identifier = Identifier::parse(id["identifier"].as_str().unwrap()).unwrap();
        assert_eq!(identifier.owner().to_string(), bob.address());
        let alice = Identity::from_seed(&[1; 32]);
        let a = alice.address().to_string();

        // The same blob on another server is not looked at.
        let other = Identity::from_seed(&[0x82; 32]).address().to_string();
        bob.mailbox_blob(&other, &request(&alice, &identifier, 9));
        assert!(bob.contacts().is_empty());

        let blob = request(&alice, &identifier, 9);
        bob.mailbox_blob(&server, &blob);
        bob.mailbox_blob(&server, &blob); // replayed by the server
        let contacts = bob.contacts();
        assert_eq!(contacts.len(), 1);
        assert_eq!(contacts[0].0.state, ContactState::Request);
        assert_eq!(contacts[0].0.name, "alice");
        let msgs = bob.messages(&a).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!((msgs[0].id, msgs[0].text.as_str()), (9, "hi bob"));

        // A blocked sender's later requests are dropped.
        bob.contact_block(&a).unwrap();
        bob.mailbox_blob(&server, &request(&alice, &identifier, 10));
        assert_eq!(bob.messages(&a).unwrap().len(), 1);

        // After rotation to another server, the old identifier is still
        // read (the grace period), on its own server only.
        let other_id = bob.mailbox_create(&other, false).unwrap();
        assert_eq!(other_id["retired_mailboxes"][0]["server"], server.as_str());
        let carol = Identity::from_seed(&[3; 32]);
        let c = carol.address().to_string();
        bob.mailbox_blob(&other, &request(&carol, &identifier, 11));
        assert!(bob.messages(&c).unwrap().is_empty(), "wrong server");
        bob.mailbox_blob(&server, &request(&carol, &identifier, 11));
        assert_eq!(bob.messages(&c).unwrap().len(), 1, "grace period");
        // The new identifier works too.
        let new = Identifier::parse(other_id["identifier"].as_str().unwrap()).unwrap();
        bob.mailbox_blob(&other, &request(&carol, &new, 12));
        assert_eq!(bob.messages(&c).unwrap().len(), 2, "new identifier");

        // Revoking: neither earlier identifier reaches bob any more, also
        // after a restart.
        let revoked = bob.mailbox_create(&server, true).unwrap();
        assert_eq!(revoked["retired_mailboxes"], serde_json::json!([]));
        bob.mailbox_blob(&server, &request(&carol, &identifier, 13));
        bob.mailbox_blob(&other, &request(&carol, &new, 14));
        assert_eq!(bob.messages(&c).unwrap().len(), 2, "revoked");
    }

    #[test]
    fn the_server_of_a_retired_mailbox_stays_connected_until_revoked() {
        let tmp = tempfile::tempdir().unwrap();
        let bob = node(tmp.path(), "bob");
        let a = Identity::from_seed(&[0x81; 32]).address().to_string();
        let b = Identity::from_seed(&[0x82; 32]).address().to_string();
        bob.mailbox_create(&a, false).unwrap();
        bob.mailbox_create(&b, false).unwrap();
        // The periodic tick drops servers nothing uses any more.
        bob.moving_tick(clock::now());
        let servers = |bob: &PeerNode| {
            let mut v: Vec<String> = bob.state().servers.keys().cloned().collect();
            v.sort();
            v
        };
        let mut both = vec![a.clone(), b.clone()];
        both.sort();
        assert_eq!(servers(&bob), both, "the retired mailbox is still read");
        bob.mailbox_create(&b, true).unwrap();
        bob.moving_tick(clock::now());
        assert_eq!(servers(&bob), vec![b], "revoked: no longer read");
    }

    #[test]
    fn a_retired_mailbox_that_does_not_parse_is_skipped() {
        let record = MailboxRecord {
            server: Identity::from_seed(&[0x81; 32]).address().to_string(),
            key: "ab".repeat(32),
            retired: vec![
                RetiredRecord {
                    server: "not a server".into(),
                    key: "ab".repeat(32),
                    until: u64::MAX,
                },
                RetiredRecord {
                    server: Identity::from_seed(&[0x82; 32]).address().to_string(),
                    key: "cd".repeat(32),
                    until: u64::MAX,
                },
            ],
        };
        let state = MailboxState::from_record(&record, 0).unwrap();
        assert_eq!(state.retired.len(), 1);
        assert_eq!(state.servers_to_read(0).len(), 2);
        let bad = MailboxRecord {
            key: "zz".into(),
            ..record
        };
        assert!(
            MailboxState::from_record(&bad, 0).is_err(),
            "the current one must parse"
        );
    }

    #[test]
    fn retired_mailboxes_expire_and_are_bounded() {
        let rec = |until| RetiredRecord {
            server: "s".into(),
            key: "k".into(),
            until,
        };
        let live = live_retired((1..=10).map(rec).collect(), 3);
        let untils: Vec<u64> = live.iter().map(|r| r.until).collect();
        assert_eq!(untils, vec![10, 9, 8, 7]);
        assert!(
            live_retired(vec![rec(5)], 5).is_empty(),
            "expired at its deadline"
        );
    }

    #[test]
    fn retired_mailboxes_survive_a_restart_and_old_records_load() {
        let tmp = tempfile::tempdir().unwrap();
        let bob = node(tmp.path(), "bob");
        let server = Identity::from_seed(&[0x81; 32]).address().to_string();
        let first = bob.mailbox_create(&server, false).unwrap();
        let identifier = Identifier::parse(first["identifier"].as_str().unwrap()).unwrap();
        bob.mailbox_create(&server, false).unwrap();
        // A fresh load of the same store (as at a restart).
        bob.state().mailbox = None;
        bob.load_mailbox().unwrap();
        let carol = Identity::from_seed(&[3; 32]);
        bob.mailbox_blob(&server, &request(&carol, &identifier, 1));
        assert_eq!(bob.messages(&carol.address().to_string()).unwrap().len(), 1);
        // A record written before retirement existed (no `retired` field).
        let old = br#"{"server":"SERVER","key":"KEY"}"#;
        let old = String::from_utf8_lossy(old)
            .replace("SERVER", &server)
            .replace("KEY", &"ab".repeat(32));
        bob.store
            .put(Table::Meta, META_KEY, old.as_bytes())
            .unwrap();
        bob.state().mailbox = None;
        bob.load_mailbox().unwrap();
        assert!(bob.state().mailbox.as_ref().unwrap().retired.is_empty());
    }
}
