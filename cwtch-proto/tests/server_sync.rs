//! Client and server state machines wired together in memory, on a virtual
//! clock: full syncs, live pushes between clients, reconnection, PoW.

mod server_common;

use std::collections::VecDeque;

use cwtch_proto::group::SEALED_BLOB_LEN;
use cwtch_proto::server::advert::ADVERT_LEN;
use cwtch_proto::server::client::{ANSWER_TIMEOUT, MAX_QUEUED_POSTS, STALL_TIMEOUT};
use cwtch_proto::server::wire::{
    FULL_RETRY, MAX_RETRY, MAX_SERVER_MESSAGE_LEN, RequestKind, ServerRefusal,
};
use cwtch_proto::server::{
    ClientConfig, ClientError, ClientEvent, DecodeError, PostId, RefusalReason, Reply, Request,
    ServerClient, ServerConfig, ServerSession,
};
use cwtch_proto::{Duration, Instant};
use server_common::*;

/// How many messages a channel holds in each direction before the writer
/// must wait: a small window, so back-pressure is exercised.
const WINDOW: usize = 4;

/// The clock of tests that do not advance it.
const NOW: Instant = Instant::from_secs(1_000);

struct Link {
    client: ServerClient,
    session: ServerSession,
    to_server: VecDeque<Vec<u8>>,
    to_client: VecDeque<Vec<u8>>,
    blobs: Vec<(u64, u64, bool)>,
    events: Vec<ClientEvent>,
}

struct World {
    now: Instant,
    store: MemStore,
    links: Vec<Link>,
    /// Commit (fsync) every this many steps: group commit.
    commit_every: u64,
    steps: u64,
}

impl World {
    fn new(commit_every: u64) -> Self {
        World {
            now: Instant::from_secs(1_000),
            store: MemStore::new(),
            links: Vec::new(),
            commit_every,
            steps: 0,
        }
    }

    fn connect(
        &mut self,
        server: ServerConfig,
        client: ClientConfig,
        cursor: u64,
        seed: u8,
    ) -> usize {
        let session = ServerSession::new(server, &self.store, &mut rng(seed), self.now);
        let client = ServerClient::new(client, cursor, &mut rng(seed.wrapping_add(100)));
        self.links.push(Link {
            client,
            session,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            blobs: Vec::new(),
            events: Vec::new(),
        });
        self.links.len() - 1
    }

    /// One step of every party; returns whether anything moved.
    fn step(&mut self) -> bool {
        self.steps += 1;
        self.now = self.now + Duration::from_millis(10);
        let mut moved = false;
        if self.steps.is_multiple_of(self.commit_every)
            && self.store.durable != self.store.last_index
        {
            let durable = self.store.commit();
            for l in &mut self.links {
                l.session.handle_durable(durable);
            }
            moved = true;
        }
        let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
        for l in &mut self.links {
            // Server: write while the channel has room, read while it wants.
            while l.to_client.len() < WINDOW {
                match l.session.poll_transmit(&self.store, &mut buf).unwrap() {
                    Some(n) => {
                        l.to_client.push_back(buf[..n].to_vec());
                        moved = true;
                    }
                    None => break,
                }
            }
            while let Some(_e) = l.session.poll_event() {}
            while l.session.wants_request() {
                let Some(msg) = l.to_server.pop_front() else {
                    break;
                };
                l.session
                    .handle_message(&msg, self.now, &mut self.store)
                    .unwrap();
                moved = true;
            }
            // Client: one reply at a time, events drained after each.
            while let Some(msg) = l.to_client.pop_front() {
                l.client.handle_message(&msg, self.now).unwrap();
                moved = true;
                while let Some(e) = l.client.poll_event() {
                    if let ClientEvent::Blob { index, blob, live } = &e {
                        l.blobs.push((*index, tag_of(blob), *live));
                    } else {
                        l.events.push(e);
                    }
                }
            }
            l.client.handle_timeout(self.now);
            // The proof of work, in bounded steps.
            while l.client.wants_work(self.now) {
                l.client.poll_work(self.now, 1 << 12);
                moved = true;
            }
            while l.to_server.len() < WINDOW {
                match l.client.poll_transmit(self.now, &mut buf).unwrap() {
                    Some(n) => {
                        l.to_server.push_back(buf[..n].to_vec());
                        moved = true;
                    }
                    None => break,
                }
            }
        }
        moved
    }

    fn run(&mut self) {
        let mut quiet = 0;
        for _ in 0..100_000 {
            if self.step() {
                quiet = 0;
            } else {
                quiet += 1;
                if quiet > self.commit_every + 2 {
                    return;
                }
            }
        }
        panic!("the simulation did not settle");
    }

    /// Hands the client a post named `tag`; it goes out with the next step.
    fn post(&mut self, link: usize, tag: u64) -> PostId {
        let id = PostId(tag);
        self.links[link].client.queue_post(id, &blob(tag)).unwrap();
        id
    }

    /// Lets virtual time pass.
    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
    }
}

fn server() -> ServerConfig {
    ServerConfig {
        pow_bits: 6,
        page_max: 32,
        rate_interval: Duration::ZERO,
        ..ServerConfig::default()
    }
}

