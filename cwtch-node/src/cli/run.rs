//! What each command does: the daemons start here, and every other command
//! is one request to the running daemon through the control API, its
//! answer printed as JSON (`--json`) or in plain words ([`super::format`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use cwtch_transport_socks::control::DEBIAN_CONTROL_SOCKET;
use cwtch_transport_socks::{
    AnyTransport, ControlAddr, ControlAuth, DevTransport, TorConfig, TorProcess, TorTransport,
};
use zeroize::Zeroizing;

use super::format;
use super::{
    Cli, Command, ContactCommand, ConversationCommand, GroupCommand, MailboxCommand, RunArgs,
    ServerCommand, ServerRunArgs, TorChoice, TransportArgs,
};
use crate::control::api::{ErrorCode, Request};
use crate::control::client::{Client, ClientError};
use crate::store::{self, PROFILE_FILE};
use crate::transport::NodeTransport;

/// Exit status: the input is wrong (a bad argument, no such contact or
/// group, an ambiguous name).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit status: no daemon runs on the home.
pub const EXIT_NOT_RUNNING: u8 = 3;
/// Exit status: refused (the daemon is stopping, or still starting, another
/// API version, a profile that will not open with this password, a home
/// another daemon holds, a Tor that does not connect).
pub const EXIT_REFUSED: u8 = 4;
/// Exit status: something failed inside (storage, a broken connection).
pub const EXIT_INTERNAL: u8 = 5;

/// A command's failure: what to say, and the exit status.
#[derive(Debug)]
pub struct Failure {
    /// The exit status (one of the `EXIT_*`).
    pub code: u8,
    /// In plain words.
    pub message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    fn input(message: impl Into<String>) -> Self {
        Failure::new(EXIT_BAD_INPUT, message)
    }

    fn internal(message: impl Into<String>) -> Self {
        Failure::new(EXIT_INTERNAL, message)
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::NotRunning(_) => EXIT_NOT_RUNNING,
            ClientError::Starting { .. } => EXIT_REFUSED,
            ClientError::Api(api) => match api.code {
                ErrorCode::BadRequest
                | ErrorCode::NotFound
                | ErrorCode::Ambiguous
                | ErrorCode::Invalid => EXIT_BAD_INPUT,
                ErrorCode::UnsupportedVersion | ErrorCode::ShuttingDown => EXIT_REFUSED,
                ErrorCode::Internal => EXIT_INTERNAL,
            },
            ClientError::Io(_) => EXIT_INTERNAL,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<store::StoreFailure> for Failure {
    fn from(e: store::StoreFailure) -> Self {
        let code = match &e {
            store::StoreFailure::Invalid(_) => EXIT_BAD_INPUT,
            store::StoreFailure::Store(crate::profile_store::ProfileStoreError::WrongPassword) => {
                EXIT_REFUSED
            }
            _ => EXIT_INTERNAL,
        };
        Failure::new(code, e.to_string())
    }
}

type Outcome = Result<(), Failure>;

/// The command line's entry point: parses the arguments, runs the command,
/// prints a failure on standard error and turns it into the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let home = home_dir(cli.home.clone());
    match run(cli, &home) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("cwtch-node: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn init_logging(verbose: u8) {
    // RUST_LOG, else -v/-vv, else warn (a server's configuration may set
    // its own level: crate::logging).
    crate::logging::init(verbose);
}

/// The home directory: `--home`, else `$CWTCH_HOME` when set and not
/// empty, else an existing `~/.cwtch`, else `$XDG_DATA_HOME/cwtch`
/// (`~/.local/share/cwtch`).
pub fn home_dir(flag: Option<PathBuf>) -> PathBuf {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(home) = flag.filter(|h| !h.as_os_str().is_empty()) {
        return home;
    }
    if let Some(home) = non_empty("CWTCH_HOME") {
        return PathBuf::from(home);
    }
    let user_home = non_empty("HOME").map(PathBuf::from);
    if let Some(old) = user_home.as_ref().map(|h| h.join(".cwtch"))
        && old.exists()
    {
        return old;
    }
    match (non_empty("XDG_DATA_HOME"), user_home) {
        (Some(data), _) => PathBuf::from(data).join("cwtch"),
        (None, Some(home)) => home.join(".local/share/cwtch"),
        (None, None) => PathBuf::from(".cwtch"),
    }
}

/// The password: `CWTCH_PASSWORD`, or typed at the terminal without echo
/// (twice when `confirm`).
fn password(confirm: bool) -> Result<Zeroizing<Vec<u8>>, Failure> {
    if let Some(p) = std::env::var_os("CWTCH_PASSWORD") {
        return Ok(Zeroizing::new(p.into_encoded_bytes()));
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map(|p| Zeroizing::new(p.into_bytes()))
            .map_err(|e| {
                Failure::input(format!(
                    "cannot read the password from the terminal ({e}); set CWTCH_PASSWORD to give it another way"
                ))
            })
    };
    let first = ask("password: ")?;
    if confirm {
        let second = ask("the same password again: ")?;
        if first != second {
            return Err(Failure::input(
                "the two passwords differ; nothing was created",
            ));
        }
        if first.is_empty() {
            return Err(Failure::input(
                "an empty password protects nothing; choose one",
            ));
        }
    }
    Ok(first)
}

/// The password from the first line of standard input (`run
/// --password-stdin`: a pipe from `chat`).
fn password_from_stdin() -> Result<Zeroizing<Vec<u8>>, Failure> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        // At a terminal the password would be echoed as typed.
        return Err(Failure::input(
            "--password-stdin reads a pipe, not a terminal: leave the flag out to be asked \
             without echo",
        ));
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().read_line(&mut line).map_err(|e| {
        Failure::input(format!("cannot read the password from standard input: {e}"))
    })?;
    let p = line.strip_suffix('\n').unwrap_or(&line);
    let p = p.strip_suffix('\r').unwrap_or(p);
    Ok(Zeroizing::new(p.as_bytes().to_vec()))
}

/// Says there is no profile before a password is asked for nothing.
fn no_profile_is_said_first(home: &Path) -> Result<(), Failure> {
    if home.join(PROFILE_FILE).exists() {
        Ok(())
    } else {
        Err(Failure::input(format!(
            "no profile in {} (run `cwtch-node init --name NAME` first)",
            home.display()
        )))
    }
}

/// A message text: the argument, or standard input when it is `-` or
/// missing (so that it never appears in `ps` or the shell's history).
fn text_arg(text: Option<String>) -> Result<String, Failure> {
    match text {
        Some(t) if t.is_empty() => Err(Failure::input("the text is empty")),
        Some(t) if t != "-" => Ok(t),
        _ => {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                eprintln!("type the text, then Ctrl+D on a line of its own");
            }
            let mut t = String::new();
            std::io::stdin().read_to_string(&mut t).map_err(|e| {
                Failure::input(format!("cannot read the text from standard input: {e}"))
            })?;
            let t = t.strip_suffix('\n').unwrap_or(&t);
            let t = t.strip_suffix('\r').unwrap_or(t);
            if t.is_empty() {
                return Err(Failure::input("the text is empty"));
            }
            Ok(t.to_string())
        }
    }
}

