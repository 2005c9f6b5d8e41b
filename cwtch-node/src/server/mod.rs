//! The server daemon: publishes its onion service, serves anonymous
//! clients, stores blobs durably.
//!
//! - [`config`]: `server.toml`, its defaults, migration from `policy.json`;
//! - [`stats`]: counters, the load window and proof of work under load,
//!   the reports of `server stats` and the Prometheus metrics;
//! - [`admin`]: the private admin socket (`server stats`, `server config`)
//!   and the metrics endpoint;
//! - [`backup`]: `server backup` and `server restore`.
//!
//! A running server stops gracefully on [`crate::shutdown::Shutdown`]
//! (SIGTERM, SIGINT): it stops accepting, lets every connection receive the
//! acknowledgements of what it posted, tells it `Closing(shutdown)`, waits
//! for the committer to have everything on disk, removes its onion service
//! and returns. On [`crate::shutdown::Reload`] (SIGHUP) it reads
//! `server.toml` again.

pub mod admin;
pub mod backup;
pub mod config;
pub mod stats;

use std::cell::Cell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration as StdDuration;

use cwtch_proto::connection::{CloseReason, Connection};
use cwtch_proto::group::SEALED_BLOB_LEN;
use cwtch_proto::server::advert::{ADVERT_LEN, Requirements, Retention, ServerAdvert};
use cwtch_proto::server::wire::{MAX_SERVER_MESSAGE_LEN, TAG_FETCH, TAG_REFUSED};
use cwtch_proto::server::{
    BlobStore as SessionStore, Reply, ServerConfig, ServerEvent, ServerSession, StoreError,
};
use cwtch_proto::{Identity, PublicIdentity};
use event_listener::{Event, EventListener};
use smol::future::FutureExt;

use crate::blob_store::{
    BlobReader, BlobStore, GroupCommitter, HeadWatch, ReadThread, RetentionPolicy, Run, SqliteStore,
};
use crate::cli::ServerPolicyArgs;
use crate::clock;
use crate::daemon::conn::{self, Commands, Ending, LinkHandler, Outbox};
use crate::shutdown::{Reload, Shutdown};
use crate::transport::{Listener, NodeTransport, PEER_PORT, Stream};
use config::{Config, Limit, MetricsAddr, PowConfig, Ranged};
use stats::{Counters, Report, Window};

/// The server's key file inside its home directory (mode 0600).
pub const KEY_FILE: &str = "server.key";
/// The policy file of homes made before `server.toml` (migrated at start).
pub const POLICY_FILE: &str = config::LEGACY_POLICY_FILE;
/// The blob store (a directory: see [`crate::blob_store::log`]) inside the
/// server's home directory.
pub const BLOBS_DIR: &str = "blobs";
/// The blob database of servers from before the blob log: imported into
/// [`BLOBS_DIR`] when the server starts, then removed.
pub const LEGACY_BLOBS_FILE: &str = "blobs.db";
/// The most clients served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = config::MAX_CLIENTS as usize;
/// How long a stopping server waits for its connections to take their
/// acknowledgements and closing notice before it drops them.
pub const SHUTDOWN_GRACE: StdDuration = StdDuration::from_secs(10);

/// How long a server's advert is valid (SPEC.md section 13).
pub const ADVERT_LIFETIME_SECS: u64 = cwtch_proto::server::advert::ADVERT_LIFETIME.as_secs();
/// A running server signs a fresh advert when its current one is older.
pub const ADVERT_REFRESH_SECS: u64 = cwtch_proto::server::advert::ADVERT_REFRESH.as_secs();

/// The configuration of the server in `home` (read only: `server.toml`,
/// else an old `policy.json` converted, else the defaults).
pub fn load_config(home: &Path) -> Result<Config, String> {
    config::load(home)
        .map(|(c, _)| c)
        .map_err(|e| e.to_string())
}

/// The session settings a configuration gives, with the most proof of
/// work (each connection gets the level of the moment).
fn session_config(c: &Config) -> ServerConfig {
    let rate_interval = if c.rate_limit.enabled {
        cwtch_proto::Duration::from_millis(c.rate_limit.interval_ms.get())
    } else {
        cwtch_proto::Duration::ZERO
    };
    ServerConfig {
        pow_bits: u8::try_from(c.proof_of_work.max_bits.get()).unwrap_or(0),
        rate_burst: u16::try_from(c.rate_limit.burst.get()).unwrap_or(u16::MAX),
        rate_interval,
        retention_max_entries: c.retention.max_blobs.or_zero(),
        retention_max_age_secs: c.max_age_secs(),
        idle_timeout: cwtch_proto::Duration::from_secs(c.connections.idle_timeout_secs.get()),
        ..ServerConfig::default()
    }
}

/// The store's retention for a configuration.
fn retention(c: &Config) -> RetentionPolicy {
    RetentionPolicy {
        max_blobs: c.retention.max_blobs.get(),
        max_bytes: c
            .retention
            .max_mib
            .get()
            .map(|m| m.saturating_mul(1024 * 1024)),
        max_age: c
            .retention
            .max_age_days
            .get()
            .map(|d| StdDuration::from_secs(d.saturating_mul(86_400))),
    }
}

/// Creates a server identity and its configuration file in `home`.
pub fn init(home: &Path, flags: &ServerPolicyArgs, json: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Refuse bad flags before anything is created.
    let config = Config::from_init_flags(flags).map_err(|e| e.to_string())?;
    crate::home::create_private(home).map_err(|e| e.to_string())?;
    if home.join(config::CONFIG_FILE).exists() {
        return Err(format!(
            "{} already exists: there is a server in {} already",
            home.join(config::CONFIG_FILE).display(),
            home.display()
        ));
    }
    if home.join(KEY_FILE).exists() {
        return Err(format!(
            "{} exists but {} does not: a server was set up here without its configuration \
             (an older version, or a restore): `server run` runs it with the bounded defaults \
             (`server config` shows them); to start a new server instead, move the key away",
            home.join(KEY_FILE).display(),
            home.join(config::CONFIG_FILE).display()
        ));
    }
    let identity = Identity::generate(&mut clock::rng());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(home.join(KEY_FILE))
        .map_err(|e| format!("cannot create the server key in {}: {e}", home.display()))?;
    file.write_all(identity.seed().as_ref())
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot write the server key: {e}"))?;
    config::write_new(home, &config).map_err(|e| e.to_string())?;
    print_info(&identity, &config, json);
    Ok(())
}

