//! The server session against an in-memory store.

mod server_common;

use cwtch_proto::group::SEALED_BLOB_LEN;
use cwtch_proto::server::admission::{pow_solve, pow_verify};
use cwtch_proto::server::session::MAX_PENDING_POSTS;
use cwtch_proto::server::wire::{ENTRY_LEN, MAX_SERVER_MESSAGE_LEN};
use cwtch_proto::server::{
    BufferTooSmall, RefusalReason, Request, RequestKind, ServerCloseReason, ServerConfig,
    ServerEvent, ServerRefusal, ServerSession, ServerSessionError,
};
use cwtch_proto::{Duration, Instant};
use server_common::*;

const T0: Instant = Instant::from_secs(1_000);

fn config() -> ServerConfig {
    ServerConfig {
        rate_interval: Duration::ZERO,
        ..ServerConfig::default()
    }
}

fn open(store: &MemStore, config: ServerConfig, seed: u8) -> ServerSession {
    let mut s = ServerSession::new(config, store, &mut rng(seed), T0);
    match drain(&mut s, store).as_slice() {
        [R::Hello(_)] => {}
        other => panic!("expected a hello, got {other:?}"),
    }
    s
}

fn req(r: Request<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; r.encoded_len()];
    r.encode(&mut buf).unwrap();
    buf
}

fn post(s: &mut ServerSession, store: &mut MemStore, tag: u64) {
    s.handle_message(
        &req(Request::Post {
            pow: None,
            blob: &blob(tag),
        }),
        T0,
        store,
    )
    .unwrap();
}

fn refused(request: RequestKind, seq: u64, reason: RefusalReason) -> R {
    R::Refused(ServerRefusal {
        request,
        seq,
        reason,
    })
}

/// Posts `n` blobs through a separate session and commits them.
fn fill(store: &mut MemStore, n: u64) {
    let mut writer = open(store, config(), 99);
    for k in 1..=n {
        post(&mut writer, store, k);
        writer.handle_durable(store.commit());
        let _ = drain(&mut writer, store);
    }
}

#[test]
fn hello_states_the_policy_and_a_fresh_challenge_per_connection() {
    let store = MemStore::new();
    let cfg = ServerConfig {
        pow_bits: 12,
        page_max: 10,
        rate_burst: 5,
        rate_interval: Duration::from_millis(250),
        retention_max_entries: 1_000_000,
        retention_max_age_secs: 86_400 * 30,
        idle_timeout: Duration::from_secs(60),
    };
    let mut a = ServerSession::new(cfg, &store, &mut rng(1), T0);
    let mut b = ServerSession::new(cfg, &store, &mut rng(2), T0);
    let (R::Hello(pa), R::Hello(pb)) =
        (next(&mut a, &store).unwrap(), next(&mut b, &store).unwrap())
    else {
        panic!("no hello")
    };
    assert_eq!(pa.version, 1);
    assert_eq!(pa.pow_bits, 12);
    assert_eq!(pa.page_max, 10);
    assert_eq!(pa.rate_burst, 5);
    assert_eq!(pa.rate_interval_ms, 250);
    assert_eq!(pa.retention_max_entries, 1_000_000);
    assert_eq!(pa.retention_max_age_secs, 86_400 * 30);
    assert_eq!(pa.max_pending_posts as usize, MAX_PENDING_POSTS);
    assert_eq!(pa.head, 0);
    assert_ne!(pa.challenge, pb.challenge);
    assert_eq!(pa.challenge, a.policy().challenge);
}

#[test]
fn post_is_acked_only_once_durable() {
    let mut store = MemStore::new();
    let mut s = open(&store, config(), 1);
    post(&mut s, &mut store, 7);
    assert_eq!(drain(&mut s, &store), vec![], "no ack before durability");
    assert_eq!(s.queued_items(), 1);
    // The driver's group commit, then the broadcast.
    let durable = store.commit();
    assert_eq!(drain(&mut s, &store), vec![], "the session must be told");
    s.handle_durable(durable);
    assert_eq!(drain(&mut s, &store), vec![R::Posted { seq: 0, index: 1 }]);
    assert_eq!(s.queued_items(), 0);
}

