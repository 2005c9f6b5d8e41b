//! [`ArtiTransport`]: bootstrap, dial, listen; [`ArtiListener`] and
//! [`ArtiStream`].

use core::pin::Pin;
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use arti_client::isolation::IsolationHelper;
use arti_client::{DataStream, StreamPrefs, TorClient};
use cwtch_proto::{Identity, OnionAddress};
use futures::channel::oneshot;
use futures::io::{AsyncRead, AsyncWrite};
use futures::stream::{Stream, StreamExt};
use futures::task::SpawnExt;
use tor_cell::relaycell::msg::{Connected, End, EndReason};
use tor_hscrypto::pk::HsIdKeypair;
use tor_hsservice::config::{OnionServiceConfigBuilder, TokenBucketConfig};
use tor_hsservice::status::State;
use tor_hsservice::{
    HsNickname, OnionServiceConfig, RendRequest, RunningOnionService, StreamRequest,
};
use tor_llcrypto::pk::ed25519::ExpandedKeypair;
use tor_proto::stream::IncomingStreamRequest;
use tor_rtcompat::ToplevelBlockOn;
use zeroize::Zeroizing;

use crate::config::{ArtiConfig, tor_client_config};
use crate::error::{AcceptError, ArtiDialError, ArtiListenError, BootstrapError, ReachableError};

/// Streams dialed with the same key may share circuits, others never: what
/// tor does for SOCKS connections with the same username and password, the
/// isolation `cwtch-transport-socks` asks for.
#[derive(Clone)]
struct KeyIsolation(Arc<str>);

impl core::fmt::Debug for KeyIsolation {
    // The key may name an identity: arti logs isolation in debug logs.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("KeyIsolation(..)")
    }
}

impl IsolationHelper for KeyIsolation {
    fn compatible_same_type(&self, other: &Self) -> bool {
        self.0 == other.0
    }

    fn join_same_type(&self, other: &Self) -> Option<Self> {
        (self.0 == other.0).then(|| self.clone())
    }
}

/// The runtime arti runs on: smol (see README.md, "Runtime").
pub type Runtime = tor_rtcompat::smol::PreferredRuntime;

/// Peer streams accepted by Tor but not yet by [`ArtiListener::accept`]:
/// more are refused (as a full TCP backlog would).
pub const ACCEPT_BACKLOG: usize = 32;

/// Most streams one rendezvous circuit may have open at once; a client
/// that opens more has its circuit torn down (C tor's
/// `HiddenServiceMaxStreams` with `HiddenServiceMaxStreamsCloseCircuit`).
/// A peer needs one or two; arti's default, 65535, lets one circuit tie up
/// the service.
pub const MAX_STREAMS_PER_CIRCUIT: u32 = 16;

/// Introductions per second (and burst) our introduction points are asked
/// to let through (the `DOS_PARAMS` extension of `ESTABLISH_INTRO`); more
/// are dropped there, before they cost us a rendezvous circuit. C tor's
/// defaults for `HiddenServiceEnableIntroDoSDefense`.
pub const INTRO_RATE_PER_SEC: u32 = 25;
/// See [`INTRO_RATE_PER_SEC`].
pub const INTRO_BURST: u32 = 200;

/// Rendezvous circuits being built at once for one service: further
/// introductions wait in arti's queue. Established circuits are not
/// counted (their streams are served however many there are).
pub const MAX_PENDING_RENDEZVOUS: usize = 8;

/// The configuration of the onion service [`ArtiTransport::listen`]
/// launches: arti's defaults, with the limits above.
fn service_config(nickname: HsNickname) -> Result<OnionServiceConfig, ArtiListenError> {
    let mut builder = OnionServiceConfigBuilder::default();
    builder.nickname(nickname);
    builder.max_concurrent_streams_per_circuit(MAX_STREAMS_PER_CIRCUIT);
    builder.rate_limit_at_intro(Some(TokenBucketConfig::new(
        INTRO_RATE_PER_SEC,
        INTRO_BURST,
    )));
    builder
        .build()
        .map_err(|e| ArtiListenError::Config(e.to_string()))
}

