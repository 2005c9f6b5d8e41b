//! The daemons' logs: stderr, filtered by level, with a filter a daemon can
//! change while it runs (the server's `[logging] level`, read again on
//! SIGHUP).
//!
//! Precedence: `RUST_LOG` if set, else `-v`/`-vv` if given, else the level
//! the daemon's configuration asks for (default `warn`). Statistics lines
//! go to their own target, [`STATS_TARGET`], which is shown at every level
//! unless `RUST_LOG` says otherwise: an operator sees them by default.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The target of the statistics lines (`server stats` logged periodically).
pub const STATS_TARGET: &str = "cwtch_stats";

struct State {
    handle: reload::Handle<EnvFilter, Registry>,
    /// RUST_LOG or -v chose the filter: the configuration does not touch it.
    fixed: bool,
}

static STATE: OnceLock<State> = OnceLock::new();

fn filter_for(level: &str) -> EnvFilter {
    EnvFilter::new(format!("{level},{STATS_TARGET}=info"))
}

/// Starts logging to stderr: `RUST_LOG`, else `verbose` (0: warn, 1: info,
/// more: debug). Call once, first thing.
pub fn init(verbose: u8) {
    let (filter, fixed) = match EnvFilter::try_from_default_env() {
        Ok(f) => (f, true),
        Err(_) => {
            let level = match verbose {
                0 => "warn",
                1 => "info",
                _ => "debug",
            };
            (filter_for(level), verbose > 0)
        }
    };
    let (layer, handle) = reload::Layer::new(filter);
    // Colours only on a terminal: not in files or the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let subscriber = tracing_subscriber::registry().with(layer).with(
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr),
    );
    if subscriber.try_init().is_ok() {
        let _ = STATE.set(State { handle, fixed });
    }
}

/// Sets the level a daemon's configuration asks for, unless `RUST_LOG` or
/// `-v` chose one. Returns whether it applied.
pub fn set_configured_level(level: &str) -> bool {
    match STATE.get() {
        Some(state) if !state.fixed => state.handle.reload(filter_for(level)).is_ok(),
        _ => false,
    }
}
