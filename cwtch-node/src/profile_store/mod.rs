//! The peer's encrypted profile store: nothing readable on disk.
//!
//! A profile (identity seed, display name, contacts, groups, message
//! history, outgoing queue, recent sealed blobs) is kept as records in one
//! SQLite file, each record encrypted on its own. If the device is seized,
//! nothing but sizes and counts can be learnt without the password.
//!
//! # Why SQLite with per-record encryption
//!
//! * **Crash safety comes from SQLite's write-ahead log**, in WAL mode with
//!   `synchronous = FULL`: a transaction is durable once `commit` returns,
//!   and a crash or power cut at any moment leaves either all of it or none
//!   of it (the crash test kills a writer with SIGKILL at random moments and
//!   checks exactly this). `rusqlite` with the `bundled` feature compiles
//!   SQLite from source; our code stays `#![forbid(unsafe_code)]`.
//! * **Encryption is ours, per record, with XChaCha20-Poly1305** (random
//!   192-bit nonces, so no nonce bookkeeping across crashes), because:
//!   SQLCipher (page-level encryption) needs OpenSSL or another crypto
//!   provider linked into the SQLite build (a C build plus an extra C
//!   dependency, outside our pure-Rust cryptography); sled and redb are
//!   crash-safe key-value stores but have no encryption at all, so we would
//!   do the same per-record sealing on top of them with a less proven
//!   storage engine (sled's on-disk format is not stable).
//! * The table a record belongs to is hidden as well: there is one SQL table
//!   `records(blind BLOB PRIMARY KEY, envelope BLOB) WITHOUT ROWID`, and a
//!   record's row key is `blind = HMAC-SHA256(blind_key, table_id || key)`.
//!   `WITHOUT ROWID` orders rows by `blind` (pseudo-random), so no rowid
//!   gives away the order in which records were written.
//!
//! # Keys
//!
//! `master = Argon2id(password, salt, m = 64 MiB, t = 3, p = 1)` (version
//! 0x13, 32-byte output, [`KdfParams::RECOMMENDED`]) with a random 16-byte
//! salt from the header. HKDF-SHA256 (salt `"cwtch-rs/profile-store/v1/hkdf"`)
//! expands `master` into three keys: the record key (XChaCha20-Poly1305),
//! the blinding key (HMAC-SHA256) and the key-check key. The header stores a
//! key-check value (an encrypted constant) so a wrong password fails with
//! [`ProfileStoreError::WrongPassword`] instead of producing garbage. Keys
//! live in memory only while the store is open and are wiped on drop; the
//! Argon2 working memory is wiped too. A profile always has a password:
//! an empty one is refused ([`ProfileStoreError::EmptyPassword`]); there is
//! no "default password" mode as in the reference client.
//!
//! One derivation takes 0.35–0.47 s on the project's 2-core machine in a
//! release build (about 4 s in a debug build): `open` and `create` pay it
//! once, `change_password` twice (see `tests/profile_store_kdf.rs`).
//!
//! Weaker Argon2 parameters exist only behind the `insecure-test-kdf`
//! feature (`ProfileStore::create_insecure_for_tests`); without it,
//! `open` refuses headers whose parameters are below [`KdfParams::MINIMUM`]
//! (and above [`KdfParams::MAXIMUM`], so a damaged header cannot make it
//! allocate without bound).
//!
//! # On-disk format (version 1)
//!
//! ```text
//! header(id INTEGER PRIMARY KEY CHECK (id = 1), format INTEGER = 1,
//!        kdf INTEGER = 1 (Argon2id v0x13), m_cost INTEGER (KiB),
//!        t_cost INTEGER, p_cost INTEGER, salt BLOB (16 bytes),
//!        key_check BLOB = nonce(24) || XChaCha20-Poly1305(check_key,
//!            "cwtch-rs profile store key check",
//!            ad = "cwtch-rs/profile-store/v1/key-check" || header_ad))
//!   header_ad = format u32 LE || kdf u32 LE || m u32 LE || t u32 LE
//!               || p u32 LE || salt
//! records(blind BLOB PRIMARY KEY, envelope BLOB) WITHOUT ROWID
//!   blind    = HMAC-SHA256(blind_key, table_id u8 || key)
//!   envelope = 0x01 || nonce(24) || XChaCha20-Poly1305(record_key,
//!                plaintext, ad = "cwtch-rs/profile-store/v1/record" || 0x01 || blind)
//!   plaintext = table_id u8 || key_len u32 LE || key || value_len u32 LE
//!               || value || zero padding
//!   len(envelope) is the smallest multiple of 256 that holds it all
//!   (41 bytes of overhead + 9 bytes of framing).
//! ```
//!
//! Binding `blind` into the associated data means an envelope moved to
//! another row (two records swapped, a contact record put under a message's
//! key) fails with [`ProfileStoreError::Tampered`]; reads also check that the
//! decrypted table and key match the row's blinded key.
//!
//! # What still leaks
//!
//! * That the file is an SQLite database with tables `header` and `records`
//!   (the schema is plain text), and the Argon2 parameters and salt.
//! * The number of records, and each record's length rounded up to 256
//!   bytes (so a short text message and a contact look alike, but a 10 KB
//!   blob is visibly bigger); the total file size.
//! * Which records change between two snapshots of the file (a record keeps
//!   its `blind` across updates, until the password changes), and the file
//!   times.
//! * Freed pages are zeroed (`secure_delete = ON`), but old page versions
//!   can remain in the `-wal` file until a checkpoint overwrites or
//!   truncates it, and in the flash storage's own remapped blocks: all of it
//!   is ciphertext.
//! * Rollback: someone who can write the file can put back an older
//!   version of a record (or of the whole file) and it will authenticate;
//!   per-record AEAD does not detect that.
//!
//! `scan(table)` has to decrypt every record of every table (tables are not
//! visible on disk); at about a microsecond per small record that is fine
//! for a profile's size.
//!
//! Changing the password ([`ProfileStore::change_password`]) draws a new salt,
//! re-derives every key and re-encrypts every record under a new blinded key
//! in one transaction, then checkpoints and truncates the log.
//!
//! # Not done (yet)
//!
//! * Rollback detection (see above): it needs state outside the file, or at
//!   least a keyed digest over all records kept in the header.
//! * Automatic upgrade of a profile's Argon2 parameters on `open` when
//!   [`KdfParams::RECOMMENDED`] grows: for now the caller compares
//!   [`ProfileStore::kdf_params`] and calls `change_password(pw, pw)`, which
//!   raises them.
//! * Keeping a second process off an open profile (SQLite serialises the
//!   writes, but two nodes on one profile would both act on its outbox).
//!
//! # Tests
//!
//! `tests/profile_store_api.rs` (every operation, transactions, passwords,
//! damaged headers, swapped/moved/flipped envelopes, padding, permissions),
//! `profile_store_leak.rs` (raw bytes of every file at every stage),
//! `profile_store_crash.rs` (SIGKILL of a writer and of a password change at
//! random moments), `profile_store_model.rs` (random operations against a
//! map), `profile_store_kdf.rs` (the real parameters, timed).

