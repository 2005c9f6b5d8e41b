//! Every record the peer keeps in its profile, in one place: the layouts,
//! their keys, and their encoding.
//!
//! Records are postcard (binary) behind a format byte, inside the encrypted
//! profile ([`crate::profile_store`]); sealed blobs are stored as bytes. A
//! record written by an earlier version (JSON, blobs as hex) is still read.
//!
//! | table | key | record |
//! |---|---|---|
//! | `Meta` | `seed`, `name`, `seq` | raw bytes, UTF-8, u64 LE |
//! | `Meta` | `mailbox` | [`MailboxRecord`] |
//! | `Contacts` | address | [`Contact`] |
//! | `Messages` | [`message_key`], [`group_message_key`] | [`StoredMessage`] |
//! | `Groups` | group id | [`GroupRecord`] |
//! | `Groups` | [`invite_key`] | [`InviteRecord`] |
//! | `Outbox` | [`outbox_key`] | [`OutItem`] |
//! | `Outbox` | [`post_key`] | [`GroupPost`] |
//! | `Servers` | [`cursor_key`] | u64 LE |
//! | `Servers` | [`directory_key`] | [`DirectoryEntry`] |
//! | `Servers` | [`adverts_key`] | [`SharedAdverts`] |
//! | `Blobs` | [`chain_key`] | [`ChainRecord`] |
//! | `Blobs` | [`keep_key`] | [`KeptBlob`] |
//! | `Blobs` | [`move_key`] | [`KeptMove`] |

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::codec::hex;
pub use crate::model::{Contact, Observations, OutBody, OutItem, Source, StoredMessage};

/// The format byte of a record written by this version.
const FORMAT_POSTCARD: u8 = 1;

/// Why a stored record could not be read.
#[derive(Debug)]
pub struct BadRecord {
    /// What it was.
    pub what: &'static str,
    /// Why.
    pub why: String,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.why)
    }
}

/// A record's encoding, for storing.
pub fn encode<T: Serialize>(value: &T) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(vec![FORMAT_POSTCARD]);
    // Serializing our own plain structs cannot fail.
    if let Ok(body) = postcard::to_stdvec(value) {
        out.extend_from_slice(&body);
    }
    out
}

/// A stored record of any version (`T::legacy` reads the JSON of earlier
/// versions).
pub fn decode<T: Stored>(bytes: &[u8]) -> Result<T, BadRecord> {
    let bad = |why: String| BadRecord { what: T::WHAT, why };
    match bytes.split_first() {
        Some((&FORMAT_POSTCARD, body)) => {
            postcard::from_bytes(body).map_err(|e| bad(e.to_string()))
        }
        Some((b'{', _)) | Some((b'[', _)) => T::legacy(bytes).map_err(|e| bad(e.to_string())),
        _ => Err(bad("unknown record format".into())),
    }
}

/// A record type: its name (for errors) and how an earlier version's JSON
/// form is read.
pub trait Stored: Serialize + DeserializeOwned {
    /// What it is, for error messages.
    const WHAT: &'static str;
    /// Reads the JSON an earlier version stored.
    fn legacy(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }
    /// The record's bytes.
    fn to_record(&self) -> Zeroizing<Vec<u8>> {
        encode(self)
    }
}

impl Stored for Contact {
    const WHAT: &'static str = "contact";
}
impl Stored for StoredMessage {
    const WHAT: &'static str = "message";
    /// Every field, the shown-only ones empty: the JSON form skips empty
    /// ones, which postcard cannot read back.
    fn to_record(&self) -> Zeroizing<Vec<u8>> {
        #[derive(Serialize)]
        struct Record<'a> {
            author_name: Option<&'a str>,
            seq: u64,
            conversation: &'a str,
            id: u64,
            outgoing: bool,
            author: &'a str,
            text: &'a str,
            sent_at: u64,
            status: crate::model::Delivery,
            note: Option<&'a str>,
        }
        encode(&Record {
            author_name: None,
            seq: self.seq,
            conversation: &self.conversation,
            id: self.id,
            outgoing: self.outgoing,
            author: &self.author,
            text: &self.text,
            sent_at: self.sent_at,
            status: self.status,
            note: None,
        })
    }
}
impl Stored for OutItem {
    const WHAT: &'static str = "outgoing item";
}

