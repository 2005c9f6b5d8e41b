//! `cwtch-node`: the command line. See `cwtch-node --help`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use cwtch_node::cli::{
    Cli, Command, ContactCommand, GroupCommand, MailboxCommand, ServerCommand, ServerRunArgs,
    TransportArgs,
};
use cwtch_node::control::{self, Request};
use cwtch_node::peer::{self, PeerNode};
use cwtch_transport_socks::{
    AnyTransport, ControlAuth, DevTransport, PEER_PORT, TorConfig, TorProcess, TorTransport,
    Transport,
};
use zeroize::Zeroizing;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let home = cli.home.clone().unwrap_or_else(default_home);
    match run(cli, &home) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cwtch-node: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    // RUST_LOG, else -v/-vv, else warn (a server's configuration may set
    // its own level: cwtch_node::logging).
    cwtch_node::logging::init(verbose);
}

fn default_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cwtch")
}

/// The password: CWTCH_PASSWORD, or one line from the terminal.
fn password() -> Result<Zeroizing<Vec<u8>>, String> {
    if let Some(p) = std::env::var_os("CWTCH_PASSWORD") {
        return Ok(Zeroizing::new(p.into_encoded_bytes()));
    }
    eprint!("password: ");
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password: {e}"))?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\n', '\r']).as_bytes().to_vec(),
    ))
}

fn run(cli: Cli, home: &Path) -> Result<(), String> {
    let json = cli.json;
    match cli.command {
        Command::Init { name } => {
            let address =
                peer::init_profile(home, &name, &password()?).map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::json!({"address": address.to_string()}));
            } else {
                println!("{address}");
            }
            Ok(())
        }
        Command::Address => {
            let result = one_shot(home, &Request::Address, true);
            if result.is_ok() {
                return Ok(());
            }
            // No daemon: open the profile ourselves.
            let (_, identity, _) =
                peer::open_profile(home, &password()?).map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"address": identity.address().to_string()})
                );
            } else {
                println!("{}", identity.address());
            }
            Ok(())
        }
        Command::Run(args) => run_peer(home, &args),
        Command::Status => one_shot(home, &Request::Status, json),
        Command::Contact(c) => {
            let request = match c {
                ContactCommand::Add { address, message } => {
                    Request::ContactAdd { address, message }
                }
                ContactCommand::Accept { address } => Request::ContactAccept { address },
                ContactCommand::Block { address } => Request::ContactBlock { address },
                ContactCommand::List => Request::ContactList,
            };
            one_shot(home, &request, json)
        }
        Command::Send { address, text } => one_shot(home, &Request::Send { address, text }, json),
        Command::Servers => one_shot(home, &Request::Servers, json),
        Command::Group(g) => {
            let request = match g {
                GroupCommand::Create { name, server } => Request::GroupCreate { name, server },
                GroupCommand::Invite { group, address } => Request::GroupInvite { group, address },
                GroupCommand::Send { group, text } => Request::GroupSend { group, text },
                GroupCommand::Move { group, server } => Request::GroupMove { group, server },
                GroupCommand::List => Request::GroupList,
                GroupCommand::Invites => Request::GroupInvites,
                GroupCommand::Accept { group } => Request::GroupAccept { group },
                GroupCommand::Refuse { group } => Request::GroupRefuse { group },
            };
            one_shot(home, &request, json)
        }
        Command::Mailbox(MailboxCommand::Create { server, revoke_old }) => {
            one_shot(home, &Request::MailboxCreate { server, revoke_old }, json)
        }
        Command::Identifier => {
            if one_shot(home, &Request::Identifier, json).is_ok() {
                return Ok(());
            }
            // No daemon: read the profile ourselves.
            let (store, identity, _) =
                peer::open_profile(home, &password()?).map_err(|e| e.to_string())?;
            let value = cwtch_node::mailbox::identifier_from_store(&store, &identity)
                .map_err(|e| e.to_string())?;
            if json {
                println!("{value}");
            } else {
                println!("{}", value["identifier"].as_str().unwrap_or_default());
            }
            Ok(())
        }
        Command::Messages {
            conversation,
            follow,
        } => {
            if follow {
                control::request(
                    home,
                    &Request::Messages {
                        conversation,
                        follow,
                    },
                    |line| {
                        print_message_line(line, json);
                        true
                    },
                )
            } else {
                one_shot(
                    home,
                    &Request::Messages {
                        conversation,
                        follow,
                    },
                    json,
                )
            }
        }
        Command::Demo { dev_tcp, keep } => {
            cwtch_node::demo::run(cwtch_node::demo::Options { dev_tcp, keep })
        }
        Command::Server(ServerCommand::Init(policy)) => {
            cwtch_node::server::init(home, &policy, json)
        }
        Command::Server(ServerCommand::Info) => cwtch_node::server::info(home, json),
        Command::Server(ServerCommand::Config) => cwtch_node::server::print_config(home, json),
        Command::Server(ServerCommand::Stats) => cwtch_node::server::print_stats(home, json),
        Command::Server(ServerCommand::Backup { file }) => {
            // The backup holds the server's key: private from the start.
            cwtch_node::home::private_umask();
            let summary =
                cwtch_node::server::backup::backup(home, &file).map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::json!(summary));
            } else {
                println!(
                    "backup of {}: {} blobs (last index {}) in {} (mode 0600; it holds the \
                     server's key: keep it as safe as the server)",
                    summary.address, summary.blobs, summary.head, summary.file
                );
            }
            Ok(())
        }
        Command::Server(ServerCommand::Restore { file }) => {
            cwtch_node::home::private_umask();
            let address =
                cwtch_node::server::backup::restore(&file, home).map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::json!({"address": address, "home": home}));
            } else {
                println!(
                    "restored {address} into {}: start it with `cwtch-node --home {} server run`",
                    home.display(),
                    home.display()
                );
            }
            Ok(())
        }
        Command::Server(ServerCommand::Run(args)) => run_server(home, &args),
    }
}

