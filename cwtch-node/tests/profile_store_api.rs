//! The profile store's API: every operation round-trips, transactions are
//! all-or-nothing, passwords are checked, bad files give typed errors.

use std::path::{Path, PathBuf};

use cwtch_node::profile_store::{PAD_BLOCK, ProfileStore, ProfileStoreError, Table};
use rusqlite::Connection;

const PW: &[u8] = b"hunter2 but longer";

fn new_store() -> (tempfile::TempDir, PathBuf, ProfileStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.db");
    let store = ProfileStore::create_insecure_for_tests(&path, PW).unwrap();
    (dir, path, store)
}

fn get(store: &ProfileStore, table: Table, key: &[u8]) -> Option<Vec<u8>> {
    store.get(table, key).unwrap().map(|v| v.to_vec())
}

fn raw(path: &Path) -> Connection {
    Connection::open(path).unwrap()
}

#[test]
fn every_operation_round_trips_in_every_table() {
    let (_dir, _path, store) = new_store();
    for (i, table) in Table::ALL.into_iter().enumerate() {
        assert_eq!(Table::from_id(table.id()), Some(table));
        assert_eq!(get(&store, table, b"k"), None);
        let value = vec![i as u8; 100 * i];
        store.put(table, b"k", &value).unwrap();
        store.put(table, b"other", b"x").unwrap();
        assert_eq!(get(&store, table, b"k"), Some(value.clone()));
    }
    // The same key in different tables holds different values.
    for (i, table) in Table::ALL.into_iter().enumerate() {
        assert_eq!(get(&store, table, b"k"), Some(vec![i as u8; 100 * i]));
        let scanned = store.scan(table).unwrap();
        let scanned: Vec<(Vec<u8>, Vec<u8>)> =
            scanned.into_iter().map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(
            scanned,
            vec![
                (b"k".to_vec(), vec![i as u8; 100 * i]),
                (b"other".to_vec(), b"x".to_vec())
            ]
        );
    }
    // Overwrite, delete, empty key and empty value, binary keys.
    store.put(Table::Contacts, b"k", b"new").unwrap();
    assert_eq!(get(&store, Table::Contacts, b"k"), Some(b"new".to_vec()));
    assert!(store.delete(Table::Contacts, b"k").unwrap());
    assert!(!store.delete(Table::Contacts, b"k").unwrap());
    assert_eq!(get(&store, Table::Contacts, b"k"), None);
    assert_eq!(get(&store, Table::Groups, b"k"), Some(vec![3; 300]));
    store.put(Table::Outbox, b"", b"").unwrap();
    assert_eq!(get(&store, Table::Outbox, b""), Some(vec![]));
    let bin_key = [0u8, 255, 1, 254];
    store.put(Table::Blobs, &bin_key, &[9; 70_000]).unwrap();
    assert_eq!(get(&store, Table::Blobs, &bin_key), Some(vec![9; 70_000]));
    assert_eq!(store.scan(Table::Contacts).unwrap().len(), 1);
    assert_eq!(store.integrity_check().unwrap(), 7 * 2 - 1 + 2);
}

#[test]
fn transactions_commit_together_or_not_at_all() {
    let (_dir, path, store) = new_store();
    store.put(Table::Outbox, b"m1", b"queued").unwrap();
    let n = store
        .transaction(|tx| {
            tx.put(Table::Messages, b"m1", b"sent text")?;
            assert!(tx.delete(Table::Outbox, b"m1")?);
            // Reads inside see the transaction's own writes.
            assert_eq!(&tx.get(Table::Messages, b"m1")?.unwrap()[..], b"sent text");
            assert!(tx.get(Table::Outbox, b"m1")?.is_none());
            assert_eq!(tx.scan(Table::Messages)?.len(), 1);
            Ok(42)
        })
        .unwrap();
    assert_eq!(n, 42);
    assert_eq!(
        get(&store, Table::Messages, b"m1"),
        Some(b"sent text".to_vec())
    );
    assert_eq!(get(&store, Table::Outbox, b"m1"), None);

    // An error rolls everything back.
    let err = store
        .transaction(|tx| {
            tx.put(Table::Messages, b"m2", b"never")?;
            tx.delete(Table::Messages, b"m1")?;
            Err::<(), _>(ProfileStoreError::Aborted("caller gave up".into()))
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "transaction aborted: caller gave up");
    assert_eq!(get(&store, Table::Messages, b"m2"), None);
    assert_eq!(
        get(&store, Table::Messages, b"m1"),
        Some(b"sent text".to_vec())
    );

    // A panic rolls back too, and the store stays usable.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = store.transaction(|tx| -> Result<(), ProfileStoreError> {
            tx.put(Table::Messages, b"m3", b"never")?;
            panic!("boom");
        });
    }));
    assert!(caught.is_err());
    assert_eq!(get(&store, Table::Messages, b"m3"), None);

    // Using the store itself inside its transaction is an error, not a deadlock.
    let err = store
        .transaction(|_tx| store.put(Table::Meta, b"x", b"y"))
        .unwrap_err();
    assert!(matches!(err, ProfileStoreError::Reentrant), "{err:?}");
    assert_eq!(get(&store, Table::Meta, b"x"), None);

    drop(store);
    let store = ProfileStore::open(&path, PW).unwrap();
    assert_eq!(
        get(&store, Table::Messages, b"m1"),
        Some(b"sent text".to_vec())
    );
    assert_eq!(store.integrity_check().unwrap(), 1);
}