// ----- keys -----------------------------------------------------------------

/// A message with a contact: `conversation || '>' or '<' || id (BE)`.
pub fn message_key(conversation: &str, outgoing: bool, id: u64) -> Vec<u8> {
    let mut k = conversation.as_bytes().to_vec();
    k.push(if outgoing { b'>' } else { b'<' });
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// A group message: `group id || member id || seq (BE)`.
pub fn group_message_key(gid: &str, member: &[u8], seq: u64) -> Vec<u8> {
    let mut k = gid.as_bytes().to_vec();
    k.extend_from_slice(member);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// An item for a contact in the outgoing queue.
pub fn outbox_key(contact: &str, id: u64) -> Vec<u8> {
    let mut k = contact.as_bytes().to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// A post waiting for a server: `post:<server>:<owner>:` then the seq.
pub fn post_key(server: &str, owner: &str, seq: u64) -> Vec<u8> {
    let mut k = format!("post:{server}:{owner}:").into_bytes();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The cursor of a server.
pub fn cursor_key(server: &str) -> Vec<u8> {
    format!("cursor:{server}").into_bytes()
}

/// A server of the directory.
pub fn directory_key(address: &str) -> Vec<u8> {
    format!("dir:{address}").into_bytes()
}

/// What a group heard of servers.
pub fn adverts_key(gid: &str) -> Vec<u8> {
    format!("gadv:{gid}").into_bytes()
}

/// A pending invite.
pub fn invite_key(gid: &str) -> Vec<u8> {
    format!("invite:{gid}").into_bytes()
}

/// Whether a `Groups` key is an invite's.
pub fn is_invite_key(key: &[u8]) -> bool {
    key.starts_with(b"invite:")
}

/// The chain data of a group message.
pub fn chain_key(gid: &str, member: &[u8], seq: u64) -> Vec<u8> {
    let mut k = format!("chain:{gid}").into_bytes();
    k.extend_from_slice(member);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// A blob kept for recovery.
pub fn keep_key(gid: &str, member: &[u8], seq: u64) -> Vec<u8> {
    let mut k = format!("keep:{gid}").into_bytes();
    k.extend_from_slice(member);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The copy of a group's latest move notice sealed for one server.
pub fn move_key(gid: &str, server: &str) -> Vec<u8> {
    format!("move:{gid}:{server}").into_bytes()
}

// ----- groups ---------------------------------------------------------------

/// A secret in hex, as stored inside the encrypted profile: wiped from
/// memory when dropped (every clone too), and never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretHex(pub String);

impl std::ops::Deref for SecretHex {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHex(..)")
    }
}

impl Drop for SecretHex {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// A group as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The group id (hex), members' name for the group.
    pub id: String,
    /// The name shown.
    pub name: String,
    /// The secret (hex). Wiped when dropped, never printed.
    pub secret: SecretHex,
    /// The servers it uses.
    pub servers: Vec<String>,
    /// Our chain: next sequence number.
    pub next_seq: u64,
    /// Hex of the hash of our last message.
    pub prev_hash: String,
    /// Addresses of the members we know of (authors seen, the inviter,
    /// those we invited): whom to ask for missing messages.
    #[serde(default)]
    pub members: Vec<String>,
    /// Servers the group used before a move, still read until `until`.
    #[serde(default)]
    pub previous: Vec<PreviousServer>,
    /// The time (µs) of the move notice the servers come from.
    #[serde(default)]
    pub moved_at: u64,
    /// The local sequence number of the last message read by the user.
    #[serde(default)]
    pub read_upto: u64,
}

impl Stored for GroupRecord {
    const WHAT: &'static str = "group";
}

impl GroupRecord {
    /// Every server to read: the current ones, then those moved away from
    /// and not yet expired at `now_ms`.
    pub fn servers_to_read(&self, now_ms: u64) -> Vec<String> {
        let mut out = self.servers.clone();
        for p in &self.previous {
            if p.until > now_ms && !out.contains(&p.server) {
                out.push(p.server.clone());
            }
        }
        out
    }
}

/// A server a group moved away from, still read for a while.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousServer {
    /// The server.
    pub server: String,
    /// Read until then (Unix ms).
    pub until: u64,
}

/// One group message's chain data, to rebuild the gap tracker at start.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChainRecord {
    /// The member id (hex).
    pub member: String,
    /// Its sequence number.
    pub seq: u64,
    /// Its hash (hex).
    pub hash: String,
    /// Its previous hash (hex).
    pub prev_hash: String,
}

impl Stored for ChainRecord {
    const WHAT: &'static str = "chain";
}

/// A sealed blob kept for recovery, as bytes. Its kept form holds the
/// message in the clear (the profile encrypts it at rest): wiped when
/// dropped, and never shown by `Debug`.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeptBlob {
    /// The server it was sealed for.
    pub server: String,
    /// Its index there, when it came from that server.
    #[serde(default)]
    pub index: Option<u64>,
    /// When we kept it, Unix ms.
    pub at: u64,
    /// Its kept form (SPEC.md section 14: shorter than a blob, sealed
    /// again with the group's keys when asked for), or the whole blob
    /// (exactly `SEALED_BLOB_LEN` bytes: profiles from before the kept
    /// form, or a blob that would not keep).
    pub blob: Vec<u8>,
}

impl Drop for KeptBlob {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.blob);
    }
}