mod crypto;
mod error;

use std::cell::RefCell;
use std::fmt;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use zeroize::Zeroizing;

pub use crypto::{KdfParams, PAD_BLOCK, SALT_LEN};
pub use error::{ProfileStoreError, Result};

use crypto::Keys;

/// One record as `scan` returns it: the plaintext key and the value.
pub type Record = (Vec<u8>, Zeroizing<Vec<u8>>);

/// The on-disk format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The key derivation function id stored in the header (Argon2id v0x13).
const KDF_ARGON2ID: u32 = 1;
/// The longest record key accepted.
pub const MAX_KEY_LEN: usize = 4096;
/// The longest record value accepted.
pub const MAX_VALUE_LEN: usize = 64 * 1024 * 1024;

/// The kinds of record in a profile. The table of a record is not visible on
/// disk: it is mixed into the record's blinded key and sealed inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Table {
    /// The identity seed, display name, settings.
    Meta = 1,
    /// Contacts (peers), keyed by the node as it likes (e.g. onion address).
    Contacts = 2,
    /// Message history.
    Messages = 3,
    /// Groups (keys, servers, names).
    Groups = 4,
    /// The outgoing queue.
    Outbox = 5,
    /// Known servers.
    Servers = 6,
    /// Recent sealed blobs, kept for recovery.
    Blobs = 7,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 7] = [
        Table::Meta,
        Table::Contacts,
        Table::Messages,
        Table::Groups,
        Table::Outbox,
        Table::Servers,
        Table::Blobs,
    ];

    /// The table's one-byte id (part of the on-disk format).
    #[must_use]
    pub const fn id(self) -> u8 {
        self as u8
    }

    /// The table with this id, if any.
    #[must_use]
    pub fn from_id(id: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.id() == id)
    }
}

