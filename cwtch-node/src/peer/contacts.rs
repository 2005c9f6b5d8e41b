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

    /// The contact `name` means: an address (or extended identifier's
    /// owner), else a nickname or announced name that fits exactly one
    /// contact. Several fitting is refused with the candidates.
    pub fn resolve(&self, name: &str) -> Result<String, ApiError> {
        if let Ok(a) = OnionAddress::parse(name) {
            return Ok(a.to_string());
        }
        let fits = |c: &&Contact| {
            c.nickname.as_deref() == Some(name)
                || (c.nickname.is_none() && !c.name.is_empty() && c.name == name)
        };
        let mut found: Vec<&Contact> = self.map.values().filter(fits).collect();
        if found.is_empty() {
            // A unique address prefix also works (at least 8 characters).
            if name.len() >= 8 {
                found = self
                    .map
                    .values()
                    .filter(|c| c.address.starts_with(name))
                    .collect();
            }
        }
        match found.as_slice() {
            [one] => Ok(one.address.clone()),
            [] => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no contact named {name}"),
            )),
            many => {
                let mut e = ApiError::new(
                    ErrorCode::Ambiguous,
                    format!("{name} names several contacts: use an address or a nickname"),
                );
                e.candidates = many
                    .iter()
                    .map(|c| format!("{} ({})", c.shown_name(), c.address))
                    .collect();
                Err(e)
            }
        }
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
}