fn print_message_line(line: &str, json: bool) {
    if json {
        println!("{line}");
        return;
    }
    match serde_json::from_str::<cwtch_node::model::StoredMessage>(line) {
        Ok(m) => println!("{}", cwtch_node::format::message(&m)),
        Err(_) => println!("{line}"),
    }
}

/// Sends one request to the daemon and prints the answer.
fn one_shot(home: &Path, request: &Request, json: bool) -> Result<(), String> {
    let mut outcome = Err("the daemon closed the connection without answering".to_string());
    control::request(home, request, |line| {
        outcome = match serde_json::from_str::<control::Response>(line) {
            Ok(r) if r.ok => {
                let value = r.result.unwrap_or(serde_json::Value::Null);
                if json {
                    println!("{value}");
                } else {
                    println!("{}", cwtch_node::format::human(request, &value));
                }
                Ok(())
            }
            Ok(r) => Err(r.error.unwrap_or_else(|| "failed".into())),
            Err(e) => Err(format!("bad answer from the daemon: {e}")),
        };
        false
    })?;
    outcome
}

/// Builds the transport the flags ask for. Returns the tor we launched, if
/// any: it stops when dropped.
async fn transport(
    home: &Path,
    args: &TransportArgs,
) -> Result<(AnyTransport, Option<TorProcess>), String> {
    cwtch_node::limits::set_handshake_timeout_secs(args.handshake_timeout);
    if let Some(dir) = &args.dev_tcp {
        let (dev, warning) = DevTransport::new(dir);
        println!("{warning}");
        return Ok((AnyTransport::Dev(dev), None));
    }
    if args.launch_tor {
        let mut config = TorConfig::new(home.join("tor"));
        if let Some(extra) = &args.torrc_extra {
            let text = std::fs::read_to_string(extra)
                .map_err(|e| format!("cannot read {}: {e}", extra.display()))?;
            config.extra_torrc = text.lines().map(str::to_string).collect();
        }
        eprintln!("launching tor in {}", config.data_dir.display());
        let tor = TorProcess::launch(&config, |s| {
            eprintln!("tor bootstrap: {:>3}% {}", s.progress, s.summary);
        })
        .await
        .map_err(|e| format!("cannot launch tor: {e}"))?;
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
fn take_home(home: &Path) -> Result<cwtch_node::home::HomeLock, String> {
    cwtch_node::home::private_umask();
    cwtch_node::home::HomeLock::acquire(home).map_err(|e| e.to_string())
}

/// `server run`: until SIGTERM or SIGINT, then a graceful stop (exit 0);
/// SIGHUP reloads server.toml.
fn run_server(home: &Path, args: &ServerRunArgs) -> Result<(), String> {
    use cwtch_node::server::{RunOptions, config::MetricsAddr};
    use smol::future::FutureExt;
    let metrics = args
        .metrics
        .as_deref()
        .map(MetricsAddr::parse)
        .transpose()
        .map_err(|e| format!("--metrics: {e}"))?;
    let _lock = take_home(home)?;
    smol::block_on(async {
        let signals = cwtch_node::shutdown::Signals::install()
            .map_err(|e| format!("cannot catch signals: {e}"))?;
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
        cwtch_node::server::run_until(
            home,
            transport,
            RunOptions {
                shutdown: signals.shutdown.clone(),
                reload: signals.reload.clone(),
                metrics,
                ..RunOptions::default()
            },
        )
        .await
    })
}

fn run_peer(home: &Path, args: &TransportArgs) -> Result<(), String> {
    if !home.join(peer::PROFILE_FILE).exists() {
        return Err(format!(
            "no profile in {} (run `cwtch-node init --name NAME` first)",
            home.display()
        ));
    }
    let _lock = take_home(home)?;
    let password = password()?;
    let (store, identity, name) = peer::open_profile(home, &password).map_err(|e| e.to_string())?;
    drop(password);
    smol::block_on(async {
        let (transport, _tor) = transport(home, args).await?;
        let node = PeerNode::load(home, store, identity.clone(), name, transport.clone())
            .map_err(|e| e.to_string())?;
        // The control socket and outgoing links do not wait for our own
        // onion service to be published.
        let control = smol::spawn(control::serve(node.clone()));
        smol::spawn(node.clone().keep_connected()).detach();
        smol::spawn(node.clone().keep_servers()).detach();
        smol::spawn(node.clone().keep_recovering()).detach();
        let mut listener = transport
            .listen(&identity, PEER_PORT)
            .await
            .map_err(|e| format!("cannot publish our onion service: {e}"))?;
        if listener
            .wait_published(std::time::Duration::from_secs(120))
            .await
            .is_err()
        {
            eprintln!(
                "warning: tor has not confirmed our onion service yet; peers may not reach us for a while"
            );
        }
        println!("cwtch peer {} is online", node.address());
        smol::spawn(node.clone().serve(listener)).detach();
        control
            .await
            .map_err(|e| format!("control socket failed: {e}"))
    })
}