/// Runs one command.
pub fn run(cli: Cli, home: &Path) -> Outcome {
    let json = cli.json;
    match cli.command {
        Command::Init { name } => {
            let address = store::init_profile(home, &name, &password(true)?)?;
            if json {
                println!("{}", serde_json::json!({"address": address.to_string()}));
            } else {
                println!("{address}");
            }
            Ok(())
        }
        Command::Address => {
            let address = match crate::control::client::request(home, Request::Address) {
                Ok(v) => v["address"].as_str().unwrap_or_default().to_string(),
                Err(ClientError::NotRunning(_)) => {
                    no_profile_is_said_first(home)?;
                    let (_, identity, _) = store::open_profile(home, &password(false)?)?;
                    identity.address().to_string()
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                println!("{}", serde_json::json!({ "address": address }));
            } else {
                println!("{address}");
            }
            Ok(())
        }
        Command::Identifier => {
            let value = match crate::control::client::request(home, Request::Identifier) {
                Ok(v) => v,
                Err(ClientError::NotRunning(_)) => {
                    no_profile_is_said_first(home)?;
                    let (raw, identity, _) = store::open_profile(home, &password(false)?)?;
                    let mailbox = store::mailbox_of(&raw)?;
                    let now_ms = crate::clock::unix_now().as_millis();
                    let state = match &mailbox {
                        Some(r) => Some(
                            crate::peer::mailbox::MailboxState::from_record(r, now_ms)
                                .map_err(|e| Failure::internal(e.0))?,
                        ),
                        None => None,
                    };
                    let retired = state
                        .as_ref()
                        .map(|m| m.retired_view(now_ms))
                        .unwrap_or_default();
                    let view = crate::peer::mailbox::identifier_view(
                        &identity.address(),
                        state.as_ref().map(|m| m.mailbox()),
                        None,
                        retired,
                    );
                    crate::peer::json(&view)
                }
                Err(e) => return Err(e.into()),
            };
            print_answer(&Request::Identifier, &value, json)?;
            Ok(())
        }
        Command::Run(args) => run_peer(home, &args),
        Command::Chat(args) => {
            no_profile_is_said_first(home)?;
            crate::chat::run(home, &args, || password(false).map_err(|f| f.message))
                .map_err(Failure::internal)
        }
        Command::Status => one_shot(home, Request::Status, json),
        Command::Contact(c) => {
            let request = match c {
                ContactCommand::Add {
                    address,
                    message,
                    nickname,
                } => Request::ContactAdd {
                    address,
                    message,
                    nickname,
                },
                ContactCommand::Accept { address } => Request::ContactAccept { contact: address },
                ContactCommand::Refuse { address } => Request::ContactRefuse { contact: address },
                ContactCommand::Block { address } => Request::ContactBlock { contact: address },
                ContactCommand::Unblock { address } => Request::ContactUnblock { contact: address },
                ContactCommand::Rename { address, nickname } => Request::ContactRename {
                    contact: address,
                    nickname,
                },
                ContactCommand::List => Request::ContactList,
            };
            one_shot(home, request, json)
        }
        Command::Send { contact, text } => {
            let text = text_arg(text)?;
            one_shot(home, Request::Send { to: contact, text }, json)
        }
        Command::Servers => one_shot(home, Request::Servers, json),
        Command::Group(g) => {
            let request = match g {
                GroupCommand::Create { name, server } => Request::GroupCreate { name, server },
                GroupCommand::Invite { group, address } => Request::GroupInvite {
                    group,
                    contact: address,
                },
                GroupCommand::Send { group, text } => Request::GroupSend {
                    group,
                    text: text_arg(text)?,
                },
                GroupCommand::Move { group, server } => Request::GroupMove { group, server },
                GroupCommand::Leave { group } => Request::GroupLeave { group },
                GroupCommand::List => Request::GroupList,
                GroupCommand::Invites => Request::GroupInvites,
                GroupCommand::Accept { group } => Request::GroupAccept { group },
                GroupCommand::Refuse { group } => Request::GroupRefuse { group },
            };
            one_shot(home, request, json)
        }
        Command::Mailbox(MailboxCommand::Create { server, revoke_old }) => {
            one_shot(home, Request::MailboxCreate { server, revoke_old }, json)
        }
        Command::Messages {
            conversation,
            follow,
        } => messages(home, conversation, follow, json),
        Command::Conversation(ConversationCommand::Delete { conversation }) => {
            one_shot(home, Request::ConversationDelete { conversation }, json)
        }
        Command::Conversation(ConversationCommand::Read { conversation }) => {
            one_shot(home, Request::ConversationRead { conversation }, json)
        }
        Command::Events { follow, since } => events(home, follow, since, json),
        Command::Stop => stop(home, json),
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a write error,
            // and `completions bash | head` closes the pipe early.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cwtch-node", &mut script);
            use std::io::Write;
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(Failure::input(format!("cannot write the completions: {e}")))
                }
                _ => Ok(()),
            }
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            dev_tcp,
            arti,
            keep,
        } => crate::demo::run(crate::demo::Options {
            dev_tcp,
            arti,
            keep,
        })
        .map_err(Failure::internal),
        Command::Server(ServerCommand::Init(policy)) => {
            crate::server::init(home, &policy, json).map_err(Failure::input)
        }
        Command::Server(ServerCommand::Info) => {
            crate::server::info(home, json).map_err(Failure::input)
        }
        Command::Server(ServerCommand::Config) => {
            crate::server::print_config(home, json).map_err(Failure::input)
        }
        Command::Server(ServerCommand::Stats) => {
            crate::server::print_stats(home, json).map_err(|e| Failure::new(EXIT_NOT_RUNNING, e))
        }
        Command::Server(ServerCommand::Backup { file }) => {
            // The backup holds the server's key: private from the start.
            crate::home::private_umask();
            let summary = crate::server::backup::backup(home, &file)
                .map_err(|e| Failure::input(e.to_string()))?;
            if json {
                emit(&serde_json::json!(summary).to_string())
            } else {
                emit(&format!(
                    "backup of {}: {} blobs (last index {}) in {} (mode 0600; it holds the \
                     server's key: keep it as safe as the server)",
                    summary.address, summary.blobs, summary.head, summary.file
                ))
            }
        }
        Command::Server(ServerCommand::Restore { file }) => {
            crate::home::private_umask();
            let address = crate::server::backup::restore(&file, home)
                .map_err(|e| Failure::input(e.to_string()))?;
            if json {
                emit(&serde_json::json!({"address": address, "home": home}).to_string())
            } else {
                emit(&format!(
                    "restored {address} into {}: start it with `cwtch-node --home {} server run`",
                    home.display(),
                    home.display()
                ))
            }
        }
        Command::Server(ServerCommand::Run(args)) => run_server(home, &args),
    }
}

