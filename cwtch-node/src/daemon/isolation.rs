//! Which SOCKS isolation key a dial uses (SPEC.md section 9, NODE.md
//! section 2): tor keeps streams of different keys on different circuits.
//!
//! - A session with a server is anonymous: every dial gets a fresh key, so
//!   no two sessions share a circuit.
//! - A link to a contact uses our identity's key, until a dial to that
//!   contact stalls. Tor attaches a new stream to a rendezvous circuit of
//!   the same key that is still waiting for the service, so once an
//!   introduction point acknowledges an introduction that no service
//!   answers (after the service restarted, seen in tor's info log on the
//!   private Tor network), every retry with that key stalls too. After a
//!   stall, dials to that contact use a fresh key: new circuits, and with
//!   the built-in Tor a fresh copy of the descriptor, whose per-key cache
//!   would otherwise keep the stale one.
//!
//! The keys are never shared between identities: each names our address.

use std::collections::HashMap;

use cwtch_proto::OnionAddress;
use cwtch_transport_socks::IsolationKey;

/// Contacts remembered with a key of their own. Past this the memory is
/// cleared: the cost is one more stall for a contact that needed one.
const MAX_REMEMBERED: usize = 1024;

/// The isolation keys of one identity's dials.
#[derive(Debug)]
pub struct Isolation {
    me: OnionAddress,
    /// Contacts whose last stalled dial gave them a key of their own.
    after_stall: HashMap<String, IsolationKey>,
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
    /// else the contact's own key after a stall, else our identity's.
    pub fn key(&self, to: &OnionAddress, server: bool, nonce: u64) -> IsolationKey {
        if server {
            return IsolationKey::anonymous(nonce);
        }
        self.after_stall
            .get(to.as_str())
            .cloned()
            .unwrap_or_else(|| IsolationKey::for_identity(&self.me))
    }

    /// A dial to contact `to` stalled (timed out, or tor lost its
    /// circuit): the next ones use a new key, made from `nonce`.
    pub fn stalled(&mut self, to: &OnionAddress, nonce: u64) {
        if self.after_stall.len() >= MAX_REMEMBERED && !self.after_stall.contains_key(to.as_str()) {
            self.after_stall.clear();
        }
        self.after_stall.insert(
            to.as_str().to_owned(),
            IsolationKey::for_connection(&self.me, nonce),
        );
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

        keys.stalled(&bob, 7);
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

        keys.stalled(&bob, 8);
        assert_ne!(
            keys.key(&bob, false, 1).as_str(),
            bobs.as_str(),
            "each stall, new"
        );
    }

    #[test]
    fn server_sessions_get_a_fresh_key_naming_no_identity() {
        let me = address(1);
        let server = address(9);
        let mut keys = Isolation::new(me);
        keys.stalled(&server, 3);
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
        for i in 0..(MAX_REMEMBERED as u64 + 10) {
            let contact = Identity::from_seed(&{
                let mut s = [0u8; 32];
                s[..8].copy_from_slice(&i.to_le_bytes());
                s[31] = 0xEE;
                s
            })
            .address();
            keys.stalled(&contact, i);
            assert!(keys.after_stall.len() <= MAX_REMEMBERED);
        }
    }
}