fn client() -> ClientConfig {
    ClientConfig {
        page_len: 50,
        ..ClientConfig::default()
    }
}

#[test]
fn full_sync_then_live_pushes_between_two_clients() {
    let mut w = World::new(3);
    // Someone filled the server first.
    let filler = w.connect(server(), client(), 0, 1);
    w.run();
    for k in 1..=150 {
        w.post(filler, k);
        if k % 10 == 0 {
            w.run();
        }
    }
    w.run();
    let posted: Vec<_> = w.links[filler]
        .events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Posted { post, index } => Some((post.0, *index)),
            _ => None,
        })
        .collect();
    assert_eq!(posted, (1..=150).map(|k| (k, k)).collect::<Vec<_>>());

    // A new reader syncs 150 entries in pages of at most 32, then subscribes.
    let a = w.connect(server(), client(), 0, 2);
    let b = w.connect(server(), client(), 0, 3);
    w.run();
    let la = &w.links[a];
    assert_eq!(la.blobs.len(), 150);
    assert!(
        la.blobs
            .iter()
            .enumerate()
            .all(|(i, &(index, tag, live))| { index == i as u64 + 1 && tag == index && !live })
    );
    let pages = la
        .events
        .iter()
        .filter(|e| matches!(e, ClientEvent::PageEnd { .. }))
        .count();
    assert_eq!(pages, 5, "150 entries in pages of 32");
    assert!(la.events.contains(&ClientEvent::Synced { cursor: 150 }));
    assert!(la.events.contains(&ClientEvent::Subscribed));
    assert!(la.client.is_subscribed());
    assert_eq!(la.client.cursor(), 150);
    assert!(matches!(la.events[0], ClientEvent::Connected(p) if p.pow_bits == 6));

    // B posts; A (and B itself) get live pushes once durable.
    for k in 1000..1005 {
        w.post(b, k);
    }
    w.run();
    let live: Vec<_> = w.links[a]
        .blobs
        .iter()
        .filter(|b| b.2)
        .map(|b| (b.0, b.1))
        .collect();
    assert_eq!(
        live,
        (0..5).map(|i| (151 + i, 1000 + i)).collect::<Vec<_>>()
    );
    assert_eq!(w.links[a].client.cursor(), 155);
    assert!(w.links[b].events.contains(&ClientEvent::Posted {
        post: PostId(1004),
        index: 155
    }));
    let b_live = w.links[b].blobs.iter().filter(|b| b.2).count();
    assert_eq!(b_live, 5, "a poster that subscribes sees its own posts too");

    // Unsubscribe: no more pushes.
    w.links[a].client.unsubscribe();
    w.run();
    assert!(w.links[a].events.contains(&ClientEvent::Unsubscribed));
    w.post(b, 2000);
    w.run();
    assert_eq!(w.links[a].client.cursor(), 155);
}

#[test]
fn reconnecting_with_a_saved_cursor_and_jitter_fetches_only_new_entries() {
    let mut w = World::new(1);
    let filler = w.connect(server(), client(), 0, 1);
    w.run();
    for k in 1..=120 {
        w.post(filler, k);
        if k % 8 == 0 {
            w.run();
        }
    }
    w.run();
    let cfg = ClientConfig {
        cursor_jitter: 30,
        ..client()
    };
    let r = w.connect(server(), cfg, 100, 7);
    w.run();
    let l = &w.links[r];
    let got: Vec<u64> = l.blobs.iter().map(|b| b.0).collect();
    assert_eq!(
        got,
        (101..=120).collect::<Vec<_>>(),
        "no duplicates, nothing missed"
    );
    assert_eq!(l.client.cursor(), 120);
}

#[test]
fn sync_while_others_post_converges() {
    let mut w = World::new(2);
    let writers: Vec<_> = (0..3)
        .map(|i| w.connect(server(), client(), 0, 10 + i))
        .collect();
    w.run();
    let reader = w.connect(server(), client(), 0, 20);
    for round in 0..40u64 {
        for (i, &wr) in writers.iter().enumerate() {
            w.post(wr, round * 10 + i as u64);
        }
        w.step();
        w.step();
    }
    w.run();
    let head = w.store.durable;
    assert_eq!(head, 120);
    for l in &w.links {
        let idx: Vec<u64> = l.blobs.iter().map(|b| b.0).collect();
        assert_eq!(
            idx,
            (1..=head).collect::<Vec<_>>(),
            "every client has every entry once, in order"
        );
    }
    assert_eq!(w.links[reader].client.cursor(), head);
}

