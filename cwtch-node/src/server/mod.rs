//! The server daemon: publishes its onion service, serves anonymous
//! clients, stores blobs durably.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cwtch_proto::Identity;
use cwtch_proto::channel::frame::FRAME_LEN;
use cwtch_proto::connection::{Connection, ConnectionEvent};
use cwtch_proto::group::SEALED_BLOB_LEN;
use cwtch_proto::server::advert::{ADVERT_LEN, Requirements, Retention, ServerAdvert};
use cwtch_proto::server::{
    BlobStore as SessionStore, ServerConfig, ServerEvent, ServerSession, StoreError,
};
use cwtch_transport_socks::{AnyTransport, PEER_PORT, Stream, Transport};
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use crate::blob_store::{BlobReader, BlobStore, GroupCommitter, HeadWatch, RetentionPolicy};
use crate::cli::ServerPolicyArgs;
use crate::clock;

/// The server's key file inside its home directory (mode 0600).
pub const KEY_FILE: &str = "server.key";

/// The policy file inside the server's home directory.
pub const POLICY_FILE: &str = "policy.json";

/// Loads the policy `server init` wrote (the defaults if there is none).
pub fn load_policy(home: &Path) -> Result<ServerPolicyArgs, String> {
    let text = match std::fs::read_to_string(home.join(POLICY_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ServerPolicyArgs::default());
        }
        Err(e) => return Err(format!("cannot read the server policy: {e}")),
    };
    serde_json::from_str(&text).map_err(|e| format!("the server policy is damaged: {e}"))
}

fn server_config(policy: &ServerPolicyArgs) -> ServerConfig {
    ServerConfig {
        pow_bits: policy.pow_bits.min(24),
        rate_burst: policy.rate_burst.max(1),
        rate_interval: cwtch_proto::Duration::from_millis(policy.rate_interval_ms),
        retention_max_entries: policy.max_blobs,
        retention_max_age_secs: policy.max_age_days.saturating_mul(86_400),
        ..ServerConfig::default()
    }
}

fn retention(policy: &ServerPolicyArgs) -> RetentionPolicy {
    let nonzero = |v: u64| (v > 0).then_some(v);
    RetentionPolicy {
        max_blobs: nonzero(policy.max_blobs),
        max_bytes: nonzero(policy.max_mib.saturating_mul(1024 * 1024)),
        max_age: nonzero(policy.max_age_days)
            .map(|d| std::time::Duration::from_secs(d.saturating_mul(86_400))),
    }
}