/// The thread that drives arti's executor. tor-rtcompat's smol runtime
/// owns a `smol::Executor` of its own: arti's background tasks (channel
/// reactors, directory manager, onion-service publisher) run only while
/// someone runs that executor, so one thread does, until the last
/// transport, listener and stream are gone.
struct Executor {
    stop: Mutex<Option<oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Executor {
    fn start(runtime: Runtime) -> io::Result<Arc<Self>> {
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("arti-executor".into())
            .spawn(move || {
                runtime.block_on(async move {
                    // Err: every sender is gone, which also means stop.
                    let _ = stopped.await;
                });
            })?;
        Ok(Arc::new(Executor {
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        }))
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        if let Ok(mut stop) = self.stop.lock()
            && let Some(stop) = stop.take()
        {
            let _ = stop.send(());
        }
        if let Ok(mut thread) = self.thread.lock()
            && let Some(thread) = thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

/// Tor built in: dials onion services and publishes ours through arti,
/// in this process. Cheap to clone (clones share one arti client and its
/// circuits; see [`ArtiTransport::isolated`]).
#[derive(Clone)]
pub struct ArtiTransport {
    // Declared before `executor`: the client goes first.
    client: Arc<TorClient<Runtime>>,
    runtime: Runtime,
    executor: Arc<Executor>,
    next_service: Arc<AtomicU32>,
    bootstrap_time: Duration,
}

impl core::fmt::Debug for ArtiTransport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ArtiTransport")
            .field("bootstrap_time", &self.bootstrap_time)
            .finish_non_exhaustive()
    }
}

fn make_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

fn percent(status: &arti_client::status::BootstrapStatus) -> u8 {
    // as_frac is within 0.0..=1.0; the cast saturates anyway.
    (status.as_frac() * 100.0).round().clamp(0.0, 100.0) as u8
}

impl ArtiTransport {
    /// Starts arti and connects to the Tor network, calling `progress`
    /// with (percent, arti's summary) as bootstrapping advances; returns
    /// once arti is ready for traffic, or fails after
    /// [`ArtiConfig::bootstrap_timeout`].
    pub async fn bootstrap(
        config: ArtiConfig,
        mut progress: impl FnMut(u8, &str) + Send,
    ) -> Result<Self, BootstrapError> {
        let started = Instant::now();
        // Arti speaks TLS to relays through rustls, which needs a
        // process-wide crypto provider: ring. An error means one is
        // installed already (ours, or the application's): it stays.
        // rustls 0.23.48 deprecates ring's provider for lacking
        // post-quantum key exchange; the one that has it (aws-lc-rs) needs
        // cmake and a much longer C build. On a Tor link TLS only wraps
        // cells whose onion encryption is Tor's own (and C tor relays
        // offer no post-quantum TLS groups to agree on either).
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tor_config = tor_client_config(&config).map_err(BootstrapError::Config)?;
        make_private_dir(&config.state_dir).map_err(BootstrapError::Io)?;
        let runtime = Runtime::create().map_err(BootstrapError::Runtime)?;
        let executor = Executor::start(runtime.clone()).map_err(BootstrapError::Runtime)?;
        let client = TorClient::with_runtime(runtime.clone())
            .config(tor_config)
            .create_unbootstrapped()
            .map_err(BootstrapError::Arti)?;

        let mut events = client.bootstrap_events();
        let mut last = None;
        let report = &mut progress;
        let last_seen = &mut last;
        let watch = async move {
            while let Some(status) = events.next().await {
                let p = percent(&status);
                if *last_seen != Some(p) {
                    *last_seen = Some(p);
                    report(p, &status.to_string());
                }
            }
            // The client is gone; let the other branches decide.
            futures::future::pending::<Option<Result<(), arti_client::Error>>>().await
        };
        let limit = config.bootstrap_timeout;
        let outcome = smol::future::or(
            smol::future::or(async { Some(client.bootstrap().await) }, watch),
            async {
                smol::Timer::after(limit).await;
                None
            },
        )
        .await;
        match outcome {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(BootstrapError::Arti(e)),
            None => {
                return Err(BootstrapError::Timeout {
                    limit,
                    last_status: client.bootstrap_status().to_string(),
                });
            }
        }
        if last != Some(100) {
            progress(100, "connected to the Tor network");
        }
        Ok(ArtiTransport {
            client,
            runtime,
            executor,
            next_service: Arc::new(AtomicU32::new(0)),
            bootstrap_time: started.elapsed(),
        })
    }