#[test]
fn rate_limited_and_pow_refusals_reach_the_client_as_events() {
    let mut w = World::new(1);
    let cfg = ServerConfig {
        rate_burst: 2,
        rate_interval: Duration::from_secs(60),
        ..server()
    };
    let c = w.connect(cfg, client(), 0, 1);
    w.run();
    for k in 0..3 {
        w.post(c, k);
    }
    w.run();
    let l = &w.links[c];
    let posted = |l: &Link, id: u64| {
        l.events
            .iter()
            .any(|e| matches!(e, ClientEvent::Posted { post, .. } if post.0 == id))
    };
    assert!(posted(l, 0) && posted(l, 1) && !posted(l, 2));
    let retry_at = l
        .events
        .iter()
        .find_map(|e| match e {
            ClientEvent::PostRefused {
                post: PostId(2),
                reason: RefusalReason::RateLimited { .. },
                retry_at,
            } => Some(*retry_at),
            _ => None,
        })
        .expect("the third post is refused for now");
    let retry_at = retry_at.expect("a rate-limited post is posted again");
    // The client holds it and says when; nothing goes out before.
    assert_eq!(l.client.poll_timeout(), Some(retry_at));
    assert_eq!(l.client.queue_room(), MAX_QUEUED_POSTS - 1);
    // When the time comes it is posted again, by the client alone, and
    // stored; the deadline is gone.
    w.advance(Duration::from_secs(61));
    w.run();
    let l = &w.links[c];
    assert!(posted(l, 2), "{:?}", l.events);
    assert_eq!(l.client.poll_timeout(), None);
    assert_eq!(l.client.queue_room(), MAX_QUEUED_POSTS);
}

/// A refusal that waiting cannot cure drops the post, and says so.
#[test]
fn a_refusal_that_waiting_cannot_cure_drops_the_post() {
    let mut c = ready_client(0);
    let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
    let seq = send(&mut c, 9, &blob(9), &mut buf);
    c.handle_message(
        &encode(Reply::Refused(ServerRefusal {
            request: RequestKind::Post,
            seq,
            reason: RefusalReason::Malformed,
        })),
        NOW,
    )
    .unwrap();
    assert_eq!(
        c.poll_event(),
        Some(ClientEvent::PostRefused {
            post: PostId(9),
            reason: RefusalReason::Malformed,
            retry_at: None
        })
    );
    assert_eq!(c.queue_room(), MAX_QUEUED_POSTS);
    // An answer to the same post again is a protocol break.
    assert_eq!(
        c.handle_message(&encode(Reply::Posted { seq, index: 1 }), NOW),
        Err(ClientError::Unexpected)
    );
}

/// The proof of work is done in bounded steps: no call tries more than
/// POW_STEP_MAX hashes, and the post goes out only once it is found.
#[test]
fn proof_of_work_is_done_in_bounded_steps() {
    let mut c = ready_client(12);
    let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
    c.queue_post(PostId(1), &blob(1)).unwrap();
    assert!(c.wants_work(NOW));
    assert_eq!(
        c.poll_transmit(NOW, &mut buf),
        Ok(None),
        "not before the work"
    );
    let mut steps = 0;
    while c.poll_work(NOW, 64) {
        steps += 1;
        assert!(steps < 100_000, "the work ends");
    }
    assert!(!c.wants_work(NOW));
    let n = c.poll_transmit(NOW, &mut buf).unwrap().unwrap();
    match Request::decode(&buf[..n]).unwrap() {
        Request::Post {
            pow: Some(nonce),
            blob: b,
        } => {
            let challenge = c.policy().unwrap().challenge;
            assert!(cwtch_proto::server::pow_verify(&challenge, 0, b, nonce, 12));
        }
        other => panic!("{other:?}"),
    }
    // A budget above the step is capped: one call never does more.
    let mut d = ready_client(30);
    d.queue_post(PostId(2), &blob(2)).unwrap();
    assert!(!d.wants_work(NOW), "30 bits is more than the client pays");
    assert_eq!(d.poll_transmit(NOW, &mut buf), Ok(None));
    assert_eq!(d.poll_event(), Some(ClientEvent::PowTooHard { bits: 30 }));
    let mut e = ready_client(20);
    e.queue_post(PostId(3), &blob(3)).unwrap();
    let t = std::time::Instant::now();
    e.poll_work(NOW, u64::MAX);
    // 2^16 hashes of 2 KiB take well under a second even in a debug build;
    // 2^20 (what an uncapped call could try) would take several.
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}

/// Queues `blob` as post `id` and sends it at once: its sequence number.
fn send(c: &mut ServerClient, id: u64, blob: &[u8; SEALED_BLOB_LEN], buf: &mut [u8]) -> u64 {
    let seq = c.next_post_seq();
    c.queue_post(PostId(id), blob).unwrap();
    let n = c.poll_transmit(NOW, buf).unwrap().unwrap();
    assert!(matches!(
        Request::decode(&buf[..n]),
        Ok(Request::Post { .. })
    ));
    seq
}

fn ready_client(pow_bits: u8) -> ServerClient {
    ready_client_with(ServerConfig {
        pow_bits,
        ..server()
    })
}

fn ready_client_with(cfg: ServerConfig) -> ServerClient {
    let store = MemStore::new();
    let mut s = ServerSession::new(cfg, &store, &mut rng(1), Instant::ZERO);
    let mut c = ServerClient::new(
        ClientConfig {
            auto_sync: false,
            ..client()
        },
        0,
        &mut rng(2),
    );
    let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
    let n = s.poll_transmit(&store, &mut buf).unwrap().unwrap();
    c.handle_message(&buf[..n], NOW).unwrap();
    assert!(matches!(c.poll_event(), Some(ClientEvent::Connected(_))));
    c
}

fn encode(r: Reply<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; r.encoded_len()];
    r.encode(&mut buf).unwrap();
    buf
}