#[test]
fn group_commit_acks_many_posts_in_order_and_partial_durability_acks_a_prefix() {
    let mut store = MemStore::new();
    let mut s = open(&store, config(), 1);
    for k in 0..5 {
        post(&mut s, &mut store, k);
    }
    s.handle_durable(3); // the first three are on disk
    assert_eq!(
        drain(&mut s, &store),
        vec![
            R::Posted { seq: 0, index: 1 },
            R::Posted { seq: 1, index: 2 },
            R::Posted { seq: 2, index: 3 },
        ]
    );
    s.handle_durable(2); // going backwards is ignored
    assert_eq!(drain(&mut s, &store), vec![]);
    s.handle_durable(store.commit());
    assert_eq!(
        drain(&mut s, &store),
        vec![
            R::Posted { seq: 3, index: 4 },
            R::Posted { seq: 4, index: 5 }
        ]
    );
}

#[test]
fn too_many_pending_posts_stop_the_session_pulling_requests() {
    let mut store = MemStore::new();
    let mut s = open(&store, config(), 1);
    for k in 0..MAX_PENDING_POSTS as u64 {
        assert!(s.wants_request());
        post(&mut s, &mut store, k);
    }
    assert!(!s.wants_request());
    let msg = req(Request::Post {
        pow: None,
        blob: &blob(99),
    });
    let before = store.entries.len();
    assert_eq!(
        s.handle_message(&msg, T0, &mut store),
        Err(ServerSessionError::Busy)
    );
    assert_eq!(
        store.entries.len(),
        before,
        "a refused input changes nothing"
    );
    s.handle_durable(store.commit());
    assert_eq!(drain(&mut s, &store).len(), MAX_PENDING_POSTS);
    assert!(s.wants_request());
    s.handle_message(&msg, T0, &mut store).unwrap();
}

#[test]
fn fetch_after_a_cursor_returns_later_entries_then_page_end() {
    let mut store = MemStore::new();
    fill(&mut store, 5);
    let mut s = open(&store, config(), 1);
    s.handle_message(
        &req(Request::Fetch {
            after: 2,
            limit: 100,
        }),
        T0,
        &mut store,
    )
    .unwrap();
    assert!(
        !s.wants_request(),
        "no request is pulled while a page streams"
    );
    assert_eq!(
        drain(&mut s, &store),
        vec![
            R::Entry { index: 3, tag: 3 },
            R::Entry { index: 4, tag: 4 },
            R::Entry { index: 5, tag: 5 },
            R::PageEnd { next: 5, head: 5 },
        ]
    );
    assert!(s.wants_request());
    // At the head: an empty page.
    s.handle_message(&req(Request::Fetch { after: 5, limit: 1 }), T0, &mut store)
        .unwrap();
    assert_eq!(drain(&mut s, &store), vec![R::PageEnd { next: 5, head: 5 }]);
    // Beyond the head (a client from a lost server): an empty page, cursor kept.
    s.handle_message(
        &req(Request::Fetch {
            after: 50,
            limit: 1,
        }),
        T0,
        &mut store,
    )
    .unwrap();
    assert_eq!(
        drain(&mut s, &store),
        vec![R::PageEnd { next: 50, head: 5 }]
    );
}