    /// How long [`ArtiTransport::bootstrap`] took.
    pub fn bootstrap_time(&self) -> Duration {
        self.bootstrap_time
    }

    /// Arti's current bootstrap status: (percent, summary).
    pub fn status(&self) -> (u8, String) {
        let s = self.client.bootstrap_status();
        (percent(&s), s.to_string())
    }

    /// A transport sharing this one's arti but never its circuits: streams
    /// of one identity must not be linkable to another's.
    pub fn isolated(&self) -> Self {
        ArtiTransport {
            client: self.client.isolated_client(),
            runtime: self.runtime.clone(),
            executor: Arc::clone(&self.executor),
            next_service: Arc::clone(&self.next_service),
            bootstrap_time: self.bootstrap_time,
        }
    }

    /// Opens a stream to `peer`'s onion service at virtual port `port`.
    /// A peer that has just come online is not found for a while: retry
    /// (see [`ArtiDialError::is_retryable`]).
    pub async fn dial(&self, peer: &OnionAddress, port: u16) -> Result<ArtiStream, ArtiDialError> {
        self.dial_with(peer, port, &StreamPrefs::new()).await
    }

    /// [`ArtiTransport::dial`] on circuits shared only with other streams
    /// dialed with the same `isolation` key (tor's SOCKS isolation by
    /// username: `cwtch-transport-socks`'s `IsolationKey`).
    pub async fn dial_isolated(
        &self,
        peer: &OnionAddress,
        port: u16,
        isolation: &str,
    ) -> Result<ArtiStream, ArtiDialError> {
        let mut prefs = StreamPrefs::new();
        prefs.set_isolation(KeyIsolation(Arc::from(isolation)));
        self.dial_with(peer, port, &prefs).await
    }

    async fn dial_with(
        &self,
        peer: &OnionAddress,
        port: u16,
        prefs: &StreamPrefs,
    ) -> Result<ArtiStream, ArtiDialError> {
        let host = format!("{}.onion", peer.as_str());
        let stream = self
            .client
            .connect_with_prefs((host.as_str(), port), prefs)
            .await
            .map_err(ArtiDialError::new)?;
        Ok(ArtiStream {
            inner: stream,
            _executor: Arc::clone(&self.executor),
        })
    }

