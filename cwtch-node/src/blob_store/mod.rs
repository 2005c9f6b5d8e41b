//! The server's durable blob store: an append-only log of fixed-size
//! records, synced before anything is acknowledged, with group commit.
//!
//! A Cwtch server keeps opaque sealed blobs, each exactly
//! [`SEALED_BLOB_LEN`] bytes, and hands them out by index. This module is
//! the one place they are written to disk.
//!
//! # What is stored
//! For each blob: its index, the unix second the server took it (for
//! age-based retention), the blob, and a checksum ([`log`] has the files
//! and the record format). Nothing else: the server never stores who
//! posted, from where, or any per-group data.
//!
//! Indices start at 1, are assigned consecutively by the store and are never
//! reused, even after every blob has been pruned. Retention always removes
//! the oldest blobs first, so the stored blobs are always the contiguous
//! range `oldest..=head`.
//!
//! # Why a log of our own, and not SQLite
//! Blobs are all the same size and only ever appended and removed from the
//! front: the index says where a blob is, so no B-tree is needed. Until
//! this format, blobs were rows of a SQLite table in WAL mode: each commit
//! wrote every 64 KiB page it touched to the WAL (13.5 KB per 2 KiB blob
//! at 16 posting clients), checksummed it, synced it, and a checkpoint
//! copied it again. The log writes each blob once, in one `pwrite` and one
//! `fdatasync` per commit; server CPU per post over TCP at 16 clients fell
//! from about 29 to 22 µs (BENCHMARKS.md). SQLite stays the format of
//! backups ([`sqlite`]), and a store found in it is imported
//! ([`BlobStore::import_sqlite`]).
//!
//! # Durability
//! A commit returns once its records are synced (`fdatasync`): a blob
//! acknowledged after its commit survives `kill -9` and power loss (as far
//! as the disk honours `fsync`). Opening a store after a crash finds the
//! last complete record and discards what follows (never acknowledged).
//!
//! Durable writes cost one sync per commit, so throughput comes from group
//! commit: [`BlobStore::append_batch`] writes a whole batch with one sync,
//! and [`GroupCommitter`] gathers concurrent posts from async tasks into
//! such batches on a dedicated writer thread.
//!
//! # Privacy at rest
//! Pruned blobs are overwritten with zeros, then whole segment files are
//! deleted and the rest is punched out of its file ([`log`], "Pruning").
//!
//! # Reading
//! [`BlobStore::reader`] gives a [`BlobReader`] that reads while the writer
//! commits, never past the durable head. All reads are bounded by
//! [`MAX_READ_LIMIT`] blobs. [`ReadThread`] runs one on a thread of its
//! own, for async code that must not wait for the disk;
//! [`GroupCommitter::read_recent`] answers from the last blobs committed,
//! kept in memory. A reader pages with `read_after(cursor, limit)`; when
//! blobs after the cursor were pruned, the first index returned is more
//! than `cursor + 1`, so a client can tell what it missed.
//!
//! # Example
//! ```
//! use cwtch_node::blob_store::{BlobStore, GroupCommitter, RetentionPolicy};
//! use cwtch_proto::group::SEALED_BLOB_LEN;
//!
//! # fn main() -> Result<(), cwtch_node::blob_store::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("blobs");
//! let policy = RetentionPolicy { max_blobs: Some(1_000_000), ..RetentionPolicy::UNLIMITED };
//! let store = BlobStore::open(&path, policy)?;
//! let reader = store.reader();
//! let committer = GroupCommitter::start(store)?;
//! let mut watch = committer.watch_head();
//!
//! smol::block_on(async {
//!     // Resolves once the blob is durable; many posts share one fsync.
//!     let index = committer.submit(Box::new([7u8; SEALED_BLOB_LEN])).await?;
//!     assert_eq!(index, 1);
//!     assert_eq!(watch.changed().await?, 1);
//!     let page = reader.read_after(0, 100)?;
//!     assert_eq!(page[0].0, 1);
//!     Ok::<_, cwtch_node::blob_store::Error>(())
//! })?;
//! let store = committer.shutdown()?;
//! assert_eq!(store.head(), 1);
//! # Ok(())
//! # }
//! ```

mod committer;
pub mod log;
mod reads;
pub mod sqlite;

