//! Group commit: many async posters, one writer thread, one `fsync` per
//! batch.
//!
//! Posters queue their blob over a bounded queue (a full queue makes
//! posters wait: back-pressure). Each post is given its index as it is
//! queued: the queue is in index order. The writer thread takes everything
//! queued (up to [`CommitterConfig::max_batch`]), waits briefly for more
//! while the batch holds fewer posts than the last commit suggests are
//! coming (at most as long as that commit took, and 1 ms; never for a lone
//! poster), appends it with one sync, and only after the commit
//! returned publishes the new head to [`HeadWatch`]ers: that one store and
//! one wake-up acknowledge the whole commit. A poster that wants its own answer
//! ([`GroupCommitter::submit`]) also gets a reply channel; the server does
//! not ([`GroupCommitter::try_append`]): its sessions acknowledge what is at
//! or below the durable head.
//!
//! The writer keeps the last [`CommitterConfig::recent_blobs`] committed
//! blobs in memory ([`GroupCommitter::read_recent`]), so that the server
//! pushes a new blob to its subscribers without reading it back from disk.
//!
//! Failure policy: if a commit fails because the disk is full, that batch's
//! posters get [`Error::CommitFailed`] and the writer goes on (pruning may
//! free space; the next commit writes over what the failed one left). Any
//! other failed commit (an I/O error, notably a failed `fsync`, after which
//! the page cache cannot be trusted) stops the writer:
//! that batch's posters get [`Error::CommitFailed`], everything else
//! [`Error::Closed`], and the store must be reopened. A failed commit of a
//! post queued by [`GroupCommitter::try_append`] stops the writer too:
//! its index was promised, and so were the indices after it.
//! [`GroupCommitter::failed`] tells a stop after a failure from a clean
//! one.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_listener::{Event, EventListener};
use smol::channel::{self, Receiver, Sender, TryRecvError, TrySendError};

use super::{
    Blob, BlobStore, Error, PruneStats, Result, RetentionPolicy, Stats, blob_from_slice, unix_now,
};

/// The longest the writer holds a batch open for posts it expects (see
/// [`writer`]); never longer than the last commit took.
const HOLD_MAX: Duration = Duration::from_millis(1);
/// How long the writer waits at a time for more posts while it holds a
/// batch open; a wait that brings none ends the hold.
const HOLD_STEP: Duration = Duration::from_micros(100);

/// Settings of a [`GroupCommitter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitterConfig {
    /// The most posts committed at once (one sync).
    pub max_batch: usize,
    /// How many posts may wait in the queue before posters have to wait.
    pub queue_capacity: usize,
    /// How often the writer applies the retention policy (also when idle);
    /// `None`: only on [`GroupCommitter::prune`].
    pub prune_interval: Option<Duration>,
    /// How many of the last committed blobs stay in memory for
    /// [`GroupCommitter::read_recent`] (default 1024: 2 MiB). 0: none.
    pub recent_blobs: usize,
}

impl Default for CommitterConfig {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            queue_capacity: 4096,
            prune_interval: Some(Duration::from_secs(60)),
            recent_blobs: 1024,
        }
    }
}

type Reply<T> = Sender<Result<T>>;

enum Request {
    Post(Post),
    Stats(Reply<Stats>),
    Prune {
        now: u64,
        reply: Reply<PruneStats>,
    },
    SetPolicy {
        policy: RetentionPolicy,
        reply: Reply<PruneStats>,
    },
    IntegrityCheck(Reply<()>),
}

/// How long commits take, summed since the committer started (the maxima
/// since the previous [`GroupCommitter::take_latency`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitLatency {
    /// Commits (one sync each).
    pub commits: u64,
    /// Time spent writing their records and syncing them.
    pub sync_total: Duration,
    /// The longest `COMMIT` since the previous take.
    pub sync_max: Duration,
    /// Posts committed.
    pub posts: u64,
    /// Time from each post entering the queue to its commit, summed.
    pub post_total: Duration,
    /// The longest such time since the previous take.
    pub post_max: Duration,
}

