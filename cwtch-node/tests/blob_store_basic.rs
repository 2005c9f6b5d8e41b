//! The synchronous blob store: round trip, sizes, indices, paging,
//! retention, refusing foreign files, damage, and stores in the SQLite
//! format (backups, and stores from before the blob log) with their import.

use std::ops::ControlFlow;
use std::time::Duration;

use cwtch_node::blob_store::{
    Blob, BlobReader, BlobStore, Error, MAX_READ_LIMIT, RetentionPolicy, SqliteStore, Stats,
};
use cwtch_proto::group::SEALED_BLOB_LEN;

/// A blob whose content encodes `tag`.
fn blob(tag: u64) -> Blob {
    let mut b = [0u8; SEALED_BLOB_LEN];
    b[..8].copy_from_slice(&tag.to_le_bytes());
    for (i, byte) in b.iter_mut().enumerate().skip(8) {
        *byte = (tag.wrapping_mul(31).wrapping_add(i as u64)) as u8;
    }
    b
}

fn open(dir: &tempfile::TempDir, policy: RetentionPolicy) -> BlobStore {
    BlobStore::open(dir.path().join("blobs"), policy).expect("open")
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir, RetentionPolicy::UNLIMITED);
    assert_eq!(store.head(), 0);
    assert!(store.read_after(0, 10).unwrap().is_empty());

    let batch: Vec<Blob> = (1..=5).map(blob).collect();
    assert_eq!(store.append_batch(&batch).unwrap(), 1..6);
    assert_eq!(store.head(), 5);
    let got = store.read_after(0, 100).unwrap();
    assert_eq!(got.len(), 5);
    for (i, (index, b)) in got.iter().enumerate() {
        assert_eq!(*index, i as u64 + 1);
        assert_eq!(**b, blob(*index));
    }
    // A single slice append, and an empty batch (no transaction).
    assert_eq!(store.append(&blob(6)).unwrap(), 6);
    assert_eq!(store.append_batch(&[]).unwrap(), 7..7);
    let stats = store.stats().unwrap();
    assert_eq!(
        stats,
        Stats {
            blobs: 6,
            bytes: 6 * SEALED_BLOB_LEN as u64,
            head: 6,
            oldest: Some(1),
            oldest_received_at: stats.oldest_received_at,
            commits: 2,
            appended: 6,
        }
    );
    store.integrity_check().unwrap();

    // Survives reopening.
    drop(store);
    let store = open(&dir, RetentionPolicy::UNLIMITED);
    assert_eq!(store.head(), 6);
    let got = store.read_after(4, 100).unwrap();
    assert_eq!(
        got.iter().map(|(i, b)| (*i, **b)).collect::<Vec<_>>(),
        vec![(5, blob(5)), (6, blob(6))]
    );
}

#[test]
fn wrong_size_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir, RetentionPolicy::UNLIMITED);
    for len in [0, 1, SEALED_BLOB_LEN - 1, SEALED_BLOB_LEN + 1, 8192] {
        let bytes = vec![7u8; len];
        match store.append(&bytes) {
            Err(Error::WrongSize { len: got }) => assert_eq!(got, len),
            other => panic!("length {len}: {other:?}"),
        }
    }
    // A batch with one bad blob writes nothing.
    let good = blob(1);
    let bad = [0u8; 100];
    assert!(matches!(
        store.append_slices(&[&good, &bad, &good]),
        Err(Error::WrongSize { len: 100 })
    ));
    assert_eq!(store.head(), 0);
    assert_eq!(store.stats().unwrap().blobs, 0);
    assert_eq!(store.append_slices(&[&good, &good]).unwrap(), 1..3);
    // The message names the sizes.
    let msg = Error::WrongSize { len: 3 }.to_string();
    assert!(msg.contains('3') && msg.contains("2048"), "{msg}");
}

/// The one segment file of a small store.
fn segment(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("blobs").join("00000000000000000001.blobs")
}

/// Flips one byte of the blob of record `index` in a small store.
fn damage(dir: &tempfile::TempDir, index: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment(dir))
        .unwrap();
    let at = (index - 1) * 2084 + 100;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 1], at).unwrap();
}

