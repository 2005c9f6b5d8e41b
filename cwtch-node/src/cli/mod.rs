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
use cwtch_transport_socks::ControlAddr;

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

/// Which Tor the daemon uses (`--tor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TorChoice {
    /// A peer: the built-in Tor. A server: a tor process (a running one,
    /// else tor from PATH). Flags that name one (--tor-socks, --torrc-extra,
    /// --tor-network, ...) choose it. The choice and why are printed.
    Auto,
    /// The built-in Tor (arti) in this process: nothing to install.
    Arti,
    /// A running tor: --tor-socks and --tor-control, by default SOCKS
    /// 127.0.0.1:9050 and control Debian's socket /run/tor/control if it
    /// answers, else 127.0.0.1:9051; cookie, safecookie or password
    /// authentication.
    System,
    /// Our own tor, launched from PATH, its data in <home>/tor.
    Launch,
}

/// How to reach the network.
#[derive(Clone, Debug, Args)]
pub struct TransportArgs {
    /// Which Tor: auto (a peer: the built-in Tor; a server: a tor process),
    /// arti (built in), system (a running tor), launch (tor from PATH).
    #[arg(long, value_enum, default_value_t = TorChoice::Auto)]
    pub tor: TorChoice,
    /// A running tor's SOCKS port (--tor system) [default: 127.0.0.1:9050].
    #[arg(long, value_name = "ADDR")]
    pub tor_socks: Option<SocketAddr>,
    /// A running tor's control port, ADDRESS:PORT, or its control socket,
    /// unix:PATH (--tor system) [default: unix:/run/tor/control if it
    /// answers, else 127.0.0.1:9051, checked: no NULL authentication, a cookie only from
    /// the tor account; name it here to use it as it is].
    #[arg(long, value_name = "ADDR")]
    pub tor_control: Option<ControlAddr>,
    /// A file whose first line is the control port's password (tor's
    /// HashedControlPassword), for --tor system. Without it: cookie or
    /// safecookie authentication, or none, as tor offers.
    #[arg(long, value_name = "FILE")]
    pub tor_control_password_file: Option<PathBuf>,
    /// The same as --tor launch: launch our own tor from PATH.
    #[arg(long, conflicts_with = "dev_tcp")]
    pub launch_tor: bool,
    /// Extra torrc lines for the tor we launch (--tor launch), one per line
    /// in this file (e.g. to join a private test network).
    #[arg(long, value_name = "FILE")]
    pub torrc_extra: Option<PathBuf>,
    /// The built-in Tor joins the private Tor network described in FILE
    /// (its authorities and first relays) instead of the public one. For
    /// tests and the demo, which write it.
    #[arg(long, value_name = "FILE")]
    pub tor_network: Option<PathBuf>,
    /// DEVELOPMENT ONLY: plain TCP on loopback, NO Tor, NO anonymity. Peers
    /// find each other through files in this directory.
    #[arg(long, value_name = "DIR")]
    pub dev_tcp: Option<PathBuf>,
    /// Drop an inbound connection whose handshake is not done after this
    /// many seconds (default 60).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub handshake_timeout: u64,
}

/// `run`.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// How to reach the network.
    #[command(flatten)]
    pub transport: TransportArgs,
    /// Read the password from the first line of standard input (a pipe)
    /// instead of CWTCH_PASSWORD or the terminal: how `chat` hands it to
    /// the daemon it starts, never through arguments or the environment.
    #[arg(long)]
    pub password_stdin: bool,
    /// Stop gracefully when standard input ends (its writer closed the
    /// pipe or died): how a daemon that `chat` started ends with chat, even
    /// when chat ends abnormally.
    #[arg(long, hide = true)]
    pub stop_on_stdin_eof: bool,
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
    Run(RunArgs),
    /// The interactive terminal client: contacts, groups and conversations
    /// on one screen. Attaches to the running daemon, or starts one with
    /// these transport flags (and stops it on leaving).
    Chat(TransportArgs),
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
        /// Carol uses the built-in Tor (arti, in her cwtch-node process)
        /// instead of a client tor; the network votes every 15 s so that
        /// arti and tor agree on onion services.
        #[arg(long, conflicts_with = "dev_tcp")]
        arti: bool,
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

