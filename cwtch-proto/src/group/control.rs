//! Control messages inside a group, and the request a member sends to
//! another member for sealed blobs it lacks.
//!
//! Both are specified in SPEC.md: "Moving a group to another server"
//! (section 15) and "Recovery of missing messages" (section 14).
//!
//! - [`MoveNotice`] is the body of a sealed group message of kind
//!   [`MessageKind::MOVE`]: it names the servers the group uses from now
//!   on. It is signed, chained and gap-tracked like any message, because it
//!   *is* one.
//! - [`ResendWanted`] is what a [`PeerMessage::ResendRequest`] carries: a
//!   group id and up to [`MAX_WANTED_RANGES`] ranges of one member's
//!   sequence numbers, each at most [`MAX_RANGE_SPAN`] long.
//!
//! Both encodings are fixed-layout and canonical: one value has exactly one
//! encoding and decoding refuses anything else with a typed error.
//!
//! [`PeerMessage::ResendRequest`]: crate::peer::PeerMessage::ResendRequest

use core::fmt;

use crate::identity::{PUBLIC_KEY_LEN, PublicIdentity};
use crate::onion::OnionAddress;

use super::gap::MissingRange;
use super::message::MAX_SEQ;
#[allow(unused_imports)] // named in the docs
use super::message::MessageKind;
use super::secret::{GROUP_ID_LEN, MAX_SERVERS, MEMBER_ID_LEN, MemberId, ServerList};

/// Version byte of both encodings.
pub const CONTROL_VERSION: u8 = 1;
/// Longest encoding of a [`MoveNotice`].
pub const MOVE_NOTICE_MAX_LEN: usize = 2 + MAX_SERVERS * PUBLIC_KEY_LEN;
/// Most ranges one [`ResendWanted`] names.
pub const MAX_WANTED_RANGES: usize = 8;
/// Most sequence numbers one range names (`last - first + 1`).
pub const MAX_RANGE_SPAN: u64 = 64;
/// Length of one encoded range: member id, first, last (u64 LE).
const RANGE_LEN: usize = MEMBER_ID_LEN + 16;
/// Longest encoding of a [`ResendWanted`].
pub const WANTED_MAX_LEN: usize = 2 + GROUP_ID_LEN + MAX_WANTED_RANGES * RANGE_LEN;

/// Why bytes are not a valid control body or resend request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlError {
    /// A version this implementation does not know.
    UnknownVersion(u8),
    /// Shorter or longer than its own counts say.
    WrongLength,
    /// A count of zero or above the limit.
    BadCount,
    /// A server key that is not a valid ed25519 point.
    BadServerKey,
    /// The same server twice.
    DuplicateServer,
    /// A range with `first > last`, longer than [`MAX_RANGE_SPAN`], or
    /// beyond [`MAX_SEQ`].
    BadRange,
    /// Ranges not in ascending order, or overlapping.
    NotCanonical,
    /// The output buffer is too small.
    BufferTooSmall,
    /// A server advert that does not decode or verify (section 13.1).
    BadAdvert(crate::server::advert::AdvertError),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::UnknownVersion(v) => write!(f, "unknown control version {v}"),
            ControlError::WrongLength => f.write_str("control body has the wrong length"),
            ControlError::BadCount => f.write_str("count is zero or above its limit"),
            ControlError::BadServerKey => f.write_str("a server key is not a valid key"),
            ControlError::DuplicateServer => f.write_str("a server is named twice"),
            ControlError::BadRange => f.write_str("a range is empty, too long or out of range"),
            ControlError::NotCanonical => f.write_str("ranges are not sorted and disjoint"),
            ControlError::BufferTooSmall => f.write_str("output buffer too small"),
            ControlError::BadAdvert(e) => write!(f, "a server advert is not valid: {e}"),
        }
    }
}

impl core::error::Error for ControlError {}

/// "The group now uses these servers": the body of a [`MessageKind::MOVE`]
/// message. Layout: `version (1) || n (1, 1..=4) || n × server ed25519 key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveNotice {
    servers: ServerList,
}