    /// Publishes `identity`'s onion service (address
    /// `identity.address()`), serving virtual port `virt_port`. The key
    /// goes to arti's in-memory keystore only. Streams to other ports are
    /// refused. Publishing takes a while: see
    /// [`ArtiListener::wait_reachable`].
    pub fn listen(
        &self,
        identity: &Identity,
        virt_port: u16,
    ) -> Result<ArtiListener, ArtiListenError> {
        // Nicknames name the service's state in arti's state directory; a
        // counter, so that the directory does not name the identity.
        let n = self.next_service.fetch_add(1, Ordering::Relaxed);
        let nickname = HsNickname::new(format!("cwtch{n}"))
            .map_err(|e| ArtiListenError::Config(e.to_string()))?;
        let svc_config = service_config(nickname)?;

        let expanded = identity.tor_expanded_key();
        // Our copy of the secret bytes is wiped when dropped. The array
        // arti's constructor takes by value is out of our reach; the
        // keypair it builds (dalek's ExpandedSecretKey) is wiped on drop.
        let secret = Zeroizing::new(*expanded.as_bytes());
        let keypair = ExpandedKeypair::from_secret_key_bytes(*secret)
            .ok_or_else(|| ArtiListenError::Config("arti refused the identity key".into()))?;
        let expected = identity.address();
        if keypair.public().as_bytes() != expected.public_identity().as_bytes() {
            return Err(ArtiListenError::AddressMismatch {
                expected: expected.to_string(),
                published: None,
            });
        }
        let (service, requests) = self
            .client
            .launch_onion_service_with_hsid(svc_config, HsIdKeypair::from(keypair))
            .map_err(ArtiListenError::Arti)?
            .ok_or_else(|| ArtiListenError::Config("the service is disabled".into()))?;
        let published: Option<[u8; 32]> = service.onion_address().map(<[u8; 32]>::from);
        if published.as_ref() != Some(expected.public_identity().as_bytes()) {
            return Err(ArtiListenError::AddressMismatch {
                expected: expected.to_string(),
                published: published.map(|b| data_encoding::HEXLOWER.encode(&b)),
            });
        }
        // Rendezvous and stream set-up run on arti's executor, whether or
        // not `accept` is being awaited: a dialer's connection completes
        // as a TCP connect completes into the kernel's backlog.
        let (tx, incoming) = smol::channel::bounded(ACCEPT_BACKLOG);
        self.runtime
            .spawn(serve(requests, virt_port, tx, self.runtime.clone()))
            .map_err(|e| ArtiListenError::Config(format!("cannot start serving: {e}")))?;
        Ok(ArtiListener {
            incoming,
            service,
            address: expected,
            virt_port,
            launched: Instant::now(),
            executor: Arc::clone(&self.executor),
        })
    }
}

/// Completes every rendezvous and accepts every stream to `virt_port`,
/// handing the streams to the listener; refuses streams to other ports
/// (END `CONNECTREFUSED`, as for a closed TCP port) and any while the
/// backlog is full (END `RESOURCELIMIT`). Ends when the service stops or the
/// listener is dropped.
async fn serve(
    requests: impl Stream<Item = RendRequest> + Send + 'static,
    virt_port: u16,
    tx: smol::channel::Sender<DataStream>,
    spawner: Runtime,
) {
    // tor_hsservice::handle_rend_requests, with at most
    // MAX_PENDING_RENDEZVOUS circuits being built at once (it has no
    // bound): a flood of introductions cannot start unbounded work.
    let mut streams = Box::pin(
        requests
            .map(RendRequest::accept)
            .buffer_unordered(MAX_PENDING_RENDEZVOUS)
            .filter_map(|accepted| async move { accepted.ok() })
            .flatten_unordered(None),
    );
    while let Some(request) = streams.next().await {
        if tx.is_closed() {
            break;
        }
        let tx = tx.clone();
        // One peer's slow stream set-up must not hold up another's.
        let _ = spawner.spawn(accept_one(request, virt_port, tx));
    }
}

async fn accept_one(request: StreamRequest, virt_port: u16, tx: smol::channel::Sender<DataStream>) {
    let ours = matches!(
        request.request(),
        IncomingStreamRequest::Begin(begin) if begin.port() == virt_port
    );
    if !ours || tx.is_full() {
        let reason = if ours {
            EndReason::RESOURCELIMIT
        } else {
            EndReason::CONNECTREFUSED
        };
        let _ = request.reject(End::new_with_reason(reason)).await;
        return;
    }
    if let Ok(stream) = request.accept(Connected::new_empty()).await {
        // Full (raced) or closed: the stream is dropped, the peer sees
        // it closed.
        let _ = tx.try_send(stream);
    }
}

/// Our onion service: incoming streams for one identity. Dropping it
/// stops the service.
pub struct ArtiListener {
    // Declared before `executor` so the service stops first.
    incoming: smol::channel::Receiver<DataStream>,
    service: Arc<RunningOnionService>,
    address: OnionAddress,
    virt_port: u16,
    launched: Instant,
    executor: Arc<Executor>,
}

impl core::fmt::Debug for ArtiListener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ArtiListener")
            .field("address", &self.address)
            .field("virt_port", &self.virt_port)
            .finish_non_exhaustive()
    }
}

impl ArtiListener {
    /// The address peers dial: our identity's.
    pub fn address(&self) -> &OnionAddress {
        &self.address
    }

    /// The virtual port we serve.
    pub fn virt_port(&self) -> u16 {
        self.virt_port
    }

    /// The service's state as arti names it (e.g. `Bootstrapping`,
    /// `Running`).
    pub fn state(&self) -> String {
        format!("{:?}", self.service.status().state())
    }

