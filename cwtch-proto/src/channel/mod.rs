//! The secure channel: constant-size encrypted frames with per-direction
//! keys and counters, fragmentation and reassembly of messages, and rekey.
//!
//! See SPEC.md, section 3. The channel holds no timers and does no I/O;
//! [`crate::connection`] drives it.

pub mod frame;

use core::fmt;

use heapless::Vec;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::handshake::SessionKeys;
use crate::handshake::symmetric::{self, HASH_LEN, KEY_LEN, TAG_LEN};
use frame::{FRAME_BODY_LEN, FRAME_LEN, FRAME_PAYLOAD_MAX, FrameBody, FrameKind};

/// The largest message the channel carries; larger ones are refused.
pub const MAX_MESSAGE_LEN: usize = 8192;
/// Frames per key epoch by default: both sides rekey after this many frames
/// in a direction (about 500 MB), so that a key compromise exposes at most
/// one epoch of past traffic.
pub const DEFAULT_REKEY_INTERVAL: u64 = 1 << 20;
/// The last counter value a frame may use; `u64::MAX` is reserved for
/// rekeying, as in Noise.
pub const LAST_COUNTER: u64 = u64::MAX - 1;

/// Why the channel refused a frame. Every one ends the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelError {
    /// A frame did not authenticate: forged, replayed, reordered, corrupted
    /// or truncated in transit.
    Authentication,
    /// A frame authenticated but its body breaks the layout: the peer is
    /// broken or hostile.
    MalformedFrame,
    /// The peer sent a message larger than [`MAX_MESSAGE_LEN`].
    MessageTooLarge,
    /// The frame counter of a direction is used up; open a new session.
    CounterExhausted,
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::Authentication => {
                f.write_str("a frame failed authentication (forged, replayed or corrupted)")
            }
            ChannelError::MalformedFrame => f.write_str("the peer sent a malformed frame"),
            ChannelError::MessageTooLarge => write!(
                f,
                "the peer sent a message over the {MAX_MESSAGE_LEN}-byte limit"
            ),
            ChannelError::CounterExhausted => f.write_str("the frame counter is exhausted"),
        }
    }
}

impl core::error::Error for ChannelError {}

/// A message could not be queued for sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The message is larger than [`MAX_MESSAGE_LEN`].
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// A message is still being sent; drain `poll_transmit` and try again.
    Busy,
    /// The handshake has not finished yet: wait for `ConnectionEvent::Established`.
    NotEstablished,
    /// The connection is closed or closing.
    Closed,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::TooLarge { len } => write!(
                f,
                "message of {len} bytes is over the {MAX_MESSAGE_LEN}-byte limit"
            ),
            SendError::Busy => f.write_str("a message is still being sent"),
            SendError::NotEstablished => f.write_str("the session is not established yet"),
            SendError::Closed => f.write_str("the connection is closed"),
        }
    }
}

impl core::error::Error for SendError {}

/// One direction's key and frame counter.
#[derive(Zeroize, ZeroizeOnDrop)]
struct DirectionCipher {
    key: [u8; KEY_LEN],
    counter: u64,
    rekey_interval: u64,
}

impl DirectionCipher {
    /// The key for `self.counter`: the current key, or its rekeyed successor
    /// when the counter starts a new epoch.
    fn key_for_counter(&self) -> Result<[u8; KEY_LEN], ChannelError> {
        if self.counter > LAST_COUNTER {
            return Err(ChannelError::CounterExhausted);
        }
        let mut key = self.key;
        if self.counter != 0 && self.counter.is_multiple_of(self.rekey_interval) {
            symmetric::rekey(&mut key);
        }
        Ok(key)
    }

    fn seal(&mut self, frame: &mut [u8; FRAME_LEN]) -> Result<(), ChannelError> {
        let mut key = self.key_for_counter()?;
        let (body, tag_out) = frame.split_at_mut(FRAME_BODY_LEN);
        let tag = symmetric::seal(&key, self.counter, &[], body);
        tag_out.copy_from_slice(&tag);
        self.key = key;
        key.zeroize();
        self.counter += 1;
        Ok(())
    }

    /// Decrypts in place; on failure neither the key nor the counter move.
    fn open(&mut self, frame: &mut [u8; FRAME_LEN]) -> Result<(), ChannelError> {
        let mut key = self.key_for_counter()?;
        let (body, tag_in) = frame.split_at_mut(FRAME_BODY_LEN);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(tag_in);
        let result = symmetric::open(&key, self.counter, &[], body, &tag);
        if result.is_ok() {
            self.key = key;
            self.counter += 1;
        }
        key.zeroize();
        result.map_err(|_| ChannelError::Authentication)
    }
}