#[test]
fn reopen_needs_the_right_password() {
    let (_dir, path, store) = new_store();
    store.put(Table::Meta, b"display_name", b"Alice").unwrap();
    drop(store);
    for wrong in [
        &b"hunter2"[..],
        b"",
        b"hunter2 but longer ",
        b"Hunter2 but longer",
    ] {
        let err = ProfileStore::open(&path, wrong).unwrap_err();
        assert!(matches!(err, ProfileStoreError::WrongPassword), "{err:?}");
    }
    let store = ProfileStore::open(&path, PW).unwrap();
    assert_eq!(
        get(&store, Table::Meta, b"display_name"),
        Some(b"Alice".to_vec())
    );
}

#[test]
fn create_and_open_refuse_what_they_should() {
    let (dir, path, store) = new_store();
    // Create refuses an existing profile, even while it is open.
    let err = ProfileStore::create_insecure_for_tests(&path, PW).unwrap_err();
    assert!(
        matches!(err, ProfileStoreError::AlreadyExists(_)),
        "{err:?}"
    );
    drop(store);
    let err = ProfileStore::create_insecure_for_tests(&path, b"other").unwrap_err();
    assert!(
        matches!(err, ProfileStoreError::AlreadyExists(_)),
        "{err:?}"
    );
    // ...and any file at the path.
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, b"hello").unwrap();
    let err = ProfileStore::create_insecure_for_tests(&other, PW).unwrap_err();
    assert!(
        matches!(err, ProfileStoreError::AlreadyExists(_)),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&other).unwrap(), b"hello");
    // Empty password.
    let fresh = dir.path().join("fresh.db");
    let err = ProfileStore::create_insecure_for_tests(&fresh, b"").unwrap_err();
    assert!(matches!(err, ProfileStoreError::EmptyPassword), "{err:?}");
    assert!(!fresh.exists());
    // Open: missing file, not a database, a database that is not a profile.
    let err = ProfileStore::open(dir.path().join("missing.db"), PW).unwrap_err();
    assert!(matches!(err, ProfileStoreError::NotFound(_)), "{err:?}");
    let err = ProfileStore::open(&other, PW).unwrap_err();
    assert!(matches!(err, ProfileStoreError::Corrupt(_)), "{err:?}");
    let foreign = dir.path().join("foreign.db");
    raw(&foreign)
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let err = ProfileStore::open(&foreign, PW).unwrap_err();
    assert!(matches!(err, ProfileStoreError::Corrupt(_)), "{err:?}");
    // ...and that database was left as it was (not switched to WAL).
    let mode: String = raw(&foreign)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
    // Errors print without secrets.
    assert_eq!(
        ProfileStoreError::WrongPassword.to_string(),
        "wrong password"
    );
}

#[test]
fn damaged_headers_give_typed_errors() {
    let (_dir, path, store) = new_store();
    store.put(Table::Meta, b"a", b"b").unwrap();
    drop(store);
    let conn = raw(&path);
    // A different salt derives different keys: indistinguishable from a wrong password.
    conn.execute("UPDATE header SET salt = zeroblob(16)", [])
        .unwrap();
    let err = ProfileStore::open(&path, PW).unwrap_err();
    assert!(matches!(err, ProfileStoreError::WrongPassword), "{err:?}");
    conn.execute("UPDATE header SET salt = x'00'", []).unwrap();
    let err = ProfileStore::open(&path, PW).unwrap_err();
    assert!(matches!(err, ProfileStoreError::Corrupt(_)), "{err:?}");
    // Absurd Argon2 parameters are refused before any allocation.
    conn.execute("UPDATE header SET m_cost = 1099511627776", [])
        .unwrap();
    let err = ProfileStore::open(&path, PW).unwrap_err();
    assert!(matches!(err, ProfileStoreError::Corrupt(_)), "{err:?}");
    conn.execute("UPDATE header SET format = 99", []).unwrap();
    let err = ProfileStore::open(&path, PW).unwrap_err();
    assert!(
        matches!(err, ProfileStoreError::UnsupportedVersion(99)),
        "{err:?}"
    );
    conn.execute("DELETE FROM header", []).unwrap();
    let err = ProfileStore::open(&path, PW).unwrap_err();
    assert!(matches!(err, ProfileStoreError::Corrupt(_)), "{err:?}");
}