#[test]
fn client_misuse_and_server_misbehaviour_are_typed_errors() {
    let mut rng0 = rng(0);
    let mut c = ServerClient::new(client(), 0, &mut rng0);
    let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
    // Nothing before the hello.
    c.queue_post(PostId(1), &blob(1)).unwrap();
    assert_eq!(
        c.poll_transmit(NOW, &mut buf),
        Ok(None),
        "nothing before the hello"
    );
    assert_eq!(c.poll_transmit(NOW, &mut buf), Ok(None));
    assert_eq!(
        c.handle_message(&encode(Reply::Unsubscribed), NOW),
        Err(ClientError::Unexpected)
    );
    // Malformed replies.
    assert_eq!(
        c.handle_message(&[], NOW),
        Err(ClientError::Malformed(DecodeError::Empty))
    );
    assert!(matches!(
        c.handle_message(&[0x01], NOW),
        Err(ClientError::Malformed(DecodeError::UnknownTag { tag: 1 }))
    ));

    let mut c = ready_client(0);
    // Replies nobody asked for.
    let b = blob(1);
    assert_eq!(
        c.handle_message(&encode(Reply::Entry { index: 1, blob: &b }), NOW),
        Err(ClientError::Unexpected)
    );
    assert_eq!(
        c.handle_message(&encode(Reply::Push { index: 1, blob: &b }), NOW),
        Err(ClientError::Unexpected)
    );
    assert_eq!(
        c.handle_message(&encode(Reply::Posted { seq: 0, index: 1 }), NOW),
        Err(ClientError::Unexpected)
    );
    assert_eq!(
        c.handle_message(&encode(Reply::PageEnd { next: 1, head: 1 }), NOW),
        Err(ClientError::Unexpected)
    );
    // Indices going backwards inside a page.
    c.sync();
    let n = c.poll_transmit(NOW, &mut buf).unwrap().unwrap();
    assert_eq!(
        Request::decode(&buf[..n]).unwrap(),
        Request::Fetch {
            after: 0,
            limit: 50
        }
    );
    c.handle_message(&encode(Reply::Entry { index: 5, blob: &b }), NOW)
        .unwrap();
    assert_eq!(
        c.handle_message(&encode(Reply::Entry { index: 5, blob: &b }), NOW),
        Err(ClientError::Unexpected)
    );
    assert_eq!(
        c.handle_message(&encode(Reply::PageEnd { next: 4, head: 9 }), NOW),
        Err(ClientError::Unexpected)
    );
    // A page that makes no progress yet claims more: refused.
    assert_eq!(
        c.handle_message(&encode(Reply::PageEnd { next: 5, head: 9 }), NOW)
            .map(|_| ()),
        Ok(()),
        "progress from 0 to 5 is fine"
    );
    while c.poll_event().is_some() {}
    let n = c.poll_transmit(NOW, &mut buf).unwrap().unwrap();
    assert_eq!(
        Request::decode(&buf[..n]).unwrap(),
        Request::Fetch {
            after: 5,
            limit: 50
        }
    );
    assert_eq!(
        c.handle_message(&encode(Reply::PageEnd { next: 5, head: 9 }), NOW),
        Err(ClientError::Unexpected)
    );
    // Events not drained: the client refuses more input instead of queueing.
    for index in 6..=11 {
        c.handle_message(&encode(Reply::Entry { index, blob: &b }), NOW)
            .unwrap();
    }
    assert_eq!(
        c.handle_message(
            &encode(Reply::Entry {
                index: 12,
                blob: &b
            }),
            NOW
        ),
        Err(ClientError::Busy)
    );
    while c.poll_event().is_some() {}
    c.handle_message(
        &encode(Reply::Entry {
            index: 12,
            blob: &b,
        }),
        NOW,
    )
    .unwrap();
    assert_eq!(c.cursor(), 12);

    // Too small a buffer for a post changes nothing (the seq is not used up).
    let mut small = [0u8; 100];
    c.queue_post(PostId(0), &b).unwrap();
    assert!(matches!(
        c.poll_transmit(NOW, &mut small),
        Err(ClientError::BufferTooSmall(e)) if e.required == 2049
    ));
    assert_eq!(c.next_post_seq(), 0);
    assert!(c.poll_transmit(NOW, &mut buf).unwrap().is_some());
    assert_eq!(c.next_post_seq(), 1);
    // The queue is bounded: past MAX_QUEUED_POSTS, a typed error.
    for id in 1..MAX_QUEUED_POSTS as u64 {
        c.queue_post(PostId(id), &b).unwrap();
    }
    assert_eq!(c.queue_post(PostId(99), &b), Err(ClientError::QueueFull));
}

fn withheld(c: &mut ServerClient) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    while let Some(e) = c.poll_event() {
        if let ClientEvent::Withheld { index, count } = e {
            out.push((index, count));
        }
    }
    out
}