/// Creates a server identity and its policy in `home`.
pub fn init(home: &Path, policy: &ServerPolicyArgs, json: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    crate::home::create_private(home).map_err(|e| e.to_string())?;
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
    let text = serde_json::to_string_pretty(policy).map_err(|e| e.to_string())?;
    std::fs::write(home.join(POLICY_FILE), text)
        .map_err(|e| format!("cannot write the policy: {e}"))?;
    print_info(&identity, policy, json);
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
/// demands (`cwtch-server:<address>?pow=<bits>&retention=<blobs>,<days>`).
pub fn paste_string(identity: &Identity, policy: &ServerPolicyArgs) -> String {
    format!(
        "cwtch-server:{}?pow={}&keep={}blobs,{}days",
        identity.address(),
        policy.pow_bits,
        policy.max_blobs,
        policy.max_age_days
    )
}

/// How long a server's advert is valid (SPEC.md section 13).
pub const ADVERT_LIFETIME_SECS: u64 = cwtch_proto::server::advert::ADVERT_LIFETIME.as_secs();
/// A running server signs a fresh advert when its current one is older.
pub const ADVERT_REFRESH_SECS: u64 = cwtch_proto::server::advert::ADVERT_REFRESH.as_secs();

/// The advert of a server with this policy, issued at `now` (Unix seconds).
pub fn advert(identity: &Identity, policy: &ServerPolicyArgs, now: u64) -> ServerAdvert {
    ServerAdvert {
        server: identity.public(),
        issued_at: now,
        expires_at: now.saturating_add(ADVERT_LIFETIME_SECS),
        requirements: Requirements {
            pow_bits: policy.pow_bits.min(24),
            rate_burst: policy.rate_burst.max(1),
            rate_interval_ms: u32::try_from(policy.rate_interval_ms).unwrap_or(u32::MAX),
            max_connections: u32::try_from(policy.max_connections.min(MAX_CONNECTIONS))
                .unwrap_or(u32::MAX),
        },
        retention: Retention {
            max_entries: policy.max_blobs,
            max_bytes: policy.max_mib.saturating_mul(1024 * 1024),
            max_age_secs: policy.max_age_days.saturating_mul(86_400),
        },
    }
}

/// Signs the server's advert for `now` (Unix seconds).
pub fn signed_advert(
    identity: &Identity,
    policy: &ServerPolicyArgs,
    now: u64,
) -> Result<[u8; ADVERT_LEN], String> {
    advert(identity, policy, now)
        .sign(identity)
        .map_err(|e| e.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The advert as shown by `server info`.
fn advert_json(identity: &Identity, policy: &ServerPolicyArgs) -> serde_json::Value {
    let now = clock::unix_millis() / 1000;
    match signed_advert(identity, policy, now) {
        Ok(bytes) => serde_json::json!({
            "version": cwtch_proto::server::advert::ADVERT_VERSION,
            "issued_at": now,
            "expires_at": now.saturating_add(ADVERT_LIFETIME_SECS),
            "hex": hex(&bytes),
        }),
        Err(e) => serde_json::json!({"error": e}),
    }
}

fn print_info(identity: &Identity, policy: &ServerPolicyArgs, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "address": identity.address().to_string(),
                "server": paste_string(identity, policy),
                "policy": policy,
            })
        );
    } else {
        println!("{}", paste_string(identity, policy));
    }
}

/// Prints the server's paste-able string and what it stores (read-only; the
/// server may be running). Connection counts are in the running server's log.
pub fn info(home: &Path, json: bool) -> Result<(), String> {
    let identity = load_identity(home)?;
    let policy = load_policy(home)?;
    let path = home.join(BLOBS_FILE);
    let (blobs, head) = if path.exists() {
        let reader = BlobReader::open(&path).map_err(|e| e.to_string())?;
        let head = reader.head().map_err(|e| e.to_string())?;
        // Stored blobs are always the contiguous range oldest..=head.
        let blobs = match reader.oldest().map_err(|e| e.to_string())? {
            Some(oldest) => head.saturating_sub(oldest) + 1,
            None => 0,
        };
        (blobs, head)
    } else {
        (0, 0)
    };
    let bytes = blobs * SEALED_BLOB_LEN as u64;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "address": identity.address().to_string(),
                "server": paste_string(&identity, &policy),
                "policy": policy,
                "stats": {"blobs": blobs, "bytes": bytes, "head": head},
                "advert": advert_json(&identity, &policy),
            })
        );
    } else {
        println!("{}", paste_string(&identity, &policy));
        println!("stored: {blobs} blobs, {bytes} bytes, last index {head}");
        let advert = advert_json(&identity, &policy);
        println!(
            "advert (signed, valid 7 days, served to clients that ask): {}",
            advert["hex"].as_str().unwrap_or("unavailable")
        );
    }
    Ok(())
}

/// The blob database inside the server's home directory.
pub const BLOBS_FILE: &str = "blobs.db";
/// The most clients served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 10_000;

/// What every connection of a server shares.
pub struct Shared {
    committer: GroupCommitter,
    reader: Mutex<BlobReader>,
    /// The index the next append gets; appends are serialized by this lock
    /// so that indices follow the commit order.
    next_index: Mutex<u64>,
    config: ServerConfig,
    identity: Identity,
    /// The policy the advert states.
    policy: crate::cli::ServerPolicyArgs,
    /// The current signed advert and when it was issued (Unix seconds).
    advert: Mutex<(u64, [u8; ADVERT_LEN])>,
    connections: AtomicUsize,
    served: AtomicU64,
    faults: Faults,
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

/// The session's view of the store: appends go to the group committer (the
/// session acknowledges only once they are durable), reads to a read-only
/// connection.
struct SessionStoreHandle<'a>(&'a Shared);