/// Gives every open store a distinct id, for the re-entrancy check.
static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The stores whose transaction closure is running on this thread.
    static IN_TRANSACTION: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

struct Inner {
    conn: Connection,
    keys: Keys,
}

/// An open, unlocked profile store.
///
/// `Send + Sync`: calls are serialised by an internal mutex. `Debug` shows
/// only the path.
pub struct ProfileStore {
    path: PathBuf,
    id: u64,
    inner: Mutex<Inner>,
}

impl fmt::Debug for ProfileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfileStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The header row.
struct Header {
    format: u32,
    kdf: u32,
    params: KdfParams,
    salt: [u8; SALT_LEN],
}

impl Header {
    /// The bytes the key-check value is bound to.
    fn ad(&self) -> Vec<u8> {
        let mut ad = Vec::with_capacity(20 + SALT_LEN);
        for n in [
            self.format,
            self.kdf,
            self.params.m_cost_kib,
            self.params.t_cost,
            self.params.p_cost,
        ] {
            ad.extend_from_slice(&n.to_le_bytes());
        }
        ad.extend_from_slice(&self.salt);
        ad
    }
}

const SCHEMA: &str = "
CREATE TABLE header (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    format INTEGER NOT NULL,
    kdf INTEGER NOT NULL,
    m_cost INTEGER NOT NULL,
    t_cost INTEGER NOT NULL,
    p_cost INTEGER NOT NULL,
    salt BLOB NOT NULL,
    key_check BLOB NOT NULL
) STRICT;
CREATE TABLE records (
    blind BLOB PRIMARY KEY NOT NULL,
    envelope BLOB NOT NULL
) STRICT, WITHOUT ROWID;
";

/// The `-wal`, `-shm` and `-journal` files that belong to `path`.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Opens the file (never creating it) without changing anything in it yet.
fn connect(path: &Path) -> Result<Connection> {
    // No SQLITE_OPEN_CREATE (`create` makes the file itself), no URI parsing.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Before anything is read: a damaged or hostile schema cannot run code.
    conn.pragma_update(None, "trusted_schema", "OFF")?;
    conn.pragma_update(None, "cell_size_check", "ON")?;
    Ok(conn)
}

/// WAL with full syncs, zeroed free space, temporary data in memory. Run
/// only on a file known to be (or about to become) a profile store.
fn configure(conn: &Connection) -> Result<()> {
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(not_a_database)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(ProfileStoreError::Corrupt("cannot switch to WAL mode"));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "fullfsync", "ON")?;
    conn.pragma_update(None, "checkpoint_fullfsync", "ON")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // After a checkpoint the log is cut back to this size, so old page
    // versions do not linger in a large, reused log.
    conn.pragma_update(None, "journal_size_limit", 1024 * 1024)?;
    Ok(())
}