/// A record damaged on disk is a typed error, never a wrong blob, and is
/// never silently dropped with what follows it: a store whose damage
/// cannot be told from a crash's torn write is refused.
#[test]
fn damaged_records_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir, RetentionPolicy::UNLIMITED);
    for w in 0..4u64 {
        let batch: Vec<Blob> = (1..=5).map(|i| blob(w * 5 + i)).collect();
        store.append_batch(&batch).unwrap();
    }
    // Damage behind the open store's back: reads and the check say so.
    damage(&dir, 7);
    assert!(matches!(
        store.read_after(0, 100),
        Err(Error::CorruptBlob { index: 7, .. })
    ));
    assert_eq!(store.read_after(7, 100).unwrap().len(), 13);
    assert!(matches!(store.integrity_check(), Err(Error::Integrity(_))));
    let reader = store.reader();
    assert!(matches!(
        reader.read_after(5, 10),
        Err(Error::CorruptBlob { index: 7, .. })
    ));
    drop(store);
    // Reopening: blob 7 was synced before blobs 11..=20 were written, so
    // it is damage, not a torn write; the store is refused, nothing lost.
    assert!(matches!(
        BlobStore::open(dir.path().join("blobs"), RetentionPolicy::UNLIMITED),
        Err(Error::Integrity(_))
    ));
    // Mended, it opens with every blob.
    damage(&dir, 7);
    let store = open(&dir, RetentionPolicy::UNLIMITED);
    assert_eq!(store.head(), 20);
    store.integrity_check().unwrap();
}

#[test]
fn indices_monotonic_across_reopen_and_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir, RetentionPolicy::UNLIMITED);
    assert_eq!(
        store.append_batch(&[blob(1), blob(2), blob(3)]).unwrap(),
        1..4
    );
    drop(store);

    let mut store = open(&dir, RetentionPolicy::UNLIMITED);
    assert_eq!(store.append_batch(&[blob(4)]).unwrap(), 4..5);
    // Prune everything, including the newest blob.
    store.set_policy(RetentionPolicy {
        max_blobs: Some(0),
        ..RetentionPolicy::UNLIMITED
    });
    let pruned = store.prune(u64::MAX).unwrap();
    assert_eq!(pruned.removed, 4);
    assert_eq!(pruned.oldest, None);
    assert_eq!(store.head(), 4, "head does not go down");
    let stats = store.stats().unwrap();
    assert_eq!((stats.blobs, stats.oldest, stats.head), (0, None, 4));
    assert_eq!(store.append_batch(&[blob(5)]).unwrap(), 5..6);
    store.prune(u64::MAX).unwrap();
    drop(store);

    // Empty table after pruning the last blob: the index still goes on.
    let mut store = open(&dir, RetentionPolicy::UNLIMITED);
    assert_eq!(store.head(), 5);
    assert_eq!(store.stats().unwrap().blobs, 0);
    assert_eq!(store.append_batch(&[blob(6), blob(7)]).unwrap(), 6..8);
    let got: Vec<u64> = store
        .read_after(0, 10)
        .unwrap()
        .iter()
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(got, vec![6, 7]);
    store.integrity_check().unwrap();
}

