//! # cwtch-proto: the Cwtch protocol as a sans-IO state machine core
//!
//! This crate holds every protocol decision of Cwtch-rs and nothing else: no
//! sockets, no clock, no OS randomness, no allocation. It is `#![no_std]`;
//! every buffer is owned by the caller or is a `heapless` structure with a
//! fixed capacity. The wire protocol is specified in `SPEC.md` at the root of
//! the repository; module names follow its sections.
//!
//! ## The driving contract
//!
//! Every state machine of this crate is driven the same way, with the same
//! verbs:
//!
//! - **inputs** go in through `handle_*` methods: bytes or a message from
//!   the other side (`handle_input`, `handle_message`), the expiry of a
//!   deadline (`handle_timeout(now)`), or a fact the application learned
//!   (`handle_standing`, `handle_durable`, `handle_gaps`, `handle_health`).
//!   Every input whose outcome depends on time takes `now`. A `handle_*`
//!   returns only its verdict on the input it was given: `Ok`, a typed
//!   error (and then nothing changed), or the decoded input itself where it
//!   borrows from the caller's bytes (`PeerSession::handle_message` returns
//!   the message; `GapTracker::handle_message` says whether it was new).
//!   A spurious `handle_timeout` is a no-op.
//! - **requests of the application** that are not inputs are plain verbs
//!   (`send`, `accept`, `queue_post`, `sync`), never I/O.
//! - **outputs** come out of `poll_*` methods, called after every input until
//!   they return nothing: `poll_transmit` writes bytes or a message to send
//!   into a buffer the caller owns and returns its length;
//!   `poll_event() -> Option<XEvent>` hands over what the application must
//!   learn or do, each machine with its own event type named after it
//!   (`ConnectionEvent`, `PeerEvent`, `ServerEvent`, `ClientEvent`,
//!   `GapEvent`, `RecoveryEvent`, `AutoMoveEvent`);
//!   `poll_timeout() -> Option<Instant>` tells when `handle_timeout` is due
//!   (a machine with no timers has none). No machine needs a periodic tick:
//!   its deadlines are a table whose minimum `poll_timeout` returns, and a
//!   deadline moves once it fired.
//! - **long work** is done in bounded steps that the driver calls and can
//!   interleave with everything else: `ServerClient::poll_work(now,
//!   budget)` tries at most `POW_STEP_MAX` hashes of a proof of work; no
//!   call of any machine does more than a bounded amount of work.
//! - **time** comes in two kinds, kept apart by the compiler: monotonic
//!   [`Instant`] for deadlines, and wall-clock [`UnixMicros`] (ours) versus
//!   [`ClaimedTime`] (another party's), compared only through a function
//!   that states the allowed skew ([`time`]).
//! - **randomness** is an argument (`rand_core::CryptoRng`), so tests and
//!   fuzzers are reproducible;
//! - **errors** are typed values; no input can cause a panic, and memory is
//!   bounded by the types (`heapless` tables with stated capacities).
//!
//! The machines: [`connection::Connection`] (a link: handshake and
//! channel), [`peer::PeerSession`] (the rules of a peer link),
//! [`server::ServerSession`] and [`server::ServerClient`] (both sides of the
//! server protocol), [`group::GapTracker`] (missing messages),
//! [`group::recovery::Recovery`] (when to ask members for them),
//! [`group::moving::AutoMove`] (when a group moves by itself). Tables with
//! the same verbs: [`group::recovery::OpenRequests`] (answers we take),
//! [`group::recovery::AnswerBudget`] (answers we give).
//!
//! A driver (the `cwtch-node` crate, or the example below) is a loop:
//! read bytes → `handle_input`; do bounded work while some is wanted; drain
//! `poll_transmit` → write; drain `poll_event` → act; sleep until the
//! earliest `poll_timeout` or the next input. `cwtch-proto/tests/world.rs`
//! drives every machine at once, two peers and a server on a virtual clock,
//! with no sockets.
//!
//! ```
//! use cwtch_proto::channel::frame::FRAME_LEN;
//! use cwtch_proto::connection::{Config, Connection, ConnectionEvent};
//! use cwtch_proto::{Identity, Instant};
//! # use rand_core::SeedableRng;
//! # let mut rng = chacha20::ChaCha20Rng::from_seed([7; 32]); // any CryptoRng
//!
//! let (alice, bob) = (Identity::generate(&mut rng), Identity::generate(&mut rng));
//! let now = Instant::ZERO; // the driver's clock
//! let mut a = Connection::initiator(Config::default(), alice, bob.public(), &mut rng, now);
//! let mut b = Connection::responder(Config::default(), bob, &mut rng, now);
//!
//! // One turn of the loop for one side: transmit, then handle input, then events.
//! fn turn(conn: &mut Connection, wire_in: &mut Vec<u8>, wire_out: &mut Vec<u8>,
//!         got: &mut Vec<Vec<u8>>, now: Instant) {
//!     let mut buf = [0u8; FRAME_LEN];
//!     while let Ok(Some(n)) = conn.poll_transmit(now, &mut buf) {
//!         wire_out.extend_from_slice(&buf[..n]); // a real driver writes to its socket
//!     }
//!     loop {
//!         let consumed = conn.handle_input(wire_in, now).expect("valid input");
//!         wire_in.drain(..consumed);
//!         let mut any = false;
//!         while let Some(event) = conn.poll_event() {
//!             any = true;
//!             match event {
//!                 ConnectionEvent::IncomingPeer { .. } => conn.accept(now).expect("accept"),
//!                 ConnectionEvent::Message(m) => got.push(m.to_vec()),
//!                 _ => {}
//!             }
//!         }
//!         if !any || wire_in.is_empty() { break; }
//!     }
//!     // ...and a real driver sleeps until `conn.poll_timeout()` or new input.
//! }
//!
//! let (mut a_to_b, mut b_to_a, mut got_a, mut got_b) = (vec![], vec![], vec![], vec![]);
//! for _ in 0..4 {
//!     turn(&mut a, &mut b_to_a, &mut a_to_b, &mut got_a, now);
//!     turn(&mut b, &mut a_to_b, &mut b_to_a, &mut got_b, now);
//!     if a.can_send() && got_b.is_empty() { a.send(b"hello, bob").unwrap(); }
//! }
//! assert_eq!(got_b, vec![b"hello, bob".to_vec()]);
//! ```
//!
//! `cwtch-proto/examples/tcp_pair.rs` runs the same loop over blocking
//! `std::net` sockets.
//!
//! ## Panic policy
//!
//! A panic is a bug. No `unwrap`, `expect` or slice indexing is reachable
//! from input; fixed-size indexing is only used where the bounds are
//! constants checked by the compiler or proven by the surrounding code.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "std")]
extern crate std;

// The `fuzzing` feature replaces X25519 and ed25519 with insecure hashes
// (see `dh.rs`): refuse to build it anywhere but under `cargo fuzz`.
#[cfg(all(feature = "fuzzing", not(fuzzing)))]
compile_error!("the `fuzzing` feature disables the cryptography; only `cargo fuzz` may enable it");

mod dh;

pub mod channel;
pub mod connection;
pub mod group;
pub mod handshake;
pub mod identity;
pub mod mailbox;
pub mod onion;
pub mod peer;
pub mod server;
pub mod time;
pub mod wire;

pub use identity::{Identity, PublicIdentity};
pub use onion::OnionAddress;
pub use time::{ClaimedTime, Duration, Instant, UnixMicros};
