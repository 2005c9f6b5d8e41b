//! Messages between peers over an established [`crate::connection`], the
//! rules of a peer link ([`PeerSession`]), and the retry schedule for
//! messages that wait for an acknowledgement.
//!
//! See SPEC.md, section 4. Every message is one channel message, encoded
//! with postcard; decoding is strict (unknown kinds, over-long fields and
//! trailing bytes are refused).

pub mod message;
pub mod requests;
pub mod retry;
pub mod session;

pub use message::{PeerMessage, PeerMessageError};
pub use requests::{PendingRequests, RequestOrigin};
pub use retry::Backoff;
pub use session::{
    AckToken, Incoming, PeerEvent, PeerRefusal, PeerSession, PeerSessionError, Standing,
};
