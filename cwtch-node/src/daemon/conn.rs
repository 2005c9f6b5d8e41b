//! The connection driver: runs one core [`Connection`] over one stream,
//! for every kind of connection (links to contacts, anonymous connections
//! to servers, and the server's side of its clients).
//!
//! Like quinn's connection driver it does nothing but move data: bytes from
//! the stream into `handle_input`, `poll_transmit` onto the stream, events
//! to the owner, timers into `handle_timeout`. What a message means is the
//! owner's business ([`LinkHandler`]). The stream is any async byte stream:
//! a TCP socket through Tor's SOCKS port, a loopback socket, or a stream of
//! Tor built in.
//!
//! An owner gives messages to send in one of two ways:
//!
//! - **pushed**: into the [`Outbox`] it is handed with every event, or as
//!   [`LinkCommand::Send`] from elsewhere (the peer's core, on its own
//!   thread); they wait in the driver's queue;
//! - **pulled**: the driver asks [`LinkHandler::poll_transmit`] for the
//!   next message only when the channel can take one, so an owner that
//!   makes its replies on demand (the server's sessions) holds nothing for
//!   a client that does not read.
//!
//! And it takes input only while [`LinkHandler::wants_input`]: otherwise
//! the driver stops reading the stream, and a client that floods the owner
//! is slowed down by TCP instead of buffered.
//!
//! # One task, few wake-ups
//!
//! Everything the link waits for (the stream, the commands, the owner's
//! own wake-up source [`LinkHandler::poll_wake`], and one timer) is polled
//! by one task, and the sources live as long as the link:
//!
//! - the stream is read only after it said it has something (its waker
//!   was called) or after a read that returned data, never on a wake-up of
//!   another source: a wake-up that was not for the stream costs no
//!   system call;
//! - the timer is armed at the earliest deadline and moved only when a
//!   deadline comes *earlier*; a deadline that moved later (every frame
//!   sent moves the keep-alive) is found when the timer fires, and the
//!   timer is re-armed then. Arming a timer wakes the reactor, so the old
//!   way (a new timer per wake-up) cost several system calls per message;
//! - frames are sealed straight into one write buffer, and everything
//!   ready is written in one `write`;
//! - a read that did not fill the buffer emptied the socket: the driver
//!   then asks the stream for readiness ([`LinkStream::poll_read_ready`])
//!   instead of reading again. A read of an empty socket costs a system
//!   call that answers `EAGAIN`, and async-io's one-shot readiness made it
//!   two per message (the second after the stale readiness of the read
//!   that had data).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use cwtch_proto::PublicIdentity;
use cwtch_proto::channel::frame::FRAME_LEN;
use cwtch_proto::connection::{CloseReason, Connection, ConnectionEvent};
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::stream::StreamExt;

use crate::clock;

/// A stream the driver runs a link over: a byte stream that may also
/// tell whether it has input without a read.
pub trait LinkStream: AsyncRead + AsyncWrite + Unpin {
    /// Registers `cx`'s waker to be woken when the stream may have input,
    /// without reading: `Pending` once registered, `Ready` if the stream
    /// may have input now (also an event already consumed by an earlier
    /// read: the driver asks again). The default, for a stream that cannot
    /// tell, is `Ready`: the driver then reads (and a read that finds
    /// nothing registers the waker).
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let _ = cx;
        Poll::Ready(Ok(()))
    }
}

/// A socket of the reactor: readiness without a read.
impl LinkStream for smol::Async<std::net::TcpStream> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_readable(cx)
    }
}

/// A TCP socket asks the reactor; a stream of the built-in Tor cannot
/// tell, and is read (the default).
impl LinkStream for crate::transport::Stream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self {
            crate::transport::Stream::Tcp(s) => s.poll_readable(cx),
            #[allow(unreachable_patterns)]
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// A socket of the reactor: readiness without a read.
impl LinkStream for smol::Async<std::os::unix::net::UnixStream> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_readable(cx)
    }
}

/// What the owner can ask of a running link.
#[derive(Debug)]
pub enum LinkCommand {
    /// Send one message (one channel message).
    Send(Vec<u8>),
    /// Close the link gracefully.
    Close,
    /// The owner has something new to send: the driver wakes and asks
    /// [`LinkHandler::poll_transmit`] again.
    Poke,
}

