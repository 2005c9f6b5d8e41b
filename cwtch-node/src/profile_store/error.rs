//! The profile store's typed errors.

use std::path::PathBuf;

/// Everything that can go wrong in the profile store.
///
/// No variant carries a password, a key, a record key or a record value, so
/// `Debug` and `Display` are safe to log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileStoreError {
    /// `create` found a profile (or a leftover `-wal`/`-journal` file) at the path.
    #[error("a profile already exists at {0}")]
    AlreadyExists(PathBuf),
    /// `open` found no profile at the path.
    #[error("no profile at {0}")]
    NotFound(PathBuf),
    /// The password does not open this profile (or its header was altered:
    /// the two cannot be told apart, by design).
    #[error("wrong password")]
    WrongPassword,
    /// An empty password was given to `create` or `change_password`: a profile
    /// always has a real password (there is no "default password" mode).
    #[error("the password must not be empty")]
    EmptyPassword,
    /// A record failed authentication: it was modified, swapped with another
    /// record, or damaged on disk. Nothing of it is returned.
    #[error("a record failed authentication (tampered with or corrupt)")]
    Tampered,
    /// The file is not a profile store, or its structure is damaged.
    #[error("the profile store is corrupt: {0}")]
    Corrupt(&'static str),
    /// The file was written by a newer (or unknown) format version.
    #[error("unsupported profile store format version {0}")]
    UnsupportedVersion(i64),
    /// A record key or value is larger than the store accepts.
    #[error("record too large: {what} is {len} bytes, the limit is {max}")]
    TooLarge {
        /// "key" or "value".
        what: &'static str,
        /// The length given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A store method was called from inside `transaction` on the same store
    /// (that would deadlock); use the transaction handle instead.
    #[error("the store was used from inside its own transaction; use the transaction handle")]
    Reentrant,
    /// A transaction closure gave up (its own reason); nothing was written.
    /// For callers: `Err(ProfileStoreError::Aborted("why".into()))`.
    #[error("transaction aborted: {0}")]
    Aborted(String),
    /// The key derivation function failed (out of memory, bad parameters).
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// The operating system's random number generator failed.
    #[error("the random number generator failed")]
    Rng,
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// A file system error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// The profile store's result type.
pub type Result<T, E = ProfileStoreError> = std::result::Result<T, E>;