    /// Waits until arti believes the service fully reachable
    /// (`Running` or `DegradedReachable`: introduction points up and the
    /// descriptor uploaded for the current and the next time period).
    /// Returns the time since [`ArtiTransport::listen`].
    ///
    /// Arti's view is pessimistic on a young network: until the network
    /// has a shared random value (one protocol run, 24 voting intervals,
    /// after it starts) arti publishes for the current period only and
    /// stays `Bootstrapping`, though peers can already reach us. Dialers
    /// retry anyway; this is for showing the user a state.
    pub async fn wait_reachable(&self, limit: Duration) -> Result<Duration, ReachableError> {
        let deadline = self.launched + limit;
        let left = deadline.saturating_duration_since(Instant::now());
        self.wait_state(left, |state, _| {
            matches!(state, State::Running | State::DegradedReachable)
        })
        .await
        .map_err(|e| match e {
            ReachableError::Timeout { last_state, .. } => {
                ReachableError::Timeout { limit, last_state }
            }
            other => other,
        })
    }

    /// Waits until arti has uploaded our descriptor for the current time
    /// period at least (what C tor's `HS_DESC UPLOADED` tells): from then
    /// on peers can usually reach us. Returns the time since
    /// [`ArtiTransport::listen`].
    ///
    /// Arti reports no single upload; its service state says it. Once the
    /// introduction points are up and the descriptor is out, the state
    /// leaves `Bootstrapping`: `Running` or `DegradedReachable` when it
    /// went out for both the current and the next period,
    /// `DegradedUnreachable` when only for the current one (a young network
    /// without a shared random value yet, see [`Self::wait_reachable`]) or
    /// when uploads failed, which arti reports as a problem. So: published
    /// is `Running`, `DegradedReachable`, or `DegradedUnreachable` without
    /// a problem.
    pub async fn wait_published(&self, limit: Duration) -> Result<Duration, ReachableError> {
        self.wait_state(limit, |state, problem| match state {
            State::Running | State::DegradedReachable => true,
            State::DegradedUnreachable => !problem,
            _ => false,
        })
        .await
    }

    async fn wait_state(
        &self,
        limit: Duration,
        done: impl Fn(State, bool) -> bool,
    ) -> Result<Duration, ReachableError> {
        let deadline = Instant::now() + limit;
        let mut events = self.service.status_events();
        loop {
            let status = self.service.status();
            let problem = status.current_problem().is_some();
            if done(status.state(), problem) {
                return Ok(self.launched.elapsed());
            }
            if status.state() == State::Broken {
                return Err(ReachableError::Broken(
                    status
                        .current_problem()
                        .map(|p| format!("{p:?}"))
                        .unwrap_or_else(|| "no reason given".into()),
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ReachableError::Timeout {
                    limit,
                    last_state: format!("{:?}", status.state()),
                });
            }
            // Wake on a status change, or re-check now and then.
            smol::future::or(
                async {
                    events.next().await;
                },
                async {
                    smol::Timer::after((deadline - now).min(Duration::from_secs(1))).await;
                },
            )
            .await;
        }
    }

    /// Waits for the next peer stream to our virtual port (streams to
    /// other ports are refused without reaching here).
    pub async fn accept(&self) -> Result<ArtiStream, AcceptError> {
        let stream = self
            .incoming
            .recv()
            .await
            .map_err(|_| AcceptError::Stopped)?;
        Ok(ArtiStream {
            inner: stream,
            _executor: Arc::clone(&self.executor),
        })
    }
}

/// A byte stream to or from a peer, through Tor. `futures::io`'s
/// `AsyncRead` and `AsyncWrite`, usable from any executor (smol's too).
pub struct ArtiStream {
    inner: DataStream,
    _executor: Arc<Executor>,
}

impl core::fmt::Debug for ArtiStream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ArtiStream").finish_non_exhaustive()
    }
}

impl AsyncRead for ArtiStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ArtiStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_onion_service_has_limits() {
        let config = service_config(HsNickname::new("cwtch0".into()).unwrap()).unwrap();
        assert_eq!(
            *config.max_concurrent_streams_per_circuit(),
            MAX_STREAMS_PER_CIRCUIT
        );
        assert_eq!(MAX_STREAMS_PER_CIRCUIT, 16);
        assert_eq!(
            config.rate_limit_at_intro(),
            &Some(TokenBucketConfig::new(INTRO_RATE_PER_SEC, INTRO_BURST))
        );
    }
}