/// Writes one line to standard output. A reader that went away (`| head`)
/// ends the command quietly rather than with a panic.
fn emit(line: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(Failure::internal(format!("cannot write the output: {e}"))),
    }
}

fn print_answer(request: &Request, value: &serde_json::Value, json: bool) -> Outcome {
    if json {
        emit(&value.to_string())
    } else {
        emit(&format::human(request, value))
    }
}

/// Sends one request to the daemon and prints the answer.
fn one_shot(home: &Path, request: Request, json: bool) -> Outcome {
    let value = crate::control::client::request(home, request.clone())?;
    print_answer(&request, &value, json)?;
    Ok(())
}

/// `stop`: the control socket's `shutdown`; a daemon still starting (no
/// socket yet, connecting to Tor) gets SIGTERM instead, which stops it as
/// gracefully.
fn stop(home: &Path, json: bool) -> Outcome {
    let pid = match crate::control::client::request(home, Request::Shutdown) {
        Err(ClientError::Starting { pid, .. }) => pid,
        Ok(value) => return print_answer(&Request::Shutdown, &value, json),
        Err(e) => return Err(e.into()),
    };
    let Some(target) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return Err(Failure::internal(format!(
            "the home's lock names pid {pid}"
        )));
    };
    // Only to the lock's live holder: lock_holder found the lock held.
    rustix::process::kill_process(target, rustix::process::Signal::TERM).map_err(|e| {
        Failure::internal(format!(
            "cannot signal the starting daemon (pid {pid}): {e}"
        ))
    })?;
    if json {
        emit(&serde_json::json!({ "signalled": pid }).to_string())
    } else {
        emit(&format!(
            "the daemon (pid {pid}) was still starting (connecting to Tor): sent it SIGTERM; it stops"
        ))
    }
}

/// A conversation's messages; with `follow`, then every new message or
/// change of status in it as it happens.
fn messages(home: &Path, conversation: String, follow: bool, json: bool) -> Outcome {
    let mut client = Client::connect(home, "cwtch-node messages")?;
    let request = Request::Messages {
        conversation: conversation.clone(),
    };
    if !follow {
        let value = client.request(request.clone())?;
        print_answer(&request, &value, json)?;
        return Ok(());
    }
    let resolved = client.request(Request::Resolve { name: conversation })?;
    let id = resolved["conversation"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Subscribe first, so that nothing falls between the list and the stream.
    client.subscribe(None)?;
    let list = client.request(request)?;
    for m in list.as_array().into_iter().flatten() {
        print_message(m, json)?;
    }
    loop {
        let Some(ev) = client.next_event(None)? else {
            continue;
        };
        match ev.event {
            crate::control::api::Event::Message { message }
                if message["conversation"].as_str() == Some(id.as_str()) =>
            {
                print_message(&message, json)?;
            }
            crate::control::api::Event::Lagged { dropped } => {
                eprintln!(
                    "cwtch-node: {dropped} event(s) were dropped while this reader was slow; showing the conversation again"
                );
                let list = client.request(Request::Messages {
                    conversation: id.clone(),
                })?;
                for m in list.as_array().into_iter().flatten() {
                    print_message(m, json)?;
                }
            }
            crate::control::api::Event::ShuttingDown => return Ok(()),
            _ => {}
        }
    }
}

fn print_message(m: &serde_json::Value, json: bool) -> Outcome {
    if json {
        return emit(&m.to_string());
    }
    match serde_json::from_value::<crate::model::StoredMessage>(m.clone()) {
        Ok(m) => emit(&format::message(&m)),
        Err(_) => emit(&m.to_string()),
    }
}

/// The event stream: the events the daemon keeps after `since` (all it
/// keeps when not given), then, with `follow`, every new one.
fn events(home: &Path, follow: bool, since: Option<u64>, json: bool) -> Outcome {
    let mut client = Client::connect(home, "cwtch-node events")?;
    client.subscribe(Some(since.unwrap_or(0)))?;
    let idle = if follow {
        None
    } else {
        // Without --follow: what is kept now, then stop when quiet.
        Some(std::time::Duration::from_millis(300))
    };
    while let Some(ev) = client.next_event(idle)? {
        if json {
            emit(&serde_json::to_string(&ev).map_err(|e| Failure::internal(e.to_string()))?)?;
        } else {
            emit(&format::event(ev.seq, &ev.event))?;
        }
        if matches!(ev.event, crate::control::api::Event::ShuttingDown) {
            break;
        }
    }
    Ok(())
}

/// The Tor a daemon runs on, once chosen, and what keeps it alive: the tor
/// we launched stops when dropped.
struct Chosen {
    transport: NodeTransport,
    _tor: Option<TorProcess>,
}

/// What `--tor` resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resolved {
    Dev,
    Arti,
    System,
    Launch,
}

