//! Typed errors, each with a Display in plain words and arti's own error
//! kept as the source for logs.

use core::fmt;
use core::time::Duration;
use std::io;

use arti_client::{ErrorKind, HasKind};

use crate::config::ConfigError;

/// Why [`crate::ArtiTransport::bootstrap`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BootstrapError {
    /// The configuration could not be built.
    Config(ConfigError),
    /// The state directory could not be created.
    Io(io::Error),
    /// The runtime (executor thread) could not be started.
    Runtime(io::Error),
    /// Arti could not start or bootstrap.
    Arti(arti_client::Error),
    /// Bootstrapping took longer than allowed.
    Timeout {
        /// The time allowed.
        limit: Duration,
        /// Arti's last words about its progress.
        last_status: String,
    },
}

impl fmt::Display for BootstrapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootstrapError::Config(e) => write!(f, "cannot configure Tor: {e}"),
            BootstrapError::Io(e) => write!(f, "cannot create Tor's state directory: {e}"),
            BootstrapError::Runtime(e) => write!(f, "cannot start Tor's runtime thread: {e}"),
            BootstrapError::Arti(e) => write!(f, "cannot connect to the Tor network: {e}"),
            BootstrapError::Timeout { limit, last_status } => write!(
                f,
                "could not connect to the Tor network within {} s (last status: {last_status})",
                limit.as_secs()
            ),
        }
    }
}

impl core::error::Error for BootstrapError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            BootstrapError::Config(e) => Some(e),
            BootstrapError::Io(e) | BootstrapError::Runtime(e) => Some(e),
            BootstrapError::Arti(e) => Some(e),
            BootstrapError::Timeout { .. } => None,
        }
    }
}

/// What kind of failure a dial was; see [`ArtiDialError::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialFailure {
    /// No descriptor for the address: the peer is offline (or has not
    /// published yet), or the address is wrong.
    NotFound,
    /// The descriptor was found but the peer could not be reached through
    /// its introduction points or the rendezvous failed.
    Unreachable,
    /// The peer's onion service answered but refused the stream (no
    /// listener on that port).
    Refused,
    /// The Tor network did not answer in time.
    Timeout,
    /// We are not connected to the Tor network (yet, or any more).
    NotBootstrapped,
    /// Anything else arti reports.
    Other,
}

/// Why a dial failed.
#[derive(Debug)]
pub struct ArtiDialError {
    kind: DialFailure,
    source: arti_client::Error,
}

impl ArtiDialError {
    pub(crate) fn new(source: arti_client::Error) -> Self {
        let kind = match source.kind() {
            ErrorKind::OnionServiceNotFound => DialFailure::NotFound,
            ErrorKind::OnionServiceNotRunning
            | ErrorKind::OnionServiceConnectionFailed
            | ErrorKind::OnionServiceProtocolViolation
            | ErrorKind::OnionServiceWrongClientAuth
            | ErrorKind::OnionServiceMissingClientAuth
            | ErrorKind::RemoteNetworkFailed
            // The peer's backlog is full (END RESOURCELIMIT): try later.
            | ErrorKind::RelayTooBusy => DialFailure::Unreachable,
            ErrorKind::RemoteConnectionRefused
            | ErrorKind::ExitPolicyRejected
            | ErrorKind::RemoteStreamClosed
            | ErrorKind::RemoteStreamReset => DialFailure::Refused,
            ErrorKind::TorNetworkTimeout | ErrorKind::RemoteNetworkTimeout => DialFailure::Timeout,
            ErrorKind::BootstrapRequired
            | ErrorKind::TorAccessFailed
            | ErrorKind::LocalNetworkError
            | ErrorKind::TorDirectoryUnusable => DialFailure::NotBootstrapped,
            _ => DialFailure::Other,
        };
        ArtiDialError { kind, source }
    }

    /// What kind of failure it was.
    pub fn kind(&self) -> DialFailure {
        self.kind
    }

    /// Whether trying again later may succeed (everything but a refusal:
    /// a peer that has just come online is "not found" for a while).
    pub fn is_retryable(&self) -> bool {
        self.kind != DialFailure::Refused
    }

    /// Arti's own error.
    pub fn arti_error(&self) -> &arti_client::Error {
        &self.source
    }
}

impl fmt::Display for ArtiDialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The same words as cwtch-transport-socks's SOCKS replies, so that
        // a status reads alike whichever Tor the node uses.
        let words = match self.kind {
            DialFailure::NotFound => {
                "their onion service is not published: they are probably offline (or the address is wrong)"
            }
            DialFailure::Unreachable => {
                "their onion service did not answer at its introduction points or the rendezvous: they probably went offline recently"
            }
            DialFailure::Refused => {
                "their onion service refused the connection: it does not serve this port, or it just went offline"
            }
            DialFailure::Timeout => "the Tor network did not answer in time: the attempt timed out",
            DialFailure::NotBootstrapped => "the built-in Tor is not connected to the Tor network",
            DialFailure::Other => "the built-in Tor could not connect",
        };
        write!(f, "{words} (arti: {})", self.source)
    }
}

impl core::error::Error for ArtiDialError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Why publishing our onion service failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ArtiListenError {
    /// Arti refused to launch the service.
    Arti(arti_client::Error),
    /// The service configuration was refused (a bug in this crate).
    Config(String),
    /// Arti publishes another address than our identity's: the key did not
    /// reach arti as it should (a bug; nothing is published under it).
    AddressMismatch {
        /// What we expected.
        expected: String,
        /// What arti reports, if anything.
        published: Option<String>,
    },
}

impl fmt::Display for ArtiListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtiListenError::Arti(e) => write!(f, "cannot publish our onion service: {e}"),
            ArtiListenError::Config(e) => {
                write!(f, "cannot configure our onion service: {e}")
            }
            ArtiListenError::AddressMismatch {
                expected,
                published,
            } => write!(
                f,
                "Tor would publish {} instead of our address {expected}",
                published.as_deref().unwrap_or("no address")
            ),
        }
    }
}

impl core::error::Error for ArtiListenError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            ArtiListenError::Arti(e) => Some(e),
            _ => None,
        }
    }
}

/// Why accepting an incoming stream failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum AcceptError {
    /// The onion service stopped (arti shut it down): no more streams
    /// will come.
    Stopped,
}

impl fmt::Display for AcceptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcceptError::Stopped => f.write_str("our onion service has stopped"),
        }
    }
}

impl core::error::Error for AcceptError {}

/// Waiting for the onion service to become reachable failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReachableError {
    /// Not reachable within the limit.
    Timeout {
        /// The time allowed.
        limit: Duration,
        /// The service's last state, as arti names it.
        last_state: String,
    },
    /// Arti reports the service broken.
    Broken(String),
}

impl fmt::Display for ReachableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReachableError::Timeout { limit, last_state } => write!(
                f,
                "our onion service was not reachable within {} s (state: {last_state})",
                limit.as_secs()
            ),
            ReachableError::Broken(e) => write!(f, "our onion service is broken: {e}"),
        }
    }
}

impl core::error::Error for ReachableError {}