impl MoveNotice {
    /// A notice naming `servers` (1 to [`MAX_SERVERS`], no repeats).
    pub fn new(servers: &[OnionAddress]) -> Result<Self, ControlError> {
        if servers.is_empty() || servers.len() > MAX_SERVERS {
            return Err(ControlError::BadCount);
        }
        let mut list = ServerList::new();
        for s in servers {
            if list.contains(s) {
                return Err(ControlError::DuplicateServer);
            }
            list.push(*s).map_err(|_| ControlError::BadCount)?;
        }
        Ok(MoveNotice { servers: list })
    }

    /// The servers the group moves to.
    pub fn servers(&self) -> &[OnionAddress] {
        &self.servers
    }

    /// Encodes into `out`; returns the encoding.
    pub fn encode<'b>(&self, out: &'b mut [u8]) -> Result<&'b [u8], ControlError> {
        let len = 2 + self.servers.len() * PUBLIC_KEY_LEN;
        let out = out.get_mut(..len).ok_or(ControlError::BufferTooSmall)?;
        let (head, keys) = out.split_at_mut(2);
        head.copy_from_slice(&[CONTROL_VERSION, self.servers.len() as u8]);
        for (chunk, server) in keys.chunks_exact_mut(PUBLIC_KEY_LEN).zip(&self.servers) {
            chunk.copy_from_slice(server.public_identity().as_bytes());
        }
        Ok(out)
    }

    /// Decodes a body that must be exactly one notice.
    pub fn decode(bytes: &[u8]) -> Result<Self, ControlError> {
        let (&version, rest) = bytes.split_first().ok_or(ControlError::WrongLength)?;
        if version != CONTROL_VERSION {
            return Err(ControlError::UnknownVersion(version));
        }
        let (&n, keys) = rest.split_first().ok_or(ControlError::WrongLength)?;
        let n = usize::from(n);
        if n == 0 || n > MAX_SERVERS {
            return Err(ControlError::BadCount);
        }
        if keys.len() != n * PUBLIC_KEY_LEN {
            return Err(ControlError::WrongLength);
        }
        let mut list = ServerList::new();
        for chunk in keys.chunks_exact(PUBLIC_KEY_LEN) {
            let key: &[u8; PUBLIC_KEY_LEN] =
                chunk.try_into().map_err(|_| ControlError::WrongLength)?;
            let address = PublicIdentity::from_bytes(key)
                .map_err(|_| ControlError::BadServerKey)?
                .address();
            if list.contains(&address) {
                return Err(ControlError::DuplicateServer);
            }
            list.push(address).map_err(|_| ControlError::BadCount)?;
        }
        Ok(MoveNotice { servers: list })
    }
}

/// "Send me these sealed blobs of group `group` if you hold them": what a
/// recovery request carries. Layout: `version (1) || group id (32) ||
/// n (1, 1..=8) || n × (member id (16) || first (u64 LE) || last (u64 LE))`,
/// ranges sorted by (member, first) and disjoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResendWanted {
    group: [u8; GROUP_ID_LEN],
    ranges: heapless::Vec<MissingRange, MAX_WANTED_RANGES>,
}

