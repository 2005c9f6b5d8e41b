//! `cwtch-node chat`, the real binary in a real terminal: tmux runs it
//! (`new-session -d -x 100 -y 30`), `send-keys` types, `capture-pane -p`
//! reads the screen. Alice attaches to a daemon the test started; bob's
//! chat finds none and starts its own (the password typed at its hidden
//! prompt and handed over a pipe), and stops it when he quits. They add
//! each other, answer the request, write, see pending turn into
//! delivered, see bob go offline and come back, join a group on a server
//! and post. Once on the development transport, once over a private Tor
//! network. A third test looks for what was typed in every process's
//! arguments and environment and in every file the run left.
//!
//! Fails (never skips) without tmux or tor. Each test has its own tmux
//! server (`tmux -L NAME`), killed at the end.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cwtch_transport_socks::testnet::TestNetwork;
use support::{Daemon, PASSWORD, bin, cli, init, wait_ready};

/// A tmux server of our own.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(name: &str) -> Tmux {
        let version = Command::new("tmux").arg("-V").output().expect(
            "tmux is needed for this test (apt-get install tmux): it runs chat in a real terminal",
        );
        assert!(version.status.success(), "tmux -V failed");
        Tmux {
            socket: format!("cwtch-{name}-{}", std::process::id()),
        }
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A session running `command` (through sh, which stays to show what
    /// chat printed last), with `env` added, in `cwd`.
    fn session(&self, name: &str, command: &str, env: &[(&str, &str)]) {
        let mut args: Vec<String> = ["new-session", "-d", "-s", name, "-x", "100", "-y", "30"]
            .map(String::from)
            .to_vec();
        for (k, v) in env {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        args.push(format!("{command}; echo \"[chat exited: $?]\"; sleep 600"));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cmd(&refs);
    }

    fn screen(&self, name: &str) -> String {
        self.cmd(&["capture-pane", "-p", "-t", name])
    }

    /// Types `text` literally (no key names), then the keys named.
    fn type_text(&self, name: &str, text: &str) {
        self.cmd(&["send-keys", "-t", name, "-l", text]);
    }

    fn keys(&self, name: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", name];
        args.extend_from_slice(keys);
        self.cmd(&args);
    }

    /// Types a line and Enter.
    fn line(&self, name: &str, text: &str) {
        self.type_text(name, text);
        self.keys(name, &["Enter"]);
    }

    /// Pastes `text` from standard input (it never appears in an argument).
    fn paste(&self, name: &str, text: &str) {
        let mut child = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(["load-buffer", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("tmux load-buffer");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        self.cmd(&["paste-buffer", "-d", "-t", name]);
    }

    /// Waits until the screen of `name` satisfies `check`.
    fn wait(&self, name: &str, what: &str, limit: Duration, check: impl Fn(&str) -> bool) {
        let start = Instant::now();
        loop {
            let s = self.screen(name);
            if check(&s) {
                return;
            }
            if start.elapsed() > limit {
                panic!("timed out after {limit:?} waiting for {what} on {name}'s screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_for_text(&self, name: &str, text: &str, limit: Duration) {
        self.wait(name, &format!("{text:?}"), limit, |s| s.contains(text));
    }

    /// The line of the left pane that shows `label`.
    fn list_line(&self, name: &str, label: &str) -> Option<String> {
        self.screen(name)
            .lines()
            .find(|l| l.starts_with(&format!("│>{label}")) || l.starts_with(&format!("│ {label}")))
            .map(str::to_string)
    }

    /// Moves the selection until `label` is in view.
    fn select(&self, name: &str, label: &str) {
        for _ in 0..12 {
            if self.screen(name).contains(&format!("│>{label}")) {
                return;
            }
            self.keys(name, &["Down"]);
            std::thread::sleep(Duration::from_millis(150));
        }
        panic!("could not select {label} on {name}:\n{}", self.screen(name));
    }

    fn title(&self, name: &str) -> String {
        self.cmd(&["display-message", "-p", "-t", name, "#{pane_title}"])
            .trim()
            .to_string()
    }

    fn bell(&self, name: &str) -> bool {
        self.cmd(&["display-message", "-p", "-t", name, "#{window_bell_flag}"])
            .trim()
            == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What each screen showed last.
            let list = Command::new("tmux")
                .args(["-L", &self.socket, "list-sessions", "-F", "#{session_name}"])
                .output();
            if let Ok(list) = list {
                for s in String::from_utf8_lossy(&list.stdout).lines() {
                    if let Ok(out) = Command::new("tmux")
                        .args(["-L", &self.socket, "capture-pane", "-p", "-t", s])
                        .output()
                    {
                        eprintln!("---- {s} ----\n{}", String::from_utf8_lossy(&out.stdout));
                    }
                }
            }
        }
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// How each party reaches the network: alice 0, bob 1, the server 2.
enum Net {
    Dev(PathBuf),
    // Boxed: the network is large, a directory is not.
    Tor(Box<TestNetwork>),
}

impl Net {
    fn flags(&self, who: usize) -> Vec<String> {
        match self {
            Net::Dev(dir) => vec!["--dev-tcp".into(), dir.display().to_string()],
            Net::Tor(net) => {
                let c = &net.clients()[who];
                vec![
                    "--tor-socks".into(),
                    c.socks_addr.to_string(),
                    "--tor-control".into(),
                    c.control_addr.to_string(),
                ]
            }
        }
    }
}

fn chat_command(home: &Path, flags: &[String]) -> String {
    format!(
        "{} --home {} chat {}",
        bin(),
        home.display(),
        flags.join(" ")
    )
}

/// Bob's chat: no daemon runs, so it starts one, asking for the password
/// (hidden) first.
fn start_bob(tmux: &Tmux, session: &str, home: &Path, net: &Net, fake_home: &Path) {
    tmux.session(
        session,
        &chat_command(home, &net.flags(1)),
        &[("HOME", &fake_home.display().to_string())],
    );
    tmux.wait_for_text(session, "password:", Duration::from_secs(30));
    let s = tmux.screen(session);
    assert!(
        s.contains("no daemon runs on") && s.contains("starting one"),
        "chat says it starts a daemon:\n{s}"
    );
    tmux.type_text(session, PASSWORD);
    assert!(
        !tmux.screen(session).contains(PASSWORD),
        "the password is not echoed"
    );
    tmux.keys(session, &["Enter"]);
    tmux.wait_for_text(
        session,
        "chat started the daemon for this profile",
        Duration::from_secs(180),
    );
}

/// The pids of the `cwtch-node ... run` processes of `home`.
fn daemon_pids(home: &Path) -> Vec<u32> {
    let needle = home.display().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == &needle) && args.iter().any(|a| a == "run") {
            out.push(pid);
        }
    }
    out
}

/// A one-shot command's human form.
fn human(home: &Path, args: &[&str]) -> String {
    let out = Command::new(bin())
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cwtch-node");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The whole conversation, on `net`. `limit` bounds each wait.
fn conversation(name: &str, net: Net, limit: Duration) {
    let tmux = Tmux::new(name);
    let tmp = tempfile::tempdir().unwrap();
    let fake_home = tmp.path().join("home");
    std::fs::create_dir(&fake_home).unwrap();
    let server_home = tmp.path().join("server");
    let v = cli(&server_home, &["server", "init"]).unwrap();
    let server = v["server"].as_str().unwrap().to_string();
    let _server = Daemon::start(&server_home, true, &net.flags(2));
    let (a_home, b_home) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let alice = init(&a_home, "alice");
    let bob = init(&b_home, "bob");
    // Alice's daemon runs already: her chat attaches to it.
    let alice_daemon = Daemon::start(&a_home, false, &net.flags(0));
    wait_ready(&a_home);
    tmux.session(
        "alice",
        &chat_command(&a_home, &net.flags(0)),
        &[("HOME", &fake_home.display().to_string())],
    );
    tmux.wait_for_text("alice", "nobody yet", Duration::from_secs(30));
    assert!(
        !tmux.screen("alice").contains("password:"),
        "attaching needs no password"
    );
    start_bob(&tmux, "bob", &b_home, &net, &fake_home);
    let bob_pids = daemon_pids(&b_home);
    assert_eq!(bob_pids.len(), 1, "bob's chat started one daemon");
    for what in ["cmdline", "environ"] {
        let bytes = std::fs::read(format!("/proc/{}/{what}", bob_pids[0])).unwrap();
        assert!(
            !contains(&bytes, PASSWORD.as_bytes()),
            "the password is not in the daemon's {what}"
        );
    }

    // The first exchange: the only time an address is typed.
    tmux.line("alice", &format!("/add {bob} hi bob, it's alice"));
    tmux.wait_for_text("alice", "me: hi bob, it's alice", limit);
    tmux.wait("bob", "alice's request", limit, |s| {
        s.contains("alice?") && s.contains("request") && s.contains("asks to be your contact")
    });
    tmux.wait_for_text("bob", "alice?: hi bob, it's alice", limit);
    assert!(bell_or_title(&tmux, "bob"), "a request rings");
    tmux.line("bob", "/accept");
    // The line at the bottom says it, unless a line from the daemon took
    // its place at once (see `joined`); the list says it for good.
    tmux.wait("bob", "alice accepted", limit, |s| {
        s.contains("alice? is now a contact")
            || s.lines()
                .any(|l| l.starts_with("│>alice?") && !l.contains("request"))
    });
    tmux.line("bob", "hello alice");
    tmux.wait_for_text("alice", "bob?: hello alice", limit);
    tmux.wait_for_text("bob", "me: hello alice  [delivered]", limit);
    tmux.wait_for_text("alice", "me: hi bob, it's alice  [delivered]", limit);
    // From now on, names: alice calls bob "bobby".
    tmux.line("alice", "/nick bobby");
    tmux.wait("alice", "the nickname", limit, |s| s.contains("│>bobby"));
    let line = tmux.list_line("alice", "bobby").unwrap();
    assert!(line.contains("online"), "{line}");

    // Bob quits: the daemon his chat started stops with it.
    tmux.line("bob", "/quit");
    tmux.wait_for_text("bob", "the daemon stopped", limit);
    tmux.wait("alice", "bob offline", limit, |s| {
        s.lines()
            .any(|l| l.contains("bobby") && (l.contains("offline") || l.contains("unreachable")))
    });
    assert!(daemon_pids(&b_home).is_empty(), "bob's daemon stopped");
    // `status` says it in plain words too.
    let status = human(&a_home, &["status"]);
    let debug = support::debug_forms(&status);
    assert!(
        debug.is_empty(),
        "debug forms in status: {debug:?}\n{status}"
    );
    // Alice writes anyway: pending, and why.
    tmux.line("alice", "are you there?");
    tmux.wait_for_text("alice", "me: are you there?  [pending", limit);
    tmux.wait_for_text("alice", "waiting", limit);
    // Bob comes back.
    start_bob(&tmux, "bob2", &b_home, &net, &fake_home);
    tmux.wait("alice", "bob online again", limit, |s| {
        s.lines()
            .any(|l| l.contains("│>bobby") && l.contains("online"))
    });
    tmux.wait_for_text("alice", "me: are you there?  [delivered]", limit);
    tmux.wait_for_text("bob2", "alice?: are you there?", limit);

    // A group on the server.
    tmux.line("alice", &format!("/group create friends {server}"));
    tmux.wait("alice", "the group", limit, |s| s.contains("│>#friends"));
    tmux.wait("alice", "the server synced", limit, |s| {
        s.lines()
            .any(|l| l.contains("#friends") && l.contains("synced"))
    });
    tmux.line("alice", "/group invite bobby");
    tmux.wait_for_text("alice", "invite to bobby queued", limit);
    tmux.wait("bob2", "the invite", limit, |s| {
        s.lines()
            .any(|l| l.contains("#friends") && l.contains("invite"))
    });
    tmux.select("bob2", "#friends");
    tmux.wait_for_text("bob2", "invites you to the group #friends", limit);
    tmux.line("bob2", "/accept");
    // "in group #friends" at the bottom, or (when a line from bob's daemon
    // replaced it at once: its "is online" comes when tor confirms the
    // onion service, which can be after this) the list's entry for the
    // group no longer an invite. Waiting for the bottom line alone failed
    // once with the group joined and synced on screen.
    tmux.wait("bob2", "joined #friends", limit, |s| {
        s.contains("in group #friends")
            || s.lines()
                .any(|l| l.starts_with("│>#friends") && !l.contains("invite"))
    });
    tmux.line("bob2", "hi all");
    tmux.wait_for_text("bob2", "me: hi all  [delivered]", limit);
    tmux.wait_for_text("alice", "bobby: hi all", limit);
    tmux.line("alice", "welcome, bob");
    tmux.wait_for_text("alice", "me: welcome, bob  [delivered]", limit);
    tmux.wait_for_text("bob2", "alice?: welcome, bob", limit);

    let groups = human(&a_home, &["group", "list"]);
    assert!(support::debug_forms(&groups).is_empty(), "{groups}");

    // A message in a conversation out of view: the bell, a count in the
    // title, never a name.
    tmux.select("alice", "bobby");
    assert_eq!(tmux.title("bob2"), "cwtch");
    tmux.line("alice", "psst, over here");
    tmux.wait("bob2", "the count in the title", limit, |_| {
        tmux.title("bob2") == "cwtch (1)"
    });
    assert!(tmux.bell("bob2"), "the bell rang in bob's terminal");
    let s = tmux.screen("bob2");
    assert!(
        s.lines()
            .any(|l| l.starts_with("│ alice?") && l.contains(" 1 ")),
        "{s}"
    );

    // Down to 80x24: the panes, the input line and the hints still fit.
    tmux.cmd(&["resize-window", "-t", "alice", "-x", "80", "-y", "24"]);
    tmux.wait("alice", "the smaller screen", limit, |s| {
        let rows: Vec<&str> = s.lines().collect();
        rows.len() >= 24
            && rows[23].contains("/help")
            // At 80 columns the header keeps our name and whole address
            // (the program's name goes first).
            && rows[0].contains("alice")
            && rows[0].contains(alice.as_str())
            && s.contains("psst, over here")
    });

    // Alice quits: her daemon, started by the test, keeps running.
    tmux.line("alice", "/quit");
    tmux.wait_for_text("alice", "the daemon keeps running", limit);
    assert!(cli(&a_home, &["status"]).is_ok());
    drop(alice_daemon);
    // chat wrote nothing into the user's home.
    let left: Vec<_> = std::fs::read_dir(&fake_home).unwrap().collect();
    assert!(left.is_empty(), "chat wrote into $HOME: {left:?}");
}

/// A request or message out of view shows in the title (the bell flag of
/// a detached tmux session is checked where it matters).
fn bell_or_title(tmux: &Tmux, name: &str) -> bool {
    tmux.title(name).starts_with("cwtch (") || tmux.bell(name)
}

#[test]
fn chat_over_the_dev_transport() {
    let tmp = tempfile::tempdir().unwrap();
    conversation(
        "dev",
        Net::Dev(tmp.path().join("dev")),
        Duration::from_secs(30),
    );
}

#[test]
fn chat_over_a_private_tor_network() {
    let net = TestNetwork::start(3).expect("private Tor network (is tor installed?)");
    println!("private Tor network up in {:?}", net.startup_time());
    let started = Instant::now();
    conversation("tor", Net::Tor(Box::new(net)), Duration::from_secs(180));
    println!("the conversation over Tor took {:?}", started.elapsed());
}

/// What is typed in chat (messages, several lines, a nickname) never
/// shows in any process's arguments or environment, in the daemons' logs
/// (at debug level), or in any file the run left: chat keeps no history,
/// and the profile holds it encrypted.
#[test]
fn nothing_typed_in_chat_reaches_arguments_logs_or_files() {
    let tmux = Tmux::new("leak");
    let tmp = tempfile::tempdir().unwrap();
    let fake_home = tmp.path().join("home");
    std::fs::create_dir(&fake_home).unwrap();
    let net = Net::Dev(tmp.path().join("dev"));
    let (a_home, b_home) = (tmp.path().join("alice"), tmp.path().join("bob"));
    init(&a_home, "alice");
    let bob = init(&b_home, "bob");
    let a = Daemon::start_with_env(&a_home, false, &net.flags(0), &[("RUST_LOG", "debug")]);
    let b = Daemon::start_with_env(&b_home, false, &net.flags(1), &[("RUST_LOG", "debug")]);
    wait_ready(&a_home);
    wait_ready(&b_home);
    cli(&a_home, &["contact", "add", &bob, "--nickname", "bob"]).unwrap();
    tmux.session(
        "alice",
        &chat_command(&a_home, &net.flags(0)),
        &[("HOME", &fake_home.display().to_string())],
    );
    tmux.wait("alice", "bob in view", Duration::from_secs(30), |s| {
        s.contains("│>bob") && s.contains("online")
    });
    let canary = format!("zq{}canary", std::process::id());
    let limit = Duration::from_secs(30);
    // A message, pasted (so that it is in no tmux argument either).
    tmux.paste("alice", &format!("{canary} one"));
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_text("alice", &format!("me: {canary} one  [delivered]"), limit);
    // Several lines.
    tmux.paste("alice", &format!("{canary} two"));
    tmux.keys("alice", &["M-Enter"]);
    tmux.paste("alice", &format!("{canary} three"));
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_text("alice", &format!("{canary} three  [delivered]"), limit);
    // A nickname.
    tmux.paste("alice", &format!("/nick {canary}nick"));
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_text("alice", &format!("│>{canary}nick"), limit);
    // Half-typed, not sent.
    tmux.paste("alice", &format!("{canary} unsent"));
    tmux.wait_for_text("alice", &format!("{canary} unsent"), limit);

    let needle = canary.as_bytes();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        for what in ["cmdline", "environ"] {
            if let Ok(bytes) = std::fs::read(entry.path().join(what)) {
                assert!(
                    !contains(&bytes, needle),
                    "typed text in /proc/{}/{what}: {}",
                    entry.file_name().to_string_lossy(),
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
    }
    tmux.keys("alice", &["Escape"]);
    // The input is empty before the next key: an Escape followed at once
    // by "/" reaches the terminal as one Alt+/ (the escape sequence), and
    // the half-typed text would stay and go out with "/quit" after it.
    tmux.wait("alice", "the half-typed text cleared", limit, |s| {
        !s.contains(&format!("{canary} unsent"))
    });
    tmux.line("alice", "/quit");
    tmux.wait_for_text("alice", "the daemon keeps running", limit);
    drop((a, b));
    // Every file of the run: the daemons' debug logs, the profiles, the
    // dev transport's files, $HOME.
    let mut files = 0;
    let mut stack = vec![tmp.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files += 1;
                assert!(
                    !contains(&bytes, needle),
                    "typed text in {}",
                    path.display()
                );
            }
        }
    }
    assert!(
        files >= 4,
        "the logs and profiles were searched ({files} files)"
    );
    let logs =
        std::fs::read_to_string(tmp.path().join(format!("alice.{}.log", std::process::id())))
            .unwrap();
    assert!(logs.contains("DEBUG"), "the log is at debug level");
    assert!(
        std::fs::read_dir(&fake_home).unwrap().next().is_none(),
        "chat wrote into $HOME"
    );
}

/// A daemon that chat started does not outlive chat, however chat ends:
/// here its terminal goes away (`kill-session`: chat gets SIGHUP and dies
/// without `/quit`). The daemon reads the end of its standard input, the
/// pipe from chat, and stops gracefully.
#[test]
fn a_daemon_chat_started_stops_when_its_terminal_is_killed() {
    let tmux = Tmux::new("hup");
    let tmp = tempfile::tempdir().unwrap();
    let fake_home = tmp.path().join("home");
    std::fs::create_dir(&fake_home).unwrap();
    let net = Net::Dev(tmp.path().join("dev"));
    let b_home = tmp.path().join("bob");
    init(&b_home, "bob");
    start_bob(&tmux, "bob", &b_home, &net, &fake_home);
    let pids = daemon_pids(&b_home);
    assert_eq!(pids.len(), 1, "chat started one daemon");
    tmux.cmd(&["kill-session", "-t", "bob"]);
    let until = Instant::now() + Duration::from_secs(20);
    while !daemon_pids(&b_home).is_empty() {
        assert!(
            Instant::now() < until,
            "the daemon chat started still runs 20 s after chat's terminal went away"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
