//! Test helpers for the server protocol: an in-memory store and reply
//! collection. Only for tests.
#![allow(dead_code)]

use chacha20::ChaCha20Rng;
use cwtch_proto::group::SEALED_BLOB_LEN;
use cwtch_proto::server::advert::ADVERT_LEN;
use cwtch_proto::server::wire::MAX_SERVER_MESSAGE_LEN;
use cwtch_proto::server::{
    BlobStore, Policy, Reply, ServerCloseReason, ServerRefusal, ServerSession, StoreError,
};
use rand_core::SeedableRng;

pub type Blob = [u8; SEALED_BLOB_LEN];

/// A blob whose first 8 bytes are `tag` (little-endian), the rest a pattern.
pub fn blob(tag: u64) -> Blob {
    let mut b = [0u8; SEALED_BLOB_LEN];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = (i as u8) ^ (tag as u8).wrapping_mul(31);
    }
    b[..8].copy_from_slice(&tag.to_le_bytes());
    b
}

pub fn tag_of(blob: &[u8]) -> u64 {
    u64::from_le_bytes(blob[..8].try_into().unwrap())
}

pub fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

/// An append-only log in a Vec. `commit()` makes everything appended
/// durable (one group commit); until then appends are pending.
#[derive(Default)]
pub struct MemStore {
    pub entries: Vec<(u64, Box<Blob>)>,
    pub last_index: u64,
    pub durable: u64,
    /// Refuse appends beyond this many entries.
    pub capacity: Option<usize>,
    /// Fail every operation.
    pub broken: bool,
    pub reads: core::cell::Cell<u64>,
    /// Answer reads `WouldBlock` (a store fetching its disk off the loop).
    pub block_reads: core::cell::Cell<bool>,
    /// The advert the sessions send when asked (none: refused).
    pub advert: Option<[u8; ADVERT_LEN]>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }
    /// Group commit: everything appended so far is durable. Returns the watermark.
    pub fn commit(&mut self) -> u64 {
        self.durable = self.last_index;
        self.durable
    }
    /// Drops entries with index <= `upto` (retention).
    pub fn prune(&mut self, upto: u64) {
        self.entries.retain(|(i, _)| *i > upto);
    }
}

impl BlobStore for MemStore {
    fn append(&mut self, blob: &Blob) -> Result<u64, StoreError> {
        if self.broken {
            return Err(StoreError::Unavailable);
        }
        if self.capacity.is_some_and(|c| self.entries.len() >= c) {
            return Err(StoreError::Full);
        }
        self.last_index += 1;
        self.entries.push((self.last_index, Box::new(*blob)));
        Ok(self.last_index)
    }
    fn read_after(&self, after: u64, out: &mut Blob) -> Result<Option<u64>, StoreError> {
        if self.broken {
            return Err(StoreError::Unavailable);
        }
        if self.block_reads.get() {
            return Err(StoreError::WouldBlock);
        }
        self.reads.set(self.reads.get() + 1);
        let pos = self.entries.partition_point(|(i, _)| *i <= after);
        Ok(self.entries.get(pos).map(|(i, b)| {
            out.copy_from_slice(&b[..]);
            *i
        }))
    }
    fn durable_head(&self) -> u64 {
        self.durable
    }
    fn advert(&self) -> Option<[u8; ADVERT_LEN]> {
        self.advert
    }
}

/// An owned, comparable view of a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum R {
    Hello(Policy),
    Posted { seq: u64, index: u64 },
    Entry { index: u64, tag: u64 },
    PageEnd { next: u64, head: u64 },
    Push { index: u64, tag: u64 },
    Subscribed { after: u64 },
    Unsubscribed,
    Refused(ServerRefusal),
    Closing(ServerCloseReason),
    Advert(Vec<u8>),
}

pub fn owned(msg: &[u8]) -> R {
    match Reply::decode(msg).expect("the session sends valid replies") {
        Reply::Hello(p) => R::Hello(p),
        Reply::Posted { seq, index } => R::Posted { seq, index },
        Reply::Entry { index, blob } => R::Entry {
            index,
            tag: tag_of(blob),
        },
        Reply::PageEnd { next, head } => R::PageEnd { next, head },
        Reply::Push { index, blob } => R::Push {
            index,
            tag: tag_of(blob),
        },
        Reply::Subscribed { after } => R::Subscribed { after },
        Reply::Unsubscribed => R::Unsubscribed,
        Reply::Refused(r) => R::Refused(r),
        Reply::Closing { reason } => R::Closing(reason),
        Reply::Advert { advert } => R::Advert(advert.to_vec()),
    }
}

/// Everything the session has to send now.
pub fn drain(s: &mut ServerSession, store: &MemStore) -> Vec<R> {
    let mut out = Vec::new();
    let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
    while let Some(n) = s
        .poll_transmit(store, &mut buf)
        .expect("buffer is big enough")
    {
        out.push(owned(&buf[..n]));
    }
    out
}

/// The next reply, if any.
pub fn next(s: &mut ServerSession, store: &MemStore) -> Option<R> {
    let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
    s.poll_transmit(store, &mut buf)
        .expect("buffer is big enough")
        .map(|n| owned(&buf[..n]))
}
