//! Nothing readable on disk: the raw bytes of every file in the profile's
//! directory (the database, `-wal`, `-shm`), before and after checkpoints,
//! after updates, deletes, close and a password change, contain none of the
//! secrets written (values and keys).

use std::path::Path;

use cwtch_node::profile_store::{ProfileStore, Table};

const PW: &[u8] = b"leak test password";
const DISPLAY_NAME: &str = "Zephyrine Quokkaberg";
const OLD_DISPLAY_NAME: &str = "Old Nickname Wombatson";
const MESSAGE: &str = "meet me at the old lighthouse at nine, bring the blue folder";
const DELETED_MESSAGE: &str = "this message was deleted and must be gone too";
const ONION: &str = "vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd";
const CONTACT_KEY: &str = "contact-key-qjxzkvwy";

/// A 32-byte identity seed with no zero bytes (so it cannot hide in padding).
fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    let mut x: u32 = 0x9e37_79b9;
    for b in &mut s {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = (x as u8) | 1;
    }
    s
}

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

fn needles() -> Vec<(String, Vec<u8>)> {
    let seed = seed();
    let mut n: Vec<(String, Vec<u8>)> = vec![
        ("display name".into(), DISPLAY_NAME.into()),
        ("old display name".into(), OLD_DISPLAY_NAME.into()),
        ("message text".into(), MESSAGE.into()),
        ("deleted message".into(), DELETED_MESSAGE.into()),
        ("onion address".into(), ONION.into()),
        (
            "onion address, upper case".into(),
            ONION.to_uppercase().into(),
        ),
        ("identity seed".into(), seed.to_vec()),
        ("identity seed hex".into(), hex(&seed, false).into()),
        ("identity seed HEX".into(), hex(&seed, true).into()),
        // Record keys are secret too (they are blinded on disk).
        ("record key".into(), CONTACT_KEY.into()),
        ("record key identity_seed".into(), "identity_seed".into()),
        ("record key display_name".into(), "display_name".into()),
        // Fragments, in case a value is split across pages.
        ("display name, first word".into(), "Zephyrine".into()),
        ("message, a fragment".into(), "lighthouse".into()),
        ("onion, first 20".into(), ONION[..20].into()),
        ("onion, last 20".into(), ONION[36..].into()),
        ("seed, first 12 bytes".into(), seed[..12].to_vec()),
        ("seed, last 12 bytes".into(), seed[20..].to_vec()),
    ];
    // UTF-16 (SQLite can store text that way): the display name.
    let utf16: Vec<u8> = DISPLAY_NAME
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    n.push(("display name UTF-16LE".into(), utf16));
    n
}

/// Reads every file under `dir`: the files (name, size) and the first
/// needle found, if any.
fn search(dir: &Path) -> (Vec<(String, usize)>, Option<String>) {
    let mut files = Vec::new();
    let mut found = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let p = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            for (what, needle) in needles() {
                if found.is_none() && bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                    found = Some(format!("the {what} is readable in {}", p.display()));
                }
            }
            files.push((
                p.file_name().unwrap().to_string_lossy().into_owned(),
                bytes.len(),
            ));
        }
    }
    files.sort();
    (files, found)
}

/// Fails if any needle appears in any file under `dir`; returns the files.
fn assert_no_plaintext(dir: &Path, stage: &str) -> Vec<(String, usize)> {
    let (files, found) = search(dir);
    if let Some(found) = found {
        panic!("{stage}: {found}");
    }
    assert!(!files.is_empty(), "{stage}: no files");
    files
}

fn names(files: &[(String, usize)]) -> Vec<&str> {
    files.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn no_secret_is_readable_in_any_file_at_any_stage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.db");
    let store = ProfileStore::create_insecure_for_tests(&path, PW).unwrap();
    store
        .transaction(|tx| {
            tx.put(Table::Meta, b"identity_seed", &seed())?;
            tx.put(Table::Meta, b"display_name", OLD_DISPLAY_NAME.as_bytes())?;
            tx.put(Table::Contacts, CONTACT_KEY.as_bytes(), ONION.as_bytes())?;
            // An onion address as a key, too (contacts are often keyed by it).
            tx.put(Table::Contacts, ONION.as_bytes(), b"nickname")?;
            tx.put(Table::Messages, b"1", MESSAGE.as_bytes())?;
            tx.put(Table::Messages, b"2", DELETED_MESSAGE.as_bytes())?;
            tx.put(Table::Outbox, b"1", MESSAGE.as_bytes())?;
            Ok(())
        })
        .unwrap();
    store
        .put(Table::Meta, b"display_name", DISPLAY_NAME.as_bytes())
        .unwrap();
    assert!(store.delete(Table::Messages, b"2").unwrap());

    // 1. Open, before any checkpoint: the data is in the -wal file.
    let files = assert_no_plaintext(dir.path(), "before checkpoint");
    assert!(names(&files).contains(&"profile.db-wal"), "{files:?}");
    assert!(names(&files).contains(&"profile.db-shm"), "{files:?}");
    println!("files searched before checkpoint: {files:?}");
    let wal_size = files.iter().find(|(n, _)| n == "profile.db-wal").unwrap().1;
    assert!(
        wal_size > 4096,
        "the writes should be in the WAL: {files:?}"
    );

    // 2. After a checkpoint: the data is in the main file.
    store.checkpoint().unwrap();
    let files = assert_no_plaintext(dir.path(), "after checkpoint");
    let db_size = files.iter().find(|(n, _)| n == "profile.db").unwrap().1;
    assert!(db_size > 4096, "{files:?}");

    // 3. More writes after the checkpoint (the WAL is reused), then a blob.
    store
        .put(Table::Messages, b"3", MESSAGE.as_bytes())
        .unwrap();
    store.put(Table::Blobs, b"b", &[0x42; 20_000]).unwrap();
    assert_no_plaintext(dir.path(), "after more writes");

    // 4. The values still read back (the test would be empty otherwise).
    assert_eq!(
        &store.get(Table::Meta, b"display_name").unwrap().unwrap()[..],
        DISPLAY_NAME.as_bytes()
    );
    assert_eq!(
        &store.get(Table::Meta, b"identity_seed").unwrap().unwrap()[..],
        &seed()
    );
    assert_eq!(
        &store
            .get(Table::Contacts, CONTACT_KEY.as_bytes())
            .unwrap()
            .unwrap()[..],
        ONION.as_bytes()
    );

    // 5. Closed (SQLite checkpoints and removes the WAL on close).
    drop(store);
    assert_no_plaintext(dir.path(), "after close");

    // 6. Reopened, and the password changed.
    let store = ProfileStore::open(&path, PW).unwrap();
    assert_no_plaintext(dir.path(), "after reopen");
    store.change_password(PW, b"a new password").unwrap();
    assert_no_plaintext(dir.path(), "after change_password");
    assert_eq!(store.scan(Table::Messages).unwrap().len(), 2);
    drop(store);
    let files = assert_no_plaintext(dir.path(), "at the end");
    assert!(names(&files).contains(&"profile.db"), "{files:?}");
}

/// The search itself works: a plain file holding a needle is caught, in
/// every form the main test looks for.
#[test]
fn the_search_finds_plaintext_when_it_is_there() {
    for (what, needle) in needles() {
        let dir = tempfile::tempdir().unwrap();
        let mut content = vec![0u8; 1000];
        content.extend_from_slice(&needle);
        content.extend_from_slice(&[0u8; 1000]);
        std::fs::write(dir.path().join("plain-wal"), &content).unwrap();
        assert!(search(dir.path()).1.is_some(), "the {what} was not found");
    }
}
