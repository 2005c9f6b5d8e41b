//! Storage: the peer's encrypted profile ([`crate::profile_store`]), the
//! server's blob store ([`crate::blob_store`]), and every record layout
//! ([`records`]). [`Profile`] is the typed layer the peer's core uses.

pub mod records;

use std::collections::HashMap;
use std::path::Path;

use cwtch_proto::Identity;

use crate::profile_store::{ProfileStore, ProfileStoreError, ProfileTransaction, Table};
use records::{
    BadRecord, ChainRecord, Contact, DirectoryEntry, GroupPost, GroupRecord, InviteRecord,
    MailboxRecord, OutItem, SharedAdverts, Stored, StoredMessage, decode,
};

/// The profile's file inside the home directory.
pub const PROFILE_FILE: &str = "profile.db";

/// Why the profile could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreFailure {
    /// The store failed.
    #[error("{0}")]
    Store(#[from] ProfileStoreError),
    /// A record does not decode.
    #[error("profile damaged: {0}")]
    Corrupt(String),
    /// Something the user gave is wrong (at init).
    #[error("{0}")]
    Invalid(String),
}

impl From<BadRecord> for StoreFailure {
    fn from(e: BadRecord) -> Self {
        StoreFailure::Corrupt(e.to_string())
    }
}

/// Everything the peer keeps, as loaded at start.
#[derive(Default)]
pub struct Loaded {
    /// Contacts.
    pub contacts: Vec<Contact>,
    /// Per pending request: texts stored from it.
    pub request_texts: HashMap<String, u32>,
    /// The outgoing queue for contacts.
    pub outbox: Vec<OutItem>,
    /// The posts waiting for servers.
    pub posts: Vec<GroupPost>,
    /// Groups.
    pub groups: Vec<GroupRecord>,
    /// Chain data per group id.
    pub chains: HashMap<String, Vec<ChainRecord>>,
    /// Pending invites.
    pub invites: Vec<InviteRecord>,
    /// Our mailbox.
    pub mailbox: Option<MailboxRecord>,
    /// The server directory.
    pub directory: Vec<DirectoryEntry>,
    /// What each group heard of servers.
    pub adverts: HashMap<String, SharedAdverts>,
    /// Saved cursors per server.
    pub cursors: HashMap<String, u64>,
    /// The next local sequence number.
    pub seq: u64,
    /// Per conversation: messages received (for unread counts).
    pub received: HashMap<String, Vec<u64>>,
}

/// The typed layer over the profile store.
pub struct Profile {
    store: ProfileStore,
}

impl Profile {
    /// Wraps an open store.
    pub fn new(store: ProfileStore) -> Self {
        Profile { store }
    }

    /// The store underneath.
    pub fn raw(&self) -> &ProfileStore {
        &self.store
    }

