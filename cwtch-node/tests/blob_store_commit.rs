//! The group committer: concurrent posts, batching, head notifications,
//! back-pressure, control requests and shutdown.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cwtch_node::blob_store::{
    Blob, BlobReader, BlobStore, CommitterConfig, Error, GroupCommitter, RetentionPolicy,
};
use cwtch_proto::group::SEALED_BLOB_LEN;

fn blob(tag: u64) -> Blob {
    let mut b = [0u8; SEALED_BLOB_LEN];
    b[..8].copy_from_slice(&tag.to_le_bytes());
    for (i, byte) in b.iter_mut().enumerate().skip(8) {
        *byte = (tag.wrapping_mul(31).wrapping_add(i as u64)) as u8;
    }
    b
}

fn tag_of(b: &Blob) -> u64 {
    let mut t = [0u8; 8];
    t.copy_from_slice(&b[..8]);
    u64::from_le_bytes(t)
}

fn store(dir: &tempfile::TempDir, policy: RetentionPolicy) -> BlobStore {
    BlobStore::open(dir.path().join("blobs"), policy).expect("open")
}

#[test]
fn thousand_concurrent_posts_are_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let committer = GroupCommitter::start(store(&dir, RetentionPolicy::UNLIMITED)).unwrap();
    let reader = BlobReader::open(dir.path().join("blobs")).unwrap();

    let results: Vec<(u64, u64)> = smol::block_on(async {
        let tasks: Vec<_> = (0..1000u64)
            .map(|tag| {
                let post = committer.submit(Box::new(blob(tag)));
                smol::spawn(async move { (tag, post.await) })
            })
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            let (tag, result) = task.await;
            out.push((tag, result.expect("post acknowledged")));
        }
        out
    });

    let indices: HashSet<u64> = results.iter().map(|(_, i)| *i).collect();
    assert_eq!(indices.len(), 1000, "indices are distinct");
    assert_eq!(indices, (1..=1000).collect::<HashSet<_>>());
    assert_eq!(committer.head(), 1000);
    let commits = committer.commits();
    assert!(commits >= 1);
    assert!(commits <= 100, "{commits} commits for 1000 posts");
    eprintln!("1000 posts in {commits} commits");

    // Every acknowledged index holds the blob that was posted.
    for (tag, index) in &results {
        let got = reader.read_after(index - 1, 1).unwrap();
        assert_eq!(got[0].0, *index);
        assert_eq!(tag_of(&got[0].1), *tag);
        assert_eq!(*got[0].1, blob(*tag));
    }

    let stats = smol::block_on(committer.stats()).unwrap();
    assert_eq!(stats.blobs, 1000);
    assert_eq!(stats.appended, 1000);
    assert_eq!(stats.commits, commits);
    smol::block_on(committer.integrity_check()).unwrap();

    let store = committer.shutdown().unwrap();
    assert_eq!(store.head(), 1000);
}

#[test]
fn head_watch_sees_new_posts_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let committer = GroupCommitter::start(store(&dir, RetentionPolicy::UNLIMITED)).unwrap();
    let mut watch = committer.watch_head();
    assert_eq!(watch.seen(), 0);

    let watcher = smol::spawn({
        let mut watch = watch.clone();
        async move {
            let mut heads = Vec::new();
            while let Ok(head) = watch.changed().await {
                heads.push(head);
                if head >= 3 {
                    break;
                }
            }
            heads
        }
    });
    smol::block_on(async {
        for tag in 0..3 {
            committer.submit(Box::new(blob(tag))).await.unwrap();
        }
    });
    let heads = smol::block_on(watcher);
    assert_eq!(heads.last(), Some(&3));
    assert!(heads.windows(2).all(|w| w[0] < w[1]), "{heads:?}");

    assert_eq!(smol::block_on(watch.changed()).unwrap(), 3);
    drop(committer);
    assert!(matches!(
        smol::block_on(watch.changed()),
        Err(Error::Closed)
    ));
}