/// SQLite's "file is not a database" becomes `Corrupt`.
fn not_a_database(e: rusqlite::Error) -> ProfileStoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => {
            ProfileStoreError::Corrupt("not a profile store (not an SQLite database)")
        }
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
            ProfileStoreError::Corrupt("SQLite reports a damaged database")
        }
        _ => ProfileStoreError::Db(e),
    }
}

fn read_header(conn: &Connection) -> Result<(Header, Vec<u8>)> {
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('header', 'records')",
            [],
            |r| r.get(0),
        )
        .map_err(not_a_database)?;
    if tables != 2 {
        return Err(ProfileStoreError::Corrupt(
            "not a profile store (tables missing)",
        ));
    }
    let row = conn
        .query_row(
            "SELECT format, kdf, m_cost, t_cost, p_cost, salt, key_check FROM header WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                    r.get::<_, Vec<u8>>(6)?,
                ))
            },
        )
        .optional()
        .map_err(|e| match e {
            rusqlite::Error::InvalidColumnType(..) => {
                ProfileStoreError::Corrupt("header column types")
            }
            other => not_a_database(other),
        })?
        .ok_or(ProfileStoreError::Corrupt("header row missing"))?;
    let (format, kdf, m, t, p, salt, check) = row;
    if format != i64::from(FORMAT_VERSION) {
        return Err(ProfileStoreError::UnsupportedVersion(format));
    }
    if kdf != i64::from(KDF_ARGON2ID) {
        return Err(ProfileStoreError::Corrupt(
            "unknown key derivation function",
        ));
    }
    let cost = |v: i64| u32::try_from(v).map_err(|_| ProfileStoreError::Corrupt("kdf parameters"));
    let params = KdfParams {
        m_cost_kib: cost(m)?,
        t_cost: cost(t)?,
        p_cost: cost(p)?,
    };
    if !params.acceptable() {
        return Err(ProfileStoreError::Corrupt("kdf parameters out of range"));
    }
    let salt: [u8; SALT_LEN] = salt
        .as_slice()
        .try_into()
        .map_err(|_| ProfileStoreError::Corrupt("salt length"))?;
    Ok((
        Header {
            format: FORMAT_VERSION,
            kdf: KDF_ARGON2ID,
            params,
            salt,
        },
        check,
    ))
}

fn write_header(conn: &Connection, header: &Header, key_check: &[u8]) -> Result<()> {
    conn.execute(
        "INSERT INTO header (id, format, kdf, m_cost, t_cost, p_cost, salt, key_check)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (id) DO UPDATE SET format = excluded.format, kdf = excluded.kdf,
           m_cost = excluded.m_cost, t_cost = excluded.t_cost, p_cost = excluded.p_cost,
           salt = excluded.salt, key_check = excluded.key_check",
        params![
            header.format,
            header.kdf,
            header.params.m_cost_kib,
            header.params.t_cost,
            header.params.p_cost,
            &header.salt[..],
            key_check
        ],
    )?;
    Ok(())
}