/// Loads the server identity.
pub fn load_identity(home: &Path) -> Result<Identity, String> {
    let bytes = std::fs::read(home.join(KEY_FILE)).map_err(|e| {
        format!(
            "no server in {} ({e}): run `cwtch-node --home {} server init`",
            home.display(),
            home.display()
        )
    })?;
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| "the server key file is damaged".to_string())?;
    Ok(Identity::from_seed(&seed))
}

/// The paste-able string peers need: the address and what the server
/// demands (`cwtch-server:<address>?pow=<bits>&keep=<blobs>blobs,<days>days`,
/// 0 for no limit).
pub fn paste_string(identity: &Identity, config: &Config) -> String {
    format!(
        "cwtch-server:{}?pow={}&keep={}blobs,{}days",
        identity.address(),
        config.proof_of_work.max_bits.get(),
        config.retention.max_blobs.or_zero(),
        config.retention.max_age_days.or_zero(),
    )
}

/// What a server with these session settings and configuration states in
/// its advert.
fn requirements_and_retention(session: &ServerConfig, c: &Config) -> (Requirements, Retention) {
    (
        Requirements {
            pow_bits: u8::try_from(c.proof_of_work.max_bits.get()).unwrap_or(0),
            rate_burst: session.rate_burst.max(1),
            rate_interval_ms: u32::try_from(session.rate_interval.as_millis()).unwrap_or(u32::MAX),
            max_connections: u32::try_from(c.connections.max_clients.get()).unwrap_or(u32::MAX),
        },
        Retention {
            max_entries: c.retention.max_blobs.or_zero(),
            max_bytes: c.max_bytes(),
            max_age_secs: c.max_age_secs(),
        },
    )
}

/// The advert of a server with this configuration, issued at `now` (Unix
/// seconds).
pub fn advert(identity: &Identity, config: &Config, now: u64) -> ServerAdvert {
    let (requirements, retention) = requirements_and_retention(&session_config(config), config);
    advert_of(identity, requirements, retention, now)
}

fn advert_of(
    identity: &Identity,
    requirements: Requirements,
    retention: Retention,
    now: u64,
) -> ServerAdvert {
    ServerAdvert {
        server: identity.public(),
        issued_at: now,
        expires_at: now.saturating_add(ADVERT_LIFETIME_SECS),
        requirements,
        retention,
    }
}