#[test]
fn paging_across_several_pages_with_the_page_cap() {
    let mut store = MemStore::new();
    fill(&mut store, 23);
    let cfg = ServerConfig {
        page_max: 10,
        ..config()
    };
    let mut s = open(&store, cfg, 1);
    let mut cursor = 0;
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        // The client asks for more than the cap: it gets at most 10.
        s.handle_message(
            &req(Request::Fetch {
                after: cursor,
                limit: 500,
            }),
            T0,
            &mut store,
        )
        .unwrap();
        pages += 1;
        let replies = drain(&mut s, &store);
        let (last, entries) = replies.split_last().unwrap();
        assert!(entries.len() <= 10);
        for e in entries {
            let R::Entry { index, tag } = e else {
                panic!("{e:?}")
            };
            assert_eq!(index, tag);
            got.push(*index);
        }
        let R::PageEnd { next, head } = *last else {
            panic!("{last:?}")
        };
        cursor = next;
        if next >= head {
            break;
        }
    }
    assert_eq!(got, (1..=23).collect::<Vec<_>>());
    assert_eq!(pages, 3);
}

#[test]
fn fetch_never_shows_entries_that_are_not_durable() {
    let mut store = MemStore::new();
    fill(&mut store, 2);
    let mut s = open(&store, config(), 1);
    let mut other = open(&store, config(), 2);
    post(&mut other, &mut store, 3); // appended, not durable
    s.handle_message(
        &req(Request::Fetch {
            after: 0,
            limit: 10,
        }),
        T0,
        &mut store,
    )
    .unwrap();
    assert_eq!(
        drain(&mut s, &store),
        vec![
            R::Entry { index: 1, tag: 1 },
            R::Entry { index: 2, tag: 2 },
            R::PageEnd { next: 2, head: 2 },
        ]
    );
}

#[test]
fn pruned_entries_are_skipped() {
    let mut store = MemStore::new();
    fill(&mut store, 6);
    store.prune(3);
    let mut s = open(&store, config(), 1);
    s.handle_message(
        &req(Request::Fetch {
            after: 1,
            limit: 10,
        }),
        T0,
        &mut store,
    )
    .unwrap();
    assert_eq!(
        drain(&mut s, &store),
        vec![
            R::Entry { index: 4, tag: 4 },
            R::Entry { index: 5, tag: 5 },
            R::Entry { index: 6, tag: 6 },
            R::PageEnd { next: 6, head: 6 },
        ]
    );
}

#[test]
fn subscription_pushes_new_posts_from_other_sessions_then_unsubscribe_stops_them() {
    let mut store = MemStore::new();
    fill(&mut store, 2);
    let mut reader = open(&store, config(), 1);
    let mut writer = open(&store, config(), 2);
    reader
        .handle_message(&req(Request::Subscribe { after: 2 }), T0, &mut store)
        .unwrap();
    assert_eq!(reader.poll_event(), Some(ServerEvent::Subscribed));
    assert_eq!(drain(&mut reader, &store), vec![R::Subscribed { after: 2 }]);
    assert_eq!(reader.poll_timeout(), None, "a subscriber never idles out");

    post(&mut writer, &mut store, 30);
    post(&mut writer, &mut store, 40);
    assert_eq!(
        drain(&mut reader, &store),
        vec![],
        "not durable: nothing pushed"
    );
    let durable = store.commit();
    for s in [&mut reader, &mut writer] {
        s.handle_durable(durable);
    }
    assert_eq!(
        drain(&mut writer, &store),
        vec![
            R::Posted { seq: 0, index: 3 },
            R::Posted { seq: 1, index: 4 }
        ]
    );
    assert_eq!(
        drain(&mut reader, &store),
        vec![R::Push { index: 3, tag: 30 }, R::Push { index: 4, tag: 40 }]
    );
    assert_eq!(reader.subscription_cursor(), Some(4));

    reader
        .handle_message(&req(Request::Unsubscribe), T0, &mut store)
        .unwrap();
    assert_eq!(reader.poll_event(), Some(ServerEvent::Unsubscribed));
    post(&mut writer, &mut store, 50);
    reader.handle_durable(store.commit());
    assert_eq!(drain(&mut reader, &store), vec![R::Unsubscribed]);
    assert!(!reader.is_subscribed());
}