Needs `tor` (sudo apt-get install tor). With --arti carol runs on the
built-in Tor (arti, inside her cwtch-node process) and talks with the others'
client tors; the network then votes every 15 s so that both agree on onion
services. With --dev-tcp the same script runs over plain TCP on loopback: NOT
anonymous, it shows the protocol only.
Takes about a minute over Tor (after the first build).";

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
    /// Create a server identity and its commented configuration file
    /// (`server.toml`) in the home directory. The flags change the defaults
    /// written there.
    Init(ServerPolicyArgs),
    /// Run the server in the foreground. SIGTERM or SIGINT: stop gracefully
    /// (acknowledged posts committed, clients told, onion service removed,
    /// exit 0); SIGHUP: read server.toml again.
    Run(ServerRunArgs),
    /// Print the string peers need to use this server.
    Info,
    /// Print the configuration the server runs with (asks the running
    /// server, else reads server.toml).
    Config,
    /// Statistics of the running server (over its admin socket): blobs,
    /// bytes, oldest blob, connections, posts and fetches per second,
    /// refusals by reason, fsync and commit latency.
    Stats,
    /// Write a consistent copy of the server (its key, configuration and
    /// blobs) to FILE, mode 0600, also while the server runs.
    Backup {
        /// The backup file to create (must not exist).
        file: PathBuf,
    },
    /// Make the home (`--home NEW`, new or empty) a server restored from a
    /// backup: it keeps the server's address.
    Restore {
        /// A file written by `server backup`.
        file: PathBuf,
    },
}

/// `server run`.
#[derive(Clone, Debug, Args)]
pub struct ServerRunArgs {
    /// How to reach the network.
    #[command(flatten)]
    pub transport: TransportArgs,
    /// Serve Prometheus metrics (text format) on a loopback ADDRESS:PORT or
    /// on a Unix socket (`unix:PATH`); overrides `metrics` in server.toml.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

/// What `server init` writes into server.toml where it differs from the
/// defaults (see the file's comments and OPERATING.md).
#[derive(Clone, Copy, Debug, Default, Args)]
pub struct ServerPolicyArgs {
    /// Proof of work demanded of every post, whatever the load, in leading
    /// zero bits (0: none; at most 24). Without it, work is asked only
    /// under load (see --pow-max-bits).
    #[arg(long, conflicts_with = "pow_threshold")]
    pub pow_bits: Option<u8>,
    /// The most proof of work asked under load, in bits (default 20; 0: never).
    #[arg(long)]
    pub pow_max_bits: Option<u8>,
    /// Posts per second below which no proof of work is asked (default 100;
    /// 0: always the maximum).
    #[arg(long, value_name = "POSTS_PER_SEC")]
    pub pow_threshold: Option<u64>,
    /// Keep at most this many blobs (oldest pruned first; 0: no limit)
    /// [default: as many as fit in --max-mib].
    #[arg(long)]
    pub max_blobs: Option<u64>,
    /// Keep at most this many MiB of blobs (0: no limit) [default: 10240].
    #[arg(long)]
    pub max_mib: Option<u64>,
    /// Drop blobs older than this many days (0: keep forever) [default: 30].
    #[arg(long)]
    pub max_age_days: Option<u64>,
    /// Posts a connection may make in a burst before the rate limit
    /// applies [default: 32].
    #[arg(long)]
    pub rate_burst: Option<u16>,
    /// Then one post per this many milliseconds (0: no rate limit) [default: 500].
    #[arg(long)]
    pub rate_interval_ms: Option<u64>,
    /// The most clients served at once [default: 10000].
    #[arg(long)]
    pub max_connections: Option<u64>,
}