/// Signs the server's advert for `now` (Unix seconds).
pub fn signed_advert(
    identity: &Identity,
    config: &Config,
    now: u64,
) -> Result<[u8; ADVERT_LEN], String> {
    advert(identity, config, now)
        .sign(identity)
        .map_err(|e| e.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The advert as shown by `server info`.
fn advert_json(identity: &Identity, config: &Config) -> serde_json::Value {
    let now = clock::unix_millis() / 1000;
    match signed_advert(identity, config, now) {
        Ok(bytes) => serde_json::json!({
            "version": cwtch_proto::server::advert::ADVERT_VERSION,
            "issued_at": now,
            "expires_at": now.saturating_add(ADVERT_LIFETIME_SECS),
            "hex": hex(&bytes),
        }),
        Err(e) => serde_json::json!({"error": e}),
    }
}

/// `println!` for what a command prints: a reader that went away
/// (`server info | head -2`) ends the program quietly, with success,
/// instead of a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, $($arg)*).and_then(|()| out.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

fn print_info(identity: &Identity, config: &Config, json: bool) {
    if json {
        say!(
            "{}",
            serde_json::json!({
                "address": identity.address().to_string(),
                "server": paste_string(identity, config),
                "config": config,
            })
        );
    } else {
        say!("{}", paste_string(identity, config));
    }
}

/// Opens the blob store in `home` (creating it if there is none). A store
/// in the SQLite format, from before the blob log, is imported first (the
/// same indices and receive times) and its files then removed; a crash
/// during the import leaves the old store, imported again next time.
pub fn open_blob_store(home: &Path, retention: RetentionPolicy) -> Result<BlobStore, String> {
    let path = home.join(BLOBS_DIR);
    let legacy = home.join(LEGACY_BLOBS_FILE);
    let cannot = |e: crate::blob_store::Error| format!("cannot open {}: {e}", path.display());
    let store = if legacy.exists() && !path.exists() {
        let source = SqliteStore::open(&legacy)
            .map_err(|e| format!("cannot open {}: {e}", legacy.display()))?;
        eprintln!(
            "cwtch server: importing {} ({} blobs, last index {}) into {}: this needs about as much free disk space as {} holds",
            legacy.display(),
            source.oldest().map_or(0, |o| source.head() + 1 - o),
            source.head(),
            path.display(),
            legacy.display(),
        );
        let store = BlobStore::import_sqlite(&source, &path, retention).map_err(|e| {
            format!(
                "cannot import {} into {}: {e} ({} is left as it was; the import runs again at the next start)",
                legacy.display(),
                path.display(),
                legacy.display()
            )
        })?;
        drop(source);
        store
    } else {
        BlobStore::open(&path, retention).map_err(cannot)?
    };
    if legacy.exists() {
        // Imported, now or before a crash: then the old store is what was
        // imported. One that differs was written since (an older binary
        // run on this home): never delete it.
        let checked = store.import_confirmed()
            || SqliteStore::open_read_only(&legacy)
                .is_ok_and(|old| store.imported_from_head() == Some(old.head()));
        if !checked {
            let old_head = SqliteStore::open_read_only(&legacy)
                .map(|s| s.head())
                .map_err(|e| format!("cannot open {}: {e}", legacy.display()))?;
            return Err(format!(
                "{} (last index {old_head}) and {} both hold blobs, and {} was not imported from it: an older binary ran on this home after the upgrade. Stop, keep both, and see OPERATING.md, \"Upgrade\"",
                legacy.display(),
                path.display(),
                path.display()
            ));
        }
        if !store.import_confirmed() {
            store
                .confirm_import()
                .map_err(|e| format!("cannot record the import in {}: {e}", path.display()))?;
        }
        // The side files first: the main file is the sign of an import
        // not yet cleaned up.
        for suffix in ["-wal", "-shm", "-journal", ""] {
            let mut name = legacy.as_os_str().to_owned();
            name.push(suffix);
            match std::fs::remove_file(PathBuf::from(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot remove {}: {e}", legacy.display())),
            }
        }
        if let Ok(dir) = std::fs::File::open(home) {
            let _ = dir.sync_all();
        }
        store
            .finish_import()
            .map_err(|e| format!("cannot record the import in {}: {e}", path.display()))?;
        eprintln!(
            "cwtch server: the blobs are in {} now; {} is removed",
            path.display(),
            legacy.display()
        );
    }
    Ok(store)
}

/// Prints the server's paste-able string and what it stores (read-only; the
/// server may be running). The running server's numbers: `server stats`.
pub fn info(home: &Path, json: bool) -> Result<(), String> {
    let identity = load_identity(home)?;
    let config = load_config(home)?;
    let path = home.join(BLOBS_DIR);
    let legacy = home.join(LEGACY_BLOBS_FILE);
    // Stored blobs are always the contiguous range oldest..=head.
    let count = |head: u64, oldest: Option<u64>| oldest.map_or(0, |o| head.saturating_sub(o) + 1);
    let (blobs, head) = if path.exists() {
        let reader = BlobReader::open(&path).map_err(|e| e.to_string())?;
        let head = reader.head().map_err(|e| e.to_string())?;
        (
            count(head, reader.oldest().map_err(|e| e.to_string())?),
            head,
        )
    } else if legacy.exists() {
        let store = SqliteStore::open_read_only(&legacy).map_err(|e| e.to_string())?;
        (count(store.head(), store.oldest()), store.head())
    } else {
        (0, 0)
    };
    let bytes = blobs.saturating_mul(SEALED_BLOB_LEN as u64);
    if json {
        say!(
            "{}",
            serde_json::json!({
                "address": identity.address().to_string(),
                "server": paste_string(&identity, &config),
                "config": config,
                "stats": {"blobs": blobs, "bytes": bytes, "head": head},
                "advert": advert_json(&identity, &config),
            })
        );
    } else {
        say!("{}", paste_string(&identity, &config));
        say!("stored: {blobs} blobs, {bytes} bytes, last index {head}");
        let advert = advert_json(&identity, &config);
        say!(
            "advert (signed, valid 7 days, served to clients that ask): {}",
            advert["hex"].as_str().unwrap_or("unavailable")
        );
    }
    Ok(())
}

/// `server config`: the configuration the running server uses (asked over
/// its admin socket), else the one in `server.toml`.
pub fn print_config(home: &Path, json: bool) -> Result<(), String> {
    let (config, from) = match admin::request(home, admin::Command::Config) {
        Ok(value) => (
            serde_json::from_value::<Config>(value)
                .map_err(|e| format!("bad answer from the server: {e}"))?,
            "the running server",
        ),
        Err(admin::AdminError::NotRunning(_)) => {
            let (config, source) = config::load(home).map_err(|e| e.to_string())?;
            let from = match source {
                config::Source::File => "server.toml (the server is not running)",
                config::Source::Legacy => {
                    "policy.json, converted (the server is not running; its next start writes server.toml)"
                }
                config::Source::Defaults => "the defaults (there is no server.toml)",
            };
            (config, from)
        }
        Err(e) => return Err(e.to_string()),
    };
    if json {
        say!(
            "{}",
            serde_json::to_value(&config).map_err(|e| e.to_string())?
        );
    } else {
        say!("# The effective configuration, from {from}.");
        say!("{}", config.render(false).trim_end());
    }
    Ok(())
}

/// `server stats`: the running server's numbers.
pub fn print_stats(home: &Path, json: bool) -> Result<(), String> {
    let value = admin::request(home, admin::Command::Stats).map_err(|e| e.to_string())?;
    if json {
        say!("{value}");
        return Ok(());
    }
    let report: stats::Report = match serde_json::from_value(value.clone()) {
        Ok(r) => r,
        Err(_) => {
            say!("{value}");
            return Ok(());
        }
    };
    say!("{}", report.human());
    Ok(())
}

/// What sessions start from and what the advert states; replaced as a whole
/// on reload.
#[derive(Clone, Debug)]
struct Settings {
    config: Config,
    /// Sessions start from this, with the proof of work of the moment.
    session: ServerConfig,
}

impl Settings {
    fn new(config: Config) -> Settings {
        Settings {
            session: session_config(&config),
            config,
        }
    }

    fn advert_terms(&self) -> (Requirements, Retention) {
        requirements_and_retention(&self.session, &self.config)
    }
}

/// What every connection of a server shares.
pub struct Shared {
    committer: GroupCommitter,
    /// Reads of older blobs, off the executor (recent ones come from the
    /// committer's memory).
    reads: ReadThread,
    settings: RwLock<Settings>,
    identity: Identity,
    /// The current signed advert and when it was issued (Unix seconds).
    advert: Mutex<(u64, [u8; ADVERT_LEN])>,
    connections: AtomicUsize,
    served: AtomicU64,
    counters: Counters,
    window: Mutex<Window>,
    /// The proof of work new connections are asked now.
    pow_now: AtomicU8,
    started: std::time::Instant,
    shutdown: Shutdown,
    /// Connection tasks running (handshakes included), for the graceful stop.
    tasks: AtomicUsize,
    tasks_done: Event,
    faults: Faults,
    /// Inbound connections in their handshake (bounded; the oldest is
    /// evicted by a new one when full).
    slots: Arc<crate::limits::HandshakeSlots>,
    /// The handshake deadline of inbound connections, seconds (0: the
    /// protocol's default).
    handshake_secs: AtomicU64,
}

/// Misbehaviour on purpose, for tests of what members do about a server
/// that cheats. The daemon never sets any; only code that embeds the
/// server (tests) can.
#[derive(Clone, Default)]
pub struct Faults {
    /// Blobs (by index) never given to any reader: stored and acknowledged
    /// to the poster, then withheld.
    pub withhold: Option<Arc<dyn Fn(u64) -> bool + Send + Sync>>,
}

/// The session's view of the store. Appends go to the group committer,
/// which gives each its index at once (the session acknowledges it once
/// the durable head reaches it). Reads never wait on the executor: the
/// last blobs committed are in the committer's memory, older ones are read
/// ahead on the read thread ([`ReadAhead`]); a blob in neither is
/// answered [`StoreError::WouldBlock`] and fetched meanwhile.
struct SessionStoreHandle<'a> {
    shared: &'a Shared,
    ahead: &'a ReadAhead,
    /// The session's durable head.
    durable: u64,
}

impl SessionStoreHandle<'_> {
    /// The first stored blob after `after`, whatever the faults.
    fn find(&self, after: u64, out: &mut [u8; SEALED_BLOB_LEN]) -> Result<Option<u64>, StoreError> {
        if let Some(found) = self.shared.committer.read_recent(after, out) {
            return Ok(found);
        }
        self.ahead.find(after, self.durable, out)
    }
}

impl SessionStore for SessionStoreHandle<'_> {
    fn append(&mut self, blob: &[u8; SEALED_BLOB_LEN]) -> Result<u64, StoreError> {
        let index = self
            .shared
            .committer
            .try_append(blob)
            .map_err(|e| match e {
                crate::blob_store::Error::QueueFull => StoreError::Full,
                _ => StoreError::Unavailable,
            })?;
        self.shared.counters.stored.fetch_add(1, Ordering::Relaxed);
        // The load that raises proof of work: posts taken, never requests
        // refused (a malformed or rate-limited post costs the sender
        // nothing, and must not raise the price for everyone else).
        self.shared.counters.posts.fetch_add(1, Ordering::Relaxed);
        Ok(index)
    }

    fn read_after(
        &self,
        after: u64,
        out: &mut [u8; SEALED_BLOB_LEN],
    ) -> Result<Option<u64>, StoreError> {
        let withhold = self.shared.faults.withhold.as_deref();
        let mut after = after;
        loop {
            match self.find(after, out)? {
                Some(index) if withhold.is_some_and(|w| w(index)) => after = index,
                found => return Ok(found),
            }
        }
    }

    fn durable_head(&self) -> u64 {
        self.shared.committer.head()
    }

    fn advert(&self) -> Option<[u8; ADVERT_LEN]> {
        self.shared.current_advert()
    }
}

