//! The command line: definitions (clap), the one-shot commands that talk
//! to a running daemon through the control API ([`run`]), and the human
//! forms of their answers ([`format`]).
//!
//! Exit status: 0 on success; 2 when the input is wrong (a bad argument, a
//! contact or group that does not exist, an ambiguous name); 3 when no
//! daemon runs on the home; 4 when the request was refused (the daemon is
//! stopping, a version mismatch); 5 for an internal error. API.md lists the
//! same.

pub mod format;
pub mod run;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Cwtch-rs: metadata-resistant messaging over Tor onion services.
#[derive(Debug, Parser)]
#[command(name = "cwtch-node", version, about)]
pub struct Cli {
    /// The home directory of the profile or server [default: $CWTCH_HOME,
    /// else ~/.cwtch when it exists, else $XDG_DATA_HOME/cwtch]
    #[arg(long, global = true)]
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
    /// Drop an inbound connection whose handshake is not done after this
    /// many seconds (default 60).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub handshake_timeout: u64,
}

/// Contact names, messages: what `send`, `messages` and friends take.
pub const NAME_HELP: &str = "an address, or a contact's nickname or announced name";

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
    /// Send a message to a contact. The text is read from standard input
    /// when it is `-` or not given (it then never appears in `ps` or in the
    /// shell's history).
    Send {
        /// The contact: an address, a nickname, or the name they announce.
        contact: String,
        /// The text (`-` or nothing: read standard input).
        text: Option<String>,
    },
    /// Manage groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Manage our mailbox: where strangers leave contact requests while we are offline.
    #[command(subcommand)]
    Mailbox(MailboxCommand),
    /// Print the identifier to share: extended with our mailbox, or the plain address.
    Identifier,
    /// Show a conversation (a contact, or a group's name or id).
    Messages {
        /// A contact (address or name) or a group (name or id).
        conversation: String,
        /// Keep printing new messages.
        #[arg(long)]
        follow: bool,
    },
    /// Manage conversations.
    #[command(subcommand)]
    Conversation(ConversationCommand),
    /// The daemon's event stream: messages, requests, connections, gaps,
    /// moves, one per line, each numbered.
    Events {
        /// Keep printing events as they happen.
        #[arg(long)]
        follow: bool,
        /// Start after this event number (the daemon keeps the latest ones).
        #[arg(long)]
        since: Option<u64>,
    },
    /// Stop the running daemon.
    Stop,
    /// List the servers we know (used, or learned from contacts), best first.
    Servers,
    /// Run or inspect a server.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Print a completion script for a shell (bash, zsh, fish, ...).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Show the whole system working on a private Tor network (see --help).
    #[cfg(feature = "demo")]
    #[command(long_about = DEMO_ABOUT)]
    Demo {
        /// Run the same script over plain TCP on loopback instead of Tor:
        /// NOT anonymous, for machines without tor.
        #[arg(long)]
        dev_tcp: bool,
        /// Keep the temporary directory (profiles, server data, logs).
        #[arg(long)]
        keep: bool,
    },
}

/// The long help of `cwtch-node demo`: what the demo shows.
#[cfg(feature = "demo")]
const DEMO_ABOUT: &str = "\
Show the whole system working, on this machine, over real Tor.

The demo starts a private Tor network on loopback (3 directory authorities,
2 relays and 4 client tors; nothing leaves the machine), a Cwtch server and
three peers, alice, bob and carol. Each is a real `cwtch-node` process with
its own client tor, driven through the same command line you would use. It
narrates, with connection states as they change:

  - contact requests (alice to bob and carol) and their acceptance;
  - a chat with honest delivery status (pending, then delivered);
  - the group 'friends' on the server: creation, invites over the peer
    links, messages from every member;
  - carol going offline (her process killed): the others go on, and when
    she returns she catches up, in order, from the server and from alice;
  - the server killed with SIGKILL and restarted: nothing it acknowledged
    is lost;
  - what each party learned: every member's view of the group, and the
    server's: how many blobs it stores, that they all have one size, and
    that none of its files contains the group id, a sender's address or a
    message text;
  - timings: network bootstrap, start to reachable onion service, message
    latency p50/p99 over Tor.

The final checks are asserted: the command exits non-zero when one fails and
keeps its temporary directory, saying where the logs are. Every process and
temporary file is removed at the end, on failure (files kept) and on Ctrl-C.

