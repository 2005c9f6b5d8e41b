//! A server session driven by an arbitrary sequence of steps (request bytes,
//! well-formed requests, durability, posts from elsewhere, time, reads with
//! arbitrary buffer sizes, close): never a panic, every output a valid reply,
//! and the session's queues stay within their fixed bounds.
#![no_main]

use arbitrary::Arbitrary;
use cwtch_proto::group::SEALED_BLOB_LEN;
use cwtch_proto::server::session::{MAX_PENDING_POSTS, MAX_SERVER_EVENTS};
use cwtch_proto::server::wire::MAX_SERVER_MESSAGE_LEN;
use cwtch_proto::server::{
    BlobStore, Reply, Request, ServerConfig, ServerSession, ServerSessionError, StoreError,
};
use cwtch_proto::{Duration, Instant};
use libfuzzer_sys::fuzz_target;

#[derive(Default)]
struct Store {
    entries: Vec<(u64, u8)>,
    last: u64,
    durable: u64,
    full: bool,
    broken: bool,
}

impl BlobStore for Store {
    fn append(&mut self, blob: &[u8; SEALED_BLOB_LEN]) -> Result<u64, StoreError> {
        if self.broken {
            return Err(StoreError::Unavailable);
        }
        if self.full || self.entries.len() >= 4096 {
            return Err(StoreError::Full);
        }
        self.last += 1;
        self.entries.push((self.last, blob[0]));
        Ok(self.last)
    }
    fn read_after(
        &self,
        after: u64,
        out: &mut [u8; SEALED_BLOB_LEN],
    ) -> Result<Option<u64>, StoreError> {
        if self.broken {
            return Err(StoreError::Unavailable);
        }
        let pos = self.entries.partition_point(|(i, _)| *i <= after);
        Ok(self.entries.get(pos).map(|(i, b)| {
            out.fill(*b);
            *i
        }))
    }
    fn durable_head(&self) -> u64 {
        self.durable
    }
}

#[derive(Arbitrary, Debug)]
enum Step {
    Bytes(Vec<u8>),
    Post {
        pow: Option<u64>,
        fill: u8,
    },
    Fetch {
        after: u8,
        limit: u16,
    },
    Subscribe {
        after: u8,
    },
    Unsubscribe,
    /// The driver commits everything and tells the session.
    Durable,
    /// A durable watermark out of thin air (even backwards).
    DurableRaw(u64),
    /// Another connection posts this many blobs.
    Elsewhere(u8),
    Advance(u32),
    Timeout,
    Transmit(u16),
    Drain,
    Close,
    Prune(u8),
    Toggle {
        full: bool,
        broken: bool,
        accepting: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    pow_bits: u8,
    page_max: u8,
    burst: u8,
    interval_ms: u16,
    idle_s: u8,
    steps: Vec<Step>,
}

fn check(s: &ServerSession) {
    assert!(s.queued_items() <= 1 + MAX_PENDING_POSTS + MAX_SERVER_EVENTS);
}

fuzz_target!(|input: Input| {
    let config = ServerConfig {
        pow_bits: input.pow_bits % 6,
        page_max: u16::from(input.page_max),
        rate_burst: u16::from(input.burst),
        rate_interval: Duration::from_millis(u64::from(input.interval_ms)),
        retention_max_entries: 0,
        retention_max_age_secs: 0,
        idle_timeout: Duration::from_secs(u64::from(input.idle_s)),
    };
    let mut store = Store::default();
    let mut now = Instant::from_secs(1);
    let mut s = ServerSession::new_for_fuzzing(config, &store, now);
    let mut buf = vec![0u8; MAX_SERVER_MESSAGE_LEN];
    let mut msg = vec![0u8; MAX_SERVER_MESSAGE_LEN];
    for step in input.steps.into_iter().take(2000) {
        let request = |r: Request<'_>, msg: &mut Vec<u8>| {
            let n = r.encode(msg).expect("fits");
            msg[..n].to_vec()
        };
        let bytes = match step {
            Step::Bytes(b) => Some(b),
            Step::Post { pow, fill } => Some(request(
                Request::Post {
                    pow,
                    blob: &[fill; SEALED_BLOB_LEN],
                },
                &mut msg,
            )),
            Step::Fetch { after, limit } => Some(request(
                Request::Fetch {
                    after: u64::from(after),
                    limit: limit.max(1),
                },
                &mut msg,
            )),
            Step::Subscribe { after } => Some(request(
                Request::Subscribe {
                    after: u64::from(after),
                },
                &mut msg,
            )),
            Step::Unsubscribe => Some(request(Request::Unsubscribe, &mut msg)),
            Step::Durable => {
                store.durable = store.last;
                s.handle_durable(store.durable);
                None
            }
            Step::DurableRaw(d) => {
                s.handle_durable(d);
                None
            }
            Step::Elsewhere(n) => {
                for k in 0..n {
                    let _ = store.append(&[k; SEALED_BLOB_LEN]);
                }
                None
            }
            Step::Advance(ms) => {
                now = now + Duration::from_millis(u64::from(ms));
                None
            }
            Step::Timeout => {
                s.handle_timeout(now);
                if let Some(t) = s.poll_timeout() {
                    assert!(t > now, "a fired deadline must move");
                }
                None
            }
            Step::Transmit(len) => {
                let len = usize::from(len).min(buf.len());
                match s.poll_transmit(&store, &mut buf[..len]) {
                    Ok(Some(n)) => {
                        assert!(n <= len);
                        Reply::decode(&buf[..n]).expect("valid reply");
                    }
                    Ok(None) => {}
                    Err(ServerSessionError::BufferTooSmall(e)) => assert!(e.required > len),
                    Err(e) => panic!("unexpected {e:?}"),
                }
                None
            }
            Step::Drain => {
                for _ in 0..10_000 {
                    match s.poll_transmit(&store, &mut buf) {
                        Ok(Some(n)) => {
                            Reply::decode(&buf[..n]).expect("valid reply");
                        }
                        Ok(None) => break,
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
                while s.poll_event().is_some() {}
                None
            }
            Step::Close => {
                s.close();
                None
            }
            Step::Prune(upto) => {
                store.entries.retain(|(i, _)| *i > u64::from(upto));
                None
            }
            Step::Toggle {
                full,
                broken,
                accepting,
            } => {
                store.full = full;
                store.broken = broken;
                s.set_accepting_subscriptions(accepting);
                None
            }
        };
        if let Some(bytes) = bytes {
            let wanted = s.wants_request();
            let entries = store.entries.len();
            match s.handle_message(&bytes, now, &mut store) {
                Ok(()) => assert!(wanted),
                Err(ServerSessionError::Busy | ServerSessionError::Closed) => {
                    assert!(!wanted);
                    assert_eq!(
                        store.entries.len(),
                        entries,
                        "a refused input changes nothing"
                    );
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        check(&s);
    }
});