/// How many blobs one read on the read thread brings.
const READ_RUN: usize = 16;

/// Blobs one connection read ahead on the read thread: every blob stored
/// after `after`, up to [`READ_RUN`] of them, when they were read.
#[derive(Default)]
struct ReadAhead {
    after: u64,
    run: VecDeque<(u64, Box<[u8; SEALED_BLOB_LEN]>)>,
    /// The committer's head when the run was asked for: a run shorter than
    /// [`READ_RUN`] holds every blob up to it.
    head: u64,
    /// The read failed: the next read answers `Unavailable`.
    failed: bool,
    /// Whether `run` holds a finished read (not let go since).
    at_hand: bool,
    /// The cursor of the read the session is waiting for.
    wanted: Cell<Option<u64>>,
    /// The read in flight, and its cursor and head.
    pending: Option<(RunRead, u64, u64)>,
}

/// A read of a run on the read thread.
type RunRead = Pin<Box<dyn Future<Output = crate::blob_store::Result<Run>> + Send>>;

impl ReadAhead {
    /// The first stored blob after `after` from the run, if the run can
    /// tell (a session whose durable head is `durable`); else the read is
    /// wanted.
    fn find(
        &self,
        after: u64,
        durable: u64,
        out: &mut [u8; SEALED_BLOB_LEN],
    ) -> Result<Option<u64>, StoreError> {
        if self.failed {
            return Err(StoreError::Unavailable);
        }
        if self.at_hand && after >= self.after && self.pending.is_none() {
            let at = self.run.partition_point(|(index, _)| *index <= after);
            if let Some((index, blob)) = self.run.get(at) {
                out.copy_from_slice(&blob[..]);
                return Ok(Some(*index));
            }
            // Nothing after it in a short run: nothing up to the head it was
            // read at, which is all the session may see.
            if self.run.len() < READ_RUN && durable <= self.head {
                return Ok(None);
            }
        }
        self.wanted.set(Some(after));
        Err(StoreError::WouldBlock)
    }

    /// Starts the read the session wants, if any and none is in flight;
    /// returns whether one is (or was already) in flight.
    fn start(&mut self, shared: &Shared) -> bool {
        if self.pending.is_some() {
            return true;
        }
        match self.wanted.take() {
            Some(after) => {
                let head = shared.committer.head();
                let read = Box::pin(shared.reads.read_after(after, READ_RUN));
                self.pending = Some((read, after, head));
                true
            }
            None => false,
        }
    }

    /// Polls the read in flight; `Ready` once its blobs are at hand.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some((read, after, head)) = self.pending.as_mut() else {
            return Poll::Pending;
        };
        let Poll::Ready(result) = read.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        let (after, head) = (*after, *head);
        self.pending = None;
        match result {
            Ok(run) => {
                self.run = run.into();
                self.after = after;
                self.head = head;
                self.failed = false;
                self.at_hand = true;
            }
            Err(_) => {
                self.run.clear();
                self.at_hand = false;
                self.failed = true;
            }
        }
        Poll::Ready(())
    }

    /// The session has nothing to read now: the run is let go (it is read
    /// again if needed), so that an idle connection holds no blob.
    fn release(&mut self) {
        if self.pending.is_none() {
            self.run = VecDeque::new();
            self.at_hand = false;
            self.failed = false;
        }
    }
}

/// Opens the store and starts the group committer, for code that serves
/// clients itself ([`serve_client`]): sessions get `config` (its
/// `pow_bits` on every connection) and the store keeps `retention`.
pub fn open_shared(
    home: &Path,
    identity: Identity,
    config: ServerConfig,
    retention: RetentionPolicy,
) -> Result<Arc<Shared>, String> {
    let limit = |v: Option<u64>| v.map_or(Limit::Unbounded, |n| Limit::At(n.max(1)));
    let c = Config {
        proof_of_work: PowConfig::fixed(u64::from(config.pow_bits).min(config::MAX_POW_BITS))?,
        rate_limit: config::RateLimitConfig {
            enabled: config.rate_interval != cwtch_proto::Duration::ZERO,
            burst: Ranged::new(u64::from(config.rate_burst.max(1)))?,
            interval_ms: Ranged::new(config.rate_interval.as_millis().clamp(1, 3_600_000))?,
        },
        retention: config::RetentionConfig {
            max_blobs: limit(retention.max_blobs),
            max_mib: limit(retention.max_bytes.map(|b| b.div_ceil(1024 * 1024))),
            max_age_days: limit(retention.max_age.map(|d| d.as_secs().div_ceil(86_400))),
        },
        ..Config::default()
    };
    let mut settings = Settings::new(c);
    settings.session = config;
    open(
        home,
        identity,
        settings,
        retention,
        Faults::default(),
        Shutdown::new(),
    )
}

