//! The event stream: every event the daemon emits is numbered, the latest
//! [`KEEP_EVENTS`] are kept so that a client can ask for "everything since
//! N", and each subscriber has a bounded queue. A subscriber too slow to
//! keep up loses events, and is told so with a `lagged` event saying how
//! many: never silently.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use smol::channel::{Receiver, Sender, TryRecvError, TrySendError};

use super::api::{Event, EventEnvelope};

/// How many of the latest events are kept for subscribers that come back.
pub const KEEP_EVENTS: usize = 4096;
/// How many events may wait for one subscriber.
pub const SUBSCRIBER_QUEUE: usize = 256;

struct Subscriber {
    tx: Sender<EventEnvelope>,
    /// The number of the latest event dropped for this subscriber.
    last_dropped: Arc<AtomicU64>,
}

struct Inner {
    run: u64,
    next: u64,
    kept: VecDeque<EventEnvelope>,
    subscribers: Vec<Subscriber>,
}

/// The hub every part of the daemon publishes to.
#[derive(Clone)]
pub struct Hub(Arc<Mutex<Inner>>);

impl Default for Hub {
    fn default() -> Self {
        Hub::new(0)
    }
}

impl Hub {
    /// The hub of one run of the daemon (`run` names it to clients).
    pub fn new(run: u64) -> Self {
        Hub(Arc::new(Mutex::new(Inner {
            run,
            next: 1,
            kept: VecDeque::new(),
            subscribers: Vec::new(),
        })))
    }

    /// Which run of the daemon this is.
    pub fn run(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).run
    }
}

/// One subscriber's side: events in order, with a `lagged` notice where
/// some were dropped for it.
///
/// Events are numbered without holes, so a hole in what arrives is a loss,
/// told by a `lagged` notice in its place, before the next event. Losses
/// at the end of what was queued (a burst, then quiet) are told as soon as
/// the queue is empty, not at the next event.
pub struct Subscription {
    rx: Receiver<EventEnvelope>,
    last_dropped: Arc<AtomicU64>,
    /// The number of the last event (or loss) told.
    last_seq: u64,
    /// An event held back behind a `lagged` notice.
    held: Option<EventEnvelope>,
}

impl Subscription {
    /// The next event or `lagged` notice; `None` once the hub is gone.
    pub async fn next(&mut self) -> Option<EventEnvelope> {
        if let Some(ev) = self.held.take() {
            self.last_seq = ev.seq;
            return Some(ev);
        }
        let ev = match self.rx.try_recv() {
            Ok(ev) => ev,
            Err(TryRecvError::Closed) => return None,
            Err(TryRecvError::Empty) => {
                let lost = self.last_dropped.load(Ordering::Acquire);
                if lost > self.last_seq {
                    return Some(self.lagged_upto(lost));
                }
                self.rx.recv().await.ok()?
            }
        };
        if ev.seq > self.last_seq.saturating_add(1) {
            let lag = self.lagged_upto(ev.seq - 1);
            self.held = Some(ev);
            return Some(lag);
        }
        self.last_seq = ev.seq;
        Some(ev)
    }

    /// The notice that the events after the last one told, up to `upto`,
    /// were lost. It carries the number of the last one lost, so the
    /// events lost are `seq - dropped + 1 ..= seq`.
    fn lagged_upto(&mut self, upto: u64) -> EventEnvelope {
        let dropped = upto - self.last_seq;
        self.last_seq = upto;
        EventEnvelope {
            seq: upto,
            event: Event::Lagged { dropped },
        }
    }
}