/// [`CommitLatency`] as atomics (microseconds).
#[derive(Debug, Default)]
struct Latency {
    sync_total: AtomicU64,
    sync_max: AtomicU64,
    posts: AtomicU64,
    post_total: AtomicU64,
    post_max: AtomicU64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The last committed blobs, in index order: `first..first + blobs.len()`.
#[derive(Debug, Default)]
struct Recent {
    first: u64,
    blobs: VecDeque<Box<Blob>>,
    /// The oldest blob stored at all (in memory or not).
    oldest: Option<u64>,
}

impl Recent {
    /// The first stored blob after `after` (`Some(None)`: none was
    /// committed), if memory can tell.
    fn find(&self, after: u64) -> Option<Option<(u64, &Blob)>> {
        if self.blobs.is_empty() {
            return None;
        }
        let want = if after.saturating_add(1) >= self.first {
            after.saturating_add(1)
        } else if self.oldest == Some(self.first) {
            // Nothing older is stored: the first in memory is the answer.
            self.first
        } else {
            return None;
        };
        // Past the last one in memory: nothing, since the last committed
        // blob is always here (it comes here before the head moves).
        let offset = usize::try_from(want - self.first).unwrap_or(usize::MAX);
        Some(self.blobs.get(offset).map(|b| (want, &**b)))
    }

    /// Forgets what retention removed from the store.
    fn pruned(&mut self, oldest: Option<u64>) {
        self.oldest = oldest;
        let keep_from = oldest.unwrap_or(u64::MAX);
        while self.first < keep_from && self.blobs.pop_front().is_some() {
            self.first += 1;
        }
    }
}

/// State shared between the writer thread and its handles.
#[derive(Debug)]
struct Shared {
    head: AtomicU64,
    commits: AtomicU64,
    closed: AtomicBool,
    /// The writer stopped after a failure (not on shutdown).
    failed: AtomicBool,
    head_changed: Event,
    /// Notified once, when the writer stops.
    stopped: Event,
    /// Notified when the writer took posts off the queue.
    space: Event,
    /// The index the next post queued gets; queueing holds this lock, so
    /// that the queue is in index order.
    next: Mutex<u64>,
    recent: RwLock<Recent>,
    /// How many blobs `recent` keeps.
    recent_cap: usize,
    latency: Latency,
}

impl Shared {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.head_changed.notify(usize::MAX);
        self.stopped.notify(usize::MAX);
        self.space.notify(usize::MAX);
    }

    /// Queues one post with the next index; gives the blob back if the
    /// queue is full.
    fn enqueue(
        &self,
        tx: &Sender<Request>,
        blob: Box<Blob>,
        reply: Option<Reply<u64>>,
        promised: bool,
    ) -> std::result::Result<u64, (Error, Option<Box<Blob>>)> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let index = *next;
        let post = Post {
            blob: Some(blob),
            reply,
            queued_at: Instant::now(),
            index,
            promised,
        };
        match tx.try_send(Request::Post(post)) {
            Ok(()) => {
                *next += 1;
                Ok(index)
            }
            Err(TrySendError::Full(Request::Post(post))) => Err((Error::QueueFull, post.blob)),
            Err(_) => Err((Error::Closed, None)),
        }
    }
}

/// A [`BlobStore`] on its own writer thread, shared by async posters.
///
/// Dropping it (or [`shutdown`](Self::shutdown)) stops taking new posts,
/// commits and acknowledges everything already queued, and joins the
/// thread (so it blocks for at most one commit per queued batch).
#[derive(Debug)]
pub struct GroupCommitter {
    tx: Sender<Request>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<BlobStore>>,
}

impl GroupCommitter {
    /// Starts the writer thread for `store`, with the default
    /// [`CommitterConfig`].
    pub fn start(store: BlobStore) -> Result<Self> {
        Self::with_config(store, CommitterConfig::default())
    }

    /// Starts the writer thread for `store`.
    pub fn with_config(store: BlobStore, config: CommitterConfig) -> Result<Self> {
        let config = CommitterConfig {
            max_batch: config.max_batch.max(1),
            queue_capacity: config.queue_capacity.max(1),
            ..config
        };
        let (tx, rx) = channel::bounded(config.queue_capacity);
        let shared = Arc::new(Shared {
            head: AtomicU64::new(store.head()),
            commits: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            head_changed: Event::new(),
            stopped: Event::new(),
            space: Event::new(),
            next: Mutex::new(store.head() + 1),
            recent: RwLock::new(Recent {
                first: store.head() + 1,
                blobs: VecDeque::new(),
                oldest: store.oldest(),
            }),
            recent_cap: config.recent_blobs,
            latency: Latency::default(),
        });
        let writer_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("blob-store-writer".into())
            .spawn(move || writer(store, rx, writer_shared, config))
            .map_err(Error::Thread)?;
        Ok(Self {
            tx,
            shared,
            thread: Some(thread),
        })
    }