/// The handle the owner keeps to talk to a link.
pub type LinkSender = Sender<LinkCommand>;

/// Closes the link behind `tx`, even when its command queue is full: then
/// the queue itself is closed, and the driver closes the link once it has
/// drained what was queued.
pub fn close(tx: &LinkSender) {
    if tx.try_send(LinkCommand::Close).is_err() {
        tx.close();
    }
}

/// Wakes the link behind `tx` to ask its handler for what to send; if the
/// command queue is full, closes the link (the next one starts over).
pub fn poke(tx: &LinkSender) {
    if tx.try_send(LinkCommand::Poke).is_err() {
        close(tx);
    }
}

/// Queues `msgs` in order on the link behind `tx`; if they do not all fit,
/// closes the link instead of leaving a gap (the next link starts over).
pub fn send_all(tx: &LinkSender, msgs: Vec<Vec<u8>>) {
    for msg in msgs {
        if tx.try_send(LinkCommand::Send(msg)).is_err() {
            close(tx);
            return;
        }
    }
}

/// Where a link's commands come from: a queue (see [`LinkSender`]), or
/// nowhere, for an owner that only answers (the server's clients).
pub struct Commands(Option<Receiver<LinkCommand>>);

impl Commands {
    /// No commands: the link runs until the connection or its handler
    /// closes it.
    pub fn none() -> Commands {
        Commands(None)
    }
}

impl From<Receiver<LinkCommand>> for Commands {
    fn from(rx: Receiver<LinkCommand>) -> Commands {
        Commands(Some(rx))
    }
}

/// Messages an owner hands the driver to send, in order, after whatever
/// it handed before.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Vec<u8>>,
}

impl Outbox {
    /// Queues one message.
    pub fn send(&mut self, msg: Vec<u8>) {
        self.queue.push_back(msg);
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

impl Extend<Vec<u8>> for Outbox {
    fn extend<I: IntoIterator<Item = Vec<u8>>>(&mut self, msgs: I) {
        self.queue.extend(msgs);
    }
}

/// Whether to let in a peer that authenticated (responder only).
pub enum Admission {
    /// Yes.
    Accept,
    /// No: the peer is refused (it cannot tell from a network failure).
    Refuse,
    /// Someone else decides (the peer's core, on its own thread): the
    /// driver waits for the answer.
    Ask(Pin<Box<dyn Future<Output = bool> + Send>>),
}

/// How an owner wants its link to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Send what is queued, then a close frame.
    Close,
    /// Drop the stream now, sending nothing more.
    Abort,
}

/// The owner of a link: what the driver reports to, and asks.
///
/// Only [`established`](Self::established), [`message`](Self::message)
/// and [`closed`](Self::closed) must be written; the rest have defaults
/// for an owner that takes every message and pushes its own.
pub trait LinkHandler {
    /// The read buffer of this kind of link, in bytes (a server with many
    /// clients keeps it small; its requests are small).
    const READ_BUFFER: usize = 16 * 1024;

    /// Responder only: an authenticated peer calls; whether to accept.
    fn incoming(&mut self, remote: PublicIdentity) -> Admission {
        let _ = remote;
        Admission::Accept
    }
    /// The session is established; messages may be sent.
    fn established(&mut self, remote: PublicIdentity, out: &mut Outbox);
    /// A message arrived (only while [`wants_input`](Self::wants_input)).
    fn message(&mut self, msg: &[u8], out: &mut Outbox);
    /// The link is over.
    fn closed(&mut self, reason: CloseReason);