/// Which Tor the flags ask for, and why (printed). `auto` is the built-in
/// Tor for a peer and a tor process for a server (why: the transport's
/// README, "Why a server should keep C tor as its default"), unless a flag
/// names one.
fn choose_tor(args: &TransportArgs, server: bool) -> Result<(Resolved, String), Failure> {
    if args.dev_tcp.is_some() {
        // Plain TCP must never quietly replace a Tor the user asked for.
        let tor_flags = [
            (args.tor != TorChoice::Auto, "--tor"),
            (args.tor_socks.is_some(), "--tor-socks"),
            (args.tor_control.is_some(), "--tor-control"),
            (
                args.tor_control_password_file.is_some(),
                "--tor-control-password-file",
            ),
            (args.torrc_extra.is_some(), "--torrc-extra"),
            (args.tor_network.is_some(), "--tor-network"),
        ];
        if let Some((_, flag)) = tor_flags.iter().find(|(given, _)| *given) {
            return Err(Failure::input(format!(
                "--dev-tcp is plain TCP without Tor; it cannot go with {flag}, which asks for Tor"
            )));
        }
        return Ok((Resolved::Dev, "--dev-tcp".into()));
    }
    let asked = match (args.launch_tor, args.tor) {
        (true, TorChoice::Auto | TorChoice::Launch) => TorChoice::Launch,
        (true, other) => {
            return Err(Failure::input(format!(
                "--launch-tor means --tor launch; it cannot go with --tor {}",
                tor_choice_name(other)
            )));
        }
        (false, choice) => choice,
    };
    let system_flags = args.tor_socks.is_some()
        || args.tor_control.is_some()
        || args.tor_control_password_file.is_some();
    let flag_misfit = |flag: &str, needs: &str| {
        Failure::input(format!(
            "{flag} is for --tor {needs}; it does nothing with --tor {}",
            tor_choice_name(asked)
        ))
    };
    match asked {
        TorChoice::Arti | TorChoice::Launch if system_flags => {
            return Err(flag_misfit(
                "--tor-socks, --tor-control or --tor-control-password-file",
                "system",
            ));
        }
        TorChoice::Arti | TorChoice::System if args.torrc_extra.is_some() => {
            return Err(flag_misfit("--torrc-extra", "launch"));
        }
        TorChoice::System | TorChoice::Launch if args.tor_network.is_some() => {
            return Err(flag_misfit("--tor-network", "arti"));
        }
        TorChoice::Auto
            if [
                system_flags,
                args.torrc_extra.is_some(),
                args.tor_network.is_some(),
            ]
            .iter()
            .filter(|named| **named)
            .count()
                > 1 =>
        {
            return Err(Failure::input(
                "these flags name different Tors (--tor-socks/--tor-control: a running tor, \
                 --torrc-extra: a tor we launch, --tor-network: the built-in Tor): say which with \
                 --tor",
            ));
        }
        _ => {}
    }
    let arti_built = cfg!(feature = "arti");
    Ok(match asked {
        TorChoice::Arti if !arti_built => {
            return Err(Failure::input(
                "this cwtch-node was built without the built-in Tor (feature `arti`): use --tor \
                 system or --tor launch",
            ));
        }
        TorChoice::Arti => (Resolved::Arti, "--tor arti".into()),
        TorChoice::System => (Resolved::System, "--tor system".into()),
        TorChoice::Launch if args.launch_tor => (Resolved::Launch, "--launch-tor".into()),
        TorChoice::Launch => (Resolved::Launch, "--tor launch".into()),
        TorChoice::Auto if system_flags => (
            Resolved::System,
            "--tor auto: --tor-socks/--tor-control name a running tor".into(),
        ),
        TorChoice::Auto if args.torrc_extra.is_some() => (
            Resolved::Launch,
            "--tor auto: --torrc-extra is for a tor we launch".into(),
        ),
        TorChoice::Auto if !server && arti_built => (
            Resolved::Arti,
            "--tor auto: a peer uses the built-in Tor, nothing to install or configure; --tor \
             system or --tor launch to use a tor process"
                .into(),
        ),
        TorChoice::Auto if args.tor_network.is_some() && arti_built => (
            Resolved::Arti,
            "--tor auto: --tor-network is for the built-in Tor".into(),
        ),
        TorChoice::Auto if server => {
            const WHY: &str = "a server uses a tor process by default, for C tor's onion-service \
                               defences against floods (proof of work); --tor arti to use the \
                               built-in Tor";
            if let Some(found) = running_system_tor() {
                (
                    Resolved::System,
                    format!("--tor auto: {WHY}; a tor answers at {found}"),
                )
            } else if tor_in_path() {
                (
                    Resolved::Launch,
                    format!(
                        "--tor auto: {WHY}; no tor answers at 127.0.0.1:9051 or {DEBIAN_CONTROL_SOCKET}, \
                         so launching tor from PATH"
                    ),
                )
            } else {
                return Err(Failure::input(format!(
                    "no tor for the server: none answers at 127.0.0.1:9051 or \
                     {DEBIAN_CONTROL_SOCKET}, and tor is not in PATH. Install tor (apt-get install \
                     tor), or give --tor-control; or run the server on the built-in Tor with --tor \
                     arti (weaker defences against floods: see OPERATING.md)"
                )));
            }
        }
        TorChoice::Auto if tor_in_path() => (
            Resolved::Launch,
            "--tor auto: this build has no built-in Tor; launching tor from PATH".into(),
        ),
        TorChoice::Auto => (
            Resolved::System,
            "--tor auto: this build has no built-in Tor and tor is not in PATH".into(),
        ),
    })
}