    /// Posts one blob. The future resolves with the blob's index once the
    /// commit holding it is done (durable), and waits while the
    /// queue is full. Dropping the future early does not withdraw a blob
    /// already queued.
    pub fn submit(
        &self,
        blob: Box<Blob>,
    ) -> impl Future<Output = Result<u64>> + Send + 'static + use<> {
        let (tx, shared) = (self.tx.clone(), Arc::clone(&self.shared));
        async move { submit_waiting(&tx, &shared, blob).await }
    }

    /// [`submit`](Self::submit) for a blob given as a slice: resolves to
    /// [`Error::WrongSize`] (storing nothing) unless it is exactly
    /// [`SEALED_BLOB_LEN`](cwtch_proto::group::SEALED_BLOB_LEN) bytes.
    pub fn submit_slice(
        &self,
        blob: &[u8],
    ) -> impl Future<Output = Result<u64>> + Send + 'static + use<> {
        let checked = blob_from_slice(blob).map(|b| Box::new(*b));
        let (tx, shared) = (self.tx.clone(), Arc::clone(&self.shared));
        async move { submit_waiting(&tx, &shared, checked?).await }
    }

    /// Queues one blob *now*, without waiting: blobs queued by successive
    /// calls are committed in call order, so their indices follow that
    /// order. Fails with [`Error::Closed`] if the writer stopped, or
    /// [`Error::QueueFull`] if the queue is full (nothing was queued).
    /// The returned future resolves with the index once durable.
    pub fn try_submit(
        &self,
        blob: Box<Blob>,
    ) -> Result<impl Future<Output = Result<u64>> + Send + 'static + use<>> {
        let (reply, ack) = channel::bounded(1);
        self.shared
            .enqueue(&self.tx, blob, Some(reply), false)
            .map_err(|(e, _)| e)?;
        Ok(async move { ack.recv().await.map_err(|_| Error::Closed)? })
    }

    /// Queues one blob now and returns the index it will have, without a
    /// reply of its own: it is durable once the head
    /// ([`head`](Self::head), [`HeadWatch`]) reaches that index. One
    /// publication of the head acknowledges a whole commit, which is how
    /// the server acknowledges its clients' posts. Fails like
    /// [`try_submit`](Self::try_submit).
    ///
    /// The index is a promise: if the commit holding it fails, the writer
    /// stops ([`failed`](Self::failed) says so) rather than give the index
    /// to another blob.
    pub fn try_append(&self, blob: &Blob) -> Result<u64> {
        self.shared
            .enqueue(&self.tx, Box::new(*blob), None, true)
            .map_err(|(e, _)| e)
    }

    /// Copies the first stored blob after `after` into `out` and returns
    /// its index, if the blobs kept in memory can tell: `Some(None)` when
    /// no blob was committed after `after`; `None`: ask the disk. Holds a
    /// lock only for the copy.
    pub fn read_recent(&self, after: u64, out: &mut Blob) -> Option<Option<u64>> {
        let recent = self.shared.recent.read().unwrap_or_else(|e| e.into_inner());
        recent.find(after).map(|found| {
            found.map(|(index, blob)| {
                out.copy_from_slice(blob);
                index
            })
        })
    }

    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T> {
        let (reply, answer) = channel::bounded(1);
        self.tx.send(make(reply)).await.map_err(|_| Error::Closed)?;
        answer.recv().await.map_err(|_| Error::Closed)?
    }

    /// The store's statistics (queued behind the posts before it).
    pub async fn stats(&self) -> Result<Stats> {
        self.request(Request::Stats).await
    }

    /// Applies the retention policy now (on the writer thread).
    pub async fn prune(&self, now: u64) -> Result<PruneStats> {
        self.request(|reply| Request::Prune { now, reply }).await
    }

    /// Replaces the retention policy and applies it at once (on the writer
    /// thread, after the posts queued before).
    pub async fn set_retention(&self, policy: RetentionPolicy) -> Result<PruneStats> {
        self.request(|reply| Request::SetPolicy { policy, reply })
            .await
    }

    /// Resolves once every post queued before the call is committed (or
    /// failed): what was acknowledged is on disk.
    pub async fn flush(&self) -> Result<()> {
        self.stats().await.map(|_| ())
    }

    /// The commit latencies so far, with the maxima since the last
    /// [`take_latency`](Self::take_latency).
    pub fn latency(&self) -> CommitLatency {
        let l = &self.shared.latency;
        let d = |a: &AtomicU64| Duration::from_micros(a.load(Ordering::Acquire));
        CommitLatency {
            commits: self.commits(),
            sync_total: d(&l.sync_total),
            sync_max: d(&l.sync_max),
            posts: l.posts.load(Ordering::Acquire),
            post_total: d(&l.post_total),
            post_max: d(&l.post_max),
        }
    }

    /// The commit latencies so far; the maxima are since the previous call
    /// (which resets them).
    pub fn take_latency(&self) -> CommitLatency {
        let l = &self.shared.latency;
        let d = |a: &AtomicU64| Duration::from_micros(a.load(Ordering::Acquire));
        let take = |a: &AtomicU64| Duration::from_micros(a.swap(0, Ordering::AcqRel));
        CommitLatency {
            commits: self.commits(),
            sync_total: d(&l.sync_total),
            sync_max: take(&l.sync_max),
            posts: l.posts.load(Ordering::Acquire),
            post_total: d(&l.post_total),
            post_max: take(&l.post_max),
        }
    }

    /// Runs [`BlobStore::integrity_check`] on the writer thread.
    pub async fn integrity_check(&self) -> Result<()> {
        self.request(Request::IntegrityCheck).await
    }

    /// The index of the last committed blob (0 if none).
    pub fn head(&self) -> u64 {
        self.shared.head.load(Ordering::Acquire)
    }

    /// Commits made by the writer so far.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Acquire)
    }

    /// Posts waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Whether the writer has stopped.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Whether the writer stopped because something failed (a commit, a
    /// promised index), rather than on shutdown.
    pub fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    /// Resolves once the writer has stopped, with whether it failed (see
    /// [`failed`](Self::failed)). Holds no reference to the committer.
    pub fn stopped(&self) -> impl Future<Output = bool> + Send + 'static + use<> {
        let shared = Arc::clone(&self.shared);
        async move {
            loop {
                if shared.closed.load(Ordering::Acquire) {
                    break;
                }
                let listener = shared.stopped.listen();
                if shared.closed.load(Ordering::Acquire) {
                    break;
                }
                listener.await;
            }
            shared.failed.load(Ordering::Acquire)
        }
    }

    /// A watcher of the head, starting from the current one.
    pub fn watch_head(&self) -> HeadWatch {
        HeadWatch {
            shared: Arc::clone(&self.shared),
            seen: self.head(),
            listener: None,
        }
    }

    /// Stops taking posts, commits everything queued, joins the writer
    /// thread and gives the store back.
    pub fn shutdown(mut self) -> Result<BlobStore> {
        self.stop().ok_or(Error::WriterPanicked)?
    }

    fn stop(&mut self) -> Option<Result<BlobStore>> {
        self.tx.close();
        let thread = self.thread.take()?;
        Some(thread.join().map_err(|_| Error::WriterPanicked))
    }
}