pub use committer::{CommitLatency, CommitterConfig, GroupCommitter, HeadWatch};
pub use reads::{ReadThread, Run};
pub use sqlite::SqliteStore;

use std::ops::{ControlFlow, Range};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cwtch_proto::group::SEALED_BLOB_LEN;

use log::{Log, Segments, decode};

/// One sealed blob as the store keeps it.
pub type Blob = [u8; SEALED_BLOB_LEN];

/// The most blobs one read returns (2 MiB of blobs); larger limits are
/// clamped to it, so a read never allocates without bound.
pub const MAX_READ_LIMIT: usize = 1024;

/// The file in an imported store that records the imported store's head.
const IMPORTED_FILE: &str = "imported";
/// [`IMPORTED_FILE`] once the old store was checked and is being removed.
const IMPORTED_OK_FILE: &str = "imported.ok";
/// [`IMPORTED_FILE`] once the old store is removed.
const IMPORTED_DONE_FILE: &str = "imported.done";

/// Records scanned per step when pruning by age.
const PRUNE_SCAN: u64 = 4096;

/// Everything that can go wrong in the blob store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A blob of the wrong length was offered.
    #[error("blob is {len} bytes; sealed blobs are exactly {SEALED_BLOB_LEN} bytes")]
    WrongSize {
        /// The length offered.
        len: usize,
    },
    /// A stored blob has the wrong length: the database was altered.
    #[error("stored blob {index} is {len} bytes, not {SEALED_BLOB_LEN}: the database is corrupt")]
    CorruptBlob {
        /// Its index.
        index: u64,
        /// Its length.
        len: usize,
    },
    /// The file is a SQLite database but not a blob store.
    #[error("not a blob store (application_id {found:#x})")]
    NotABlobStore {
        /// The application id found.
        found: i32,
    },
    /// The blob store was written by an unknown schema version.
    #[error(
        "unsupported blob store format version {found} (this build knows the blob log's {} and SQLite's 1 and 2)",
        log::META_VERSION
    )]
    UnsupportedVersion {
        /// The version found.
        found: i32,
    },
    /// A file was given where a blob log (a directory) was expected: say, a
    /// store in the SQLite format, which is imported, not opened.
    #[error(
        "{} is a file, not a blob store's directory (a store in the SQLite format is imported, not opened)",
        .0.display()
    )]
    SqliteFormat(std::path::PathBuf),
    /// SQLite refused to put the database in WAL mode.
    #[error("could not enable WAL mode (journal_mode is {mode})")]
    NoWal {
        /// The journal mode SQLite reports.
        mode: String,
    },
    /// `PRAGMA integrity_check` or the store's own invariants failed.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// No more indices (2^63 - 1 blobs have been stored).
    #[error("blob indices exhausted")]
    IndicesExhausted,
    /// The group committer has stopped (shut down, or after a fatal error).
    #[error("the group committer has stopped")]
    Closed,
    /// The committer's queue is full; try again later.
    #[error("the group committer's queue is full")]
    QueueFull,
    /// A post would not get the index it was promised when queued (after
    /// a failed commit): the committer stops rather than break the promise.
    #[error("a promised index would go to another blob")]
    IndexMismatch,
    /// The batch this post was part of failed to commit; it is not stored.
    #[error("commit failed: {0}")]
    CommitFailed(Arc<Error>),
    /// The writer thread could not be started.
    #[error("could not start the writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The writer thread panicked.
    #[error("the writer thread panicked")]
    WriterPanicked,
    /// An error from SQLite (stores in the SQLite format: backups, and
    /// stores from before the blob log).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Reading or writing the blob log failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A sync of the store's files failed (or a failed write could not be
    /// undone): what the disk holds is no longer known, and the store must
    /// be reopened.
    #[error("sync failed: {0}; the store must be reopened")]
    SyncFailed(#[source] std::io::Error),
    /// Another writer holds the store.
    #[error("{} is in use by another process", .0.display())]
    Locked(std::path::PathBuf),
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How much the store keeps; `None` means no limit. Applied by
/// [`BlobStore::prune`], always removing the oldest blobs first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep at most this many blobs.
    pub max_blobs: Option<u64>,
    /// Keep at most this many bytes of blobs (counted as
    /// `blobs * SEALED_BLOB_LEN`, the payload; the file is somewhat larger).
    pub max_bytes: Option<u64>,
    /// Remove blobs received more than this long ago.
    pub max_age: Option<Duration>,
}

