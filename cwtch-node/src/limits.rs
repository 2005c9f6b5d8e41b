//! Limits that keep a daemon alive under attack (SECURITY.md, "A malicious
//! peer or stranger"): how many unauthenticated connections may be in their
//! handshake at once, how long a handshake may take, how many contact
//! requests a profile keeps. Every connection dropped for a limit is logged
//! with its [`DropReason`].

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use cwtch_proto::connection::Config;

/// Unauthenticated inbound connections a peer keeps at once; the oldest is
/// dropped to make room for a new one.
pub const MAX_PEER_HANDSHAKES: usize = 64;
/// Unauthenticated connections a server keeps at once; the oldest is
/// dropped to make room for a new one.
pub const MAX_SERVER_HANDSHAKES: usize = 256;
/// The contact-request limits are the protocol's: they live in the core
/// (`cwtch_proto::peer::requests`, SPEC.md section 4).
pub use cwtch_proto::peer::requests::{
    MAX_CONTACT_REQUESTS, MAX_MAILBOX_REQUESTS, MAX_REQUEST_TEXTS,
};

/// How long a link (to a contact or a server) must have lasted for the
/// next dial after it ends to start from the shortest delay. A link that
/// ends sooner (the other side, or something on the path, accepts and
/// then closes) counts as a failed dial, and the delays keep growing, so
/// that it cannot keep us redialling in a loop.
pub const STABLE_LINK: cwtch_proto::Duration = cwtch_proto::Duration::from_secs(60);

/// Why a daemon dropped a connection or refused a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Too many connections in their handshake: the oldest was dropped.
    HandshakeSlotsFull,
    /// The server serves its maximum number of clients.
    TooManyConnections,
    /// The profile holds [`MAX_CONTACT_REQUESTS`] requests: a new stranger
    /// was refused.
    TooManyContactRequests,
    /// A contact request sent more than [`MAX_REQUEST_TEXTS`] texts.
    TooManyRequestTexts,
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DropReason::HandshakeSlotsFull => {
                "too many unauthenticated connections: dropped the oldest"
            }
            DropReason::TooManyConnections => "too many connections: refused a new one",
            DropReason::TooManyContactRequests => {
                "too many pending contact requests: refused a new stranger"
            }
            DropReason::TooManyRequestTexts => "a contact request sent too many texts: ignored one",
        })
    }
}

/// Counts a kind of log line that whoever sends us input can repeat at
/// will (a refused connection, a malformed message, a blob that fails to
/// open): of each kind, the first and every 100th go to info, the others
/// to debug, so a flood does not flood the log. Kinds are told apart by a
/// key (an error's variant); the first [`THROTTLE_KINDS`] kinds are counted
/// apart, any more share one count.
pub struct Throttle(Mutex<Vec<(u64, u64)>>);

/// Kinds one [`Throttle`] counts apart.
pub const THROTTLE_KINDS: usize = 16;

impl Throttle {
    /// A fresh counter.
    pub const fn new() -> Self {
        Throttle(Mutex::new(Vec::new()))
    }

    /// Counts one occurrence; `Some(count so far)` when this one should be
    /// logged at info.
    pub fn count(&self) -> Option<u64> {
        self.count_kind(0)
    }

    /// [`Throttle::count`] for one kind (see [`kind_of`]).
    pub fn count_kind(&self, kind: u64) -> Option<u64> {
        let mut kinds = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let i = match kinds.iter().position(|(k, _)| *k == kind) {
            Some(i) => i,
            None if kinds.len() < THROTTLE_KINDS => {
                kinds.push((kind, 0));
                kinds.len() - 1
            }
            // Full: the overflow shares the last kind's count.
            None => kinds.len() - 1,
        };
        let n = kinds.get_mut(i).map(|(_, n)| {
            *n = n.saturating_add(1);
            *n
        })?;
        (n == 1 || n.is_multiple_of(100)).then_some(n)
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

/// The kind of a value for a [`Throttle`]: its enum variant (fields
/// ignored, so an attacker cannot make kinds without end).
pub fn kind_of<T>(value: &T) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    std::mem::discriminant(value).hash(&mut h);
    h.finish()
}

/// Logs an input-triggered event through a [`Throttle`] of its own: at
/// info (with the count so far) the first time and every 100th, else at
/// debug. `log_throttled!(kind = err; "...: {err}")` counts each variant of
/// `err` apart.
#[macro_export]
macro_rules! log_throttled {
    (kind = $kind:expr; $($arg:tt)+) => {{
        static THROTTLE: $crate::limits::Throttle = $crate::limits::Throttle::new();
        match THROTTLE.count_kind($crate::limits::kind_of(&$kind)) {
            Some(so_far) => ::tracing::info!(so_far, $($arg)+),
            None => ::tracing::debug!($($arg)+),
        }
    }};
    ($($arg:tt)+) => {
        $crate::log_throttled!(kind = (); $($arg)+)
    };
}

static DROPPED: [Throttle; 4] = [
    Throttle::new(),
    Throttle::new(),
    Throttle::new(),
    Throttle::new(),
];

/// Logs a dropped connection (every one at debug; the first and every
/// 100th of each reason at info, so that a flood does not flood the log).
pub fn log_drop(reason: DropReason) {
    let counter = match reason {
        DropReason::HandshakeSlotsFull => &DROPPED[0],
        DropReason::TooManyConnections => &DROPPED[1],
        DropReason::TooManyContactRequests => &DROPPED[2],
        DropReason::TooManyRequestTexts => &DROPPED[3],
    };
    match counter.count() {
        Some(n) => tracing::info!(%reason, dropped_so_far = n, "dropping a connection"),
        None => tracing::debug!(%reason, "dropping a connection"),
    }
}

/// The connection configuration of inbound connections (responders), with
/// a handshake deadline of `secs` (0: the protocol's default, 60 s).
pub fn responder_config(secs: u64) -> Config {
    let mut config = Config::default();
    if secs > 0 {
        config.handshake_timeout = cwtch_proto::Duration::from_secs(secs);
    }
    config
}

/// A bounded set of connections in their handshake. Admitting one when it
/// is full evicts the oldest, so a slowloris attacker must keep opening
/// connections faster than honest handshakes complete to lock anyone out.
pub struct HandshakeSlots {
    max: usize,
    inner: Mutex<Slots>,
}

struct Slots {
    next_id: u64,
    waiting: VecDeque<(u64, smol::channel::Sender<()>)>,
}

impl HandshakeSlots {
    /// At most `max` at once (each daemon has its own).
    pub fn new(max: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(HandshakeSlots {
            max,
            inner: Mutex::new(Slots {
                next_id: 0,
                waiting: VecDeque::new(),
            }),
        })
    }