impl Drop for GroupCommitter {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Follows the head of a [`GroupCommitter`]: wakes when new blobs are
/// committed. It only ever reports the latest head (updates in between
/// are merged), which is all a subscriber needs to read what is new.
#[derive(Debug)]
pub struct HeadWatch {
    shared: Arc<Shared>,
    seen: u64,
    /// Kept between polls of [`poll_changed`](Self::poll_changed).
    listener: Option<EventListener>,
}

impl Clone for HeadWatch {
    fn clone(&self) -> Self {
        HeadWatch {
            shared: Arc::clone(&self.shared),
            seen: self.seen,
            listener: None,
        }
    }
}

impl HeadWatch {
    /// The last head this watcher reported (or started at).
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The current head.
    pub fn head(&self) -> u64 {
        self.shared.head.load(Ordering::Acquire)
    }

    /// Waits until the head moves past the last one seen and returns it;
    /// [`Error::Closed`] once the writer has stopped and nothing new came.
    pub async fn changed(&mut self) -> Result<u64> {
        loop {
            if let Some(head) = self.poll_head()? {
                return Ok(head);
            }
            let listener = self.shared.head_changed.listen();
            // Check again: the head may have moved before we listened.
            if let Some(head) = self.poll_head()? {
                return Ok(head);
            }
            listener.await;
        }
    }