#[test]
fn read_after_paging() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir, RetentionPolicy::UNLIMITED);
    let all: Vec<Blob> = (1..=2500).map(blob).collect();
    for chunk in all.chunks(700) {
        store.append_batch(chunk).unwrap();
    }
    assert_eq!(store.head(), 2500);

    let mut cursor = 0;
    let mut pages = 0;
    loop {
        let page = store.read_after(cursor, 333).unwrap();
        if page.is_empty() {
            break;
        }
        pages += 1;
        for (index, b) in &page {
            assert_eq!(*index, cursor + 1);
            assert_eq!(**b, blob(*index));
            cursor = *index;
        }
    }
    assert_eq!(cursor, 2500);
    assert_eq!(pages, 8); // 7 full pages of 333 and one of 169

    // Limits: zero, and clamped to MAX_READ_LIMIT.
    assert!(store.read_after(0, 0).unwrap().is_empty());
    assert_eq!(
        store.read_after(0, usize::MAX).unwrap().len(),
        MAX_READ_LIMIT
    );
    assert!(store.read_after(2500, 10).unwrap().is_empty());
    assert!(store.read_after(u64::MAX, 10).unwrap().is_empty());
    let tail = store.read_after(2498, 10).unwrap();
    assert_eq!(
        tail.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![2499, 2500]
    );

    // The visitor sees the same blobs without copying, and can stop.
    let mut seen = Vec::new();
    let n = store
        .visit_after(100, 50, |index, b| {
            assert_eq!(*b, blob(index));
            seen.push(index);
            if seen.len() == 10 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(n, 10);
    assert_eq!(seen, (101..=110).collect::<Vec<_>>());

    // A read-only reader sees the same.
    let reader = BlobReader::open(store.path()).unwrap();
    assert_eq!(reader.head().unwrap(), 2500);
    assert_eq!(reader.oldest().unwrap(), Some(1));
    let page = reader.read_after(1000, 5).unwrap();
    assert_eq!(
        page.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![1001, 1002, 1003, 1004, 1005]
    );
}

#[test]
fn retention_by_count_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let policy = RetentionPolicy {
        max_blobs: Some(10),
        ..RetentionPolicy::UNLIMITED
    };
    let mut store = open(&dir, policy);
    let blobs: Vec<Blob> = (1..=25).map(blob).collect();
    store.append_batch(&blobs).unwrap();
    let pruned = store.prune(0).unwrap();
    assert_eq!(pruned.removed, 15);
    assert_eq!(pruned.removed_for_space, 15);
    assert_eq!(pruned.removed_for_age, 0);
    assert_eq!(pruned.oldest, Some(16));
    let got: Vec<u64> = store
        .read_after(0, 100)
        .unwrap()
        .iter()
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(got, (16..=25).collect::<Vec<_>>());
    // Already within the policy: nothing more.
    assert_eq!(store.prune(0).unwrap().removed, 0);
    let stats = store.stats().unwrap();
    assert_eq!((stats.blobs, stats.oldest, stats.head), (10, Some(16), 25));
    store.integrity_check().unwrap();
}

#[test]
fn retention_by_bytes_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    // Room for 7.5 blobs: 7 are kept.
    let policy = RetentionPolicy {
        max_bytes: Some(7 * SEALED_BLOB_LEN as u64 + SEALED_BLOB_LEN as u64 / 2),
        ..RetentionPolicy::UNLIMITED
    };
    let mut store = open(&dir, policy);
    for i in 1..=20 {
        store.append_batch(&[blob(i)]).unwrap();
    }
    let pruned = store.prune(0).unwrap();
    assert_eq!(pruned.removed, 13);
    let stats = store.stats().unwrap();
    assert_eq!(stats.blobs, 7);
    assert_eq!(stats.bytes, 7 * SEALED_BLOB_LEN as u64);
    assert_eq!(stats.oldest, Some(14));
    let got = store.read_after(0, 100).unwrap();
    assert_eq!(got.first().map(|(i, b)| (*i, **b)), Some((14, blob(14))));
    // Count and bytes together: the tighter one wins.
    store.set_policy(RetentionPolicy {
        max_blobs: Some(3),
        ..policy
    });
    assert_eq!(store.prune(0).unwrap().removed, 4);
    assert_eq!(store.stats().unwrap().oldest, Some(18));
    store.integrity_check().unwrap();
}

#[test]
fn retention_by_age_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let policy = RetentionPolicy {
        max_age: Some(Duration::from_secs(100)),
        ..RetentionPolicy::UNLIMITED
    };
    let mut store = open(&dir, policy);
    // Received at 1000, 1010, ..., 1090 (indices 1..=10).
    for i in 0..10u64 {
        store
            .append_batch_at(&[blob(i + 1)], 1000 + 10 * i)
            .unwrap();
    }
    // At 1100, the blob from 1000 is exactly 100 s old: kept.
    assert_eq!(store.prune(1100).unwrap().removed, 0);
    // At 1125, those from 1000, 1010 and 1020 are older than 100 s.
    let pruned = store.prune(1125).unwrap();
    assert_eq!(pruned.removed, 3);
    assert_eq!(pruned.removed_for_age, 3);
    assert_eq!(pruned.oldest, Some(4));
    assert_eq!(store.stats().unwrap().oldest_received_at, Some(1030));

    // A clock that went backwards: index 11 looks older than index 10.
    // Pruning stays a prefix: it stops at the first young blob.
    store.append_batch_at(&[blob(11)], 900).unwrap();
    let pruned = store.prune(1185).unwrap(); // cutoff 1085: 1..=9 old
    assert_eq!(pruned.removed, 6);
    assert_eq!(pruned.oldest, Some(10));
    let got: Vec<u64> = store
        .read_after(0, 100)
        .unwrap()
        .iter()
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(got, vec![10, 11]);

    // Everything old: all go, the head stays.
    let pruned = store.prune(10_000).unwrap();
    assert_eq!(pruned.removed, 2);
    assert_eq!(pruned.oldest, None);
    assert_eq!(store.head(), 11);
    store.integrity_check().unwrap();
}

