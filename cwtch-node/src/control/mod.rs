//! The control API: how applications talk to a running daemon over
//! `control.sock` in its home. [`api`] is the wire (documented in API.md),
//! [`server`] the daemon's side, [`client`] a blocking client for the
//! command line, `chat` and bots, [`events`] the numbered event stream.

pub mod api;
pub mod client;
pub mod events;
pub mod server;

use std::path::{Path, PathBuf};

/// The socket's file name inside the home directory.
pub const SOCKET_FILE: &str = "control.sock";
/// The longest request line the daemon reads (a text is at most 4 KiB;
/// JSON escaping can make it six times longer).
pub const MAX_REQUEST_LEN: usize = 64 * 1024;

/// The socket path for a home directory.
pub fn socket_path(home: &Path) -> PathBuf {
    home.join(SOCKET_FILE)
}