    /// Whether the owner takes a message now. While it does not, the
    /// driver leaves the next message in the connection and stops reading
    /// the stream.
    fn wants_input(&self) -> bool {
        true
    }
    /// The next message to send, if the owner has one now; called only
    /// when the channel can take a message, after what the [`Outbox`]
    /// held.
    fn poll_transmit(&mut self, now: cwtch_proto::Instant) -> Option<&[u8]> {
        let _ = now;
        None
    }
    /// Whether the owner wants the link to end (asked after every step).
    fn ending(&self) -> Option<Ending> {
        None
    }
    /// A wake-up source of the owner's own (a store that committed, a
    /// stop that was asked, a read that finished): `Ready` once something
    /// happened, after which the driver asks for messages again. Register
    /// `cx`'s waker when returning `Pending`, as any future does.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Pending
    }
    /// When the owner's own machine wants
    /// [`handle_timeout`](Self::handle_timeout) (its `poll_timeout`).
    fn poll_timeout(&self) -> Option<cwtch_proto::Instant> {
        None
    }
    /// The owner's deadline passed.
    fn handle_timeout(&mut self, now: cwtch_proto::Instant, out: &mut Outbox) {
        let _ = (now, out);
    }
    /// Whether the owner has long work to do in bounded steps (a proof of
    /// work): the driver calls [`work`](Self::work) and yields in between.
    fn wants_work(&self) -> bool {
        false
    }
    /// One bounded step of that work.
    fn work(&mut self, out: &mut Outbox) {
        let _ = out;
    }
    /// Once the connection is closed by us, how long to keep reading (and
    /// dropping) what the other side still sends, after shutting down our
    /// side of the stream. Dropping a socket with unread input makes the
    /// kernel reset it, and a reset can destroy the other side's copy of
    /// our last message before it reads it.
    fn linger(&self) -> Option<Duration> {
        None
    }
}

/// The most bytes of frames gathered before they are written out.
const WRITE_BATCH: usize = 16 * FRAME_LEN;
/// The most unread input kept (it piles up only while the owner does not
/// want input, and then the driver stops reading).
const MAX_INPUT: usize = 64 * 1024;

/// A waker that notes that the stream called it, then wakes the task.
#[derive(Default)]
struct StreamWake {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl StreamWake {
    /// Wakes `waker`'s task from now on.
    fn register(&self, waker: &Waker) {
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if !task.as_ref().is_some_and(|t| t.will_wake(waker)) {
            *task = Some(waker.clone());
        }
    }

    /// Whether the stream woke us since the last call.
    fn take(&self) -> bool {
        self.woken.swap(false, Ordering::AcqRel)
    }
}

impl Wake for StreamWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = &*self.task.lock().unwrap_or_else(|e| e.into_inner()) {
            task.wake_by_ref();
        }
    }
}

/// What woke the link (several sources may be ready at once).
#[derive(Default)]
struct Woken {
    /// Bytes read into the read buffer (0: end of stream), or a failure.
    read: Option<std::io::Result<usize>>,
    /// Bytes were written.
    wrote: bool,
    /// The stream failed while writing.
    write_failed: bool,
    /// A command, or the end of the commands.
    command: Option<Option<LinkCommand>>,
    /// The owner's source.
    owner: bool,
    /// The timer.
    timer: bool,
}

impl Woken {
    fn any(&self) -> bool {
        self.read.is_some()
            || self.wrote
            || self.write_failed
            || self.command.is_some()
            || self.owner
            || self.timer
    }
}