/// The two envelopes of a store with exactly two records, and their blinds.
fn two_rows(conn: &Connection) -> Vec<(Vec<u8>, Vec<u8>)> {
    let rows: Vec<(Vec<u8>, Vec<u8>)> = conn
        .prepare("SELECT blind, envelope FROM records")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2);
    rows
}

#[test]
fn swapped_envelopes_are_detected() {
    let (_dir, path, store) = new_store();
    store
        .put(Table::Contacts, b"alice", b"Alice, trusted")
        .unwrap();
    store.put(Table::Contacts, b"bob", b"Bob, blocked").unwrap();
    drop(store);
    let conn = raw(&path);
    let rows = two_rows(&conn);
    for (i, j) in [(0, 1), (1, 0)] {
        conn.execute(
            "UPDATE records SET envelope = ?1 WHERE blind = ?2",
            (&rows[j].1, &rows[i].0),
        )
        .unwrap();
    }
    drop(conn);
    let store = ProfileStore::open(&path, PW).unwrap();
    for key in [&b"alice"[..], b"bob"] {
        let err = store.get(Table::Contacts, key).unwrap_err();
        assert!(matches!(err, ProfileStoreError::Tampered), "{err:?}");
    }
    let err = store.scan(Table::Contacts).unwrap_err();
    assert!(matches!(err, ProfileStoreError::Tampered), "{err:?}");
    let err = store.integrity_check().unwrap_err();
    assert!(matches!(err, ProfileStoreError::Tampered), "{err:?}");
}

#[test]
fn a_record_moved_to_another_table_or_key_is_detected() {
    let (_dir, path, store) = new_store();
    store.put(Table::Meta, b"x", b"meta value").unwrap();
    store.put(Table::Messages, b"x", b"message value").unwrap();
    drop(store);
    let conn = raw(&path);
    let rows = two_rows(&conn);
    // Copy the first envelope over the second row: same key, other table.
    conn.execute(
        "UPDATE records SET envelope = ?1 WHERE blind = ?2",
        (&rows[0].1, &rows[1].0),
    )
    .unwrap();
    drop(conn);
    let store = ProfileStore::open(&path, PW).unwrap();
    let results = [
        store.get(Table::Meta, b"x"),
        store.get(Table::Messages, b"x"),
    ];
    // One row still holds its own envelope, the other a foreign one.
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(ProfileStoreError::Tampered)))
    );
}

#[test]
fn flipped_or_truncated_envelopes_are_detected() {
    let (_dir, path, store) = new_store();
    store
        .put(Table::Groups, b"g", b"group key and name")
        .unwrap();
    store.put(Table::Groups, b"h", b"another group").unwrap();
    drop(store);
    let conn = raw(&path);
    let rows = two_rows(&conn);
    let mut flipped = rows[0].1.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x80;
    conn.execute(
        "UPDATE records SET envelope = ?1 WHERE blind = ?2",
        (&flipped, &rows[0].0),
    )
    .unwrap();
    conn.execute(
        "UPDATE records SET envelope = ?1 WHERE blind = ?2",
        (&rows[1].1[..20], &rows[1].0),
    )
    .unwrap();
    drop(conn);
    let store = ProfileStore::open(&path, PW).unwrap();
    for key in [&b"g"[..], b"h"] {
        let err = store.get(Table::Groups, key).unwrap_err();
        assert!(
            matches!(
                err,
                ProfileStoreError::Tampered | ProfileStoreError::Corrupt(_)
            ),
            "{err:?}"
        );
    }
}

#[test]
fn envelopes_are_padded_to_256_bytes() {
    let (_dir, path, store) = new_store();
    for (i, len) in [0usize, 1, 200, 206, 207, 1000, 5000]
        .into_iter()
        .enumerate()
    {
        store
            .put(Table::Messages, &[i as u8], &vec![b'a'; len])
            .unwrap();
    }
    drop(store);
    let lens: Vec<usize> = raw(&path)
        .prepare("SELECT length(envelope) FROM records")
        .unwrap()
        .query_map([], |r| r.get::<_, i64>(0).map(|n| n as usize))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(lens.len(), 7);
    for len in &lens {
        assert_eq!(len % PAD_BLOCK, 0);
    }
    let mut sorted = lens.clone();
    sorted.sort();
    // 41 bytes of overhead + 9 of framing + 1-byte key: 205 bytes of value fit in 256.
    assert_eq!(sorted, vec![256, 256, 256, 512, 512, 1280, 5120]);
}

