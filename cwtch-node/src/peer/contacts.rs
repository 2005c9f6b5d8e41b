//! Contacts: who they are to us (accepted, a request, blocked), the names
//! we show, and the contact-request limits (the core's
//! `cwtch_proto::peer::requests`).

use std::collections::{BTreeMap, HashMap};

use cwtch_proto::OnionAddress;
use cwtch_proto::peer::requests::{RequestOrigin, request_text_allowed};
use cwtch_proto::peer::{PendingRequests, Standing};

use crate::control::api::{ApiError, ErrorCode};
use crate::model::{Contact, ContactState};

/// The contact list in memory (the profile holds the same records).
#[derive(Default)]
pub struct Contacts {
    map: BTreeMap<String, Contact>,
    /// Per pending request: the texts stored from it.
    request_texts: HashMap<String, u32>,
}

impl Contacts {
    /// The list as loaded, with the texts already stored from each pending
    /// request (the limit holds across restarts).
    pub fn new(list: Vec<Contact>, request_texts: HashMap<String, u32>) -> Self {
        Contacts {
            map: list.into_iter().map(|c| (c.address.clone(), c)).collect(),
            request_texts,
        }
    }

    /// A contact.
    pub fn get(&self, address: &str) -> Option<&Contact> {
        self.map.get(address)
    }

    /// A contact, to change (the caller stores it).
    pub fn get_mut(&mut self, address: &str) -> Option<&mut Contact> {
        self.map.get_mut(address)
    }

    /// Every contact, by address.
    pub fn all(&self) -> impl Iterator<Item = &Contact> {
        self.map.values()
    }

    /// Its state, if it is a contact.
    pub fn state(&self, address: &str) -> Option<ContactState> {
        self.map.get(address).map(|c| c.state)
    }

    /// Whether `address` is an accepted contact.
    pub fn is_accepted(&self, address: &str) -> bool {
        self.state(address) == Some(ContactState::Accepted)
    }

    /// Adds or replaces a contact.
    pub fn put(&mut self, contact: Contact) {
        if contact.state != ContactState::Request {
            self.request_texts.remove(&contact.address);
        }
        self.map.insert(contact.address.clone(), contact);
    }

    /// Forgets a contact.
    pub fn remove(&mut self, address: &str) -> Option<Contact> {
        self.request_texts.remove(address);
        self.map.remove(address)
    }

    /// The pending contact requests, by origin.
    pub fn pending_requests(&self) -> PendingRequests {
        let mut p = PendingRequests::default();
        for c in self
            .map
            .values()
            .filter(|c| c.state == ContactState::Request)
        {
            if c.from_mailbox {
                p.mailbox += 1;
            } else {
                p.online += 1;
            }
        }
        p
    }

    /// Whether one more request from `origin` may be kept.
    pub fn room_for(&self, origin: RequestOrigin) -> bool {
        self.pending_requests().room_for(origin)
    }

    /// How we stand with `address`, for its link's session.
    pub fn standing(&self, address: &str) -> Standing {
        match self.state(address) {
            Some(ContactState::Accepted) => Standing::Accepted,
            Some(ContactState::Request) => Standing::Request,
            Some(ContactState::Blocked) => Standing::Blocked,
            None => Standing::Stranger {
                room_for_request: self.room_for(RequestOrigin::Online),
            },
        }
    }

    /// Whether a pending request may have one more text stored.
    pub fn request_text_allowed(&self, address: &str) -> bool {
        request_text_allowed(self.request_texts.get(address).copied().unwrap_or(0))
    }

    /// A text of a pending request was stored.
    pub fn note_request_text(&mut self, address: &str) {
        if self.state(address) == Some(ContactState::Request) {
            *self.request_texts.entry(address.to_string()).or_default() += 1;
        }
    }

    /// The contact `name` means, in this order:
    /// - an address (or an extended identifier's owner);
    /// - else one of *our* nicknames: ours outrank any name another party
    ///   announces, so a stranger cannot take or shadow them;
    /// - else an announced name of an *accepted* contact without a
    ///   nickname, or a unique address prefix (8 characters or more),
    ///   counted together: a stranger announcing the prefix that chat
    ///   shows of a contact's address makes the name ambiguous rather
    ///   than theirs.
    ///
    /// Requests and blocked contacts never resolve by announced name (only
    /// by address, prefix or our nickname). Several fitting is refused,
    /// with the candidates labelled by why they fit.
    pub fn resolve(&self, name: &str) -> Result<String, ApiError> {
        if let Ok(a) = OnionAddress::parse(name) {
            return Ok(a.to_string());
        }
        let ours: Vec<(&Contact, &str)> = self
            .map
            .values()
            .filter(|c| c.nickname.as_deref() == Some(name))
            .map(|c| (c, "your nickname"))
            .collect();
        let found = if ours.is_empty() {
            let mut found: Vec<(&Contact, &str)> = self
                .map
                .values()
                .filter(|c| {
                    c.state == ContactState::Accepted
                        && c.nickname.is_none()
                        && !c.name.is_empty()
                        && c.name == name
                })
                .map(|c| (c, "the name they announce, unverified"))
                .collect();
            if name.len() >= 8 {
                for c in self.map.values().filter(|c| c.address.starts_with(name)) {
                    if !found.iter().any(|(f, _)| f.address == c.address) {
                        found.push((c, "address prefix"));
                    }
                }
            }
            found
        } else {
            ours
        };
        match found.as_slice() {
            [(one, _)] => Ok(one.address.clone()),
            [] => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no contact named {name}"),
            )),
            many => {
                let mut e = ApiError::new(
                    ErrorCode::Ambiguous,
                    format!("{name} names several contacts: use an address or set a nickname"),
                );
                e.candidates = many
                    .iter()
                    .map(|(c, why)| format!("{} ({why}): {}", c.shown_name(), c.address))
                    .collect();
                Err(e)
            }
        }
    }
}