impl ResendWanted {
    /// Builds a request from the tracker's missing ranges (the first 64):
    /// clips each to [`MAX_RANGE_SPAN`] (its oldest messages first), and
    /// takes at most [`MAX_WANTED_RANGES`], fairly: every member's oldest
    /// range before anyone's second. `None` if there is nothing to ask.
    pub fn from_missing(
        group: &[u8; GROUP_ID_LEN],
        missing: impl IntoIterator<Item = MissingRange>,
    ) -> Option<Self> {
        let mut all: heapless::Vec<MissingRange, 64> = heapless::Vec::new();
        for r in missing {
            if r.first > r.last || r.last > MAX_SEQ {
                continue;
            }
            let last = r.last.min(r.first.saturating_add(MAX_RANGE_SPAN - 1));
            if all
                .push(MissingRange {
                    member: r.member,
                    first: r.first,
                    last,
                })
                .is_err()
            {
                break;
            }
        }
        all.sort_unstable_by_key(|r| (r.member, r.first));
        let mut distinct: heapless::Vec<MissingRange, 64> = heapless::Vec::new();
        let mut prev: Option<MissingRange> = None;
        for r in all {
            if let Some(p) = prev
                && p.member == r.member
                && r.first <= p.last
            {
                continue; // overlapping input: keep the first
            }
            let _ = distinct.push(r);
            prev = Some(r);
        }
        // Fair to every member: each one's oldest range first, then each
        // one's second, and so on, so that a member with many gaps of its
        // own (or a low member id) cannot crowd the others out.
        let mut ranges: heapless::Vec<MissingRange, MAX_WANTED_RANGES> = heapless::Vec::new();
        let mut round = 0usize;
        while !ranges.is_full() {
            let mut any = false;
            let mut nth = 0usize;
            let mut member = None;
            for r in &distinct {
                if member != Some(r.member) {
                    member = Some(r.member);
                    nth = 0;
                } else {
                    nth += 1;
                }
                if nth == round {
                    any = true;
                    if ranges.push(*r).is_err() {
                        break;
                    }
                }
            }
            if !any {
                break;
            }
            round += 1;
        }
        ranges.sort_unstable_by_key(|r| (r.member, r.first));
        if ranges.is_empty() {
            return None;
        }
        Some(ResendWanted {
            group: *group,
            ranges,
        })
    }

    /// The group asked about.
    pub fn group(&self) -> &[u8; GROUP_ID_LEN] {
        &self.group
    }

    /// The ranges asked for.
    pub fn ranges(&self) -> &[MissingRange] {
        &self.ranges
    }