/// Opens the store for a server with this configuration, misbehaving as
/// `faults` says (tests only; the daemon passes none), stopping on
/// `shutdown`.
pub fn open_shared_with(
    home: &Path,
    identity: Identity,
    config: Config,
    faults: Faults,
    shutdown: Shutdown,
) -> Result<Arc<Shared>, String> {
    let retention = retention(&config);
    open(
        home,
        identity,
        Settings::new(config),
        retention,
        faults,
        shutdown,
    )
}

fn open(
    home: &Path,
    identity: Identity,
    settings: Settings,
    retention: RetentionPolicy,
    faults: Faults,
    shutdown: Shutdown,
) -> Result<Arc<Shared>, String> {
    let now = clock::unix_millis() / 1000;
    let (requirements, terms) = settings.advert_terms();
    let advert = advert_of(&identity, requirements, terms, now)
        .sign(&identity)
        .map_err(|e| e.to_string())?;
    let store = open_blob_store(home, retention)?;
    let reads = ReadThread::start(store.reader()).map_err(|e| e.to_string())?;
    let committer = GroupCommitter::start(store).map_err(|e| e.to_string())?;
    // Posts are acknowledged by the durable head alone: if the store
    // fails, stop rather than leave clients waiting (a supervisor restarts
    // the server, which recovers from its write-ahead log).
    let stopped = committer.stopped();
    smol::spawn(async move {
        if stopped.await {
            eprintln!("cwtch server: the blob store failed; stopping");
            std::process::exit(74);
        }
    })
    .detach();
    let pow_now = settings.config.proof_of_work.level(0, 0);
    Ok(Arc::new(Shared {
        committer,
        reads,
        settings: RwLock::new(settings),
        identity,
        advert: Mutex::new((now, advert)),
        connections: AtomicUsize::new(0),
        served: AtomicU64::new(0),
        counters: Counters::default(),
        window: Mutex::new(Window::default()),
        pow_now: AtomicU8::new(pow_now),
        started: std::time::Instant::now(),
        shutdown,
        tasks: AtomicUsize::new(0),
        tasks_done: Event::new(),
        faults,
        slots: crate::limits::HandshakeSlots::new(crate::limits::MAX_SERVER_HANDSHAKES),
        handshake_secs: AtomicU64::new(0),
    }))
}

impl Shared {
    fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> Config {
        self.settings().config
    }

    /// How many authenticated clients the server serves at once.
    fn max_clients(&self) -> usize {
        let settings = self.settings.read().unwrap_or_else(|e| e.into_inner());
        usize::try_from(settings.config.connections.max_clients.get())
            .unwrap_or(MAX_CONNECTIONS)
            .min(MAX_CONNECTIONS)
    }

    /// The settings of a new connection's session: the proof of work of
    /// the moment.
    fn session_config_now(&self) -> ServerConfig {
        let settings = self.settings.read().unwrap_or_else(|e| e.into_inner());
        ServerConfig {
            pow_bits: self.pow_now.load(Ordering::Relaxed),
            ..settings.session
        }
    }

    /// The proof of work new connections are asked now, in bits.
    pub fn pow_bits_now(&self) -> u8 {
        self.pow_now.load(Ordering::Relaxed)
    }

    /// The server's advert, signed again when the current one is a day old.
    pub fn current_advert(&self) -> Option<[u8; ADVERT_LEN]> {
        let now = clock::unix_millis() / 1000;
        let mut advert = self.advert.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_sub(advert.0) >= ADVERT_REFRESH_SECS || now < advert.0 {
            let (requirements, retention) = self.settings().advert_terms();
            let signed = advert_of(&self.identity, requirements, retention, now)
                .sign(&self.identity)
                .ok()?;
            *advert = (now, signed);
        }
        Some(advert.1)
    }

    /// Records the counters into the load window and sets the proof of
    /// work of new connections from it. The daemon calls it every second.
    pub fn sample(&self) {
        let pow = self.settings().config.proof_of_work;
        let latency = self.committer.take_latency();
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        window.sample(
            &self.counters,
            latency,
            std::time::Instant::now(),
            StdDuration::from_secs(pow.window_secs.get()),
        );
        let load = window.load();
        drop(window);
        // Whole seconds (at least one, so a first sample is not a spike).
        let secs = load.window_secs.round() as u64;
        let level = pow.level(load.posts, secs);
        let before = self.pow_now.swap(level, Ordering::Relaxed);
        if before != level {
            tracing::info!(
                posts_per_sec = load.posts_per_sec,
                "proof of work for new connections: {before} -> {level} bits"
            );
        }
    }

    /// Everything `server stats` reports.
    pub async fn report(&self) -> Report {
        let s = self.committer.stats().await.unwrap_or_default();
        let load = self.window.lock().unwrap_or_else(|e| e.into_inner()).load();
        let latency = self.committer.latency();
        let now = crate::blob_store::unix_now();
        let c = &self.counters;
        Report {
            blobs: s.blobs,
            bytes: s.bytes,
            head: s.head,
            oldest_index: s.oldest,
            oldest_age_secs: s.oldest_received_at.map(|at| now.saturating_sub(at)),
            connections: self.connections.load(Ordering::Relaxed),
            served: self.served.load(Ordering::Relaxed),
            uptime_secs: self.started.elapsed().as_secs(),
            pow_bits_now: self.pow_bits_now(),
            pow_bits_max: u8::try_from(self.config().proof_of_work.max_bits.get()).unwrap_or(0),
            load,
            posts_total: c.posts.load(Ordering::Relaxed),
            stored_total: c.stored.load(Ordering::Relaxed),
            fetches_total: c.fetches.load(Ordering::Relaxed),
            commits_total: latency.commits,
            fsync_seconds_total: latency.sync_total.as_secs_f64(),
            commit_seconds_total: latency.post_total.as_secs_f64(),
            queued: self.committer.queued(),
            refusals: Report::refusals_of(c),
        }
    }