impl Contacts {
    /// [`Contacts::resolve`] for what cannot be taken back (a group's
    /// secret sent in an invite): an address, one of our nicknames, or a
    /// unique address prefix; never the name a contact announces, which
    /// another accepted contact could announce too, or take while the
    /// right one has announced nothing yet.
    pub fn resolve_verified(&self, name: &str) -> Result<String, ApiError> {
        let address = self.resolve(name)?;
        let by_announced_name = !name.eq_ignore_ascii_case(&address)
            && OnionAddress::parse(name).is_err()
            && self
                .map
                .get(&address)
                .is_some_and(|c| c.nickname.as_deref() != Some(name))
            && !(name.len() >= 8 && address.starts_with(name));
        if by_announced_name {
            return Err(ApiError::new(
                ErrorCode::Invalid,
                format!(
                    "{name} is only the name they announce, which anyone can announce: name them \
                     by address, or give them a nickname first (contact rename)"
                ),
            ));
        }
        Ok(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cwtch_proto::Identity;

    fn addr(seed: u8) -> String {
        Identity::from_seed(&[seed; 32]).address().to_string()
    }

    #[test]
    fn names_resolve_to_one_contact_or_are_refused_with_the_candidates() {
        let mut a = Contact::new(&addr(1), ContactState::Accepted);
        a.name = "bob".into();
        let mut b = Contact::new(&addr(2), ContactState::Accepted);
        b.name = "bob".into();
        let mut c = Contact::new(&addr(3), ContactState::Accepted);
        c.nickname = Some("carol".into());
        c.name = "bob".into(); // announces "bob", but we call her carol
        let contacts = Contacts::new(vec![a, b, c], HashMap::new());
        assert_eq!(contacts.resolve("carol").unwrap(), addr(3));
        assert_eq!(contacts.resolve(&addr(2)).unwrap(), addr(2));
        let err = contacts.resolve("bob").unwrap_err();
        assert_eq!(err.code, ErrorCode::Ambiguous);
        assert_eq!(err.candidates.len(), 2);
        assert_eq!(
            contacts.resolve("dave").unwrap_err().code,
            ErrorCode::NotFound
        );
        assert_eq!(contacts.resolve(&addr(3)[..10]).unwrap(), addr(3));
    }

    /// What a stranger announces cannot take, shadow or split our names.
    #[test]
    fn a_strangers_announced_name_never_wins_over_ours_or_an_address() {
        let mut bob = Contact::new(&addr(1), ContactState::Accepted);
        bob.nickname = Some("Bobby".into());
        bob.name = "bob".into();
        // A request announcing our nickname for bob, one announcing the
        // prefix of bob's address that chat shows, one announcing "carol".
        let mut liar = Contact::new(&addr(2), ContactState::Request);
        liar.name = "Bobby".into();
        let mut prefix = Contact::new(&addr(3), ContactState::Request);
        prefix.name = addr(1)[..8].to_string();
        let mut carol = Contact::new(&addr(4), ContactState::Accepted);
        carol.name = "carol".into();
        let mut fake_carol = Contact::new(&addr(5), ContactState::Request);
        fake_carol.name = "carol".into();
        let contacts = Contacts::new(vec![bob, liar, prefix, carol, fake_carol], HashMap::new());
        assert_eq!(contacts.resolve("Bobby").unwrap(), addr(1), "ours wins");
        assert_eq!(contacts.resolve(&addr(1)[..8]).unwrap(), addr(1));
        assert_eq!(
            contacts.resolve("carol").unwrap(),
            addr(4),
            "requests do not resolve by announced name"
        );
        // Once accepted, a name that fits a contact's prefix is ambiguous,
        // and the candidates say why each fits.
        let mut prefix = Contact::new(&addr(3), ContactState::Accepted);
        prefix.name = addr(1)[..8].to_string();
        let contacts = Contacts::new(
            vec![Contact::new(&addr(1), ContactState::Accepted), prefix],
            HashMap::new(),
        );
        let e = contacts.resolve(&addr(1)[..8]).unwrap_err();
        assert_eq!(e.code, ErrorCode::Ambiguous);
        assert!(e.candidates.iter().any(|c| c.contains("address prefix")));
        assert!(e.candidates.iter().any(|c| c.contains("unverified")));
    }

    /// A group's secret never goes to a contact named only by the name
    /// they announce.
    #[test]
    fn an_invite_needs_an_address_a_nickname_or_a_prefix() {
        let mut alice = Contact::new(&addr(1), ContactState::Accepted);
        alice.name = "alice".into();
        let mut bob = Contact::new(&addr(2), ContactState::Accepted);
        bob.nickname = Some("bobby".into());
        let contacts = Contacts::new(vec![alice, bob], HashMap::new());
        assert_eq!(contacts.resolve("alice").unwrap(), addr(1));
        let e = contacts.resolve_verified("alice").unwrap_err();
        assert_eq!(e.code, ErrorCode::Invalid);
        assert_eq!(contacts.resolve_verified("bobby").unwrap(), addr(2));
        assert_eq!(contacts.resolve_verified(&addr(1)).unwrap(), addr(1));
        assert_eq!(contacts.resolve_verified(&addr(1)[..9]).unwrap(), addr(1));
    }
}
