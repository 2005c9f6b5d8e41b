//! The layout of a channel frame (SPEC.md, section 3).
//!
//! On the wire every frame is exactly [`FRAME_LEN`] bytes: the encrypted
//! body followed by the Poly1305 tag. The body, once decrypted, is
//!
//! ```text
//! kind (1) | length (2, LE) | payload (length) | zeros (to FRAME_BODY_LEN)
//! ```
//!
//! Parsing is strict: an unknown kind, a length over the payload capacity, a
//! payload where the kind allows none, or a non-zero padding byte is
//! malformed.

use super::ChannelError;
use crate::handshake::symmetric::TAG_LEN;

/// Bytes of one frame on the wire: one Tor relay cell's payload.
pub const FRAME_LEN: usize = 498;
/// Bytes of a frame's encrypted body (the frame minus the tag).
pub const FRAME_BODY_LEN: usize = FRAME_LEN - TAG_LEN;
/// Header bytes inside the body: kind and length.
pub const FRAME_HEADER_LEN: usize = 3;
/// The most payload bytes one frame carries.
pub const FRAME_PAYLOAD_MAX: usize = FRAME_BODY_LEN - FRAME_HEADER_LEN;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Nothing: keep-alive and cover traffic. Indistinguishable from data
    /// on the wire.
    Padding = 0,
    /// A fragment of a message; more fragments follow.
    Fragment = 1,
    /// The last (or only) fragment of a message.
    Final = 2,
    /// The sender closes the channel; nothing follows. The payload is one
    /// reason byte (0: normal close).
    Close = 3,
}

impl FrameKind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => FrameKind::Padding,
            1 => FrameKind::Fragment,
            2 => FrameKind::Final,
            3 => FrameKind::Close,
            _ => return None,
        })
    }

    fn max_payload(self) -> usize {
        match self {
            FrameKind::Padding => 0,
            FrameKind::Fragment | FrameKind::Final => FRAME_PAYLOAD_MAX,
            FrameKind::Close => 1,
        }
    }
}

/// A parsed frame body, borrowing its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameBody<'a> {
    /// The frame's kind.
    pub kind: FrameKind,
    /// Its payload.
    pub payload: &'a [u8],
}

impl<'a> FrameBody<'a> {
    /// Parses a decrypted body of exactly [`FRAME_BODY_LEN`] bytes.
    pub fn parse(body: &'a [u8; FRAME_BODY_LEN]) -> Result<Self, ChannelError> {
        let (header, rest) = body.split_at(FRAME_HEADER_LEN);
        let kind = header
            .first()
            .copied()
            .and_then(FrameKind::from_byte)
            .ok_or(ChannelError::MalformedFrame)?;
        let len = match header {
            [_, lo, hi] => usize::from(u16::from_le_bytes([*lo, *hi])),
            _ => return Err(ChannelError::MalformedFrame),
        };
        if len > kind.max_payload() {
            return Err(ChannelError::MalformedFrame);
        }
        let (payload, padding) = rest
            .split_at_checked(len)
            .ok_or(ChannelError::MalformedFrame)?;
        if padding.iter().any(|&b| b != 0) {
            return Err(ChannelError::MalformedFrame);
        }
        Ok(FrameBody { kind, payload })
    }

    /// Writes the body into `out`: header, payload, zero padding. The
    /// payload must fit the kind (callers in this crate guarantee it).
    pub fn emit(&self, out: &mut [u8; FRAME_BODY_LEN]) -> Result<(), ChannelError> {
        let len = self.payload.len();
        if len > self.kind.max_payload() {
            return Err(ChannelError::MalformedFrame);
        }
        out.fill(0);
        let (header, rest) = out.split_at_mut(FRAME_HEADER_LEN);
        header[0] = self.kind as u8;
        header[1..].copy_from_slice(&(len as u16).to_le_bytes());
        rest[..len].copy_from_slice(self.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_one_tor_relay_cell() {
        assert_eq!(FRAME_LEN, 498);
        assert_eq!(FRAME_PAYLOAD_MAX, 479);
    }

    #[test]
    fn emit_then_parse_round_trips() {
        let mut body = [0u8; FRAME_BODY_LEN];
        for (kind, payload) in [
            (FrameKind::Padding, &b""[..]),
            (FrameKind::Fragment, &[1u8; FRAME_PAYLOAD_MAX][..]),
            (FrameKind::Final, &b"hi"[..]),
            (FrameKind::Close, &[0u8][..]),
        ] {
            FrameBody { kind, payload }.emit(&mut body).unwrap();
            assert_eq!(
                FrameBody::parse(&body).unwrap(),
                FrameBody { kind, payload }
            );
        }
    }

    #[test]
    fn strict_parsing_rejects_every_deviation() {
        let mut body = [0u8; FRAME_BODY_LEN];
        body[0] = 9;
        assert_eq!(FrameBody::parse(&body), Err(ChannelError::MalformedFrame));
        body[0] = FrameKind::Padding as u8;
        body[1] = 1;
        assert_eq!(FrameBody::parse(&body), Err(ChannelError::MalformedFrame));
        body[0] = FrameKind::Final as u8;
        body[1..3].copy_from_slice(&(FRAME_PAYLOAD_MAX as u16 + 1).to_le_bytes());
        assert_eq!(FrameBody::parse(&body), Err(ChannelError::MalformedFrame));
        body[1..3].copy_from_slice(&2u16.to_le_bytes());
        body[FRAME_BODY_LEN - 1] = 1;
        assert_eq!(FrameBody::parse(&body), Err(ChannelError::MalformedFrame));
    }
}