fn tor_choice_name(choice: TorChoice) -> &'static str {
    match choice {
        TorChoice::Auto => "auto",
        TorChoice::Arti => "arti",
        TorChoice::System => "system",
        TorChoice::Launch => "launch",
    }
}

/// Whether an executable `tor` is in PATH.
fn tor_in_path() -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join("tor"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// A system tor's control socket or port that accepts a connection:
/// Debian's /run/tor/control (root's /run/tor: only the tor account can
/// have made it), else 127.0.0.1:9051 (which any local user can listen
/// on: what answers there gets [`ControlAuth::AutoProbed`]'s checks).
fn running_system_tor() -> Option<ControlAddr> {
    let socket = Path::new(DEBIAN_CONTROL_SOCKET);
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Some(ControlAddr::Unix(socket.to_path_buf()));
    }
    let tcp = std::net::SocketAddr::from(([127, 0, 0, 1], 9051));
    std::net::TcpStream::connect_timeout(&tcp, std::time::Duration::from_secs(1))
        .is_ok()
        .then_some(ControlAddr::Tcp(tcp))
}

/// Where the control address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ControlOrigin {
    /// --tor-control: the user named it; trusted as named.
    Named,
    /// Probed: whoever answers there is checked before getting any key
    /// ([`ControlAuth::AutoProbed`]).
    Probed,
}

/// The control address for --tor system: --tor-control, else Debian's
/// socket if it answers, else 127.0.0.1:9051 if it answers, else Debian's
/// socket if it exists, else 127.0.0.1:9051 (whose error then says that
/// nothing answers).
fn system_control(args: &TransportArgs) -> (ControlAddr, ControlOrigin) {
    if let Some(addr) = &args.tor_control {
        return (addr.clone(), ControlOrigin::Named);
    }
    let tcp = ControlAddr::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 9051)));
    let addr = match running_system_tor() {
        Some(found) => found,
        None if Path::new(DEBIAN_CONTROL_SOCKET).exists() => {
            ControlAddr::Unix(DEBIAN_CONTROL_SOCKET.into())
        }
        None => tcp,
    };
    (addr, ControlOrigin::Probed)
}

/// How to authenticate to the control port: the password from
/// --tor-control-password-file (its first line; a trailing newline is not
/// part of it), else what tor offers, with the checks of a probed port
/// when the address was not named.
fn control_auth(args: &TransportArgs, origin: ControlOrigin) -> Result<ControlAuth, Failure> {
    let Some(file) = &args.tor_control_password_file else {
        return Ok(match origin {
            ControlOrigin::Named => ControlAuth::Auto,
            ControlOrigin::Probed => ControlAuth::AutoProbed,
        });
    };
    let cannot_read = |e: std::io::Error| {
        Failure::input(format!(
            "cannot read --tor-control-password-file {}: {e}",
            file.display()
        ))
    };
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(file).map_err(cannot_read)?.permissions(),
    );
    if password_file_too_open(mode) {
        eprintln!(
            "warning: --tor-control-password-file {} can be read or written by others (mode \
             {:03o}): chmod 600 it",
            file.display(),
            mode & 0o777
        );
    }
    let text = Zeroizing::new(std::fs::read_to_string(file).map_err(cannot_read)?);
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        return Err(Failure::input(format!(
            "--tor-control-password-file {} is empty",
            file.display()
        )));
    }
    Ok(ControlAuth::password(password))
}

/// Whether a password file's mode lets its group or others at it (any of
/// 0o077): a warning, not a refusal.
fn password_file_too_open(mode: u32) -> bool {
    mode & 0o077 != 0
}

/// Builds the transport the flags ask for (see [`choose_tor`]), telling
/// which and why on standard error, with the bootstrap progress of a tor
/// we start.
async fn transport(home: &Path, args: &TransportArgs, server: bool) -> Result<Chosen, Failure> {
    let choice = choose_tor(args, server)?;
    start_tor(home, args, server, choice).await
}

/// Says a step of connecting to Tor on standard error; a peer also records
/// it in its home, where a client that finds no control socket yet shows
/// it (`status`: "the daemon is starting: ... (tor bootstrap: 45% ...)").
fn say_tor(home: &Path, server: bool, line: &str) {
    eprintln!("{line}");
    if !server {
        crate::home::write_starting(home, line);
    }
}