/// Only the server's own evidence counts against it (SPEC.md section
/// 13.5): it acknowledged our post at an index, then served past that index
/// without it, or served another blob there.
#[test]
fn a_server_that_skips_an_acknowledged_post_is_caught_by_its_own_ack() {
    let mut c = ready_client(0);
    let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
    let (ours, other) = (blob(1), blob(2));
    // Acknowledged at 3, then a page that goes 2, 4: index 3 was skipped.
    let id = 100 + c.next_post_seq();
    let seq = send(&mut c, id, &ours, &mut buf);
    c.handle_message(&encode(Reply::Posted { seq, index: 3 }), NOW)
        .unwrap();
    c.sync();
    let _ = c.poll_transmit(NOW, &mut buf).unwrap().unwrap();
    c.handle_message(
        &encode(Reply::Entry {
            index: 2,
            blob: &other,
        }),
        NOW,
    )
    .unwrap();
    assert_eq!(withheld(&mut c), vec![]);
    c.handle_message(
        &encode(Reply::Entry {
            index: 4,
            blob: &other,
        }),
        NOW,
    )
    .unwrap();
    assert_eq!(withheld(&mut c), vec![(3, 1)]);

    // Acknowledged at 5 and served at 5: fine.
    let id = 100 + c.next_post_seq();
    let seq = send(&mut c, id, &blob(3), &mut buf);
    c.handle_message(&encode(Reply::Posted { seq, index: 5 }), NOW)
        .unwrap();
    c.handle_message(
        &encode(Reply::Entry {
            index: 5,
            blob: &blob(3),
        }),
        NOW,
    )
    .unwrap();
    assert_eq!(withheld(&mut c), vec![]);

    // Served before its acknowledgement came: fine too.
    let id = 100 + c.next_post_seq();
    let seq = send(&mut c, id, &blob(4), &mut buf);
    c.handle_message(
        &encode(Reply::Entry {
            index: 6,
            blob: &blob(4),
        }),
        NOW,
    )
    .unwrap();
    c.handle_message(&encode(Reply::Posted { seq, index: 6 }), NOW)
        .unwrap();
    assert_eq!(withheld(&mut c), vec![]);

    // Acknowledged at 7, but another blob is served at 7.
    let id = 100 + c.next_post_seq();
    let seq = send(&mut c, id, &blob(5), &mut buf);
    c.handle_message(&encode(Reply::Posted { seq, index: 7 }), NOW)
        .unwrap();
    c.handle_message(
        &encode(Reply::Entry {
            index: 7,
            blob: &other,
        }),
        NOW,
    )
    .unwrap();
    assert_eq!(withheld(&mut c), vec![(7, 1)]);

    // Two acknowledged posts, then a page end past both: both withheld.
    for index in [8, 9] {
        let id = 100 + c.next_post_seq();
        let seq = send(&mut c, id, &blob(10 + index), &mut buf);
        c.handle_message(&encode(Reply::Posted { seq, index }), NOW)
            .unwrap();
    }
    c.handle_message(&encode(Reply::PageEnd { next: 12, head: 12 }), NOW)
        .unwrap();
    assert_eq!(withheld(&mut c), vec![(8, 2)]);
}

/// `Skipped` (after, before), `Expired` and `Withheld` (index, count).
type Judged = (Vec<(u64, u64)>, Vec<(u64, u32)>, Vec<(u64, u32)>);

fn skipped_and_expired(c: &mut ServerClient) -> Judged {
    let (mut skipped, mut expired, mut withheld) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(e) = c.poll_event() {
        match e {
            ClientEvent::Skipped { after, before } => skipped.push((after, before)),
            ClientEvent::Expired { index, count } => expired.push((index, count)),
            ClientEvent::Withheld { index, count } => withheld.push((index, count)),
            _ => {}
        }
    }
    (skipped, expired, withheld)
}

/// A post of ours pruned under the retention the server states is expired,
/// not withheld: more entries than its count limit came after it, or it is
/// older than its age limit. Entries missing from the log are told as
/// skipped either way (SPEC.md section 13.5).
#[test]
fn a_post_pruned_within_the_stated_retention_is_expired_not_withheld() {
    let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
    // By count: the server keeps 10; ours at 3, then the log is at 20.
    let mut c = ready_client_with(ServerConfig {
        retention_max_entries: 10,
        pow_bits: 0,
        ..server()
    });
    let id = 100 + c.next_post_seq();
    let seq = send(&mut c, id, &blob(1), &mut buf);
    c.handle_message(&encode(Reply::Posted { seq, index: 3 }), NOW)
        .unwrap();
    c.sync();
    let _ = c.poll_transmit(NOW, &mut buf).unwrap().unwrap();
    c.handle_message(
        &encode(Reply::Entry {
            index: 20,
            blob: &blob(9),
        }),
        NOW,
    )
    .unwrap();
    assert_eq!(
        skipped_and_expired(&mut c),
        (vec![(0, 20)], vec![(3, 1)], vec![])
    );
    // Within the count limit, the same gap is withheld.
    let mut c = ready_client_with(ServerConfig {
        retention_max_entries: 100,
        pow_bits: 0,
        ..server()
    });
    let id = 100 + c.next_post_seq();
    let seq = send(&mut c, id, &blob(1), &mut buf);
    c.handle_message(&encode(Reply::Posted { seq, index: 3 }), NOW)
        .unwrap();
    c.sync();
    let _ = c.poll_transmit(NOW, &mut buf).unwrap().unwrap();
    c.handle_message(
        &encode(Reply::Entry {
            index: 20,
            blob: &blob(9),
        }),
        NOW,
    )
    .unwrap();
    assert_eq!(
        skipped_and_expired(&mut c),
        (vec![(0, 20)], vec![], vec![(3, 1)])
    );

    // By age: the server keeps an hour; a page end past ours an hour later.
    let mut c = ready_client_with(ServerConfig {
        retention_max_age_secs: 3600,
        pow_bits: 0,
        ..server()
    });
    let id = 100 + c.next_post_seq();
    let seq = send(&mut c, id, &blob(1), &mut buf);
    c.handle_message(&encode(Reply::Posted { seq, index: 5 }), NOW)
        .unwrap();
    c.sync();
    let _ = c.poll_transmit(NOW, &mut buf).unwrap().unwrap();
    let later = NOW + Duration::from_secs(3600);
    c.handle_message(
        &encode(Reply::Entry {
            index: 1,
            blob: &blob(7),
        }),
        later,
    )
    .unwrap();
    c.handle_message(&encode(Reply::PageEnd { next: 8, head: 8 }), later)
        .unwrap();
    assert_eq!(
        skipped_and_expired(&mut c),
        (vec![(1, 9)], vec![(5, 1)], vec![])
    );
}

