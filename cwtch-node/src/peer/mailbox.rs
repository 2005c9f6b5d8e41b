//! Offline first contact (SPEC.md section 12), the node's side.
//!
//! - The owner side: one optional mailbox (server + key) and the mailboxes
//!   replaced by rotation, still read for the core's `RETIRED_READ_FOR`. A
//!   blob no group claims is tried here: a cheap tag check, then opening.
//! - The sender side: a sealed request to someone's mailbox, posted like a
//!   group post (owner `mailbox:<address>`) and kept until the server
//!   stores it.

use cwtch_proto::group::SEALED_BLOB_LEN;
use cwtch_proto::mailbox::{
    FirstContact, IDENTIFIER_TEXT_MAX_LEN, Identifier, MAX_RETIRED, Mailbox, MailboxKey,
    MailboxKeys, RETIRED_READ_FOR, seal_request,
};
use cwtch_proto::{ClaimedTime, Identity, OnionAddress, PublicIdentity, UnixMicros};
use rand_core::CryptoRng;

use crate::codec::hex;
use crate::model::{ConnStatus, IdentifierView, RetiredView};
use crate::store::records::{MailboxRecord, RetiredRecord, SecretHex};

/// The owner prefix of first-contact requests in the outgoing queue.
pub const POST_PREFIX: &str = "mailbox:";

/// A first-contact request opened from our mailbox.
pub struct Request {
    /// Who sent it.
    pub sender: PublicIdentity,
    /// The name they announce.
    pub name: String,
    /// The first message's id.
    pub id: u64,
    /// Their clock (a claim).
    pub timestamp: ClaimedTime,
    /// The first message (may be empty).
    pub text: String,
}

/// Our mailbox, in memory.
pub struct MailboxState {
    mailbox: Mailbox,
    keys: MailboxKeys,
    /// Retired mailboxes and the time (Unix ms) until which they are read.
    retired: Vec<(Mailbox, MailboxKeys, u64)>,
}

/// Why a stored mailbox does not parse.
#[derive(Debug)]
pub struct BadMailbox(pub String);

fn parse(server: &str, key: &str) -> Result<Mailbox, BadMailbox> {
    let server = crate::codec::parse_server(server).map_err(BadMailbox)?;
    let key = hex::decode_array::<32>(key).ok_or_else(|| BadMailbox("mailbox key".into()))?;
    Ok(Mailbox {
        server,
        key: MailboxKey::from_bytes(&key),
    })
}

/// The retired mailboxes of a record still read at `now_ms`, the newest
/// [`MAX_RETIRED`].
fn live_retired(retired: Vec<RetiredRecord>, now_ms: u64) -> Vec<RetiredRecord> {
    let mut live: Vec<RetiredRecord> = retired.into_iter().filter(|r| r.until > now_ms).collect();
    live.sort_by_key(|r| std::cmp::Reverse(r.until));
    live.truncate(MAX_RETIRED);
    live
}

impl MailboxState {
    /// The state of a stored record: its mailbox (which must parse) and the
    /// retired ones still live at `now_ms` (one that does not parse is
    /// skipped: it must not stop the profile from opening).
    pub fn from_record(record: &MailboxRecord, now_ms: u64) -> Result<Self, BadMailbox> {
        let mailbox = parse(&record.server, &record.key)?;
        let mut retired = Vec::new();
        for r in live_retired(record.retired.clone(), now_ms) {
            match parse(&r.server, &r.key) {
                Ok(old) => retired.push((old.clone(), old.key.derive_keys(), r.until)),
                Err(e) => tracing::warn!("skipping a retired mailbox that does not parse: {}", e.0),
            }
        }
        Ok(MailboxState {
            keys: mailbox.key.derive_keys(),
            mailbox,
            retired,
        })
    }

    /// A new mailbox on `server` with a fresh key, replacing `old` (kept
    /// readable for `RETIRED_READ_FOR` unless `revoke_old`).
    pub fn create<R: CryptoRng + ?Sized>(
        server: OnionAddress,
        old: Option<MailboxRecord>,
        revoke_old: bool,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<(MailboxRecord, MailboxState), BadMailbox> {
        let key = MailboxKey::generate(rng);
        let mut retired = Vec::new();
        if !revoke_old && let Some(old) = old {
            retired = old.retired.clone();
            retired.push(RetiredRecord {
                server: old.server.clone(),
                key: old.key.clone(),
                until: now_ms.saturating_add(RETIRED_READ_FOR.as_millis()),
            });
        }
        let record = MailboxRecord {
            server: server.to_string(),
            key: SecretHex(hex::encode(key.to_bytes().as_ref())),
            retired: live_retired(retired, now_ms),
        };
        // Parsed before it is stored: what is stored is what runs.
        let state = MailboxState::from_record(&record, now_ms)?;
        Ok((record, state))
    }

    /// The server our mailbox is on.
    pub fn server(&self) -> String {
        self.mailbox.server.to_string()
    }

    /// The servers to keep reading at `now_ms`: the mailbox's, and those of
    /// retired mailboxes still in their grace period.
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

    /// A blob no group claimed, from `server`: a request to one of our
    /// mailboxes there? One tag check each; then opened and verified.
    /// `None`: not ours. `Some(Err)`: ours by its tag, but it does not open.
    pub fn open(
        &self,
        me: &Identity,
        server: &str,
        blob: &[u8; SEALED_BLOB_LEN],
        now_ms: u64,
    ) -> Option<Result<Request, String>> {
        let (mailbox, keys) = std::iter::once((&self.mailbox, &self.keys))
            .chain(
                self.retired
                    .iter()
                    .filter(|r| r.2 > now_ms)
                    .map(|(m, k, _)| (m, k)),
            )
            .find(|(m, k)| m.server.to_string() == server && k.detect(blob))?;
        let mut work = blob.to_vec();
        Some(
            keys.open_request(me, &mailbox.server, &mut work)
                .map(|r| Request {
                    sender: r.sender,
                    name: r.name.to_string(),
                    id: r.id,
                    timestamp: r.timestamp,
                    text: r.text.to_string(),
                })
                .map_err(|e| e.to_string()),
        )
    }

    /// The mailbox, for the identifier.
    pub fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }

    /// The retired mailboxes still read at `now_ms`.
    pub fn retired_view(&self, now_ms: u64) -> Vec<RetiredView> {
        self.retired
            .iter()
            .filter(|r| r.2 > now_ms)
            .map(|(old, _, until)| RetiredView {
                server: old.server.to_string(),
                read_until_unix_ms: *until,
            })
            .collect()
    }
}

/// Our identifier: extended when we keep a mailbox.
pub fn identifier_view(
    owner: &OnionAddress,
    mailbox: Option<&Mailbox>,
    connection: Option<ConnStatus>,
    retired: Vec<RetiredView>,
) -> IdentifierView {
    let id = Identifier::new(*owner, mailbox.cloned());
    let mut buf = [0u8; IDENTIFIER_TEXT_MAX_LEN];
    IdentifierView {
        identifier: id.to_text(&mut buf).to_string(),
        address: owner.to_string(),
        mailbox_server: mailbox.map(|m| m.server.to_string()),
        mailbox_connection: connection,
        retired_mailboxes: retired,
    }
}

/// Checks, before anything is stored, that a first message fits a request.
pub fn check_first_contact(identifier: &Identifier, message: Option<&str>) -> Result<(), String> {
    let max = cwtch_proto::mailbox::MAX_TEXT_LEN;
    if identifier.mailbox().is_some() && message.is_some_and(|m| m.len() > max) {
        return Err(format!(
            "a first message through a mailbox holds at most {max} bytes"
        ));
    }
    Ok(())
}

/// Seals a first-contact request to `to`'s mailbox: the server and the
/// blob. `name` is ours, `id`/`text`/`sent_at` the first message's (already
/// queued for direct delivery under the same id).
pub fn seal_first_contact<R: CryptoRng + ?Sized>(
    me: &Identity,
    to: &Identifier,
    name: &str,
    id: u64,
    text: &str,
    sent_at: UnixMicros,
    rng: &mut R,
) -> Option<Result<(String, Vec<u8>), String>> {
    let mailbox = to.mailbox()?;
    let msg = FirstContact {
        name: name.get(..name.len().min(64)).unwrap_or(""),
        id,
        timestamp: sent_at,
        text,
    };
    let mut blob = vec![0u8; SEALED_BLOB_LEN];
    Some(
        seal_request(
            me,
            &to.owner().public_identity(),
            mailbox,
            &msg,
            rng,
            &mut blob,
        )
        .map(|_| (mailbox.server.to_string(), blob))
        .map_err(|e| e.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::{Stored, decode};
    use cwtch_proto::Identity;

    fn server(seed: u8) -> String {
        Identity::from_seed(&[seed; 32]).address().to_string()
    }

    fn retired(until: u64) -> RetiredRecord {
        RetiredRecord {
            server: server(0x90),
            key: SecretHex("cd".repeat(32)),
            until,
        }
    }

    #[test]
    fn retired_mailboxes_expire_at_their_deadline_and_are_bounded() {
        let live = live_retired((1..=10).map(retired).collect(), 3);
        let untils: Vec<u64> = live.iter().map(|r| r.until).collect();
        assert_eq!(untils, vec![10, 9, 8, 7], "the newest {MAX_RETIRED}");
        assert!(
            live_retired(vec![retired(5)], 5).is_empty(),
            "expired at its deadline"
        );
        assert_eq!(live_retired(vec![retired(6)], 5).len(), 1);
    }

    #[test]
    fn a_retired_mailbox_that_does_not_parse_is_skipped_but_the_current_one_must_parse() {
        let record = MailboxRecord {
            server: server(0x81),
            key: SecretHex("ab".repeat(32)),
            retired: vec![
                RetiredRecord {
                    server: "not a server".into(),
                    key: SecretHex("ab".repeat(32)),
                    until: u64::MAX,
                },
                retired(u64::MAX),
            ],
        };
        let state = MailboxState::from_record(&record, 0).unwrap();
        assert_eq!(state.retired.len(), 1);
        assert_eq!(state.servers_to_read(0).len(), 2);
        let bad = MailboxRecord {
            key: SecretHex("zz".into()),
            ..record
        };
        assert!(MailboxState::from_record(&bad, 0).is_err());
    }

    #[test]
    fn a_record_from_before_rotation_existed_still_loads() {
        // Written by an earlier version: JSON, no `retired` field.
        let old = format!(
            r#"{{"server":"{}","key":"{}"}}"#,
            server(0x81),
            "ab".repeat(32)
        );
        let record: MailboxRecord = decode(old.as_bytes()).unwrap();
        assert!(record.retired.is_empty());
        let state = MailboxState::from_record(&record, 0).unwrap();
        assert_eq!(state.server(), server(0x81));
        // And the current form round-trips.
        let back: MailboxRecord = decode(&record.to_record()).unwrap();
        assert_eq!(back.server, record.server);
    }
}