impl RetentionPolicy {
    /// Keep everything.
    pub const UNLIMITED: Self = Self {
        max_blobs: None,
        max_bytes: None,
        max_age: None,
    };
}

/// What [`BlobStore::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Blobs removed in all.
    pub removed: u64,
    /// Of those, removed to get under `max_blobs` / `max_bytes`.
    pub removed_for_space: u64,
    /// Of those, removed only because they were older than `max_age`.
    pub removed_for_age: u64,
    /// The oldest index still stored, if any.
    pub oldest: Option<u64>,
}

/// A snapshot of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Blobs stored.
    pub blobs: u64,
    /// Bytes of blobs stored (`blobs * SEALED_BLOB_LEN`).
    pub bytes: u64,
    /// The index of the last blob ever stored (0 if none ever was); it
    /// does not go down when blobs are pruned.
    pub head: u64,
    /// The index of the oldest blob still stored.
    pub oldest: Option<u64>,
    /// When the oldest blob still stored was received (unix seconds).
    pub oldest_received_at: Option<u64>,
    /// Appends committed since this store was opened (each is one sync of
    /// the log).
    pub commits: u64,
    /// Blobs appended since this store was opened.
    pub appended: u64,
}

/// The current time in unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Turns a slice into a blob, or says why not.
pub fn blob_from_slice(bytes: &[u8]) -> Result<&Blob> {
    bytes
        .try_into()
        .map_err(|_| Error::WrongSize { len: bytes.len() })
}

/// What readers see of the writer: the durable head and the oldest index
/// stored (0: none).
#[derive(Debug, Default)]
struct Published {
    head: AtomicU64,
    oldest: AtomicU64,
}

impl Published {
    fn set(&self, head: u64, oldest: Option<u64>) {
        // Oldest first: a reader that sees the new head sees an oldest at
        // least as new as the one that went with it.
        self.oldest.store(oldest.unwrap_or(0), Ordering::Release);
        self.head.store(head, Ordering::Release);
    }

    fn oldest(&self) -> Option<u64> {
        Some(self.oldest.load(Ordering::Acquire)).filter(|&o| o != 0)
    }
}

/// The durable store of sealed blobs (synchronous; one writer).
///
/// Use it directly from one thread, or hand it to a [`GroupCommitter`] to
/// share it between async tasks.
#[derive(Debug)]
pub struct BlobStore {
    log: Log,
    policy: RetentionPolicy,
    commits: u64,
    appended: u64,
    last_commit: Duration,
    path: PathBuf,
    published: Arc<Published>,
}

impl BlobStore {
    /// Opens the store (a directory) at `path`, creating it if there is
    /// none, and recovers from a crash (see [`log`]).
    ///
    /// Fails with [`Error::SqliteFormat`] if `path` is a store in the SQLite
    /// format (import it with [`import_sqlite`](Self::import_sqlite)), with
    /// [`Error::Locked`] if another writer has it open, and with
    /// [`Error::Integrity`] for files that are not a consistent log.
    pub fn open(path: impl AsRef<Path>, policy: RetentionPolicy) -> Result<Self> {
        let path = path.as_ref();
        if path.is_file() {
            return Err(Error::SqliteFormat(path.to_owned()));
        }
        let log = Log::open(path)?;
        let published = Arc::new(Published::default());
        published.set(log.head(), log.oldest());
        Ok(Self {
            log,
            policy,
            commits: 0,
            appended: 0,
            last_commit: Duration::ZERO,
            path: path.to_owned(),
            published,
        })
    }

