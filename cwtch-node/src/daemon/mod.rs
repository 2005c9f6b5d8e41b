//! The peer daemon's driver: the only code of the peer with async, a clock
//! and OS randomness. It runs the peer's core ([`crate::peer::Peer`]) on a
//! thread of its own (its storage is synchronous), carries out the effects
//! the core asks for (dials, sends, closes, notifications), and runs one
//! connection driver ([`conn`]) per link, the same for links to contacts and
//! connections to servers.
//!
//! ```text
//!  control socket ──Command──┐                ┌─ Effect::Dial* → dial task → conn::drive
//!  listener ──Admit/Link──┐  ├─► core thread ─┤  Effect::Send/Close → the link's queue
//!  link tasks ───Link─────┴──┘  (Peer)        └─ Effect::Notify → event hub
//! ```

pub mod conn;
mod isolation;
mod refetch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use cwtch_proto::connection::{CloseReason, Config, Connection};
use cwtch_proto::{Identity, OnionAddress, PublicIdentity};
use serde_json::Value;
use smol::channel::Sender;

use crate::clock;
use crate::control::api::{ApiError, ErrorCode, Event, Request};
use crate::control::events::Hub;
use crate::control::server::{Ask, Serving};
use crate::limits::{HandshakeSlots, MAX_PEER_HANDSHAKES};
use crate::peer::{Effect, Ended, LinkEvent, LinkId, Now, Peer};
use crate::transport::{Listener, NodeTransport, PEER_PORT};
use conn::{Admission, LinkCommand, LinkHandler, Outbox};
use isolation::Isolation;
use refetch::Refetches;

/// An input for the core's thread.
enum Input {
    Command(Request, Sender<Result<Value, ApiError>>),
    Admit(PublicIdentity, Sender<Option<LinkId>>),
    Link(LinkId, LinkEvent),
    Stop,
}

/// The driver's clocks now.
pub fn now() -> Now {
    Now {
        mono: clock::now(),
        unix: clock::unix_now(),
    }
}

/// What the daemon needs to run a profile.
pub struct PeerDaemon {
    /// The home (control socket).
    pub home: PathBuf,
    /// The core, loaded.
    pub peer: Peer,
    /// How to reach peers and servers.
    pub transport: NodeTransport,
    /// The handshake deadline of inbound connections, seconds (0: default).
    pub handshake_timeout: u64,
    /// Stop gracefully when standard input ends (`run
    /// --stop-on-stdin-eof`: the daemon `chat` started ends with it).
    pub stop_on_stdin_eof: bool,
}

/// The links' command queues, by id.
type Registry = Arc<Mutex<HashMap<LinkId, Sender<LinkCommand>>>>;

struct Ctx {
    identity: Identity,
    transport: NodeTransport,
    registry: Registry,
    input: mpsc::Sender<Input>,
    slots: Arc<HandshakeSlots>,
    handshake_timeout: u64,
    /// Set when the graceful stop begins: no new connection is dialed.
    stopping: std::sync::atomic::AtomicBool,
    /// The SOCKS isolation key of each dial.
    isolation: Mutex<Isolation>,
    /// Which peers' descriptors tor may fetch again after a stall.
    refetches: Mutex<Refetches>,
}

impl Ctx {
    /// A link's command queue, while it runs.
    fn queue_of(&self, link: LinkId) -> Option<Sender<LinkCommand>> {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&link)
            .cloned()
    }
}