#[test]
fn wrong_size_post_refused() {
    let dir = tempfile::tempdir().unwrap();
    let committer = GroupCommitter::start(store(&dir, RetentionPolicy::UNLIMITED)).unwrap();
    smol::block_on(async {
        assert!(matches!(
            committer.submit_slice(&[1, 2, 3]).await,
            Err(Error::WrongSize { len: 3 })
        ));
        assert!(matches!(
            committer
                .submit_slice(&vec![0u8; SEALED_BLOB_LEN + 1])
                .await,
            Err(Error::WrongSize { .. })
        ));
        assert_eq!(committer.submit_slice(&blob(9)).await.unwrap(), 1);
    });
    assert_eq!(committer.commits(), 1);
}

#[test]
fn back_pressure_with_tiny_queue() {
    let dir = tempfile::tempdir().unwrap();
    let config = CommitterConfig {
        max_batch: 4,
        queue_capacity: 1,
        prune_interval: None,
        ..CommitterConfig::default()
    };
    let committer =
        GroupCommitter::with_config(store(&dir, RetentionPolicy::UNLIMITED), config).unwrap();
    let indices: Vec<u64> = smol::block_on(async {
        let tasks: Vec<_> = (0..50u64)
            .map(|tag| smol::spawn(committer.submit(Box::new(blob(tag)))))
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    });
    let set: HashSet<u64> = indices.iter().copied().collect();
    assert_eq!(set, (1..=50).collect::<HashSet<_>>());
    assert!(committer.queued() <= 1);
    // Batches never exceed max_batch.
    assert!(committer.commits() >= 50 / 4);
}

#[test]
fn shutdown_commits_what_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let committer = GroupCommitter::start(store(&dir, RetentionPolicy::UNLIMITED)).unwrap();
    // Queue posts without waiting for them, then shut down: each one that
    // was queued is committed before the writer stops.
    let posts: Vec<_> = (0..200u64)
        .map(|tag| smol::spawn(committer.submit(Box::new(blob(tag)))))
        .collect();
    // Let the executor run the tasks far enough to enqueue.
    let deadline = Instant::now() + Duration::from_secs(10);
    while committer.head() + (committer.queued() as u64) < 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let store = committer.shutdown().unwrap();
    assert_eq!(store.head(), 200);
    let results: Vec<_> = smol::block_on(async {
        let mut out = Vec::new();
        for p in posts {
            out.push(p.await);
        }
        out
    });
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    store.integrity_check().unwrap();
}

#[test]
fn prune_on_the_writer_and_periodically() {
    let dir = tempfile::tempdir().unwrap();
    let policy = RetentionPolicy {
        max_blobs: Some(5),
        ..RetentionPolicy::UNLIMITED
    };
    let config = CommitterConfig {
        prune_interval: Some(Duration::from_millis(20)),
        ..CommitterConfig::default()
    };
    let committer = GroupCommitter::with_config(store(&dir, policy), config).unwrap();
    smol::block_on(async {
        for tag in 0..20 {
            committer.submit(Box::new(blob(tag))).await.unwrap();
        }
    });
    // The periodic prune brings it down to 5 even with no more posts.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = smol::block_on(committer.stats()).unwrap();
        if stats.blobs == 5 {
            assert_eq!(stats.oldest, Some(16));
            assert_eq!(stats.head, 20);
            break;
        }
        assert!(Instant::now() < deadline, "not pruned: {stats:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    // An explicit prune has nothing left to do.
    let pruned = smol::block_on(committer.prune(u64::MAX)).unwrap();
    assert_eq!(pruned.removed, 0);
    assert_eq!(pruned.oldest, Some(16));
}

#[test]
fn reader_reads_while_writer_writes() {
    let dir = tempfile::tempdir().unwrap();
    let committer = GroupCommitter::start(store(&dir, RetentionPolicy::UNLIMITED)).unwrap();
    let reader = BlobReader::open(dir.path().join("blobs")).unwrap();
    let mut watch = committer.watch_head();
    let writer = smol::spawn({
        let posts: Vec<_> = (0..300u64)
            .map(|tag| committer.submit(Box::new(blob(tag))))
            .collect();
        async move {
            for p in posts {
                p.await.unwrap();
            }
        }
    });
    // Follow the head like a subscriber: read everything new each time.
    let mut cursor = 0;
    let mut seen = HashSet::new();
    smol::block_on(async {
        while cursor < 300 {
            let head = watch.changed().await.unwrap();
            while cursor < head {
                let page = reader.read_after(cursor, 64).unwrap();
                assert!(!page.is_empty(), "head {head} announced but not readable");
                for (index, b) in page {
                    assert_eq!(index, cursor + 1);
                    seen.insert(tag_of(&b));
                    cursor = index;
                }
            }
        }
    });
    smol::block_on(writer);
    assert_eq!(seen.len(), 300);
}

#[test]
fn handles_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<GroupCommitter>();
    send_sync::<cwtch_node::blob_store::HeadWatch>();
    send_sync::<Error>();
    send::<BlobStore>();
    send::<BlobReader>();
}

