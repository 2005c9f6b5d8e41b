//! The command line: definitions (clap) and the one-shot commands that talk
//! to a running daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Cwtch-rs: metadata-resistant messaging over Tor onion services.
#[derive(Debug, Parser)]
#[command(name = "cwtch-node", version, about)]
pub struct Cli {
    /// The home directory of the profile or server [default: $CWTCH_HOME or ~/.cwtch]
    #[arg(long, global = true, env = "CWTCH_HOME")]
    pub home: Option<PathBuf>,
    /// Print results as JSON (stable, documented in the README).
    #[arg(long, global = true)]
    pub json: bool,
    /// More logs (-v info, -vv debug). Keys and message texts are never logged.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the network.
#[derive(Clone, Debug, Args)]
pub struct TransportArgs {
    /// A running tor's SOCKS port.
    #[arg(long, default_value = "127.0.0.1:9050")]
    pub tor_socks: SocketAddr,
    /// A running tor's control port (cookie or no authentication).
    #[arg(long, default_value = "127.0.0.1:9051")]
    pub tor_control: SocketAddr,
    /// Launch our own tor (from PATH) instead of using a running one.
    #[arg(long, conflicts_with = "dev_tcp")]
    pub launch_tor: bool,
    /// Extra torrc lines for --launch-tor, one per line in this file
    /// (e.g. to join a private test network).
    #[arg(long, requires = "launch_tor")]
    pub torrc_extra: Option<PathBuf>,
    /// DEVELOPMENT ONLY: plain TCP on loopback, NO Tor, NO anonymity. Peers
    /// find each other through files in this directory.
    #[arg(long, value_name = "DIR")]
    pub dev_tcp: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a profile (password from CWTCH_PASSWORD or a prompt); prints its address.
    Init {
        /// Display name shown to contacts.
        #[arg(long)]
        name: String,
    },
    /// Print the profile's address.
    Address,
    /// Run the peer daemon in the foreground.
    Run(TransportArgs),
    /// Show our address, contacts and connection states.
    Status,
    /// Manage contacts.
    #[command(subcommand)]
    Contact(ContactCommand),
    /// Send a message to a contact.
    Send {
        /// The contact's address.
        address: String,
        /// The text.
        text: String,
    },
    /// Manage groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Show a conversation (a contact's address, or a group's name or id).
    Messages {
        /// A contact's address or a group's id.
        conversation: String,
        /// Keep printing new messages.
        #[arg(long)]
        follow: bool,
    },
    /// Run or inspect a server.
    #[command(subcommand)]
    Server(ServerCommand),
}

/// Contact commands.
#[derive(Debug, Subcommand)]
pub enum ContactCommand {
    /// Add a contact (it is accepted) and optionally send a first message.
    Add {
        /// Their address.
        address: String,
        /// A first message.
        #[arg(long)]
        message: Option<String>,
    },
    /// Accept a contact request.
    Accept {
        /// Their address.
        address: String,
    },
    /// Block a contact: refused at the handshake from now on.
    Block {
        /// Their address.
        address: String,
    },
    /// List contacts with their connection states.
    List,
}

/// Group commands.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group on a server.
    Create {
        /// The group's name.
        name: String,
        /// The server: its paste-able string (`cwtch-server:...`) or address.
        #[arg(long)]
        server: String,
    },
    /// Invite a contact (sent over the peer link, retried until acknowledged).
    Invite {
        /// The group's name or id.
        group: String,
        /// The contact's address.
        address: String,
    },
    /// Post a message to a group.
    Send {
        /// The group's name or id.
        group: String,
        /// The text.
        text: String,
    },
    /// List groups, their servers' states and any missing messages.
    List,
}

/// Server commands.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Create a server identity and its policy in the home directory.
    Init(ServerPolicyArgs),
    /// Run the server in the foreground.
    Run(TransportArgs),
    /// Print the string peers need to use this server.
    Info,
}

/// A server's policy, fixed at `server init` and announced to every client.
#[derive(Clone, Copy, Debug, Args, serde::Serialize, serde::Deserialize)]
pub struct ServerPolicyArgs {
    /// Proof of work demanded per post, in leading zero bits (0: none; at most 24).
    #[arg(long, default_value_t = 0)]
    pub pow_bits: u8,
    /// Keep at most this many blobs (oldest pruned first; 0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_blobs: u64,
    /// Keep at most this many MiB of blobs (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_mib: u64,
    /// Drop blobs older than this many days (0: keep forever).
    #[arg(long, default_value_t = 0)]
    pub max_age_days: u64,
    /// Posts a connection may make in a burst before the rate limit applies.
    #[arg(long, default_value_t = 32)]
    pub rate_burst: u16,
    /// Then one post per this many milliseconds.
    #[arg(long, default_value_t = 500)]
    pub rate_interval_ms: u64,
    /// The most clients served at once.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
}