    /// Makes a blob log at `path` (which must not exist) holding every blob
    /// of the SQLite-format store `source`, with the same indices and
    /// receive times and the same high-water mark, and opens it. The log is
    /// built beside `path` and renamed into place once complete, so a crash
    /// leaves either no store at `path` or the whole import. `source` is
    /// only read.
    pub fn import_sqlite(
        source: &SqliteStore,
        path: impl AsRef<Path>,
        policy: RetentionPolicy,
    ) -> Result<Self> {
        let path = path.as_ref();
        if path.exists() {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists: an import makes a new store", path.display()),
            )));
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".import");
        let tmp = PathBuf::from(tmp);
        if tmp.exists() {
            // A crash left an import unfinished: start it over.
            std::fs::remove_dir_all(&tmp)?;
        }
        let built = Self::import_into(source, &tmp);
        if let Err(e) = built {
            // Nothing half made stays behind (a full disk stays full).
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Self::open(path, policy)
    }

    /// [`import_sqlite`](Self::import_sqlite)'s copy into a new log at
    /// `tmp`, with the source's head recorded beside it (`imported`: a
    /// later start tells a crash before the old files were removed from an
    /// old store written since).
    fn import_into(source: &SqliteStore, tmp: &Path) -> Result<()> {
        {
            let mut log = Log::open(tmp)?;
            if let Some(oldest) = source.oldest() {
                let before = oldest.checked_sub(1).ok_or_else(|| {
                    Error::Integrity("a blob has index 0; indices begin at 1".into())
                })?;
                log.skip_to(before)?;
            }
            let mut cursor = 0;
            let mut rows: Vec<(u64, Box<Blob>)> = Vec::with_capacity(MAX_READ_LIMIT);
            loop {
                rows.clear();
                let mut bad = None;
                let seen = source.visit_rows_after(cursor, MAX_READ_LIMIT, |index, at, blob| {
                    if bad.is_none() && index != log.head() + 1 + rows.len() as u64 {
                        bad = Some(index);
                    }
                    rows.push((at, Box::new(*blob)));
                    cursor = index;
                })?;
                if let Some(index) = bad {
                    return Err(Error::Integrity(format!(
                        "blob {index} does not follow the one before"
                    )));
                }
                if seen == 0 {
                    break;
                }
                log.append(rows.iter().map(|(at, blob)| (*at, &**blob)))?;
            }
            if source.head() > log.head() {
                log.skip_to(source.head())?;
            }
        }
        let marker = tmp.join(IMPORTED_FILE);
        std::fs::write(&marker, source.head().to_string())?;
        std::fs::File::open(&marker)?.sync_all()?;
        std::fs::File::open(tmp)?.sync_all()?;
        Ok(())
    }

    /// Whether the store this one was imported from was found to be the
    /// one imported and may go ([`confirm_import`](Self::confirm_import)).
    pub fn import_confirmed(&self) -> bool {
        self.path.join(IMPORTED_OK_FILE).exists()
    }

    /// Records that the store this one was imported from was checked and
    /// is to be removed: later starts remove what is left of it without
    /// comparing again (a crash midway through removing it leaves a file
    /// that no longer reads as what was imported).
    pub fn confirm_import(&self) -> Result<()> {
        self.rename_durably(IMPORTED_FILE, IMPORTED_OK_FILE)
    }

    fn rename_durably(&self, from: &str, to: &str) -> Result<()> {
        std::fs::rename(self.path.join(from), self.path.join(to))?;
        std::fs::File::open(&self.path)?.sync_all()?;
        Ok(())
    }

    /// Records that the store this one was imported from is gone: a store
    /// in its place later is another one, never removed unasked.
    pub fn finish_import(&self) -> Result<()> {
        self.rename_durably(IMPORTED_OK_FILE, IMPORTED_DONE_FILE)
    }

    /// Brings the high-water mark up to the head if it is behind (see
    /// [`log`], "Recovery").
    pub fn mark(&mut self) -> Result<()> {
        self.log.mark()
    }

    /// When [`mark`](Self::mark) is next due, if the mark is behind.
    pub fn mark_due(&self) -> Option<std::time::Instant> {
        self.log.mark_due()
    }

    /// The head of the SQLite store this one was imported from, if it was.
    pub fn imported_from_head(&self) -> Option<u64> {
        std::fs::read_to_string(self.path.join(IMPORTED_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// A reader that reads alongside this store (and the
    /// [`GroupCommitter`] it is handed to), never past the durable head.
    pub fn reader(&self) -> BlobReader {
        BlobReader {
            segments: Arc::clone(self.log.segments()),
            view: View::Writer(Arc::clone(&self.published)),
        }
    }

    /// The path the store was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The retention policy [`prune`](Self::prune) applies.
    pub fn policy(&self) -> RetentionPolicy {
        self.policy
    }

    /// Replaces the retention policy (applied at the next prune).
    pub fn set_policy(&mut self, policy: RetentionPolicy) {
        self.policy = policy;
    }

    /// Appends `blobs` durably (one sync), received now. Returns their
    /// indices; an empty batch returns an empty range at `head + 1` and
    /// writes nothing.
    pub fn append_batch(&mut self, blobs: &[Blob]) -> Result<Range<u64>> {
        self.append_iter(blobs.iter(), unix_now())
    }

    /// [`append_batch`](Self::append_batch) with an explicit receive time
    /// (unix seconds).
    pub fn append_batch_at(&mut self, blobs: &[Blob], received_at: u64) -> Result<Range<u64>> {
        self.append_iter(blobs.iter(), received_at)
    }

    /// Appends one blob given as a slice, refusing any length but
    /// [`SEALED_BLOB_LEN`] with [`Error::WrongSize`].
    pub fn append(&mut self, blob: &[u8]) -> Result<u64> {
        let blob = blob_from_slice(blob)?;
        Ok(self.append_iter(std::iter::once(blob), unix_now())?.start)
    }

    /// Appends blobs given as slices with one sync; if any has the wrong
    /// length nothing is written and [`Error::WrongSize`] is returned.
    pub fn append_slices(&mut self, blobs: &[&[u8]]) -> Result<Range<u64>> {
        // Validate everything before writing anything.
        for blob in blobs {
            blob_from_slice(blob)?;
        }
        let blobs = blobs.iter().filter_map(|b| <&Blob>::try_from(*b).ok());
        self.append_iter(blobs, unix_now())
    }

    /// The one write path: all of `blobs`, one sync.
    pub(crate) fn append_iter<'a, I>(&mut self, blobs: I, received_at: u64) -> Result<Range<u64>>
    where
        I: IntoIterator<Item = &'a Blob>,
    {
        let started = std::time::Instant::now();
        let (first, next) = self
            .log
            .append(blobs.into_iter().map(|blob| (received_at, blob)))?;
        if next == first {
            return Ok(first..first);
        }
        self.last_commit = started.elapsed();
        self.commits += 1;
        self.appended += next - first;
        self.published.set(self.log.head(), self.log.oldest());
        Ok(first..next)
    }

    /// How long the last append took: writing its records and syncing
    /// them (the sync that makes the batch durable).
    pub fn last_commit_time(&self) -> Duration {
        self.last_commit
    }

    /// Up to `limit` (at most [`MAX_READ_LIMIT`]) blobs with index greater
    /// than `cursor`, oldest first. Page by passing the last index
    /// returned as the next cursor; an empty result means caught up.
    pub fn read_after(&self, cursor: u64, limit: usize) -> Result<Vec<(u64, Box<Blob>)>> {
        read_after_vec(|c, l, f| self.visit_after(c, l, f), cursor, limit)
    }

    /// Like [`read_after`](Self::read_after) without copying: calls `f`
    /// with each blob in turn (stop early with `ControlFlow::Break`).
    /// Returns how many blobs `f` saw.
    pub fn visit_after<F>(&self, cursor: u64, limit: usize, f: F) -> Result<usize>
    where
        F: FnMut(u64, &Blob) -> ControlFlow<()>,
    {
        let (head, oldest) = (self.log.head(), self.log.oldest());
        let mut f = f;
        visit(
            self.log.segments(),
            cursor,
            limit,
            head,
            || Ok(oldest),
            |i, _, b| f(i, b),
        )
    }

    /// The index of the last blob ever stored; 0 if none ever was. The
    /// first index is 1.
    pub fn head(&self) -> u64 {
        self.log.head()
    }

    /// The index of the oldest blob stored, if any.
    pub fn oldest(&self) -> Option<u64> {
        self.log.oldest()
    }

    /// Removes the oldest blobs until the retention policy holds at `now`
    /// (unix seconds): first down to `max_blobs` and `max_bytes`, then
    /// every blob received before `now - max_age` (a blob exactly
    /// `max_age` old is kept). Age pruning removes a prefix: it stops at
    /// the first blob young enough, so the stored blobs stay contiguous
    /// even if the clock once went backwards.
    pub fn prune(&mut self, now: u64) -> Result<PruneStats> {
        let mut stats = PruneStats {
            oldest: self.oldest(),
            ..PruneStats::default()
        };
        let Some(oldest) = self.oldest() else {
            return Ok(stats);
        };
        let head = self.head();
        let stored = head - oldest + 1;
        let mut keep = stored;
        if let Some(max) = self.policy.max_blobs {
            keep = keep.min(max);
        }
        if let Some(max) = self.policy.max_bytes {
            keep = keep.min(max / SEALED_BLOB_LEN as u64);
        }
        // The first index kept for space reasons (head + 1: none).
        let space_cut = head + 1 - keep;
        let mut cut = space_cut;
        if let Some(max_age) = self.policy.max_age {
            let cutoff = now.saturating_sub(max_age.as_secs());
            let mut from = cut.max(oldest);
            cut = head + 1;
            while from <= head {
                let to = head.min(from.saturating_add(PRUNE_SCAN - 1));
                if let Some(young) = self.log.first_young(from, to, cutoff)? {
                    cut = young;
                    break;
                }
                from = to + 1;
            }
        }
        if cut <= oldest {
            return Ok(stats);
        }
        if self.log.record_prune(cut)?.is_none() {
            return Ok(stats);
        }
        // Readers learn the new oldest before the files lose the blobs.
        self.published.set(self.log.head(), self.log.oldest());
        self.log.finish_prune_now()?;
        stats.removed = cut - oldest;
        stats.removed_for_space = space_cut.max(oldest) - oldest;
        stats.removed_for_age = stats.removed - stats.removed_for_space;
        stats.oldest = self.oldest();
        Ok(stats)
    }

    /// A snapshot of the store.
    pub fn stats(&self) -> Result<Stats> {
        let oldest = match self.oldest() {
            Some(index) => match self.log.read_one(index)? {
                Some((at, _)) => Some((index, at)),
                None => return Err(Error::CorruptBlob { index, len: 0 }),
            },
            None => None,
        };
        let blobs = oldest.map_or(0, |(idx, _)| self.head().saturating_sub(idx) + 1);
        Ok(Stats {
            blobs,
            bytes: blobs.saturating_mul(SEALED_BLOB_LEN as u64),
            head: self.head(),
            oldest: oldest.map(|(idx, _)| idx),
            oldest_received_at: oldest.map(|(_, at)| at),
            commits: self.commits,
            appended: self.appended,
        })
    }

    /// Reads every stored record and checks it: its checksum, and that it
    /// is the record of its index (the stored blobs are exactly
    /// `oldest..=head`). Reads the whole store.
    pub fn integrity_check(&self) -> Result<()> {
        let Some(oldest) = self.oldest() else {
            return Ok(());
        };
        match self.log.segments().first_invalid(oldest, self.head())? {
            Some(index) => Err(Error::Integrity(format!(
                "the record of blob {index} is damaged or missing"
            ))),
            None => Ok(()),
        }
    }
}

/// Where a [`BlobReader`] learns the head and the oldest index.
#[derive(Debug)]
enum View {
    /// From the writer in this process.
    Writer(Arc<Published>),
    /// From the files (another process writes, or none).
    Files {
        /// The last head found: the next scan starts there.
        known_head: std::sync::Mutex<u64>,
    },
}

/// Reads a blob store while a [`BlobStore`] (or [`GroupCommitter`]) writes
/// it, never past the durable head. Get one from [`BlobStore::reader`], or
/// open one on a store another process writes ([`open`](Self::open)).
#[derive(Debug)]
pub struct BlobReader {
    segments: Arc<Segments>,
    view: View,
}

impl BlobReader {
    /// Opens an existing blob store read-only, for a process that does not
    /// write it (`server info`, `server backup`): the head is the last of
    /// the records that follow the high-water mark, found as opening a
    /// store finds it, without repairing anything.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_file() {
            return Err(Error::SqliteFormat(path.to_owned()));
        }
        let (_, head) = log::scan_head(path)?;
        Ok(Self {
            segments: Arc::new(Segments::new(path)),
            view: View::Files {
                known_head: std::sync::Mutex::new(head),
            },
        })
    }

    /// See [`BlobStore::read_after`].
    pub fn read_after(&self, cursor: u64, limit: usize) -> Result<Vec<(u64, Box<Blob>)>> {
        read_after_vec(|c, l, f| self.visit_after(c, l, f), cursor, limit)
    }

    /// See [`BlobStore::visit_after`].
    pub fn visit_after<F>(&self, cursor: u64, limit: usize, f: F) -> Result<usize>
    where
        F: FnMut(u64, &Blob) -> ControlFlow<()>,
    {
        let mut f = f;
        self.visit_rows(cursor, limit, |i, _, b| f(i, b))
    }

    /// Like [`visit_after`](Self::visit_after), with each blob's receive
    /// time (unix seconds) too.
    pub fn visit_rows<F>(&self, cursor: u64, limit: usize, f: F) -> Result<usize>
    where
        F: FnMut(u64, u64, &Blob) -> ControlFlow<()>,
    {
        let head = self.head()?;
        visit(&self.segments, cursor, limit, head, || self.oldest(), f)
    }

    /// The index of the last blob committed (0 if none).
    pub fn head(&self) -> Result<u64> {
        match &self.view {
            View::Writer(published) => Ok(published.head.load(Ordering::Acquire)),
            View::Files { known_head } => {
                let mut known = known_head.lock().unwrap_or_else(|e| e.into_inner());
                let meta = log::current_meta(self.segments.dir())?;
                self.segments.forget();
                let head = log::reader_head(&self.segments, meta, *known)?;
                *known = head;
                Ok(head)
            }
        }
    }

    /// The index of the oldest blob stored, if any.
    pub fn oldest(&self) -> Result<Option<u64>> {
        match &self.view {
            View::Writer(published) => Ok(published.oldest()),
            View::Files { known_head } => {
                let meta = log::current_meta(self.segments.dir())?;
                let head = *known_head.lock().unwrap_or_else(|e| e.into_inner());
                let head = head.max(meta.high_water);
                Ok((meta.pruned_below <= head).then_some(meta.pruned_below))
            }
        }
    }
}

