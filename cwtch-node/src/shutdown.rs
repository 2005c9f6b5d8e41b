//! Stopping and reloading a daemon on signals.
//!
//! [`Shutdown`] is a flag that says "stop now, gracefully", with a future
//! that waits for it; [`Reload`] counts requests to read the configuration
//! again. Both are plain values that code embedding a daemon (tests) can
//! trigger by hand; [`Signals::install`] feeds them from the process's
//! signals:
//!
//! - SIGTERM or SIGINT: [`Shutdown::trigger`]. A second one while the
//!   daemon is still stopping ends the process at once (exit status 130),
//!   for an operator who does not want to wait.
//! - SIGHUP: [`Reload::request`].
//!
//! The signals are read with `async-signal` (part of smol, our runtime,
//! already in the dependency graph through `async-process`): the handler
//! only writes to a pipe, and everything else runs as an ordinary task, so
//! no code of ours runs inside a signal handler. `ctrlc` cannot tell
//! SIGHUP from SIGTERM; `signal-hook` alone would need a thread of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use event_listener::Event;

#[derive(Debug, Default)]
struct Flag {
    set: AtomicBool,
    event: Event,
}

/// A request to stop, shared by every part of a daemon.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<Flag>);

impl Shutdown {
    /// A flag nobody has raised yet.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks everything waiting on this flag to stop. Idempotent.
    pub fn trigger(&self) {
        if !self.0.set.swap(true, Ordering::SeqCst) {
            self.0.event.notify(usize::MAX);
        }
    }

    /// Whether a stop was asked.
    pub fn is_triggered(&self) -> bool {
        self.0.set.load(Ordering::SeqCst)
    }

    /// [`wait`](Self::wait) as a poll, for a driver that polls its sources
    /// itself; `listener` is kept between calls.
    pub fn poll_wait(
        &self,
        listener: &mut Option<event_listener::EventListener>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        use std::future::Future;
        loop {
            if self.is_triggered() {
                *listener = None;
                return std::task::Poll::Ready(());
            }
            match listener.as_mut() {
                // Listen, then look again.
                None => *listener = Some(self.0.event.listen()),
                Some(l) => {
                    if std::pin::Pin::new(l).poll(cx).is_pending() {
                        return std::task::Poll::Pending;
                    }
                    *listener = None;
                }
            }
        }
    }

    /// Resolves once a stop is asked (at once if it already was).
    pub async fn wait(&self) {
        loop {
            if self.is_triggered() {
                return;
            }
            let listener = self.0.event.listen();
            if self.is_triggered() {
                return;
            }
            listener.await;
        }
    }
}

#[derive(Debug, Default)]
struct Counter {
    requests: AtomicU64,
    event: Event,
}

/// Requests to read the configuration again. Each clone keeps its own
/// place: [`Reload::next`] returns once per batch of requests it has not
/// seen.
#[derive(Debug, Default)]
pub struct Reload {
    inner: Arc<Counter>,
    seen: u64,
}

impl Clone for Reload {
    fn clone(&self) -> Self {
        Reload {
            inner: Arc::clone(&self.inner),
            seen: self.inner.requests.load(Ordering::SeqCst),
        }
    }
}

impl Reload {
    /// A source of reload requests nobody has made yet.
    pub fn new() -> Reload {
        Reload::default()
    }

    /// Asks for a reload.
    pub fn request(&self) {
        self.inner.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.event.notify(usize::MAX);
    }

    /// Waits for a request made since the last one this value returned for.
    pub async fn next(&mut self) {
        loop {
            let now = self.inner.requests.load(Ordering::SeqCst);
            if now != self.seen {
                self.seen = now;
                return;
            }
            let listener = self.inner.event.listen();
            if self.inner.requests.load(Ordering::SeqCst) != self.seen {
                continue;
            }
            listener.await;
        }
    }
}

/// The process's SIGTERM, SIGINT and SIGHUP, turned into a [`Shutdown`]
/// and a [`Reload`]. Reads them while this value lives (dropping it stops
/// reading; the signals keep being caught, and ignored).
#[derive(Debug)]
pub struct Signals {
    _task: smol::Task<()>,
    /// Raised by SIGTERM and SIGINT.
    pub shutdown: Shutdown,
    /// Requested by SIGHUP.
    pub reload: Reload,
}

impl Signals {
    /// Catches SIGTERM, SIGINT and SIGHUP from now on. Spawns a task on
    /// smol's global executor (driven by `smol::block_on`).
    pub fn install() -> std::io::Result<Signals> {
        use async_signal::Signal;
        use smol::stream::StreamExt;
        let mut signals = async_signal::Signals::new([Signal::Term, Signal::Int, Signal::Hup])?;
        let shutdown = Shutdown::new();
        let reload = Reload::new();
        let (stop, hup) = (shutdown.clone(), reload.clone());
        let task = smol::spawn(async move {
            while let Some(signal) = signals.next().await {
                match signal {
                    Ok(Signal::Hup) => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        hup.request();
                    }
                    Ok(signal) => {
                        let signal = if signal == Signal::Int {
                            "SIGINT"
                        } else {
                            "SIGTERM"
                        };
                        if stop.is_triggered() {
                            eprintln!("{signal} again: stopping now, without waiting");
                            std::process::exit(130);
                        }
                        eprintln!("{signal}: stopping gracefully (again to stop at once)");
                        stop.trigger();
                    }
                    Err(e) => tracing::warn!("reading signals failed: {e}"),
                }
            }
        });
        Ok(Signals {
            _task: task,
            shutdown,
            reload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shutdown_wakes_every_waiter_once_raised_and_stays_raised() {
        let s = Shutdown::new();
        assert!(!s.is_triggered());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || smol::block_on(s.wait()))
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        s.trigger();
        for w in waiters {
            w.join().unwrap();
        }
        assert!(s.is_triggered());
        smol::block_on(s.wait()); // at once
    }

    #[test]
    fn each_reload_request_is_seen_once() {
        let r = Reload::new();
        let mut a = r.clone();
        r.request();
        smol::block_on(a.next());
        let pending = smol::future::block_on(smol::future::or(
            async {
                a.next().await;
                true
            },
            async {
                smol::Timer::after(std::time::Duration::from_millis(50)).await;
                false
            },
        ));
        assert!(!pending, "no second wake-up for one request");
        r.request();
        r.request();
        smol::block_on(a.next());
    }
}
