//! What each command does: the daemons start here, and every other command
//! is one request to the running daemon through the control API, its
//! answer printed as JSON (`--json`) or in plain words ([`super::format`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use cwtch_transport_socks::{
    AnyTransport, ControlAuth, DevTransport, TorConfig, TorProcess, TorTransport,
};
use zeroize::Zeroizing;

use super::format;
use super::{
    Cli, Command, ContactCommand, ConversationCommand, GroupCommand, MailboxCommand, RunArgs,
    ServerCommand, ServerRunArgs, TransportArgs,
};
use crate::control::api::{ErrorCode, Request};
use crate::control::client::{Client, ClientError};
use crate::store::{self, PROFILE_FILE};

/// Exit status: the input is wrong (a bad argument, no such contact or
/// group, an ambiguous name).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit status: no daemon runs on the home.
pub const EXIT_NOT_RUNNING: u8 = 3;
/// Exit status: refused (the daemon is stopping, another API version, a
/// profile that will not open with this password).
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
        Command::Stop => one_shot(home, Request::Shutdown, json),
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
        Command::Demo { dev_tcp, keep } => {
            crate::demo::run(crate::demo::Options { dev_tcp, keep }).map_err(Failure::internal)
        }
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

/// Builds the transport the flags ask for. Returns the tor we launched, if
/// any: it stops when dropped.
async fn transport(
    home: &Path,
    args: &TransportArgs,
) -> Result<(AnyTransport, Option<TorProcess>), Failure> {
    if let Some(dir) = &args.dev_tcp {
        let (dev, warning) = DevTransport::new(dir);
        println!("{warning}");
        return Ok((AnyTransport::Dev(dev), None));
    }
    if args.launch_tor {
        let mut config = TorConfig::new(home.join("tor"));
        if let Some(extra) = &args.torrc_extra {
            let text = std::fs::read_to_string(extra)
                .map_err(|e| Failure::input(format!("cannot read {}: {e}", extra.display())))?;
            config.extra_torrc = text.lines().map(str::to_string).collect();
        }
        eprintln!("launching tor in {}", config.data_dir.display());
        let tor = TorProcess::launch(&config, |s| {
            eprintln!("tor bootstrap: {:>3}% {}", s.progress, s.summary);
        })
        .await
        .map_err(|e| Failure::internal(format!("cannot launch tor: {e}")))?;
        return Ok((AnyTransport::Tor(tor.transport()), Some(tor)));
    }
    let tor = TorTransport::new(args.tor_socks, args.tor_control, ControlAuth::Auto);
    warn_without_extended_errors(&tor).await;
    Ok((AnyTransport::Tor(tor), None))
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
        let started = async { Some(transport(home, &args.transport).await) }
            .or(async {
                stop.wait().await;
                None
            })
            .await;
        let Some(started) = started else {
            return Ok(());
        };
        let (transport, _tor) = started?;
        crate::server::run_until(
            home,
            transport,
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
    let args = &run.transport;
    no_profile_is_said_first(home)?;
    let _lock = take_home(home)?;
    let password = if run.password_stdin {
        password_from_stdin()?
    } else {
        password(false)?
    };
    let (raw, identity, name) = store::open_profile(home, &password)?;
    drop(password);
    let (transport, tor) = smol::block_on(transport(home, args))?;
    let note = matches!(transport, AnyTransport::Dev(_))
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
        transport,
        handshake_timeout: args.handshake_timeout,
        stop_on_stdin_eof: run.stop_on_stdin_eof,
    })
    .map_err(Failure::internal);
    drop(tor);
    outcome
}