/// Runs `conn` over `stream` until it closes. Commands arrive on
/// `commands`; once that queue is closed (see [`close`]) and drained, the
/// link is closed. The handler hears everything that happens.
pub async fn drive<S, H>(
    mut stream: S,
    mut conn: Connection,
    commands: impl Into<Commands>,
    handler: &mut H,
) -> CloseReason
where
    S: LinkStream,
    H: LinkHandler,
{
    // Boxed: the receiver must not move while it is polled.
    let mut commands = commands.into().0.map(Box::pin);
    let mut out = Outbox::default();
    let mut inbuf: Vec<u8> = Vec::new();
    let mut readbuf = vec![0u8; H::READ_BUFFER.max(FRAME_LEN)];
    // Frames to write: `wire[written..]` is still to go.
    let mut wire: Vec<u8> = Vec::new();
    let mut written = 0;
    let stream_wake = Arc::new(StreamWake::default());
    let stream_waker = Waker::from(Arc::clone(&stream_wake));
    // Whether to poll the stream's directions: after it woke us, or while
    // it has not said Pending since.
    let (mut read_armed, mut write_armed) = (true, true);
    // Written bytes not yet flushed: a stream of the built-in Tor (arti's
    // `DataStream`) holds them until a flush or a full cell; a TCP
    // socket's flush is done at once.
    let mut unflushed = false;
    // Whether the last read left the socket empty (it did not fill the
    // buffer): the stream is then asked for readiness before a read.
    let mut drained = false;
    let mut timer = smol::Timer::never();
    let mut armed: Option<cwtch_proto::Instant> = None;
    let mut close_asked = false;
    loop {
        let now = clock::now();
        // Events, while the owner takes input (and all of them once the
        // connection is over: a message the owner does not want then is
        // dropped).
        let mut closed = None;
        while handler.wants_input() || conn.is_closed() {
            let Some(event) = conn.poll_event() else {
                break;
            };
            match event {
                ConnectionEvent::IncomingPeer { remote } => {
                    let admitted = match handler.incoming(remote) {
                        Admission::Accept => true,
                        Admission::Refuse => false,
                        Admission::Ask(answer) => answer.await,
                    };
                    let result = if admitted {
                        conn.accept(clock::now())
                    } else {
                        conn.refuse()
                    };
                    if result.is_err() {
                        conn.close();
                    }
                }
                ConnectionEvent::Established { remote } => handler.established(remote, &mut out),
                ConnectionEvent::Message(msg) => {
                    if handler.wants_input() {
                        handler.message(msg, &mut out);
                    }
                }
                ConnectionEvent::Closed(reason) => {
                    closed = Some(reason);
                    break;
                }
            }
        }
        match handler.ending() {
            Some(Ending::Abort) => {
                let reason = CloseReason::Local;
                handler.closed(reason);
                return reason;
            }
            Some(Ending::Close) if !close_asked => {
                close_asked = true;
                conn.close();
            }
            _ => {}
        }
        // Frames, sealed straight into the write buffer: everything the
        // connection has, then the next message (queued first, then
        // pulled), while the channel takes one and the batch has room.
        loop {
            while wire.len() < WRITE_BATCH {
                let at = wire.len();
                wire.resize(at + FRAME_LEN, 0);
                match conn.poll_transmit(now, &mut wire[at..]) {
                    Ok(Some(n)) => wire.truncate(at + n),
                    _ => {
                        wire.truncate(at);
                        break;
                    }
                }
            }
            if wire.len() >= WRITE_BATCH || !conn.can_send() {
                break;
            }
            let sent = if let Some(msg) = out.queue.pop_front() {
                conn.send(&msg)
            } else if let Some(msg) = handler.poll_transmit(now) {
                conn.send(msg)
            } else {
                break;
            };
            if sent.is_err() {
                break;
            }
        }
        if let Some(reason) = closed {
            // What is left to write (the close frame), then the end.
            if written < wire.len() && stream.write_all(&wire[written..]).await.is_err() {
                wire.clear();
            }
            let _ = stream.flush().await;
            if let Some(grace) = handler.linger() {
                linger(&mut stream, grace).await;
            }
            handler.closed(reason);
            return reason;
        }
        // Input left over from an earlier read goes first.
        if !inbuf.is_empty() && handler.wants_input() {
            match conn.handle_input(&inbuf, now) {
                Ok(consumed) => {
                    inbuf.drain(..consumed);
                    if consumed > 0 {
                        continue;
                    }
                }
                Err(_) => {
                    inbuf.clear();
                    continue;
                }
            }
        }
        // Long work goes in bounded steps, other tasks running in between.
        if handler.wants_work() {
            handler.work(&mut out);
            smol::future::yield_now().await;
            continue;
        }
        // The timer: earlier deadlines re-arm it, later ones wait for it.
        let deadline = match (conn.poll_timeout(), handler.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = deadline
            && armed.is_none_or(|t| at < t)
        {
            timer.set_at(clock::to_std(at));
            armed = Some(at);
        }
        let can_read = handler.wants_input() && inbuf.len() < MAX_INPUT;
        let woken = std::future::poll_fn(|cx| {
            let mut woken = Woken::default();
            stream_wake.register(cx.waker());
            if stream_wake.take() {
                (read_armed, write_armed) = (true, true);
                drained = false;
            }
            let mut scx = Context::from_waker(&stream_waker);
            if written < wire.len() && write_armed {
                match Pin::new(&mut stream).poll_write(&mut scx, &wire[written..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => woken.write_failed = true,
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        if written >= wire.len() {
                            wire.clear();
                            written = 0;
                        }
                        unflushed = true;
                        woken.wrote = true;
                    }
                    Poll::Pending => write_armed = false,
                }
            }
            if unflushed && wire.is_empty() && write_armed {
                match Pin::new(&mut stream).poll_flush(&mut scx) {
                    Poll::Ready(Ok(())) => unflushed = false,
                    Poll::Ready(Err(_)) => woken.write_failed = true,
                    Poll::Pending => write_armed = false,
                }
            }
            if can_read && read_armed && drained {
                // The first answer may be the readiness the last read
                // consumed; the second registers (or there is input).
                for _ in 0..2 {
                    match stream.poll_read_ready(&mut scx) {
                        Poll::Pending => {
                            read_armed = false;
                            break;
                        }
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(_)) => break,
                    }
                }
                drained = false;
            }
            if can_read && read_armed {
                match Pin::new(&mut stream).poll_read(&mut scx, &mut readbuf) {
                    Poll::Ready(r) => {
                        drained = matches!(r, Ok(n) if n > 0 && n < readbuf.len());
                        woken.read = Some(r);
                    }
                    Poll::Pending => read_armed = false,
                }
            }
            if let Some(rx) = commands.as_mut()
                && let Poll::Ready(command) = rx.poll_next(cx)
            {
                woken.command = Some(command);
            }
            woken.owner = handler.poll_wake(cx).is_ready();
            if armed.is_some() && Pin::new(&mut timer).poll(cx).is_ready() {
                armed = None;
                woken.timer = true;
            }
            if woken.any() {
                Poll::Ready(woken)
            } else {
                Poll::Pending
            }
        })
        .await;
        if woken.write_failed {
            conn.handle_eof();
            wire.clear();
            written = 0;
        }
        match woken.read {
            None => {}
            Some(Ok(0)) | Some(Err(_)) => conn.handle_eof(),
            Some(Ok(n)) => {
                let now = clock::now();
                let fresh = &readbuf[..n];
                if inbuf.is_empty() {
                    if let Ok(consumed) = conn.handle_input(fresh, now) {
                        inbuf.extend_from_slice(&fresh[consumed..]);
                    }
                } else {
                    inbuf.extend_from_slice(fresh);
                    match conn.handle_input(&inbuf, now) {
                        Ok(consumed) => {
                            inbuf.drain(..consumed);
                        }
                        Err(_) => inbuf.clear(),
                    }
                }
            }
        }
        match woken.command {
            None | Some(Some(LinkCommand::Poke)) => {}
            Some(Some(LinkCommand::Send(msg))) => out.send(msg),
            Some(Some(LinkCommand::Close)) => conn.close(),
            Some(None) => {
                commands = None;
                conn.close();
            }
        }
        if woken.timer {
            let now = clock::now();
            // Early for a deadline that moved later: harmless.
            conn.handle_timeout(now);
            if handler.poll_timeout().is_some_and(|at| at <= now) {
                handler.handle_timeout(now, &mut out);
            }
        }
    }
}

/// Shuts down our side of `stream`, then reads and drops what the other
/// side still sends until it closes too, or `grace` passes.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, grace: Duration) {
    let _ = stream.close().await;
    let mut sink = [0u8; 4096];
    let drain = async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    drain
        .or(async {
            smol::Timer::after(grace).await;
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(rx: &smol::channel::Receiver<LinkCommand>) -> Vec<Option<u8>> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| match c {
                LinkCommand::Send(m) => m.first().copied(),
                LinkCommand::Close | LinkCommand::Poke => None,
            })
            .collect()
    }

    #[test]
    fn send_all_queues_in_order_or_closes_instead_of_skipping() {
        let (tx, rx) = smol::channel::bounded(3);
        send_all(&tx, vec![vec![1], vec![2]]);
        assert_eq!(sent(&rx), [Some(1), Some(2)]);
        assert!(!tx.is_closed());
        // Room for three of four: the three are sent, the fourth never
        // (the next link starts over), and the queue is closed, so the
        // driver ends the link once the three are out.
        send_all(&tx, vec![vec![3], vec![4], vec![5], vec![6]]);
        assert!(tx.is_closed(), "a full queue closes the link");
        assert_eq!(sent(&rx), [Some(3), Some(4), Some(5)]);
    }
}