#[test]
fn change_password_reencrypts_everything() {
    let (_dir, path, store) = new_store();
    for i in 0..50u32 {
        store
            .put(
                Table::Messages,
                &i.to_le_bytes(),
                format!("message {i}").as_bytes(),
            )
            .unwrap();
    }
    store.put(Table::Meta, b"display_name", b"Alice").unwrap();
    let before: Vec<(Vec<u8>, Vec<u8>)> = raw(&path)
        .prepare("SELECT blind, envelope FROM records")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();

    let err = store
        .change_password(b"not it", b"new password")
        .unwrap_err();
    assert!(matches!(err, ProfileStoreError::WrongPassword), "{err:?}");
    let err = store.change_password(PW, b"").unwrap_err();
    assert!(matches!(err, ProfileStoreError::EmptyPassword), "{err:?}");
    store.change_password(PW, b"new password").unwrap();
    // Still usable with the new keys.
    assert_eq!(
        get(&store, Table::Meta, b"display_name"),
        Some(b"Alice".to_vec())
    );
    store.put(Table::Meta, b"after", b"1").unwrap();
    drop(store);

    let after: Vec<Vec<u8>> = raw(&path)
        .prepare("SELECT blind FROM records")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(after.len(), 52);
    for (blind, _) in &before {
        assert!(!after.contains(blind), "a blinded key survived the change");
    }
    let err = ProfileStore::open(&path, PW).unwrap_err();
    assert!(matches!(err, ProfileStoreError::WrongPassword), "{err:?}");
    let store = ProfileStore::open(&path, b"new password").unwrap();
    assert_eq!(store.integrity_check().unwrap(), 52);
    let msgs = store.scan(Table::Messages).unwrap();
    assert_eq!(msgs.len(), 50);
    for (k, v) in msgs {
        let i = u32::from_le_bytes(k.try_into().unwrap());
        assert_eq!(&v[..], format!("message {i}").as_bytes());
    }
}

#[test]
fn change_password_aborts_cleanly_on_a_tampered_record() {
    let (_dir, path, store) = new_store();
    store.put(Table::Contacts, b"a", b"1").unwrap();
    store.put(Table::Contacts, b"b", b"2").unwrap();
    let conn = raw(&path);
    let rows = two_rows(&conn);
    conn.execute(
        "UPDATE records SET envelope = ?1 WHERE blind = ?2",
        (&rows[1].1, &rows[0].0),
    )
    .unwrap();
    drop(conn);
    let err = store.change_password(PW, b"new").unwrap_err();
    assert!(matches!(err, ProfileStoreError::Tampered), "{err:?}");
    drop(store);
    // Nothing changed: the old password still opens it.
    let store = ProfileStore::open(&path, PW).unwrap();
    assert_eq!(two_rows(&raw(&path)), {
        let mut r = rows.clone();
        r[0].1 = rows[1].1.clone();
        r
    });
    drop(store);
}

#[test]
fn oversized_records_are_refused() {
    let (_dir, _path, store) = new_store();
    let err = store.put(Table::Meta, &[0; 5000], b"v").unwrap_err();
    assert!(
        matches!(err, ProfileStoreError::TooLarge { what: "key", .. }),
        "{err:?}"
    );
    assert_eq!(get(&store, Table::Meta, &[0; 5000]), None);
}

#[test]
fn debug_output_shows_no_secrets() {
    let (_dir, _path, store) = new_store();
    store
        .put(Table::Meta, b"display_name", b"Alice Secretname")
        .unwrap();
    let s = format!("{store:?}");
    assert!(s.starts_with("ProfileStore"), "{s}");
    assert!(!s.contains("Secretname") && !s.contains("hunter2"), "{s}");
    store
        .transaction(|tx| {
            let s = format!("{tx:?}");
            assert_eq!(s, "ProfileTransaction { .. }");
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_store_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ProfileStore>();
    let (_dir, _path, store) = new_store();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let store = &store;
            s.spawn(move || {
                for i in 0..20u8 {
                    store.put(Table::Messages, &[t, i], &[t ^ i; 10]).unwrap();
                }
            });
        }
    });
    assert_eq!(store.scan(Table::Messages).unwrap().len(), 80);
}

#[cfg(unix)]
#[test]
fn files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, _path, store) = new_store();
    store.put(Table::Meta, b"a", b"b").unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{:?} has mode {mode:o}", entry.file_name());
        seen += 1;
    }
    assert_eq!(seen, 3, "the database, -wal and -shm");
}