#[test]
fn a_store_that_would_block_delays_entries_and_pushes_without_changing_the_session() {
    let mut store = MemStore::new();
    fill(&mut store, 3);
    let mut s = open(&store, config(), 1);
    s.handle_message(
        &req(Request::Fetch {
            after: 1,
            limit: 100,
        }),
        T0,
        &mut store,
    )
    .unwrap();
    store.block_reads.set(true);
    assert_eq!(drain(&mut s, &store), vec![], "nothing while not at hand");
    assert!(!s.wants_request(), "the page is still in progress");
    store.block_reads.set(false);
    assert_eq!(
        drain(&mut s, &store),
        vec![
            R::Entry { index: 2, tag: 2 },
            R::Entry { index: 3, tag: 3 },
            R::PageEnd { next: 3, head: 3 },
        ]
    );
    assert!(s.wants_request());

    s.handle_message(&req(Request::Subscribe { after: 1 }), T0, &mut store)
        .unwrap();
    assert_eq!(s.poll_event(), Some(ServerEvent::Subscribed));
    store.block_reads.set(true);
    assert_eq!(drain(&mut s, &store), vec![R::Subscribed { after: 1 }]);
    assert_eq!(s.subscription_cursor(), Some(1), "the cursor did not move");
    assert!(s.is_subscribed());
    assert_eq!(
        s.poll_event(),
        None,
        "no Unsubscribed: the store did not fail"
    );
    // An acknowledgement does not wait for the store.
    post(&mut s, &mut store, 40);
    s.handle_durable(store.commit());
    assert_eq!(drain(&mut s, &store), vec![R::Posted { seq: 0, index: 4 }]);
    store.block_reads.set(false);
    assert_eq!(
        drain(&mut s, &store),
        vec![
            R::Push { index: 2, tag: 2 },
            R::Push { index: 3, tag: 3 },
            R::Push { index: 4, tag: 40 },
        ]
    );
}

#[test]
fn subscribe_from_an_old_cursor_pushes_the_backlog_lazily() {
    let mut store = MemStore::new();
    fill(&mut store, 4);
    let mut s = open(&store, config(), 1);
    s.handle_message(&req(Request::Subscribe { after: 1 }), T0, &mut store)
        .unwrap();
    assert_eq!(
        drain(&mut s, &store),
        vec![
            R::Subscribed { after: 1 },
            R::Push { index: 2, tag: 2 },
            R::Push { index: 3, tag: 3 },
            R::Push { index: 4, tag: 4 },
        ]
    );
}

