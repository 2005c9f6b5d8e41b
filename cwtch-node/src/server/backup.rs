//! `server backup FILE` and `server restore FILE --home NEW`.
//!
//! A backup is one SQLite file: the blobs in the blob store's SQLite format
//! ([`crate::blob_store::sqlite`]: every blob with its index and receive
//! time, and the highest index ever assigned), plus a table
//! `cwtch_server_backup` holding the server's key and its `server.toml`.
//! It is read from the blob log while the server runs: the head is taken
//! first, so every blob acknowledged before the backup started is in it,
//! and blobs the server prunes meanwhile are left out. It is written with
//! mode 0600: it holds the server's key, unencrypted, like the home.
//!
//! Restoring makes a new home with the same key (so the same onion address
//! and advert signer), the same configuration and the blobs, imported into
//! a new blob log (the key is not in it). Members whose cursor is past the
//! restored head are brought back to it by their client (SPEC.md section
//! 8.5, "a server restored from a backup").

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, params};

use super::{BLOBS_DIR, KEY_FILE, LEGACY_BLOBS_FILE, config, load_identity};
use crate::blob_store::{BlobReader, BlobStore, MAX_READ_LIMIT, RetentionPolicy, SqliteStore};

/// The table of a backup that holds what is not blobs.
const TABLE: &str = "cwtch_server_backup";
/// The backup format this code writes and reads.
const FORMAT: i64 = 1;

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The target exists: a backup never overwrites a file.
    #[error("{0} already exists: choose a new file name")]
    Exists(String),
    /// The home to restore into is not new or empty.
    #[error("{0} is not empty: restore into a new home")]
    HomeNotEmpty(String),
    /// The file is not a backup of ours.
    #[error("{path} is not a cwtch server backup: {reason}")]
    NotABackup {
        /// The file.
        path: String,
        /// Why not.
        reason: String,
    },
    /// Anything else, with what failed.
    #[error("{0}")]
    Failed(String),
}

fn failed(what: &str) -> impl FnOnce(String) -> BackupError + '_ {
    move |e| BackupError::Failed(format!("{what}: {e}"))
}

/// Creates `file` (mode 0600, never over an existing file) for SQLite to
/// write into.
fn create_private(file: &Path) -> Result<(), BackupError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(BackupError::Exists(file.display().to_string()))
        }
        Err(e) => Err(BackupError::Failed(format!("{}: {e}", file.display()))),
    }
}