impl std::fmt::Debug for KeptBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptBlob")
            .field("server", &self.server)
            .field("index", &self.index)
            .field("at", &self.at)
            .field("blob", &format_args!("<{} bytes>", self.blob.len()))
            .finish()
    }
}

#[derive(Deserialize)]
struct LegacyKeptBlob {
    server: String,
    #[serde(default)]
    index: Option<u64>,
    at: u64,
    blob: String,
}

impl Stored for KeptBlob {
    const WHAT: &'static str = "kept blob";
    fn legacy(json: &[u8]) -> Result<Self, serde_json::Error> {
        let l: LegacyKeptBlob = serde_json::from_slice(json)?;
        Ok(KeptBlob {
            server: l.server,
            index: l.index,
            at: l.at,
            blob: hex::decode(&l.blob).unwrap_or_default(),
        })
    }
}

/// A post waiting for a server's durable acknowledgement: a group message
/// (owner = the group id) or a first-contact request (owner =
/// `mailbox:<address>`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupPost {
    /// The group id, or `mailbox:<recipient>`.
    pub group: String,
    /// The group seq (or the first message's id).
    pub group_seq: u64,
    /// The server.
    pub server: String,
    /// The sealed blob.
    pub blob: Vec<u8>,
}

#[derive(Deserialize)]
struct LegacyGroupPost {
    group: String,
    group_seq: u64,
    server: String,
    blob: String,
}

impl Stored for GroupPost {
    const WHAT: &'static str = "post";
    fn legacy(json: &[u8]) -> Result<Self, serde_json::Error> {
        let l: LegacyGroupPost = serde_json::from_slice(json)?;
        Ok(GroupPost {
            group: l.group,
            group_seq: l.group_seq,
            server: l.server,
            blob: hex::decode(&l.blob).unwrap_or_default(),
        })
    }
}

/// A copy of a move notice, sealed for one server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeptMove {
    /// The notice's accepted time (µs).
    pub at: u64,
    /// The blob.
    pub blob: Vec<u8>,
}

#[derive(Deserialize)]
struct LegacyKeptMove {
    at: u64,
    blob: String,
}

impl Stored for KeptMove {
    const WHAT: &'static str = "move notice copy";
    fn legacy(json: &[u8]) -> Result<Self, serde_json::Error> {
        let l: LegacyKeptMove = serde_json::from_slice(json)?;
        Ok(KeptMove {
            at: l.at,
            blob: hex::decode(&l.blob).unwrap_or_default(),
        })
    }
}

/// An invite waiting for the user's answer. It carries the group secret:
/// never printed, wiped on drop.
#[derive(Clone, Serialize, Deserialize)]
pub struct InviteRecord {
    /// The group id, hex.
    pub group: String,
    /// The group's name, as the inviter wrote it (cleaned).
    pub name: String,
    /// Who sent it.
    pub from: String,
    /// The servers the group uses.
    pub servers: Vec<String>,
    /// When it arrived, Unix ms.
    pub received_at: u64,
    /// The binary invite.
    pub invite: Vec<u8>,
}