    /// Encodes into `out`; returns the encoding.
    pub fn encode<'b>(&self, out: &'b mut [u8]) -> Result<&'b [u8], ControlError> {
        let len = 2 + GROUP_ID_LEN + self.ranges.len() * RANGE_LEN;
        let out = out.get_mut(..len).ok_or(ControlError::BufferTooSmall)?;
        let (head, rest) = out.split_at_mut(1 + GROUP_ID_LEN);
        let (version, group) = head.split_at_mut(1);
        version.copy_from_slice(&[CONTROL_VERSION]);
        group.copy_from_slice(&self.group);
        let (count, ranges) = rest.split_at_mut(1);
        count.copy_from_slice(&[self.ranges.len() as u8]);
        for (chunk, r) in ranges.chunks_exact_mut(RANGE_LEN).zip(&self.ranges) {
            let (member, seqs) = chunk.split_at_mut(MEMBER_ID_LEN);
            member.copy_from_slice(&r.member.0);
            let (first, last) = seqs.split_at_mut(8);
            first.copy_from_slice(&r.first.to_le_bytes());
            last.copy_from_slice(&r.last.to_le_bytes());
        }
        Ok(out)
    }

    /// Decodes bytes that must be exactly one request.
    pub fn decode(bytes: &[u8]) -> Result<Self, ControlError> {
        let (&version, rest) = bytes.split_first().ok_or(ControlError::WrongLength)?;
        if version != CONTROL_VERSION {
            return Err(ControlError::UnknownVersion(version));
        }
        let group: [u8; GROUP_ID_LEN] = rest
            .get(..GROUP_ID_LEN)
            .and_then(|g| g.try_into().ok())
            .ok_or(ControlError::WrongLength)?;
        let rest = rest.get(GROUP_ID_LEN..).ok_or(ControlError::WrongLength)?;
        let (&n, body) = rest.split_first().ok_or(ControlError::WrongLength)?;
        let n = usize::from(n);
        if n == 0 || n > MAX_WANTED_RANGES {
            return Err(ControlError::BadCount);
        }
        if body.len() != n * RANGE_LEN {
            return Err(ControlError::WrongLength);
        }
        let mut ranges: heapless::Vec<MissingRange, MAX_WANTED_RANGES> = heapless::Vec::new();
        for chunk in body.chunks_exact(RANGE_LEN) {
            let (member, seqs) = chunk.split_at(MEMBER_ID_LEN);
            let member: [u8; MEMBER_ID_LEN] =
                member.try_into().map_err(|_| ControlError::WrongLength)?;
            let (first, last) = seqs.split_at(8);
            let first =
                u64::from_le_bytes(first.try_into().map_err(|_| ControlError::WrongLength)?);
            let last = u64::from_le_bytes(last.try_into().map_err(|_| ControlError::WrongLength)?);
            if first > last || last > MAX_SEQ || last - first >= MAX_RANGE_SPAN {
                return Err(ControlError::BadRange);
            }
            let r = MissingRange {
                member: MemberId(member),
                first,
                last,
            };
            if let Some(p) = ranges.last()
                && (p.member > r.member || (p.member == r.member && p.last >= r.first))
            {
                return Err(ControlError::NotCanonical);
            }
            ranges.push(r).map_err(|_| ControlError::BadCount)?;
        }
        Ok(ResendWanted { group, ranges })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn server(seed: u8) -> OnionAddress {
        Identity::from_seed(&[seed; 32]).address()
    }

    #[test]
    fn move_notice_round_trips_and_refuses_misuse() {
        let n = MoveNotice::new(&[server(1), server(2)]).unwrap();
        let mut buf = [0u8; MOVE_NOTICE_MAX_LEN];
        let bytes = n.encode(&mut buf).unwrap().to_vec();
        assert_eq!(bytes.len(), 2 + 64);
        assert_eq!(&bytes[..2], &[1, 2]);
        assert_eq!(MoveNotice::decode(&bytes).unwrap(), n);
        assert_eq!(
            MoveNotice::new(&[server(1), server(1)]),
            Err(ControlError::DuplicateServer)
        );
        assert_eq!(MoveNotice::new(&[]), Err(ControlError::BadCount));
        let mut dup = bytes.clone();
        dup.copy_within(2..34, 34);
        assert_eq!(MoveNotice::decode(&dup), Err(ControlError::DuplicateServer));
        assert_eq!(
            MoveNotice::decode(&bytes[..bytes.len() - 1]),
            Err(ControlError::WrongLength)
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(MoveNotice::decode(&long), Err(ControlError::WrongLength));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(
            MoveNotice::decode(&v2),
            Err(ControlError::UnknownVersion(2))
        );
        assert_eq!(MoveNotice::decode(&[1, 0]), Err(ControlError::BadCount));
        assert_eq!(MoveNotice::decode(&[1, 5]), Err(ControlError::BadCount));
        assert_eq!(MoveNotice::decode(&[]), Err(ControlError::WrongLength));
        let mut small = [0u8; 10];
        assert_eq!(n.encode(&mut small), Err(ControlError::BufferTooSmall));
    }

    fn range(m: u8, first: u64, last: u64) -> MissingRange {
        MissingRange {
            member: MemberId([m; 16]),
            first,
            last,
        }
    }

    #[test]
    fn wanted_is_built_clipped_sorted_and_canonical() {
        let w = ResendWanted::from_missing(
            &[7; 32],
            [
                range(2, 5, 5),
                range(1, 0, 1000),
                range(2, 1, 3),
                range(2, 2, 9),
            ],
        )
        .unwrap();
        assert_eq!(
            w.ranges(),
            &[range(1, 0, 63), range(2, 1, 3), range(2, 5, 5)]
        );
        let mut buf = [0u8; WANTED_MAX_LEN];
        let bytes = w.encode(&mut buf).unwrap().to_vec();
        assert_eq!(bytes.len(), 2 + 32 + 3 * 32);
        assert_eq!(ResendWanted::decode(&bytes).unwrap(), w);
        assert!(ResendWanted::from_missing(&[0; 32], []).is_none());
        let many = (0..20u8).map(|m| range(m, 0, 0));
        assert_eq!(
            ResendWanted::from_missing(&[0; 32], many)
                .unwrap()
                .ranges()
                .len(),
            MAX_WANTED_RANGES
        );
    }

    #[test]
    fn wanted_decoding_refuses_misuse() {
        let w = ResendWanted::from_missing(&[7; 32], [range(1, 0, 1), range(1, 4, 4)]).unwrap();
        let mut buf = [0u8; WANTED_MAX_LEN];
        let bytes = w.encode(&mut buf).unwrap().to_vec();
        // Swap the ranges: not sorted.
        let mut swapped = bytes.clone();
        let (a, b) = (34, 34 + 32);
        let first = swapped[a..b].to_vec();
        let second = swapped[b..b + 32].to_vec();
        swapped[a..b].copy_from_slice(&second);
        swapped[b..b + 32].copy_from_slice(&first);
        assert_eq!(
            ResendWanted::decode(&swapped),
            Err(ControlError::NotCanonical)
        );
        // first > last.
        let mut inverted = bytes.clone();
        inverted[a + 16..a + 24].copy_from_slice(&9u64.to_le_bytes());
        assert_eq!(ResendWanted::decode(&inverted), Err(ControlError::BadRange));
        // Too long a span.
        let mut wide = bytes.clone();
        wide[b + 24..b + 32].copy_from_slice(&(4 + MAX_RANGE_SPAN).to_le_bytes());
        assert_eq!(ResendWanted::decode(&wide), Err(ControlError::BadRange));
        // u64::MAX is not a sequence number.
        let mut huge = bytes.clone();
        huge[b + 16..b + 24].copy_from_slice(&u64::MAX.to_le_bytes());
        huge[b + 24..b + 32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(ResendWanted::decode(&huge), Err(ControlError::BadRange));
        // Counts and lengths.
        let mut zero = bytes.clone();
        zero[33] = 0;
        assert_eq!(ResendWanted::decode(&zero), Err(ControlError::BadCount));
        let mut nine = bytes.clone();
        nine[33] = 9;
        assert_eq!(ResendWanted::decode(&nine), Err(ControlError::BadCount));
        assert_eq!(
            ResendWanted::decode(&bytes[..bytes.len() - 1]),
            Err(ControlError::WrongLength)
        );
        assert_eq!(
            ResendWanted::decode(&bytes[..20]),
            Err(ControlError::WrongLength)
        );
        let mut v0 = bytes.clone();
        v0[0] = 0;
        assert_eq!(
            ResendWanted::decode(&v0),
            Err(ControlError::UnknownVersion(0))
        );
    }

    #[test]
    fn vectors_are_fixed() {
        // SPEC.md section 14: one range, member 0xaa × 16, 300..=301.
        let w = ResendWanted::from_missing(&[0x11; 32], [range(0xaa, 300, 301)]).unwrap();
        let mut buf = [0u8; WANTED_MAX_LEN];
        let mut expected = [0u8; 2 + 32 + 32];
        expected[0] = 1;
        expected[1..33].fill(0x11);
        expected[33] = 1;
        expected[34..50].fill(0xaa);
        expected[50..58].copy_from_slice(&300u64.to_le_bytes());
        expected[58..66].copy_from_slice(&301u64.to_le_bytes());
        assert_eq!(w.encode(&mut buf).unwrap(), &expected[..]);
        // SPEC.md section 15: the server of seed [1; 32].
        let n = MoveNotice::new(&[server(1)]).unwrap();
        let mut buf = [0u8; MOVE_NOTICE_MAX_LEN];
        let bytes = n.encode(&mut buf).unwrap();
        assert_eq!(&bytes[..2], &[1, 1]);
        assert_eq!(
            &bytes[2..],
            Identity::from_seed(&[1; 32]).public().as_bytes()
        );
    }
}
