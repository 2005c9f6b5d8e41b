//! A private Tor network on loopback, for tests that carry bytes through
//! real onion services without the internet.
//!
//! [`TestNetwork::start`] launches 3 directory authorities (also relays), 2
//! relays and `n` client tors (their `SocksPort` with `ExtendedErrors`, as
//! every tor we launch), each on free 127.0.0.1 ports, in a temporary
//! directory, and returns once every client reports 100 % bootstrap on its
//! control port. Every process runs in its own process group and is
//! stopped by its own pid when the network is dropped, also while a test
//! panics (then the tail of each tor's log is printed). Every tor also
//! carries `__OwningControllerProcess <our pid>`, so it exits by itself
//! should the test process be killed outright.
//!
//! Facts this builds on: `shared/tor-testnet.md` (torrc lines, key
//! generation, timings).

use core::fmt;
use core::net::{Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::control::{ControlAuth, ControlConnection, ControlError};
use crate::launch::verify_config;
use crate::process::ProcessGuard;
use crate::transport::TorTransport;

/// Number of directory authorities (each also a relay).
pub const AUTHORITIES: usize = 3;
/// Number of plain relays. An onion service needs at least 5 relays.
pub const RELAYS: usize = 2;
/// Default time allowed for every client to bootstrap.
pub const DEFAULT_BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(120);

/// How to shape the network: [`TestNetworkOptions::default`] is what
/// [`TestNetwork::start`] uses; [`TestNetworkOptions::arti_compatible`] is
/// a network on which arti and C tor can reach each other's onion
/// services (see `cwtch-transport-arti/README.md` for why each setting).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TestNetworkOptions {
    /// Client tors to start (each with a SOCKS and a control port).
    pub clients: usize,
    /// Plain relays besides the [`AUTHORITIES`] (which are relays too).
    pub relays: usize,
    /// `V3AuthVotingInterval`, seconds: one consensus per interval. It also
    /// sets C tor's onion-service time period on a test network (24
    /// intervals) and the rotation offset (12 intervals).
    pub voting_interval: u32,
    /// `TestingV3AuthInitialVotingInterval`, seconds: the interval until
    /// the authorities have their first consensus.
    pub initial_voting_interval: u32,
    /// `ConsensusParams` the authorities vote for, e.g. `hsdir_interval=6`.
    pub consensus_params: Vec<String>,
    /// `BandwidthRate` and `BandwidthBurst` (bytes/s) of every relay and
    /// authority, or tor's default.
    pub relay_bandwidth: Option<u64>,
    /// Extra torrc lines for the authorities only (how they vote).
    pub authority_torrc: Vec<String>,
    /// Time allowed for every client to bootstrap.
    pub timeout: Duration,
}

impl Default for TestNetworkOptions {
    fn default() -> Self {
        TestNetworkOptions {
            clients: 0,
            relays: RELAYS,
            voting_interval: 10,
            initial_voting_interval: 6,
            consensus_params: Vec::new(),
            relay_bandwidth: None,
            authority_torrc: Vec::new(),
            timeout: DEFAULT_BOOTSTRAP_TIMEOUT,
        }
    }
}

impl TestNetworkOptions {
    /// The default network with `clients` client tors.
    pub fn with_clients(clients: usize) -> Self {
        TestNetworkOptions {
            clients,
            ..Self::default()
        }
    }

    /// A network where arti (`cwtch-transport-arti`) and C tor agree on
    /// onion services: a 15 s voting interval from the start, so C tor's
    /// test-network time period (24 intervals = 6 minutes) is one arti can
    /// be told about and accepts (5 minutes or more), and the
    /// authorities publish it as `hsdir_interval=6` (the name arti reads);
    /// `cbtdisabled=1` so arti keeps fixed circuit timeouts instead of
    /// learning loopback build times of a few milliseconds; every relay
    /// voted `Stable` from the start (`AuthDirVoteStableGuaranteeMinUptime
    /// 0`), because arti builds onion-service circuits through Stable
    /// relays only and tor gives the flag to relays at or above the median
    /// uptime, which on a network started within a second leaves some
    /// relays out and arti short of a 4-relay introduction circuit.
    pub fn arti_compatible(clients: usize) -> Self {
        TestNetworkOptions {
            clients,
            voting_interval: 15,
            initial_voting_interval: 15,
            consensus_params: vec!["hsdir_interval=6".into(), "cbtdisabled=1".into()],
            authority_torrc: vec!["AuthDirVoteStableGuaranteeMinUptime 0".into()],
            ..Self::default()
        }
    }

