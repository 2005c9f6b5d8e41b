//! The blob log: the files a [`BlobStore`](super::BlobStore) keeps its
//! blobs in.
//!
//! A store is a directory:
//! - segment files named after their first index (`00000000000000000001.blobs`,
//!   20 decimal digits), each with room for `SEGMENT_BLOBS` records of
//!   `RECORD_LEN` bytes; the record of index `i` is at
//!   `(i - first) * RECORD_LEN` in segment `first = 1 + k * SEGMENT_BLOBS`;
//! - `meta`: the highest index known durable (`high_water`) and the lowest
//!   index not pruned (`pruned_below`), recorded when a segment begins and
//!   before a prune, in two checksummed copies rewritten in place in turn
//!   (the newer valid one counts: a torn write of one leaves the other,
//!   and a full disk can still record a prune, which frees space);
//! - `lock`: held (`flock`) by the one writer.
//!
//! A record is four u64 (little-endian): the index, the first and the last
//! index of the write that wrote it, and the receive time (unix seconds);
//! then the blob and a CRC-32 of all that (u32 LE): 2,084 bytes. A record
//! is valid when its checksum holds and its index is the one its place
//! says: zeros, a torn write or a record moved are not.
//!
//! # Writing
//! An append writes a batch's records after the head with one `pwrite` per
//! segment it touches and syncs each (`fdatasync`): one write and one sync
//! per commit, where SQLite wrote each 64 KiB page the batch touched to
//! its write-ahead log, synced that, then copied the pages again. A segment
//! is written with zeros ahead of its records (`ZERO_AHEAD` at a time),
//! so that most syncs write data into blocks that already exist and need
//! no journal commit of the file system (measured at 16 clients: the
//! writer's CPU per post 8.2–8.5 µs with zeros ahead, 11.9–12.6 without).
//!
//! # Recovery
//! Opening finds the head by reading forward from `high_water` while
//! records are valid (at most about one segment: `high_water` is rewritten
//! as each segment begins and at each prune). Writes go in order, each
//! synced before the next, and a batch is acknowledged only once all its
//! writes are synced; so what follows the head can only be the last write,
//! cut short by a crash and never acknowledged. If the head's own record
//! says its write went further, that write is cut short too and is dropped
//! whole. What is dropped is zeroed, and segments past it are removed.
//!
//! A valid record further on that a later write made means the record
//! after the head was damaged after it was synced: opening refuses the
//! store with [`Error::Integrity`] rather than drop what follows (and give
//! its indices to other blobs). So does a `meta` whose marks are not
//! readable records.
//!
//! # Pruning
//! Retention removes a prefix. `meta` records the new `pruned_below` first
//! (so that a crash mid-prune never brings pruned blobs back), then the
//! pruned records are overwritten with zeros and synced (so that they
//! leave the disk's blocks, as SQLite's `secure_delete` did, on file
//! systems that write in place; not on copy-on-write ones, nor below the
//! file system in an SSD), then whole segments below it are deleted and the
//! rest of the prefix is punched out of its segment
//! (`fallocate(PUNCH_HOLE)`). Only data is overwritten, never holes, so a
//! prune needs no new space. Opening finishes a prune a crash interrupted.
//!
//! # A full disk
//! A write refused for lack of space is undone before the error is
//! returned: what the batch already wrote (a first write into the end of
//! a segment may have been synced) is overwritten with zeros and synced,
//! so nothing past the head can later be taken for a stored blob, and the
//! committer goes on. A failed sync, or a failed undo, stops the writer
//! ([`Error::SyncFailed`]).
//!
//! # Readers in another process
//! `server info` and `server backup` read the files while the server
//! writes. They take the head as recovery would (the last complete
//! write), so they never see a write cut short; they may see a complete
//! write a moment before the server has synced it, which a crash of the
//! machine in that moment would lose.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cwtch_proto::group::SEALED_BLOB_LEN;

use super::{Blob, Error, Result};

/// Records per segment file (34 MB of records).
pub(crate) const SEGMENT_BLOBS: u64 = 16_384;
/// The bytes of one record: index, the first and last index of its write,
/// receive time, blob, CRC-32.
pub(crate) const RECORD_LEN: usize = 4 * 8 + SEALED_BLOB_LEN + 4;
/// The most records one write covers: a crash can leave at most this many
/// records after the head half-written, or written but not synced.
pub(crate) const MAX_WRITE: u64 = 4096;
/// How far ahead of its records a segment is written with zeros.
const ZERO_AHEAD: u64 = 4 << 20;
/// Records read at a time when scanning.
const SCAN_RECORDS: u64 = 256;
/// The meta file's magic ("CwBL") and format version.
const META_MAGIC: &[u8; 4] = b"CwBL";
pub(crate) const META_VERSION: u32 = 1;
const META_LEN: usize = 4 + 4 + 8 + 8 + 8 + 4;
/// Where the second slot of `meta` begins.
const META_SLOT: u64 = 64;
/// The largest index a store hands out (far from where arithmetic on
/// indices could overflow; a `meta` or segment name past it is refused).
pub(crate) const MAX_INDEX: u64 = 1 << 62;
const META_FILE: &str = "meta";
const LOCK_FILE: &str = "lock";
const SEGMENT_SUFFIX: &str = ".blobs";

/// The segment holding `index` (≥ 1).
fn segment_of(index: u64) -> u64 {
    (index - 1) / SEGMENT_BLOBS
}

/// The first index of segment `k`.
fn first_of(k: u64) -> u64 {
    k * SEGMENT_BLOBS + 1
}

/// The byte offset of `index` in its segment.
fn offset_of(index: u64) -> u64 {
    ((index - 1) % SEGMENT_BLOBS) * RECORD_LEN as u64
}

fn segment_path(dir: &Path, k: u64) -> PathBuf {
    dir.join(format!("{:020}{SEGMENT_SUFFIX}", first_of(k)))
}

/// One record, read back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    /// The first and last index the write that wrote it covered.
    pub(crate) write: (u64, u64),
    /// When the server took the blob (unix seconds).
    pub(crate) received_at: u64,
    pub(crate) blob: &'a Blob,
}

