//! Moves told over peer links (SPEC.md section 15).
//!
//! A member offline during a move normally finds the notice on an old
//! server; if that server is gone, a contact who is a member tells it: on
//! every new link with an accepted contact we know as a member of a group
//! that moved (in the last [`TELL_FOR_MS`]), we send the sealed notice
//! blobs we hold of the latest move, as [`PeerMessage::MoveBlob`]s: each
//! copy as it was sealed for one server (the mover posts the notice to the
//! old servers and the new one), so the receiver can check one against a
//! server it still reads. The receiver verifies it exactly like a blob from
//! that server (detection tag, AEAD, signature, group id, server key, then
//! the gap tracker) and takes it only if it is a move notice; it follows
//! the move by the usual rule (only a newer notice).

use cwtch_proto::group::{MessageKind, SEALED_BLOB_LEN};
use cwtch_proto::peer::PeerMessage;
use serde::{Deserialize, Serialize};

use crate::clock;
use crate::groups::{GroupState, hex, parse_server, unhex};
use crate::model::ContactState;
use crate::peer::{PeerNode, State, encode, encode_peer};
use crate::profile_store::Table;

/// How long after a move we still tell member contacts about it: 30 days
/// (as long as members keep blobs for recovery).
pub const TELL_FOR_MS: u64 = cwtch_proto::group::moving::TELL_FOR.as_millis();

/// A copy of a move notice, sealed for one server.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct KeptMove {
    /// The notice's timestamp (µs, the author's clock).
    at: u64,
    /// The blob, hex.
    blob: String,
}

fn key(gid: &str, server: &str) -> Vec<u8> {
    format!("move:{gid}:{server}").into_bytes()
}

impl PeerNode {
    /// Keeps the copy of a move notice of time `at` (µs) sealed for
    /// `server`, unless we hold a newer notice for that server.
    pub(crate) fn keep_move(&self, gid: &str, server: &str, at: u64, blob: &[u8]) {
        let k = key(gid, server);
        let older = self
            .store
            .get(Table::Blobs, &k)
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice::<KeptMove>(&v).ok())
            .is_none_or(|old| old.at <= at);
        if older {
            let kept = KeptMove {
                at,
                blob: hex(blob),
            };
            if let Err(e) = self.store.put(Table::Blobs, &k, &encode(&kept)) {
                tracing::warn!("cannot keep a move notice: {e}");
            }
        }
    }

    /// Keeps our own notice (the copy `post_message` kept for recovery):
    /// opened with the group's keys for its timestamp.
    pub(crate) fn keep_own_move(&self, g: &GroupState, server: &str, blob: &[u8]) {
        let (Ok(addr), Ok(blob)) = (
            parse_server(server),
            <&[u8; SEALED_BLOB_LEN]>::try_from(blob),
        ) else {
            return;
        };
        let mut work = vec![0u8; SEALED_BLOB_LEN];
        if let Ok(m) = g.group.keys().open(&addr, blob, &mut work)
            && m.kind == MessageKind::MOVE
        {
            let at = m.timestamp.claimed_micros(); // our own time
            self.keep_move(&g.record.id, server, at, blob);
        }
    }

    /// On a new link with the accepted contact `remote`: the copies of the
    /// latest move notice of each group it is a member of.
    pub(crate) fn moves_to_share(&self, st: &State, remote: &str) -> Vec<Vec<u8>> {
        let now_ms = clock::unix_millis();
        let mut out = Vec::new();
        for (gid, g) in &st.groups {
            let moved_ms = g.record.moved_at / 1000;
            if g.record.moved_at == 0
                || now_ms.saturating_sub(moved_ms) > TELL_FOR_MS
                || !g.record.members.iter().any(|m| m == remote)
            {
                continue;
            }
            let mut servers = g.record.servers.clone();
            servers.extend(g.record.previous.iter().map(|p| p.server.clone()));
            let copies: Vec<KeptMove> = servers
                .iter()
                .filter_map(|s| self.store.get(Table::Blobs, &key(gid, s)).ok().flatten())
                .filter_map(|v| serde_json::from_slice::<KeptMove>(&v).ok())
                .collect();
            let latest = copies.iter().map(|c| c.at).max().unwrap_or(0);
            for c in copies.iter().filter(|c| c.at == latest) {
                if let Some(blob) = unhex::<SEALED_BLOB_LEN>(&c.blob) {
                    out.push(encode_peer(&PeerMessage::MoveBlob { blob: &blob }));
                }
            }
        }
        out
    }

    /// A move notice from a contact: only from an accepted contact, only a
    /// blob that one of our groups' tags claims, that opens for a server
    /// that group reads, and that is a move notice; then taken exactly like
    /// one from that server.
    pub(crate) fn on_move_blob(&self, st: &mut State, remote: &str, blob: &[u8]) {
        if st.contacts.get(remote).map(|c| c.state) != Some(ContactState::Accepted) {
            return;
        }
        let Ok(blob) = <&[u8; SEALED_BLOB_LEN]>::try_from(blob) else {
            return;
        };
        let now_ms = clock::unix_millis();
        let Some((gid, servers)) = st
            .groups
            .iter()
            .find(|(_, g)| g.group.keys().detection_key().detect(blob))
            .map(|(id, g)| (id.clone(), g.record.servers_to_read(now_ms)))
        else {
            return; // not for a group of ours
        };
        let mut work = vec![0u8; SEALED_BLOB_LEN];
        for server in servers {
            let Ok(addr) = parse_server(&server) else {
                continue;
            };
            let Some(g) = st.groups.get(&gid) else {
                return;
            };
            match g.group.keys().open(&addr, blob, &mut work) {
                Ok(m) if m.kind == MessageKind::MOVE => {
                    let _ = self.accept_blob(st, &gid, &addr, None, blob);
                    tracing::info!("a contact told us of a group's move");
                    return;
                }
                Ok(_) => return, // only move notices travel this way
                Err(cwtch_proto::group::OpenError::WrongServer) => continue,
                Err(e) => {
                    crate::log_throttled!(kind = e; "a move notice from a contact failed to open: {e}");
                    return;
                }
            }
        }
    }
}