    /// Runs with `config` from now on: new connections get its limits and
    /// proof of work, the store its retention (pruned at once), and a
    /// change in what the advert states signs a new one at once. Returns
    /// what changed, in words.
    pub async fn apply(&self, config: Config) -> Result<Vec<String>, String> {
        let old = self.settings();
        if old.config == config {
            return Ok(Vec::new());
        }
        let mut changes = Vec::new();
        if old.config.retention != config.retention {
            let pruned = self
                .committer
                .set_retention(retention(&config))
                .await
                .map_err(|e| format!("cannot apply the retention: {e}"))?;
            changes.push(format!("retention (pruned {} blobs)", pruned.removed));
        }
        let new = Settings::new(config);
        let terms_changed = old.advert_terms() != new.advert_terms();
        if old.config.logging != new.config.logging {
            crate::logging::set_configured_level(new.config.logging.level.as_str());
            changes.push(format!("log level {}", new.config.logging.level.as_str()));
        }
        if old.config.statistics.metrics != new.config.statistics.metrics {
            changes.push("metrics address (takes effect at the next start)".into());
        }
        let pow = new.config.proof_of_work;
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = new;
        if old.config.proof_of_work != pow {
            let load = self.window.lock().unwrap_or_else(|e| e.into_inner()).load();
            self.pow_now.store(
                pow.level(load.posts, load.window_secs.round() as u64),
                Ordering::Relaxed,
            );
            changes.push("proof of work".into());
        }
        if terms_changed {
            let now = clock::unix_millis() / 1000;
            let (requirements, retention) = self.settings().advert_terms();
            let signed = advert_of(&self.identity, requirements, retention, now)
                .sign(&self.identity)
                .map_err(|e| e.to_string())?;
            *self.advert.lock().unwrap_or_else(|e| e.into_inner()) = (now, signed);
            changes.push("a new signed advert".into());
        }
        if changes.is_empty() {
            changes.push("limits of new connections".into());
        }
        Ok(changes)
    }
}

/// Reads `server.toml` again and applies it; a bad file changes nothing
/// (the error names its line and the reason).
pub async fn reload(shared: &Shared, home: &Path) -> Result<Vec<String>, String> {
    let config = match config::Config::read(home).map_err(|e| e.to_string())? {
        Some(c) => c,
        None => {
            return Err(format!(
                "{} is missing",
                home.join(config::CONFIG_FILE).display()
            ));
        }
    };
    shared.apply(config).await
}

/// How a daemon is run.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Misbehaviour on purpose (tests only).
    pub faults: Faults,
    /// Stops the server gracefully when raised.
    pub shutdown: Shutdown,
    /// Reads `server.toml` again when requested.
    pub reload: Reload,
    /// Serve the metrics here (overrides the configuration's).
    pub metrics: Option<MetricsAddr>,
    /// The handshake deadline of inbound connections, seconds (0: the
    /// protocol's default, 60 s).
    pub handshake_timeout: u64,
}

/// Runs the server until the process ends.
pub async fn run(home: &Path, transport: impl Into<NodeTransport>) -> Result<(), String> {
    run_with(home, transport, Faults::default()).await
}

/// [`run`], misbehaving as `faults` says: for tests of members facing a
/// cheating server.
pub async fn run_with(
    home: &Path,
    transport: impl Into<NodeTransport>,
    faults: Faults,
) -> Result<(), String> {
    run_until(
        home,
        transport,
        RunOptions {
            faults,
            ..RunOptions::default()
        },
    )
    .await
}

/// Decrements the running-task count when a connection task ends.
struct TaskGuard(Arc<Shared>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.tasks_done.notify(usize::MAX);
        }
    }
}

/// Runs the server until `options.shutdown` is raised, then stops
/// gracefully and returns `Ok`.
pub async fn run_until(
    home: &Path,
    transport: impl Into<NodeTransport>,
    options: RunOptions,
) -> Result<(), String> {
    let transport = transport.into();
    let identity = load_identity(home)?;
    let (config, note) = config::load_or_migrate(home).map_err(|e| e.to_string())?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    crate::logging::set_configured_level(config.logging.level.as_str());
    if config.proof_of_work.max_bits.get() > 20 {
        tracing::warn!(
            "proof_of_work.max_bits is {}: clients pay up to 20 bits by default and refuse more",
            config.proof_of_work.max_bits.get()
        );
    }
    let metrics_addr = options
        .metrics
        .clone()
        .or_else(|| config.statistics.metrics.clone());
    let shared = open_shared_with(
        home,
        identity.clone(),
        config.clone(),
        options.faults.clone(),
        options.shutdown.clone(),
    )?;
    shared
        .handshake_secs
        .store(options.handshake_timeout, Ordering::Relaxed);
    let admin_socket = admin::bind(home).map_err(|e| {
        format!(
            "cannot create the admin socket {}: {e}",
            admin::socket_path(home).display()
        )
    })?;
    let mut background = vec![smol::spawn(admin::serve(admin_socket, shared.clone()))];
    if let Some(addr) = &metrics_addr {
        let listener = admin::bind_metrics(addr)
            .await
            .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
        eprintln!("metrics (Prometheus text format) on {addr}");
        background.push(smol::spawn(admin::serve_metrics(listener, shared.clone())));
    }
    let mut listener = transport
        .listen(&identity, PEER_PORT)
        .await
        .map_err(|e| format!("cannot publish the server's onion service: {e}"))?;
    if listener
        .wait_published(std::time::Duration::from_secs(120))
        .await
        .is_err()
    {
        eprintln!("warning: tor has not confirmed the onion service yet");
    }
    println!(
        "cwtch server {} is online",
        paste_string(&identity, &config)
    );
    background.push(smol::spawn(keep_sampling(shared.clone())));
    {
        let (shared, home, mut reload) = (shared.clone(), home.to_path_buf(), options.reload);
        background.push(smol::spawn(async move {
            loop {
                reload.next().await;
                match self::reload(&shared, &home).await {
                    Ok(changes) if changes.is_empty() => {
                        tracing::warn!("reloaded {}: nothing changed", config::CONFIG_FILE)
                    }
                    Ok(changes) => {
                        tracing::warn!("reloaded {}: {}", config::CONFIG_FILE, changes.join(", "))
                    }
                    Err(e) => tracing::error!(
                        "the new configuration is refused, the server keeps its own: {e}"
                    ),
                }
            }
        }));
    }
    let shutdown = options.shutdown;
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                shutdown.wait().await;
                None
            })
            .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                // Out of file descriptors under a flood, for instance: keep
                // serving the connections we have.
                tracing::warn!("accept failed: {e}");
                smol::Timer::after(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Full: refuse at once, before any handshake work. Connections in
        // their handshake do not count here (the handshake slots bound
        // them), so a slowloris flood cannot lock honest clients out.
        if shared.connections.load(Ordering::Relaxed) >= shared.max_clients() {
            crate::limits::log_drop(crate::limits::DropReason::TooManyConnections);
            shared.counters.refused(stats::TOO_MANY_CONNECTIONS);
            drop(stream);
            continue;
        }
        let shared = shared.clone();
        let slot = shared.slots.admit();
        shared.tasks.fetch_add(1, Ordering::AcqRel);
        smol::spawn(async move {
            let guard = TaskGuard(shared);
            let shared = &guard.0;
            shared.served.fetch_add(1, Ordering::Relaxed);
            let serve = serve_client_in_slot(shared, stream, Some(&slot))
                .or(async { slot.evicted().await });
            // A client that does not read cannot hold the stop up.
            serve
                .or(async {
                    shared.shutdown.wait().await;
                    smol::Timer::after(SHUTDOWN_GRACE).await;
                })
                .await;
        })
        .detach();
        // Let the connections this one evicted close before the next
        // accept: a burst of accepts must not starve them.
        smol::future::yield_now().await;
    }
    stop(&shared, home, listener, background).await
}

