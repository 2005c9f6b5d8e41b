//! Server adverts shared inside a group (SPEC.md section 13.4): the body
//! of a sealed group message of kind [`MessageKind::ADVERTS`].
//!
//! Layout: `version (1) || n (1, 1..=8) || n × advert (148 bytes each,
//! section 13.1)`, no server twice. Every advert is decoded and its
//! signature verified ([`ServerAdvert::decode`]); whether it is still valid
//! depends on the clock, which the caller checks
//! ([`ServerAdvert::check_time`]). The adverts are kept as the bytes
//! received, so a decoded body re-encodes to exactly those bytes: one
//! encoding per value.

use crate::server::advert::{ADVERT_LEN, ServerAdvert};

use super::control::{CONTROL_VERSION, ControlError};
#[allow(unused_imports)] // named in the docs
use super::message::MessageKind;

/// The most adverts one message carries.
pub const MAX_GROUP_ADVERTS: usize = 8;
/// Longest encoding of a [`GroupAdverts`] (1186 bytes: fits in one sealed
/// message, whose body holds 1587).
pub const GROUP_ADVERTS_MAX_LEN: usize = 2 + MAX_GROUP_ADVERTS * ADVERT_LEN;
const _: () = assert!(GROUP_ADVERTS_MAX_LEN <= super::message::MAX_BODY_LEN);

/// Up to [`MAX_GROUP_ADVERTS`] signed server adverts, for members of a
/// group to add to their directories.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GroupAdverts {
    adverts: heapless::Vec<([u8; ADVERT_LEN], ServerAdvert), MAX_GROUP_ADVERTS>,
}

impl GroupAdverts {
    /// No advert yet (not encodable until one is added).
    pub fn new() -> Self {
        GroupAdverts::default()
    }

    /// Adds a signed advert: decoded and verified first
    /// ([`ControlError::BadAdvert`]); a server already present
    /// ([`ControlError::DuplicateServer`]) or a full list
    /// ([`ControlError::BadCount`]) is refused. On error nothing changed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), ControlError> {
        let raw: [u8; ADVERT_LEN] = bytes.try_into().map_err(|_| ControlError::WrongLength)?;
        let advert = ServerAdvert::decode(&raw).map_err(ControlError::BadAdvert)?;
        if self.adverts.iter().any(|(_, a)| a.server == advert.server) {
            return Err(ControlError::DuplicateServer);
        }
        self.adverts
            .push((raw, advert))
            .map_err(|_| ControlError::BadCount)
    }

    /// How many adverts it holds.
    pub fn len(&self) -> usize {
        self.adverts.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.adverts.is_empty()
    }

    /// The adverts, each with its signed bytes, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8; ADVERT_LEN], &ServerAdvert)> {
        self.adverts.iter().map(|(raw, a)| (raw, a))
    }

    /// Encodes into `out`; returns the encoding. An empty list is
    /// [`ControlError::BadCount`].
    pub fn encode<'b>(&self, out: &'b mut [u8]) -> Result<&'b [u8], ControlError> {
        if self.adverts.is_empty() {
            return Err(ControlError::BadCount);
        }
        let len = 2 + self.adverts.len() * ADVERT_LEN;
        let out = out.get_mut(..len).ok_or(ControlError::BufferTooSmall)?;
        let (head, rest) = out.split_at_mut(2);
        head.copy_from_slice(&[CONTROL_VERSION, self.adverts.len() as u8]);
        for (chunk, (raw, _)) in rest.chunks_exact_mut(ADVERT_LEN).zip(&self.adverts) {
            chunk.copy_from_slice(raw);
        }
        Ok(out)
    }

    /// Decodes a body that must be exactly one list, every advert verified.
    pub fn decode(bytes: &[u8]) -> Result<Self, ControlError> {
        let (&version, rest) = bytes.split_first().ok_or(ControlError::WrongLength)?;
        if version != CONTROL_VERSION {
            return Err(ControlError::UnknownVersion(version));
        }
        let (&n, body) = rest.split_first().ok_or(ControlError::WrongLength)?;
        let n = usize::from(n);
        if n == 0 || n > MAX_GROUP_ADVERTS {
            return Err(ControlError::BadCount);
        }
        if body.len() != n * ADVERT_LEN {
            return Err(ControlError::WrongLength);
        }
        let mut list = GroupAdverts::new();
        for chunk in body.chunks_exact(ADVERT_LEN) {
            list.push(chunk)?;
        }
        Ok(list)
    }
}

