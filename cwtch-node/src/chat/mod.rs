//! `cwtch-node chat`: an interactive terminal client of the control API.
//!
//! - [`app`]: the state, with no I/O: events and keys in, actions out.
//! - [`view`]: draws the state (ratatui).
//! - this module: the thin glue. A worker thread owns the connection to
//!   the daemon (requests, and the numbered event stream, resynced when the
//!   daemon restarts), a thread reads the terminal, and the main thread
//!   feeds both to the state, carries out its actions and draws.
//!
//! When no daemon runs on the home, chat starts one (`cwtch-node run` with
//! the same transport flags), giving it the password over a pipe (never in
//! its arguments or environment), and stops it when chat ends. A daemon
//! that was already running keeps running.
//!
//! chat writes nothing to disk: no history, no log file. Everything it
//! shows lives in the daemon's encrypted profile.

pub mod app;
pub mod view;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self as term, Event as TermEvent, KeyEventKind};
use ratatui::crossterm::{execute, terminal};
use zeroize::Zeroizing;

use crate::cli::TransportArgs;
use crate::control::api::Request;
use crate::control::client::{Client, ClientError};
use app::{Action, App, Input, Purpose};

/// What the main loop reads: the daemon's side, or the terminal.
enum Msg {
    App(Input),
    Term(TermEvent),
    TermGone(String),
}

/// How long chat waits for a daemon it started to answer (tor may have to
/// bootstrap first).
const START_LIMIT: Duration = Duration::from_secs(600);

/// Runs chat on `home`. `password` reads the profile's password (only
/// needed to start a daemon).
pub fn run(
    home: &Path,
    transport: &TransportArgs,
    password: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, String>,
) -> Result<(), String> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(
            "chat needs a terminal; the other commands (send, messages --follow, events) work without one"
                .into(),
        );
    }
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let mut started = match Client::connect(home, "cwtch-node chat") {
        Ok(_) => None,
        Err(ClientError::NotRunning(_)) => {
            println!(
                "no daemon runs on {}: starting one (cwtch-node run {}); it stops when chat ends",
                home.display(),
                transport_flags(transport).join(" ")
            );
            Some(start_daemon(
                home,
                transport,
                password()?,
                lines_tx,
                &lines_rx,
            )?)
        }
        Err(ClientError::Starting { pid, .. }) => {
            wait_for_starting(home, pid)?;
            None
        }
        Err(e) => return Err(e.to_string()),
    };
    let outcome = interactive(home, started.is_some(), lines_rx);
    match started.as_mut() {
        Some(child) => {
            println!("stopping the daemon chat started...");
            let _ = crate::control::client::request(home, Request::Shutdown);
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            println!("the daemon stopped");
        }
        None => println!(
            "the daemon keeps running (`cwtch-node --home {} stop` stops it)",
            home.display()
        ),
    }
    outcome
}

/// How long chat waits for a daemon someone else is starting: the longest
/// Tor connect (a launched tor's 30 s to start and 300 s to bootstrap).
const STARTING_LIMIT: Duration = Duration::from_secs(330);