impl SessionStore for SessionStoreHandle<'_> {
    fn append(&mut self, blob: &[u8; SEALED_BLOB_LEN]) -> Result<u64, StoreError> {
        let mut next = self.0.next_index.lock().unwrap_or_else(|e| e.into_inner());
        let index = *next;
        let ack = self
            .0
            .committer
            .try_submit(Box::new(*blob))
            .map_err(|e| match e {
                crate::blob_store::Error::QueueFull => StoreError::Full,
                _ => StoreError::Unavailable,
            })?;
        *next += 1;
        smol::spawn(async move {
            match ack.await {
                Ok(committed) if committed == index => {}
                Ok(committed) => {
                    // Indices handed out would no longer match the store:
                    // stop rather than acknowledge the wrong thing.
                    eprintln!("cwtch server: index mismatch ({committed} != {index}); stopping");
                    std::process::exit(70);
                }
                Err(e) => {
                    eprintln!("cwtch server: the blob store failed: {e}; stopping");
                    std::process::exit(74);
                }
            }
        })
        .detach();
        Ok(index)
    }

    fn read_after(
        &self,
        after: u64,
        out: &mut [u8; SEALED_BLOB_LEN],
    ) -> Result<Option<u64>, StoreError> {
        let reader = self.0.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        let withhold = self.0.faults.withhold.as_deref();
        let mut after = after;
        loop {
            let mut skipped = None;
            reader
                .visit_after(after, 1, |index, blob| {
                    if withhold.is_some_and(|w| w(index)) {
                        skipped = Some(index);
                    } else {
                        out.copy_from_slice(blob);
                        found = Some(index);
                    }
                    ControlFlow::Break(())
                })
                .map_err(|_| StoreError::Unavailable)?;
            match skipped {
                Some(index) => after = index,
                None => break,
            }
        }
        Ok(found)
    }

    fn durable_head(&self) -> u64 {
        self.0.committer.head()
    }

    fn advert(&self) -> Option<[u8; ADVERT_LEN]> {
        self.0.current_advert()
    }
}

/// Statistics for `server info` and the logs.
#[derive(Debug, serde::Serialize)]
pub struct ServerStats {
    /// Blobs stored.
    pub blobs: u64,
    /// Bytes of blobs stored.
    pub bytes: u64,
    /// The last index.
    pub head: u64,
    /// Clients connected now.
    pub connections: usize,
    /// Connections served since start.
    pub served: u64,
}

/// Opens the store and starts the group committer.
pub fn open_shared(
    home: &Path,
    identity: Identity,
    config: ServerConfig,
    retention: RetentionPolicy,
) -> Result<Arc<Shared>, String> {
    open_shared_with(
        home,
        identity,
        config,
        retention,
        ServerPolicyArgs::default(),
        Faults::default(),
    )
}

/// [`open_shared`] with the policy the server's advert states, misbehaving
/// as `faults` says (tests only; the daemon passes none).
pub fn open_shared_with(
    home: &Path,
    identity: Identity,
    config: ServerConfig,
    retention: RetentionPolicy,
    policy: ServerPolicyArgs,
    faults: Faults,
) -> Result<Arc<Shared>, String> {
    let now = clock::unix_millis() / 1000;
    let advert = signed_advert(&identity, &policy, now)?;
    let path = home.join(BLOBS_FILE);
    let store = BlobStore::open(&path, retention)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let head = store.head();
    let committer = GroupCommitter::start(store).map_err(|e| e.to_string())?;
    let reader = BlobReader::open(&path).map_err(|e| e.to_string())?;
    Ok(Arc::new(Shared {
        committer,
        reader: Mutex::new(reader),
        next_index: Mutex::new(head + 1),
        config,
        identity,
        policy,
        advert: Mutex::new((now, advert)),
        connections: AtomicUsize::new(0),
        served: AtomicU64::new(0),
        faults,
    }))
}