    /// The onion-service time period C tor uses on this network, in
    /// minutes (24 voting intervals, rounded down as tor does).
    pub fn hs_time_period_minutes(&self) -> u32 {
        24 * self.voting_interval / 60
    }

    /// The torrc lines every node carries (besides `DirAuthority`).
    fn common_torrc(&self) -> Vec<String> {
        let mut lines: Vec<String> = COMMON_TORRC
            .iter()
            .map(|l| (*l).to_owned())
            .filter(|l| {
                !l.starts_with("TestingV3AuthInitialVotingInterval ")
                    && !l.starts_with("V3AuthVotingInterval ")
            })
            .collect();
        lines.push(format!(
            "TestingV3AuthInitialVotingInterval {}",
            self.initial_voting_interval
        ));
        lines.push(format!("V3AuthVotingInterval {}", self.voting_interval));
        lines
    }
}

/// One directory authority of the network, as a client outside tor (such
/// as arti) needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorityInfo {
    /// Nickname, e.g. `auth0`.
    pub name: String,
    /// Its ORPort (it is a relay too).
    pub or_addr: SocketAddr,
    /// Its DirPort.
    pub dir_addr: SocketAddr,
    /// v3 identity: the `fingerprint` line of its authority certificate
    /// (40 hex digits).
    pub v3ident: String,
    /// Its relay's RSA identity fingerprint (40 hex digits).
    pub fingerprint: String,
    /// The tor's data directory (where `fingerprint-ed25519` appears).
    pub data_dir: PathBuf,
}

impl AuthorityInfo {
    /// Its relay's ed25519 identity, base64 without padding as in tor's
    /// `fingerprint-ed25519` file, which tor writes once it runs.
    pub fn ed25519_identity(&self) -> io::Result<String> {
        let text = std::fs::read_to_string(self.data_dir.join("fingerprint-ed25519"))?;
        text.split_whitespace()
            .nth(1)
            .map(str::to_owned)
            .ok_or_else(|| io::Error::other("fingerprint-ed25519 has no key"))
    }
}

/// torrc lines every node of the network carries (besides the
/// `DirAuthority` lines); also what an extra tor needs to join.
pub const COMMON_TORRC: &[&str] = &[
    "TestingTorNetwork 1",
    "RunAsDaemon 0",
    "ShutdownWaitLength 0",
    "SafeLogging 0",
    "AssumeReachable 1",
    "PathsNeededToBuildCircuits 0.25",
    "TestingDirAuthVoteExit *",
    "TestingDirAuthVoteHSDir *",
    "TestingDirAuthVoteGuard *",
    "TestingMinExitFlagThreshold 0",
    "V3AuthNIntervalsValid 2",
    "TestingV3AuthInitialVotingInterval 6",
    "TestingV3AuthInitialVoteDelay 2",
    "TestingV3AuthInitialDistDelay 2",
    "V3AuthVotingInterval 10",
    "V3AuthVoteDelay 2",
    "V3AuthDistDelay 2",
    // Vanguards-lite pins onion-service circuits' second hop to a few
    // relays; in a 5-relay network those often collide with the rest of
    // the path ("Could not find a node that matches the configured
    // _HSLayer2Nodes set") and onion connections fail for minutes. A
    // test-network setting only: production tor keeps its default.
    "VanguardsLiteEnabled 0",
];