/// A member posts server adverts into a group at most this often: 10
/// minutes between two posts of new servers.
pub const NEW_ADVERTS_EVERY: crate::Duration = crate::Duration::from_secs(10 * 60);
/// And refreshes the adverts it shared once a day.
pub const REFRESH_ADVERTS_EVERY: crate::Duration = crate::Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::server::advert::{AdvertError, Requirements, Retention};

    const ISSUED: u64 = 1_767_225_600;

    fn signed(seed: u8) -> [u8; ADVERT_LEN] {
        let id = Identity::from_seed(&[seed; 32]);
        ServerAdvert {
            server: id.public(),
            issued_at: ISSUED,
            expires_at: ISSUED + 7 * 86_400,
            requirements: Requirements::default(),
            retention: Retention::default(),
        }
        .sign(&id)
        .unwrap()
    }

    #[test]
    fn round_trips_and_keeps_the_bytes() {
        let mut list = GroupAdverts::new();
        list.push(&signed(1)).unwrap();
        list.push(&signed(2)).unwrap();
        let mut buf = [0u8; GROUP_ADVERTS_MAX_LEN];
        let bytes = list.encode(&mut buf).unwrap().to_vec();
        assert_eq!(bytes.len(), 2 + 2 * ADVERT_LEN);
        assert_eq!(&bytes[..2], &[1, 2]);
        assert_eq!(&bytes[2..150], &signed(1));
        let back = GroupAdverts::decode(&bytes).unwrap();
        assert_eq!(back, list);
        let mut servers = back.iter().map(|(_, a)| a.server);
        assert_eq!(servers.next(), Some(Identity::from_seed(&[1; 32]).public()));
        assert_eq!(servers.next(), Some(Identity::from_seed(&[2; 32]).public()));
        assert_eq!(servers.next(), None);
        let mut full = GroupAdverts::new();
        for seed in 1..=MAX_GROUP_ADVERTS as u8 {
            full.push(&signed(seed)).unwrap();
        }
        assert_eq!(full.push(&signed(99)), Err(ControlError::BadCount));
        assert_eq!(full.len(), MAX_GROUP_ADVERTS);
        let bytes = full.encode(&mut buf).unwrap();
        assert_eq!(bytes.len(), GROUP_ADVERTS_MAX_LEN);
    }

    #[test]
    fn refuses_misuse() {
        let mut list = GroupAdverts::new();
        let mut buf = [0u8; GROUP_ADVERTS_MAX_LEN];
        assert_eq!(list.encode(&mut buf), Err(ControlError::BadCount));
        // A forged or altered advert never enters the list.
        let mut forged = signed(1);
        forged[60] ^= 1;
        assert_eq!(
            list.push(&forged),
            Err(ControlError::BadAdvert(AdvertError::BadSignature))
        );
        assert_eq!(list.push(&forged[..147]), Err(ControlError::WrongLength));
        assert!(list.is_empty());
        list.push(&signed(1)).unwrap();
        assert_eq!(list.push(&signed(1)), Err(ControlError::DuplicateServer));
        assert_eq!(list.len(), 1);
        let mut small = [0u8; 100];
        assert_eq!(list.encode(&mut small), Err(ControlError::BufferTooSmall));

        let bytes = list.encode(&mut buf).unwrap().to_vec();
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(
            GroupAdverts::decode(&v2),
            Err(ControlError::UnknownVersion(2))
        );
        let mut zero = bytes.clone();
        zero[1] = 0;
        assert_eq!(GroupAdverts::decode(&zero), Err(ControlError::BadCount));
        let mut nine = bytes.clone();
        nine[1] = 9;
        assert_eq!(GroupAdverts::decode(&nine), Err(ControlError::BadCount));
        let mut two = bytes.clone();
        two[1] = 2;
        assert_eq!(GroupAdverts::decode(&two), Err(ControlError::WrongLength));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(GroupAdverts::decode(&long), Err(ControlError::WrongLength));
        assert_eq!(
            GroupAdverts::decode(&bytes[..bytes.len() - 1]),
            Err(ControlError::WrongLength)
        );
        assert_eq!(GroupAdverts::decode(&[]), Err(ControlError::WrongLength));
        assert_eq!(GroupAdverts::decode(&[1]), Err(ControlError::WrongLength));
        let mut tampered = bytes.clone();
        tampered[2 + 40] ^= 0x80;
        assert!(matches!(
            GroupAdverts::decode(&tampered),
            Err(ControlError::BadAdvert(_))
        ));
        let mut dup = bytes.clone();
        dup[1] = 2;
        dup.extend_from_slice(&signed(1));
        assert_eq!(
            GroupAdverts::decode(&dup),
            Err(ControlError::DuplicateServer)
        );
        // Every single bit flip of a valid body is refused.
        for i in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[i / 8] ^= 1 << (i % 8);
            assert!(GroupAdverts::decode(&flipped).is_err(), "bit {i}");
        }
    }
}
