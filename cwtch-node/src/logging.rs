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

/// The built-in Tor's (arti's) crates. Without a network they warn about
/// every failed circuit, guard and channel, hundreds of lines while
/// bootstrapping; what matters reaches the user as the bootstrap's own
/// progress and failure. At the default level they say only errors.
const ARTI_TARGETS: &[&str] = &[
    "arti_client",
    "tor_chanmgr",
    "tor_circmgr",
    "tor_dirclient",
    "tor_dirmgr",
    "tor_guardmgr",
    "tor_hsclient",
    "tor_hsservice",
    "tor_netdir",
    "tor_proto",
];

fn filter_for(level: &str) -> EnvFilter {
    let mut directives = format!("{level},{STATS_TARGET}=info");
    // -v (info, debug) or a configured info/debug shows arti's lines too.
    if matches!(level, "warn" | "error") {
        for target in ARTI_TARGETS {
            directives.push_str(&format!(",{target}=error"));
        }
    }
    EnvFilter::new(directives)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arti_says_only_errors_at_the_default_level() {
        let quiet = filter_for("warn").to_string();
        for target in ["tor_circmgr", "tor_guardmgr", "tor_chanmgr", "arti_client"] {
            assert!(quiet.contains(&format!("{target}=error")), "{quiet}");
        }
        assert!(quiet.contains(&format!("{STATS_TARGET}=info")));
        for level in ["info", "debug"] {
            let loud = filter_for(level).to_string();
            assert!(!loud.contains("tor_circmgr"), "{loud}");
        }
    }
}