/// Waits until the committer's head reaches `index`.
fn wait_head(committer: &GroupCommitter, index: u64) {
    let mut watch = committer.watch_head();
    smol::block_on(async {
        while committer.head() < index {
            watch.changed().await.expect("the writer runs");
        }
    });
}

#[test]
fn try_append_gives_indices_at_once_and_the_head_acknowledges_them() {
    let dir = tempfile::tempdir().unwrap();
    let committer = GroupCommitter::start(store(&dir, RetentionPolicy::UNLIMITED)).unwrap();
    let indices: Vec<u64> = (0..10u64)
        .map(|tag| committer.try_append(&blob(tag)).expect("queued"))
        .collect();
    assert_eq!(indices, (1..=10).collect::<Vec<_>>(), "in call order");
    wait_head(&committer, 10);
    assert!(!committer.failed());
    let reader = BlobReader::open(dir.path().join("blobs")).unwrap();
    for (tag, index) in indices.iter().enumerate() {
        let got = reader.read_after(index - 1, 1).unwrap();
        assert_eq!((got[0].0, *got[0].1), (*index, blob(tag as u64)));
    }
    // A submit after them takes the next index.
    assert_eq!(
        smol::block_on(committer.submit(Box::new(blob(99)))).unwrap(),
        11
    );
    let store = committer.shutdown().unwrap();
    assert_eq!(store.head(), 11);
}

#[test]
fn read_recent_answers_from_memory_and_sends_older_reads_to_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = CommitterConfig {
        recent_blobs: 4,
        prune_interval: None,
        ..CommitterConfig::default()
    };
    let committer =
        GroupCommitter::with_config(store(&dir, RetentionPolicy::UNLIMITED), config).unwrap();
    let mut out = [0u8; SEALED_BLOB_LEN];
    assert_eq!(committer.read_recent(0, &mut out), None, "nothing yet: ask");
    for tag in 1..=10u64 {
        assert_eq!(committer.try_append(&blob(tag)).unwrap(), tag);
    }
    wait_head(&committer, 10);
    // Blobs 7..=10 are in memory.
    assert_eq!(committer.read_recent(7, &mut out), Some(Some(8)));
    assert_eq!(out, blob(8));
    assert_eq!(committer.read_recent(6, &mut out), Some(Some(7)));
    assert_eq!(out, blob(7));
    assert_eq!(
        committer.read_recent(10, &mut out),
        Some(None),
        "none after"
    );
    assert_eq!(
        committer.read_recent(5, &mut out),
        None,
        "6 is on disk only"
    );
    assert_eq!(committer.read_recent(0, &mut out), None);
    // Retention removes 1..=8: what memory holds is all there is.
    let policy = RetentionPolicy {
        max_blobs: Some(2),
        ..RetentionPolicy::UNLIMITED
    };
    smol::block_on(committer.set_retention(policy)).unwrap();
    assert_eq!(committer.read_recent(0, &mut out), Some(Some(9)));
    assert_eq!(out, blob(9));
    assert_eq!(committer.read_recent(9, &mut out), Some(Some(10)));
}