/// Appends the record of `blob` at `index`, written by the write of
/// `write`, to `out`.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    index: u64,
    write: (u64, u64),
    received_at: u64,
    blob: &Blob,
) {
    let start = out.len();
    for word in [index, write.0, write.1, received_at] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(blob);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// The record in `bytes`, if it is a valid record of `index`.
pub(crate) fn decode(bytes: &[u8], index: u64) -> Option<Record<'_>> {
    if bytes.len() != RECORD_LEN {
        return None;
    }
    let (body, crc) = bytes.split_at(RECORD_LEN - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let (words, blob) = body.split_at(32);
    let word = |i: usize| {
        words
            .get(i * 8..i * 8 + 8)
            .and_then(|w| w.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let write = (word(1)?, word(2)?);
    if word(0)? != index || !(write.0 <= index && index <= write.1) {
        return None;
    }
    Some(Record {
        write,
        received_at: word(3)?,
        blob: blob.try_into().ok()?,
    })
}

/// What `meta` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    /// An index known durable (every index up to it was stored once).
    pub(crate) high_water: u64,
    /// Every index below this one is pruned.
    pub(crate) pruned_below: u64,
}

impl Meta {
    const NEW: Self = Self {
        high_water: 0,
        pruned_below: 1,
    };

    /// The slot's bytes: magic, version, sequence number, the two marks,
    /// CRC-32 of all that.
    fn encode(self, seq: u64) -> [u8; META_LEN] {
        let mut out = [0u8; META_LEN];
        out[..4].copy_from_slice(META_MAGIC);
        out[4..8].copy_from_slice(&META_VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.high_water.to_le_bytes());
        out[24..32].copy_from_slice(&self.pruned_below.to_le_bytes());
        let crc = crc32fast::hash(&out[..32]);
        out[32..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// A slot's meta and sequence number; `Ok(None)` for a slot that does
    /// not hold one (never written, or torn).
    fn decode(bytes: &[u8]) -> Result<Option<(Self, u64)>> {
        let bad = |why: &str| Error::Integrity(format!("the store's meta file {why}"));
        let word = |at: usize| {
            bytes
                .get(at..at + 8)
                .and_then(|w| w.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        if bytes.len() != META_LEN || crc32fast::hash(&bytes[..32]).to_le_bytes() != bytes[32..] {
            return Ok(None);
        }
        if &bytes[..4] != META_MAGIC {
            return Err(Error::NotABlobStore { found: 0 });
        }
        let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if version != META_VERSION {
            return Err(Error::UnsupportedVersion {
                found: i32::try_from(version).unwrap_or(i32::MAX),
            });
        }
        let meta = Self {
            high_water: word(16),
            pruned_below: word(24),
        };
        if word(8) > MAX_INDEX {
            return Err(bad("has a sequence number past its bound"));
        }
        if meta.high_water > MAX_INDEX {
            return Err(bad("has a high-water mark past the last index"));
        }
        if meta.pruned_below == 0 || meta.pruned_below > meta.high_water + 1 {
            return Err(bad("prunes past its high-water mark"));
        }
        Ok(Some((meta, word(8))))
    }
}

/// The `meta` file: two slots, each rewritten in place in turn (so that a
/// store whose disk is full can still record a prune, which frees space),
/// the valid one with the higher sequence number counting.
#[derive(Debug)]
struct MetaFile {
    file: File,
    seq: u64,
}

impl MetaFile {
    /// Opens the `meta` of `dir` with what it records; `None` if there is
    /// no such file.
    fn open(dir: &Path, write: bool) -> Result<Option<(Self, Meta)>> {
        let path = dir.join(META_FILE);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() && m.len() == 2 * META_SLOT => {}
            Ok(_) => return Err(Error::NotABlobStore { found: 0 }),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let file = OpenOptions::new().read(true).write(write).open(&path)?;
        let mut best: Option<(Meta, u64)> = None;
        for slot in 0..2 {
            let mut bytes = [0u8; META_LEN];
            if read_full_at(&file, &mut bytes, slot * META_SLOT)? != META_LEN {
                continue;
            }
            if let Some((meta, seq)) = Meta::decode(&bytes)?
                && best.is_none_or(|(_, s)| seq > s)
            {
                best = Some((meta, seq));
            }
        }
        let (meta, seq) = best.ok_or_else(|| {
            Error::Integrity("neither copy in the store's meta file is readable".into())
        })?;
        Ok(Some((Self { file, seq }, meta)))
    }

    /// Makes the `meta` of a new store.
    /// Makes the `meta` of a new store: written beside it, synced, then
    /// renamed into place, so a crash leaves no `meta` or a whole one. The
    /// first copy goes in the slot the next write does not use.
    fn create(dir: &Path, meta: Meta) -> Result<Self> {
        let tmp = dir.join("meta.new");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut bytes = vec![0u8; 2 * META_SLOT as usize];
        bytes[META_SLOT as usize..][..META_LEN].copy_from_slice(&meta.encode(1));
        file.write_all_at(&bytes, 0)?;
        file.sync_all().map_err(Error::SyncFailed)?;
        std::fs::rename(&tmp, dir.join(META_FILE))?;
        sync_dir(dir)?;
        Ok(Self { file, seq: 1 })
    }

    /// Records `meta` durably, over the older slot.
    fn write(&mut self, meta: Meta) -> Result<()> {
        let seq = self.seq + 1;
        self.file
            .write_all_at(&meta.encode(seq), (seq % 2) * META_SLOT)?;
        self.file.sync_data().map_err(Error::SyncFailed)?;
        self.seq = seq;
        Ok(())
    }
}

/// What `meta` in `dir` records now (for readers).
fn read_meta(dir: &Path) -> Result<Option<Meta>> {
    Ok(MetaFile::open(dir, false)?.map(|(_, meta)| meta))
}

/// Syncs the directory itself (a new, renamed or removed name).
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all().map_err(Error::SyncFailed)
}

/// The segments in `dir`, in order (regular files named as this store
/// names them; anything else with the suffix is refused).
fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut ks = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        let first = match digits.parse::<u64>() {
            Ok(first)
                if digits.len() == 20
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && first % SEGMENT_BLOBS == 1
                    && first <= MAX_INDEX
                    && entry.file_type()?.is_file() =>
            {
                first
            }
            _ => {
                return Err(Error::Integrity(format!(
                    "{name} is not a segment file this store writes"
                )));
            }
        };
        ks.push(segment_of(first));
    }
    ks.sort_unstable();
    Ok(ks)
}

/// Read access to the segments, shared by the writer and readers: the
/// last segment opened stays open.
#[derive(Debug)]
pub(crate) struct Segments {
    dir: PathBuf,
    open: Mutex<Option<(u64, std::sync::Arc<File>)>>,
}

impl Segments {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            open: Mutex::new(None),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, k: u64) -> Result<Option<std::sync::Arc<File>>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, file)) = open.as_ref()
            && *at == k
        {
            return Ok(Some(std::sync::Arc::clone(file)));
        }
        match File::open(segment_path(&self.dir, k)) {
            Ok(file) => {
                let file = std::sync::Arc::new(file);
                *open = Some((k, std::sync::Arc::clone(&file)));
                Ok(Some(file))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets the open segment (it may have been removed).
    pub(crate) fn forget(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Reads the records `from..=to` (within one call, any segments) and
    /// calls `f` with each index and its record bytes, in order, until `f`
    /// breaks. Records past the end of a file read as empty.
    pub(crate) fn read<F>(&self, from: u64, to: u64, mut f: F) -> Result<()>
    where
        F: FnMut(u64, &[u8]) -> std::ops::ControlFlow<()>,
    {
        let mut buf = Vec::new();
        let mut index = from;
        while index <= to {
            let k = segment_of(index);
            let last_here = to.min(first_of(k) + SEGMENT_BLOBS - 1);
            let count = (last_here - index + 1).min(SCAN_RECORDS);
            buf.clear();
            buf.resize(count as usize * RECORD_LEN, 0);
            let got = match self.file(k)? {
                Some(file) => read_full_at(&file, &mut buf, offset_of(index))?,
                None => 0,
            };
            for (i, record) in buf.chunks(RECORD_LEN).enumerate() {
                let record = if (i + 1) * RECORD_LEN <= got {
                    record
                } else {
                    &[][..]
                };
                if f(index + i as u64, record).is_break() {
                    return Ok(());
                }
            }
            match index.checked_add(count) {
                Some(next) => index = next,
                None => break,
            }
        }
        Ok(())
    }

    /// The first record in `from..=to` that does not read back as the
    /// record of its index (`None`: all do, or the range is empty).
    pub(crate) fn first_invalid(&self, from: u64, to: u64) -> Result<Option<u64>> {
        let mut bad = None;
        if from <= to {
            self.read(from, to, |i, record| {
                if decode(record, i).is_some() {
                    std::ops::ControlFlow::Continue(())
                } else {
                    bad = Some(i);
                    std::ops::ControlFlow::Break(())
                }
            })?;
        }
        Ok(bad)
    }

    /// The last index of the run of valid records that follows `after`.
    pub(crate) fn scan_valid(&self, after: u64) -> Result<u64> {
        let mut head = after;
        loop {
            let from = head + 1;
            let to = from.saturating_add(SCAN_RECORDS - 1);
            let mut ended = false;
            self.read(from, to, |index, record| {
                if decode(record, index).is_some() {
                    head = index;
                    std::ops::ControlFlow::Continue(())
                } else {
                    ended = true;
                    std::ops::ControlFlow::Break(())
                }
            })?;
            if ended || head == u64::MAX {
                return Ok(head);
            }
        }
    }
}

/// The last record of the last complete write after `meta.high_water`:
/// the head, for a writer after a crash and for a reader in another
/// process (which also sees a complete write the writer has not yet
/// synced). Also returns the first index after the run of valid records.
fn durable_head(segments: &Segments, meta: Meta) -> Result<(u64, u64)> {
    let mut head = segments.scan_valid(meta.high_water)?;
    let damaged = head + 1;
    if head > meta.high_water {
        let mut write = None;
        segments.read(head, head, |i, record| {
            write = decode(record, i).map(|r| r.write);
            std::ops::ControlFlow::Break(())
        })?;
        if let Some((first, last)) = write
            && last > head
        {
            // The head's own write was cut short: none of it counts.
            head = first.max(meta.high_water + 1) - 1;
        }
    }
    Ok((head, damaged))
}

/// The last index acknowledged, in a log whose segments are `ks`: see the
/// module's documentation, "Recovery".
fn recover_head(segments: &Segments, ks: &[u64], meta: Meta) -> Result<u64> {
    let (head, damaged) = durable_head(segments, meta)?;
    if let Some(&last_k) = ks.last() {
        let to = first_of(last_k) + (SEGMENT_BLOBS - 1);
        if let Some((index, write_first)) = later_write(segments, damaged + 1, to, damaged)? {
            return Err(Error::Integrity(format!(
                "blob {damaged} is damaged, and blob {index} was written after it \
                 (a write from {write_first})"
            )));
        }
    }
    Ok(head)
}

/// A valid record in `from..=to` written by a write that began after
/// `after` (its index and that write's first index), reading only what the
/// files hold (a missing segment or the end of a file ends its part).
fn later_write(segments: &Segments, from: u64, to: u64, after: u64) -> Result<Option<(u64, u64)>> {
    let mut found = None;
    let mut index = from;
    while index <= to && found.is_none() {
        let k = segment_of(index);
        let end = to.min(first_of(k) + SEGMENT_BLOBS - 1);
        let Some(file) = segments.file(k)? else {
            index = end.saturating_add(1);
            continue;
        };
        let len = file.metadata()?.len();
        let held = first_of(k) + len / RECORD_LEN as u64; // first index past the file
        let end = end.min(held.saturating_sub(1));
        if index <= end {
            segments.read(index, end, |i, record| match decode(record, i) {
                Some(r) if r.write.0 > after => {
                    found = Some((i, r.write.0));
                    std::ops::ControlFlow::Break(())
                }
                _ => std::ops::ControlFlow::Continue(()),
            })?;
        }
        index = first_of(k) + SEGMENT_BLOBS;
    }
    Ok(found)
}

/// Reads as much of `buf` as the file holds at `offset`; returns how much.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

/// Writes zeros over `range` of `file`.
fn write_zeros(file: &File, mut from: u64, to: u64) -> Result<()> {
    let zeros = vec![0u8; 1 << 20];
    while from < to {
        let n = (to - from).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], from)?;
        from += n as u64;
    }
    Ok(())
}

/// Writes zeros over the parts of `from..to` of `file` that hold data,
/// leaving its holes alone (writing into a hole would take new space, and
/// a prune must work on a full disk).
fn zero_data(file: &File, from: u64, to: u64) -> Result<()> {
    use rustix::fs::{SeekFrom, seek};
    let mut at = from;
    while at < to {
        let data = match seek(file, SeekFrom::Data(at)) {
            Ok(data) => data,
            // No data at or after `at` (ENXIO), or no SEEK_DATA here: in
            // the latter case write all of it.
            Err(rustix::io::Errno::NXIO) => return Ok(()),
            Err(_) => return write_zeros(file, at, to),
        };
        if data >= to {
            return Ok(());
        }
        let hole = seek(file, SeekFrom::Hole(data)).map_or(to, |h| h.min(to));
        write_zeros(file, data, hole)?;
        at = hole;
    }
    Ok(())
}

/// Removes `range` of `file` from the disk: a hole where the file system
/// can punch one, zeros where it cannot.
fn punch(file: &File, from: u64, to: u64) -> Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    if from >= to {
        return Ok(());
    }
    match fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        from,
        to - from,
    ) {
        Ok(()) => Ok(()),
        Err(_) => write_zeros(file, from, to),
    }
}