    /// [`changed`](Self::changed) as a poll, for a driver that polls its
    /// sources itself: the listener is kept between calls, so a poll that
    /// finds nothing new allocates nothing.
    pub fn poll_changed(&mut self, cx: &mut Context<'_>) -> Poll<Result<u64>> {
        loop {
            match self.poll_head() {
                Ok(Some(head)) => {
                    self.listener = None;
                    return Poll::Ready(Ok(head));
                }
                Err(e) => {
                    self.listener = None;
                    return Poll::Ready(Err(e));
                }
                Ok(None) => {}
            }
            match self.listener.as_mut() {
                // Listen, then look again: the head may have moved before.
                None => self.listener = Some(self.shared.head_changed.listen()),
                Some(listener) => {
                    if Pin::new(listener).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.listener = None;
                }
            }
        }
    }

    fn poll_head(&mut self) -> Result<Option<u64>> {
        let head = self.head();
        if head > self.seen {
            self.seen = head;
            return Ok(Some(head));
        }
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(None)
    }
}

/// Whether a failed commit leaves the store usable.
fn is_recoverable(err: &Error) -> bool {
    match err {
        // A write refused for lack of space, undone (Log::append): the
        // disk holds nothing past the head. A failed sync or undo is
        // `SyncFailed`, which stops the writer.
        Error::Io(e) => matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ),
        _ => false,
    }
}

struct Post {
    /// Taken into memory once committed.
    blob: Option<Box<Blob>>,
    /// None: the poster follows the head instead.
    reply: Option<Reply<u64>>,
    queued_at: Instant,
    /// The index it was given when queued.
    index: u64,
    /// Whether the poster relies on that index (see `try_append`).
    promised: bool,
}

/// [`GroupCommitter::submit`]: queues `blob`, waiting while the queue is
/// full, then waits for its commit.
async fn submit_waiting(tx: &Sender<Request>, shared: &Shared, blob: Box<Blob>) -> Result<u64> {
    let (reply, ack) = channel::bounded(1);
    let mut blob = blob;
    loop {
        match shared.enqueue(tx, blob, Some(reply.clone()), false) {
            Ok(_) => break,
            Err((Error::QueueFull, Some(back))) => {
                blob = back;
                let listener = shared.space.listen();
                if tx.is_full() && !tx.is_closed() {
                    listener.await;
                }
            }
            Err((e, _)) => return Err(e),
        }
    }
    drop(reply);
    ack.recv().await.map_err(|_| Error::Closed)?
}