/// What went wrong starting the network.
#[derive(Debug)]
#[non_exhaustive]
pub enum TestNetError {
    /// `tor` or `tor-gencert` cannot be run: install the `tor` package.
    TorMissing(String),
    /// File or process I/O failed.
    Io(io::Error),
    /// Generating an authority's keys failed.
    KeyGen(String),
    /// A tor exited during start-up.
    Died {
        /// The node's nickname.
        node: String,
        /// What `tor --verify-config` says, or the log tail.
        diagnosis: String,
    },
    /// Clients did not bootstrap in time.
    Timeout {
        /// Progress of each client at the deadline.
        progress: String,
    },
    /// Talking to a client's control port failed.
    Control(ControlError),
}

impl fmt::Display for TestNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestNetError::TorMissing(e) => write!(f, "tor not usable ({e}); apt-get install tor"),
            TestNetError::Io(e) => write!(f, "test network I/O: {e}"),
            TestNetError::KeyGen(e) => write!(f, "authority key generation failed: {e}"),
            TestNetError::Died { node, diagnosis } => {
                write!(f, "tor {node} exited at start: {diagnosis}")
            }
            TestNetError::Timeout { progress } => {
                write!(f, "clients did not bootstrap in time: {progress}")
            }
            TestNetError::Control(e) => write!(f, "client control port: {e}"),
        }
    }
}

impl core::error::Error for TestNetError {}

impl From<io::Error> for TestNetError {
    fn from(e: io::Error) -> Self {
        TestNetError::Io(e)
    }
}

impl From<ControlError> for TestNetError {
    fn from(e: ControlError) -> Self {
        TestNetError::Control(e)
    }
}

/// One client tor of the network.
#[derive(Clone, Debug)]
pub struct TorClient {
    /// Nickname, e.g. `client0`.
    pub name: String,
    /// SOCKS5 address.
    pub socks_addr: SocketAddr,
    /// Control port address.
    pub control_addr: SocketAddr,
    /// Cookie file for the control port.
    pub cookie_path: PathBuf,
    /// The tor's data directory.
    pub data_dir: PathBuf,
    /// The tor's pid.
    pub pid: u32,
}

impl TorClient {
    /// Control port authentication for this client.
    pub fn auth(&self) -> ControlAuth {
        ControlAuth::Cookie(self.cookie_path.clone())
    }

    /// A transport over this client.
    pub fn transport(&self) -> TorTransport {
        TorTransport::new(self.socks_addr, self.control_addr, self.auth())
    }
}

struct Node {
    name: String,
    dir: PathBuf,
    torrc: PathBuf,
    process: Option<ProcessGuard>,
}

/// A running private Tor network; stopped on drop. See the module docs.
pub struct TestNetwork {
    // Declared before `dir` so processes stop before the files go.
    nodes: Vec<Node>,
    clients: Vec<TorClient>,
    authorities: Vec<AuthorityInfo>,
    dir_authorities: Vec<String>,
    common_torrc: Vec<String>,
    options: TestNetworkOptions,
    startup: Duration,
    dir: Option<tempfile::TempDir>,
    empty: PathBuf,
}

impl fmt::Debug for TestNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestNetwork")
            .field("clients", &self.clients)
            .field("pids", &self.pids())
            .field("startup", &self.startup)
            .finish()
    }
}

fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    // Hold every listener until all are bound, so the ports are distinct.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<_>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

fn make_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

fn check_tools() -> Result<(), TestNetError> {
    for (tool, arg) in [("tor", "--version"), ("tor-gencert", "--help")] {
        Command::new(tool)
            .arg(arg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| TestNetError::TorMissing(format!("{tool}: {e}")))?;
    }
    Ok(())
}