impl Shared {
    /// How many authenticated clients the server serves at once.
    fn max_clients(&self) -> usize {
        self.policy.max_connections.min(MAX_CONNECTIONS)
    }

    /// The server's advert, signed again when the current one is a day old.
    pub fn current_advert(&self) -> Option<[u8; ADVERT_LEN]> {
        let now = clock::unix_millis() / 1000;
        let mut advert = self.advert.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_sub(advert.0) >= ADVERT_REFRESH_SECS || now < advert.0 {
            *advert = (now, signed_advert(&self.identity, &self.policy, now).ok()?);
        }
        Some(advert.1)
    }

    /// Current statistics.
    pub async fn stats(&self) -> ServerStats {
        let s = self.committer.stats().await.unwrap_or_default();
        ServerStats {
            blobs: s.blobs,
            bytes: s.bytes,
            head: s.head,
            connections: self.connections.load(Ordering::Relaxed),
            served: self.served.load(Ordering::Relaxed),
        }
    }
}

/// Runs the server until the process ends.
pub async fn run(home: &Path, transport: AnyTransport) -> Result<(), String> {
    run_with(home, transport, Faults::default()).await
}

/// [`run`], misbehaving as `faults` says: for tests of members facing a
/// cheating server.
pub async fn run_with(home: &Path, transport: AnyTransport, faults: Faults) -> Result<(), String> {
    let identity = load_identity(home)?;
    let policy = load_policy(home)?;
    let shared = open_shared_with(
        home,
        identity.clone(),
        server_config(&policy),
        retention(&policy),
        policy,
        faults,
    )?;
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
        paste_string(&identity, &policy)
    );
    let stats_shared = shared.clone();
    smol::spawn(async move {
        loop {
            smol::Timer::after(std::time::Duration::from_secs(30)).await;
            let s = stats_shared.stats().await;
            tracing::info!(
                blobs = s.blobs,
                bytes = s.bytes,
                connections = s.connections,
                "server stats"
            );
        }
    })
    .detach();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
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
            drop(stream);
            continue;
        }
        let shared = shared.clone();
        let slot = crate::limits::SERVER_HANDSHAKES.admit();
        smol::spawn(async move {
            shared.served.fetch_add(1, Ordering::Relaxed);
            smol::future::or(serve_client_in_slot(&shared, stream, Some(&slot)), async {
                slot.evicted().await
            })
            .await;
        })
        .detach();
        // Let the connections this one evicted close before the next
        // accept: a burst of accepts must not starve them.
        smol::future::yield_now().await;
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

enum Wake {
    Read(std::io::Result<usize>),
    Durable,
    Timer,
}

/// One anonymous client: the channel, then the server session over it.
/// Reads from the socket only while the session wants a request (so a
/// flooding client is slowed by TCP, not buffered), and pulls replies from
/// the session only while the channel can take them. Once authenticated,
/// the client counts against `--max-connections` (closed at once when the
/// server already serves that many), like the daemon's own clients.
pub async fn serve_client(shared: &Shared, stream: Stream) {
    serve_client_in_slot(shared, stream, None).await
}

