//! The storage the server session talks to, implemented by the driver.
//!
//! The store is one append-only log of sealed blobs shared by every
//! connection of a server. Indices are assigned by the store, start at 1 and
//! strictly increase (0 means "before everything", the cursor of a client
//! that has nothing). The store may prune old entries (retention): readers
//! then skip over the gap, so indices need not be contiguous.
//!
//! **Durability is asynchronous.** [`BlobStore::append`] only assigns an
//! index; the blob becomes durable later, when the driver has written it out
//! (typically one `fsync` for many appends from many connections: group
//! commit). The driver then tells every session the new durable watermark
//! with `ServerSession::handle_durable`. Sessions acknowledge a post only
//! once its index is durable, and never show a client an index above the
//! durable watermark, so a crash can never make the server reuse an index a
//! client has seen.

use core::fmt;

use crate::group::SEALED_BLOB_LEN;
use crate::server::advert::ADVERT_LEN;

/// Why the store could not do what the session asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The store accepts no more blobs (refused to the client as `Full`).
    Full,
    /// The store failed for another reason (refused as `Unavailable`).
    Unavailable,
    /// [`BlobStore::read_after`] only: the entry is not at hand yet (a
    /// driver that reads its disk off the event loop is fetching it). The
    /// session sends nothing for now and changes nothing; the driver calls
    /// `poll_transmit` again once the entry is at hand.
    WouldBlock,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Full => f.write_str("the blob store is full"),
            StoreError::Unavailable => f.write_str("the blob store is unavailable"),
            StoreError::WouldBlock => f.write_str("the entry is not at hand yet"),
        }
    }
}

impl core::error::Error for StoreError {}

/// The blob log, as the session sees it. The driver implements it (SQLite,
/// files, memory) and shares one instance between all sessions of a server.
pub trait BlobStore {
    /// Appends a blob and returns the index assigned to it: greater than
    /// every index assigned before. The blob need not be durable yet.
    fn append(&mut self, blob: &[u8; SEALED_BLOB_LEN]) -> Result<u64, StoreError>;

    /// Copies the entry with the smallest index greater than `after` into
    /// `out` and returns its index, or `None` if there is none. Entries that
    /// are not durable yet may be returned; the session ignores them.
    ///
    /// A store that must not block may answer [`StoreError::WouldBlock`]
    /// and fetch the entry meanwhile: `ServerSession::poll_transmit` then
    /// returns `None` with the session unchanged, to be called again.
    fn read_after(
        &self,
        after: u64,
        out: &mut [u8; SEALED_BLOB_LEN],
    ) -> Result<Option<u64>, StoreError>;

    /// The durable watermark: every index up to this one that was appended
    /// is durable (0 if nothing is).
    fn durable_head(&self) -> u64;

    /// The server's signed advert (SPEC.md section 13), sent to a client
    /// that asks for it; `None` (the default) refuses such requests as
    /// `Unavailable`. Kept here, shared by every session, rather than in
    /// each session: a session holds no large value.
    fn advert(&self) -> Option<[u8; ADVERT_LEN]> {
        None
    }
}