/// The graceful stop, once accepting has stopped.
async fn stop(
    shared: &Arc<Shared>,
    home: &Path,
    listener: Listener,
    background: Vec<smol::Task<()>>,
) -> Result<(), String> {
    let clients = shared.tasks.load(Ordering::Acquire);
    eprintln!("stopping: no new connections; telling {clients} connected clients");
    let all_closed = async {
        loop {
            let listener = shared.tasks_done.listen();
            if shared.tasks.load(Ordering::Acquire) == 0 {
                break;
            }
            listener.await;
        }
    };
    all_closed
        .or(async {
            smol::Timer::after(SHUTDOWN_GRACE + StdDuration::from_secs(1)).await;
        })
        .await;
    // Everything the connections handed to the store is committed (and so
    // was acknowledged, or will be found by its poster's next sync).
    let flushed = shared.committer.flush().await;
    drop(background);
    admin::remove_socket(home);
    let closed = listener.close().await;
    let head = shared.committer.head();
    match (&flushed, &closed) {
        (Ok(()), Ok(())) => {
            eprintln!(
                "stopped: every accepted post is on disk (last index {head}); onion service removed"
            );
            Ok(())
        }
        (Err(e), _) => Err(format!("the blob store failed while stopping: {e}")),
        (Ok(()), Err(e)) => {
            // Tor removes the service anyway when our control connection
            // closes, which it does as we exit.
            eprintln!(
                "stopped: every accepted post is on disk (last index {head}); DEL_ONION failed ({e})"
            );
            Ok(())
        }
    }
}

/// Samples the load every second and logs the statistics line every
/// `statistics.log_interval_secs`.
async fn keep_sampling(shared: Arc<Shared>) {
    let mut since_log = 0u64;
    loop {
        smol::Timer::after(StdDuration::from_secs(1)).await;
        shared.sample();
        since_log += 1;
        let every = shared.config().statistics.log_interval_secs.get();
        if every > 0 && since_log >= every {
            since_log = 0;
            let report = shared.report().await;
            tracing::info!(target: crate::logging::STATS_TARGET, "{}", report.log_line());
        }
    }
}

/// An authenticated client's place among the `--max-connections` the
/// server serves; given back when dropped.
struct ClientPermit<'a>(&'a Shared);

impl<'a> ClientPermit<'a> {
    /// A place, or None when the server already serves its maximum.
    fn take(shared: &'a Shared) -> Option<Self> {
        let max = shared.max_clients();
        shared
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ClientPermit(shared))
    }
}