Needs `tor` (sudo apt-get install tor). With --dev-tcp the same script runs
over plain TCP on loopback: NOT anonymous, it shows the protocol only.
Takes about 2 to 3 minutes over Tor.";

/// Contact commands.
#[derive(Debug, Subcommand)]
pub enum ContactCommand {
    /// Add a contact (it is accepted) and optionally send a first message.
    /// With an extended identifier the request (and message) also reach
    /// them through their mailbox while they are offline.
    Add {
        /// Their address or extended identifier (`cwtch:...?server=...&key=...`).
        address: String,
        /// A first message.
        #[arg(long)]
        message: Option<String>,
        /// Our name for them.
        #[arg(long)]
        nickname: Option<String>,
    },
    /// Accept a contact request.
    Accept {
        /// Their address or name.
        address: String,
    },
    /// Refuse a contact request: it is forgotten, with its messages.
    Refuse {
        /// Their address or name.
        address: String,
    },
    /// Block a contact: refused at the handshake from now on.
    Block {
        /// Their address or name.
        address: String,
    },
    /// Unblock a contact: it is an accepted contact again.
    Unblock {
        /// Their address or name.
        address: String,
    },
    /// Give a contact a nickname (empty: back to the name they announce).
    Rename {
        /// Their address or name.
        address: String,
        /// The nickname.
        nickname: String,
    },
    /// List contacts with their connection states.
    List,
}

/// Conversation commands.
#[derive(Debug, Subcommand)]
pub enum ConversationCommand {
    /// Delete a conversation's messages from this profile (the contact or
    /// group stays).
    Delete {
        /// A contact or a group.
        conversation: String,
    },
    /// Mark a conversation read.
    Read {
        /// A contact or a group.
        conversation: String,
    },
}

/// Mailbox commands.
#[derive(Debug, Subcommand)]
pub enum MailboxCommand {
    /// Create our mailbox on a server, or move it there with a fresh key
    /// (rotation); prints the new extended identifier. The replaced
    /// mailbox is still read for 30 days unless --revoke-old.
    Create {
        /// The server: its paste-able string (`cwtch-server:...`) or address.
        server: String,
        /// Stop reading every earlier mailbox now: the old identifiers
        /// reach nobody (for one that leaked to someone unwanted).
        #[arg(long)]
        revoke_old: bool,
    },
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
    /// Post a message to a group (the text from standard input when it is
    /// `-` or not given).
    Send {
        /// The group's name or id.
        group: String,
        /// The text (`-` or nothing: read standard input).
        text: Option<String>,
    },
    /// Move a group to another server: members follow a signed notice
    /// posted to the old server and the new one; the old one is still read
    /// for 14 days.
    Move {
        /// The group's name or id.
        group: String,
        /// The new server: its paste-able string or address.
        server: String,
    },
    /// Leave a group: its secret, keys and messages are forgotten here.
    Leave {
        /// The group's name or id.
        group: String,
    },
    /// List groups, their servers' states and any missing messages.
    List,
    /// List the group invites waiting for an answer.
    Invites,
    /// Join the group of a pending invite.
    Accept {
        /// The invite's group name or id.
        group: String,
    },
    /// Refuse a pending invite: it is forgotten.
    Refuse {
        /// The invite's group name or id.
        group: String,
    },
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

/// A new server keeps blobs this many days by default: long enough for a
/// member who was away a few weeks to catch up, short enough that a stranger
/// cannot fill the disk for good (SECURITY.md, "The server").
pub const DEFAULT_MAX_AGE_DAYS: u64 = 30;
/// A new server keeps at most this many MiB of blobs by default (10 GiB:
/// about five million posts).
pub const DEFAULT_MAX_MIB: u64 = 10 * 1024;

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
    #[arg(long, default_value_t = DEFAULT_MAX_MIB)]
    pub max_mib: u64,
    /// Drop blobs older than this many days (0: keep forever).
    #[arg(long, default_value_t = DEFAULT_MAX_AGE_DAYS)]
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

impl Default for ServerPolicyArgs {
    /// The same defaults as the flags.
    fn default() -> Self {
        ServerPolicyArgs {
            pow_bits: 0,
            max_blobs: 0,
            max_mib: DEFAULT_MAX_MIB,
            max_age_days: DEFAULT_MAX_AGE_DAYS,
            rate_burst: 32,
            rate_interval_ms: 500,
            max_connections: 10_000,
        }
    }
}