#[test]
fn retention_space_and_age_together() {
    let dir = tempfile::tempdir().unwrap();
    let policy = RetentionPolicy {
        max_blobs: Some(8),
        max_age: Some(Duration::from_secs(50)),
        ..RetentionPolicy::UNLIMITED
    };
    let mut store = open(&dir, policy);
    for i in 0..10u64 {
        store
            .append_batch_at(&[blob(i + 1)], 1000 + 10 * i)
            .unwrap();
    }
    // Space removes 1 and 2; age (cutoff 1040) removes 3 and 4 too.
    let pruned = store.prune(1090).unwrap();
    assert_eq!(pruned.removed, 4);
    assert_eq!(pruned.removed_for_space, 2);
    assert_eq!(pruned.removed_for_age, 2);
    assert_eq!(pruned.oldest, Some(5));
}

#[test]
fn large_prune_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir, RetentionPolicy::UNLIMITED);
    let blobs: Vec<Blob> = (1..=10_000).map(blob).collect();
    store.append_batch(&blobs).unwrap();
    store.set_policy(RetentionPolicy {
        max_blobs: Some(1),
        ..RetentionPolicy::UNLIMITED
    });
    assert_eq!(store.prune(0).unwrap().removed, 9_999);
    let got = store.read_after(0, 10).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, *got[0].1), (10_000, blob(10_000)));
    store.integrity_check().unwrap();
}

#[test]
fn refuses_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    // A file, not a store's directory: a SQLite store, or anything else.
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0x55u8; 10_000]).unwrap();
    assert!(matches!(
        BlobStore::open(&junk, RetentionPolicy::UNLIMITED),
        Err(Error::SqliteFormat(_))
    ));
    // Somebody else's directory with a file called meta.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("meta"), b"hello").unwrap();
    assert!(matches!(
        BlobStore::open(&other, RetentionPolicy::UNLIMITED),
        Err(Error::NotABlobStore { .. })
    ));
    // A segment whose name this store never writes.
    let stray = dir.path().join("stray");
    drop(BlobStore::open(&stray, RetentionPolicy::UNLIMITED).unwrap());
    std::fs::write(stray.join("00000000000000000002.blobs"), b"").unwrap();
    assert!(matches!(
        BlobStore::open(&stray, RetentionPolicy::UNLIMITED),
        Err(Error::Integrity(_))
    ));
    // One writer at a time.
    let held = open(&dir, RetentionPolicy::UNLIMITED);
    assert!(matches!(
        BlobStore::open(held.path(), RetentionPolicy::UNLIMITED),
        Err(Error::Locked(_))
    ));
    drop(held);
    // A reader does not create a store.
    assert!(BlobReader::open(dir.path().join("missing")).is_err());
    assert!(!dir.path().join("missing").exists());
}