/// [`serve_client`], releasing a handshake slot once the client is
/// authenticated.
async fn serve_client_in_slot(
    shared: &Shared,
    mut stream: Stream,
    slot: Option<&crate::limits::Slot>,
) {
    let now = clock::now();
    let mut rng = clock::rng();
    let mut conn = Connection::responder(
        crate::limits::responder_config(),
        shared.identity.clone(),
        &mut rng,
        now,
    );
    let mut session: Option<ServerSession> = None;
    // Held while the client is served; counts it against --max-connections.
    let mut _permit: Option<ClientPermit> = None;
    let mut watch: HeadWatch = shared.committer.watch_head();
    let mut pending: Option<Vec<u8>> = None;
    let mut inbuf: Vec<u8> = Vec::new();
    let mut readbuf = vec![0u8; 4096];
    let mut frame = [0u8; FRAME_LEN];
    let mut msg = vec![0u8; cwtch_proto::server::wire::MAX_SERVER_MESSAGE_LEN];
    let mut wire = Vec::new();
    loop {
        let now = clock::now();
        let mut closed = false;
        while pending.is_none() {
            match conn.poll_event() {
                Some(ConnectionEvent::IncomingPeer { .. }) => {
                    // Every client is anonymous: accept any key.
                    let _ = conn.accept(now);
                }
                Some(ConnectionEvent::Established { .. }) => {
                    if let Some(slot) = slot {
                        slot.release();
                    }
                    match ClientPermit::take(shared) {
                        Some(p) => _permit = Some(p),
                        None => {
                            crate::limits::log_drop(crate::limits::DropReason::TooManyConnections);
                            return;
                        }
                    }
                    let store = SessionStoreHandle(shared);
                    session = Some(ServerSession::new(shared.config, &store, &mut rng, now));
                }
                Some(ConnectionEvent::Message(m)) => pending = Some(m.to_vec()),
                Some(ConnectionEvent::Closed(_)) => {
                    closed = true;
                    break;
                }
                None => break,
            }
        }
        if closed {
            if let Some(s) = session.as_mut() {
                s.close();
            }
            return;
        }
        if let Some(s) = session.as_mut() {
            let mut store = SessionStoreHandle(shared);
            s.handle_durable(store.durable_head());
            // Feed the waiting request and pull replies until neither moves:
            // a finished page makes the session want the next request.
            loop {
                let mut progress = false;
                if let Some(req) = &pending
                    && s.wants_request()
                {
                    if let Err(e) = s.handle_message(req, now, &mut store) {
                        tracing::debug!("request not handled: {e}");
                    }
                    pending = None;
                    progress = true;
                }
                while conn.can_send() {
                    match s.poll_transmit(&store, &mut msg) {
                        Ok(Some(n)) => {
                            let _ = conn.send(&msg[..n]);
                            progress = true;
                        }
                        _ => break,
                    }
                    // Frames must leave before the next message fits.
                    while let Ok(Some(n)) = conn.poll_transmit(now, &mut frame) {
                        wire.extend_from_slice(&frame[..n]);
                    }
                }
                while let Some(event) = s.poll_event() {
                    if let ServerEvent::Closed { .. } = event {
                        conn.close();
                    }
                }
                if !progress {
                    break;
                }
            }
        }
        while let Ok(Some(n)) = conn.poll_transmit(now, &mut frame) {
            wire.extend_from_slice(&frame[..n]);
        }
        if !wire.is_empty() && stream.write_all(&wire).await.is_err() {
            conn.handle_eof();
            wire.clear();
            continue;
        }
        wire.clear();
        // Leftover input first, unless a request waits for the session.
        if pending.is_none() && !inbuf.is_empty() {
            match conn.handle_input(&inbuf, now) {
                Ok(consumed) if consumed > 0 => {
                    inbuf.drain(..consumed);
                    continue;
                }
                Ok(_) => {}
                Err(_) => {
                    inbuf.clear();
                    continue;
                }
            }
        }
        let deadline = match (
            conn.poll_timeout(),
            session.as_ref().and_then(|s| s.poll_timeout()),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let can_read = pending.is_none() && inbuf.len() < 64 * 1024;
        let read = async {
            if can_read {
                Wake::Read(stream.read(&mut readbuf).await)
            } else {
                std::future::pending().await
            }
        };
        let durable = async {
            match watch.changed().await {
                Ok(_) => Wake::Durable,
                Err(_) => std::future::pending().await,
            }
        };
        let timer = async {
            match deadline {
                Some(at) => {
                    smol::Timer::at(clock::to_std(at)).await;
                    Wake::Timer
                }
                None => std::future::pending().await,
            }
        };
        match read.or(durable).or(timer).await {
            Wake::Read(Ok(0)) | Wake::Read(Err(_)) => conn.handle_eof(),
            Wake::Read(Ok(n)) => inbuf.extend_from_slice(&readbuf[..n]),
            Wake::Durable => {}
            Wake::Timer => {
                let now = clock::now();
                conn.handle_timeout(now);
                if let Some(s) = session.as_mut() {
                    s.handle_timeout(now);
                }
            }
        }
    }
}