/// [`transport`] once [`choose_tor`] has chosen.
async fn start_tor(
    home: &Path,
    args: &TransportArgs,
    server: bool,
    (resolved, why): (Resolved, String),
) -> Result<Chosen, Failure> {
    let chosen = |transport: NodeTransport| Chosen {
        transport,
        _tor: None,
    };
    match resolved {
        Resolved::Dev => {
            let dir = args.dev_tcp.clone().unwrap_or_default();
            let (dev, warning) = DevTransport::new(dir);
            println!("{warning}");
            Ok(chosen(AnyTransport::Dev(dev).into()))
        }
        Resolved::Launch => {
            let mut config = TorConfig::new(home.join("tor"));
            if let Some(extra) = &args.torrc_extra {
                let text = std::fs::read_to_string(extra)
                    .map_err(|e| Failure::input(format!("cannot read {}: {e}", extra.display())))?;
                config.extra_torrc = text.lines().map(str::to_string).collect();
            }
            say_tor(
                home,
                server,
                &format!(
                    "tor: launching tor from PATH in {} ({why})",
                    config.data_dir.display()
                ),
            );
            let mut last = None;
            let launched = TorProcess::launch(&config, |s| {
                say_tor(
                    home,
                    server,
                    &format!("tor bootstrap: {:>3}% {}", s.progress, s.summary),
                );
                last = Some((s.progress, s.summary.clone()));
            })
            .await;
            let log = config
                .data_dir
                .join(cwtch_transport_socks::launch::LOG_FILE);
            let tor = launched.map_err(|e| launch_failure(&e, last, &log))?;
            let mut transport = tor.transport();
            transport.onion_pow = server;
            Ok(Chosen {
                transport: AnyTransport::Tor(transport).into(),
                _tor: Some(tor),
            })
        }
        Resolved::System => {
            let socks = args
                .tor_socks
                .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 9050)));
            let (control, origin) = system_control(args);
            let auth = control_auth(args, origin)?;
            let how = match &auth {
                ControlAuth::Password(_) => "password authentication",
                _ => "cookie or safecookie authentication, as tor offers",
            };
            eprintln!("tor: a running tor, SOCKS {socks}, control {control}, {how} ({why})");
            let mut tor = TorTransport::new(socks, control, auth);
            // A server's onion service is public: tor's proof-of-work
            // defences against introduction floods (a peer's is not).
            tor.onion_pow = server;
            warn_without_extended_errors(&tor).await;
            Ok(chosen(AnyTransport::Tor(tor).into()))
        }
        Resolved::Arti => arti(home, args, server, &why).await.map(chosen),
    }
}

/// Why a tor we launched did not connect, with where it got to and where
/// its log is: not an internal error (no network, tor missing or failing).
fn launch_failure(e: &dyn std::fmt::Display, last: Option<(u8, String)>, log: &Path) -> Failure {
    let reached = last
        .map(|(percent, summary)| format!("; the last bootstrap status: {percent}% {summary}"))
        .unwrap_or_default();
    Failure::new(
        EXIT_REFUSED,
        format!(
            "cannot launch tor: {e}{reached}; tor's log: {}. Check the network, or use --tor \
             system / --tor arti",
            log.display()
        ),
    )
}

/// Arti's bootstrap summary without the percent it starts with ("8%:
/// handshaking with Tor relays"): the progress line prints the percent once.
fn without_percent(summary: &str) -> &str {
    let Some((head, rest)) = summary.split_once('%') else {
        return summary;
    };
    if head.trim().parse::<u8>().is_ok() {
        rest.trim_start_matches(':').trim_start()
    } else {
        summary
    }
}

/// The built-in Tor: its state and cache in `<home>/arti`, keys in memory;
/// the public network, or the private one of --tor-network.
#[cfg(feature = "arti")]
async fn arti(
    home: &Path,
    args: &TransportArgs,
    server: bool,
    why: &str,
) -> Result<NodeTransport, Failure> {
    use cwtch_transport_arti::{ArtiConfig, ArtiTransport, Network, PrivateNetwork};
    let network = match &args.tor_network {
        None => Network::Public,
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Failure::input(format!("cannot read --tor-network {}: {e}", file.display()))
            })?;
            let net = PrivateNetwork::parse(&text)
                .map_err(|e| Failure::input(format!("--tor-network {}: {e}", file.display())))?;
            Network::Private(net)
        }
    };
    let which = match &network {
        Network::Private(net) => format!(
            "the private Tor network of {} ({} authorities)",
            args.tor_network
                .as_deref()
                .unwrap_or(Path::new(""))
                .display(),
            net.authorities.len()
        ),
        _ => "the Tor network".to_string(),
    };
    let state = home.join("arti");
    say_tor(
        home,
        server,
        &format!(
            "tor: the built-in Tor (arti) on {which}, its state in {} ({why})",
            state.display()
        ),
    );
    let tor = ArtiTransport::bootstrap(ArtiConfig::new(state, network), |percent, summary| {
        say_tor(
            home,
            server,
            &format!("tor bootstrap: {percent:>3}% {}", without_percent(summary)),
        );
    })
    .await
    .map_err(|e| {
        // No network, or Tor blocked here: not an internal error.
        Failure::new(
            EXIT_REFUSED,
            format!(
                "cannot start the built-in Tor: {e}. Check the network, or use --tor system / \
                 --tor launch"
            ),
        )
    })?;
    eprintln!(
        "tor: the built-in Tor is connected ({:.1} s)",
        tor.bootstrap_time().as_secs_f64()
    );
    Ok(tor.into())
}

#[cfg(not(feature = "arti"))]
async fn arti(_: &Path, _: &TransportArgs, _: bool, _: &str) -> Result<NodeTransport, Failure> {
    Err(Failure::input(
        "this cwtch-node was built without the built-in Tor",
    ))
}

/// A system tor whose SocksPort lacks `ExtendedErrors` sends only the basic
/// SOCKS codes: a failed dial then cannot say why (not published, bad
/// address, ...). Says so once; silent when it cannot be told.
async fn warn_without_extended_errors(tor: &TorTransport) {
    let known = smol::future::or(tor.extended_errors(), async {
        smol::Timer::after(std::time::Duration::from_secs(5)).await;
        None
    })
    .await;
    if known == Some(false) {
        eprintln!(
            "note: tor's SocksPort {} has no ExtendedErrors flag, so only the basic SOCKS codes can \
             arrive: a failed dial will say \"could not be reached\" where it could say why (not \
             published, bad address, introduction failed). Add ExtendedErrors to that SocksPort \
             line of the torrc to get the reasons.",
            tor.socks
        );
    }
}

