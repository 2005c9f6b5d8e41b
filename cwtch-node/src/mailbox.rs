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
use cwtch_proto::{Identity, Instant, OnionAddress};
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

/// The mailbox as stored (inside the encrypted profile).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct MailboxRecord {
    server: String,
    /// The key, hex.
    key: String,
}

/// The mailbox in memory.
pub struct MailboxState {
    mailbox: Mailbox,
    keys: MailboxKeys,
}

impl MailboxState {
    /// The server our mailbox is on.
    pub fn server(&self) -> String {
        self.mailbox.server.to_string()
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

fn read_mailbox(store: &ProfileStore) -> Result<Option<Mailbox>, PeerError> {
    let Some(bytes) = store.get(Table::Meta, META_KEY)? else {
        return Ok(None);
    };
    let record: MailboxRecord = decode(&bytes, "mailbox")?;
    let server = groups::parse_server(&record.server)?;
    let key = unhex32(&record.key).ok_or_else(|| PeerError::Corrupt("mailbox key".into()))?;
    Ok(Some(Mailbox {
        server,
        key: MailboxKey::from_bytes(&key),
    }))
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
        if let Some(mailbox) = read_mailbox(&self.store)? {
            self.install_mailbox(mailbox);
        }
        Ok(())
    }

    fn install_mailbox(&self, mailbox: Mailbox) {
        let server = mailbox.server.to_string();
        let cursor = groups::saved_cursor(&self.store, &server);
        let mut st = self.state();
        st.servers
            .entry(server)
            .or_insert_with(|| groups::new_server_conn(cursor));
        st.mailbox = Some(MailboxState {
            keys: mailbox.key.derive_keys(),
            mailbox,
        });
    }

    /// Creates (or replaces: rotation) our mailbox on `server` with a fresh
    /// key. Requests sent to the old identifier are no longer detected.
    pub fn mailbox_create(&self, server: &str) -> Result<serde_json::Value, PeerError> {
        let server = groups::parse_server(server)?;
        let mailbox = Mailbox {
            server,
            key: MailboxKey::generate(&mut clock::rng()),
        };
        let record = MailboxRecord {
            server: server.to_string(),
            key: hex(mailbox.key.to_bytes().as_ref()),
        };
        self.store.put(Table::Meta, META_KEY, &encode(&record))?;
        self.install_mailbox(mailbox);
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
            timestamp: Instant::from_micros(sent_at.saturating_mul(1000)),
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
        self.post_now(&st, &server, &pseudo, id, &blob);
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
        if mb.mailbox.server.to_string() != server || !mb.keys.detect(blob) {
            return;
        }
        let mut work = blob.to_vec();
        let req = match mb
            .keys
            .open_request(&self.identity, &mb.mailbox.server, &mut work)
        {
            Ok(r) => r,
            Err(e) => {
                tracing::info!("a blob with our mailbox tag failed to open: {e}");
                return;
            }
        };
        let sender = req.sender.address().to_string();
        if sender == self.address() {
            return;
        }
        match st.contacts.get(&sender).map(|c| c.state) {
            Some(ContactState::Blocked) => return,
            Some(_) => {}
            None => {
                let contact = Contact {
                    address: sender.clone(),
                    name: req.name.to_string(),
                    state: ContactState::Request,
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
            sent_at: req.timestamp.as_millis(),
            status: Delivery::Received,
            note: None,
        };
        if self.store.put(Table::Messages, &key, &encode(&m)).is_ok() {
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
            timestamp: Instant::from_secs(1_764_000_000),
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
            .mailbox_create(&format!("cwtch-server:{server}"))
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

        // After rotation, the old identifier reaches nobody.
        bob.mailbox_create(&server).unwrap();
        let carol = Identity::from_seed(&[3; 32]);
        bob.mailbox_blob(&server, &request(&carol, &identifier, 11));
        assert!(
            bob.messages(&carol.address().to_string())
                .unwrap()
                .is_empty()
        );
    }
}