/// Creates an authority's v3 keys and relay identity; returns what a
/// client needs to know of it.
fn authority_keys(
    name: &str,
    dir: &Path,
    empty: &Path,
    or_port: u16,
    dir_port: u16,
) -> Result<AuthorityInfo, TestNetError> {
    let keys = dir.join("keys");
    make_dir(&keys)?;
    let mut gencert = Command::new("tor-gencert")
        .args(["--create-identity-key", "-m", "12", "-a"])
        .arg(format!("127.0.0.1:{dir_port}"))
        .args(["--passphrase-fd", "0"])
        .current_dir(&keys)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| TestNetError::TorMissing(format!("tor-gencert: {e}")))?;
    if let Some(mut stdin) = gencert.stdin.take() {
        use std::io::Write;
        stdin.write_all(b"\n")?;
    }
    let out = gencert.wait_with_output()?;
    if !out.status.success() {
        return Err(TestNetError::KeyGen(format!(
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let cert = std::fs::read_to_string(keys.join("authority_certificate"))?;
    let v3ident = cert
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .map(|s| s.trim().to_owned())
        .ok_or_else(|| {
            TestNetError::KeyGen(format!("{name}: no fingerprint in authority_certificate"))
        })?;
    let out = Command::new("tor")
        .arg("--list-fingerprint")
        .arg("--DataDirectory")
        .arg(dir)
        .arg("--ORPort")
        .arg(or_port.to_string())
        .arg("--defaults-torrc")
        .arg(empty)
        .arg("-f")
        .arg(empty)
        .stdin(Stdio::null())
        .output()?;
    let fp_file = std::fs::read_to_string(dir.join("fingerprint")).map_err(|e| {
        TestNetError::KeyGen(format!(
            "{name}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })?;
    let fingerprint = parse_fingerprint(&fp_file)
        .ok_or_else(|| TestNetError::KeyGen(format!("{name}: bad fingerprint file {fp_file:?}")))?;
    Ok(AuthorityInfo {
        name: name.to_owned(),
        or_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, or_port)),
        dir_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, dir_port)),
        v3ident,
        fingerprint,
        data_dir: dir.to_owned(),
    })
}

impl AuthorityInfo {
    /// The `DirAuthority` torrc line for it.
    pub fn dir_authority_line(&self) -> String {
        format!(
            "DirAuthority {} orport={} no-v2 v3ident={} {} {}",
            self.name,
            self.or_addr.port(),
            self.v3ident,
            self.dir_addr,
            self.fingerprint
        )
    }
}

/// Parses tor's `fingerprint` file (`nickname HEX` or `nickname HEX HEX ...`).
pub fn parse_fingerprint(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.next()?;
    let fp: String = words.collect();
    (fp.len() == 40 && fp.bytes().all(|b| b.is_ascii_hexdigit())).then_some(fp)
}

/// Whether a process with this pid exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// The last `lines` lines of the text file at `path` (empty if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl TestNetwork {
    /// Starts the network with `clients` client tors and waits (up to
    /// [`DEFAULT_BOOTSTRAP_TIMEOUT`]) until all are bootstrapped.
    pub fn start(clients: usize) -> Result<Self, TestNetError> {
        Self::start_with_timeout(clients, DEFAULT_BOOTSTRAP_TIMEOUT)
    }

    /// [`TestNetwork::start`] with a chosen bootstrap timeout. Ports are
    /// picked free but released before tor binds them, so another program
    /// can take one meanwhile: if a tor dies at start, the whole network is
    /// started once more on new ports.
    pub fn start_with_timeout(clients: usize, timeout: Duration) -> Result<Self, TestNetError> {
        Self::start_in(None, clients, timeout)
    }

    /// [`TestNetwork::start_with_timeout`] with the network's temporary
    /// directory created inside `parent` (default: the system's), so that
    /// a caller removing `parent` (say, on Ctrl-C while the network still
    /// bootstraps) removes it too.
    pub fn start_in(
        parent: Option<&Path>,
        clients: usize,
        timeout: Duration,
    ) -> Result<Self, TestNetError> {
        let options = TestNetworkOptions {
            timeout,
            ..TestNetworkOptions::with_clients(clients)
        };
        Self::start_with_options_in(parent, &options)
    }

    /// A network shaped by `options` (more relays, another voting
    /// interval, consensus parameters), started as [`TestNetwork::start`]
    /// does.
    pub fn start_with_options(options: &TestNetworkOptions) -> Result<Self, TestNetError> {
        Self::start_with_options_in(None, options)
    }

    /// [`TestNetwork::start_with_options`] inside `parent` (see
    /// [`TestNetwork::start_in`]).
    pub fn start_with_options_in(
        parent: Option<&Path>,
        options: &TestNetworkOptions,
    ) -> Result<Self, TestNetError> {
        match Self::start_once(parent, options) {
            Err(TestNetError::Died { node, diagnosis }) => {
                eprintln!(
                    "testnet: {node} died at start ({diagnosis}); starting again on new ports"
                );
                Self::start_once(parent, options)
            }
            other => other,
        }
    }

    fn start_once(
        parent: Option<&Path>,
        options: &TestNetworkOptions,
    ) -> Result<Self, TestNetError> {
        let clients = options.clients;
        let timeout = options.timeout;
        let started = Instant::now();
        check_tools()?;
        let mut builder = tempfile::Builder::new();
        builder.prefix("cwtch-testnet-");
        let dir = match parent {
            Some(parent) => builder.tempdir_in(parent)?,
            None => builder.tempdir()?,
        };
        let root = dir.path().to_owned();
        let empty = root.join("empty-torrc");
        std::fs::write(&empty, "")?;

        let ports = free_ports(AUTHORITIES * 2 + options.relays + clients * 2)?;
        let mut ports = ports.into_iter();
        let mut next_port = || {
            ports
                .next()
                .ok_or_else(|| io::Error::other("port list exhausted"))
        };

        // Authority keys, in parallel (tor-gencert makes an RSA-3072 key).
        let mut auth_ports = Vec::new();
        for i in 0..AUTHORITIES {
            auth_ports.push((format!("auth{i}"), next_port()?, next_port()?));
        }
        let authorities: Vec<AuthorityInfo> = std::thread::scope(|s| {
            let handles: Vec<_> = auth_ports
                .iter()
                .map(|(name, or_port, dir_port)| {
                    let node_dir = root.join(name);
                    let empty = &empty;
                    s.spawn(move || {
                        make_dir(&node_dir)?;
                        authority_keys(name, &node_dir, empty, *or_port, *dir_port)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(TestNetError::KeyGen("key thread panicked".into())))
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        let dir_authorities: Vec<String> = authorities
            .iter()
            .map(AuthorityInfo::dir_authority_line)
            .collect();
        let common_torrc = options.common_torrc();

        let owner = std::process::id();
        let base = |name: &str, dir: &Path| -> String {
            let mut t = String::new();
            for line in &common_torrc {
                t.push_str(line);
                t.push('\n');
            }
            for line in &dir_authorities {
                t.push_str(line);
                t.push('\n');
            }
            t.push_str(&format!(
                "DataDirectory {d}\nNickname {name}\nLog notice file {d}/notice.log\n__OwningControllerProcess {owner}\n",
                d = dir.display()
            ));
            t
        };
        let bandwidth = options
            .relay_bandwidth
            .map(|b| format!("BandwidthRate {b}\nBandwidthBurst {b}\n"))
            .unwrap_or_default();
        let relay = |or_port: u16| {
            format!(
                "SocksPort 0\nORPort 127.0.0.1:{or_port}\nAddress 127.0.0.1\nExitPolicy accept 127.0.0.0/8:*\nExitPolicyRejectPrivate 0\n{bandwidth}"
            )
        };
        let mut authority_extra = if options.consensus_params.is_empty() {
            String::new()
        } else {
            format!("ConsensusParams {}\n", options.consensus_params.join(" "))
        };
        for line in &options.authority_torrc {
            authority_extra.push_str(line);
            authority_extra.push('\n');
        }

        let mut network = TestNetwork {
            nodes: Vec::new(),
            clients: Vec::new(),
            authorities: authorities.clone(),
            dir_authorities: dir_authorities.clone(),
            common_torrc: common_torrc.clone(),
            options: options.clone(),
            startup: Duration::ZERO,
            dir: Some(dir),
            empty: empty.clone(),
        };
        let mut configs = Vec::new();
        for (name, or_port, dir_port) in &auth_ports {
            let d = root.join(name);
            let text = base(name, &d)
                + &relay(*or_port)
                + &format!(
                    "DirPort 127.0.0.1:{dir_port}\nAuthoritativeDirectory 1\nV3AuthoritativeDirectory 1\nContactInfo cwtch-tests\n{authority_extra}"
                );
            configs.push((name.clone(), d, text));
        }
        for i in 0..options.relays {
            let name = format!("relay{i}");
            let d = root.join(&name);
            let text = base(&name, &d) + &relay(next_port()?);
            configs.push((name, d, text));
        }
        for i in 0..clients {
            let name = format!("client{i}");
            let d = root.join(&name);
            let (socks, control) = (next_port()?, next_port()?);
            let text = base(&name, &d)
                + &format!(
                    "SocksPort 127.0.0.1:{socks} ExtendedErrors\nControlPort 127.0.0.1:{control}\nCookieAuthentication 1\n"
                );
            network.clients.push(TorClient {
                name: name.clone(),
                socks_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, socks)),
                control_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, control)),
                cookie_path: d.join("control_auth_cookie"),
                data_dir: d.clone(),
                pid: 0,
            });
            configs.push((name, d, text));
        }

        // Start everything at once: the authorities need each other.
        for (name, d, text) in configs {
            make_dir(&d)?;
            let torrc = d.join("torrc");
            std::fs::write(&torrc, text)?;
            let out = std::fs::File::create(d.join("tor.out"))?;
            let err = out.try_clone()?;
            let process = ProcessGuard::spawn(
                Command::new("tor")
                    .arg("--defaults-torrc")
                    .arg(&empty)
                    .arg("-f")
                    .arg(&torrc)
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err),
            )
            .map_err(|e| TestNetError::TorMissing(format!("tor: {e}")))?;
            if let Some(c) = network.clients.iter_mut().find(|c| c.name == name) {
                c.pid = process.pid();
            }
            network.nodes.push(Node {
                name,
                dir: d,
                torrc,
                process: Some(process),
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        network.check_alive()?;

        smol::block_on(network.wait_clients(started + timeout))?;
        network.startup = started.elapsed();
        eprintln!(
            "testnet: {} authorities, {} relays, {} clients bootstrapped in {:.1} s",
            AUTHORITIES,
            options.relays,
            clients,
            network.startup.as_secs_f64()
        );
        Ok(network)
    }

    /// Fails with the reason if a tor of the network has exited.
    pub fn check_alive(&mut self) -> Result<(), TestNetError> {
        for node in &mut self.nodes {
            let Some(p) = node.process.as_mut() else {
                continue;
            };
            if !p.is_running() {
                let mut diagnosis = verify_config(Path::new("tor"), &self.empty, &node.torrc);
                if diagnosis.is_empty() || diagnosis.contains("Configuration was valid") {
                    diagnosis = tail(&node.dir.join("notice.log"), 10)
                        + &tail(&node.dir.join("tor.out"), 10);
                }
                return Err(TestNetError::Died {
                    node: node.name.clone(),
                    diagnosis,
                });
            }
        }
        Ok(())
    }

    async fn wait_clients(&mut self, deadline: Instant) -> Result<(), TestNetError> {
        let mut conns: Vec<Option<ControlConnection>> =
            (0..self.clients.len()).map(|_| None).collect();
        let mut done = vec![false; self.clients.len()];
        let mut progress = vec![String::from("no control connection"); self.clients.len()];
        loop {
            self.check_alive()?;
            for (i, client) in self.clients.iter().enumerate() {
                if done[i] {
                    continue;
                }
                if conns[i].is_none() {
                    // The control port and cookie appear a moment after start.
                    conns[i] = ControlConnection::open(client.control_addr, &client.auth())
                        .await
                        .ok();
                }
                if let Some(c) = conns[i].as_mut() {
                    match c.bootstrap_status().await {
                        Ok(s) => {
                            progress[i] = format!("{} {}% {}", client.name, s.progress, s.summary);
                            done[i] = s.is_done();
                        }
                        Err(_) => conns[i] = None,
                    }
                }
            }
            if done.iter().all(|d| *d) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestNetError::Timeout {
                    progress: progress.join("; "),
                });
            }
            smol::Timer::after(Duration::from_millis(250)).await;
        }
    }

    /// The client tors.
    pub fn clients(&self) -> &[TorClient] {
        &self.clients
    }

    /// The `DirAuthority` lines of the network.
    pub fn dir_authority_lines(&self) -> &[String] {
        &self.dir_authorities
    }

    /// The directory authorities, for clients that are not tor (arti).
    pub fn authorities(&self) -> &[AuthorityInfo] {
        &self.authorities
    }

    /// The options the network was started with.
    pub fn options(&self) -> &TestNetworkOptions {
        &self.options
    }

    /// Every torrc line an extra tor needs to join this network as a
    /// client: [`COMMON_TORRC`] and the `DirAuthority` lines (pass them as
    /// `TorConfig::extra_torrc`).
    pub fn attach_torrc_lines(&self) -> Vec<String> {
        self.common_torrc
            .iter()
            .filter(|l| !l.starts_with("RunAsDaemon"))
            .cloned()
            .chain(self.dir_authorities.iter().cloned())
            .collect()
    }

    /// The network as the built-in Tor (arti, `cwtch-transport-arti`) needs
    /// to know it, in the text form its `PrivateNetwork::parse` reads and
    /// `cwtch-node run --tor-network FILE` takes: each authority's v3
    /// identity and DirPort, and the same tors as the relays to fetch the
    /// first consensus from (RSA and ed25519 identities, ORPort). Every
    /// address is on 127.0.0.1.
    pub fn arti_network_text(&self) -> io::Result<String> {
        let mut out = String::from(
            "# The private Tor network of cwtch_transport_socks::testnet, for the built-in Tor.\n",
        );
        for a in &self.authorities {
            out.push_str(&format!(
                "authority v3ident={} dir={}\n",
                a.v3ident, a.dir_addr
            ));
        }
        for a in &self.authorities {
            out.push_str(&format!(
                "fallback rsa={} ed25519={} orport={}\n",
                a.fingerprint,
                a.ed25519_identity()?,
                a.or_addr
            ));
        }
        Ok(out)
    }

    /// Writes [`TestNetwork::arti_network_text`] to `path`.
    pub fn write_arti_network(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.arti_network_text()?)
    }

    /// Pids of every tor the network started.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.process.as_ref().map(ProcessGuard::pid))
            .collect()
    }

    /// Time from [`TestNetwork::start`] to every client bootstrapped.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The temporary directory holding every node's data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).unwrap_or(Path::new(""))
    }

    /// The last `lines` lines of every tor's notice log, each under a
    /// heading with the tor's name: what a failed test prints to say why.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|node| {
                format!(
                    "---- {} notice.log (tail) ----\n{}\n",
                    node.name,
                    tail(&node.dir.join("notice.log"), lines)
                )
            })
            .collect()
    }

    /// Stops every tor (by pid) and returns their pids. Also done on drop.
    pub fn stop(&mut self) -> Vec<u32> {
        let pids = self.pids();
        if std::thread::panicking() {
            eprint!("{}", self.log_tails(15));
        }
        for node in &mut self.nodes {
            if let Some(mut p) = node.process.take() {
                let _ = p.stop();
            }
        }
        if std::env::var_os("CWTCH_KEEP_TESTNET").is_some()
            && let Some(d) = self.dir.take()
        {
            eprintln!("testnet: keeping {}", d.keep().display());
        }
        pids
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A single tor with `DisableNetwork 1`: enough to test the control port
/// client and key handling in a second, without any network. Stopped by
/// pid on drop.
pub struct LoneTor {
    process: ProcessGuard,
    control_addr: SocketAddr,
    cookie_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoneTor {
    /// Starts it with cookie authentication and these extra torrc lines.
    pub fn start(extra: &[&str]) -> Result<Self, TestNetError> {
        check_tools()?;
        let dir = tempfile::Builder::new()
            .prefix("cwtch-lonetor-")
            .tempdir()?;
        let d = dir.path().join("data");
        make_dir(&d)?;
        let empty = dir.path().join("empty-torrc");
        std::fs::write(&empty, "")?;
        let port_file = d.join("control-port");
        let mut text = format!(
            "DataDirectory {d}\nDisableNetwork 1\nSocksPort 127.0.0.1:auto\nControlPort 127.0.0.1:auto\n\
             ControlPortWriteToFile {pf}\nCookieAuthentication 1\nLog notice file {d}/notice.log\n\
             __OwningControllerProcess {pid}\n",
            d = d.display(),
            pf = port_file.display(),
            pid = std::process::id()
        );
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        let torrc = dir.path().join("torrc");
        std::fs::write(&torrc, text)?;
        let mut process = ProcessGuard::spawn(
            Command::new("tor")
                .arg("--defaults-torrc")
                .arg(&empty)
                .arg("-f")
                .arg(&torrc)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .map_err(|e| TestNetError::TorMissing(format!("tor: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let control_addr = loop {
            if !process.is_running() {
                // A listener tor cannot open (a control socket in a
                // directory others may read, say) passes --verify-config:
                // its log says why.
                let log = std::fs::read_to_string(d.join("notice.log")).unwrap_or_default();
                let warnings: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains("[warn]") || l.contains("[err]"))
                    .collect();
                return Err(TestNetError::Died {
                    node: "lone tor".into(),
                    diagnosis: format!(
                        "{}\n{}",
                        verify_config(Path::new("tor"), &empty, &torrc),
                        warnings.join("\n")
                    ),
                });
            }
            let text = std::fs::read_to_string(&port_file).unwrap_or_default();
            if let Some(addr) = crate::control::status::parse_port_file(&text) {
                break addr;
            }
            if Instant::now() > deadline {
                return Err(TestNetError::Timeout {
                    progress: "lone tor wrote no control port file".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        Ok(LoneTor {
            process,
            control_addr,
            cookie_path: d.join("control_auth_cookie"),
            _dir: dir,
        })
    }

    /// The control port.
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// The cookie file.
    pub fn cookie_path(&self) -> &Path {
        &self.cookie_path
    }

    /// Tor's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops tor now (also done on drop).
    pub fn stop(&mut self) {
        let _ = self.process.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_file() {
        assert_eq!(
            parse_fingerprint("auth0 DC4CED069F1C1369790635892FB5943C5A62CA7E\n").as_deref(),
            Some("DC4CED069F1C1369790635892FB5943C5A62CA7E")
        );
        assert_eq!(
            parse_fingerprint("auth0 DC4C ED06 9F1C 1369 7906 3589 2FB5 943C 5A62 CA7E").as_deref(),
            Some("DC4CED069F1C1369790635892FB5943C5A62CA7E")
        );
        assert_eq!(parse_fingerprint("auth0 XYZ"), None);
        assert_eq!(parse_fingerprint(""), None);
    }

    #[test]
    fn our_pid_is_alive_and_a_free_pid_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX));
    }

    #[test]
    fn default_options_keep_the_default_torrc() {
        let common = TestNetworkOptions::default().common_torrc();
        let mut expected: Vec<String> = COMMON_TORRC.iter().map(|l| (*l).to_owned()).collect();
        let mut got = common.clone();
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
        assert_eq!(TestNetworkOptions::default().relays, RELAYS);
    }

    #[test]
    fn arti_options_align_the_time_period() {
        let o = TestNetworkOptions::arti_compatible(1);
        // C tor's period on a test network is 24 voting intervals; arti
        // accepts 5 minutes or more and reads it as `hsdir_interval`.
        assert_eq!(o.hs_time_period_minutes(), 6);
        assert!(o.consensus_params.contains(&"hsdir_interval=6".to_owned()));
        assert_eq!(o.voting_interval, o.initial_voting_interval);
        assert!(
            o.common_torrc()
                .contains(&"V3AuthVotingInterval 15".to_owned())
        );
        assert!(
            o.authority_torrc
                .contains(&"AuthDirVoteStableGuaranteeMinUptime 0".to_owned())
        );
    }

    #[test]
    fn ports_are_distinct() {
        let mut p = free_ports(20).unwrap();
        p.sort_unstable();
        p.dedup();
        assert_eq!(p.len(), 20);
    }
}