impl Drop for ClientPermit<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts what a client asks.
fn count_request(counters: &Counters, request: &[u8]) {
    // Posts are counted once taken (`SessionStore::append`).
    if request.first() == Some(&TAG_FETCH) {
        counters.fetches.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a refusal the server sends.
fn count_reply(counters: &Counters, reply: &[u8]) {
    if reply.first() == Some(&TAG_REFUSED)
        && let Ok(Reply::Refused(refusal)) = Reply::decode(reply)
    {
        counters.refused(stats::refusal_index(refusal.reason));
    }
}

/// How long a stopping server waits for a client to close after its
/// closing notice.
const LINGER: StdDuration = StdDuration::from_secs(2);
/// How long a stopping server waits for a client's posts to become
/// durable and be acknowledged before it says goodbye.
const DRAIN: cwtch_proto::Duration = cwtch_proto::Duration::from_secs(5);

/// One anonymous client: the channel, then the server session over it.
/// Reads from the socket only while the session wants a request (so a
/// flooding client is slowed by TCP, not buffered), and pulls replies from
/// the session only while the channel can take them. Once authenticated,
/// the client counts against `--max-connections` (closed at once when the
/// server already serves that many), like the daemon's own clients.
pub async fn serve_client(shared: &Shared, stream: impl Into<Stream>) {
    serve_client_in_slot(shared, stream.into(), None).await
}

/// [`serve_client`], releasing a handshake slot once the client is
/// authenticated.
///
/// When the server stops, the connection stops taking requests, sends
/// the acknowledgements of the posts it took as they become durable, then
/// `Closing(shutdown)`, and closes the channel (bounded by
/// [`SHUTDOWN_GRACE`]).
async fn serve_client_in_slot(shared: &Shared, stream: Stream, slot: Option<&crate::limits::Slot>) {
    let conn = Connection::responder(
        crate::limits::responder_config(shared.handshake_secs.load(Ordering::Relaxed)),
        shared.identity.clone(),
        &mut clock::rng(),
        clock::now(),
    );
    let mut client = Client::new(shared, slot);
    conn::drive(stream, conn, Commands::none(), &mut client).await;
}

/// The server's side of one client, on the connection driver
/// ([`conn::drive`]): the session, its permit, and what it waits for (the
/// durable head, the stop, its reads).
struct Client<'a> {
    shared: &'a Shared,
    /// Released once the client is authenticated.
    slot: Option<&'a crate::limits::Slot>,
    session: Option<ServerSession>,
    /// Held while the client is served; counts it against --max-connections.
    _permit: Option<ClientPermit<'a>>,
    /// The reply being sent.
    msg: Vec<u8>,
    watch: HeadWatch,
    /// The committer stopped: the head will not move again.
    watch_done: bool,
    stop: Option<EventListener>,
    ahead: ReadAhead,
    /// Set once the server stops: when the acknowledgements are out (or
    /// this deadline passes) the session is closed.
    draining: Option<cwtch_proto::Instant>,
    /// The session was asked to close.
    closing: bool,
    /// The session sent its closing notice: close the channel.
    close: bool,
    /// Drop the connection without a word (the server is full).
    abort: bool,
}

impl<'a> Client<'a> {
    fn new(shared: &'a Shared, slot: Option<&'a crate::limits::Slot>) -> Self {
        Client {
            shared,
            slot,
            session: None,
            _permit: None,
            msg: Vec::new(),
            watch: shared.committer.watch_head(),
            watch_done: false,
            stop: None,
            ahead: ReadAhead::default(),
            draining: None,
            closing: false,
            close: false,
            abort: false,
        }
    }

    /// Stopping: once every post this client handed us is acknowledged
    /// (or the grace is over), say goodbye.
    fn drain(&mut self, now: cwtch_proto::Instant) {
        if let (Some(deadline), Some(s)) = (self.draining, self.session.as_mut())
            && !self.closing
            && (s.queued_items() == 0 || now >= deadline)
        {
            self.closing = true;
            s.close();
        }
    }
}

impl LinkHandler for Client<'_> {
    /// A client's requests are small: a post is 2,057 bytes.
    const READ_BUFFER: usize = 4096;

    fn established(&mut self, _remote: PublicIdentity, _out: &mut Outbox) {
        // Every client is anonymous: any key was accepted.
        if let Some(slot) = self.slot.take() {
            slot.release();
        }
        let Some(permit) = ClientPermit::take(self.shared) else {
            crate::limits::log_drop(crate::limits::DropReason::TooManyConnections);
            self.shared.counters.refused(stats::TOO_MANY_CONNECTIONS);
            self.abort = true;
            return;
        };
        self._permit = Some(permit);
        let store = SessionStoreHandle {
            shared: self.shared,
            ahead: &self.ahead,
            durable: 0,
        };
        self.session = Some(ServerSession::new(
            self.shared.session_config_now(),
            &store,
            &mut clock::rng(),
            clock::now(),
        ));
        self.msg = vec![0u8; MAX_SERVER_MESSAGE_LEN];
    }

    fn message(&mut self, msg: &[u8], _out: &mut Outbox) {
        // A stopping server takes no new request.
        if self.draining.is_some() {
            return;
        }
        let Some(s) = self.session.as_mut() else {
            return;
        };
        count_request(&self.shared.counters, msg);
        let mut store = SessionStoreHandle {
            shared: self.shared,
            ahead: &self.ahead,
            durable: s.durable_head(),
        };
        if let Err(e) = s.handle_message(msg, clock::now(), &mut store) {
            tracing::debug!("request not handled: {e}");
        }
    }

    fn closed(&mut self, _reason: CloseReason) {
        if let Some(s) = self.session.as_mut() {
            s.close();
        }
    }

    fn wants_input(&self) -> bool {
        // While stopping, input is still read (the channel's close needs
        // it) but no request is taken.
        match &self.session {
            None => true,
            Some(s) => self.draining.is_some() || s.wants_request(),
        }
    }

    fn poll_transmit(&mut self, now: cwtch_proto::Instant) -> Option<&[u8]> {
        self.drain(now);
        let s = self.session.as_mut()?;
        s.handle_durable(self.shared.committer.head());
        let store = SessionStoreHandle {
            shared: self.shared,
            ahead: &self.ahead,
            durable: s.durable_head(),
        };
        let sent = match s.poll_transmit(&store, &mut self.msg) {
            Ok(sent) => sent,
            Err(e) => {
                tracing::debug!("no reply: {e}");
                None
            }
        };
        while let Some(event) = s.poll_event() {
            if let ServerEvent::Closed { .. } = event {
                self.close = true;
            }
        }
        match sent {
            Some(n) => {
                let reply = &self.msg[..n];
                count_reply(&self.shared.counters, reply);
                Some(reply)
            }
            None => {
                // Waiting for a read, or nothing to send: then the blobs
                // read ahead are let go.
                if !self.ahead.start(self.shared) {
                    self.ahead.release();
                }
                None
            }
        }
    }

    fn ending(&self) -> Option<Ending> {
        if self.abort || (self.draining.is_some() && self.session.is_none()) {
            // Full, or stopping while still in its handshake: nothing to
            // tell it.
            Some(Ending::Abort)
        } else if self.close {
            Some(Ending::Close)
        } else {
            None
        }
    }

    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut woke = false;
        // The durable head matters to a session with posts to acknowledge
        // or a subscription to push: an idle one is not woken by commits.
        let follows_head = self
            .session
            .as_ref()
            .is_some_and(|s| s.is_subscribed() || s.queued_items() > 0);
        if follows_head && !self.watch_done {
            match self.watch.poll_changed(cx) {
                Poll::Ready(Ok(_)) => woke = true,
                Poll::Ready(Err(_)) => self.watch_done = true,
                Poll::Pending => {}
            }
        }
        if self.draining.is_none()
            && self
                .shared
                .shutdown
                .poll_wait(&mut self.stop, cx)
                .is_ready()
        {
            let now = clock::now();
            self.draining = Some(now + DRAIN);
            self.drain(now);
            woke = true;
        }
        if self.ahead.poll(cx).is_ready() {
            woke = true;
        }
        if woke { Poll::Ready(()) } else { Poll::Pending }
    }

    fn poll_timeout(&self) -> Option<cwtch_proto::Instant> {
        [
            self.session.as_ref().and_then(|s| s.poll_timeout()),
            self.draining.filter(|_| !self.closing),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_timeout(&mut self, now: cwtch_proto::Instant, _out: &mut Outbox) {
        if let Some(s) = self.session.as_mut() {
            s.handle_timeout(now);
        }
        self.drain(now);
    }

    fn linger(&self) -> Option<StdDuration> {
        // After the closing notice of a stop, let the client read it.
        self.draining.map(|_| LINGER)
    }
}