/// What an opened frame meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Padding or a fragment that does not finish a message.
    Nothing,
    /// A message is complete: read it with [`Channel::message`].
    Message,
    /// The peer closed the channel with this reason byte.
    Close(u8),
}

/// The established channel of one session.
pub struct Channel {
    send: DirectionCipher,
    recv: DirectionCipher,
    handshake_hash: [u8; HASH_LEN],
    rx: Vec<u8, MAX_MESSAGE_LEN>,
    rx_complete: bool,
    tx: Vec<u8, MAX_MESSAGE_LEN>,
    tx_pos: usize,
    tx_active: bool,
}

impl Channel {
    /// A channel on the keys of a finished handshake. `rekey_interval` is
    /// the number of frames per key epoch (at least 1).
    pub fn new(keys: &SessionKeys, rekey_interval: u64) -> Self {
        let rekey_interval = rekey_interval.max(1);
        Channel {
            send: DirectionCipher {
                key: keys.send,
                counter: 0,
                rekey_interval,
            },
            recv: DirectionCipher {
                key: keys.recv,
                counter: 0,
                rekey_interval,
            },
            handshake_hash: keys.handshake_hash,
            rx: Vec::new(),
            rx_complete: false,
            tx: Vec::new(),
            tx_pos: 0,
            tx_active: false,
        }
    }

    /// The handshake hash of the session (channel binding).
    pub fn handshake_hash(&self) -> &[u8; HASH_LEN] {
        &self.handshake_hash
    }

    /// Frames sent and received so far.
    pub fn counters(&self) -> (u64, u64) {
        (self.send.counter, self.recv.counter)
    }

    /// Queues a message for sending. Only one message is queued at a time.
    pub fn queue_message(&mut self, msg: &[u8]) -> Result<(), SendError> {
        if msg.len() > MAX_MESSAGE_LEN {
            return Err(SendError::TooLarge { len: msg.len() });
        }
        if self.tx_active {
            return Err(SendError::Busy);
        }
        self.tx.clear();
        self.tx
            .extend_from_slice(msg)
            .map_err(|_| SendError::TooLarge { len: msg.len() })?;
        self.tx_pos = 0;
        self.tx_active = true;
        Ok(())
    }

    /// Whether a queued message still has frames to send.
    pub fn has_pending(&self) -> bool {
        self.tx_active
    }

    /// Seals the next frame of the queued message into `out`. Returns
    /// `false` (and writes nothing) when no message is queued.
    pub fn seal_next_data(&mut self, out: &mut [u8; FRAME_LEN]) -> Result<bool, ChannelError> {
        if !self.tx_active {
            return Ok(false);
        }
        let rest = self.tx.get(self.tx_pos..).unwrap_or(&[]);
        let take = rest.len().min(FRAME_PAYLOAD_MAX);
        let chunk = rest.get(..take).unwrap_or(&[]);
        let last = take == rest.len();
        let kind = if last {
            FrameKind::Final
        } else {
            FrameKind::Fragment
        };
        seal_body(
            &mut self.send,
            FrameBody {
                kind,
                payload: chunk,
            },
            out,
        )?;
        self.tx_pos += take;
        if last {
            self.tx_active = false;
            self.tx.clear();
        }
        Ok(true)
    }

    /// Seals a padding (keep-alive) frame into `out`.
    pub fn seal_padding(&mut self, out: &mut [u8; FRAME_LEN]) -> Result<(), ChannelError> {
        seal_body(
            &mut self.send,
            FrameBody {
                kind: FrameKind::Padding,
                payload: &[],
            },
            out,
        )
    }

    /// Seals a close frame with a reason byte into `out`.
    pub fn seal_close(
        &mut self,
        reason: u8,
        out: &mut [u8; FRAME_LEN],
    ) -> Result<(), ChannelError> {
        seal_body(
            &mut self.send,
            FrameBody {
                kind: FrameKind::Close,
                payload: &[reason],
            },
            out,
        )
    }

    /// Opens one frame received from the peer, in place. A completed
    /// message stays readable through [`Channel::message`] until the next
    /// call of `open`. On error nothing changes, and the session must end.
    pub fn open(&mut self, frame: &mut [u8; FRAME_LEN]) -> Result<Received, ChannelError> {
        let saved = *frame;
        let mut saved_key = self.recv.key;
        self.recv.open(frame)?;
        // Parse the plaintext where it was decrypted: it is the caller's
        // buffer either way (`open` works in place), and a copy would need
        // its own wipe (a volatile write per byte, a tenth of a frame's
        // cost).
        let result = match frame.first_chunk::<FRAME_BODY_LEN>() {
            Some(body) => self.absorb(body),
            None => Err(ChannelError::MalformedFrame),
        };
        if result.is_err() {
            // Leave the caller's bytes and our counter as they were.
            *frame = saved;
            self.recv.key = saved_key;
            self.recv.counter -= 1;
        }
        saved_key.zeroize();
        result
    }