/// An honest server never looks withholding, however the posts, pages and
/// pushes interleave.
#[test]
fn an_honest_server_is_never_counted_as_withholding() {
    let mut w = World::new(3);
    let a = w.connect(server(), client(), 0, 1);
    let b = w.connect(server(), client(), 0, 2);
    w.run();
    for tag in 0..40 {
        w.post(if tag % 3 == 0 { b } else { a }, tag);
        if tag % 5 == 0 {
            w.run();
        }
    }
    w.run();
    for link in &w.links {
        assert!(
            !link
                .events
                .iter()
                .any(|e| matches!(e, ClientEvent::Withheld { .. })),
            "{:?}",
            link.events
        );
    }
}

/// A server whose hello says its log ends before our saved cursor (restored
/// from a backup, or lying with an index near 2^64 before) does not pin the
/// cursor: it comes back to the head, and the next sync reads from there.
#[test]
fn a_head_behind_the_cursor_brings_the_cursor_back() {
    use cwtch_proto::server::BlobStore;
    let mut store = MemStore::new();
    for tag in 0..5 {
        store.append(&blob(tag)).unwrap();
    }
    store.commit();
    let mut s = ServerSession::new(server(), &store, &mut rng(1), Instant::ZERO);
    let mut c = ServerClient::new(client(), u64::MAX - 1, &mut rng(2));
    let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
    let n = s.poll_transmit(&store, &mut buf).unwrap().unwrap();
    c.handle_message(&buf[..n], NOW).unwrap();
    assert!(matches!(c.poll_event(), Some(ClientEvent::Connected(_))));
    assert_eq!(
        c.poll_event(),
        Some(ClientEvent::HeadBehindCursor {
            cursor: u64::MAX - 1,
            head: 5
        })
    );
    assert_eq!(c.cursor(), 5);
    let n = c.poll_transmit(NOW, &mut buf).unwrap().unwrap();
    assert_eq!(
        Request::decode(&buf[..n]).unwrap(),
        Request::Fetch {
            after: 5,
            limit: 50
        }
    );
}

/// A server that keeps the connection up and never says hello does not hold
/// the client forever: after [`ANSWER_TIMEOUT`] from the first time the
/// client was given, it is closed, with an event the node acts on.
#[test]
fn a_server_that_never_says_hello_is_given_up_after_the_answer_timeout() {
    let mut c = ServerClient::new(client(), 0, &mut rng(1));
    let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
    assert_eq!(
        c.poll_timeout(),
        None,
        "no time given yet: nothing to wait for"
    );
    assert_eq!(c.poll_transmit(NOW, &mut buf), Ok(None));
    assert_eq!(c.poll_timeout(), Some(NOW + ANSWER_TIMEOUT));
    // Time going backwards moves nothing.
    c.handle_timeout(Instant::ZERO);
    c.handle_timeout(NOW + Duration::from_micros(ANSWER_TIMEOUT.as_micros() - 1_000));
    assert_eq!(c.poll_event(), None, "a millisecond early");
    c.handle_timeout(NOW + ANSWER_TIMEOUT);
    assert_eq!(
        c.poll_event(),
        Some(ClientEvent::Unanswered { request: None })
    );
    assert_eq!(c.poll_event(), None, "reported once");
    assert_eq!(c.poll_timeout(), None);
    // Closed: a late hello is not taken, nor a post.
    let store = MemStore::new();
    let mut s = ServerSession::new(server(), &store, &mut rng(2), Instant::ZERO);
    let n = s.poll_transmit(&store, &mut buf).unwrap().unwrap();
    assert_eq!(
        c.handle_message(&buf[..n], NOW + ANSWER_TIMEOUT),
        Err(ClientError::NotReady)
    );
    assert_eq!(
        c.queue_post(PostId(1), &blob(1)),
        Err(ClientError::NotReady)
    );
}