/// Stores in the SQLite format (a backup, or a server's store from before
/// the blob log): version 1 (`AUTOINCREMENT`, written by builds before the
/// `meta` table) and version 2 open and keep their indices going after
/// every blob is gone; importing one into a blob log keeps its indices,
/// receive times and high-water mark; an unknown version is refused.
#[test]
fn sqlite_stores_open_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("v1.sqlite");
    let conn = rusqlite::Connection::open(&old).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE blobs (
            idx INTEGER PRIMARY KEY AUTOINCREMENT,
            received_at INTEGER NOT NULL,
            blob BLOB NOT NULL CHECK (length(blob) = 2048)
         );
         PRAGMA application_id = 1131889235;
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);
    let mut store = SqliteStore::open(&old).unwrap();
    assert_eq!(store.append_batch(&[blob(1), blob(2)]).unwrap(), 1..3);
    drop(store);
    rusqlite::Connection::open(&old)
        .unwrap()
        .execute_batch("DELETE FROM blobs")
        .unwrap();
    let store = SqliteStore::open(&old).unwrap();
    assert_eq!(store.head(), 2, "version 1 keeps its counter");
    // Imported, the log goes on from there.
    let log = dir.path().join("from-v1");
    let mut imported = BlobStore::import_sqlite(&store, &log, RetentionPolicy::UNLIMITED).unwrap();
    assert_eq!((imported.head(), imported.oldest()), (2, None));
    assert_eq!(imported.append_batch(&[blob(3)]).unwrap(), 3..4);
    drop(imported);
    assert_eq!(open_at(&log).head(), 3);

    let new = dir.path().join("v2.sqlite");
    let mut store = SqliteStore::open(&new).unwrap();
    store.append_batch_at(&[blob(1), blob(2)], 1_000).unwrap();
    store.append_batch_at(&[blob(3)], 2_000).unwrap();
    // An import fails cleanly where a store already is, and leaves none
    // half made.
    let log = dir.path().join("from-v2");
    std::fs::create_dir(&log).unwrap();
    std::fs::write(log.join("x"), b"x").unwrap();
    assert!(BlobStore::import_sqlite(&store, &log, RetentionPolicy::UNLIMITED).is_err());
    std::fs::remove_dir_all(&log).unwrap();
    let imported = BlobStore::import_sqlite(&store, &log, RetentionPolicy::UNLIMITED).unwrap();
    assert_eq!(
        imported.read_after(0, 10).unwrap(),
        store.read_after(0, 10).unwrap()
    );
    let stats = imported.stats().unwrap();
    assert_eq!(
        (stats.head, stats.oldest, stats.oldest_received_at),
        (3, Some(1), Some(1_000))
    );
    imported.integrity_check().unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(&new).unwrap();
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
    let counters: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_sequence'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(counters, 0, "no AUTOINCREMENT counter in a new store");
    conn.pragma_update(None, "user_version", 3).unwrap();
    drop(conn);
    assert!(matches!(
        SqliteStore::open(&new),
        Err(Error::UnsupportedVersion { found: 3 })
    ));
}

fn open_at(path: &std::path::Path) -> BlobStore {
    BlobStore::open(path, RetentionPolicy::UNLIMITED).unwrap()
}

/// A SQLite store that claims to be a blob store but lies in its
/// bookkeeping (say, a crafted backup handed to an operator) is refused
/// with a typed error rather than opened or imported: a high-water mark
/// past the newest blob, a negative one, a `meta` table without its key,
/// and a version-1 label on a table without `AUTOINCREMENT` (indices
/// reused).
#[test]
fn lying_bookkeeping_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let path = dir.path().join(name);
        let mut store = SqliteStore::open(&path).unwrap();
        let all: Vec<Blob> = (1..=10).map(blob).collect();
        store.append_batch(&all).unwrap();
        drop(store);
        path
    };
    let refused = |path: &std::path::Path, what: &str| {
        let opened = SqliteStore::open(path);
        assert!(
            matches!(opened, Err(Error::Integrity(_))),
            "{what}: {opened:?}"
        );
        assert!(
            matches!(SqliteStore::open_read_only(path), Err(Error::Integrity(_))),
            "{what}: read-only"
        );
    };
    // Each lie: a store of blobs 1..=10, then SQL run on it by hand.
    let lies = [
        (
            "a mark past the newest blob",
            "INSERT INTO meta (name, value) VALUES ('high_water', 4611686018427387904)",
        ),
        (
            "a negative mark",
            "DELETE FROM blobs; INSERT INTO meta (name, value) VALUES ('high_water', -5)",
        ),
        (
            "meta without its key",
            "DROP TABLE meta; CREATE TABLE meta (name TEXT, value INTEGER NOT NULL)",
        ),
        (
            "version 1 without AUTOINCREMENT",
            "DROP TABLE meta; PRAGMA user_version = 1",
        ),
    ];
    for (n, (what, sql)) in lies.iter().enumerate() {
        let path = fresh(&format!("lie{n}.sqlite"));
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(sql)
            .unwrap();
        refused(&path, what);
    }

    // The honest store next to them opens, and its check passes.
    let honest = fresh("honest.sqlite");
    let store = SqliteStore::open(&honest).unwrap();
    assert_eq!(store.head(), 10);
    store.integrity_check().unwrap();
}