/// Waits for the daemon `pid`, which holds the home but has no control
/// socket yet (it is connecting to Tor), to answer.
fn wait_for_starting(home: &Path, pid: u32) -> Result<(), String> {
    println!(
        "the daemon (pid {pid}) on {} is starting: it is connecting to Tor; waiting for it (up to \
         {} s)",
        home.display(),
        STARTING_LIMIT.as_secs()
    );
    let until = Instant::now() + STARTING_LIMIT;
    let mut shown = None;
    loop {
        match Client::connect(home, "cwtch-node chat") {
            Ok(_) => return Ok(()),
            Err(ClientError::Starting { progress, .. }) if Instant::now() < until => {
                // Its bootstrap progress, each step once.
                if progress.is_some() && progress != shown {
                    println!("{}", progress.as_deref().unwrap_or_default());
                    shown = progress;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(ClientError::Starting { .. }) => {
                return Err(format!(
                    "the daemon (pid {pid}) did not finish starting in {} s",
                    STARTING_LIMIT.as_secs()
                ));
            }
            Err(ClientError::NotRunning(_)) => {
                return Err(format!(
                    "the daemon (pid {pid}) stopped while starting; its own output says why"
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The arguments of `run` that give it the same transport as chat's.
pub fn transport_flags(t: &TransportArgs) -> Vec<String> {
    let mut out = Vec::new();
    let mut flag = |name: &str, value: String| {
        out.push(name.to_string());
        out.push(value);
    };
    if let Some(dir) = &t.dev_tcp {
        flag("--dev-tcp", dir.display().to_string());
    } else {
        // Every Tor flag as given: the daemon chooses (and says why) as
        // `run` would.
        if t.launch_tor {
            out.push("--launch-tor".into());
        } else {
            use clap::ValueEnum;
            if let Some(name) = t.tor.to_possible_value() {
                out.push("--tor".into());
                out.push(name.get_name().to_string());
            }
        }
        let mut flag = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                out.push(name.to_string());
                out.push(value);
            }
        };
        flag("--tor-socks", t.tor_socks.map(|a| a.to_string()));
        flag(
            "--tor-control",
            t.tor_control.as_ref().map(|a| a.to_string()),
        );
        let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        flag(
            "--tor-control-password-file",
            path(&t.tor_control_password_file),
        );
        flag("--torrc-extra", path(&t.torrc_extra));
        flag("--tor-network", path(&t.tor_network));
    }
    out.push("--handshake-timeout".into());
    out.push(t.handshake_timeout.to_string());
    out
}

/// Starts `cwtch-node run` on `home` and waits until it answers. Its
/// output lines go to `lines` (printed here until the screen opens).
fn start_daemon(
    home: &Path,
    transport: &TransportArgs,
    password: Zeroizing<Vec<u8>>,
    lines: Sender<String>,
    lines_rx: &Receiver<String>,
) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let flags = transport_flags(transport);
    let mut child = Command::new(exe)
        .arg("--home")
        .arg(home)
        .arg("run")
        .args(&flags)
        .arg("--password-stdin")
        .arg("--stop-on-stdin-eof")
        .env_remove("CWTCH_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the daemon: {e}"))?;
    {
        // The pipe stays open after the password: the daemon stops when it
        // closes, so it cannot outlive chat however chat ends (a panic, its
        // terminal closed).
        let stdin = child.stdin.as_mut().ok_or("no pipe to the daemon")?;
        let mut line = Zeroizing::new(password.to_vec());
        line.push(b'\n');
        stdin
            .write_all(&line)
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("cannot give the daemon its password: {e}"))?;
    }
    if let Some(out) = child.stdout.take() {
        forward_lines(out, lines.clone());
    }
    if let Some(err) = child.stderr.take() {
        forward_lines(err, lines);
    }
    let until = Instant::now() + START_LIMIT;
    loop {
        while let Ok(line) = lines_rx.try_recv() {
            println!("daemon: {}", crate::cli::format::safe(&line));
        }
        if let Ok(Some(status)) = child.try_wait() {
            std::thread::sleep(Duration::from_millis(100));
            while let Ok(line) = lines_rx.try_recv() {
                println!("daemon: {}", crate::cli::format::safe(&line));
            }
            return Err(format!("the daemon did not start ({status})"));
        }
        if Client::connect(home, "cwtch-node chat").is_ok() {
            return Ok(child);
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the daemon did not answer in time".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn forward_lines(from: impl Read + Send + 'static, to: Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if to.send(line).is_err() {
                break;
            }
        }
    });
}

/// The connection to the daemon: requests from `commands`, answers and
/// events to `out`. Reconnects when the daemon goes away; a daemon that
/// restarted (another `run` in its welcome) is resynced from the start of
/// its new run.
fn worker(home: PathBuf, commands: Receiver<(Request, Purpose)>, out: Sender<Msg>) {
    let mut last: Option<(u64, u64)> = None;
    let mut told_down = false;
    let send = |input: Input| out.send(Msg::App(input)).is_ok();
    loop {
        let mut client = match Client::connect(&home, "cwtch-node chat") {
            Ok(c) => c,
            Err(e) => {
                if !told_down {
                    told_down = true;
                    if !send(Input::Disconnected(e.to_string())) {
                        return;
                    }
                }
                let until = Instant::now() + Duration::from_millis(500);
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    match commands.recv_timeout(left) {
                        Ok((_, purpose)) => {
                            send(Input::Answer {
                                purpose,
                                result: Err("the daemon does not answer; retrying".into()),
                            });
                        }
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                continue;
            }
        };
        told_down = false;
        let run = client.welcome().run;
        let (since, restarted) = match last {
            Some((r, seq)) if r == run => (Some(seq), false),
            Some(_) => (Some(0), true),
            None => (None, false),
        };
        if client.subscribe(since).is_err() {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let mut seq = since.unwrap_or(0);
        last = Some((run, seq));
        if !send(Input::Connected {
            address: client.welcome().address.clone(),
            restarted,
        }) {
            return;
        }
        let why: String = 'conn: loop {
            loop {
                match commands.try_recv() {
                    Ok((request, purpose)) => match client.request(request) {
                        Ok(v) => {
                            send(Input::Answer {
                                purpose,
                                result: Ok(v),
                            });
                        }
                        Err(ClientError::Api(e)) => {
                            send(Input::Answer {
                                purpose,
                                result: Err(e.to_string()),
                            });
                        }
                        Err(e) => {
                            send(Input::Answer {
                                purpose,
                                result: Err(e.to_string()),
                            });
                            break 'conn e.to_string();
                        }
                    },
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            match client.next_event(Some(Duration::from_millis(50))) {
                Ok(Some(ev)) => {
                    seq = ev.seq;
                    last = Some((run, seq));
                    if !send(Input::Event(ev)) {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => break e.to_string(),
            }
        };
        // Lost: say so, and try again.
        told_down = true;
        if !send(Input::Disconnected(why)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The screen: until the user quits.
fn interactive(home: &Path, started: bool, daemon_lines: Receiver<String>) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<Msg>();
    let (cmd_tx, cmd_rx) = mpsc::channel::<(Request, Purpose)>();
    {
        let tx = tx.clone();
        let home = home.to_path_buf();
        std::thread::spawn(move || worker(home, cmd_rx, tx));
    }
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in daemon_lines {
                if tx.send(Msg::App(Input::DaemonLine(line))).is_err() {
                    break;
                }
            }
        });
    }
    let mut terminal = ratatui::try_init().map_err(|e| format!("cannot open the screen: {e}"))?;
    let mut stdout = std::io::stdout();
    let _ = execute!(stdout, term::EnableBracketedPaste);
    // Shift+Enter is told apart from Enter only where the terminal can say
    // so (the kitty keyboard protocol); Alt+Enter works everywhere.
    let enhanced = matches!(terminal::supports_keyboard_enhancement(), Ok(true))
        && execute!(
            stdout,
            term::PushKeyboardEnhancementFlags(
                term::KeyboardEnhancementFlags::DISAMBIGUATE_ESCAPE_CODES
            )
        )
        .is_ok();
    restore_on_panic(enhanced);
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            loop {
                match term::read() {
                    Ok(ev) => {
                        if tx.send(Msg::Term(ev)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Msg::TermGone(e.to_string()));
                        break;
                    }
                }
            }
        });
    }
    let tz = jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC);
    let mut app = App::new(tz);
    if let Ok(size) = terminal.size() {
        app.size = (size.width, size.height);
    }
    if started {
        app.status = Some((
            "chat started the daemon for this profile: it stops when you /quit".into(),
            app::Level::Info,
        ));
    }
    let mut title = String::new();
    let outcome = 'main: loop {
        if let Err(e) = terminal.draw(|f| view::render(&app, f)) {
            break Err(format!("cannot draw: {e}"));
        }
        let now = app.title();
        if now != title {
            let _ = execute!(stdout, terminal::SetTitle(&now));
            title = now;
        }
        // Wakes at least every second: old lines at the bottom go.
        let mut batch = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(first) => vec![first],
            Err(RecvTimeoutError::Timeout) => Vec::new(),
            Err(RecvTimeoutError::Disconnected) => break Ok(()),
        };
        app.tick(Instant::now());
        // Whatever else waits, before drawing again.
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() > 256 {
                break;
            }
        }
        for msg in batch {
            let actions = match msg {
                Msg::App(input) => app.on_input(input),
                Msg::Term(TermEvent::Key(key)) if key.kind != KeyEventKind::Release => {
                    app.on_key(key)
                }
                Msg::Term(TermEvent::Paste(text)) => {
                    app.on_paste(&text);
                    Vec::new()
                }
                Msg::Term(TermEvent::Resize(w, h)) => {
                    app.size = (w, h);
                    Vec::new()
                }
                Msg::Term(_) => Vec::new(),
                Msg::TermGone(e) => break 'main Err(format!("the terminal went away: {e}")),
            };
            for action in actions {
                match action {
                    Action::Request { request, purpose } => {
                        let _ = cmd_tx.send((request, purpose));
                    }
                    Action::Bell => {
                        let _ = stdout.write_all(b"\x07");
                        let _ = stdout.flush();
                    }
                    Action::Quit => break 'main Ok(()),
                }
            }
        }
    };
    restore_terminal(enhanced);
    outcome
}

/// Gives the terminal back as chat found it: keyboard flags popped,
/// bracketed paste off, the title reset, raw mode off, the main screen.
fn restore_terminal(enhanced: bool) {
    let mut stdout = std::io::stdout();
    if enhanced {
        let _ = execute!(stdout, term::PopKeyboardEnhancementFlags);
    }
    let _ = execute!(stdout, term::DisableBracketedPaste, terminal::SetTitle(""));
    ratatui::restore();
}

/// A panic restores the terminal before its message prints (on the main
/// screen, readable, in a terminal that echoes again).
fn restore_on_panic(enhanced: bool) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal(enhanced);
        previous(info);
    }));
}

#[cfg(test)]
mod tests;
