//! The home directory of a profile or server: private, and used by one
//! daemon at a time.
//!
//! - [`create_private`]: a new home is made with mode 0700; an existing
//!   directory that others can read or write is refused, never changed.
//! - [`check_private`]: at every start, a home that others can read, write
//!   or enter is refused with a clear message (the profile is encrypted,
//!   but the control socket, tor's state and the server's key live there).
//! - [`HomeLock`]: a daemon holds an exclusive lock on `<home>/lock` for
//!   its lifetime; a second daemon on the same home refuses to start
//!   (two daemons on one profile would diverge and equivocate in groups).
//! - [`private_umask`]: every file a daemon creates is private from the
//!   moment it exists (the control socket included).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The lock file's name inside the home.
pub const LOCK_FILE: &str = "lock";
/// What a peer daemon still connecting to Tor last heard (its bootstrap
/// progress), for a client that finds no control socket yet. Gone once
/// Tor is connected.
pub const STARTING_FILE: &str = "starting";
/// Where [`write_starting`] writes before it renames.
const STARTING_TMP: &str = ".starting.tmp";
/// The most characters of progress kept, and shown (arti's first line
/// names its state directory).
const STARTING_MAX_CHARS: usize = 512;

/// One line of at most [`STARTING_MAX_CHARS`] characters, made safe to
/// show as a name is ([`crate::codec::clean_name`]: no escape sequences,
/// no reordering of the text around it, white space collapsed).
fn one_line(text: &str) -> String {
    crate::codec::clean_name(text)
        .chars()
        .take(STARTING_MAX_CHARS)
        .collect()
}

/// Opening flags that never follow a symbolic link, and never wait for
/// a writer (a FIFO put in the file's place).
fn no_follow_no_wait() -> i32 {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    i32::try_from(flags.bits()).unwrap_or(0)
}

/// Records `text` as the starting daemon's progress (replacing the last;
/// best effort: it is only shown). Written to a fresh file (never through
/// whatever is at the temporary path), then renamed into place.
pub fn write_starting(home: &Path, text: &str) {
    let tmp = home.join(STARTING_TMP);
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(no_follow_no_wait())
        .open(&tmp)
        .and_then(|mut f| f.write_all(one_line(text).as_bytes()));
    if written.is_ok() {
        let _ = std::fs::rename(&tmp, home.join(STARTING_FILE));
    }
}

/// Removes the starting daemon's progress.
pub fn clear_starting(home: &Path) {
    let _ = std::fs::remove_file(home.join(STARTING_FILE));
    let _ = std::fs::remove_file(home.join(STARTING_TMP));
}

/// The progress a starting daemon recorded, if any: read from a regular
/// file only (opened without following a link or waiting on a FIFO, and
/// checked as opened), bounded, one printable line.
pub fn read_starting(home: &Path) -> Option<String> {
    use std::io::Read;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(no_follow_no_wait())
        .open(home.join(STARTING_FILE))
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(4 * STARTING_MAX_CHARS as u64)
        .read_to_end(&mut bytes)
        .ok()?;
    let text = one_line(&String::from_utf8_lossy(&bytes));
    (!text.trim().is_empty()).then_some(text)
}

/// Why a home cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// The directory is open to other users.
    #[error(
        "{path} can be read or written by other users (mode {mode:o}): a Cwtch home must be private. Run `chmod 700 {path}`, or use a new directory"
    )]
    NotPrivate {
        /// The home.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The directory belongs to another user.
    #[error("{path} belongs to another user (uid {owner}): a Cwtch home must be your own")]
    NotOurs {
        /// The home.
        path: String,
        /// Its owner.
        owner: u32,
    },
    /// Another daemon holds the home.
    #[error(
        "another cwtch-node daemon is running on {path}{pid}: stop it first (one daemon per home)"
    )]
    Locked {
        /// The home.
        path: String,
        /// ` (pid N)` if the lock file says.
        pid: String,
    },
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// What failed.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HomeError + '_ {
    move |source| HomeError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Creates `home` with mode 0700 if it does not exist; refuses an existing
/// one that is not private (see [`check_private`]).
pub fn create_private(home: &Path) -> Result<(), HomeError> {
    if !home.exists() {
        if let Some(parent) = home.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(home)
            .map_err(io(home))?;
    }
    check_private(home)
}

/// Refuses a home that other users can read, write or enter, or that is
/// not ours.
pub fn check_private(home: &Path) -> Result<(), HomeError> {
    let meta = std::fs::metadata(home).map_err(io(home))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(HomeError::NotPrivate {
            path: home.display().to_string(),
            mode,
        });
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(HomeError::NotOurs {
            path: home.display().to_string(),
            owner: meta.uid(),
        });
    }
    Ok(())
}

/// An exclusive lock on a home, held while this value lives.
#[derive(Debug)]
pub struct HomeLock {
    _file: File,
}