#[test]
fn every_refusal() {
    let mut store = MemStore::new();
    let mut s = open(&store, config(), 1);

    // Malformed: empty, unknown tag, wrong length, zero limit.
    for bad in [
        &[][..],
        &[0x7f][..],
        &[0x03, 1, 2][..],
        &[0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
    ] {
        s.handle_message(bad, T0, &mut store).unwrap();
        let R::Refused(r) = next(&mut s, &store).unwrap() else {
            panic!()
        };
        assert_eq!(r.reason, RefusalReason::Malformed, "{bad:?}");
        assert_eq!(r.seq, 0);
    }
    s.handle_message(&[0x05, 0], T0, &mut store).unwrap();
    assert_eq!(
        drain(&mut s, &store),
        vec![refused(
            RequestKind::Unsubscribe,
            0,
            RefusalReason::Malformed
        )]
    );

    // Wrong blob size: a post tag with a short or long blob. Counts as a post.
    let mut short = vec![0x01];
    short.extend_from_slice(&[0u8; 100]);
    s.handle_message(&short, T0, &mut store).unwrap();
    assert_eq!(
        drain(&mut s, &store),
        vec![refused(
            RequestKind::Post,
            0,
            RefusalReason::WrongBlobSize { found: 101 }
        )]
    );
    let mut long = vec![0x02];
    long.extend_from_slice(&[0u8; 8 + SEALED_BLOB_LEN + 1]);
    s.handle_message(&long, T0, &mut store).unwrap();
    assert_eq!(
        drain(&mut s, &store),
        vec![refused(
            RequestKind::Post,
            1,
            RefusalReason::WrongBlobSize {
                found: 1 + 8 + SEALED_BLOB_LEN as u32 + 1
            }
        )]
    );

    // Too many subscriptions: a second subscribe on the connection, and a
    // server-wide cap set by the driver.
    s.handle_message(&req(Request::Subscribe { after: 0 }), T0, &mut store)
        .unwrap();
    assert_eq!(drain(&mut s, &store), vec![R::Subscribed { after: 0 }]);
    s.handle_message(&req(Request::Subscribe { after: 0 }), T0, &mut store)
        .unwrap();
    assert_eq!(
        drain(&mut s, &store),
        vec![refused(
            RequestKind::Subscribe,
            0,
            RefusalReason::TooManySubscriptions
        )]
    );
    let mut capped = open(&store, config(), 2);
    capped.set_accepting_subscriptions(false);
    capped
        .handle_message(&req(Request::Subscribe { after: 0 }), T0, &mut store)
        .unwrap();
    assert_eq!(
        drain(&mut capped, &store),
        vec![refused(
            RequestKind::Subscribe,
            0,
            RefusalReason::TooManySubscriptions
        )]
    );
    assert_eq!(capped.poll_event(), None);

    // Full.
    store.capacity = Some(0);
    post(&mut s, &mut store, 1);
    assert_eq!(
        drain(&mut s, &store),
        vec![refused(RequestKind::Post, 2, RefusalReason::Full)]
    );

    // Unavailable: a failing store on post, fetch and subscription.
    store.capacity = None;
    store.broken = true;
    post(&mut s, &mut store, 1);
    assert_eq!(
        drain(&mut s, &store),
        vec![refused(RequestKind::Post, 3, RefusalReason::Unavailable)]
    );
    let mut f = open(&store, config(), 3);
    f.handle_message(&req(Request::Fetch { after: 0, limit: 5 }), T0, &mut store)
        .unwrap();
    assert_eq!(
        drain(&mut f, &store),
        vec![refused(RequestKind::Fetch, 0, RefusalReason::Unavailable)]
    );
    assert!(f.wants_request());
    store.broken = false;
    fill(&mut store, 1);
    store.broken = true;
    s.handle_durable(store.durable);
    let _ = s.poll_event();
    assert_eq!(
        drain(&mut s, &store),
        vec![refused(
            RequestKind::Subscribe,
            0,
            RefusalReason::Unavailable
        )]
    );
    assert_eq!(s.poll_event(), Some(ServerEvent::Unsubscribed));
    assert!(!s.is_subscribed());
}

#[test]
fn proof_of_work_required_accepted_and_rejected() {
    let mut store = MemStore::new();
    let cfg = ServerConfig {
        pow_bits: 10,
        ..config()
    };
    let mut s = open(&store, cfg, 1);
    let challenge = s.policy().challenge;
    let b = blob(5);

    // Missing (seq 0).
    s.handle_message(
        &req(Request::Post {
            pow: None,
            blob: &b,
        }),
        T0,
        &mut store,
    )
    .unwrap();
    assert_eq!(
        drain(&mut s, &store),
        vec![refused(RequestKind::Post, 0, RefusalReason::PowMissing)]
    );
    // Wrong (seq 1): a nonce that does not reach 10 bits.
    let bad = (0..)
        .find(|n| !pow_verify(&challenge, 1, &b, *n, 10))
        .unwrap();
    s.handle_message(
        &req(Request::Post {
            pow: Some(bad),
            blob: &b,
        }),
        T0,
        &mut store,
    )
    .unwrap();
    assert_eq!(
        drain(&mut s, &store),
        vec![refused(RequestKind::Post, 1, RefusalReason::PowWrong)]
    );
    // Right (seq 2).
    let good = pow_solve(&challenge, 2, &b, 10, 0, 1 << 24).unwrap();
    s.handle_message(
        &req(Request::Post {
            pow: Some(good),
            blob: &b,
        }),
        T0,
        &mut store,
    )
    .unwrap();
    s.handle_durable(store.commit());
    assert_eq!(drain(&mut s, &store), vec![R::Posted { seq: 2, index: 1 }]);
    // Replay of the same (blob, nonce) as the next post (seq 3): refused
    // unless the nonce happens to work for seq 3 as well.
    s.handle_message(
        &req(Request::Post {
            pow: Some(good),
            blob: &b,
        }),
        T0,
        &mut store,
    )
    .unwrap();
    let replay_ok = pow_verify(&challenge, 3, &b, good, 10);
    let replies = drain(&mut s, &store);
    if !replay_ok {
        assert_eq!(
            replies,
            vec![refused(RequestKind::Post, 3, RefusalReason::PowWrong)]
        );
    }
    // Work done for another connection's challenge does not count here.
    let mut other = open(&store, cfg, 2);
    let foreign = pow_solve(&challenge, 0, &b, 10, 0, 1 << 24).unwrap();
    if !pow_verify(&other.policy().challenge, 0, &b, foreign, 10) {
        other
            .handle_message(
                &req(Request::Post {
                    pow: Some(foreign),
                    blob: &b,
                }),
                T0,
                &mut store,
            )
            .unwrap();
        assert_eq!(
            drain(&mut other, &store),
            vec![refused(RequestKind::Post, 0, RefusalReason::PowWrong)]
        );
    }
    // A server without PoW accepts a post with a nonce.
    let mut free = open(&store, config(), 3);
    free.handle_message(
        &req(Request::Post {
            pow: Some(1),
            blob: &b,
        }),
        T0,
        &mut store,
    )
    .unwrap();
    free.handle_durable(store.commit());
    assert!(matches!(
        drain(&mut free, &store)[..],
        [R::Posted { seq: 0, .. }]
    ));
}

#[test]
fn rate_limit_is_a_token_bucket_on_the_virtual_clock() {
    let mut store = MemStore::new();
    let cfg = ServerConfig {
        rate_burst: 3,
        rate_interval: Duration::from_millis(1_000),
        ..config()
    };
    let mut s = open(&store, cfg, 1);
    let msg = req(Request::Post {
        pow: None,
        blob: &blob(1),
    });
    for _ in 0..3 {
        s.handle_message(&msg, T0, &mut store).unwrap();
    }
    s.handle_message(&msg, T0 + Duration::from_millis(400), &mut store)
        .unwrap();
    s.handle_durable(store.commit());
    assert_eq!(
        drain(&mut s, &store),
        vec![
            refused(
                RequestKind::Post,
                3,
                RefusalReason::RateLimited {
                    retry_after_ms: 600
                }
            ),
            R::Posted { seq: 0, index: 1 },
            R::Posted { seq: 1, index: 2 },
            R::Posted { seq: 2, index: 3 },
        ]
    );
    // One token a second.
    s.handle_message(&msg, T0 + Duration::from_millis(1_000), &mut store)
        .unwrap();
    s.handle_message(&msg, T0 + Duration::from_millis(1_001), &mut store)
        .unwrap();
    s.handle_durable(store.commit());
    assert_eq!(
        drain(&mut s, &store),
        vec![
            refused(
                RequestKind::Post,
                5,
                RefusalReason::RateLimited {
                    retry_after_ms: 999
                }
            ),
            R::Posted { seq: 4, index: 4 },
        ]
    );
    // Fetches are not rate limited (a fetch is paced by the reader).
    s.handle_message(&req(Request::Fetch { after: 0, limit: 1 }), T0, &mut store)
        .unwrap();
    assert_eq!(drain(&mut s, &store).len(), 2);
}

#[test]
fn a_subscriber_that_never_reads_costs_constant_memory_while_10000_posts_arrive() {
    let mut store = MemStore::new();
    let mut writer = open(&store, config(), 2);
    let mut idle_reader = open(&store, config(), 1);
    idle_reader
        .handle_message(&req(Request::Subscribe { after: 0 }), T0, &mut store)
        .unwrap();
    assert_eq!(idle_reader.poll_event(), Some(ServerEvent::Subscribed));
    // The reader's client never reads: its driver never calls poll_transmit.
    let size = core::mem::size_of::<ServerSession>();
    assert!(size < 1024, "a session is {size} bytes");
    let reads_before = store.reads.get();
    for k in 1..=10_000u64 {
        post(&mut writer, &mut store, k);
        let durable = store.commit();
        writer.handle_durable(durable);
        idle_reader.handle_durable(durable);
        assert_eq!(drain(&mut writer, &store).len(), 1);
        assert!(idle_reader.queued_items() <= 1, "no queue grows");
    }
    assert_eq!(core::mem::size_of_val(&idle_reader), size);
    assert_eq!(
        store.reads.get(),
        reads_before,
        "a reader that does not read costs no store reads"
    );
    assert_eq!(idle_reader.subscription_cursor(), Some(0));
    // When the client finally reads, it gets everything in order.
    let got = drain(&mut idle_reader, &store);
    assert_eq!(got.len(), 1 + 10_000);
    assert_eq!(got[0], R::Subscribed { after: 0 });
    for (k, r) in got[1..].iter().enumerate() {
        assert_eq!(
            *r,
            R::Push {
                index: k as u64 + 1,
                tag: k as u64 + 1
            }
        );
    }
}

#[test]
fn a_client_that_does_not_read_its_page_is_not_served_further_requests() {
    let mut store = MemStore::new();
    fill(&mut store, 100);
    let mut s = open(&store, config(), 1);
    s.handle_message(
        &req(Request::Fetch {
            after: 0,
            limit: 64,
        }),
        T0,
        &mut store,
    )
    .unwrap();
    // The driver keeps requests in the channel: nothing is buffered.
    for _ in 0..10 {
        assert_eq!(
            s.handle_message(
                &req(Request::Fetch {
                    after: 0,
                    limit: 64
                }),
                T0,
                &mut store
            ),
            Err(ServerSessionError::Busy)
        );
    }
    assert_eq!(s.queued_items(), 0);
    assert_eq!(drain(&mut s, &store).len(), 65);
}

#[test]
fn too_small_output_buffer_is_an_error_that_changes_nothing() {
    let mut store = MemStore::new();
    fill(&mut store, 3);
    let mut s = ServerSession::new(config(), &store, &mut rng(1), T0);
    let mut tiny = [0u8; 10];
    assert_eq!(
        s.poll_transmit(&store, &mut tiny),
        Err(ServerSessionError::BufferTooSmall(BufferTooSmall {
            required: 69
        }))
    );
    assert!(matches!(next(&mut s, &store), Some(R::Hello(_))));
    s.handle_message(&req(Request::Fetch { after: 0, limit: 2 }), T0, &mut store)
        .unwrap();
    let mut almost = [0u8; ENTRY_LEN - 1];
    let reads = store.reads.get();
    assert_eq!(
        s.poll_transmit(&store, &mut almost),
        Err(ServerSessionError::BufferTooSmall(BufferTooSmall {
            required: ENTRY_LEN
        }))
    );
    assert_eq!(store.reads.get(), reads, "checked before reading the store");
    assert_eq!(
        drain(&mut s, &store),
        vec![
            R::Entry { index: 1, tag: 1 },
            R::Entry { index: 2, tag: 2 },
            R::PageEnd { next: 2, head: 3 },
        ]
    );
}

#[test]
fn requests_after_close_are_refused_and_close_is_announced() {
    let mut store = MemStore::new();
    let mut s = open(&store, config(), 1);
    s.handle_message(&req(Request::Subscribe { after: 0 }), T0, &mut store)
        .unwrap();
    assert_eq!(s.poll_event(), Some(ServerEvent::Subscribed));
    s.close();
    assert_eq!(
        s.handle_message(&req(Request::Unsubscribe), T0, &mut store),
        Err(ServerSessionError::Closed)
    );
    assert!(!s.is_closed());
    assert_eq!(
        drain(&mut s, &store),
        vec![
            R::Subscribed { after: 0 },
            R::Closing(ServerCloseReason::Shutdown)
        ]
    );
    assert!(s.is_closed());
    assert_eq!(s.poll_event(), Some(ServerEvent::Unsubscribed));
    assert_eq!(
        s.poll_event(),
        Some(ServerEvent::Closed {
            reason: ServerCloseReason::Shutdown
        })
    );
    assert_eq!(
        s.handle_message(&req(Request::Unsubscribe), T0, &mut store),
        Err(ServerSessionError::Closed)
    );
    s.handle_durable(100);
    assert_eq!(drain(&mut s, &store), vec![]);
}

#[test]
fn idle_sessions_time_out_and_the_deadline_moves_with_requests() {
    let mut store = MemStore::new();
    let cfg = ServerConfig {
        idle_timeout: Duration::from_secs(60),
        ..config()
    };
    let mut s = ServerSession::new(cfg, &store, &mut rng(1), T0);
    assert_eq!(s.poll_timeout(), None, "not idle while the hello waits");
    let _ = drain(&mut s, &store);
    assert_eq!(s.poll_timeout(), Some(T0 + Duration::from_secs(60)));
    s.handle_timeout(T0 + Duration::from_secs(59)); // spurious: a no-op
    assert!(s.wants_request());
    let t1 = T0 + Duration::from_secs(30);
    s.handle_message(&req(Request::Fetch { after: 0, limit: 1 }), t1, &mut store)
        .unwrap();
    assert_eq!(s.poll_timeout(), None, "not idle while a page is pending");
    let _ = drain(&mut s, &store);
    assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(60)));
    s.handle_timeout(t1 + Duration::from_secs(60));
    assert_eq!(s.poll_timeout(), None, "the deadline does not stay stuck");
    assert_eq!(
        drain(&mut s, &store),
        vec![R::Closing(ServerCloseReason::Idle)]
    );
    assert_eq!(
        s.poll_event(),
        Some(ServerEvent::Closed {
            reason: ServerCloseReason::Idle
        })
    );
}