/// Copies every blob of the server's store (the blob log, or a store in
/// the SQLite format a server not started since left) into `target`, from
/// the oldest to the head as it was when the copy began.
fn copy_blobs(home: &Path, target: &mut SqliteStore) -> crate::blob_store::Result<()> {
    let log = home.join(BLOBS_DIR);
    let legacy = home.join(LEGACY_BLOBS_FILE);
    let mut rows: Vec<(u64, u64, Box<crate::blob_store::Blob>)> = Vec::new();
    if !log.exists() && legacy.exists() {
        let source = SqliteStore::open_read_only(&legacy)?;
        let mut cursor = 0;
        loop {
            rows.clear();
            source.visit_rows_after(cursor, MAX_READ_LIMIT, |i, at, b| {
                rows.push((i, at, Box::new(*b)));
            })?;
            let Some(&(last, _, _)) = rows.last() else {
                break;
            };
            target.insert_rows(rows.iter().map(|(i, at, b)| (*i, *at, &**b)))?;
            cursor = last;
        }
        return target.set_high_water(source.head());
    }
    let source = BlobReader::open(&log)?;
    let head = source.head()?;
    let mut cursor = 0;
    while cursor < head {
        rows.clear();
        source.visit_rows(cursor, MAX_READ_LIMIT, |i, at, b| {
            if i > head {
                return std::ops::ControlFlow::Break(());
            }
            rows.push((i, at, Box::new(*b)));
            std::ops::ControlFlow::Continue(())
        })?;
        let Some(&(first, _, _)) = rows.first() else {
            break;
        };
        if first != cursor + 1 && target.oldest().is_some() {
            // The server pruned past what was copied: that is gone too.
            target.delete_below(first)?;
        }
        target.insert_rows(rows.iter().map(|(i, at, b)| (*i, *at, &**b)))?;
        cursor = rows.last().map_or(head, |r| r.0);
    }
    target.set_high_water(head)
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// What a backup holds, as `server backup` reports it.
#[derive(Debug, serde::Serialize)]
pub struct BackupSummary {
    /// The server's address.
    pub address: String,
    /// Blobs in the backup.
    pub blobs: u64,
    /// The last index in the backup.
    pub head: u64,
    /// The backup file.
    pub file: String,
}

/// Writes a backup of the server in `home` to `file` (new, mode 0600).
/// Consistent while the server runs.
pub fn backup(home: &Path, file: &Path) -> Result<BackupSummary, BackupError> {
    let identity = load_identity(home).map_err(BackupError::Failed)?;
    let config_text = match std::fs::read_to_string(home.join(config::CONFIG_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A home not started since server.toml: its policy, converted.
            let (c, _) = config::load(home).map_err(|e| BackupError::Failed(e.to_string()))?;
            c.render(true)
        }
        Err(e) => return Err(BackupError::Failed(format!("{}: {e}", config::CONFIG_FILE))),
    };
    // SQLite's side files of the backup that exist already are the user's:
    // a failure removes only those it made.
    let side = |suffix: &str| {
        let mut name = file.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let new_sides: Vec<PathBuf> = ["-journal", "-wal", "-shm"]
        .into_iter()
        .map(side)
        .filter(|p| !p.exists())
        .collect();
    create_private(file)?;
    let result = (|| {
        let mut store = SqliteStore::open(file)
            .and_then(|store| store.without_sync().map(|()| store))
            .map_err(|e| failed("cannot create the backup")(e.to_string()))?;
        if home.join(BLOBS_DIR).exists() || home.join(LEGACY_BLOBS_FILE).exists() {
            copy_blobs(home, &mut store).map_err(|e| failed("copying the blobs")(e.to_string()))?;
        }
        let (count, ever) = (
            store.oldest().map_or(0, |o| store.head() + 1 - o),
            store.head(),
        );
        // A backup is a plain file: no WAL beside it.
        store
            .standalone()
            .map_err(|e| failed("backup")(e.to_string()))?;
        drop(store);
        let mut target =
            Connection::open(file).map_err(|e| failed("cannot open the backup")(e.to_string()))?;
        let tx = target
            .transaction()
            .map_err(|e| failed("backup")(e.to_string()))?;
        tx.execute_batch(&format!(
            "CREATE TABLE {TABLE} (name TEXT PRIMARY KEY, value BLOB NOT NULL);"
        ))
        .map_err(|e| failed("backup")(e.to_string()))?;
        let created = crate::blob_store::unix_now();
        let created = i64::try_from(created).unwrap_or(i64::MAX);
        let rows: [(&str, rusqlite::types::Value); 4] = [
            ("format", FORMAT.into()),
            ("created_at", created.into()),
            ("key", identity.seed().as_ref().to_vec().into()),
            ("config", config_text.clone().into_bytes().into()),
        ];
        for (name, value) in rows {
            tx.execute(
                &format!("INSERT INTO {TABLE} (name, value) VALUES (?1, ?2)"),
                params![name, value],
            )
            .map_err(|e| failed("backup")(e.to_string()))?;
        }
        tx.commit().map_err(|e| failed("backup")(e.to_string()))?;
        drop(target);
        std::fs::File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(|e| failed("syncing the backup")(e.to_string()))?;
        sync_dir(file);
        Ok(BackupSummary {
            address: identity.address().to_string(),
            blobs: count,
            head: ever,
            file: file.display().to_string(),
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(file);
        // SQLite's own side files of the backup (`FILE-journal`, and in WAL
        // mode `-wal` and `-shm`) that this backup made.
        for p in &new_sides {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}

/// Makes `home` (new, or an empty directory) a server restored from the
/// backup `file`. Returns the restored server's address.
pub fn restore(file: &Path, home: &Path) -> Result<String, BackupError> {
    let not_a_backup = |reason: String| BackupError::NotABackup {
        path: file.display().to_string(),
        reason,
    };
    let backup = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| not_a_backup(e.to_string()))?;
    let read = |name: &str| -> Result<Vec<u8>, BackupError> {
        backup
            .query_row(
                &format!("SELECT value FROM {TABLE} WHERE name = ?1"),
                [name],
                |r| {
                    let v = r.get_ref(0)?;
                    Ok(match v {
                        rusqlite::types::ValueRef::Blob(b) => b.to_vec(),
                        rusqlite::types::ValueRef::Integer(i) => i.to_string().into_bytes(),
                        rusqlite::types::ValueRef::Text(t) => t.to_vec(),
                        _ => Vec::new(),
                    })
                },
            )
            .map_err(|e| not_a_backup(format!("no {name} ({e})")))
    };
    let format = read("format")?;
    if format != FORMAT.to_string().as_bytes() {
        return Err(not_a_backup(format!(
            "backup format {} (this build reads {FORMAT})",
            String::from_utf8_lossy(&format)
        )));
    }
    let seed: [u8; 32] = read("key")?
        .as_slice()
        .try_into()
        .map_err(|_| not_a_backup("the key is damaged".into()))?;
    let identity = cwtch_proto::Identity::from_seed(&seed);
    let config_text = String::from_utf8(read("config")?)
        .map_err(|_| not_a_backup("the configuration is not text".into()))?;
    config::Config::parse(&config_text, "the backup's server.toml")
        .map_err(|e| not_a_backup(e.to_string()))?;

    // The new home: missing, or an empty directory.
    if home.exists() {
        let empty = std::fs::read_dir(home)
            .map_err(|e| BackupError::Failed(format!("{}: {e}", home.display())))?
            .next()
            .is_none();
        if !empty {
            return Err(BackupError::HomeNotEmpty(home.display().to_string()));
        }
    }
    crate::home::create_private(home).map_err(|e| BackupError::Failed(e.to_string()))?;
    let blobs = home.join(BLOBS_DIR);
    {
        let source = SqliteStore::open_read_only(file).map_err(|e| not_a_backup(e.to_string()))?;
        let store = BlobStore::import_sqlite(&source, &blobs, RetentionPolicy::UNLIMITED)
            .map_err(|e| failed("restoring the blobs")(e.to_string()))?;
        store
            .integrity_check()
            .map_err(|e| failed("the restored blob store")(e.to_string()))?;
    }
    drop(backup);
    write_private(&home.join(KEY_FILE), identity.seed().as_ref())?;
    write_private(&home.join(config::CONFIG_FILE), config_text.as_bytes())?;
    sync_dir(&home.join(KEY_FILE));
    Ok(identity.address().to_string())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| BackupError::Failed(format!("{}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| BackupError::Failed(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ServerPolicyArgs;
    use std::os::unix::fs::PermissionsExt;

    /// The first byte of each of the first ten blobs stored.
    fn first_bytes(store: &BlobStore) -> Vec<u8> {
        let page = store.read_after(0, 10).unwrap();
        page.iter().map(|(_, b)| b[0]).collect()
    }

    #[test]
    fn a_backup_restores_the_key_the_configuration_and_the_blobs() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("server");
        super::super::init(
            &home,
            &ServerPolicyArgs {
                max_age_days: Some(9),
                ..ServerPolicyArgs::default()
            },
            true,
        )
        .unwrap();
        let mut store = BlobStore::open(home.join(BLOBS_DIR), RetentionPolicy::UNLIMITED).unwrap();
        let blobs: Vec<[u8; 2048]> = (0..5u8).map(|i| [i; 2048]).collect();
        store.append_batch(&blobs).unwrap();
        let file = tmp.path().join("b.backup");
        let summary = backup(&home, &file).unwrap();
        assert_eq!((summary.blobs, summary.head), (5, 5));
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(backup(&home, &file), Err(BackupError::Exists(_))));
        // Posts after the backup are not in it.
        store.append_batch(&[[9u8; 2048]]).unwrap();

        let new = tmp.path().join("restored");
        let address = restore(&file, &new).unwrap();
        assert_eq!(address, load_identity(&home).unwrap().address().to_string());
        assert_eq!(load_identity(&new).unwrap().address().to_string(), address);
        let (config, _) = config::load(&new).unwrap();
        assert_eq!(config.retention.max_age_days, config::Limit::At(9));
        let restored = BlobStore::open(new.join(BLOBS_DIR), RetentionPolicy::UNLIMITED).unwrap();
        assert_eq!(restored.head(), 5);
        assert_eq!(first_bytes(&restored), [0, 1, 2, 3, 4]);
        // The key is not left in the restored store.
        let seed = load_identity(&home).unwrap().seed().as_ref().to_vec();
        for entry in std::fs::read_dir(new.join(BLOBS_DIR)).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(32).any(|w| w == seed.as_slice()));
        }
        for name in [BLOBS_DIR, KEY_FILE, config::CONFIG_FILE] {
            let mode = std::fs::metadata(new.join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{name} is private");
        }
        // Never over a server.
        assert!(matches!(
            restore(&file, &new),
            Err(BackupError::HomeNotEmpty(_))
        ));
        // A file that is not a backup.
        let not = tmp.path().join("not");
        std::fs::write(&not, b"hello").unwrap();
        assert!(matches!(
            restore(&not, &tmp.path().join("x")),
            Err(BackupError::NotABackup { .. })
        ));
        assert!(!tmp.path().join("x").exists());
    }

    /// A home from before the blob log (its blobs in `blobs.db`) is backed
    /// up as it is, and imported when the server opens it: the same
    /// blobs, the old files gone.
    #[test]
    fn a_home_from_before_the_blob_log_is_backed_up_and_imported() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("server");
        super::super::init(&home, &ServerPolicyArgs::default(), true).unwrap();
        let legacy = home.join(LEGACY_BLOBS_FILE);
        let mut old = SqliteStore::open(&legacy).unwrap();
        let blobs: Vec<[u8; 2048]> = (0..5u8).map(|i| [i; 2048]).collect();
        old.append_batch_at(&blobs, 1_000).unwrap();
        drop(old);

        let file = tmp.path().join("old.backup");
        let summary = backup(&home, &file).unwrap();
        assert_eq!((summary.blobs, summary.head), (5, 5));

        let store = super::super::open_blob_store(&home, RetentionPolicy::UNLIMITED).unwrap();
        assert!(!legacy.exists() && !home.join("blobs.db-wal").exists());
        assert_eq!(store.head(), 5);
        assert_eq!(store.stats().unwrap().oldest_received_at, Some(1_000));
        assert_eq!(first_bytes(&store), [0, 1, 2, 3, 4]);
        drop(store);

        let new = tmp.path().join("restored");
        restore(&file, &new).unwrap();
        let restored = BlobStore::open(new.join(BLOBS_DIR), RetentionPolicy::UNLIMITED).unwrap();
        assert_eq!(restored.read_after(0, 10).unwrap().len(), 5);

        // An older binary put back on the home starts a new blobs.db: the
        // next start refuses rather than delete it, and keeps both.
        let mut again = SqliteStore::open(&legacy).unwrap();
        again.append_batch(&[[9; 2048]]).unwrap();
        drop(again);
        let refused = super::super::open_blob_store(&home, RetentionPolicy::UNLIMITED);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("both hold blobs")),
            "{refused:?}"
        );
        assert!(legacy.exists() && home.join(BLOBS_DIR).exists());
        // A crash after the old store was checked, midway through removing
        // it (its WAL gone, the main file left): the removal is finished.
        let blobs = home.join(BLOBS_DIR);
        std::fs::rename(blobs.join("imported.done"), blobs.join("imported.ok")).unwrap();
        std::fs::remove_file(&legacy).unwrap();
        for side in ["blobs.db-wal", "blobs.db-shm"] {
            let _ = std::fs::remove_file(home.join(side));
        }
        std::fs::write(&legacy, b"what a cut-off removal leaves").unwrap();
        let store = super::super::open_blob_store(&home, RetentionPolicy::UNLIMITED).unwrap();
        assert!(!legacy.exists());
        assert_eq!(store.head(), 5);
    }

    /// A backup holds what is stored, not what was pruned, and keeps the
    /// high-water mark of a store whose blobs were all pruned: the
    /// restored server never gives an index out twice.
    #[test]
    fn a_backup_leaves_out_what_was_pruned_and_keeps_the_high_water_mark() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("server");
        super::super::init(&home, &ServerPolicyArgs::default(), true).unwrap();
        let mut store = BlobStore::open(home.join(BLOBS_DIR), RetentionPolicy::UNLIMITED).unwrap();
        let blobs: Vec<[u8; 2048]> = (0..3000u32).map(|i| [(i % 251) as u8; 2048]).collect();
        store.append_batch(&blobs).unwrap();
        let file = tmp.path().join("a.backup");
        store.set_policy(RetentionPolicy {
            max_blobs: Some(500),
            ..RetentionPolicy::UNLIMITED
        });
        store.prune(0).unwrap();
        // The whole backup, after the prune: only what is left.
        let summary = backup(&home, &file).unwrap();
        assert_eq!((summary.blobs, summary.head), (500, 3000));
        store.set_policy(RetentionPolicy {
            max_blobs: Some(0),
            ..RetentionPolicy::UNLIMITED
        });
        store.prune(0).unwrap();
        let empty = tmp.path().join("empty.backup");
        let summary = backup(&home, &empty).unwrap();
        assert_eq!((summary.blobs, summary.head), (0, 3000));
        let new = tmp.path().join("restored");
        restore(&empty, &new).unwrap();
        let mut restored =
            BlobStore::open(new.join(BLOBS_DIR), RetentionPolicy::UNLIMITED).unwrap();
        assert_eq!(restored.append_batch(&[[1; 2048]]).unwrap(), 3001..3002);
    }
}