/// The segment appends go to.
#[derive(Debug)]
struct Active {
    k: u64,
    file: File,
    /// Bytes of the file written (records or zeros).
    len: u64,
}

/// The writer's side of a log directory.
#[derive(Debug)]
pub(crate) struct Log {
    segments: std::sync::Arc<Segments>,
    _lock: File,
    meta_file: MetaFile,
    meta: Meta,
    head: u64,
    active: Option<Active>,
    buf: Vec<u8>,
    /// When `meta`'s high-water mark was last brought up to the head.
    meta_written: std::time::Instant,
    /// Whether opening finished (only then may closing move the mark).
    opened: bool,
}

/// How often, at most, `meta`'s high-water mark is brought up to the head
/// while posts come in (and on every clean close): what lies below it is
/// known acknowledged, so opening refuses a store that lost any of it.
const MARK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The most bytes a segment file holds.
const SEGMENT_BYTES: u64 = SEGMENT_BLOBS * RECORD_LEN as u64;

impl Log {
    /// Opens (creating it if there is none) the log in `dir`, recovering
    /// from a crash: see the module's documentation.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(parent)?;
                }
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        let lock_path = dir.join(LOCK_FILE);
        if std::fs::symlink_metadata(&lock_path).is_ok_and(|m| !m.is_file()) {
            return Err(Error::Integrity(format!(
                "{} is not a file",
                lock_path.display()
            )));
        }
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)?;
        if lock.try_lock().is_err() {
            return Err(Error::Locked(dir.to_owned()));
        }
        let ks = list_segments(dir)?;
        let (meta_file, meta) = match MetaFile::open(dir, true)? {
            Some(found) => found,
            None if ks.is_empty() => (MetaFile::create(dir, Meta::NEW)?, Meta::NEW),
            None => return Err(Error::Integrity("segments without a meta file".into())),
        };
        // Segments wholly pruned may be gone in any order; from the one
        // holding the oldest index on, none may be missing.
        let live: Vec<u64> = ks
            .iter()
            .copied()
            .filter(|&k| k >= segment_of(meta.pruned_below))
            .collect();
        if live.windows(2).any(|w| w[1] != w[0] + 1) {
            return Err(Error::Integrity("a segment file is missing".into()));
        }
        for &k in &live {
            let len = std::fs::metadata(segment_path(dir, k))?.len();
            if len > SEGMENT_BYTES {
                return Err(Error::Integrity(format!(
                    "segment file {} is longer than a segment",
                    first_of(k)
                )));
            }
        }
        let segments = std::sync::Arc::new(Segments::new(dir));
        let head = recover_head(&segments, &ks, meta)?;
        check_below_mark(&segments, &live, meta, head)?;
        // What recovery found past the mark may be in the page cache only
        // (a process killed between a write and its sync): synced before
        // the mark may ever cover it.
        if head > meta.high_water {
            for k in segment_of(meta.high_water.max(1))..=segment_of(head) {
                if live.contains(&k) {
                    File::open(segment_path(dir, k))?
                        .sync_data()
                        .map_err(Error::SyncFailed)?;
                }
            }
        }
        let mut log = Self {
            segments,
            _lock: lock,
            meta_file,
            meta,
            head,
            active: None,
            buf: Vec::new(),
            meta_written: std::time::Instant::now(),
            opened: false,
        };
        log.drop_tail(&ks)?;
        log.finish_prune(&ks)?;
        if let Some(oldest) = log.oldest() {
            for index in [oldest, log.head] {
                if log.read_one(index)?.is_none() {
                    return Err(Error::Integrity(format!("blob {index} is not readable")));
                }
            }
        }
        log.opened = true;
        Ok(log)
    }

    /// Zeroes what follows the head in its segment and removes later
    /// segments: none of it was acknowledged.
    fn drop_tail(&mut self, ks: &[u64]) -> Result<()> {
        let dir = self.segments.dir().to_owned();
        let next_k = segment_of(self.head + 1);
        let mut removed = false;
        for &k in ks.iter().filter(|&&k| k > next_k) {
            std::fs::remove_file(segment_path(&dir, k))?;
            removed = true;
        }
        if removed {
            sync_dir(&dir)?;
        }
        self.segments.forget();
        if ks.contains(&next_k) {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(segment_path(&dir, next_k))?;
            let len = file.metadata()?.len().min(SEGMENT_BYTES);
            let from = offset_of(self.head + 1);
            if len > from {
                zero_data(&file, from, len)?;
                file.sync_data().map_err(Error::SyncFailed)?;
            }
            self.active = Some(Active {
                k: next_k,
                file,
                len,
            });
        }
        Ok(())
    }

    /// Removes what lies below `pruned_below` (again, after a crash):
    /// overwritten with zeros first, so that the blobs leave the disk's
    /// blocks and not only the files, then whole segments are deleted and
    /// the rest of the prefix is punched out of its file.
    fn finish_prune(&mut self, ks: &[u64]) -> Result<()> {
        let cut = self.meta.pruned_below;
        let dir = self.segments.dir().to_owned();
        let cut_k = segment_of(cut);
        let mut removed = false;
        for &k in ks.iter().filter(|&&k| k < cut_k) {
            let path = segment_path(&dir, k);
            match OpenOptions::new().write(true).open(&path) {
                Ok(file) => {
                    let len = file.metadata()?.len().min(SEGMENT_BYTES);
                    zero_data(&file, 0, len)?;
                    file.sync_data().map_err(Error::SyncFailed)?;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            }
            std::fs::remove_file(&path)?;
            removed = true;
        }
        if removed {
            sync_dir(&dir)?;
        }
        // Readers' open segment may be one that is gone.
        self.segments.forget();
        if self.active.as_ref().is_some_and(|a| a.k < cut_k) {
            self.active = None;
        }
        if ks.contains(&cut_k) {
            // Not there when the cut is the first index of a segment not
            // yet begun.
            match OpenOptions::new()
                .write(true)
                .open(segment_path(&dir, cut_k))
            {
                Ok(file) => {
                    let to = offset_of(cut).min(file.metadata()?.len());
                    zero_data(&file, 0, to)?;
                    file.sync_data().map_err(Error::SyncFailed)?;
                    punch(&file, 0, to)?;
                    file.sync_data().map_err(Error::SyncFailed)?;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The segments, shared with in-process readers (so that a prune's
    /// `forget` reaches their open file too).
    pub(crate) fn segments(&self) -> &std::sync::Arc<Segments> {
        &self.segments
    }

    /// The last index stored (0 if none ever was).
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// The oldest index stored, if any.
    pub(crate) fn oldest(&self) -> Option<u64> {
        (self.meta.pruned_below <= self.head).then_some(self.meta.pruned_below)
    }

    /// The receive time and blob at `index`, if its record is valid.
    pub(crate) fn read_one(&self, index: u64) -> Result<Option<(u64, Box<Blob>)>> {
        let mut found = None;
        self.segments.read(index, index, |i, record| {
            found = decode(record, i).map(|r| (r.received_at, Box::new(*r.blob)));
            std::ops::ControlFlow::Break(())
        })?;
        Ok(found)
    }

    /// Appends `blobs` after the head, durably; returns their indices.
    ///
    /// On an error the head stays where it was and nothing is
    /// acknowledged. A failed write (a full disk) is undone: the records
    /// this call already wrote, synced or not, are overwritten with zeros
    /// and synced, so that neither a reader nor recovery after a crash can
    /// take them for stored blobs, and the error is returned as it was
    /// ([`Error::Io`], which the committer may recover from). If the undo
    /// fails too, or a sync failed, the error is [`Error::SyncFailed`]:
    /// the store must be reopened.
    pub(crate) fn append<'a, I>(&mut self, blobs: I) -> Result<(u64, u64)>
    where
        I: IntoIterator<Item = (u64, &'a Blob)>,
    {
        let first = self.head + 1;
        let items: Vec<(u64, &Blob)> = blobs.into_iter().collect();
        let Some(count) = (items.len() as u64).checked_sub(1) else {
            return Ok((first, first));
        };
        let last = first.saturating_add(count);
        if last > MAX_INDEX {
            return Err(Error::IndicesExhausted);
        }
        let mut buf = std::mem::take(&mut self.buf);
        let mut start = first;
        let mut rest = &items[..];
        let mut result = Ok(());
        while !rest.is_empty() {
            // One write: within one segment, at most MAX_WRITE records.
            let segment_last = first_of(segment_of(start)) + (SEGMENT_BLOBS - 1);
            let write_last = segment_last.min(start + (MAX_WRITE - 1)).min(last);
            let n = (write_last - start + 1) as usize;
            buf.clear();
            for (index, (at, blob)) in (start..).zip(&rest[..n]) {
                // Each record names its whole batch: a batch is
                // acknowledged only once all its writes are synced, so
                // recovery and readers take it whole or not at all.
                encode(&mut buf, index, (first, last), *at, blob);
            }
            result = self.write_run(&buf, start);
            if result.is_err() {
                // Undo up to the end of this write: it may have landed in
                // part.
                if let Err(undo) = self.undo(first, write_last) {
                    result = Err(undo);
                }
                break;
            }
            start = write_last + 1;
            rest = &rest[n..];
        }
        self.buf = buf;
        result?;
        // Each write was synced as it was made: the batch is durable.
        self.head = last;
        if self.meta_written.elapsed() >= MARK_EVERY {
            // The batch is durable whatever becomes of this: a failure
            // only leaves the mark behind, to be tried again.
            if let Err(e) = self.mark() {
                tracing::warn!(error = %e, "could not record the blob store's high-water mark");
            }
        }
        Ok((first, last + 1))
    }

    /// When the mark should next catch up with the head, if it is behind.
    pub(crate) fn mark_due(&self) -> Option<std::time::Instant> {
        (self.meta.high_water < self.head).then(|| self.meta_written + MARK_EVERY)
    }

    /// Brings `meta`'s high-water mark up to the head (durable).
    pub(crate) fn mark(&mut self) -> Result<()> {
        self.meta_written = std::time::Instant::now();
        if self.meta.high_water < self.head {
            self.set_meta(Meta {
                high_water: self.head,
                ..self.meta
            })?;
        }
        Ok(())
    }

    /// Overwrites the records `from..=to` (past the head: a failed append)
    /// with zeros and syncs them.
    fn undo(&mut self, from: u64, to: u64) -> Result<()> {
        let dir = self.segments.dir().to_owned();
        let zero = |k: u64| -> std::io::Result<()> {
            let file = match OpenOptions::new().write(true).open(segment_path(&dir, k)) {
                Ok(file) => file,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            let a = offset_of(from.max(first_of(k)));
            let b = offset_of(to.min(first_of(k) + SEGMENT_BLOBS - 1)) + RECORD_LEN as u64;
            let b = b.min(len);
            if a < b {
                file.write_all_at(&vec![0u8; (b - a) as usize], a)?;
                file.sync_data()?;
            }
            Ok(())
        };
        // The last segment first (a crash midway leaves what an ordinary
        // crash before the batch's end would), and every one tried even if
        // one fails; the first failure is returned, fatal.
        let mut failed = None;
        for k in (segment_of(from)..=segment_of(to)).rev() {
            if let Err(e) = zero(k) {
                failed.get_or_insert(e);
            }
        }
        match failed {
            Some(e) => Err(Error::SyncFailed(e)),
            None => Ok(()),
        }
    }

    /// Writes records starting at `first` (all in one segment) and syncs
    /// them.
    fn write_run(&mut self, records: &[u8], first: u64) -> Result<()> {
        let k = segment_of(first);
        if self.active.as_ref().is_none_or(|a| a.k != k) {
            self.start_segment(k)?;
        }
        let Some(active) = self.active.as_mut() else {
            return Err(Error::Closed);
        };
        let at = offset_of(first);
        let end = at + records.len() as u64;
        if end > active.len {
            let to = (end + ZERO_AHEAD).min(SEGMENT_BYTES);
            write_zeros(&active.file, active.len, to)?;
            active.len = to;
        }
        active.file.write_all_at(records, at)?;
        active.file.sync_data().map_err(Error::SyncFailed)?;
        Ok(())
    }

    /// Creates (or opens) segment `k` for appends; a new segment's name is
    /// synced, and `meta` is brought up to the head so that recovery reads
    /// at most about one segment.
    fn start_segment(&mut self, k: u64) -> Result<()> {
        let dir = self.segments.dir().to_owned();
        let path = segment_path(&dir, k);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        let len = file.metadata()?.len().min(SEGMENT_BYTES);
        file.sync_all().map_err(Error::SyncFailed)?;
        sync_dir(&dir)?;
        if self.meta.high_water < self.head {
            self.set_meta(Meta {
                high_water: self.head,
                ..self.meta
            })?;
        }
        self.active = Some(Active { k, file, len });
        Ok(())
    }

    fn set_meta(&mut self, meta: Meta) -> Result<()> {
        self.meta_file.write(meta)?;
        self.meta = meta;
        Ok(())
    }

    /// Makes an empty log (nothing ever stored) start after `high_water`:
    /// an import keeps the indices of the store it imports.
    pub(crate) fn skip_to(&mut self, high_water: u64) -> Result<()> {
        if self.oldest().is_some() || high_water < self.head {
            return Err(Error::Integrity("only an empty log can skip ahead".into()));
        }
        if high_water > MAX_INDEX {
            return Err(Error::IndicesExhausted);
        }
        self.set_meta(Meta {
            high_water,
            pruned_below: high_water + 1,
        })?;
        self.head = high_water;
        self.active = None;
        Ok(())
    }

    /// Records that every index below `cut` (at most `head + 1`) is pruned:
    /// from now on they are not stored. [`finish_prune_now`] then removes
    /// them from the files.
    ///
    /// [`finish_prune_now`]: Self::finish_prune_now
    pub(crate) fn record_prune(&mut self, cut: u64) -> Result<Option<u64>> {
        let old = self.meta.pruned_below;
        let cut = cut.min(self.head + 1);
        if cut <= old {
            return Ok(None);
        }
        self.set_meta(Meta {
            high_water: self.head,
            pruned_below: cut,
        })?;
        Ok(Some(old))
    }

    /// Removes from the files what [`record_prune`](Self::record_prune)
    /// pruned, from `old` (the oldest index before it) on.
    pub(crate) fn finish_prune_now(&mut self) -> Result<()> {
        // Listed afresh: a prune that failed before left segments a later
        // one must also remove.
        let ks = list_segments(self.segments.dir())?;
        self.finish_prune(&ks)
    }

    /// Prunes every index below `cut` (at most `head + 1`).
    #[cfg(test)]
    pub(crate) fn prune_below(&mut self, cut: u64) -> Result<()> {
        match self.record_prune(cut)? {
            Some(_) => self.finish_prune_now(),
            None => Ok(()),
        }
    }

    /// Reads `count` receive times from `from` on and returns the first
    /// index whose blob was received at or after `cutoff` (`None`: none in
    /// that range).
    pub(crate) fn first_young(&self, from: u64, to: u64, cutoff: u64) -> Result<Option<u64>> {
        let mut found = None;
        let mut bad = None;
        self.segments
            .read(from, to, |index, record| match decode(record, index) {
                Some(r) if r.received_at >= cutoff => {
                    found = Some(index);
                    std::ops::ControlFlow::Break(())
                }
                Some(_) => std::ops::ControlFlow::Continue(()),
                None => {
                    bad = Some(index);
                    std::ops::ControlFlow::Break(())
                }
            })?;
        match bad {
            Some(index) => Err(Error::CorruptBlob { index, len: 0 }),
            None => Ok(found),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if self.opened {
            let _ = self.mark();
        }
    }
}

/// Checks, when a store opens, that what `meta` says was acknowledged is
/// all there: every segment from the oldest blob's to the head's (`live`,
/// in order) is whole (full, but for the head's, which reaches its head),
/// and every record of the segment holding the mark, up to the mark,
/// reads back. Recovery never cuts below the mark, so this is what stands
/// between a segment cut short, removed or damaged and indices handed out
/// twice. (Older segments are read only when asked for, and by
/// `integrity_check`.)
fn check_below_mark(segments: &Segments, live: &[u64], meta: Meta, head: u64) -> Result<()> {
    if meta.pruned_below > head {
        return Ok(());
    }
    let damaged =
        |what: String| Error::Integrity(format!("{what}: the store has lost acknowledged blobs"));
    let head_k = segment_of(head);
    for k in segment_of(meta.pruned_below)..=head_k {
        if !live.contains(&k) {
            return Err(damaged(format!("segment file {} is missing", first_of(k))));
        }
        let len = std::fs::metadata(segment_path(segments.dir(), k))?.len();
        let needed = if k == head_k {
            offset_of(head) + RECORD_LEN as u64
        } else {
            SEGMENT_BYTES
        };
        if len < needed {
            return Err(damaged(format!(
                "segment file {} is cut short",
                first_of(k)
            )));
        }
    }
    let mark = meta.high_water.min(head);
    let from = meta.pruned_below.max(first_of(segment_of(mark.max(1))));
    match segments.first_invalid(from, mark)? {
        Some(index) => Err(damaged(format!("blob {index} is damaged"))),
        None => Ok(()),
    }
}

/// A reader's view of a log it does not write: `meta`, and the head found
/// as opening finds it (the last complete write), without repairing
/// anything.
pub(crate) fn scan_head(dir: &Path) -> Result<(Meta, u64)> {
    let meta = current_meta(dir)?;
    let (head, _) = durable_head(&Segments::new(dir), meta)?;
    Ok((meta, head))
}

/// The head a reader sees now: [`scan_head`]'s, read from `known` (a head
/// it found before) or `meta`'s mark, whichever is later.
pub(crate) fn reader_head(segments: &Segments, meta: Meta, known: u64) -> Result<u64> {
    let from = Meta {
        high_water: meta.high_water.max(known),
        ..meta
    };
    Ok(durable_head(segments, from)?.0)
}

/// The meta file as it is now (for readers: a prune may have moved it).
pub(crate) fn current_meta(dir: &Path) -> Result<Meta> {
    read_meta(dir)?.ok_or_else(|| Error::NotABlobStore { found: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(tag: u64) -> Blob {
        let mut b = [0u8; SEALED_BLOB_LEN];
        b[..8].copy_from_slice(&tag.to_le_bytes());
        b[8] = 0xAB;
        b
    }

    fn append(log: &mut Log, tags: std::ops::Range<u64>) -> (u64, u64) {
        let blobs: Vec<Blob> = tags.map(blob).collect();
        log.append(blobs.iter().map(|b| (7, b))).unwrap()
    }

    /// Writes the records of a write `write` at `indices` straight into
    /// the files, as a crash could leave them.
    fn plant(dir: &Path, indices: &[u64], write: (u64, u64)) {
        for &i in indices {
            let mut buf = Vec::new();
            encode(&mut buf, i, write, 7, &blob(i));
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(segment_path(dir, segment_of(i)))
                .unwrap();
            file.write_all_at(&buf, offset_of(i)).unwrap();
        }
    }

    fn force_meta(dir: &Path, meta: Meta) {
        let (mut file, _) = MetaFile::open(dir, true).unwrap().unwrap();
        file.write(meta).unwrap();
    }

    fn record_bytes(dir: &Path, index: u64) -> Vec<u8> {
        let file = File::open(segment_path(dir, segment_of(index))).unwrap();
        let mut buf = vec![0u8; RECORD_LEN];
        let got = read_full_at(&file, &mut buf, offset_of(index)).unwrap();
        buf.truncate(got);
        buf
    }

    #[test]
    fn records_round_trip_and_refuse_what_is_not_theirs() {
        let mut buf = Vec::new();
        encode(&mut buf, 5, (3, 9), 1234, &blob(5));
        assert_eq!(buf.len(), RECORD_LEN);
        let r = decode(&buf, 5).unwrap();
        assert_eq!((r.write, r.received_at, *r.blob), ((3, 9), 1234, blob(5)));
        // Moved to another place, zeros, short, or one bit off: not valid.
        assert!(decode(&buf, 6).is_none());
        assert!(decode(&[0u8; RECORD_LEN], 5).is_none());
        assert!(decode(&buf[..RECORD_LEN - 1], 5).is_none());
        for at in [0, 9, 30, 100, RECORD_LEN - 1] {
            let mut bad = buf.clone();
            bad[at] ^= 0x10;
            assert!(decode(&bad, 5).is_none(), "bit flipped at {at}");
        }
        // A write that does not cover its own record is a lie.
        let mut lie = Vec::new();
        encode(&mut lie, 5, (6, 9), 1, &blob(5));
        assert!(decode(&lie, 5).is_none());
    }

    /// A crash's torn write: what follows the head is dropped and zeroed,
    /// a write whose records are only partly there is dropped whole, and
    /// the next append goes where it was.
    #[test]
    fn a_torn_write_is_dropped_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let mut log = Log::open(&dir).unwrap();
        append(&mut log, 1..11);
        drop(log);
        // The write 11..=15 was cut short: 11, 12 and 14 landed, 13 not.
        plant(&dir, &[11, 12, 14], (11, 15));
        // A reader in another process does not take any of it.
        assert_eq!(scan_head(&dir).unwrap().1, 10);
        let mut log = Log::open(&dir).unwrap();
        assert_eq!(log.head(), 10);
        for i in [11, 12, 14] {
            assert!(record_bytes(&dir, i).iter().all(|&b| b == 0), "{i} zeroed");
        }
        assert_eq!(append(&mut log, 100..102), (11, 13));
        drop(log);
        let log = Log::open(&dir).unwrap();
        assert_eq!(log.head(), 12);
        assert_eq!(*log.read_one(12).unwrap().unwrap().1, blob(101));
        assert!(log.read_one(13).unwrap().is_none());
    }

    /// A record damaged after it was synced, with later writes after it,
    /// is not taken for a torn write: the store is refused, nothing dropped.
    /// (Damage to the last write cannot be told from a crash's torn write,
    /// as with SQLite's WAL: that write is dropped.)
    #[test]
    fn damage_before_later_writes_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let mut log = Log::open(&dir).unwrap();
        append(&mut log, 1..6);
        append(&mut log, 6..11);
        drop(log);
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(&dir, 0))
            .unwrap();
        file.write_all_at(&[0xFF; 4], offset_of(3) + 200).unwrap();
        let refused = Log::open(&dir);
        assert!(matches!(refused, Err(Error::Integrity(_))), "{refused:?}");
        // Nothing was zeroed.
        assert!(decode(&record_bytes(&dir, 10), 10).is_some());
    }

    /// Batches that cross segments, reopening that finds the head in a
    /// later segment, a torn write in a new segment, and pruning that
    /// removes whole segment files and punches out the rest.
    #[test]
    fn segments_roll_over_and_are_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let mut log = Log::open(&dir).unwrap();
        let total = SEGMENT_BLOBS * 2 + 100;
        let mut next = 1;
        while next <= total {
            let end = (next + 1000).min(total + 1);
            assert_eq!(append(&mut log, next..end), (next, end));
            next = end;
        }
        drop(log);
        assert_eq!(list_segments(&dir).unwrap(), [0, 1, 2]);
        assert!(read_meta(&dir).unwrap().unwrap().high_water >= SEGMENT_BLOBS * 2 - 1000);
        // A torn write into a fourth segment.
        plant(
            &dir,
            &[SEGMENT_BLOBS * 3 + 1],
            (total + 1, SEGMENT_BLOBS * 3 + 5),
        );
        let mut log = Log::open(&dir).unwrap();
        assert_eq!(log.head(), total);
        assert_eq!(list_segments(&dir).unwrap(), [0, 1, 2]);
        for i in [1, SEGMENT_BLOBS, SEGMENT_BLOBS + 1, total] {
            assert_eq!(*log.read_one(i).unwrap().unwrap().1, blob(i), "{i}");
        }
        // Prune into the middle of the second segment.
        let cut = SEGMENT_BLOBS + 500;
        log.prune_below(cut).unwrap();
        assert_eq!(log.oldest(), Some(cut));
        assert_eq!(list_segments(&dir).unwrap(), [1, 2]);
        assert!(record_bytes(&dir, cut - 1).iter().all(|&b| b == 0));
        assert!(log.read_one(cut).unwrap().is_some());
        drop(log);
        let mut log = Log::open(&dir).unwrap();
        assert_eq!((log.oldest(), log.head()), (Some(cut), total));
        // Everything pruned: the indices still go on.
        log.prune_below(u64::MAX).unwrap();
        assert_eq!(log.oldest(), None);
        drop(log);
        let mut log = Log::open(&dir).unwrap();
        assert_eq!((log.oldest(), log.head()), (None, total));
        assert_eq!(append(&mut log, 0..1), (total + 1, total + 2));
    }

    /// A crash after `meta` recorded a prune but before the files were
    /// cut: opening finishes it, so pruned blobs do not stay on disk.
    #[test]
    fn an_interrupted_prune_is_finished_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let mut log = Log::open(&dir).unwrap();
        append(&mut log, 1..21);
        drop(log);
        force_meta(
            &dir,
            Meta {
                high_water: 20,
                pruned_below: 11,
            },
        );
        let log = Log::open(&dir).unwrap();
        assert_eq!((log.oldest(), log.head()), (Some(11), 20));
        for i in 1..11 {
            assert!(record_bytes(&dir, i).iter().all(|&b| b == 0), "{i}");
        }
        assert!(log.read_one(11).unwrap().is_some());
    }

    /// A `meta` that lies (marks past the records, past the last index,
    /// garbage, the wrong size) is refused; one torn copy is not a lie.
    #[test]
    fn a_lying_meta_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let mut log = Log::open(&dir).unwrap();
        append(&mut log, 1..11);
        drop(log);
        let meta = |high_water, pruned_below| Meta {
            high_water,
            pruned_below,
        };
        let slots = |a: &[u8], b: &[u8]| {
            let mut bytes = vec![0u8; 2 * META_SLOT as usize];
            bytes[..a.len()].copy_from_slice(a);
            bytes[META_SLOT as usize..][..b.len()].copy_from_slice(b);
            std::fs::write(dir.join(META_FILE), bytes).unwrap();
        };
        slots(&meta(500, 1).encode(7), &[]);
        assert!(matches!(Log::open(&dir), Err(Error::Integrity(_))));
        slots(&meta(u64::MAX - 1, u64::MAX).encode(7), &[]);
        assert!(matches!(Log::open(&dir), Err(Error::Integrity(_))));
        slots(&meta(5, 9).encode(7), &[]);
        assert!(matches!(Log::open(&dir), Err(Error::Integrity(_))));
        slots(&[], &[]);
        assert!(matches!(Log::open(&dir), Err(Error::Integrity(_))));
        std::fs::write(dir.join(META_FILE), meta(0, 1).encode(1)).unwrap();
        assert!(matches!(Log::open(&dir), Err(Error::NotABlobStore { .. })));
        // The newer copy torn, the older one good: the older one counts.
        let mut torn = meta(10, 1).encode(9);
        torn[20] ^= 1;
        slots(&meta(0, 1).encode(8), &torn);
        assert_eq!(Log::open(&dir).unwrap().head(), 10);
    }

    /// A full disk: a batch whose second write (into a new segment) fails
    /// leaves nothing past the head, neither for a reader nor for recovery,
    /// and the store goes on.
    #[test]
    fn a_failed_write_is_undone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let mut log = Log::open(&dir).unwrap();
        let near_end = SEGMENT_BLOBS - 5;
        log.skip_to(near_end).unwrap();
        // The next segment cannot be made: a directory stands in its way.
        std::fs::create_dir(segment_path(&dir, 1)).unwrap();
        let blobs: Vec<Blob> = (0..10).map(blob).collect();
        assert!(log.append(blobs.iter().map(|b| (7, b))).is_err());
        assert_eq!(log.head(), near_end);
        for i in near_end + 1..=SEGMENT_BLOBS {
            assert!(record_bytes(&dir, i).iter().all(|&b| b == 0), "{i} undone");
        }
        std::fs::remove_dir(segment_path(&dir, 1)).unwrap();
        assert_eq!(append(&mut log, 0..3), (near_end + 1, near_end + 4));
        drop(log);
        let log = Log::open(&dir).unwrap();
        assert_eq!(log.head(), near_end + 3);
    }

    /// A prune overwrites the pruned records before it deletes or punches
    /// them, also on a full disk: it needs no new space.
    #[test]
    fn pruned_records_are_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let mut log = Log::open(&dir).unwrap();
        append(&mut log, 1..101);
        let file = File::open(segment_path(&dir, 0)).unwrap();
        log.prune_below(51).unwrap();
        // Through a handle opened before: zeros, not the old bytes.
        let mut buf = vec![0u8; 50 * RECORD_LEN];
        read_full_at(&file, &mut buf, 0).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        assert!(log.read_one(51).unwrap().is_some());
    }

    /// Whatever a crash or a disk does to the files (bytes overwritten,
    /// files cut short or grown, records planted from a write that was
    /// cut short), opening never panics, and what a store that opens hands
    /// out is what was written at that index, or a typed error.
    #[test]
    fn recovery_never_panics_and_never_hands_out_a_wrong_blob() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n.max(1)
        };
        let (mut opened, mut refused, mut read) = (0, 0, 0);
        for round in 0..60 {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("log");
            let mut log = Log::open(&dir).unwrap();
            let mut next = 1;
            for _ in 0..1 + rand(6) {
                let n = 1 + rand(40);
                append(&mut log, next..next + n);
                next += n;
            }
            drop(log);
            let path = segment_path(&dir, 0);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            for _ in 0..1 + rand(3) {
                match rand(4) {
                    0 => {
                        let at = rand(next * RECORD_LEN as u64);
                        let junk: Vec<u8> = (0..1 + rand(64)).map(|_| rand(256) as u8).collect();
                        file.write_all_at(&junk, at).unwrap();
                    }
                    1 => file.set_len(rand(next * RECORD_LEN as u64)).unwrap(),
                    2 => {
                        let first = next + rand(3);
                        plant(&dir, &[first + rand(5)], (first, first + 5));
                    }
                    _ => {
                        let i = 1 + rand(next);
                        plant(&dir, &[i], (i, i));
                    }
                }
            }
            drop(file);
            let Ok(log) = Log::open(&dir) else {
                refused += 1;
                continue;
            };
            opened += 1;
            let Some(oldest) = log.oldest() else { continue };
            for i in oldest..=log.head() {
                if let Ok(Some((_, b))) = log.read_one(i) {
                    assert_eq!(*b, blob(i), "round {round}: blob {i}");
                    read += 1;
                }
            }
        }
        // The damage was varied enough to take both ways.
        assert!(
            opened > 10 && refused > 3 && read > 100,
            "{opened} {refused} {read}"
        );
    }
}