/// A daemon's start: the home must be private and free (one daemon per
/// home), and everything the daemon creates is private from then on.
fn take_home(home: &Path) -> Result<crate::home::HomeLock, Failure> {
    crate::home::private_umask();
    crate::home::HomeLock::acquire(home).map_err(|e| Failure::new(EXIT_REFUSED, e.to_string()))
}

/// `server run`: until SIGTERM or SIGINT, then a graceful stop (exit 0);
/// SIGHUP reloads server.toml.
fn run_server(home: &Path, args: &ServerRunArgs) -> Outcome {
    use crate::server::{RunOptions, config::MetricsAddr};
    use smol::future::FutureExt;
    let metrics = args
        .metrics
        .as_deref()
        .map(MetricsAddr::parse)
        .transpose()
        .map_err(|e| Failure::input(format!("--metrics: {e}")))?;
    let _lock = take_home(home)?;
    smol::block_on(async {
        let signals = crate::shutdown::Signals::install()
            .map_err(|e| Failure::internal(format!("cannot catch signals: {e}")))?;
        let stop = signals.shutdown.clone();
        // A stop asked while tor starts ends the wait at once.
        let started = async { Some(transport(home, &args.transport, true).await) }
            .or(async {
                stop.wait().await;
                None
            })
            .await;
        let Some(started) = started else {
            return Ok(());
        };
        let chosen = started?;
        crate::server::run_until(
            home,
            chosen.transport.clone(),
            RunOptions {
                shutdown: signals.shutdown.clone(),
                reload: signals.reload.clone(),
                metrics,
                handshake_timeout: args.transport.handshake_timeout,
                ..RunOptions::default()
            },
        )
        .await
        .map_err(Failure::internal)
    })
}

