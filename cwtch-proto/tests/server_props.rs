//! Property tests of the server session against a reference model: for any
//! interleaving of posts from this and other connections, group commits,
//! fetches, subscriptions, pruning and reads, every message the client
//! receives is exactly the one the model expects, nothing is skipped, and the
//! session's state stays bounded.

mod server_common;

use std::collections::VecDeque;

use cwtch_proto::server::session::{MAX_PENDING_POSTS, MAX_SERVER_EVENTS};
use cwtch_proto::server::wire::MAX_SERVER_MESSAGE_LEN;
use cwtch_proto::server::{
    RefusalReason, Request, RequestKind, ServerConfig, ServerSession, ServerSessionError,
};
use cwtch_proto::{Duration, Instant};
use proptest::prelude::*;
use server_common::*;

#[derive(Clone, Debug)]
enum Op {
    /// This connection posts (queued behind earlier requests).
    Post,
    /// Other connections post this many blobs.
    Elsewhere(u8),
    /// Group commit, broadcast to the session.
    Commit,
    Fetch {
        back: u8,
        limit: u16,
    },
    Subscribe {
        back: u8,
    },
    Unsubscribe,
    /// The client reads up to this many messages.
    Read(u8),
    /// Retention drops the older half.
    Prune,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Post),
        3 => (1u8..20).prop_map(Op::Elsewhere),
        3 => Just(Op::Commit),
        2 => (any::<u8>(), 1u16..40).prop_map(|(back, limit)| Op::Fetch { back, limit }),
        1 => any::<u8>().prop_map(|back| Op::Subscribe { back }),
        1 => Just(Op::Unsubscribe),
        4 => (1u8..50).prop_map(Op::Read),
        1 => Just(Op::Prune),
    ]
}

#[derive(Default)]
struct Model {
    /// Requests the client sent that the session has not taken yet.
    channel: VecDeque<Vec<u8>>,
    next_seq: u64,
    acks: VecDeque<(u64, u64)>,
    page: Option<(u64, u16)>,
    server_sub: bool,
    client_sub: Option<u64>,
    immediates: VecDeque<R>,
    /// The tag of the blob this connection posted at each index.
    own_tags: std::collections::HashMap<u64, u64>,
}

impl Model {
    fn tag_at(&self, index: u64) -> u64 {
        self.own_tags.get(&index).copied().unwrap_or(index)
    }
}

fn encode(r: Request<'_>) -> Vec<u8> {
    let mut m = vec![0u8; r.encoded_len()];
    r.encode(&mut m).unwrap();
    m
}

/// The smallest stored index greater than `after`, if durable.
fn next_stored(store: &MemStore, after: u64) -> Option<u64> {
    store
        .entries
        .iter()
        .map(|(i, _)| *i)
        .find(|i| *i > after)
        .filter(|i| *i <= store.durable)
}