impl HomeLock {
    /// Takes the lock of `home` (checked private first), or says which
    /// daemon holds it.
    pub fn acquire(home: &Path) -> Result<HomeLock, HomeError> {
        check_private(home)?;
        let path = home.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        // A client's lock_holder check holds a shared lock for an instant:
        // a few tries tell it from a daemon.
        let mut tries = 0;
        let locked = loop {
            match file.try_lock() {
                Err(std::fs::TryLockError::WouldBlock) if tries < 5 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other,
            }
        };
        match locked {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = read_pid(&path)
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default();
                return Err(HomeError::Locked {
                    path: home.display().to_string(),
                    pid,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        file.set_len(0).map_err(io(&path))?;
        write!(file, "{}", std::process::id()).map_err(io(&path))?;
        Ok(HomeLock { _file: file })
    }
}

/// The pid of the daemon holding `home`'s lock, if one holds it (a daemon
/// still starting, before its control socket exists, or stopping). None if
/// the lock is free or cannot be read. The check takes a shared lock for an
/// instant: a daemon starting in that instant would find the home held
/// ([`HomeLock::acquire`] retries briefly for that).
pub fn lock_holder(home: &Path) -> Option<u32> {
    let path = home.join(LOCK_FILE);
    let file = std::fs::File::open(&path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(std::fs::TryLockError::WouldBlock) => read_pid(&path),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// From now on, every file and socket this process creates is readable and
/// writable by its owner only.
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_progress_is_one_bounded_printable_line() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read_starting(tmp.path()), None);
        write_starting(
            tmp.path(),
            "tor bootstrap:  45% handshaking\n\x1b[2Jwith\u{202E} relays",
        );
        assert_eq!(
            read_starting(tmp.path()).as_deref(),
            Some("tor bootstrap: 45% handshaking \u{FFFD}[2Jwith\u{FFFD} relays")
        );
        // Whatever the file holds, what is shown is bounded.
        std::fs::write(tmp.path().join(STARTING_FILE), "x".repeat(100_000)).unwrap();
        assert_eq!(read_starting(tmp.path()).unwrap().len(), STARTING_MAX_CHARS);
        clear_starting(tmp.path());
        assert_eq!(read_starting(tmp.path()), None);
        // A link in its place is not followed, a FIFO not waited on, a
        // directory not read.
        let at = |name: &str| tmp.path().join(name);
        let fifo = |name: &str| {
            rustix::fs::mkfifoat(
                rustix::fs::CWD,
                at(name),
                rustix::fs::Mode::from_raw_mode(0o600),
            )
            .unwrap()
        };
        std::fs::write(at("elsewhere"), "a secret").unwrap();
        std::os::unix::fs::symlink(at("elsewhere"), at(STARTING_FILE)).unwrap();
        assert_eq!(read_starting(tmp.path()), None);
        std::fs::remove_file(at(STARTING_FILE)).unwrap();
        fifo(STARTING_FILE);
        assert_eq!(read_starting(tmp.path()), None);
        std::fs::remove_file(at(STARTING_FILE)).unwrap();
        std::fs::create_dir(at(STARTING_FILE)).unwrap();
        assert_eq!(read_starting(tmp.path()), None);
        std::fs::remove_dir(at(STARTING_FILE)).unwrap();
        // The writer never writes through a link or into a FIFO at its
        // temporary path: it replaces them.
        std::os::unix::fs::symlink(at("elsewhere"), at(STARTING_TMP)).unwrap();
        write_starting(tmp.path(), "tor bootstrap:  50% done");
        assert_eq!(
            std::fs::read_to_string(at("elsewhere")).unwrap(),
            "a secret"
        );
        assert_eq!(
            read_starting(tmp.path()).as_deref(),
            Some("tor bootstrap: 50% done")
        );
        fifo(STARTING_TMP);
        write_starting(tmp.path(), "tor bootstrap:  60% more");
        assert_eq!(
            read_starting(tmp.path()).as_deref(),
            Some("tor bootstrap: 60% more")
        );
        std::fs::write(at(STARTING_TMP), "left by a kill").unwrap();
        clear_starting(tmp.path());
        assert!(!at(STARTING_TMP).exists() && !at(STARTING_FILE).exists());
    }

    #[test]
    fn a_home_open_to_others_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        create_private(&home).unwrap();
        assert_eq!(
            std::fs::metadata(&home).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for mode in [0o755, 0o750, 0o701, 0o720, 0o702] {
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = check_private(&home).unwrap_err();
            assert!(matches!(err, HomeError::NotPrivate { .. }), "{mode:o}");
            assert!(err.to_string().contains("chmod 700"));
            assert!(create_private(&home).is_err());
            assert!(HomeLock::acquire(&home).is_err());
            // Refused, never changed.
            assert_eq!(
                std::fs::metadata(&home).unwrap().permissions().mode() & 0o777,
                mode
            );
        }
    }

    #[test]
    fn one_lock_per_home() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        create_private(&home).unwrap();
        let first = HomeLock::acquire(&home).unwrap();
        let err = HomeLock::acquire(&home).unwrap_err();
        assert!(matches!(err, HomeError::Locked { .. }));
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id()))
        );
        assert_eq!(lock_holder(&home), Some(std::process::id()));
        drop(first);
        assert_eq!(lock_holder(&home), None);
        let _second = HomeLock::acquire(&home).unwrap();
        // The check itself never keeps a daemon from starting.
        let _ = lock_holder(&home);
        assert_eq!(lock_holder(&tmp.path().join("nowhere")), None);
    }
}
