//! `cwtch-node demo`: the whole system on one machine, narrated.
//!
//! A private Tor network on loopback (the harness in
//! `cwtch_transport_socks::testnet`), a server and three peers (alice, bob,
//! carol), each a real `cwtch-node` process with its own client tor, driven
//! through the command line with `--json` exactly as a user or a script
//! would. The final checks are asserted: the demo fails (non-zero exit,
//! temporary directory and logs kept) when one does not hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cwtch_transport_socks::testnet::{self, TestNetwork, TestNetworkOptions};
use serde_json::Value;

/// The password of the demo's throw-away profiles.
const PASSWORD: &str = "demo password, throw-away profiles";
/// How often the demo polls the daemons.
const POLL: Duration = Duration::from_millis(150);
/// How long any one step may take before the demo gives up. Over the
/// private Tor network a step usually takes seconds, but a dial can go
/// unanswered until the daemon gives up on it after 60 s
/// (`DEFAULT_DIAL_TIMEOUT`): after the server's restart, an introduction
/// point from the old descriptor may acknowledge the introduction though
/// no service answers it any more (seen in tor's info log), and CI has
/// seen two such dials in a row to a peer whose service was just
/// published. A tor may also confirm an onion service only after a
/// daemon's own 120 s wait for it. The daemons retry on their own (after
/// a stall on new circuits); the demo gives them room for four such dials.
const STEP_LIMIT: Duration = Duration::from_secs(300);
/// Messages timed for the latency figures.
const LATENCY_PROBES: usize = 20;
/// The size every sealed group blob has on the server.
const BLOB_SIZE: i64 = 2048;

/// What `cwtch-node demo` was asked.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Plain TCP on loopback instead of Tor (NOT anonymous).
    pub dev_tcp: bool,
    /// Carol uses the built-in Tor (arti) instead of a client tor.
    pub arti: bool,
    /// Keep the temporary directory at the end.
    pub keep: bool,
}

/// What must be undone on Ctrl-C: process groups, tor pids, directories.
struct Cleanup {
    groups: Vec<u32>,
    tors: Vec<u32>,
    dirs: Vec<PathBuf>,
}

static CLEANUP: Mutex<Cleanup> = Mutex::new(Cleanup {
    groups: Vec::new(),
    tors: Vec::new(),
    dirs: Vec::new(),
});

fn cleanup_state() -> std::sync::MutexGuard<'static, Cleanup> {
    CLEANUP.lock().unwrap_or_else(|e| e.into_inner())
}

fn kill(pid: u32, group: bool) {
    if let Ok(raw) = i32::try_from(pid)
        && let Some(pid) = rustix::process::Pid::from_raw(raw)
    {
        let sig = rustix::process::Signal::KILL;
        let _ = if group {
            rustix::process::kill_process_group(pid, sig)
        } else {
            rustix::process::kill_process(pid, sig)
        };
    }
}

fn install_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        let st = cleanup_state();
        for &g in &st.groups {
            kill(g, true);
        }
        for &t in &st.tors {
            kill(t, false);
        }
        for d in &st.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        println!(
            "\ninterrupted: stopped {} cwtch-node and {} tor processes, removed the temporary files \
             (a tor still bootstrapping exits by itself within seconds: it watches our pid)",
            st.groups.len(),
            st.tors.len()
        );
        std::process::exit(130);
    });
}