/// The liar's version: a server that answers other requests (an advert,
/// here) but never acknowledges a post is given up on at the post's
/// deadline; answers to other requests do not extend it.
#[test]
fn a_post_left_unanswered_closes_the_client_though_other_answers_come() {
    let mut c = ready_client(0);
    let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
    let seq = send(&mut c, 1, &blob(1), &mut buf);
    assert_eq!(seq, 0);
    assert_eq!(c.poll_timeout(), Some(NOW + ANSWER_TIMEOUT));
    // An advert asked later, and answered in time.
    let later = NOW + Duration::from_secs(30);
    c.request_advert();
    let n = c.poll_transmit(later, &mut buf).unwrap().unwrap();
    assert_eq!(Request::decode(&buf[..n]), Ok(Request::GetAdvert));
    let advert = [7u8; ADVERT_LEN];
    c.handle_message(&encode(Reply::Advert { advert: &advert }), later)
        .unwrap();
    assert_eq!(c.poll_event(), Some(ClientEvent::Advert(advert)));
    assert_eq!(
        c.poll_timeout(),
        Some(NOW + ANSWER_TIMEOUT),
        "the post's deadline stands"
    );
    c.handle_timeout(NOW + ANSWER_TIMEOUT);
    assert_eq!(
        c.poll_event(),
        Some(ClientEvent::Unanswered {
            request: Some(RequestKind::Post)
        })
    );
}

/// Answers in time keep the client open however long it lives; each
/// request has its own deadline, from when it was sent. A fetch counts as
/// answered only at its page's end: entries that trickle in do not extend
/// it.
#[test]
fn answers_in_time_keep_the_client_open_and_a_page_must_end() {
    let mut c = ready_client(0);
    let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
    let seq = send(&mut c, 1, &blob(1), &mut buf);
    let almost = NOW + Duration::from_micros(ANSWER_TIMEOUT.as_micros() - 1_000);
    c.handle_message(&encode(Reply::Posted { seq, index: 1 }), almost)
        .unwrap();
    assert!(matches!(c.poll_event(), Some(ClientEvent::Posted { .. })));
    assert_eq!(c.poll_timeout(), None, "nothing is waiting for an answer");
    let much_later = NOW + Duration::from_secs(3_600);
    c.handle_timeout(much_later);
    assert_eq!(c.poll_event(), None, "an idle client is not closed");

    // A fetch sent an hour later: its own deadline.
    c.sync();
    let n = c.poll_transmit(much_later, &mut buf).unwrap().unwrap();
    assert!(matches!(
        Request::decode(&buf[..n]),
        Ok(Request::Fetch { .. })
    ));
    assert_eq!(c.poll_timeout(), Some(much_later + ANSWER_TIMEOUT));
    for index in 2..5 {
        let at = much_later + Duration::from_secs(index * 15);
        c.handle_message(
            &encode(Reply::Entry {
                index,
                blob: &blob(index),
            }),
            at,
        )
        .unwrap();
        while c.poll_event().is_some() {}
    }
    assert_eq!(c.poll_timeout(), Some(much_later + ANSWER_TIMEOUT));
    c.handle_timeout(much_later + ANSWER_TIMEOUT);
    assert_eq!(
        c.poll_event(),
        Some(ClientEvent::Unanswered {
            request: Some(RequestKind::Fetch)
        })
    );
}

/// A refused fetch (the server's store failed) is asked again after the
/// wait, so a sync never stops for good on one refusal; and a rate limit's
/// wait is capped at `MAX_RETRY` whatever the server names (`u32::MAX` ms
/// would park a post for 49 days, with nothing awaiting an answer).
#[test]
fn a_refused_fetch_is_asked_again_and_a_retry_wait_is_capped() {
    let mut c = ready_client(0);
    let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
    c.sync();
    let n = c.poll_transmit(NOW, &mut buf).unwrap().unwrap();
    assert_eq!(
        Request::decode(&buf[..n]),
        Ok(Request::Fetch {
            after: 0,
            limit: 50
        })
    );
    let refused = |request, seq, reason| {
        encode(Reply::Refused(ServerRefusal {
            request,
            seq,
            reason,
        }))
    };
    c.handle_message(
        &refused(RequestKind::Fetch, 0, RefusalReason::Unavailable),
        NOW,
    )
    .unwrap();
    assert!(matches!(c.poll_event(), Some(ClientEvent::Refused(_))));
    assert_eq!(c.poll_transmit(NOW, &mut buf), Ok(None), "not at once");
    assert_eq!(c.poll_timeout(), Some(NOW + FULL_RETRY));
    let later = NOW + FULL_RETRY;
    c.handle_timeout(later);
    assert_eq!(c.poll_event(), None, "a refusal is an answer");
    let n = c.poll_transmit(later, &mut buf).unwrap().unwrap();
    assert_eq!(
        Request::decode(&buf[..n]),
        Ok(Request::Fetch {
            after: 0,
            limit: 50
        })
    );

    assert_eq!(
        RefusalReason::RateLimited {
            retry_after_ms: u32::MAX
        }
        .retry_after(),
        Some(MAX_RETRY)
    );
    let seq = send(&mut c, 1, &blob(1), &mut buf);
    c.handle_message(
        &refused(
            RequestKind::Post,
            seq,
            RefusalReason::RateLimited {
                retry_after_ms: u32::MAX,
            },
        ),
        later,
    )
    .unwrap();
    assert_eq!(
        c.poll_event(),
        Some(ClientEvent::PostRefused {
            post: PostId(1),
            reason: RefusalReason::RateLimited {
                retry_after_ms: u32::MAX
            },
            retry_at: Some(later + MAX_RETRY),
        })
    );
}

