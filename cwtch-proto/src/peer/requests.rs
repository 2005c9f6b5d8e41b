//! Contact requests: how many a profile keeps, from where, and how much a
//! requester may write before the user decides (SPEC.md section 4, "Contact requests").
//!
//! A contact request comes from a stranger who authenticated on a peer link
//! (*online*), or from a sealed first-contact request in our mailbox
//! (*mailbox*, section 12). Both count against the same total,
//! [`MAX_CONTACT_REQUESTS`], and the same per-requester text limit,
//! [`MAX_REQUEST_TEXTS`]. Mailbox requests may take at most
//! [`MAX_MAILBOX_REQUESTS`] of the total, so a flood of sealed requests
//! (cheap to make offline) never locks online strangers out.

/// Pending contact requests a profile keeps (from both origins); further
/// strangers are refused until the user accepts, refuses or blocks some.
pub const MAX_CONTACT_REQUESTS: usize = 100;
/// Of [`MAX_CONTACT_REQUESTS`], the most that may come from the mailbox.
pub const MAX_MAILBOX_REQUESTS: usize = 50;
/// Texts stored from one requester until the user accepts it; more are
/// neither stored nor acknowledged (an online sender keeps them queued).
pub const MAX_REQUEST_TEXTS: u32 = 10;

/// Where a contact request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOrigin {
    /// A stranger that authenticated on a peer link.
    Online,
    /// A sealed first-contact request read from our mailbox.
    Mailbox,
}

/// The pending requests the application holds, by origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingRequests {
    /// Requests that came over a peer link.
    pub online: usize,
    /// Requests that came through the mailbox.
    pub mailbox: usize,
}

impl PendingRequests {
    /// Whether one more request from `origin` may be kept.
    pub fn room_for(&self, origin: RequestOrigin) -> bool {
        let total = self.online.saturating_add(self.mailbox);
        match origin {
            RequestOrigin::Online => total < MAX_CONTACT_REQUESTS,
            RequestOrigin::Mailbox => {
                total < MAX_CONTACT_REQUESTS && self.mailbox < MAX_MAILBOX_REQUESTS
            }
        }
    }
}

/// Whether a pending requester that already has `stored` texts stored may
/// have one more.
pub fn request_text_allowed(stored: u32) -> bool {
    stored < MAX_REQUEST_TEXTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailbox_flood_leaves_room_for_online_strangers() {
        let mut p = PendingRequests::default();
        while p.room_for(RequestOrigin::Mailbox) {
            p.mailbox += 1;
        }
        assert_eq!(p.mailbox, MAX_MAILBOX_REQUESTS);
        assert!(p.room_for(RequestOrigin::Online));
        while p.room_for(RequestOrigin::Online) {
            p.online += 1;
        }
        assert_eq!(p.online + p.mailbox, MAX_CONTACT_REQUESTS);
        // Online requests fill the rest; then neither origin has room.
        let full = PendingRequests {
            online: MAX_CONTACT_REQUESTS,
            mailbox: 0,
        };
        assert!(!full.room_for(RequestOrigin::Mailbox));
        assert!(!full.room_for(RequestOrigin::Online));
        // Counts near usize::MAX do not wrap.
        let absurd = PendingRequests {
            online: usize::MAX,
            mailbox: usize::MAX,
        };
        assert!(!absurd.room_for(RequestOrigin::Online));
    }

    #[test]
    fn texts_are_capped_per_requester() {
        assert!(request_text_allowed(0));
        assert!(request_text_allowed(MAX_REQUEST_TEXTS - 1));
        assert!(!request_text_allowed(MAX_REQUEST_TEXTS));
        assert!(!request_text_allowed(u32::MAX));
    }
}