#[test]
fn session_size_is_constant_and_small() {
    // The whole per-connection state; no heap, no hidden growth.
    let size = core::mem::size_of::<ServerSession>();
    assert!(size <= 640, "ServerSession is {size} bytes");
    // The figure SPEC.md section 8.2 states.
    #[cfg(target_pointer_width = "64")]
    assert_eq!(size, 496, "update SPEC.md 8.2 if this changes");
    assert!(
        size < MAX_SERVER_MESSAGE_LEN,
        "a session is smaller than one entry message"
    );
}

#[test]
fn events_are_never_dropped_when_the_driver_does_not_drain_them() {
    let mut store = MemStore::new();
    let mut s = open(&store, config(), 1);
    let sub = req(Request::Subscribe { after: 0 });
    let unsub = req(Request::Unsubscribe);
    s.handle_message(&sub, T0, &mut store).unwrap();
    let _ = drain(&mut s, &store);
    s.handle_message(&unsub, T0, &mut store).unwrap();
    let _ = drain(&mut s, &store);
    s.handle_message(&sub, T0, &mut store).unwrap();
    let _ = drain(&mut s, &store);
    assert!(!s.wants_request(), "the event queue is nearly full");
    assert_eq!(
        s.handle_message(&unsub, T0, &mut store),
        Err(ServerSessionError::Busy)
    );
    s.close();
    assert_eq!(
        drain(&mut s, &store),
        vec![R::Closing(ServerCloseReason::Shutdown)]
    );
    let events: Vec<_> = core::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(
        events,
        vec![
            ServerEvent::Subscribed,
            ServerEvent::Unsubscribed,
            ServerEvent::Subscribed,
            ServerEvent::Unsubscribed,
            ServerEvent::Closed {
                reason: ServerCloseReason::Shutdown
            },
        ]
    );
    assert_eq!(s.poll_event(), None);
}