/// A server that refuses every post with a wait (the liar's "full" for
/// ever) answers in time and stores nothing: after `STALL_TIMEOUT` without
/// a post stored the client gives up (`Stalled`). Each refusal of the same
/// post at least doubles its wait, so a server that refuses at once cannot
/// have it posted (with a new proof of work) ten times a second. A post
/// stored now and then keeps the client open.
#[test]
fn posts_refused_for_half_an_hour_stall_the_client_and_waits_double() {
    let mut c = ready_client(0);
    let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
    let refuse = |c: &mut ServerClient, seq, at| {
        c.handle_message(
            &encode(Reply::Refused(ServerRefusal {
                request: RequestKind::Post,
                seq,
                reason: RefusalReason::RateLimited { retry_after_ms: 0 },
            })),
            at,
        )
        .unwrap();
        match c.poll_event() {
            Some(ClientEvent::PostRefused {
                retry_at: Some(at), ..
            }) => at,
            other => panic!("{other:?}"),
        }
    };
    let mut now = NOW;
    let seq = send(&mut c, 1, &blob(1), &mut buf);
    let mut waits = Vec::new();
    let mut seq = seq;
    for _ in 0..6 {
        let at = refuse(&mut c, seq, now);
        waits.push(at.saturating_duration_since(now).as_millis());
        now = at;
        c.handle_timeout(now);
        seq = c.next_post_seq();
        assert!(c.poll_transmit(now, &mut buf).unwrap().is_some());
    }
    assert_eq!(waits, [100, 200, 400, 800, 1_600, 3_200]);
    // Stored at last: the half hour starts again from here.
    c.handle_message(&encode(Reply::Posted { seq, index: 1 }), now)
        .unwrap();
    assert!(matches!(c.poll_event(), Some(ClientEvent::Posted { .. })));
    assert_eq!(c.poll_timeout(), None, "nothing held");

    // A second post, refused with the longest wait every time.
    let start = now + Duration::from_secs(60);
    c.handle_timeout(start);
    c.queue_post(PostId(2), &blob(2)).unwrap();
    let mut seq = c.next_post_seq();
    assert!(c.poll_transmit(start, &mut buf).unwrap().is_some());
    assert_eq!(c.poll_timeout(), Some(start + ANSWER_TIMEOUT));
    let mut now = start;
    while now < start + STALL_TIMEOUT {
        let at = refuse(&mut c, seq, now);
        now = at.min(start + STALL_TIMEOUT);
        c.handle_timeout(now);
        if c.poll_transmit(now, &mut buf).unwrap().is_some() {
            seq = c.next_post_seq() - 1;
        }
        let event = c.poll_event();
        if now < start + STALL_TIMEOUT {
            assert_eq!(event, None, "at {:?}", now.saturating_duration_since(start));
        } else {
            assert_eq!(event, Some(ClientEvent::Stalled));
        }
    }
    assert_eq!(c.poll_timeout(), None, "closed");
    assert_eq!(
        c.queue_post(PostId(3), &blob(3)),
        Err(ClientError::NotReady)
    );
}

/// The stall never cuts off a post still within its answer deadline: the
/// answer may be its acknowledgement (an honest store that frees up just
/// then), and `Unanswered` still ends a server that keeps it back.
#[test]
fn a_stall_waits_for_the_answer_to_a_post_in_flight() {
    let mut c = ready_client(0);
    let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
    let seq = send(&mut c, 1, &blob(1), &mut buf);
    let secs = |s: u64| NOW + Duration::from_secs(s);
    // Refused (full) late, so that the retry goes out 30 s before the
    // half hour is over.
    c.handle_message(
        &encode(Reply::Refused(ServerRefusal {
            request: RequestKind::Post,
            seq,
            reason: RefusalReason::Full,
        })),
        secs(28 * 60 + 30),
    )
    .unwrap();
    assert!(matches!(
        c.poll_event(),
        Some(ClientEvent::PostRefused { .. })
    ));
    c.handle_timeout(secs(29 * 60 + 30));
    let seq = c.next_post_seq();
    assert!(
        c.poll_transmit(secs(29 * 60 + 30), &mut buf)
            .unwrap()
            .is_some()
    );
    assert_eq!(c.poll_timeout(), Some(secs(30 * 60 + 30)));
    c.handle_timeout(secs(30 * 60));
    assert_eq!(c.poll_event(), None, "not while the post awaits its answer");
    c.handle_message(&encode(Reply::Posted { seq, index: 1 }), secs(30 * 60 + 10))
        .unwrap();
    assert!(matches!(c.poll_event(), Some(ClientEvent::Posted { .. })));
    assert_eq!(c.poll_timeout(), None);
}