/// Copies what `visit` shows into a vector.
fn read_after_vec<V>(visit: V, cursor: u64, limit: usize) -> Result<Vec<(u64, Box<Blob>)>>
where
    V: FnOnce(u64, usize, &mut dyn FnMut(u64, &Blob) -> ControlFlow<()>) -> Result<usize>,
{
    let mut out = Vec::with_capacity(limit.min(MAX_READ_LIMIT));
    visit(cursor, limit, &mut |index, blob| {
        out.push((index, Box::new(*blob)));
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// Calls `f` for up to `limit` (at most [`MAX_READ_LIMIT`]) blobs with
/// index greater than `cursor` and at most `head`, in index order; returns
/// how many it saw. A record that does not read back is corruption, unless
/// it was pruned meanwhile (the read then goes on from the new oldest).
fn visit<O, F>(
    segments: &Segments,
    cursor: u64,
    limit: usize,
    head: u64,
    oldest: O,
    mut f: F,
) -> Result<usize>
where
    O: Fn() -> Result<Option<u64>>,
    F: FnMut(u64, u64, &Blob) -> ControlFlow<()>,
{
    let limit = limit.min(MAX_READ_LIMIT) as u64;
    let mut seen = 0usize;
    let mut after = cursor;
    // A second round only when a prune overtook the first.
    for _ in 0..2 {
        let Some(first) = oldest()? else {
            return Ok(seen);
        };
        let from = after.saturating_add(1).max(first);
        let left = limit - seen as u64;
        if from > head || left == 0 {
            return Ok(seen);
        }
        let to = head.min(from.saturating_add(left - 1));
        let mut bad = None;
        segments.read(from, to, |index, record| match decode(record, index) {
            Some(record) => {
                seen += 1;
                after = index;
                f(index, record.received_at, record.blob)
            }
            None => {
                bad = Some(index);
                ControlFlow::Break(())
            }
        })?;
        let Some(index) = bad else {
            return Ok(seen);
        };
        if oldest()?.is_some_and(|now| now <= index) {
            return Err(Error::CorruptBlob { index, len: 0 });
        }
        segments.forget();
        if seen > 0 {
            return Ok(seen);
        }
    }
    Ok(seen)
}