impl Drop for InviteRecord {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.invite);
    }
}

#[derive(Deserialize)]
struct LegacyInvite {
    group: String,
    name: String,
    from: String,
    servers: Vec<String>,
    received_at: u64,
    invite: String,
}

impl Stored for InviteRecord {
    const WHAT: &'static str = "invite";
    fn legacy(json: &[u8]) -> Result<Self, serde_json::Error> {
        let l: LegacyInvite = serde_json::from_slice(json)?;
        Ok(InviteRecord {
            group: l.group,
            name: l.name,
            from: l.from,
            servers: l.servers,
            received_at: l.received_at,
            invite: hex::decode(&l.invite).unwrap_or_default(),
        })
    }
}

// ----- mailbox ----------------------------------------------------------------

/// Our mailbox as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MailboxRecord {
    /// Its server.
    pub server: String,
    /// The key, hex.
    pub key: SecretHex,
    /// Mailboxes replaced by rotation, still read until their deadline.
    #[serde(default)]
    pub retired: Vec<RetiredRecord>,
}

impl Stored for MailboxRecord {
    const WHAT: &'static str = "mailbox";
}

/// A mailbox replaced by rotation, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetiredRecord {
    /// Its server.
    pub server: String,
    /// The key, hex.
    pub key: SecretHex,
    /// Read until then (Unix ms).
    pub until: u64,
}

// ----- directory ------------------------------------------------------------

/// One server of the directory, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// Its onion address.
    pub address: String,
    /// Its latest verified advert (hex), if any.
    pub advert: Option<String>,
    /// How we first learned of it.
    pub source: Source,
    /// Whether we use it.
    pub used: bool,
    /// What we observed.
    pub observed: Observations,
}

impl Stored for DirectoryEntry {
    const WHAT: &'static str = "server directory entry";
}

/// What one group has heard of servers, as far as we know.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SharedAdverts {
    /// When we last posted adverts there (Unix ms), 0: never.
    pub at: u64,
    /// Servers posted there by us or by members, oldest first.
    pub servers: Vec<String>,
}

impl Stored for SharedAdverts {
    const WHAT: &'static str = "group adverts";
}

/// A u64 record (little endian).
pub fn u64_of(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_legacy_json_is_read() {
        let k = KeptBlob {
            server: "s".into(),
            index: Some(3),
            at: 9,
            blob: vec![7; 2048],
        };
        let bytes = encode(&k);
        assert!(bytes.len() < 2048 + 40, "blobs as bytes: {}", bytes.len());
        let back: KeptBlob = decode(&bytes).unwrap();
        assert_eq!(back.blob, k.blob);
        let legacy = format!(
            r#"{{"server":"s","index":3,"at":9,"blob":"{}"}}"#,
            hex::encode(&[7; 4])
        );
        let old: KeptBlob = decode(legacy.as_bytes()).unwrap();
        assert_eq!(old.blob, vec![7; 4]);
        assert!(decode::<KeptBlob>(&[9, 9]).is_err());
        assert!(decode::<KeptBlob>(&[]).is_err());
    }

    #[test]
    fn a_message_keeps_its_fields_but_not_what_is_computed_when_shown() {
        let m = StoredMessage {
            author_name: Some("bob".into()),
            seq: 4,
            conversation: "c".into(),
            id: 9,
            outgoing: false,
            author: "a".into(),
            text: "hi".into(),
            sent_at: 7,
            status: crate::model::Delivery::Received,
            note: Some("why".into()),
        };
        let back: StoredMessage = decode(&m.to_record()).unwrap();
        assert_eq!(
            back,
            StoredMessage {
                author_name: None,
                note: None,
                ..m.clone()
            }
        );
        // The JSON form leaves out what is empty.
        let json = serde_json::to_value(&back).unwrap();
        assert!(json.get("note").is_none() && json.get("author_name").is_none());
        // A record written by an earlier version (JSON) is read.
        let legacy = serde_json::to_vec(&m).unwrap();
        assert_eq!(decode::<StoredMessage>(&legacy).unwrap().text, "hi");
    }

    #[test]
    fn a_secret_never_prints() {
        let s = SecretHex("00112233".into());
        assert_eq!(format!("{s:?}"), "SecretHex(..)");
    }
}