/// Runs the demo. `Err` carries what failed; the caller exits non-zero.
pub fn run(opts: Options) -> Result<(), String> {
    if !opts.dev_tcp
        && Command::new("tor")
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
    {
        return Err(
            "tor is not installed: the demo runs a private Tor network and needs \
             `tor` and `tor-gencert` in PATH.\n  Install it with:  sudo apt-get install tor\n  \
             (or run `cwtch-node demo --dev-tcp` to see the same script WITHOUT Tor, not anonymous)"
                .into(),
        );
    }
    install_ctrl_c();
    let tmp = tempfile::Builder::new()
        .prefix("cwtch-demo-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    cleanup_state().dirs.push(tmp.path().to_path_buf());
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    println!(
        "(each process logs to {}; everything is removed at the end unless --keep)",
        logs.display()
    );
    let outcome = Demo::new(opts, tmp.path()).and_then(|mut d| {
        let r = d.script();
        if r.is_err() {
            // The kept logs vanish with the machine in CI: say here why.
            print!("{}", d.log_tails());
        }
        d.stop_all();
        r
    });
    let path = tmp.path().to_path_buf();
    cleanup_state().dirs.clear();
    match outcome {
        Ok(()) if opts.keep => {
            let _ = tmp.keep();
            println!("kept: {} (logs in {})", path.display(), logs.display());
            Ok(())
        }
        Ok(()) => {
            drop(tmp);
            println!("every process stopped, temporary files removed");
            Ok(())
        }
        Err(e) => {
            let _ = tmp.keep();
            Err(format!(
                "the demo FAILED: {e}\n  logs (kept): {}\n  profiles and server data: {}",
                logs.display(),
                path.display()
            ))
        }
    }
}

/// A `cwtch-node` daemon (peer or server) in its own process group.
struct Daemon {
    name: String,
    home: PathBuf,
    log: PathBuf,
    server: bool,
    transport: Vec<String>,
    child: Option<Child>,
    started_at: Instant,
}

impl Daemon {
    fn start(&mut self, exe: &Path) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.arg("--home").arg(&self.home).arg("-v");
        if self.server {
            cmd.arg("server");
        }
        let child = cmd
            .arg("run")
            .args(&self.transport)
            .env("CWTCH_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.name))?;
        cleanup_state().groups.push(child.id());
        self.child = Some(child);
        self.started_at = Instant::now();
        Ok(())
    }

    /// SIGKILL, as a crash or a pulled plug would.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            kill(pid, true);
            let _ = child.kill();
            let _ = child.wait();
            cleanup_state().groups.retain(|&g| g != pid);
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One message of a conversation, as shown by `messages --json`.
#[derive(Clone, Debug)]
struct Msg {
    author: String,
    text: String,
    status: String,
}

struct Demo {
    exe: PathBuf,
    dev: bool,
    /// Carol on the built-in Tor (`--arti`).
    arti: bool,
    net: Option<TestNetwork>,
    server: Daemon,
    peers: Vec<Daemon>,
    addresses: Vec<String>,
    server_string: String,
    /// Address → name, for printing.
    names: HashMap<String, String>,
    /// Last connection state seen, per "who → whom".
    states: BTreeMap<String, String>,
    last_state_poll: Instant,
    timings: Vec<(String, String)>,
    started: Instant,
}

const ALICE: usize = 0;
const BOB: usize = 1;
const CAROL: usize = 2;

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Demo {
    fn new(opts: Options, dir: &Path) -> Result<Demo, String> {
        if opts.arti && !cfg!(feature = "arti") {
            return Err(
                "demo --arti needs a cwtch-node built with the built-in Tor (--features arti)"
                    .into(),
            );
        }
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find our own executable: {e}"))?;
        let started = Instant::now();
        let mut timings = Vec::new();
        let net = if opts.dev_tcp {
            println!("=== Cwtch demo over the DEVELOPMENT transport ===");
            println!(
                "!!! plain TCP on loopback: NO Tor, NOT anonymous. It shows the protocol, not the privacy."
            );
            None
        } else {
            println!("=== Cwtch demo over a private Tor network (loopback only) ===");
            println!(
                "[1] starting a private Tor network: 3 directory authorities, 2 relays, 4 client tors"
            );
            // The built-in Tor needs the network shaped so that it and C tor
            // agree on onion-service time periods (15 s voting: see
            // cwtch-transport-arti/README.md).
            let options = if opts.arti {
                println!(
                    "    carol will use the built-in Tor (arti, inside her cwtch-node) and leave her client tor unused"
                );
                TestNetworkOptions::arti_compatible(4)
            } else {
                TestNetworkOptions::with_clients(4)
            };
            let net = TestNetwork::start_with_options_in(Some(dir), &options)
                .map_err(|e| format!("the private Tor network did not start: {e}"))?;
            cleanup_state().tors.extend(net.pids());
            println!(
                "    all 4 clients bootstrapped 100% after {}",
                secs(net.startup_time())
            );
            timings.push(("Tor network bootstrap".into(), secs(net.startup_time())));
            Some(net)
        };
        let arti_network = dir.join("tor-network");
        if let (Some(net), true) = (&net, opts.arti) {
            net.write_arti_network(&arti_network)
                .map_err(|e| format!("cannot describe the network for arti: {e}"))?;
        }
        let transport = |i: usize| -> Vec<String> {
            match &net {
                Some(_) if opts.arti && i == CAROL => vec![
                    "--tor".into(),
                    "arti".into(),
                    "--tor-network".into(),
                    arti_network.display().to_string(),
                ],
                Some(net) => {
                    let c = &net.clients()[i];
                    vec![
                        "--tor-socks".into(),
                        c.socks_addr.to_string(),
                        "--tor-control".into(),
                        c.control_addr.to_string(),
                    ]
                }
                None => vec!["--dev-tcp".into(), dir.join("dev").display().to_string()],
            }
        };
        let daemon = |name: &str, server: bool, i: usize| Daemon {
            name: name.into(),
            home: dir.join(name),
            log: dir.join("logs").join(format!("{name}.log")),
            server,
            transport: transport(i),
            child: None,
            started_at: Instant::now(),
        };
        let server = daemon("server", true, 3);
        let peers = vec![
            daemon("alice", false, 0),
            daemon("bob", false, 1),
            daemon("carol", false, 2),
        ];
        Ok(Demo {
            exe,
            dev: opts.dev_tcp,
            arti: opts.arti,
            net,
            server,
            peers,
            addresses: Vec::new(),
            server_string: String::new(),
            names: HashMap::new(),
            states: BTreeMap::new(),
            last_state_poll: Instant::now(),
            timings,
            started,
        })
    }

    /// The last lines of every daemon's log and every tor's notice log.
    fn log_tails(&self) -> String {
        const LINES: usize = 15;
        let mut out = String::new();
        for d in std::iter::once(&self.server).chain(self.peers.iter()) {
            out.push_str(&format!(
                "---- {} log (tail) ----\n{}\n",
                d.name,
                testnet::tail(&d.log, LINES)
            ));
        }
        if let Some(net) = &self.net {
            out.push_str(&net.log_tails(LINES));
        }
        out
    }

    fn stop_all(&mut self) {
        for p in &mut self.peers {
            p.kill9();
        }
        self.server.kill9();
        if let Some(mut net) = self.net.take() {
            net.stop();
            cleanup_state().tors.clear();
        }
    }

    /// Runs a one-shot command with `--json`; the parsed last line.
    fn cli(&self, home: &Path, args: &[&str]) -> Result<Value, String> {
        let out = Command::new(&self.exe)
            .arg("--home")
            .arg(home)
            .arg("--json")
            .args(args)
            .env("CWTCH_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "`cwtch-node {}` failed: {}",
                args.first().copied().unwrap_or(""),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().unwrap_or("null");
        serde_json::from_str(last).map_err(|e| format!("{e}: {text}"))
    }

    fn peer_cli(&self, who: usize, args: &[&str]) -> Result<Value, String> {
        self.cli(&self.peers[who].home, args)
    }

    fn name(&self, address: &str) -> String {
        self.names
            .get(address)
            .cloned()
            .unwrap_or_else(|| format!("{}…", address.get(..8).unwrap_or(address)))
    }

    fn messages(&self, who: usize, conversation: &str) -> Vec<Msg> {
        match self.peer_cli(who, &["messages", conversation]) {
            Ok(Value::Array(list)) => list
                .iter()
                .map(|m| Msg {
                    author: m["author"].as_str().unwrap_or_default().to_string(),
                    text: m["text"].as_str().unwrap_or_default().to_string(),
                    status: m["status"].as_str().unwrap_or_default().to_string(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn group(&self, who: usize) -> Vec<Msg> {
        self.messages(who, "friends")
    }

    /// Prints the connection states that changed since the last look.
    fn report_states(&mut self, force: bool) {
        if !force && self.last_state_poll.elapsed() < Duration::from_millis(600) {
            return;
        }
        self.last_state_poll = Instant::now();
        for i in 0..self.peers.len() {
            if !self.peers[i].running() {
                continue;
            }
            let Ok(status) = self.peer_cli(i, &["status"]) else {
                continue;
            };
            let me = self.peers[i].name.clone();
            let mut seen = Vec::new();
            for c in status["contacts"].as_array().into_iter().flatten() {
                let whom = self.name(c["contact"]["address"].as_str().unwrap_or_default());
                let state = c["connection"]["state"].as_str().unwrap_or("?").to_string();
                let err = c["connection"]["last_error"].as_str().unwrap_or_default();
                seen.push((format!("{me} → {whom}"), state, err.to_string()));
            }
            for g in status["groups"].as_array().into_iter().flatten() {
                for s in g["servers"].as_array().into_iter().flatten() {
                    let state = s["connection"]["state"].as_str().unwrap_or("?").to_string();
                    let err = s["connection"]["last_error"].as_str().unwrap_or_default();
                    seen.push((format!("{me} → server"), state, err.to_string()));
                }
            }
            for (key, state, err) in seen {
                if self.states.get(&key) != Some(&state) {
                    let before = self
                        .states
                        .insert(key.clone(), state.clone())
                        .unwrap_or_else(|| "-".into());
                    let why = if state == "failed" && !err.is_empty() {
                        format!(" ({err})")
                    } else {
                        String::new()
                    };
                    println!("      ~ connection {key}: {before} → {state}{why}");
                }
            }
        }
    }

    /// Polls `check` until it returns `Some`, printing connection changes.
    fn wait<T>(
        &mut self,
        what: &str,
        mut check: impl FnMut(&Demo) -> Option<T>,
    ) -> Result<T, String> {
        let start = Instant::now();
        loop {
            if let Some(v) = check(self) {
                return Ok(v);
            }
            self.report_states(false);
            self.check_alive()?;
            if start.elapsed() > STEP_LIMIT {
                return Err(format!(
                    "timed out after {} waiting for {what}",
                    secs(STEP_LIMIT)
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Fails fast when a daemon we started has exited on its own.
    fn check_alive(&mut self) -> Result<(), String> {
        for d in self
            .peers
            .iter_mut()
            .chain(std::iter::once(&mut self.server))
        {
            let exited = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                let pid = d.child.take().map(|c| c.id()).unwrap_or(0);
                cleanup_state().groups.retain(|&g| g != pid);
                let log = std::fs::read_to_string(&d.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "{}'s cwtch-node exited unexpectedly ({status}); the end of {}:\n    {}",
                    d.name,
                    d.log.display(),
                    tail.join("\n    ")
                ));
            }
        }
        Ok(())
    }

    /// Waits until the peer answers on its control socket (before its
    /// onion service is published); the time since its process started.
    fn wait_peer_ready(&mut self, who: usize) -> Result<Duration, String> {
        let home = self.peers[who].home.clone();
        let what = format!("{} to publish its onion service", self.peers[who].name);
        self.wait(&what, |d| d.cli(&home, &["status"]).ok().map(|_| ()))?;
        Ok(self.peers[who].started_at.elapsed())
    }

    /// Waits until the server and every peer say they are online (their
    /// onion service is published); the time each took from its start.
    /// All are watched at once, so that none is timed late for waiting
    /// behind another.
    fn wait_all_online(&mut self) -> Result<Vec<Duration>, String> {
        let parties: Vec<(PathBuf, Instant)> = std::iter::once(&self.server)
            .chain(self.peers.iter())
            .map(|d| (d.log.clone(), d.started_at))
            .collect();
        let mut seen: Vec<Option<Duration>> = vec![None; parties.len()];
        self.wait("every daemon to publish its onion service", |_| {
            for ((log, started), seen) in parties.iter().zip(seen.iter_mut()) {
                if seen.is_none() && std::fs::read(log).is_ok_and(|t| contains(&t, b"is online")) {
                    *seen = Some(started.elapsed());
                }
            }
            seen.iter().all(Option::is_some).then_some(())
        })?;
        Ok(seen.into_iter().flatten().collect())
    }

    fn wait_server_ready(&mut self, since_len: u64) -> Result<Duration, String> {
        let log = self.server.log.clone();
        self.wait("the server to publish its onion service", |_| {
            let text = std::fs::read(&log).ok()?;
            let new = text.get(usize::try_from(since_len).ok()?..)?;
            contains(new, b"is online").then_some(())
        })?;
        Ok(self.server.started_at.elapsed())
    }

    fn log_len(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    fn script(&mut self) -> Result<(), String> {
        let step = |n: u32, text: &str| println!("\n[{n}] {text}");
        let kind = if self.dev { "dev TCP" } else { "Tor" };

        // Identities.
        step(2, "creating a server and three profiles: alice, bob, carol");
        let v = self.cli(&self.server.home, &["server", "init"])?;
        self.server_string = v["server"].as_str().unwrap_or_default().to_string();
        println!("    server: {}", self.server_string);
        for i in 0..3 {
            let name = self.peers[i].name.clone();
            let v = self.cli(&self.peers[i].home, &["init", "--name", &name])?;
            let address = v["address"].as_str().unwrap_or_default().to_string();
            println!("    {name:<5}: {address}");
            self.names.insert(address.clone(), name);
            self.addresses.push(address);
        }

        // Daemons.
        step(
            3,
            &format!("starting 4 cwtch-node processes, each on its own {kind} client"),
        );
        let exe = self.exe.clone();
        self.server.start(&exe)?;
        for p in &mut self.peers {
            p.start(&exe)?;
        }
        let times = self.wait_all_online()?;
        let names =
            std::iter::once("server".to_string()).chain(self.peers.iter().map(|p| p.name.clone()));
        for (name, t) in names.zip(times) {
            println!("    {name} reachable after {}", secs(t));
            self.timings
                .push((format!("{name} start → reachable onion"), secs(t)));
        }
        if self.arti {
            // What carol's daemon says it runs on: the built-in Tor.
            let log = std::fs::read_to_string(&self.peers[CAROL].log).unwrap_or_default();
            let tor = log
                .lines()
                .find(|l| l.starts_with("tor: "))
                .ok_or("carol's daemon did not say which Tor it uses")?;
            println!("    carol's {}", crate::cli::format::safe(tor));
        }
        let (alice, bob, carol) = (
            self.addresses[ALICE].clone(),
            self.addresses[BOB].clone(),
            self.addresses[CAROL].clone(),
        );

        // Contacts.
        step(4, "alice sends contact requests to bob and carol");
        self.peer_cli(
            ALICE,
            &["contact", "add", &bob, "--message", "hi bob, it's alice"],
        )?;
        self.peer_cli(
            ALICE,
            &[
                "contact",
                "add",
                &carol,
                "--message",
                "hi carol, it's alice",
            ],
        )?;
        let t0 = Instant::now();
        for who in [BOB, CAROL] {
            let name = self.peers[who].name.clone();
            let first = self.wait(&format!("{name} to see alice's request"), |d| {
                let list = d.peer_cli(who, &["contact", "list"]).ok()?;
                let e = list
                    .as_array()?
                    .iter()
                    .find(|e| e["contact"]["address"] == alice.as_str())?
                    .clone();
                let state = e["contact"]["state"].as_str()?.to_string();
                let m = d.messages(who, &alice);
                Some((state, m.first()?.text.clone()))
            })?;
            println!(
                "    {name} sees alice as '{}' with her first message: \"{}\" ({} after sending)",
                first.0,
                first.1,
                secs(t0.elapsed())
            );
            self.peer_cli(who, &["contact", "accept", &alice])?;
            println!("    {name} accepts alice");
        }

        // Chat.
        step(5, "alice and bob chat; delivery status is honest");
        let t0 = Instant::now();
        let m = self.peer_cli(ALICE, &["send", &bob, "how are you, bob?"])?;
        println!(
            "    alice → bob \"how are you, bob?\"  status: {}",
            m["status"].as_str().unwrap_or("?")
        );
        self.wait("alice's message to be delivered", |d| {
            d.messages(ALICE, &bob)
                .iter()
                .any(|m| m.text == "how are you, bob?" && m.status == "delivered")
                .then_some(())
        })?;
        println!(
            "                                   status: delivered ({})",
            secs(t0.elapsed())
        );
        self.peer_cli(BOB, &["send", &alice, "fine, thanks! over onion services"])?;
        self.wait("bob's reply to arrive", |d| {
            d.messages(ALICE, &bob)
                .iter()
                .any(|m| m.text == "fine, thanks! over onion services")
                .then_some(())
        })?;
        println!("    bob → alice \"fine, thanks! over onion services\"  received by alice");
        self.report_states(true);

        // Group.
        step(
            6,
            "alice creates the group 'friends' on the server and invites bob and carol",
        );
        let server_string = self.server_string.clone();
        self.peer_cli(
            ALICE,
            &["group", "create", "friends", "--server", &server_string],
        )?;
        let groups = self.peer_cli(ALICE, &["group", "list"])?;
        let group_id = groups
            .as_array()
            .and_then(|l| l.iter().find(|g| g["name"] == "friends"))
            .and_then(|g| g["id"].as_str())
            .unwrap_or_default()
            .to_string();
        println!("    group id (known to members only): {group_id}");
        for who in [BOB, CAROL] {
            self.peer_cli(ALICE, &["group", "invite", "friends", &self.addresses[who]])?;
        }
        for who in [BOB, CAROL] {
            let name = self.peers[who].name.clone();
            self.wait(&format!("the invite to reach {name}"), |d| {
                let l = d.peer_cli(who, &["group", "invites"]).ok()?;
                l.as_array()?
                    .iter()
                    .any(|i| i["group"] == group_id.as_str())
                    .then_some(())
            })?;
            println!("    {name} received the invite over the peer link: it waits for an answer");
            self.peer_cli(who, &["group", "accept", "friends"])?;
            self.wait(&format!("{name} to join friends"), |d| {
                let l = d.peer_cli(who, &["group", "list"]).ok()?;
                l.as_array()?
                    .iter()
                    .any(|g| g["id"] == group_id.as_str())
                    .then_some(())
            })?;
            println!("    {name} accepted it and joined");
        }
        let mut posted: Vec<(usize, String)> = Vec::new();
        for (who, text) in [
            (ALICE, "welcome to friends!"),
            (BOB, "thanks alice"),
            (CAROL, "hello everyone"),
        ] {
            self.post(who, text, &mut posted)?;
        }
        self.wait_all_see(&posted, &[ALICE, BOB, CAROL])?;
        println!("    all three members see the 3 messages");
        self.report_states(true);

        // Carol offline.
        step(
            7,
            "carol goes offline (her process is killed); the others go on",
        );
        self.peers[CAROL].kill9();
        println!("    carol's cwtch-node stopped");
        let offline_start = posted.len();
        for (who, text) in [
            (ALICE, "carol is away, let's plan the trip"),
            (BOB, "saturday at 10?"),
            (ALICE, "saturday at 10 it is"),
            (BOB, "I'll bring the map"),
        ] {
            self.post(who, text, &mut posted)?;
        }
        self.wait_delivered(ALICE, "friends", &posted)?;
        self.wait_delivered(BOB, "friends", &posted)?;
        println!("    4 messages posted and acknowledged by the server while carol is away");
        self.peer_cli(ALICE, &["send", &carol, "call me when you're back"])?;
        println!(
            "    alice → carol \"call me when you're back\"  status: pending (carol is offline)"
        );
        self.report_states(true);
        step(8, "carol comes back and catches up");
        let t0 = Instant::now();
        self.peers[CAROL].start(&exe)?;
        self.wait_peer_ready(CAROL)?;
        println!("    carol online again after {}", secs(t0.elapsed()));
        self.wait_all_see(&posted, &[CAROL])?;
        println!(
            "    carol has all {} group messages ({} after restart)",
            posted.len(),
            secs(t0.elapsed())
        );
        self.wait("alice's message to carol to be delivered", |d| {
            d.messages(ALICE, &carol)
                .iter()
                .any(|m| m.text == "call me when you're back" && m.status == "delivered")
                .then_some(())
        })?;
        println!(
            "    alice → carol \"call me when you're back\"  status: delivered ({} after carol's restart)",
            secs(t0.elapsed())
        );
        let carol_order_ok = self.order_ok(CAROL, &posted);
        let offline_texts: Vec<String> = posted[offline_start..]
            .iter()
            .map(|p| p.1.clone())
            .collect();
        let carol_has_offline = {
            let v = self.group(CAROL);
            offline_texts.iter().all(|t| v.iter().any(|m| &m.text == t))
        };
        self.report_states(true);

        // Server crash.
        step(9, "posts right before the server is killed with SIGKILL");
        let before_crash = posted.len();
        for (who, text) in [
            (BOB, "last words before the crash: 1"),
            (CAROL, "last words before the crash: 2"),
            (ALICE, "last words before the crash: 3"),
        ] {
            self.post(who, text, &mut posted)?;
        }
        for who in [ALICE, BOB, CAROL] {
            self.wait_delivered(who, "friends", &posted)?;
        }
        let acknowledged: Vec<String> =
            posted[before_crash..].iter().map(|p| p.1.clone()).collect();
        println!("    3 posts acknowledged by the server as durable");
        self.server.kill9();
        println!("    server killed with SIGKILL (no clean shutdown)");
        self.report_states(true);
        let t0 = Instant::now();
        let len = Self::log_len(&self.server.log);
        self.server.start(&exe)?;
        let t = self.wait_server_ready(len)?;
        println!("    server restarted; reachable after {}", secs(t));
        self.post(BOB, "the server is back", &mut posted)?;
        self.wait_all_see(&posted, &[ALICE, BOB, CAROL])?;
        println!(
            "    every member sees all {} messages again ({} after the restart)",
            posted.len(),
            secs(t0.elapsed())
        );
        let ack_survived = [ALICE, BOB, CAROL].iter().all(|&w| {
            let v = self.group(w);
            acknowledged.iter().all(|t| v.iter().any(|m| &m.text == t))
        });
        self.report_states(true);

        // Latency.
        step(
            10,
            &format!("latency: {LATENCY_PROBES} messages alice → bob over {kind}, one at a time"),
        );
        let latencies = self.latency(&alice)?;
        let p = |q: f64| {
            let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies[i.min(latencies.len() - 1)]
        };
        let (p50, p99) = (p(0.5), p(0.99));
        println!(
            "    send → received by bob: p50 {}, p99 {}, min {}, max {} (includes starting the cli process)",
            ms(p50),
            ms(p99),
            ms(latencies[0]),
            ms(latencies[latencies.len() - 1])
        );
        self.timings
            .push((format!("message latency p50 ({kind})"), ms(p50)));
        self.timings
            .push((format!("message latency p99 ({kind})"), ms(p99)));

        // What each party learned.
        step(11, "what each party learned");
        let views: Vec<Vec<Msg>> = (0..3).map(|w| self.group(w)).collect();
        for (w, view) in views.iter().enumerate() {
            println!(
                "    {}'s view of 'friends' ({} messages):",
                self.peers[w].name,
                view.len()
            );
            for m in view {
                println!(
                    "      {:>5}: {}  [{}]",
                    self.name(&m.author),
                    m.text,
                    m.status
                );
            }
        }
        // Stop everything before reading the server's files.
        let mut texts: Vec<String> = posted.iter().map(|p| p.1.clone()).collect();
        for w in 0..3 {
            for c in &self.addresses {
                texts.extend(self.messages(w, c).into_iter().map(|m| m.text));
            }
        }
        texts.sort();
        texts.dedup();
        self.stop_all();
        let server = self.server_view(&group_id, &texts)?;
        println!("    the server's view (all processes stopped, files read raw):");
        println!("      blobs stored: {}", server.count);
        let sizes: Vec<String> = server.sizes.iter().map(i64::to_string).collect();
        println!(
            "      blob sizes: {} bytes{}",
            sizes.join(", "),
            if server.sizes.len() == 1 {
                " (all the same)"
            } else {
                ""
            }
        );
        println!(
            "      searched its {} files and its log ({} bytes) for the group id, {} addresses (text and key bytes) and {} message texts: {}",
            server.files - 1,
            server.bytes,
            self.addresses.len(),
            texts.len(),
            if server.found.is_empty() {
                "none found".to_string()
            } else {
                format!("FOUND {}", server.found.join(", "))
            }
        );

        // Checks.
        step(12, "checks");
        let sets: Vec<BTreeSet<(String, String)>> = views
            .iter()
            .map(|v| {
                v.iter()
                    .map(|m| (m.author.clone(), m.text.clone()))
                    .collect()
            })
            .collect();
        let expected: BTreeSet<(String, String)> = posted
            .iter()
            .map(|(w, t)| (self.addresses[*w].clone(), t.clone()))
            .collect();
        let checks = [
            (
                "all members hold the same group history (same set of (author, text))",
                sets.iter().all(|s| *s == expected)
                    && views.iter().all(|v| v.len() == expected.len()),
            ),
            (
                "carol caught up after being offline, each author's messages in order",
                carol_has_offline && carol_order_ok,
            ),
            (
                "no acknowledged message lost across the server's SIGKILL and restart",
                ack_survived,
            ),
            (
                "the server holds at least one blob per message",
                server.count >= posted.len() as i64,
            ),
            (
                "every blob on the server has one size (2048 bytes)",
                server.sizes == [BLOB_SIZE],
            ),
            (
                "the server's files contain no group id, sender address or message text",
                server.found.is_empty(),
            ),
        ];
        let mut failed = Vec::new();
        for (what, ok) in checks {
            println!("    [{}] {what}", if ok { "ok" } else { "FAILED" });
            if !ok {
                failed.push(what);
            }
        }

        println!("\n=== summary ===");
        if self.dev {
            println!("transport: development TCP on loopback, NOT anonymous");
        } else {
            println!(
                "transport: private Tor network on loopback (3 authorities, 2 relays, 4 clients)"
            );
        }
        for (what, t) in &self.timings {
            println!("  {what:<55} {t}");
        }
        println!("  {:<55} {}", "whole demo", secs(self.started.elapsed()));
        if !failed.is_empty() {
            return Err(format!(
                "{} check(s) failed: {}",
                failed.len(),
                failed.join("; ")
            ));
        }
        println!("demo complete: all {} checks passed", checks.len());
        Ok(())
    }

    fn post(
        &mut self,
        who: usize,
        text: &str,
        posted: &mut Vec<(usize, String)>,
    ) -> Result<(), String> {
        let m = self.peer_cli(who, &["group", "send", "friends", text])?;
        println!(
            "    {} → friends: \"{text}\"  status: {}",
            self.peers[who].name,
            m["status"].as_str().unwrap_or("?")
        );
        posted.push((who, text.to_string()));
        Ok(())
    }

    /// Waits until every message `who` posted in `posted` is delivered.
    fn wait_delivered(
        &mut self,
        who: usize,
        conv: &str,
        posted: &[(usize, String)],
    ) -> Result<(), String> {
        let mine: Vec<String> = posted
            .iter()
            .filter(|p| p.0 == who)
            .map(|p| p.1.clone())
            .collect();
        let name = self.peers[who].name.clone();
        self.wait(&format!("the server to acknowledge {name}'s posts"), |d| {
            let v = d.messages(who, conv);
            mine.iter()
                .all(|t| v.iter().any(|m| &m.text == t && m.status == "delivered"))
                .then_some(())
        })
    }

    fn wait_all_see(&mut self, posted: &[(usize, String)], who: &[usize]) -> Result<(), String> {
        for &w in who {
            let name = self.peers[w].name.clone();
            self.wait(&format!("{name} to see every group message"), |d| {
                let v = d.group(w);
                posted
                    .iter()
                    .all(|p| v.iter().any(|m| m.text == p.1))
                    .then_some(())
            })?;
        }
        Ok(())
    }

    /// Each author's messages appear in `who`'s view in the order posted.
    fn order_ok(&self, who: usize, posted: &[(usize, String)]) -> bool {
        let view = self.group(who);
        (0..3).all(|author| {
            let want: Vec<&String> = posted
                .iter()
                .filter(|p| p.0 == author)
                .map(|p| &p.1)
                .collect();
            let got: Vec<&String> = view
                .iter()
                .filter(|m| m.author == self.addresses[author])
                .map(|m| &m.text)
                .collect();
            want == got
        })
    }

    /// Times `LATENCY_PROBES` messages alice → bob, watching bob's
    /// conversation with `messages --follow`; sorted.
    fn latency(&mut self, alice: &str) -> Result<Vec<Duration>, String> {
        use std::os::unix::process::CommandExt;
        let mut follow = Command::new(&self.exe)
            .arg("--home")
            .arg(&self.peers[BOB].home)
            .args(["--json", "messages", alice, "--follow"])
            .env("CWTCH_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot follow bob's messages: {e}"))?;
        cleanup_state().groups.push(follow.id());
        let (tx, rx) = mpsc::channel::<(Instant, String)>();
        if let Some(out) = follow.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send((Instant::now(), line)).is_err() {
                        break;
                    }
                }
            });
        }
        let bob = self.addresses[BOB].clone();
        let mut out = Vec::new();
        let result = (|| {
            for i in 0..LATENCY_PROBES {
                let text = format!("latency probe {i}");
                let t0 = Instant::now();
                self.peer_cli(ALICE, &["send", &bob, &text])?;
                loop {
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok((at, line)) => {
                            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                            if v["text"] == text.as_str() && v["status"] == "received" {
                                out.push(at.duration_since(t0));
                                break;
                            }
                        }
                        Err(_) => {
                            // The stream may have ended: fall back to polling.
                            if self.messages(BOB, alice).iter().any(|m| m.text == text) {
                                out.push(t0.elapsed());
                                break;
                            }
                        }
                    }
                    if t0.elapsed() > STEP_LIMIT {
                        return Err(format!("timed out waiting for bob to receive \"{text}\""));
                    }
                }
            }
            Ok(())
        })();
        let pid = follow.id();
        kill(pid, true);
        let _ = follow.kill();
        let _ = follow.wait();
        cleanup_state().groups.retain(|&g| g != pid);
        result?;
        out.sort();
        Ok(out)
    }

    /// Reads the server's home: the blob table and every file's raw bytes.
    fn server_view(&self, group_id: &str, texts: &[String]) -> Result<ServerView, String> {
        let home = &self.server.home;
        // The raw files first, exactly as the server left them (opening
        // the database would fold its write-ahead log into it).
        let mut needles: Vec<(String, Vec<u8>)> = vec![
            ("the group id (hex)".into(), group_id.as_bytes().to_vec()),
            (
                "the group id (hex, upper case)".into(),
                group_id.to_uppercase().into_bytes(),
            ),
        ];
        if let Some(raw) = unhex(group_id) {
            needles.push(("the group id (bytes)".into(), raw));
        }
        for a in &self.addresses {
            let name = self.name(a);
            needles.push((format!("{name}'s address"), a.as_bytes().to_vec()));
            if let Ok(onion) = cwtch_proto::OnionAddress::parse(a) {
                needles.push((
                    format!("{name}'s public key bytes"),
                    onion.public_identity().as_bytes().to_vec(),
                ));
            }
        }
        for t in texts {
            needles.push((format!("the text \"{t}\""), t.as_bytes().to_vec()));
        }
        let mut files = 0;
        let mut bytes = 0;
        let mut found = Vec::new();
        // Every file of the server's home, and its log.
        let mut paths = vec![self.server.log.clone()];
        let mut stack = vec![home.clone()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    paths.push(path);
                }
            }
        }
        for path in paths {
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            files += 1;
            bytes += data.len();
            for (what, needle) in &needles {
                if contains(&data, needle) {
                    found.push(format!("{what} in {}", path.display()));
                }
            }
        }
        // Every blob the server stores, read back as the server reads it.
        let reader = crate::blob_store::BlobReader::open(home.join(crate::server::BLOBS_DIR))
            .map_err(|e| format!("cannot open the server's blob store: {e}"))?;
        let (mut count, mut sizes, mut cursor) = (0i64, Vec::new(), 0u64);
        loop {
            let page = reader
                .read_after(cursor, crate::blob_store::MAX_READ_LIMIT)
                .map_err(|e| format!("the server's blob store: {e}"))?;
            let Some((last, _)) = page.last() else { break };
            cursor = *last;
            for (_, blob) in &page {
                count += 1;
                let len = blob.len() as i64;
                if !sizes.contains(&len) {
                    sizes.push(len);
                }
            }
        }
        sizes.sort_unstable();

        Ok(ServerView {
            count,
            sizes,
            files,
            bytes,
            found,
        })
    }
}

struct ServerView {
    count: i64,
    sizes: Vec<i64>,
    files: usize,
    bytes: usize,
    found: Vec<String>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_search_and_hex() {
        assert!(contains(b"abcdef", b"cde"));
        assert!(!contains(b"abcdef", b"xyz"));
        assert!(!contains(b"abc", b""));
        assert_eq!(unhex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
