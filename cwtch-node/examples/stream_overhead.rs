//! What the node's transport enum costs the SOCKS path: the daemons used
//! to drive `Async<TcpStream>` (what a SOCKS dial and tor's onion
//! forwarding give) directly, and now drive `transport::Stream`, an enum
//! over that socket and an arti stream. Both on loopback TCP, in one
//! process, alternating rounds so that they share the machine's load:
//!
//! 1. round trips of one channel message over our connection driver
//!    (`link::drive`, a `Connection` each side), as a peer link does;
//! 2. bulk transfer: 256 MiB from one end to the other.
//!
//! ```text
//! cargo run --release -p cwtch-node --example stream_overhead [ROUNDS=20000] [REPEATS=5]
//! ```

use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cwtch_node::link::{self, LinkCommand, LinkHandler, Outbox};
use cwtch_node::transport::Stream;
use cwtch_proto::connection::{CloseReason, Config, Connection};
use cwtch_proto::{Identity, PublicIdentity};
use smol::Async;
use smol::io::{AsyncReadExt, AsyncWriteExt};

struct Echo;

impl LinkHandler for Echo {
    fn established(&mut self, _remote: PublicIdentity, _out: &mut Outbox) {}
    fn message(&mut self, msg: &[u8], out: &mut Outbox) {
        out.send(msg.to_vec());
    }
    fn closed(&mut self, _reason: CloseReason) {}
}

struct Report(mpsc::Sender<()>);

impl LinkHandler for Report {
    fn established(&mut self, _remote: PublicIdentity, _out: &mut Outbox) {
        let _ = self.0.send(());
    }
    fn message(&mut self, _msg: &[u8], _out: &mut Outbox) {
        let _ = self.0.send(());
    }
    fn closed(&mut self, _reason: CloseReason) {}
}

fn pair() -> (Async<TcpStream>, Async<TcpStream>) {
    smol::block_on(async {
        let l = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).expect("bind");
        let addr = l.get_ref().local_addr().expect("addr");
        let (c, a) = smol::future::zip(Async::<TcpStream>::connect(addr), l.accept()).await;
        (c.expect("connect"), a.expect("accept").0)
    })
}

/// `rounds` round trips of a 100-byte message over our channel on a
/// stream made by `wrap`; returns the time per round trip.
fn round_trips<S>(rounds: usize, wrap: impl Fn(Async<TcpStream>) -> S) -> Duration
where
    S: link::LinkStream + Send + 'static,
{
    let (a, b) = pair();
    let (a, b) = (wrap(a), wrap(b));
    let mut rng = cwtch_node::clock::rng();
    let server = Identity::generate(&mut rng);
    let responder = Connection::responder(
        Config::default(),
        server.clone(),
        &mut rng,
        cwtch_node::clock::now(),
    );
    let initiator = Connection::initiator(
        Config::default(),
        Identity::generate(&mut rng),
        server.public(),
        &mut rng,
        cwtch_node::clock::now(),
    );
    let (_keep, rx_b) = smol::channel::bounded(1);
    let echo = std::thread::spawn(move || {
        smol::block_on(link::drive(b, responder, rx_b, &mut Echo));
    });
    let (cmd, cmd_rx) = smol::channel::unbounded();
    let (tx, reports) = mpsc::channel();
    let client = std::thread::spawn(move || {
        smol::block_on(link::drive(a, initiator, cmd_rx, &mut Report(tx)));
    });
    reports.recv().expect("established");
    let msg = vec![0x5a; 100];
    let start = Instant::now();
    for _ in 0..rounds {
        cmd.send_blocking(LinkCommand::Send(msg.clone()))
            .expect("send");
        reports.recv().expect("echo");
    }
    let took = start.elapsed() / rounds as u32;
    cmd.send_blocking(LinkCommand::Close).expect("close");
    drop(cmd);
    let _ = client.join();
    drop(_keep);
    let _ = echo.join();
    took
}

/// 256 MiB from one end to the other (the reader answers one byte at the
/// end); returns MiB/s.
fn bulk<S>(wrap: impl Fn(Async<TcpStream>) -> S) -> f64
where
    S: link::LinkStream + Send + 'static,
{
    const TOTAL: usize = 256 << 20;
    let (a, b) = pair();
    let (mut a, mut b) = (wrap(a), wrap(b));
    let sink = std::thread::spawn(move || {
        smol::block_on(async {
            let mut buf = vec![0u8; 64 << 10];
            let mut got = 0;
            while got < TOTAL {
                got += b.read(&mut buf).await.expect("read");
            }
            b.write_all(b"k").await.expect("answer");
            b.flush().await.expect("flush");
        })
    });
    let start = Instant::now();
    smol::block_on(async {
        let chunk = vec![0xa5u8; 64 << 10];
        for _ in 0..TOTAL / chunk.len() {
            a.write_all(&chunk).await.expect("write");
        }
        a.flush().await.expect("flush");
        let mut k = [0u8; 1];
        a.read_exact(&mut k).await.expect("answer");
    });
    let took = start.elapsed();
    let _ = sink.join();
    TOTAL as f64 / (1 << 20) as f64 / took.as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).map_or(20_000, |a| a.parse().expect("ROUNDS"));
    let repeats: usize = args.get(2).map_or(5, |a| a.parse().expect("REPEATS"));
    let (mut rt_raw, mut rt_enum, mut bw_raw, mut bw_enum) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..repeats {
        // Alternate which goes first.
        if r % 2 == 0 {
            rt_raw.push(round_trips(rounds, |s| s));
            rt_enum.push(round_trips(rounds, Stream::from));
            bw_raw.push(bulk(|s| s));
            bw_enum.push(bulk(Stream::from));
        } else {
            rt_enum.push(round_trips(rounds, Stream::from));
            rt_raw.push(round_trips(rounds, |s| s));
            bw_enum.push(bulk(Stream::from));
            bw_raw.push(bulk(|s| s));
        }
    }
    rt_raw.sort();
    rt_enum.sort();
    bw_raw.sort_by(f64::total_cmp);
    bw_enum.sort_by(f64::total_cmp);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("{repeats} repeats, best and median of each, loopback TCP");
    println!(
        "round trip, 100-byte message over our channel ({rounds} per repeat): Async<TcpStream> best {:.2} us median {:.2} us; transport::Stream best {:.2} us median {:.2} us; ratio (medians) {:.3}x",
        us(rt_raw[0]),
        us(rt_raw[repeats / 2]),
        us(rt_enum[0]),
        us(rt_enum[repeats / 2]),
        us(rt_enum[repeats / 2]) / us(rt_raw[repeats / 2]),
    );
    println!(
        "bulk, 256 MiB one way: Async<TcpStream> best {:.0} MiB/s median {:.0} MiB/s; transport::Stream best {:.0} MiB/s median {:.0} MiB/s; ratio (medians) {:.3}x",
        bw_raw[repeats - 1],
        bw_raw[repeats / 2],
        bw_enum[repeats - 1],
        bw_enum[repeats / 2],
        bw_enum[repeats / 2] / bw_raw[repeats / 2],
    );
}