    /// Takes a slot for a new connection, evicting the oldest if full.
    pub fn admit(self: &std::sync::Arc<Self>) -> Slot {
        let (tx, rx) = smol::channel::bounded(1);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while inner.waiting.len() >= self.max.max(1) {
            if let Some((_, oldest)) = inner.waiting.pop_front() {
                let _ = oldest.try_send(());
                log_drop(DropReason::HandshakeSlotsFull);
            }
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner.waiting.push_back((id, tx));
        Slot {
            id,
            slots: self.clone(),
            evicted: rx,
            released: AtomicBool::new(false),
        }
    }

    /// Connections in their handshake now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .len()
    }

    /// Whether no connection is in its handshake.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One connection's place among the handshakes; released when the peer is
/// authenticated (or the connection ends).
pub struct Slot {
    id: u64,
    slots: std::sync::Arc<HandshakeSlots>,
    evicted: smol::channel::Receiver<()>,
    released: AtomicBool,
}

impl Slot {
    /// The handshake is over: the connection no longer counts.
    pub fn release(&self) {
        if self.released.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut inner = self.slots.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.waiting.retain(|(id, _)| *id != self.id);
    }

    /// Completes when the connection was evicted before its handshake
    /// finished; never after [`Slot::release`].
    pub async fn evicted(&self) {
        // Checked again after the wait: an eviction sent just before the
        // handshake finished (both in one turn of the link's task) must not
        // end a link that is now established (it would end without telling
        // its handler, and stay listed as up).
        if !self.released.load(Ordering::Relaxed)
            && self.evicted.recv().await.is_ok()
            && !self.released.load(Ordering::Relaxed)
        {
            return;
        }
        std::future::pending::<()>().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_passes_the_first_and_every_hundredth() {
        let t = Throttle::new();
        let passed: Vec<u64> = (0..350).filter_map(|_| t.count()).collect();
        assert_eq!(passed, vec![1, 100, 200, 300]);
    }

    #[test]
    fn a_throttle_counts_kinds_apart() {
        #[allow(dead_code)]
        enum E {
            A(u64),
            B,
        }
        let t = Throttle::new();
        assert_eq!(kind_of(&E::A(1)), kind_of(&E::A(2)), "fields ignored");
        assert_ne!(kind_of(&E::A(1)), kind_of(&E::B));
        assert_eq!(t.count_kind(kind_of(&E::A(1))), Some(1));
        assert_eq!(t.count_kind(kind_of(&E::A(9))), None);
        assert_eq!(t.count_kind(kind_of(&E::B)), Some(1), "another kind");
        // Past THROTTLE_KINDS kinds, the rest share one count: bounded.
        for k in 100..200 {
            t.count_kind(k);
        }
        assert_eq!(t.0.lock().unwrap().len(), THROTTLE_KINDS);
    }

    /// Whether `slot` has been evicted (without waiting).
    fn evicted_now(slot: &Slot) -> bool {
        smol::block_on(smol::future::or(
            async {
                slot.evicted().await;
                true
            },
            async { false },
        ))
    }

    #[test]
    fn full_slots_evict_the_oldest_and_never_a_released_one() {
        let slots = HandshakeSlots::new(2);
        let a = slots.admit();
        let b = slots.admit();
        b.release();
        let c = slots.admit();
        assert_eq!(slots.len(), 2);
        assert!(!evicted_now(&a) && !evicted_now(&c));
        let d = slots.admit();
        assert!(evicted_now(&a), "the oldest waiting slot is evicted");
        assert!(!evicted_now(&b), "a released slot is never evicted");
        assert!(!evicted_now(&c) && !evicted_now(&d));
        assert_eq!(slots.len(), 2);
        drop(c);
        assert_eq!(slots.len(), 1);
        drop(d);
        assert!(slots.is_empty());
    }

    #[test]
    fn an_eviction_that_crosses_the_end_of_the_handshake_is_void() {
        let one = HandshakeSlots::new(1);
        let a = one.admit();
        let mut waiting = Box::pin(a.evicted());
        assert!(smol::block_on(smol::future::poll_once(&mut waiting)).is_none());
        // A newer connection evicts `a` while `a`'s handshake finishes.
        let _b = one.admit();
        a.release();
        assert!(
            smol::block_on(smol::future::poll_once(&mut waiting)).is_none(),
            "an established connection is not evicted"
        );
        assert!(!evicted_now(&a));
    }

    #[test]
    fn the_handshake_deadline_is_configurable() {
        assert_eq!(
            responder_config(0).handshake_timeout,
            Config::default().handshake_timeout
        );
        assert_eq!(
            responder_config(5).handshake_timeout,
            cwtch_proto::Duration::from_secs(5)
        );
    }
}