fn run_peer(home: &Path, run: &RunArgs) -> Outcome {
    use smol::future::FutureExt;
    let args = &run.transport;
    no_profile_is_said_first(home)?;
    // Flags that cannot work are refused before a password is asked for
    // nothing.
    let choice = choose_tor(args, false)?;
    let _lock = take_home(home)?;
    // What an earlier daemon left, if it was killed while connecting: gone
    // before the password is asked for, which may take a while.
    crate::home::clear_starting(home);
    let password = if run.password_stdin {
        password_from_stdin()?
    } else {
        password(false)?
    };
    let (raw, identity, name) = store::open_profile(home, &password)?;
    drop(password);
    // Connecting to Tor can take minutes: SIGTERM or SIGINT meanwhile stops
    // at once (a tor we launched stops with it), as `server run` does. The
    // daemon catches them itself once it runs.
    let started = smol::block_on(async {
        let signals = crate::shutdown::Signals::install()
            .map_err(|e| Failure::internal(format!("cannot catch signals: {e}")))?;
        let stop = signals.shutdown.clone();
        Ok::<_, Failure>(
            async { Some(start_tor(home, args, false, choice).await) }
                .or(async {
                    stop.wait().await;
                    None
                })
                .await,
        )
    })?;
    // Connected, failed or stopped: the progress is over.
    crate::home::clear_starting(home);
    let Some(started) = started else {
        return Ok(());
    };
    let chosen = started?;
    let note = chosen
        .transport
        .is_dev()
        .then(|| "DEVELOPMENT TRANSPORT: plain TCP on loopback, no Tor, no anonymity".to_string());
    let mut peer = crate::peer::Peer::new(
        store::Profile::new(raw),
        identity,
        name,
        crate::clock::seeded_rng(),
        crate::daemon::now(),
    )?;
    peer.set_transport_note(note);
    let outcome = crate::daemon::run(crate::daemon::PeerDaemon {
        home: home.to_path_buf(),
        peer,
        transport: chosen.transport.clone(),
        handshake_timeout: args.handshake_timeout,
        stop_on_stdin_eof: run.stop_on_stdin_eof,
    })
    .map_err(Failure::internal);
    drop(chosen);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_args(flags: &[&str]) -> TransportArgs {
        let argv = ["cwtch-node", "run"].iter().chain(flags);
        match Cli::try_parse_from(argv).expect("flags parse").command {
            Command::Run(args) => args.transport,
            other => panic!("{other:?}"),
        }
    }

    fn server_args(flags: &[&str]) -> TransportArgs {
        let argv = ["cwtch-node", "server", "run"].iter().chain(flags);
        match Cli::try_parse_from(argv).expect("flags parse").command {
            Command::Server(ServerCommand::Run(args)) => args.transport,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn arti_s_percent_is_printed_once() {
        assert_eq!(
            without_percent("8%: handshaking with Tor relays"),
            "handshaking with Tor relays"
        );
        assert_eq!(without_percent("100%: connected"), "connected");
        assert_eq!(
            without_percent("connected to the Tor network"),
            "connected to the Tor network"
        );
        assert_eq!(without_percent("about 5% done"), "about 5% done");
    }

    #[test]
    fn a_launch_failure_says_where_tor_got_to_and_where_its_log_is() {
        let f = launch_failure(
            &"timed out waiting for tor bootstrap",
            Some((45, "Asking for relay descriptors".into())),
            Path::new("/h/tor/notice.log"),
        );
        assert_eq!(f.code, EXIT_REFUSED);
        assert!(f.message.contains("timed out"), "{}", f.message);
        assert!(
            f.message.contains("45% Asking for relay descriptors"),
            "{}",
            f.message
        );
        assert!(f.message.contains("/h/tor/notice.log"), "{}", f.message);
        let f = launch_failure(&"x", None, Path::new("/h/tor/notice.log"));
        assert!(!f.message.contains("last bootstrap"), "{}", f.message);
    }

    #[test]
    fn a_peer_picks_the_built_in_tor_by_default_and_says_why() {
        let (resolved, why) = choose_tor(&peer_args(&[]), false).unwrap();
        if cfg!(feature = "arti") {
            assert_eq!(resolved, Resolved::Arti);
            assert!(why.contains("a peer uses the built-in Tor"), "{why}");
        } else {
            assert_ne!(resolved, Resolved::Arti);
        }
        // The private network of the tests changes nothing in the choice.
        let args = peer_args(&["--tor-network", "net.txt"]);
        assert_eq!(choose_tor(&args, false).unwrap(), (resolved, why));
    }

    #[test]
    fn flags_that_name_a_tor_choose_it() {
        for (flags, want) in [
            (&["--tor-socks", "127.0.0.1:1"][..], Resolved::System),
            (&["--tor-control", "127.0.0.1:2"], Resolved::System),
            (
                &["--tor-control", "unix:/run/tor/control"],
                Resolved::System,
            ),
            (&["--tor-control-password-file", "pw"], Resolved::System),
            (&["--torrc-extra", "extra"], Resolved::Launch),
            (&["--launch-tor"], Resolved::Launch),
            (&["--launch-tor", "--torrc-extra", "x"], Resolved::Launch),
            (&["--tor", "launch"], Resolved::Launch),
            (&["--tor", "system"], Resolved::System),
            (&["--dev-tcp", "dir"], Resolved::Dev),
            (&["--dev-tcp", "dir", "--tor", "auto"], Resolved::Dev),
        ] {
            for server in [false, true] {
                let (resolved, why) = choose_tor(&peer_or_server(flags, server), server)
                    .unwrap_or_else(|e| panic!("{flags:?}: {}", e.message));
                assert_eq!(resolved, want, "{flags:?} server={server}: {why}");
            }
        }
        if cfg!(feature = "arti") {
            for server in [false, true] {
                let args = peer_or_server(&["--tor", "arti"], server);
                assert_eq!(choose_tor(&args, server).unwrap().0, Resolved::Arti);
                let args = peer_or_server(&["--tor-network", "n"], server);
                assert_eq!(choose_tor(&args, server).unwrap().0, Resolved::Arti);
            }
        }
    }

    fn peer_or_server(flags: &[&str], server: bool) -> TransportArgs {
        if server {
            server_args(flags)
        } else {
            peer_args(flags)
        }
    }

    #[test]
    fn flags_for_another_tor_are_refused() {
        for flags in [
            &["--tor", "arti", "--tor-socks", "127.0.0.1:1"][..],
            &["--tor", "launch", "--tor-control", "127.0.0.1:1"],
            &["--tor", "system", "--torrc-extra", "x"],
            &["--tor", "arti", "--torrc-extra", "x"],
            &["--tor", "system", "--tor-network", "n"],
            &["--tor", "launch", "--tor-network", "n"],
            &["--launch-tor", "--tor", "arti"],
            &["--launch-tor", "--tor", "system"],
            &["--tor-socks", "127.0.0.1:1", "--torrc-extra", "x"],
            &["--tor-control", "127.0.0.1:1", "--tor-network", "n"],
            &["--torrc-extra", "x", "--tor-network", "n"],
            &["--dev-tcp", "d", "--tor", "arti"],
            &["--dev-tcp", "d", "--tor", "system"],
            &["--dev-tcp", "d", "--tor", "launch"],
            &["--tor", "system", "--dev-tcp", "d"],
            &["--dev-tcp", "d", "--tor-control", "127.0.0.1:1"],
            &["--dev-tcp", "d", "--tor-network", "n"],
        ] {
            let e = choose_tor(&peer_args(flags), false).unwrap_err();
            assert_eq!(e.code, EXIT_BAD_INPUT, "{flags:?}");
        }
        assert!(
            Cli::try_parse_from(["cwtch-node", "run", "--tor-control", "nowhere"]).is_err(),
            "a control address is ADDRESS:PORT or unix:PATH"
        );
    }

    #[test]
    fn the_control_password_is_the_files_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let args = peer_args(&["--tor-control-password-file", file.to_str().unwrap()]);
        for origin in [ControlOrigin::Named, ControlOrigin::Probed] {
            assert_eq!(
                control_auth(&args, origin).unwrap(),
                ControlAuth::password("s3cret")
            );
        }
        std::fs::write(&file, "\n").unwrap();
        let named = ControlOrigin::Named;
        assert_eq!(control_auth(&args, named).unwrap_err().code, EXIT_BAD_INPUT);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(control_auth(&args, named).unwrap_err().code, EXIT_BAD_INPUT);
    }

    #[test]
    fn a_password_file_others_can_read_is_warned_about() {
        assert!(!password_file_too_open(0o100600));
        assert!(!password_file_too_open(0o100400));
        assert!(!password_file_too_open(0o100700));
        for mode in [
            0o100640, 0o100604, 0o100620, 0o100602, 0o100610, 0o100601, 0o100666,
        ] {
            assert!(password_file_too_open(mode), "{mode:o}");
        }
    }

    #[test]
    fn a_probed_control_port_is_checked_and_a_named_one_is_not() {
        let args = peer_args(&["--tor-control", "127.0.0.1:9051"]);
        let (addr, origin) = system_control(&args);
        assert_eq!(addr.to_string(), "127.0.0.1:9051");
        assert_eq!(origin, ControlOrigin::Named);
        assert_eq!(control_auth(&args, origin).unwrap(), ControlAuth::Auto);
        let args = peer_args(&["--tor", "system"]);
        let (_, origin) = system_control(&args);
        assert_eq!(origin, ControlOrigin::Probed);
        assert_eq!(
            control_auth(&args, origin).unwrap(),
            ControlAuth::AutoProbed
        );
    }
}