/// The writer thread: returns the store when the queue is closed and
/// drained, or after a fatal error.
fn writer(
    mut store: BlobStore,
    rx: Receiver<Request>,
    shared: Arc<Shared>,
    config: CommitterConfig,
) -> BlobStore {
    let mut batch: Vec<Post> = Vec::with_capacity(config.max_batch);
    // Posts the next batch may expect: those of the last commit (their
    // posters, acknowledged, may post again at once) and those that were
    // already queued when it ended; and how long that commit took.
    let expect = std::cell::Cell::new(0usize);
    let commit_took = std::cell::Cell::new(Duration::ZERO);
    let commit_batch = |store: &mut BlobStore, batch: &mut Vec<Post>| {
        let n = batch.len() as u64;
        if n > 0 {
            // Room in the queue again, for posters that wait.
            shared.space.notify(usize::MAX);
        }
        let started = Instant::now();
        let ok = commit(store, batch, &shared);
        if n > 0 {
            commit_took.set(started.elapsed());
            expect.set(
                usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .saturating_add(rx.len()),
            );
        }
        ok
    };
    // Prune once at start, then every interval.
    let mut next_prune = config.prune_interval.map(|_| Instant::now());
    let mut fatal = false;
    'outer: loop {
        if let Some(at) = next_prune
            && Instant::now() >= at
        {
            // A failed prune is not fatal to posting; it is retried later.
            let _ = store.prune(unix_now());
            forget_pruned(&store, &shared);
            next_prune = config.prune_interval.map(|every| Instant::now() + every);
        }
        // Wait for the first request (or the next prune).
        let first = match rx.try_recv() {
            Ok(req) => req,
            Err(TryRecvError::Closed) => break,
            Err(TryRecvError::Empty) => {
                let now = Instant::now();
                // Idle: the high-water mark catches up with the head (at
                // most a second after the last post), so that a quiet
                // store has all it acknowledged below the mark.
                let mark = store
                    .mark_due()
                    .map(|due| due.saturating_duration_since(now));
                let prune = next_prune.map(|at| at.saturating_duration_since(now));
                let wait = match (mark, prune) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                match recv_timeout(&rx, wait) {
                    Ok(Some(req)) => req,
                    Ok(None) => {
                        if store.mark_due().is_some_and(|due| Instant::now() >= due) {
                            // Retried at the next idle moment if it fails.
                            let _ = store.mark();
                        }
                        continue;
                    }
                    Err(()) => break,
                }
            }
        };
        let mut pending = Some(first);
        // Until when the batch may be held open (set at the first wait).
        let mut hold_until: Option<Instant> = None;
        loop {
            // Gather posts until the queue is empty, the batch is full, or
            // a control request arrives (which runs after the batch, in
            // order).
            while let Some(req) = pending.take() {
                match req {
                    Request::Post(post) => {
                        batch.push(post);
                        if batch.len() < config.max_batch {
                            pending = rx.try_recv().ok();
                        }
                    }
                    control => {
                        if !commit_batch(&mut store, &mut batch) {
                            fatal = true;
                            reply_closed(control);
                            break 'outer;
                        }
                        run_control(&mut store, control, &shared);
                        // No holding after a control request: it may be a
                        // flush waiting for the posts before it.
                        hold_until = Some(Instant::now());
                        pending = rx.try_recv().ok();
                    }
                }
            }
            // Hold the batch open while fewer posts are in it than the last
            // commit suggests are coming: under steady concurrent posting
            // (posters that post again once acknowledged) the posters
            // otherwise split into two groups that commit in turn, each
            // commit half as full, and a commit costs the same CPU and
            // sync whether it holds 8 blobs or 16. A wait that brings no
            // post ends the hold, and it never lasts longer than the last
            // commit took (nor HOLD_MAX): a lone poster never waits, and
            // a post waits at most about one commit more.
            if !batch.is_empty() && batch.len() < expect.get().min(config.max_batch) {
                let now = Instant::now();
                let until =
                    *hold_until.get_or_insert_with(|| now + commit_took.get().min(HOLD_MAX));
                if now < until {
                    std::thread::sleep(HOLD_STEP.min(until - now));
                    pending = rx.try_recv().ok();
                    if pending.is_some() {
                        continue;
                    }
                }
            }
            break;
        }
        if !commit_batch(&mut store, &mut batch) {
            fatal = true;
            break;
        }
    }
    // Stop taking posts; refuse whatever is still queued after a fatal
    // error (after a clean close the queue is already drained).
    rx.close();
    if fatal {
        shared.failed.store(true, Ordering::Release);
    }
    shared.close();
    if fatal {
        while let Ok(req) = rx.try_recv() {
            reply_closed(req);
        }
    }
    store
}

