//! The peer message wire format.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::channel::MAX_MESSAGE_LEN;

/// The longest display name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 64;
/// The longest text of one chat message, in bytes of UTF-8.
pub const MAX_TEXT_LEN: usize = 4096;
/// The longest opaque attachment (an invite, a server advert), in bytes.
pub const MAX_BLOB_LEN: usize = 4096;

/// A message from one peer to another. Borrowed from the buffer it was
/// decoded from; encode with [`PeerMessage::encode`].
///
/// The variant index is the first byte on the wire: new kinds are only ever
/// appended, and an unknown kind is refused with
/// [`PeerMessageError::Malformed`] (the sender learns nothing; the
/// message's id is not acknowledged, so it will be retried after an upgrade).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage<'a> {
    /// Sent by each side once the link is established: the sender's display
    /// name (may be empty). An unknown sender becomes a contact request.
    Hello {
        /// Display name chosen by the sender.
        name: &'a str,
    },
    /// A chat message. `id` is chosen by the sender, unique per
    /// conversation; the receiver acknowledges it and drops duplicates.
    Text {
        /// Sender-chosen id, echoed by [`PeerMessage::Ack`].
        id: u64,
        /// The sender's clock when it was written, in Unix milliseconds
        /// (informational only: ordering uses arrival and ids).
        sent_at: u64,
        /// The text.
        text: &'a str,
    },
    /// Acknowledges the message with this id: the receiver has stored it.
    Ack {
        /// The id acknowledged.
        id: u64,
    },
    /// An invitation to a group, in the binary invite form of SPEC.md
    /// section 5; acknowledged like a text.
    GroupInvite {
        /// Sender-chosen id.
        id: u64,
        /// The encoded invite.
        invite: &'a [u8],
    },
    /// Asks the peer for sealed group blobs it holds (recovery of missing
    /// messages): the encoded list of missing references of SPEC.md
    /// section 7.
    ResendRequest {
        /// Sender-chosen id; the answer carries it.
        id: u64,
        /// What is missing, encoded.
        wanted: &'a [u8],
    },
    /// One sealed blob answering a [`PeerMessage::ResendRequest`].
    ResendBlob {
        /// The request's id.
        id: u64,
        /// The sealed blob, verified by the receiver like one from a server.
        blob: &'a [u8],
    },
    /// A server the sender knows of: its signed advert (SPEC.md section 13).
    ServerAdvert {
        /// The encoded, signed advert.
        advert: &'a [u8],
    },
    /// A sealed move notice of a group both peers are in, unasked (SPEC.md
    /// section 15): for a member that missed the move on the server.
    /// Verified by the receiver like a blob from a server.
    MoveBlob {
        /// The sealed blob.
        blob: &'a [u8],
    },
}

/// Why bytes are not a peer message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerMessageError {
    /// Not a valid encoding: unknown kind, truncated, bad UTF-8, or bytes
    /// left over after the message.
    Malformed,
    /// A field is longer than its limit.
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its limit in bytes.
        max: usize,
    },
    /// The output buffer is too small for the encoding.
    BufferTooSmall,
}

impl fmt::Display for PeerMessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerMessageError::Malformed => f.write_str("malformed peer message"),
            PeerMessageError::TooLong { field, max } => {
                write!(f, "{field} is longer than {max} bytes")
            }
            PeerMessageError::BufferTooSmall => f.write_str("output buffer too small"),
        }
    }
}

impl core::error::Error for PeerMessageError {}

impl<'a> PeerMessage<'a> {
    /// Checks every field against its limit.
    pub fn validate(&self) -> Result<(), PeerMessageError> {
        let check = |len: usize, field: &'static str, max: usize| {
            if len > max {
                Err(PeerMessageError::TooLong { field, max })
            } else {
                Ok(())
            }
        };
        match self {
            PeerMessage::Hello { name } => check(name.len(), "name", MAX_NAME_LEN),
            PeerMessage::Text { text, .. } => check(text.len(), "text", MAX_TEXT_LEN),
            PeerMessage::Ack { .. } => Ok(()),
            PeerMessage::GroupInvite { invite, .. } => check(invite.len(), "invite", MAX_BLOB_LEN),
            PeerMessage::ResendRequest { wanted, .. } => {
                check(wanted.len(), "wanted", MAX_BLOB_LEN)
            }
            PeerMessage::ResendBlob { blob, .. } => check(blob.len(), "blob", MAX_BLOB_LEN),
            PeerMessage::ServerAdvert { advert } => check(advert.len(), "advert", MAX_BLOB_LEN),
            PeerMessage::MoveBlob { blob } => check(blob.len(), "blob", MAX_BLOB_LEN),
        }
    }

    /// Decodes one message that fills `bytes` exactly.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, PeerMessageError> {
        let (msg, rest) = postcard::take_from_bytes::<PeerMessage<'a>>(bytes)
            .map_err(|_| PeerMessageError::Malformed)?;
        if !rest.is_empty() {
            return Err(PeerMessageError::Malformed);
        }
        msg.validate()?;
        // One canonical form: postcard accepts over-long varints, so a
        // message that does not encode back to the same bytes is refused.
        let mut again = [0u8; MAX_ENCODED_LEN];
        match postcard::to_slice(&msg, &mut again) {
            Ok(encoded) if encoded == bytes => Ok(msg),
            _ => Err(PeerMessageError::Malformed),
        }
    }

    /// Encodes into `out` and returns the encoding, which always fits one
    /// channel message.
    pub fn encode<'b>(&self, out: &'b mut [u8]) -> Result<&'b [u8], PeerMessageError> {
        self.validate()?;
        let used = postcard::to_slice(self, out).map_err(|_| PeerMessageError::BufferTooSmall)?;
        Ok(used)
    }
}

