//! The connection driver: runs one core [`Connection`] over one stream,
//! for every kind of connection (links to contacts, anonymous connections
//! to servers, and the server's side of its clients).
//!
//! Like quinn's connection driver it does nothing but move data: bytes from
//! the stream into `handle_input`, `poll_transmit` onto the stream,
//! `poll_event` to the owner, timers into `handle_timeout`. What a message
//! means is the owner's business ([`LinkHandler`]). The stream is any
//! async byte stream: a TCP socket through Tor's SOCKS port, a loopback
//! socket, or a stream of Tor built in.

use std::collections::VecDeque;

use cwtch_proto::PublicIdentity;
use cwtch_proto::channel::frame::FRAME_LEN;
use cwtch_proto::connection::{CloseReason, Connection, ConnectionEvent};
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::clock;

/// What the owner can ask of a running link.
#[derive(Debug)]
pub enum LinkCommand {
    /// Send one message (one channel message).
    Send(Vec<u8>),
    /// Close the link gracefully.
    Close,
    /// The owner's machine has something new to send (a post was queued):
    /// the driver asks the handler ([`LinkHandler::timeout`]).
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

/// Whether to let in a peer that authenticated (responder only).
pub enum Admission {
    /// Yes.
    Accept,
    /// No: the peer is refused (it cannot tell from a network failure).
    Refuse,
    /// Someone else decides (the peer's core, on its own thread): the
    /// driver waits for the answer.
    Ask(std::pin::Pin<Box<dyn Future<Output = bool> + Send>>),
}

/// What the driver reports to the link's owner.
pub trait LinkHandler {
    /// Responder only: an authenticated peer calls; whether to accept.
    fn incoming(&mut self, remote: PublicIdentity) -> Admission {
        let _ = remote;
        Admission::Accept
    }
    /// The session is established; messages may be sent.
    fn established(&mut self, remote: PublicIdentity) -> Vec<Vec<u8>>;
    /// A message arrived; return messages to send in answer.
    fn message(&mut self, msg: &[u8]) -> Vec<Vec<u8>>;
    /// The link is over.
    fn closed(&mut self, reason: CloseReason);
    /// When the owner's own machine wants [`LinkHandler::timeout`] (its
    /// `poll_timeout`).
    fn poll_timeout(&self) -> Option<cwtch_proto::Instant> {
        None
    }
    /// The owner's deadline passed; return messages to send.
    fn timeout(&mut self) -> Vec<Vec<u8>> {
        Vec::new()
    }
    /// Whether the owner has long work to do in bounded steps (a proof of
    /// work): the driver calls [`LinkHandler::work`] and yields in between.
    fn wants_work(&self) -> bool {
        false
    }
    /// One bounded step of that work; messages to send.
    fn work(&mut self) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

enum Wake {
    Read(std::io::Result<usize>),
    Command(Option<LinkCommand>),
    Timer,
}

/// Runs `conn` over `stream` until it closes. Commands arrive on
/// `commands`; once that queue is closed (see [`close`]) and drained, the
/// link is closed. The handler hears everything that happens.
pub async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    mut conn: Connection,
    commands: Receiver<LinkCommand>,
    handler: &mut impl LinkHandler,
) -> CloseReason {
    let mut outq: VecDeque<Vec<u8>> = VecDeque::new();
    let mut inbuf: Vec<u8> = Vec::new();
    let mut readbuf = vec![0u8; 16 * 1024];
    let mut frame = [0u8; FRAME_LEN];
    let mut wire = Vec::with_capacity(16 * FRAME_LEN);
    let mut commands_open = true;
    loop {
        // Events first: they may produce messages to send.
        let mut closed = None;
        while let Some(event) = conn.poll_event() {
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
                ConnectionEvent::Established { remote } => outq.extend(handler.established(remote)),
                ConnectionEvent::Message(msg) => outq.extend(handler.message(msg)),
                ConnectionEvent::Closed(reason) => closed = Some(reason),
            }
        }
        // Queue and transmit as much as the connection takes.
        wire.clear();
        loop {
            // Every frame the connection has, then the next message.
            while let Ok(Some(n)) = conn.poll_transmit(clock::now(), &mut frame) {
                wire.extend_from_slice(&frame[..n]);
            }
            if conn.can_send()
                && let Some(msg) = outq.pop_front()
            {
                if conn.send(&msg).is_err() {
                    break;
                }
                continue;
            }
            break;
        }
        // Flushed: a stream of the built-in Tor (arti's `DataStream`) holds
        // written bytes until a flush or a full cell; a TCP socket's flush
        // does nothing.
        if !wire.is_empty()
            && (stream.write_all(&wire).await.is_err() || stream.flush().await.is_err())
        {
            conn.handle_eof();
            continue;
        }
        if let Some(reason) = closed {
            let _ = stream.flush().await;
            handler.closed(reason);
            return reason;
        }
        // Input left over from an earlier read (back-pressure) goes first.
        if !inbuf.is_empty() {
            match conn.handle_input(&inbuf, clock::now()) {
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
            outq.extend(handler.work());
            smol::future::yield_now().await;
            continue;
        }
        // Sleep until input, a command, or the next deadline.
        let owner_deadline = handler.poll_timeout();
        let deadline = match (conn.poll_timeout(), owner_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let read = async { Wake::Read(stream.read(&mut readbuf).await) };
        let command = async {
            if commands_open {
                Wake::Command(commands.recv().await.ok())
            } else {
                std::future::pending().await
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
        match read.or(command).or(timer).await {
            Wake::Read(Ok(0)) | Wake::Read(Err(_)) => conn.handle_eof(),
            Wake::Read(Ok(n)) => {
                inbuf.extend_from_slice(&readbuf[..n]);
                match conn.handle_input(&inbuf, clock::now()) {
                    Ok(consumed) => {
                        inbuf.drain(..consumed);
                    }
                    Err(_) => inbuf.clear(),
                }
            }
            Wake::Command(Some(LinkCommand::Send(msg))) => outq.push_back(msg),
            Wake::Command(Some(LinkCommand::Close)) => conn.close(),
            Wake::Command(Some(LinkCommand::Poke)) => outq.extend(handler.timeout()),
            Wake::Command(None) => {
                commands_open = false;
                conn.close();
            }
            Wake::Timer => {
                let now = clock::now();
                conn.handle_timeout(now);
                if owner_deadline.is_some_and(|at| at <= now) {
                    outq.extend(handler.timeout());
                }
            }
        }
    }
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