impl Model {
    /// The driver hands over requests while the session wants them.
    fn feed(&mut self, s: &mut ServerSession, store: &mut MemStore, page_max: u16, now: Instant) {
        while s.wants_request() {
            let Some(m) = self.channel.pop_front() else {
                return;
            };
            match Request::decode(&m).unwrap() {
                Request::Post { blob, .. } => {
                    let index = store.last_index + 1;
                    self.own_tags.insert(index, tag_of(blob));
                    self.acks.push_back((self.next_seq, index));
                    self.next_seq += 1;
                }
                Request::Fetch { after, limit } => self.page = Some((after, limit.min(page_max))),
                Request::Subscribe { after } => {
                    if self.server_sub {
                        self.immediates
                            .push_back(R::Refused(cwtch_proto::server::ServerRefusal {
                                request: RequestKind::Subscribe,
                                seq: 0,
                                reason: RefusalReason::TooManySubscriptions,
                            }));
                    } else {
                        self.server_sub = true;
                        self.immediates.push_back(R::Subscribed { after });
                    }
                }
                Request::Unsubscribe => {
                    self.server_sub = false;
                    self.immediates.push_back(R::Unsubscribed);
                }
                // The model's store has no advert.
                Request::GetAdvert => {
                    self.immediates
                        .push_back(R::Refused(cwtch_proto::server::ServerRefusal {
                            request: RequestKind::GetAdvert,
                            seq: 0,
                            reason: RefusalReason::Unavailable,
                        }));
                }
            }
            s.handle_message(&m, now, store).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn session_matches_the_model(ops in proptest::collection::vec(op(), 1..150), page_max in 1u16..20) {
        let now = Instant::from_secs(5);
        let mut store = MemStore::new();
        let cfg = ServerConfig { page_max, rate_interval: Duration::ZERO, ..ServerConfig::default() };
        let mut s = ServerSession::new(cfg, &store, &mut rng(1), now);
        let size = core::mem::size_of_val(&s);
        let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
        let mut m = Model::default();
        prop_assert!(matches!(next(&mut s, &store), Some(R::Hello(_))));

        let mut read_one = |s: &mut ServerSession, store: &mut MemStore, m: &mut Model| -> Result<bool, TestCaseError> {
            m.feed(s, store, page_max, now);
            let Some(len) = s.poll_transmit(&*store, &mut buf).unwrap() else { return Ok(false) };
            let got = owned(&buf[..len]);
            let durable = store.durable;
            if let Some(expected) = m.immediates.pop_front() {
                prop_assert_eq!(&got, &expected);
                match got {
                    R::Subscribed { after } => m.client_sub = Some(after),
                    R::Unsubscribed => m.client_sub = None,
                    _ => {}
                }
                return Ok(true);
            }
            match got {
                R::Posted { seq, index } => {
                    prop_assert!(index <= durable, "ack before durability");
                    prop_assert_eq!(m.acks.pop_front(), Some((seq, index)), "acks in post order");
                }
                R::Entry { index, tag } => {
                    let (last, left) = m.page.expect("a page is open");
                    prop_assert!(left > 0);
                    prop_assert_eq!(Some(index), next_stored(store, last), "no entry skipped");
                    prop_assert_eq!(tag, m.tag_at(index));
                    m.page = Some((index, left - 1));
                }
                R::PageEnd { next, head } => {
                    let (last, left) = m.page.take().expect("a page is open");
                    prop_assert_eq!(head, durable);
                    if left == 0 {
                        prop_assert_eq!(next, last);
                    } else {
                        prop_assert_eq!(next_stored(store, last), None, "page ended early");
                        prop_assert_eq!(next, last.max(durable));
                    }
                }
                R::Push { index, tag } => {
                    let last = m.client_sub.expect("subscribed");
                    prop_assert!(m.page.is_none(), "pushes never interleave a page");
                    prop_assert_eq!(Some(index), next_stored(store, last), "no push skipped");
                    prop_assert_eq!(tag, m.tag_at(index));
                    m.client_sub = Some(index);
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
            while s.poll_event().is_some() {}
            Ok(true)
        };

        for op in ops {
            match op {
                Op::Post => {
                    let tag = 1_000_000 + m.channel.len() as u64;
                    m.channel.push_back(encode(Request::Post { pow: None, blob: &blob(tag) }));
                }
                Op::Elsewhere(n) => {
                    for _ in 0..n {
                        let i = store.last_index + 1;
                        store.entries.push((i, Box::new(blob(i))));
                        store.last_index = i;
                    }
                }
                Op::Commit => s.handle_durable(store.commit()),
                Op::Fetch { back, limit } => {
                    let after = store.durable.saturating_sub(u64::from(back));
                    m.channel.push_back(encode(Request::Fetch { after, limit }));
                }
                Op::Subscribe { back } => {
                    let after = store.durable.saturating_sub(u64::from(back));
                    m.channel.push_back(encode(Request::Subscribe { after }));
                }
                Op::Unsubscribe => m.channel.push_back(encode(Request::Unsubscribe)),
                Op::Prune => store.prune(store.durable / 2),
                Op::Read(n) => {
                    for _ in 0..n {
                        if !read_one(&mut s, &mut store, &mut m)? {
                            break;
                        }
                    }
                }
            }
            // A request the session does not want is refused and changes nothing.
            if !s.wants_request() {
                let before = store.entries.len();
                prop_assert_eq!(
                    s.handle_message(&encode(Request::Unsubscribe), now, &mut store),
                    Err(ServerSessionError::Busy)
                );
                prop_assert_eq!(store.entries.len(), before);
            }
            prop_assert_eq!(core::mem::size_of_val(&s), size);
            prop_assert!(s.queued_items() <= 1 + MAX_PENDING_POSTS + MAX_SERVER_EVENTS);
        }

        // Liveness: once everything is durable and read, nothing is left behind.
        for _ in 0..100_000 {
            m.feed(&mut s, &mut store, page_max, now);
            s.handle_durable(store.commit());
            if !read_one(&mut s, &mut store, &mut m)? && m.channel.is_empty() {
                break;
            }
        }
        prop_assert!(m.acks.is_empty(), "every post acknowledged");
        prop_assert!(m.page.is_none(), "every page ended");
        prop_assert!(m.immediates.is_empty());
        if let Some(cursor) = m.client_sub {
            prop_assert_eq!(next_stored(&store, cursor), None, "the subscriber caught up");
        }
    }
}