    /// A record.
    pub fn get<T: Stored>(&self, table: Table, key: &[u8]) -> Result<Option<T>, StoreFailure> {
        match self.store.get(table, key)? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Whether a record exists.
    pub fn exists(&self, table: Table, key: &[u8]) -> Result<bool, StoreFailure> {
        Ok(self.store.get(table, key)?.is_some())
    }

    /// Stores a record (durable when it returns).
    pub fn put<T: Stored>(&self, table: Table, key: &[u8], value: &T) -> Result<(), StoreFailure> {
        Ok(self.store.put(table, key, &value.to_record())?)
    }

    /// Stores raw bytes.
    pub fn put_raw(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreFailure> {
        Ok(self.store.put(table, key, value)?)
    }

    /// Deletes a record.
    pub fn delete(&self, table: Table, key: &[u8]) -> Result<bool, StoreFailure> {
        Ok(self.store.delete(table, key)?)
    }

    /// Every record of a table whose key starts with `prefix`, decoded
    /// (one that does not decode is skipped with a warning).
    pub fn scan<T: Stored>(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, T)>, StoreFailure> {
        let mut out = Vec::new();
        for (k, v) in self.store.scan(table)? {
            if !k.starts_with(prefix) {
                continue;
            }
            match decode::<T>(&v) {
                Ok(r) => out.push((k, r)),
                Err(e) => tracing::warn!("skipping a record that does not decode: {e}"),
            }
        }
        Ok(out)
    }

    /// The keys of a table's records.
    pub fn keys(&self, table: Table) -> Result<Vec<Vec<u8>>, StoreFailure> {
        Ok(self
            .store
            .scan(table)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Runs `f` in one transaction: all its writes land, or none.
    pub fn transaction(
        &self,
        f: impl FnOnce(&mut Tx<'_, '_>) -> Result<(), ProfileStoreError>,
    ) -> Result<(), StoreFailure> {
        Ok(self.store.transaction(|tx| f(&mut Tx(tx)))?)
    }

    /// The next local sequence number. Every one is given to a message,
    /// and stored with it: [`Profile::load`] takes the highest stored, so
    /// the counter costs no write (and no fsync) of its own.
    pub fn next_seq(&self, seq: &mut u64) -> Result<u64, StoreFailure> {
        *seq += 1;
        Ok(*seq)
    }

    /// Everything the peer keeps.
    pub fn load(&self) -> Result<Loaded, StoreFailure> {
        let mut l = Loaded {
            seq: self
                .store
                .get(Table::Meta, b"seq")?
                .and_then(|v| records::u64_of(&v))
                .unwrap_or(0),
            ..Loaded::default()
        };
        for (_, v) in self.store.scan(Table::Contacts)? {
            let c: crate::model::Contact = decode(&v)?;
            // Never below a read mark (a profile from before the mark
            // stored the counter with it).
            l.seq = l.seq.max(c.read_upto);
            l.contacts.push(c);
        }
        let requests: std::collections::HashSet<String> = l
            .contacts
            .iter()
            .filter(|c| c.state == crate::model::ContactState::Request)
            .map(|c| c.address.clone())
            .collect();
        for (_, v) in self.store.scan(Table::Messages)? {
            let m: StoredMessage = decode(&v)?;
            // The counter is the highest number given (a profile from
            // before also kept it under Meta "seq", read above).
            l.seq = l.seq.max(m.seq);
            if !m.outgoing {
                if requests.contains(&m.conversation) {
                    *l.request_texts.entry(m.conversation.clone()).or_default() += 1;
                }
                l.received.entry(m.conversation).or_default().push(m.seq);
            }
        }
        for (k, v) in self.store.scan(Table::Outbox)? {
            if k.starts_with(b"post:") {
                l.posts.push(decode(&v)?);
            } else {
                let item: crate::model::OutItem = decode(&v)?;
                // An invite's number is kept only with it: never give it
                // again (the send window tells items apart by it).
                l.seq = l.seq.max(item.seq);
                l.outbox.push(item);
            }
        }
        for (k, v) in self.store.scan(Table::Groups)? {
            if records::is_invite_key(&k) {
                l.invites.push(decode(&v)?);
            } else {
                let g: GroupRecord = decode(&v)?;
                l.seq = l.seq.max(g.read_upto);
                l.groups.push(g);
            }
        }
        for (k, v) in self.store.scan(Table::Blobs)? {
            if let Some(gid) = k
                .strip_prefix(b"chain:")
                .and_then(|k| std::str::from_utf8(k.get(..64)?).ok())
            {
                let c: ChainRecord = decode(&v)?;
                l.chains.entry(gid.to_string()).or_default().push(c);
            }
        }
        for (k, v) in self.store.scan(Table::Servers)? {
            if k.starts_with(b"dir:") {
                l.directory.push(decode(&v)?);
            } else if let Some(gid) = k.strip_prefix(b"gadv:") {
                let s: SharedAdverts = decode(&v)?;
                l.adverts
                    .insert(String::from_utf8_lossy(gid).into_owned(), s);
            } else if let Some(server) = k.strip_prefix(b"cursor:")
                && let Some(c) = records::u64_of(&v)
            {
                l.cursors
                    .insert(String::from_utf8_lossy(server).into_owned(), c);
            }
        }
        if let Some(v) = self.store.get(Table::Meta, b"mailbox")? {
            l.mailbox = Some(decode(&v)?);
        }
        Ok(l)
    }
}

/// A transaction with typed writes.
pub struct Tx<'a, 'b>(&'a mut ProfileTransaction<'b>);

impl Tx<'_, '_> {
    /// Stores a record.
    pub fn put<T: Stored>(
        &mut self,
        table: Table,
        key: &[u8],
        value: &T,
    ) -> Result<(), ProfileStoreError> {
        self.0.put(table, key, &value.to_record())
    }

    /// Stores raw bytes.
    pub fn put_raw(
        &mut self,
        table: Table,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), ProfileStoreError> {
        self.0.put(table, key, value)
    }

    /// Deletes a record.
    pub fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, ProfileStoreError> {
        self.0.delete(table, key)
    }
}

/// Creates a new profile in `home` and returns its address. The home is
/// made private (0700), or refused if it exists and is not.
pub fn init_profile(
    home: &Path,
    name: &str,
    password: &[u8],
) -> Result<cwtch_proto::OnionAddress, StoreFailure> {
    if name.len() > cwtch_proto::peer::message::MAX_NAME_LEN {
        return Err(StoreFailure::Invalid(
            "the name is longer than 64 bytes".into(),
        ));
    }
    crate::home::create_private(home).map_err(|e| StoreFailure::Invalid(e.to_string()))?;
    let store = ProfileStore::create(home.join(PROFILE_FILE), password)?;
    let identity = Identity::generate(&mut crate::clock::rng());
    init_store(&store, &identity, name)?;
    Ok(identity.address())
}

/// Writes a new profile's identity and name into an empty store (what
/// [`init_profile`] does after creating the file; tests use it on a store
/// they create themselves).
pub fn init_store(
    store: &ProfileStore,
    identity: &Identity,
    name: &str,
) -> Result<(), StoreFailure> {
    store.transaction(|tx| {
        tx.put(Table::Meta, b"seed", identity.seed().as_ref())?;
        tx.put(Table::Meta, b"name", name.as_bytes())?;
        tx.put(Table::Meta, b"seq", &0u64.to_le_bytes())?;
        Ok(())
    })?;
    Ok(())
}

/// Opens the profile in `home`: the store, its identity and display name.
pub fn open_profile(
    home: &Path,
    password: &[u8],
) -> Result<(ProfileStore, Identity, String), StoreFailure> {
    let path = home.join(PROFILE_FILE);
    if !path.exists() {
        return Err(StoreFailure::Invalid(format!(
            "no profile in {} (run `cwtch-node init --name NAME` first)",
            home.display()
        )));
    }
    let store = ProfileStore::open(&path, password)?;
    let seed = store
        .get(Table::Meta, b"seed")?
        .ok_or_else(|| StoreFailure::Corrupt("no identity".into()))?;
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| StoreFailure::Corrupt("identity has the wrong length".into()))?;
    let identity = Identity::from_seed(&seed);
    let name = store
        .get(Table::Meta, b"name")?
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .unwrap_or_default();
    Ok((store, identity, name))
}

/// The groups of a profile (for tests and tools that look inside one).
pub fn groups_of(store: &ProfileStore) -> Result<Vec<GroupRecord>, StoreFailure> {
    let mut out = Vec::new();
    for (k, v) in store.scan(Table::Groups)? {
        if !records::is_invite_key(&k) {
            out.push(decode(&v)?);
        }
    }
    Ok(out)
}

/// Our mailbox, read straight from a profile (no daemon running).
pub fn mailbox_of(store: &ProfileStore) -> Result<Option<MailboxRecord>, StoreFailure> {
    match store.get(Table::Meta, b"mailbox")? {
        Some(v) => Ok(Some(decode(&v)?)),
        None => Ok(None),
    }
}
