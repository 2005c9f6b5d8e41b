//! The proof that the core embeds in any runtime: two peers complete the
//! handshake and talk over plain `std::net` TCP on loopback, with blocking
//! sockets, one thread each, and no async runtime.
//!
//! Run: `cargo run -p cwtch-proto --example tcp_pair`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use cwtch_proto::channel::frame::FRAME_LEN;
use cwtch_proto::connection::{Config, Connection, ConnectionEvent};
use cwtch_proto::{Identity, Instant};
use getrandom::SysRng;
use rand_core::UnwrapErr;

/// What the application wants after an event.
enum Step {
    Send(Vec<u8>),
    Close,
}

/// The driver loop of the crate docs, for one blocking socket. `script`
/// gets every event and may answer; the loop ends when the connection
/// closes.
fn drive(
    mut conn: Connection,
    mut stream: TcpStream,
    mut script: impl FnMut(ConnectionEvent<'_>) -> Option<Step>,
) -> Result<(), String> {
    let start = StdInstant::now();
    let now = || Instant::from_micros(start.elapsed().as_micros() as u64);
    let mut buf = [0u8; FRAME_LEN];
    let mut pending: Vec<u8> = Vec::new();
    let mut outbox: Vec<Vec<u8>> = Vec::new();
    loop {
        // Drain poll_event: act on what happened.
        let mut replies = Vec::new();
        let mut close = false;
        let mut closed = None;
        while let Some(event) = conn.poll_event() {
            if let ConnectionEvent::Closed(reason) = event {
                closed = Some(reason);
                break;
            }
            if let ConnectionEvent::IncomingPeer { remote } = event {
                println!("responder: {remote} is calling; accepting");
                conn.accept(now()).map_err(|e| e.to_string())?;
                continue;
            }
            match script(event) {
                Some(Step::Send(reply)) => replies.push(reply),
                Some(Step::Close) => close = true,
                None => {}
            }
        }
        outbox.extend(replies);
        if close {
            conn.close();
        }
        while conn.can_send() && !outbox.is_empty() {
            conn.send(&outbox.remove(0)).map_err(|e| e.to_string())?;
        }
        // Drain poll_transmit: write what the core wants sent.
        while let Some(n) = conn
            .poll_transmit(now(), &mut buf)
            .map_err(|e| e.to_string())?
        {
            stream.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        }
        if let Some(reason) = closed {
            println!("closed: {reason:?}");
            return Ok(());
        }
        // Sleep until the next input or the next deadline.
        let wait = conn.poll_timeout().map(|t| {
            StdDuration::from_micros(t.as_micros().saturating_sub(now().as_micros()).max(1))
        });
        stream.set_read_timeout(wait).map_err(|e| e.to_string())?;
        if pending.is_empty() {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => conn.handle_eof(),
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    conn.handle_timeout(now());
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        if !pending.is_empty() {
            match conn.handle_input(&pending, now()) {
                Ok(consumed) => {
                    pending.drain(..consumed);
                }
                Err(e) => println!("input rejected: {e}"),
            }
        }
    }
}

fn main() -> Result<(), String> {
    let mut rng = UnwrapErr(SysRng);
    let alice = Identity::generate(&mut rng);
    let bob = Identity::generate(&mut rng);
    let bob_public = bob.public();
    println!("alice is {}\nbob   is {}", alice.address(), bob.address());

    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;

    let responder = std::thread::spawn(move || -> Result<Vec<Vec<u8>>, String> {
        let (stream, _) = listener.accept().map_err(|e| e.to_string())?;
        let mut rng = UnwrapErr(SysRng);
        let conn = Connection::responder(Config::default(), bob, &mut rng, Instant::ZERO);
        let mut got = Vec::new();
        drive(conn, stream, |event| match event {
            ConnectionEvent::Message(m) => {
                got.push(m.to_vec());
                let mut reply = b"bob heard: ".to_vec();
                reply.extend_from_slice(&m[..m.len().min(32)]);
                Some(Step::Send(reply))
            }
            _ => None,
        })?;
        Ok(got)
    });

    let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let conn = Connection::initiator(
        Config::default(),
        alice,
        bob_public,
        &mut rng,
        Instant::ZERO,
    );
    let big = vec![b'x'; 6000];
    let mut to_send: Vec<Vec<u8>> = vec![b"hello bob".to_vec(), big.clone()];
    let mut replies = Vec::new();
    drive(conn, stream, |event| match event {
        ConnectionEvent::Established { remote } => {
            println!("initiator: established with {remote}");
            Some(Step::Send(to_send.remove(0)))
        }
        ConnectionEvent::Message(m) => {
            println!("initiator got: {}", String::from_utf8_lossy(m));
            replies.push(m.to_vec());
            if to_send.is_empty() {
                Some(Step::Close)
            } else {
                Some(Step::Send(to_send.remove(0)))
            }
        }
        _ => None,
    })?;
    let got = responder
        .join()
        .map_err(|_| "responder panicked".to_string())??;
    assert_eq!(got, vec![b"hello bob".to_vec(), big]);
    assert_eq!(replies.len(), 2);
    println!(
        "ok: {} messages each way over TCP, no async runtime",
        got.len()
    );
    Ok(())
}