/// Wakes a thread parked in [`recv_timeout`].
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Waits for a request for at most `wait` (`None`: forever). `Ok(None)`
/// on timeout, `Err` when the queue is closed and empty. Parks the thread
/// (no async timer: arming one would wake the executor's reactor).
fn recv_timeout(
    rx: &Receiver<Request>,
    wait: Option<Duration>,
) -> std::result::Result<Option<Request>, ()> {
    let Some(deadline) = wait.and_then(|w| Instant::now().checked_add(w)) else {
        return rx.recv_blocking().map(Some).map_err(|_| ());
    };
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut recv = std::pin::pin!(rx.recv());
    loop {
        if let Poll::Ready(got) = recv.as_mut().poll(&mut cx) {
            return got.map(Some).map_err(|_| ());
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::park_timeout(deadline - now);
    }
}

/// Commits `batch` (if any) and answers its posters. Returns false if the
/// writer must stop.
fn commit(store: &mut BlobStore, batch: &mut Vec<Post>, shared: &Shared) -> bool {
    if batch.is_empty() {
        return true;
    }
    let first = store.head() + 1;
    let promised = batch.iter().any(|p| p.promised);
    // Indices were handed out as the posts were queued; a promised one
    // that would land elsewhere (after a failed commit) stops the writer.
    let in_order = (first..)
        .zip(batch.iter())
        .all(|(i, p)| !p.promised || p.index == i);
    let result = if in_order {
        store.append_iter(batch.iter().filter_map(|p| p.blob.as_deref()), unix_now())
    } else {
        Err(Error::IndexMismatch)
    };
    match result {
        Ok(range) => {
            {
                // Into memory before the head moves: whoever sees the new
                // head finds the blobs here.
                let mut recent = shared.recent.write().unwrap_or_else(|e| e.into_inner());
                recent.pruned(store.oldest());
                if recent.first + recent.blobs.len() as u64 != range.start {
                    recent.blobs.clear();
                    recent.first = range.start;
                }
                let cap = shared.recent_cap;
                if cap > 0 {
                    recent
                        .blobs
                        .extend(batch.iter_mut().filter_map(|p| p.blob.take()));
                }
                while recent.blobs.len() > cap {
                    recent.blobs.pop_front();
                    recent.first += 1;
                }
            }
            shared.head.store(store.head(), Ordering::Release);
            let l = &shared.latency;
            let sync = micros(store.last_commit_time());
            l.sync_total.fetch_add(sync, Ordering::AcqRel);
            l.sync_max.fetch_max(sync, Ordering::AcqRel);
            let done = Instant::now();
            let (mut total, mut max) = (0u64, 0u64);
            for post in batch.iter() {
                let waited = micros(done.saturating_duration_since(post.queued_at));
                total = total.saturating_add(waited);
                max = max.max(waited);
            }
            l.posts.fetch_add(batch.len() as u64, Ordering::AcqRel);
            l.post_total.fetch_add(total, Ordering::AcqRel);
            l.post_max.fetch_max(max, Ordering::AcqRel);
            shared.commits.fetch_add(1, Ordering::AcqRel);
            for (post, index) in batch.drain(..).zip(range) {
                // The poster may have given up; the blob is stored anyway.
                if let Some(reply) = post.reply {
                    let _ = reply.try_send(Ok(index));
                }
            }
            shared.head_changed.notify(usize::MAX);
            true
        }
        Err(err) => {
            let recoverable = is_recoverable(&err) && !promised;
            let err = Arc::new(err);
            let failed = batch.len() as u64;
            for post in batch.drain(..) {
                if let Some(reply) = post.reply {
                    let _ = reply.try_send(Err(Error::CommitFailed(Arc::clone(&err))));
                }
            }
            if recoverable {
                // The failed posts got no index: the next ones take theirs.
                let mut next = shared.next.lock().unwrap_or_else(|e| e.into_inner());
                *next -= failed;
            }
            recoverable
        }
    }
}

/// Drops from memory what retention removed from the store.
fn forget_pruned(store: &BlobStore, shared: &Shared) {
    shared
        .recent
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .pruned(store.oldest());
}

fn run_control(store: &mut BlobStore, req: Request, shared: &Shared) {
    match req {
        Request::Post(_) => {}
        Request::Stats(reply) => {
            let _ = reply.try_send(store.stats());
        }
        Request::Prune { now, reply } => {
            let pruned = store.prune(now);
            forget_pruned(store, shared);
            let _ = reply.try_send(pruned);
        }
        Request::SetPolicy { policy, reply } => {
            store.set_policy(policy);
            let pruned = store.prune(unix_now());
            forget_pruned(store, shared);
            let _ = reply.try_send(pruned);
        }
        Request::IntegrityCheck(reply) => {
            let _ = reply.try_send(store.integrity_check());
        }
    }
}

fn reply_closed(req: Request) {
    match req {
        Request::Post(post) => {
            if let Some(reply) = post.reply {
                drop(reply.try_send(Err(Error::Closed)));
            }
        }
        Request::Stats(reply) => drop(reply.try_send(Err(Error::Closed))),
        Request::Prune { reply, .. } => drop(reply.try_send(Err(Error::Closed))),
        Request::SetPolicy { reply, .. } => drop(reply.try_send(Err(Error::Closed))),
        Request::IntegrityCheck(reply) => drop(reply.try_send(Err(Error::Closed))),
    }
}