    fn absorb(&mut self, body: &[u8; FRAME_BODY_LEN]) -> Result<Received, ChannelError> {
        let parsed = FrameBody::parse(body)?;
        if self.rx_complete {
            self.rx.clear();
            self.rx_complete = false;
        }
        match parsed.kind {
            FrameKind::Padding => Ok(Received::Nothing),
            FrameKind::Close => Ok(Received::Close(
                parsed.payload.first().copied().unwrap_or(0),
            )),
            FrameKind::Fragment | FrameKind::Final => {
                if self.rx.extend_from_slice(parsed.payload).is_err() {
                    return Err(ChannelError::MessageTooLarge);
                }
                if parsed.kind == FrameKind::Final {
                    self.rx_complete = true;
                    Ok(Received::Message)
                } else {
                    Ok(Received::Nothing)
                }
            }
        }
    }

    /// The last completed message, until the next [`Channel::open`].
    pub fn message(&self) -> Option<&[u8]> {
        self.rx_complete.then_some(self.rx.as_slice())
    }
}

fn seal_body(
    cipher: &mut DirectionCipher,
    body: FrameBody<'_>,
    out: &mut [u8; FRAME_LEN],
) -> Result<(), ChannelError> {
    // Emit straight into `out` and encrypt it there: no plaintext copy to
    // wipe. `emit` checks the payload before it writes anything, so on
    // error `out` is untouched.
    let Some(plain) = out.first_chunk_mut::<FRAME_BODY_LEN>() else {
        return Err(ChannelError::MalformedFrame);
    };
    body.emit(plain)?;
    cipher.seal(out)
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.rx.as_mut_slice().zeroize();
        self.tx.as_mut_slice().zeroize();
        self.handshake_hash.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(rekey_interval: u64) -> (Channel, Channel) {
        let keys_a = SessionKeys {
            send: [1; KEY_LEN],
            recv: [2; KEY_LEN],
            handshake_hash: [0; HASH_LEN],
        };
        let keys_b = SessionKeys {
            send: [2; KEY_LEN],
            recv: [1; KEY_LEN],
            handshake_hash: [0; HASH_LEN],
        };
        (
            Channel::new(&keys_a, rekey_interval),
            Channel::new(&keys_b, rekey_interval),
        )
    }

    #[test]
    fn peer_message_over_the_limit_is_refused_without_growing() {
        let (mut a, mut b) = pair(DEFAULT_REKEY_INTERVAL);
        let chunk = [0x55u8; FRAME_PAYLOAD_MAX];
        let mut frame = [0u8; FRAME_LEN];
        let fragments = MAX_MESSAGE_LEN / FRAME_PAYLOAD_MAX;
        for _ in 0..fragments {
            seal_body(
                &mut a.send,
                FrameBody {
                    kind: FrameKind::Fragment,
                    payload: &chunk,
                },
                &mut frame,
            )
            .unwrap();
            assert_eq!(b.open(&mut frame), Ok(Received::Nothing));
        }
        seal_body(
            &mut a.send,
            FrameBody {
                kind: FrameKind::Final,
                payload: &chunk,
            },
            &mut frame,
        )
        .unwrap();
        let before = b.counters();
        assert_eq!(b.open(&mut frame), Err(ChannelError::MessageTooLarge));
        assert_eq!(
            b.counters(),
            before,
            "a rejected frame does not move the counter"
        );
        assert!(b.rx.len() <= MAX_MESSAGE_LEN);
    }

    #[test]
    fn counter_exhaustion_is_an_error_not_a_wrap() {
        let (mut a, _) = pair(DEFAULT_REKEY_INTERVAL);
        a.send.counter = LAST_COUNTER;
        let mut frame = [0u8; FRAME_LEN];
        a.seal_padding(&mut frame).unwrap();
        assert_eq!(
            a.seal_padding(&mut frame),
            Err(ChannelError::CounterExhausted)
        );
    }

    #[test]
    fn rekey_happens_at_epoch_boundaries_on_both_sides() {
        let (mut a, mut b) = pair(2);
        let mut frame = [0u8; FRAME_LEN];
        let key0 = a.send.key;
        for _ in 0..5 {
            a.seal_padding(&mut frame).unwrap();
            assert_eq!(b.open(&mut frame), Ok(Received::Nothing));
        }
        assert_ne!(a.send.key, key0);
        assert_eq!(a.send.key, b.recv.key);
    }
}
