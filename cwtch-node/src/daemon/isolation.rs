//! Which SOCKS isolation key a dial uses (SPEC.md section 9, NODE.md
//! section 2): tor keeps streams of different keys on different circuits.
//!
//! - A session with a server is anonymous: every dial gets a fresh random
//!   key naming no identity, so no two sessions share a circuit.
//! - A link to a contact uses our identity's key, until a dial to that
//!   contact stalls. Tor attaches a new stream to a rendezvous circuit of
//!   the same key that is still waiting for the service, so once an
//!   introduction point acknowledges an introduction that no service
//!   answers (after the service restarted, seen in tor's info log on the
//!   private Tor network), every retry with that key stalls too. After a
//!   stall, dials to that contact move to the next key of a small ring:
//!   new circuits, and with the built-in Tor a fresh copy of the
//!   descriptor, whose per-key cache would otherwise keep the stale one.
//!
//! The ring bounds what a contact (or a relay) that makes our dials stall
//! on purpose can cost us: at most [`RING`] keys per contact besides the
//! identity's, however often it stalls, so arti keeps at most that many
//! copies of its state, and tor's circuits of a key are long closed when
//! the ring comes back to it (a stalled dial takes up to 60 s, and tor
//! closes a rendezvous circuit left waiting after about three circuit
//! build timeouts). Every key names our address: no two identities share
//! one.

use std::collections::HashMap;

use cwtch_proto::OnionAddress;
use cwtch_transport_socks::IsolationKey;

/// Keys per contact used after stalls, in turn.
pub const RING: u8 = 4;

/// Contacts remembered with a key of their own. Past this, one of them
/// (any) goes back to the identity's key.
const MAX_REMEMBERED: usize = 1024;

/// The isolation keys of one identity's dials.
#[derive(Debug)]
pub struct Isolation {
    me: OnionAddress,
    /// Per contact whose dial stalled: its place in the ring, 1..=RING.
    after_stall: HashMap<String, u8>,
}

impl Isolation {
    /// Keys for the dials of the identity at `me`.
    pub fn new(me: OnionAddress) -> Self {
        Isolation {
            me,
            after_stall: HashMap::new(),
        }
    }

    /// The key of a dial to `to`: fresh from `nonce` for a server session,
    /// else the contact's place in the ring after a stall, else our
    /// identity's.
    pub fn key(&self, to: &OnionAddress, server: bool, nonce: u64) -> IsolationKey {
        if server {
            return IsolationKey::anonymous(nonce);
        }
        match self.after_stall.get(to.as_str()) {
            Some(&place) => IsolationKey::for_connection(&self.me, u64::from(place)),
            None => IsolationKey::for_identity(&self.me),
        }
    }

    /// A dial to contact `to` stalled (timed out, or tor lost its
    /// circuit): the next ones use the next key of its ring.
    pub fn stalled(&mut self, to: &OnionAddress) {
        if self.after_stall.len() >= MAX_REMEMBERED
            && !self.after_stall.contains_key(to.as_str())
            && let Some(any) = self.after_stall.keys().next().cloned()
        {
            self.after_stall.remove(&any);
        }
        let place = self.after_stall.entry(to.as_str().to_owned()).or_insert(0);
        *place = *place % RING + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cwtch_proto::Identity;

    fn address(seed: u8) -> OnionAddress {
        Identity::from_seed(&[seed; 32]).address()
    }

    #[test]
    fn a_contact_keeps_the_identity_key_until_a_dial_stalls() {
        let me = address(1);
        let (bob, carol) = (address(2), address(3));
        let mut keys = Isolation::new(me);
        let ours = IsolationKey::for_identity(&me);
        assert_eq!(keys.key(&bob, false, 1).as_str(), ours.as_str());
        assert_eq!(keys.key(&bob, false, 2).as_str(), ours.as_str());

        keys.stalled(&bob);
        let bobs = keys.key(&bob, false, 1);
        assert_ne!(bobs.as_str(), ours.as_str(), "new circuits after a stall");
        assert!(
            bobs.as_str().contains(me.as_str()),
            "still apart from other identities"
        );
        assert_eq!(
            keys.key(&bob, false, 2).as_str(),
            bobs.as_str(),
            "then kept"
        );
        assert_eq!(
            keys.key(&carol, false, 1).as_str(),
            ours.as_str(),
            "others unchanged"
        );

        keys.stalled(&bob);
        assert_ne!(
            keys.key(&bob, false, 1).as_str(),
            bobs.as_str(),
            "each stall, the next key"
        );
    }

    #[test]
    fn stalls_on_purpose_cost_at_most_the_ring() {
        let me = address(1);
        let bob = address(2);
        let mut keys = Isolation::new(me);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            keys.stalled(&bob);
            seen.insert(keys.key(&bob, false, 0).as_str().to_owned());
        }
        assert_eq!(seen.len(), usize::from(RING));
        assert!(!seen.contains(IsolationKey::for_identity(&me).as_str()));
    }

    #[test]
    fn server_sessions_get_a_fresh_key_naming_no_identity() {
        let me = address(1);
        let server = address(9);
        let mut keys = Isolation::new(me);
        keys.stalled(&server);
        let a = keys.key(&server, true, 1);
        let b = keys.key(&server, true, 2);
        assert_ne!(a.as_str(), b.as_str());
        assert!(!a.as_str().contains(me.as_str()));
        assert_ne!(a.as_str(), IsolationKey::for_identity(&me).as_str());
    }

    #[test]
    fn the_memory_is_bounded() {
        let me = address(1);
        let mut keys = Isolation::new(me);
        let last = address(0xEE);
        for i in 0..(MAX_REMEMBERED as u64 + 10) {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            seed[31] = 0xEE;
            keys.stalled(&Identity::from_seed(&seed).address());
            assert!(keys.after_stall.len() <= MAX_REMEMBERED);
        }
        // The newest stall is kept when the memory is full.
        keys.stalled(&last);
        assert_eq!(keys.after_stall.len(), MAX_REMEMBERED);
        assert_ne!(
            keys.key(&last, false, 0).as_str(),
            IsolationKey::for_identity(&me).as_str()
        );
    }
}