/// Runs the peer daemon until it is asked to stop (the control socket's
/// `shutdown`, or the process ending). The control socket answers before
/// our onion service is published.
pub fn run(daemon: PeerDaemon) -> Result<(), String> {
    let PeerDaemon {
        home,
        peer,
        transport,
        handshake_timeout,
        stop_on_stdin_eof,
    } = daemon;
    let identity = peer.identity().clone();
    let address = peer.address().to_string();
    let hub = Hub::new(clock::random_u64());
    let (input_tx, input_rx) = mpsc::channel::<Input>();
    let (effect_tx, effect_rx) = smol::channel::unbounded::<Batch>();
    let core = std::thread::Builder::new()
        .name("cwtch-core".into())
        .stack_size(8 * 1024 * 1024)
        .spawn(move || core_loop(peer, input_rx, effect_tx))
        .map_err(|e| format!("cannot start the core: {e}"))?;
    let ctx = Arc::new(Ctx {
        identity: identity.clone(),
        transport: transport.clone(),
        registry: Arc::new(Mutex::new(HashMap::new())),
        input: input_tx.clone(),
        slots: HandshakeSlots::new(MAX_PEER_HANDSHAKES),
        handshake_timeout,
        stopping: std::sync::atomic::AtomicBool::new(false),
        isolation: Mutex::new(Isolation::new(identity.address())),
        refetches: Mutex::new(Refetches::default()),
    });
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    let result = smol::block_on(async {
        let ask_input = Mutex::new(input_tx.clone());
        let ask: Ask = Arc::new(move |request: Request| {
            let (tx, rx) = smol::channel::bounded(1);
            let sent = ask_input
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(Input::Command(request, tx))
                .is_ok();
            Box::pin(async move {
                if !sent {
                    return Err(ApiError::new(
                        ErrorCode::ShuttingDown,
                        "the daemon is stopping",
                    ));
                }
                rx.recv().await.unwrap_or_else(|_| {
                    Err(ApiError::new(
                        ErrorCode::ShuttingDown,
                        "the daemon is stopping",
                    ))
                })
            })
        });
        let control = smol::spawn(crate::control::server::serve(Serving {
            home: home.clone(),
            ask,
            hub: hub.clone(),
            address: address.clone(),
            stop: stop_tx,
        }));
        smol::spawn(execute(effect_rx, ctx.clone(), hub.clone())).detach();
        // SIGTERM, SIGINT and the control socket's `shutdown` all stop the
        // daemon gracefully.
        let signals = crate::shutdown::Signals::install()
            .map_err(|e| format!("cannot catch signals: {e}"))?;
        let stop = signals.shutdown.clone();
        let stop_on_request = stop.clone();
        smol::spawn(async move {
            if stop_rx.recv().await.is_ok() {
                stop_on_request.trigger();
            }
        })
        .detach();
        if stop_on_stdin_eof {
            // The pipe from the `chat` that started us: when it ends (chat
            // quit, panicked or was killed with its terminal), so do we.
            let stop_on_eof = stop.clone();
            std::thread::Builder::new()
                .name("cwtch-stdin".into())
                .spawn(move || {
                    let mut buf = [0u8; 256];
                    let mut stdin = std::io::stdin();
                    loop {
                        match std::io::Read::read(&mut stdin, &mut buf) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                    tracing::info!("standard input ended: stopping");
                    stop_on_eof.trigger();
                })
                .map_err(|e| format!("cannot watch standard input: {e}"))?;
        }
        let publish = async {
            let mut listener = transport
                .listen(&identity, PEER_PORT)
                .await
                .map_err(|e| format!("cannot publish our onion service: {e}"))?;
            if listener
                .wait_published(StdDuration::from_secs(120))
                .await
                .is_err()
            {
                eprintln!(
                    "warning: tor has not confirmed our onion service yet; peers may not reach us for a while"
                );
            }
            Ok::<_, String>(Some(listener))
        };
        let stopped_early = async {
            stop.wait().await;
            Ok(None)
        };
        let listener = smol::future::or(publish, stopped_early).await?;
        let outcome = match &listener {
            None => Ok(()),
            Some(listener) => {
                println!("cwtch peer {address} is online");
                let stopped = async {
                    stop.wait().await;
                    Ok::<(), String>(())
                };
                let control = async {
                    control
                        .await
                        .map_err(|e| format!("control socket failed: {e}"))
                };
                let accepting = async {
                    accept(listener, ctx.clone()).await;
                    Ok::<(), String>(())
                };
                smol::future::or(stopped, smol::future::or(control, accepting)).await
            }
        };
        // The graceful stop: subscribers are told, our onion service is
        // removed, every link is closed (what is queued goes out first).
        // Everything acknowledged is stored already: the core writes before
        // it acknowledges.
        hub.publish(Event::ShuttingDown);
        ctx.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(listener) = listener {
            let _ = listener.close().await;
        }
        let links: Vec<Sender<LinkCommand>> = ctx
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for tx in &links {
            conn::close(tx);
        }
        let deadline = std::time::Instant::now() + StdDuration::from_secs(2);
        while std::time::Instant::now() < deadline
            && !ctx
                .registry
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
        {
            smol::Timer::after(StdDuration::from_millis(20)).await;
        }
        // Subscribers get the notice before the process ends.
        smol::Timer::after(StdDuration::from_millis(200)).await;
        outcome
    });
    let _ = input_tx.send(Input::Stop);
    let _ = core.join();
    let _ = std::fs::remove_file(crate::control::socket_path(&home));
    result
}

/// The most inputs the core takes in one go before it hands over what
/// they caused: a burst (a fetch of many messages, many dials ending at
/// once) crosses to the executor once, not once per input.
const INPUT_BATCH: usize = 64;

/// An answer to a control request, sent once the effects of its burst
/// are carried out.
type Reply = (Sender<Result<Value, ApiError>>, Result<Value, ApiError>);

/// What a burst of inputs caused, for the executor: its effects, then
/// the answers to the requests among the inputs.
struct Batch {
    effects: Vec<Effect>,
    replies: Vec<Reply>,
}

/// The core's thread: inputs in, effects out (in batches), proof of work
/// in steps, and sleeping until the next deadline.
fn core_loop(mut peer: Peer, inputs: mpsc::Receiver<Input>, effects: Sender<Batch>) {
    let mut replies: Vec<Reply> = Vec::new();
    // The effects of what was handled go to the executor as one batch,
    // and the answers with them, to be sent once the effects are carried
    // out: a message is handed over for sending before `send` is
    // answered, and a burst crosses threads once (one wake-up of the
    // executor, not one for the effects and another for the answers).
    let flush = |peer: &mut Peer, replies: &mut Vec<Reply>| {
        let mut batch = Batch {
            effects: Vec::new(),
            replies: std::mem::take(replies),
        };
        while let Some(e) = peer.poll_effect() {
            batch.effects.push(e);
        }
        if !batch.effects.is_empty() || !batch.replies.is_empty() {
            let _ = effects.send_blocking(batch);
        }
    };
    let handle = |peer: &mut Peer, input: Input, replies: &mut Vec<Reply>| -> bool {
        match input {
            Input::Command(request, reply) => {
                tracing::debug!(request = request_kind(&request), "control request");
                let answer = peer.handle_command(request, now());
                replies.push((reply, answer));
            }
            // At once: the link joins the registry with the answer, before
            // any effect of this burst may name it.
            Input::Admit(remote, reply) => {
                let _ = reply.try_send(peer.handle_admit(&remote));
            }
            Input::Link(link, event) => peer.handle_link(link, event, now()),
            Input::Stop => return false,
        }
        true
    };
    // Handles `first` and what else is waiting already (at most a batch).
    let handle_burst = |peer: &mut Peer, first: Input, replies: &mut Vec<Reply>| -> bool {
        if !handle(peer, first, replies) {
            return false;
        }
        for _ in 1..INPUT_BATCH {
            match inputs.try_recv() {
                Ok(input) => {
                    if !handle(peer, input, replies) {
                        return false;
                    }
                }
                Err(_) => break,
            }
        }
        true
    };
    peer.handle_timeout(now());
    loop {
        flush(&mut peer, &mut replies);
        // Proof of work in bounded steps, taking input in between.
        while peer.wants_work(now()) {
            peer.handle_work(now());
            flush(&mut peer, &mut replies);
            if let Ok(input) = inputs.try_recv() {
                if !handle_burst(&mut peer, input, &mut replies) {
                    // What ran before the stop is stored: answer it.
                    flush(&mut peer, &mut replies);
                    return;
                }
                flush(&mut peer, &mut replies);
            }
        }
        let t = now();
        let next = match peer.poll_timeout() {
            Some(at) if at <= t.mono => {
                // Input that came before the deadline first (one burst, so a
                // flood cannot hold the timers back): an answer a server
                // sent in time is taken before its deadline is judged.
                if let Ok(input) = inputs.try_recv() {
                    if !handle_burst(&mut peer, input, &mut replies) {
                        flush(&mut peer, &mut replies);
                        return;
                    }
                    flush(&mut peer, &mut replies);
                }
                peer.handle_timeout(now());
                continue;
            }
            Some(at) => inputs.recv_timeout(StdDuration::from_micros(
                at.saturating_duration_since(t.mono).as_micros(),
            )),
            None => inputs
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(input) => {
                if !handle_burst(&mut peer, input, &mut replies) {
                    flush(&mut peer, &mut replies);
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => peer.handle_timeout(now()),
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Carries out the core's effects, a batch at a time, and then sends the
/// answers that came with them.
async fn execute(batches: smol::channel::Receiver<Batch>, ctx: Arc<Ctx>, hub: Hub) {
    while let Ok(batch) = batches.recv().await {
        for effect in batch.effects {
            carry_out(effect, &ctx, &hub);
        }
        for (tx, answer) in batch.replies {
            let _ = tx.try_send(answer);
        }
    }
}

/// Carries out one effect.
fn carry_out(effect: Effect, ctx: &Arc<Ctx>, hub: &Hub) {
    let stopping = ctx.stopping.load(std::sync::atomic::Ordering::Acquire);
    match effect {
        // Stopping: the links are being closed, and none is opened
        // again (the core would redial what closes).
        Effect::DialPeer { .. } | Effect::DialServer { .. } if stopping => {}
        Effect::DialPeer { link, to } => {
            tracing::debug!(link = link.0, "dialing a contact");
            smol::spawn(dial(ctx.clone(), link, to, false)).detach();
        }
        Effect::DialServer { link, server } => {
            tracing::debug!(link = link.0, "dialing a server");
            smol::spawn(dial(ctx.clone(), link, server, true)).detach();
        }
        Effect::Send { link, msg } => {
            // A full queue closes the link rather than skip a message:
            // the next link starts over (the outbox is resent in order).
            if let Some(tx) = ctx.queue_of(link) {
                conn::send_all(&tx, vec![msg]);
            }
        }
        Effect::Close { link } => {
            tracing::debug!(link = link.0, "closing a link");
            if let Some(tx) = ctx.queue_of(link) {
                conn::close(&tx);
            }
        }
        Effect::Notify(event) => {
            hub.publish(event);
        }
    }
}

/// What a link reports, to the core.
struct CoreLink {
    ctx: Arc<Ctx>,
    /// Known once admitted (inbound) or from the start (dialed).
    link: Arc<Mutex<Option<LinkId>>>,
    tx: Sender<LinkCommand>,
    /// Inbound only: our handshake slot, released once authenticated.
    slot: Option<Arc<crate::limits::Slot>>,
    server: bool,
    /// Authenticated (else a close is a failed handshake).
    up: bool,
}

impl CoreLink {
    fn id(&self) -> Option<LinkId> {
        *self.link.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, event: LinkEvent) {
        if let Some(link) = self.id() {
            let _ = self.ctx.input.send(Input::Link(link, event));
        }
    }
}

impl LinkHandler for CoreLink {
    fn incoming(&mut self, remote: PublicIdentity) -> Admission {
        let (reply, answer) = smol::channel::bounded(1);
        if self.ctx.input.send(Input::Admit(remote, reply)).is_err() {
            return Admission::Refuse;
        }
        let slot = self.link.clone();
        let registry = self.ctx.registry.clone();
        let tx = self.tx.clone();
        Admission::Ask(Box::pin(async move {
            match answer.recv().await {
                Ok(Some(link)) => {
                    registry
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(link, tx);
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(link);
                    true
                }
                _ => false,
            }
        }))
    }

    fn established(&mut self, remote: PublicIdentity, _out: &mut Outbox) {
        if let Some(slot) = &self.slot {
            slot.release();
        }
        self.up = true;
        self.report(LinkEvent::Up {
            remote: (!self.server).then(|| Box::new(remote)),
        });
    }

    fn message(&mut self, msg: &[u8], _out: &mut Outbox) {
        self.report(LinkEvent::Message(msg.to_vec()));
    }

    fn closed(&mut self, reason: CloseReason) {
        tracing::debug!(
            link = self.id().map(|l| l.0),
            up = self.up,
            ?reason,
            "link closed"
        );
        let failed = !self.up || !matches!(reason, CloseReason::Local | CloseReason::Remote(_));
        let by_us = matches!(reason, CloseReason::Local);
        let reason = if self.up {
            describe_close(reason)
        } else {
            format!("handshake failed: {}", describe_close(reason))
        };
        self.report(LinkEvent::Down(Ended {
            reason,
            failed,
            by_us,
        }));
        if let Some(link) = self.id() {
            self.ctx
                .registry
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&link);
        }
    }
}

/// A request's type, for the log (never its content).
fn request_kind(request: &Request) -> String {
    serde_json::to_value(request)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Why a link closed, in plain words (never a debug form).
pub fn describe_close(reason: CloseReason) -> String {
    use cwtch_proto::connection::{ConnectionError, Timeout};
    match reason {
        CloseReason::Local => "closed by us".into(),
        CloseReason::Refused => {
            "refused: they do not accept us (blocked, or too many requests)".into()
        }
        CloseReason::Remote(_) => "closed by the other side".into(),
        CloseReason::TimedOut(Timeout::Handshake) => "the handshake took too long".into(),
        CloseReason::TimedOut(Timeout::Idle) => "the other side went silent".into(),
        CloseReason::Error(ConnectionError::Truncated) => {
            "the other side closed the connection".into()
        }
        CloseReason::Error(ConnectionError::Handshake(e)) => {
            format!("the handshake failed: {e}")
        }
        CloseReason::Error(ConnectionError::Channel(e)) => {
            format!("the connection broke: {e}")
        }
        CloseReason::Error(e) => format!("the connection failed: {e}"),
    }
}

/// Has tor fetch `to`'s descriptor again, if its ration allows
/// (`daemon::refetch`: each fetch uses up one of the peer's directories for
/// 15 minutes), and says in the log what came of it.
async fn refetch_after_stall(ctx: &Ctx, to: &OnionAddress) {
    let lock = || ctx.refetches.lock().unwrap_or_else(|e| e.into_inner());
    if !lock().take(to, std::time::Instant::now()) {
        return;
    }
    let outcome = ctx.transport.after_stall(to).await;
    match &outcome {
        Some(Ok(r)) => match r.replaced {
            Some(true) => tracing::info!("tor fetched a newer descriptor"),
            Some(false) => tracing::info!("tor fetched the descriptor: no newer one"),
            None => tracing::info!("tor fetched the descriptor"),
        },
        Some(Err(e)) => tracing::info!("tor could not fetch the descriptor: {e}"),
        None => {}
    }
    if !refetch::asked_a_directory(outcome.as_ref()) {
        lock().give_back(to);
    }
}

async fn dial(ctx: Arc<Ctx>, link: LinkId, to: OnionAddress, server: bool) {
    let isolation = ctx.isolation.lock().unwrap_or_else(|e| e.into_inner()).key(
        &to,
        server,
        clock::random_u64(),
    );
    let stream = match ctx.transport.dial(&to, PEER_PORT, &isolation).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!("dial failed: {e}");
            if e.stalled() {
                if !server {
                    ctx.isolation
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .stalled(&to);
                }
                // Before the link is retried: a stale cached descriptor
                // would stall the next dial too.
                refetch_after_stall(&ctx, &to).await;
            }
            let _ = ctx.input.send(Input::Link(
                link,
                LinkEvent::Down(Ended {
                    reason: e.to_string(),
                    failed: true,
                    by_us: false,
                }),
            ));
            return;
        }
    };
    let mut rng = clock::rng();
    let conn = if server {
        Connection::anonymous_initiator(
            Config::default(),
            to.public_identity(),
            &mut rng,
            clock::now(),
        )
    } else {
        Connection::initiator(
            Config::default(),
            ctx.identity.clone(),
            to.public_identity(),
            &mut rng,
            clock::now(),
        )
    };
    let (tx, rx) = smol::channel::bounded(256);
    ctx.registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(link, tx.clone());
    let mut handler = CoreLink {
        ctx: ctx.clone(),
        link: Arc::new(Mutex::new(Some(link))),
        tx,
        slot: None,
        server,
        up: false,
    };
    conn::drive(stream, conn, rx, &mut handler).await;
}

/// Accepts peers on our onion service until the listener fails. Inbound
/// connections hold one of a bounded number of handshake slots until the
/// peer is authenticated.
async fn accept(listener: &Listener, ctx: Arc<Ctx>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let ctx = ctx.clone();
                smol::spawn(async move {
                    let slot = Arc::new(ctx.slots.admit());
                    let mut rng = clock::rng();
                    let conn = Connection::responder(
                        crate::limits::responder_config(ctx.handshake_timeout),
                        ctx.identity.clone(),
                        &mut rng,
                        clock::now(),
                    );
                    let (tx, rx) = smol::channel::bounded(256);
                    let mut handler = CoreLink {
                        ctx: ctx.clone(),
                        link: Arc::new(Mutex::new(None)),
                        tx,
                        slot: Some(slot.clone()),
                        server: false,
                        up: false,
                    };
                    let evicted = smol::future::or(
                        async {
                            conn::drive(stream, conn, rx, &mut handler).await;
                            false
                        },
                        async {
                            slot.evicted().await;
                            true
                        },
                    )
                    .await;
                    if evicted {
                        // Before its handshake finished: the core forgets it.
                        handler.closed(CloseReason::Local);
                    }
                })
                .detach();
                // Let evicted connections close before the next accept.
                smol::future::yield_now().await;
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                smol::Timer::after(StdDuration::from_millis(200)).await;
            }
        }
    }
}