impl Hub {
    /// Numbers and publishes an event.
    pub fn publish(&self, event: Event) -> u64 {
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let env = EventEnvelope {
            seq: inner.next,
            event,
        };
        inner.next += 1;
        inner.kept.push_back(env.clone());
        if inner.kept.len() > KEEP_EVENTS {
            inner.kept.pop_front();
        }
        inner
            .subscribers
            .retain(|s| match s.tx.try_send(env.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    s.last_dropped.store(env.seq, Ordering::Release);
                    true
                }
                Err(TrySendError::Closed(_)) => false,
            });
        env.seq
    }

    /// A new subscriber: the kept events after `since` first (a `lagged`
    /// notice first if some after `since` are no longer kept), then every
    /// new one. Without `since`, only new ones. A `since` beyond the latest
    /// event (a number from another run) counts from now.
    pub fn subscribe(&self, since: Option<u64>) -> Subscription {
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let latest = inner.next - 1;
        let since = since.map(|s| s.min(latest));
        let replay = since.map_or(0, |since| {
            inner.kept.iter().filter(|e| e.seq > since).count()
        });
        // Room for the replay, then SUBSCRIBER_QUEUE new events: a
        // subscriber that does not read beyond that is lagged.
        let (tx, rx) = smol::channel::bounded(replay + SUBSCRIBER_QUEUE);
        if let Some(since) = since {
            for e in inner.kept.iter().filter(|e| e.seq > since) {
                let _ = tx.try_send(e.clone());
            }
        }
        let last_dropped = Arc::new(AtomicU64::new(0));
        inner.subscribers.push(Subscriber {
            tx,
            last_dropped: last_dropped.clone(),
        });
        Subscription {
            rx,
            last_dropped,
            last_seq: since.unwrap_or(latest),
            held: None,
        }
    }

    /// The number the next event will have.
    pub fn next_seq(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> Event {
        Event::Gap {
            group: "g".into(),
            text: format!("{n}"),
            closed: false,
        }
    }

    fn read(sub: &mut Subscription, n: usize) -> Vec<EventEnvelope> {
        smol::block_on(async {
            let mut v = Vec::new();
            for _ in 0..n {
                v.push(sub.next().await.unwrap());
            }
            v
        })
    }

    #[test]
    fn a_slow_subscriber_is_told_how_many_it_lost_where_it_lost_them() {
        let hub = Hub::default();
        let mut sub = hub.subscribe(None);
        let total = SUBSCRIBER_QUEUE as u64 + 50;
        for n in 0..total {
            hub.publish(ev(n));
        }
        // Everything queued, then at once (no later event needed) the
        // notice for the 50 lost at the end.
        let seen = read(&mut sub, SUBSCRIBER_QUEUE + 1);
        let seqs: Vec<u64> = seen[..SUBSCRIBER_QUEUE].iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=SUBSCRIBER_QUEUE as u64).collect::<Vec<_>>());
        assert_eq!(seen[SUBSCRIBER_QUEUE].seq, total);
        assert_eq!(seen[SUBSCRIBER_QUEUE].event, Event::Lagged { dropped: 50 });
        // Then the stream goes on without a second notice.
        hub.publish(ev(0));
        assert_eq!(read(&mut sub, 1)[0].seq, total + 1);

        // A loss in the middle is told in its place: queued, notice, newer.
        for n in 0..SUBSCRIBER_QUEUE as u64 + 10 {
            hub.publish(ev(n));
        }
        let first = read(&mut sub, 100);
        assert!(
            first
                .iter()
                .all(|e| !matches!(e.event, Event::Lagged { .. }))
        );
        for n in 0..5 {
            hub.publish(ev(n));
        }
        let rest = read(&mut sub, SUBSCRIBER_QUEUE - 100 + 1 + 5);
        let lag = rest
            .iter()
            .position(|e| matches!(e.event, Event::Lagged { .. }))
            .unwrap();
        assert_eq!(lag, SUBSCRIBER_QUEUE - 100);
        assert_eq!(rest[lag].event, Event::Lagged { dropped: 10 });
        let after: Vec<u64> = rest[lag + 1..].iter().map(|e| e.seq).collect();
        assert_eq!(
            after,
            vec![
                rest[lag].seq + 1,
                rest[lag].seq + 2,
                rest[lag].seq + 3,
                rest[lag].seq + 4,
                rest[lag].seq + 5
            ]
        );
        // Nothing silently: every number is either delivered or in a notice.
        let mut covered = 0u64;
        for e in seen.iter().chain(first.iter()).chain(rest.iter()) {
            covered += match e.event {
                Event::Lagged { dropped } => dropped,
                _ => 1,
            };
        }
        assert_eq!(covered + 1, hub.next_seq() - 1);
    }

    #[test]
    fn a_returning_client_gets_everything_since_its_last_number() {
        let hub = Hub::default();
        for n in 0..10 {
            hub.publish(ev(n));
        }
        let mut sub = hub.subscribe(Some(7));
        hub.publish(ev(10));
        let got: Vec<u64> = smol::block_on(async {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(sub.next().await.unwrap().seq);
            }
            v
        });
        assert_eq!(got, vec![8, 9, 10, 11]);
        // Asking from before what is kept: told how many are gone.
        for n in 0..KEEP_EVENTS as u64 {
            hub.publish(ev(n));
        }
        let mut old = hub.subscribe(Some(2));
        let first = smol::block_on(old.next()).unwrap();
        let oldest = hub.next_seq() - KEEP_EVENTS as u64;
        assert_eq!(
            first.event,
            Event::Lagged {
                dropped: oldest - 3
            }
        );
        assert_eq!(smol::block_on(old.next()).unwrap().seq, oldest);
        // A number from another run counts from now.
        let mut future = hub.subscribe(Some(u64::MAX));
        hub.publish(ev(0));
        assert_eq!(
            smol::block_on(future.next()).unwrap().seq,
            hub.next_seq() - 1
        );
    }
}