/// The largest encoding of any valid peer message; always fits one channel
/// message.
pub const MAX_ENCODED_LEN: usize = 1 + 10 + 10 + 3 + MAX_TEXT_LEN;
const _: () = assert!(MAX_ENCODED_LEN <= MAX_MESSAGE_LEN);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let msgs = [
            PeerMessage::Hello { name: "alice" },
            PeerMessage::Text {
                id: 7,
                sent_at: 1_700_000_000_000,
                text: "hi",
            },
            PeerMessage::Ack { id: u64::MAX },
            PeerMessage::GroupInvite {
                id: 1,
                invite: &[1, 2, 3],
            },
            PeerMessage::ResendRequest {
                id: 2,
                wanted: &[9],
            },
            PeerMessage::ResendBlob {
                id: 2,
                blob: &[0; 100],
            },
            PeerMessage::ServerAdvert { advert: &[5; 10] },
            PeerMessage::MoveBlob { blob: &[6; 2048] },
        ];
        let mut buf = [0u8; MAX_ENCODED_LEN];
        for m in msgs {
            let bytes = m.encode(&mut buf).unwrap();
            assert_eq!(PeerMessage::decode(bytes).unwrap(), m);
        }
    }

    #[test]
    fn vectors_are_fixed() {
        let mut buf = [0u8; 64];
        let text = PeerMessage::Text {
            id: 1,
            sent_at: 2,
            text: "hi",
        };
        assert_eq!(text.encode(&mut buf).unwrap(), &[1, 1, 2, 2, b'h', b'i']);
        assert_eq!(
            PeerMessage::Ack { id: 300 }.encode(&mut buf).unwrap(),
            &[2, 0xac, 0x02]
        );
        assert_eq!(
            PeerMessage::Hello { name: "" }.encode(&mut buf).unwrap(),
            &[0, 0]
        );
        assert_eq!(
            PeerMessage::MoveBlob {
                blob: &[0xaa, 0xbb]
            }
            .encode(&mut buf)
            .unwrap(),
            &[7, 2, 0xaa, 0xbb]
        );
        // Misuse: longer than the limit, truncated, trailing bytes.
        let long = [0u8; MAX_BLOB_LEN + 1];
        assert_eq!(
            PeerMessage::MoveBlob { blob: &long }.encode(&mut [0u8; 5000]),
            Err(PeerMessageError::TooLong {
                field: "blob",
                max: MAX_BLOB_LEN
            })
        );
        assert_eq!(
            PeerMessage::decode(&[7, 2, 0xaa]),
            Err(PeerMessageError::Malformed)
        );
        assert_eq!(
            PeerMessage::decode(&[7, 1, 0xaa, 0]),
            Err(PeerMessageError::Malformed)
        );
    }

    #[test]
    fn misuse_is_refused_with_a_typed_error() {
        let long = [b'a'; MAX_TEXT_LEN + 1];
        let long = core::str::from_utf8(&long).unwrap();
        let mut buf = [0u8; MAX_ENCODED_LEN + 16];
        assert_eq!(
            PeerMessage::Text {
                id: 1,
                sent_at: 0,
                text: long
            }
            .encode(&mut buf),
            Err(PeerMessageError::TooLong {
                field: "text",
                max: MAX_TEXT_LEN
            })
        );
        let mut small = [0u8; 3];
        assert_eq!(
            PeerMessage::Hello { name: "alice" }.encode(&mut small),
            Err(PeerMessageError::BufferTooSmall)
        );
        // Unknown kind, trailing bytes, truncation, bad UTF-8.
        assert_eq!(PeerMessage::decode(&[99]), Err(PeerMessageError::Malformed));
        assert_eq!(
            PeerMessage::decode(&[2, 1, 0]),
            Err(PeerMessageError::Malformed)
        );
        assert_eq!(
            PeerMessage::decode(&[1, 1, 2, 5, b'h']),
            Err(PeerMessageError::Malformed)
        );
        assert_eq!(
            PeerMessage::decode(&[0, 1, 0xff]),
            Err(PeerMessageError::Malformed)
        );
        // A length prefix claiming more than the limit is refused even if present.
        let mut over = [b'a'; 2 + 65];
        over[..2].copy_from_slice(&[0u8, 0x41]);
        assert_eq!(
            PeerMessage::decode(&over),
            Err(PeerMessageError::TooLong {
                field: "name",
                max: MAX_NAME_LEN
            })
        );
    }
}