fn check_sizes(key: &[u8], value: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(ProfileStoreError::TooLarge {
            what: "key",
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(ProfileStoreError::TooLarge {
            what: "value",
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    Ok(())
}

// The record operations, shared by the store (autocommit: each one is its
// own transaction) and by `ProfileTransaction`.

fn op_put(conn: &Connection, keys: &Keys, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
    check_sizes(key, value)?;
    let blind = keys.blind(table.id(), key);
    let envelope = keys.seal(&blind, table.id(), key, value)?;
    conn.prepare_cached(
        "INSERT INTO records (blind, envelope) VALUES (?1, ?2)
         ON CONFLICT (blind) DO UPDATE SET envelope = excluded.envelope",
    )?
    .execute(params![&blind[..], envelope])?;
    Ok(())
}

fn op_get(
    conn: &Connection,
    keys: &Keys,
    table: Table,
    key: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>> {
    if key.len() > MAX_KEY_LEN {
        return Ok(None);
    }
    let blind = keys.blind(table.id(), key);
    let envelope: Option<Vec<u8>> = conn
        .prepare_cached("SELECT envelope FROM records WHERE blind = ?1")?
        .query_row([&blind[..]], |r| r.get(0))
        .optional()
        .map_err(column_type_is_corrupt)?;
    let Some(envelope) = envelope else {
        return Ok(None);
    };
    let opened = keys.open(&blind, &envelope)?;
    if opened.table_id != table.id() || opened.key != key {
        return Err(ProfileStoreError::Tampered);
    }
    Ok(Some(opened.value))
}

fn op_delete(conn: &Connection, keys: &Keys, table: Table, key: &[u8]) -> Result<bool> {
    if key.len() > MAX_KEY_LEN {
        return Ok(false);
    }
    let blind = keys.blind(table.id(), key);
    let n = conn
        .prepare_cached("DELETE FROM records WHERE blind = ?1")?
        .execute([&blind[..]])?;
    Ok(n > 0)
}

/// Decrypts every record, calling `f` with each (table, key, value). Fails
/// on the first record that does not authenticate under its row's blind.
fn for_each_record(
    conn: &Connection,
    keys: &Keys,
    mut f: impl FnMut(Table, Vec<u8>, Zeroizing<Vec<u8>>),
) -> Result<()> {
    let mut stmt = conn.prepare_cached("SELECT blind, envelope FROM records")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let blind: Vec<u8> = row.get(0).map_err(column_type_is_corrupt)?;
        let envelope: Vec<u8> = row.get(1).map_err(column_type_is_corrupt)?;
        let opened = keys.open(&blind, &envelope)?;
        let table = Table::from_id(opened.table_id).ok_or(ProfileStoreError::Tampered)?;
        if keys.blind(opened.table_id, &opened.key)[..] != blind[..] {
            return Err(ProfileStoreError::Tampered);
        }
        f(table, opened.key, opened.value);
    }
    Ok(())
}

fn op_scan(conn: &Connection, keys: &Keys, table: Table) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for_each_record(conn, keys, |t, k, v| {
        if t == table {
            out.push((k, v));
        }
    })?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// A blob or integer where a blob was expected: the file was altered.
fn column_type_is_corrupt(e: rusqlite::Error) -> ProfileStoreError {
    match e {
        rusqlite::Error::InvalidColumnType(..) => ProfileStoreError::Tampered,
        other => not_a_database(other),
    }
}

/// Removes a half-created store (best effort).
fn remove_store_files(path: &Path) {
    for p in [
        path.to_path_buf(),
        sidecar(path, "-wal"),
        sidecar(path, "-shm"),
        sidecar(path, "-journal"),
    ] {
        let _ = std::fs::remove_file(p);
    }
}

/// Pops a store id off `IN_TRANSACTION` when a transaction closure ends
/// (even by panic).
struct InTransaction(u64);

impl InTransaction {
    fn enter(id: u64) -> Self {
        IN_TRANSACTION.with(|s| s.borrow_mut().push(id));
        Self(id)
    }
}

impl Drop for InTransaction {
    fn drop(&mut self) {
        IN_TRANSACTION.with(|s| {
            let mut s = s.borrow_mut();
            if let Some(pos) = s.iter().rposition(|&i| i == self.0) {
                s.remove(pos);
            }
        });
    }
}

impl ProfileStore {
    /// Creates a new profile store at `path`, protected by `password` (the
    /// store never copies the password: keep it in a `Zeroizing` buffer), with
    /// [`KdfParams::RECOMMENDED`]. Fails with `AlreadyExists` if there is
    /// anything at `path` (or a `-wal`/`-journal` file beside it).
    ///
    /// # Errors
    /// `EmptyPassword`, `AlreadyExists`, `Kdf`, `Rng`, `Io`, `Db`.
    pub fn create(path: impl AsRef<Path>, password: &[u8]) -> Result<Self> {
        Self::create_with_params(path.as_ref(), password, KdfParams::RECOMMENDED)
    }

    /// Creates a store with cheap Argon2 parameters
    /// ([`KdfParams::INSECURE_FOR_TESTS`]): for tests only, which is why it
    /// exists only with the `insecure-test-kdf` feature.
    ///
    /// # Errors
    /// As [`ProfileStore::create`].
    #[cfg(any(test, feature = "insecure-test-kdf"))]
    pub fn create_insecure_for_tests(path: impl AsRef<Path>, password: &[u8]) -> Result<Self> {
        Self::create_with_params(path.as_ref(), password, KdfParams::INSECURE_FOR_TESTS)
    }

    fn create_with_params(path: &Path, password: &[u8], params: KdfParams) -> Result<Self> {
        if password.is_empty() {
            return Err(ProfileStoreError::EmptyPassword);
        }
        for p in [
            path.to_path_buf(),
            sidecar(path, "-wal"),
            sidecar(path, "-journal"),
        ] {
            if p.try_exists()? {
                return Err(ProfileStoreError::AlreadyExists(path.to_path_buf()));
            }
        }
        let mut salt = [0u8; SALT_LEN];
        crypto::random_bytes(&mut salt)?;
        let header = Header {
            format: FORMAT_VERSION,
            kdf: KDF_ARGON2ID,
            params,
            salt,
        };
        let keys = Keys::derive(password, &salt, params)?;
        let key_check = keys.seal_check(&header.ad())?;

        // Claim the path atomically: two creators cannot both succeed. On
        // Unix the file is readable by its owner only; SQLite gives the
        // `-wal` and `-shm` files the same permissions.
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(f) => drop(f),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(ProfileStoreError::AlreadyExists(path.to_path_buf()));
            }
            Err(e) => return Err(e.into()),
        }
        let init = || -> Result<Connection> {
            let mut conn = connect(path)?;
            configure(&conn)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(SCHEMA)?;
            write_header(&tx, &header, &key_check)?;
            tx.commit()?;
            Ok(conn)
        };
        match init() {
            Ok(conn) => Ok(Self::from_parts(path, conn, keys)),
            Err(e) => {
                remove_store_files(path);
                Err(e)
            }
        }
    }

    /// Opens an existing profile store with its password.
    ///
    /// # Errors
    /// `NotFound` if there is no file; `WrongPassword` if the password (or
    /// the header) is wrong; `Corrupt` if the file is not a profile store;
    /// `UnsupportedVersion`; `Kdf`; `Db`; `Io`.
    pub fn open(path: impl AsRef<Path>, password: &[u8]) -> Result<Self> {
        let path = path.as_ref();
        if !path.try_exists()? {
            return Err(ProfileStoreError::NotFound(path.to_path_buf()));
        }
        let conn = connect(path)?;
        // Nothing is written to a file until it is known to be a profile
        // store and the password is right.
        let (header, check) = read_header(&conn)?;
        let keys = Keys::derive(password, &header.salt, header.params)?;
        keys.verify_check(&header.ad(), &check)?;
        configure(&conn)?;
        Ok(Self::from_parts(path, conn, keys))
    }

    fn from_parts(path: &Path, conn: Connection, keys: Keys) -> Self {
        Self {
            path: path.to_path_buf(),
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            inner: Mutex::new(Inner { conn, keys }),
        }
    }

    /// The path of the database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        if IN_TRANSACTION.with(|s| s.borrow().contains(&self.id)) {
            return Err(ProfileStoreError::Reentrant);
        }
        // A panic inside a transaction closure rolled the transaction back,
        // so the connection is consistent even if the mutex is poisoned.
        Ok(self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Stores `value` under `(table, key)`, replacing any previous value.
    /// Durable when it returns.
    ///
    /// # Errors
    /// `TooLarge`, `Db`, `Rng`, `Reentrant`.
    pub fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        let inner = self.lock()?;
        op_put(&inner.conn, &inner.keys, table, key, value)
    }

    /// The value under `(table, key)`, if any.
    ///
    /// # Errors
    /// `Tampered` if the stored record does not authenticate; `Db`.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let inner = self.lock()?;
        op_get(&inner.conn, &inner.keys, table, key)
    }

    /// Deletes `(table, key)`; returns whether it existed. Durable when it
    /// returns; the freed space is zeroed.
    ///
    /// # Errors
    /// `Db`, `Reentrant`.
    pub fn delete(&self, table: Table, key: &[u8]) -> Result<bool> {
        let inner = self.lock()?;
        op_delete(&inner.conn, &inner.keys, table, key)
    }

    /// Every record of `table` as (key, value), sorted by key. Decrypts every
    /// record in the store (tables are not visible on disk).
    ///
    /// # Errors
    /// `Tampered` if any record does not authenticate; `Db`.
    pub fn scan(&self, table: Table) -> Result<Vec<Record>> {
        let inner = self.lock()?;
        op_scan(&inner.conn, &inner.keys, table)
    }

    /// Runs `f` in one SQLite transaction: everything it wrote is committed
    /// together if it returns `Ok`, and nothing is if it returns `Err` (or
    /// panics). Calling the store itself from inside `f` fails with
    /// `Reentrant`: use the handle.
    ///
    /// # Errors
    /// Whatever `f` returns; `Db` if the commit fails.
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&mut ProfileTransaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self.lock()?;
        let inner = &mut *guard;
        let tx = inner
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = {
            let _in_tx = InTransaction::enter(self.id);
            let mut handle = ProfileTransaction {
                conn: &tx,
                keys: &inner.keys,
            };
            f(&mut handle)?
        };
        tx.commit()?;
        Ok(out)
    }

    /// Changes the password: checks `current`, draws a new salt, derives new
    /// keys and re-encrypts every record under them (new blinded keys too) in
    /// one transaction, then checkpoints and truncates the write-ahead log.
    /// The Argon2 parameters are kept, raised to [`KdfParams::RECOMMENDED`]
    /// if they were weaker (except in test builds).
    ///
    /// # Errors
    /// `WrongPassword` if `current` is wrong; `EmptyPassword`; `Tampered` if
    /// a record does not authenticate (nothing is changed then); `Db`; `Kdf`.
    pub fn change_password(&self, current: &[u8], new: &[u8]) -> Result<()> {
        if new.is_empty() {
            return Err(ProfileStoreError::EmptyPassword);
        }
        let mut guard = self.lock()?;
        let inner = &mut *guard;
        let (old_header, check) = read_header(&inner.conn)?;
        Keys::derive(current, &old_header.salt, old_header.params)?
            .verify_check(&old_header.ad(), &check)?;

        let mut params = old_header.params;
        if cfg!(not(any(test, feature = "insecure-test-kdf")))
            && !params.at_least(KdfParams::RECOMMENDED)
        {
            params = KdfParams::RECOMMENDED;
        }
        let mut salt = [0u8; SALT_LEN];
        crypto::random_bytes(&mut salt)?;
        let header = Header {
            format: FORMAT_VERSION,
            kdf: KDF_ARGON2ID,
            params,
            salt,
        };
        let new_keys = Keys::derive(new, &salt, params)?;
        let new_check = new_keys.seal_check(&header.ad())?;

        let tx = inner
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old_blinds: Vec<Vec<u8>> = tx
            .prepare("SELECT blind FROM records")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()
            .map_err(column_type_is_corrupt)?;
        for old_blind in &old_blinds {
            let envelope: Vec<u8> = tx
                .prepare_cached("SELECT envelope FROM records WHERE blind = ?1")?
                .query_row([old_blind], |r| r.get(0))
                .map_err(column_type_is_corrupt)?;
            let opened = inner.keys.open(old_blind, &envelope)?;
            let table = Table::from_id(opened.table_id).ok_or(ProfileStoreError::Tampered)?;
            if inner.keys.blind(opened.table_id, &opened.key)[..] != old_blind[..] {
                return Err(ProfileStoreError::Tampered);
            }
            tx.prepare_cached("DELETE FROM records WHERE blind = ?1")?
                .execute([old_blind])?;
            // A plain INSERT: a clash with a not yet re-encrypted old blind
            // (probability 2^-256) aborts the whole change.
            let blind = new_keys.blind(opened.table_id, &opened.key);
            let sealed = new_keys.seal(&blind, table.id(), &opened.key, &opened.value)?;
            tx.prepare_cached("INSERT INTO records (blind, envelope) VALUES (?1, ?2)")?
                .execute(params![&blind[..], sealed])?;
        }
        write_header(&tx, &header, &new_check)?;
        tx.commit()?;
        inner.keys = new_keys;
        // Old-key envelopes are zeroed in the new page versions
        // (secure_delete); copy those into the database and empty the log,
        // which still holds the old versions. Best effort: the change is
        // committed, so a checkpoint blocked by another reader must not
        // report failure; the next checkpoint (at the latest when the store
        // closes) finishes the job.
        let _ = checkpoint_truncate(&inner.conn);
        Ok(())
    }

    /// Copies the write-ahead log into the database and truncates the log
    /// to zero bytes.
    ///
    /// # Errors
    /// `Db`; `Reentrant`.
    pub fn checkpoint(&self) -> Result<()> {
        let inner = self.lock()?;
        checkpoint_truncate(&inner.conn)
    }

    /// Runs SQLite's `integrity_check`, then decrypts and authenticates every
    /// record; returns the number of records.
    ///
    /// # Errors
    /// `Corrupt` if SQLite finds damage; `Tampered` if a record does not
    /// authenticate; `Db`.
    pub fn integrity_check(&self) -> Result<usize> {
        let inner = self.lock()?;
        let result: Vec<String> = inner
            .conn
            .prepare("PRAGMA integrity_check")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()
            .map_err(not_a_database)?;
        if result != ["ok"] {
            return Err(ProfileStoreError::Corrupt("SQLite integrity_check failed"));
        }
        let mut n = 0usize;
        for_each_record(&inner.conn, &inner.keys, |_, _, _| n += 1)?;
        Ok(n)
    }

    /// The Argon2 parameters this profile's key is derived with.
    ///
    /// # Errors
    /// `Corrupt`, `Db`.
    pub fn kdf_params(&self) -> Result<KdfParams> {
        let inner = self.lock()?;
        Ok(read_header(&inner.conn)?.0.params)
    }
}

