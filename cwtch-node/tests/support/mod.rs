//! Real `cwtch-node` processes for end-to-end tests: started in their own
//! process group, killed by pid when dropped (also when a test panics).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const PASSWORD: &str = "correct horse battery staple";

/// The `cwtch-node` binary under test: this build's, or the one named by
/// `CWTCH_NODE_BIN` (to run a test against another build, e.g. to show
/// that a new test fails on the code before a fix).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("CWTCH_NODE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cwtch-node").into())
    })
}

/// Runs a one-shot command with `--json` and returns the parsed result.
pub fn cli(home: &Path, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(bin())
        .arg("--home")
        .arg(home)
        .arg("--json")
        .args(args)
        .env("CWTCH_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("null");
    serde_json::from_str(last).map_err(|e| format!("{e}: {text}"))
}

/// A running daemon.
pub struct Daemon {
    child: Child,
    pub home: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `cwtch-node run` (or `server run`) with `transport` flags.
    pub fn start(home: &Path, server: bool, transport: &[String]) -> Daemon {
        Daemon::start_with_env(home, server, transport, &[])
    }

    /// [`Daemon::start`] with extra environment variables (e.g. `RUST_LOG`).
    pub fn start_with_env(
        home: &Path,
        server: bool,
        transport: &[String],
        env: &[(&str, &str)],
    ) -> Daemon {
        Daemon::spawn(home, server, transport, env, true)
    }

    /// [`Daemon::start`] at the daemon's default log level: no `-v`, no
    /// `RUST_LOG`.
    pub fn start_quiet(home: &Path, server: bool, transport: &[String]) -> Daemon {
        Daemon::spawn(home, server, transport, &[], false)
    }

    fn spawn(
        home: &Path,
        server: bool,
        transport: &[String],
        env: &[(&str, &str)],
        verbose: bool,
    ) -> Daemon {
        use std::os::unix::process::CommandExt;
        let log = home.with_extension(format!("{}.log", std::process::id()));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new(bin());
        cmd.arg("--home").arg(home);
        if verbose {
            cmd.arg("-v");
        } else {
            cmd.env_remove("RUST_LOG");
        }
        if server {
            cmd.arg("server");
        }
        cmd.arg("run")
            .args(transport)
            .env("CWTCH_PASSWORD", PASSWORD)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .process_group(0);
        let child = cmd.spawn().expect("spawn cwtch-node");
        Daemon {
            child,
            home: home.to_path_buf(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `rustix::process::Signal::TERM`) to the daemon.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("a pid");
        rustix::process::kill_process(pid, signal).expect("signal the daemon");
    }

    /// SIGTERM, then waits up to `limit` for the daemon to exit: its exit
    /// status, or None if it is still running.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.signal(rustix::process::Signal::TERM);
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        // A failing test shows what each of its daemons logged last.
        if std::thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("---- {} (tail) ----\n{tail}", self.log.display());
        }
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The texts of a conversation as `(outgoing, text, status)`.
pub fn conversation(home: &Path, with: &str) -> Vec<(bool, String, String)> {
    match cli(home, &["messages", with]) {
        Ok(Value::Array(list)) => list
            .iter()
            .map(|m| {
                (
                    m["outgoing"].as_bool().unwrap_or(false),
                    m["text"].as_str().unwrap_or_default().to_string(),
                    m["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The entries of `contact list` (none while the daemon does not answer).
pub fn contacts(home: &Path) -> Vec<Value> {
    match cli(home, &["contact", "list"]) {
        Ok(Value::Array(list)) => list,
        _ => Vec::new(),
    }
}

/// The daemon answers on its control socket.
pub fn wait_ready(home: &Path) -> String {
    wait_for(
        "the daemon's control socket",
        Duration::from_secs(120),
        || {
            cli(home, &["status"]).ok()?["address"]
                .as_str()
                .map(str::to_string)
        },
    )
}

/// Creates a profile and returns its address.
pub fn init(home: &Path, name: &str) -> String {
    let v = cli(home, &["init", "--name", name]).expect("init");
    v["address"].as_str().expect("address").to_string()
}

/// Waits until the invite to `group` reaches `home`, then accepts it (an
/// invite is joined only when the user says so).
pub fn accept_invite(home: &Path, group: &str, limit: Duration) {
    wait_for(&format!("the invite to {group}"), limit, || {
        cli(home, &["group", "accept", group]).ok().map(|_| ())
    });
}

/// The debug forms of values (`Error(Truncated)`, `Some("x")`,
/// `RateLimited { retry_after_ms: 9 }`) found in `text`: what people read
/// must never show one.
pub fn debug_forms(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut found = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        let start = chars[..i]
            .iter()
            .rposition(|&p| !is_ident(p))
            .map_or(0, |p| p + 1);
        let ident: String = chars[start..i].iter().collect();
        let upper = ident.starts_with(|c: char| c.is_ascii_uppercase()) && ident.len() >= 2;
        let next = chars.get(i + 1).copied().unwrap_or(' ');
        let tuple = c == '(' && upper && (next.is_ascii_uppercase() || next == '"');
        // `Name { field: ` (a struct's debug form).
        let field: String = chars
            .get(i + 3..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&c| is_ident(c))
            .collect();
        let structure = c == ' '
            && next == '{'
            && upper
            && !field.is_empty()
            && chars.get(i + 2) == Some(&' ')
            && chars.get(i + 3 + field.len()) == Some(&':');
        if tuple || structure {
            let end = (i + 24).min(chars.len());
            found.push(chars[start..end].iter().collect());
        }
    }
    found
}