fn checkpoint_truncate(conn: &Connection) -> Result<()> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    if busy != 0 {
        return Err(ProfileStoreError::Db(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("checkpoint blocked by another connection".into()),
        )));
    }
    Ok(())
}

/// The handle a [`ProfileStore::transaction`] closure gets: the same
/// operations, all committed together.
pub struct ProfileTransaction<'a> {
    conn: &'a Connection,
    keys: &'a Keys,
}

impl fmt::Debug for ProfileTransaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfileTransaction").finish_non_exhaustive()
    }
}

impl ProfileTransaction<'_> {
    /// As [`ProfileStore::put`], inside the transaction.
    ///
    /// # Errors
    /// `TooLarge`, `Db`, `Rng`.
    pub fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        op_put(self.conn, self.keys, table, key, value)
    }

    /// As [`ProfileStore::get`]; sees this transaction's own writes.
    ///
    /// # Errors
    /// `Tampered`, `Db`.
    pub fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>> {
        op_get(self.conn, self.keys, table, key)
    }

    /// As [`ProfileStore::delete`], inside the transaction.
    ///
    /// # Errors
    /// `Db`.
    pub fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool> {
        op_delete(self.conn, self.keys, table, key)
    }

    /// As [`ProfileStore::scan`]; sees this transaction's own writes.
    ///
    /// # Errors
    /// `Tampered`, `Db`.
    pub fn scan(&mut self, table: Table) -> Result<Vec<Record>> {
        op_scan(self.conn, self.keys, table)
    }
}
