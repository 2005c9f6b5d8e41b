//! The server's configuration file: `server.toml` in its home.
//!
//! Written, with a comment on every setting, by `server init`; printed as
//! the server runs it by `server config`; read again on SIGHUP. A setting
//! left out takes its default, and every default is bounded: a limit is
//! only lifted by writing `"unbounded"` (never by a missing line, never by
//! a 0). A file that does not parse, names an unknown setting or holds a
//! value out of range is refused with its line and the reason
//! ([`ConfigError::Invalid`]); a running server then keeps the
//! configuration it had.
//!
//! Homes made before this file existed have a `policy.json`: the daemon
//! turns it into a `server.toml` with the same values on its first start
//! ([`load_or_migrate`]) and keeps the old file as `policy.json.migrated`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cli::ServerPolicyArgs;

/// The configuration file inside the server's home.
pub const CONFIG_FILE: &str = "server.toml";
/// The policy file of homes made before `server.toml` (JSON).
pub const LEGACY_POLICY_FILE: &str = "policy.json";
/// Where a migrated `policy.json` is kept.
pub const MIGRATED_POLICY_FILE: &str = "policy.json.migrated";

/// Proof of work a server may demand at most (bits). The protocol allows
/// 40; beyond 24 a post costs minutes on a phone.
pub const MAX_POW_BITS: u64 = 24;
/// The most clients one server serves at once.
pub const MAX_CLIENTS: u64 = 10_000;
/// The bytes of one stored blob (what `max_mib` counts).
const BLOB_BYTES: u64 = cwtch_proto::group::SEALED_BLOB_LEN as u64;
const MIB: u64 = 1024 * 1024;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file does not parse, names an unknown setting, or a value is
    /// out of range.
    #[error("{file}, line {line}: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// The line (from 1).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A value given on the command line is out of range.
    #[error("{flag}: {reason}")]
    BadFlag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The old `policy.json` does not parse.
    #[error("{path} is damaged: {reason}")]
    BadLegacyPolicy {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ConfigError + '_ {
    move |source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A limit: a positive number, or none at all when written `"unbounded"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// At most this much (never 0).
    At(u64),
    /// No limit: the operator wrote `"unbounded"`.
    Unbounded,
}

impl Limit {
    /// The bound, if any.
    pub fn get(self) -> Option<u64> {
        match self {
            Limit::At(n) => Some(n),
            Limit::Unbounded => None,
        }
    }

    /// The bound for the wire, where 0 means none.
    pub fn or_zero(self) -> u64 {
        self.get().unwrap_or(0)
    }

    /// From a command-line value where 0 means no limit.
    pub fn from_zero_unbounded(value: u64) -> Limit {
        if value == 0 {
            Limit::Unbounded
        } else {
            Limit::At(value)
        }
    }

    fn toml(self) -> String {
        match self {
            Limit::At(n) => n.to_string(),
            Limit::Unbounded => "\"unbounded\"".into(),
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Limit;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a positive number, or \"unbounded\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Limit, E> {
                match u64::try_from(v) {
                    Ok(0) => Err(E::custom(
                        "0 is not a limit: write \"unbounded\" to keep no limit of this kind",
                    )),
                    Ok(n) => Ok(Limit::At(n)),
                    Err(_) => Err(E::custom(format!(
                        "{v} is negative: a limit is a positive number, or \"unbounded\""
                    ))),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Limit, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Limit, E> {
                if v == "unbounded" {
                    Ok(Limit::Unbounded)
                } else {
                    Err(E::custom(format!(
                        "\"{v}\": a limit is a positive number, or \"unbounded\""
                    )))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Serialize for Limit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Limit::At(n) => s.serialize_u64(*n),
            Limit::Unbounded => s.serialize_str("unbounded"),
        }
    }
}

/// A whole number between `MIN` and `MAX` (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ranged<const MIN: u64, const MAX: u64>(u64);

impl<const MIN: u64, const MAX: u64> Ranged<MIN, MAX> {
    /// `value`, or why it is out of range.
    pub fn new(value: u64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&value) {
            Ok(Ranged(value))
        } else {
            Err(format!("{value} is out of range: from {MIN} to {MAX}"))
        }
    }

    /// The value.
    pub fn get(self) -> u64 {
        self.0
    }

    /// A value known to be in range (clamped if not).
    const fn clamped(value: u64) -> Self {
        Ranged(if value < MIN {
            MIN
        } else if value > MAX {
            MAX
        } else {
            value
        })
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Ranged<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        let v = u64::try_from(v).map_err(|_| {
            serde::de::Error::custom(format!("{v} is out of range: from {MIN} to {MAX}"))
        })?;
        Ranged::new(v).map_err(serde::de::Error::custom)
    }
}

impl<const MIN: u64, const MAX: u64> Serialize for Ranged<MIN, MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A log level the daemon understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Only errors.
    Error,
    /// Errors and warnings (the default).
    Warn,
    /// Also what the server does (connections refused, reloads).
    Info,
    /// Much more.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The name in the file and in filters.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }

    fn parse(s: &str) -> Option<LogLevel> {
        Some(match s {
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LogLevel::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "\"{s}\" is not a log level: error, warn, info, debug or trace"
            ))
        })
    }
}

impl Serialize for LogLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Where the Prometheus metrics are served: a loopback TCP address or a
/// Unix socket path. Anything else is refused: the numbers tell how busy
/// the server is, which is nobody else's business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsAddr {
    /// A TCP address on loopback (127.0.0.0/8 or ::1).
    Tcp(std::net::SocketAddr),
    /// A Unix socket (created private, like the admin socket).
    Unix(PathBuf),
}

impl MetricsAddr {
    /// `127.0.0.1:9464`, `[::1]:9464`, `unix:/path` or a path with a `/`.
    pub fn parse(s: &str) -> Result<MetricsAddr, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path".into());
            }
            return Ok(MetricsAddr::Unix(PathBuf::from(path)));
        }
        if let Ok(addr) = s.parse::<std::net::SocketAddr>() {
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "{s} is not a loopback address: metrics are served on 127.0.0.1, [::1] \
                     or a Unix socket only (put a proxy in front to publish them)"
                ));
            }
            return Ok(MetricsAddr::Tcp(addr));
        }
        if s.contains('/') {
            return Ok(MetricsAddr::Unix(PathBuf::from(s)));
        }
        Err(format!(
            "\"{s}\" is neither ADDRESS:PORT on loopback nor unix:PATH"
        ))
    }
}

impl std::fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAddr::Tcp(a) => write!(f, "{a}"),
            MetricsAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl<'de> Deserialize<'de> for MetricsAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MetricsAddr::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for MetricsAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What the server keeps. Applied to the whole store, oldest blobs first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Blobs older than this many days are dropped.
    pub max_age_days: Limit,
    /// The most MiB of blobs kept.
    pub max_mib: Limit,
    /// The most blobs kept.
    pub max_blobs: Limit,
}

/// A new server keeps blobs this many days: long enough for a member who
/// was away a few weeks to catch up, short enough that a stranger cannot
/// fill the disk for good (SECURITY.md section 3, "The server"; OPERATING.md).
pub const DEFAULT_MAX_AGE_DAYS: u64 = 30;
/// A new server keeps at most this many MiB of blobs (10 GiB).
pub const DEFAULT_MAX_MIB: u64 = 10 * 1024;
/// A new server keeps at most this many blobs: as many as fit in
/// [`DEFAULT_MAX_MIB`], so the hello (which states a count and an age, not
/// bytes) tells members the whole bound.
pub const DEFAULT_MAX_BLOBS: u64 = DEFAULT_MAX_MIB * MIB / BLOB_BYTES;

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age_days: Limit::At(DEFAULT_MAX_AGE_DAYS),
            max_mib: Limit::At(DEFAULT_MAX_MIB),
            max_blobs: Limit::At(DEFAULT_MAX_BLOBS),
        }
    }
}

/// Proof of work: none while the server is quiet, more as posts come in
/// faster (see [`PowConfig::level`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PowConfig {
    /// The most a post may be asked (leading zero bits); the signed advert
    /// states it. 0: never any.
    pub max_bits: Ranged<0, MAX_POW_BITS>,
    /// Posts per second (all connections together, over `window_secs`)
    /// below which no work is asked. 0: always `max_bits`.
    pub threshold_posts_per_sec: Ranged<0, 1_000_000>,
    /// The window the rate is measured over.
    pub window_secs: Ranged<1, 3_600>,
    /// The work asked once the rate reaches the threshold.
    pub start_bits: Ranged<0, MAX_POW_BITS>,
    /// Added for each doubling of the rate above the threshold.
    pub bits_per_doubling: Ranged<0, MAX_POW_BITS>,
}

impl Default for PowConfig {
    fn default() -> Self {
        PowConfig {
            max_bits: Ranged::clamped(20),
            threshold_posts_per_sec: Ranged::clamped(100),
            window_secs: Ranged::clamped(10),
            start_bits: Ranged::clamped(10),
            bits_per_doubling: Ranged::clamped(2),
        }
    }
}

impl PowConfig {
    /// Work asked of every post, always (`--pow-bits`: the behaviour of
    /// servers before the load-based default).
    pub fn fixed(bits: u64) -> Result<PowConfig, String> {
        Ok(PowConfig {
            max_bits: Ranged::new(bits)?,
            threshold_posts_per_sec: Ranged(0),
            ..PowConfig::default()
        })
    }

    /// The work a new connection is asked when `posts` post requests came
    /// in over the last `elapsed_secs` (at most the window): 0 below the
    /// threshold, then `start_bits`, plus `bits_per_doubling` for each
    /// doubling of the rate above the threshold, never above `max_bits`.
    pub fn level(&self, posts: u64, elapsed_secs: u64) -> u8 {
        let max = self.max_bits.get();
        let threshold = self.threshold_posts_per_sec.get();
        let bits = if max == 0 {
            0
        } else if threshold == 0 {
            max
        } else {
            // rate >= threshold * 2^k  <=>  posts >= threshold * secs * 2^k
            let floor = threshold.saturating_mul(elapsed_secs.max(1));
            if posts < floor {
                0
            } else {
                let mut doublings = 0u64;
                let mut bar = floor;
                while let Some(next) = bar.checked_mul(2)
                    && posts >= next
                    && doublings < 64
                {
                    bar = next;
                    doublings += 1;
                }
                self.start_bits
                    .get()
                    .saturating_add(self.bits_per_doubling.get().saturating_mul(doublings))
                    .min(max)
            }
        };
        u8::try_from(bits).unwrap_or(u8::MAX)
    }
}

/// The per-connection token bucket (SPEC.md section 8.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// false: no rate limit at all.
    pub enabled: bool,
    /// Posts one connection may make in a burst.
    pub burst: Ranged<1, 65_535>,
    /// Then one post per this many milliseconds.
    pub interval_ms: Ranged<1, 3_600_000>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            burst: Ranged::clamped(32),
            interval_ms: Ranged::clamped(500),
        }
    }
}

/// Connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    /// Clients served at once (after their handshake); more are closed.
    pub max_clients: Ranged<1, MAX_CLIENTS>,
    /// A client that neither subscribes nor asks anything for this long is
    /// closed.
    pub idle_timeout_secs: Ranged<10, 86_400>,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            max_clients: Ranged::clamped(MAX_CLIENTS),
            idle_timeout_secs: Ranged::clamped(300),
        }
    }
}

/// Logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// The daemon's log level (`-v`, `-vv` and RUST_LOG win over it).
    pub level: LogLevel,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: LogLevel::Warn,
        }
    }
}

/// Statistics.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatisticsConfig {
    /// A statistics line is logged this often (seconds; 0: never).
    pub log_interval_secs: Ranged<0, 86_400>,
    /// Serve Prometheus metrics here (`--metrics` wins over it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsAddr>,
}

impl Default for StatisticsConfig {
    fn default() -> Self {
        StatisticsConfig {
            log_interval_secs: Ranged::clamped(60),
            metrics: None,
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// What the server keeps.
    pub retention: RetentionConfig,
    /// Proof of work.
    pub proof_of_work: PowConfig,
    /// The per-connection rate limit.
    pub rate_limit: RateLimitConfig,
    /// Connection limits.
    pub connections: ConnectionsConfig,
    /// Logging.
    pub logging: LoggingConfig,
    /// Statistics.
    pub statistics: StatisticsConfig,
}

/// The line (from 1) of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

impl Config {
    /// Parses a configuration file's text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        toml::from_str::<Config>(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            ConfigError::Invalid {
                file: file.to_string(),
                line,
                reason: e.message().trim().to_string(),
            }
        })
    }

    /// Reads `server.toml` from `home`: `Ok(None)` if there is none.
    pub fn read(home: &Path) -> Result<Option<Config>, ConfigError> {
        let path = home.join(CONFIG_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// The configuration `server init` writes for these flags: the
    /// defaults, changed where a flag was given.
    pub fn from_init_flags(flags: &ServerPolicyArgs) -> Result<Config, ConfigError> {
        fn bad(flag: &'static str) -> impl FnOnce(String) -> ConfigError {
            move |reason| ConfigError::BadFlag { flag, reason }
        }
        let mut c = Config::default();
        if let Some(bits) = flags.pow_bits {
            c.proof_of_work = PowConfig::fixed(u64::from(bits)).map_err(bad("--pow-bits"))?;
        }
        if let Some(bits) = flags.pow_max_bits {
            c.proof_of_work.max_bits =
                Ranged::new(u64::from(bits)).map_err(bad("--pow-max-bits"))?;
        }
        if let Some(rate) = flags.pow_threshold {
            c.proof_of_work.threshold_posts_per_sec =
                Ranged::new(rate).map_err(bad("--pow-threshold"))?;
        }
        if let Some(n) = flags.max_blobs {
            c.retention.max_blobs = Limit::from_zero_unbounded(n);
        }
        if let Some(n) = flags.max_mib {
            c.retention.max_mib = Limit::from_zero_unbounded(n);
            // The count bound follows the bytes unless given too.
            if flags.max_blobs.is_none() {
                c.retention.max_blobs = match n {
                    0 => Limit::Unbounded,
                    n => Limit::At((n.saturating_mul(MIB) / BLOB_BYTES).max(1)),
                };
            }
        }
        if let Some(n) = flags.max_age_days {
            c.retention.max_age_days = Limit::from_zero_unbounded(n);
        }
        if let Some(n) = flags.rate_burst {
            c.rate_limit.burst = Ranged::new(u64::from(n)).map_err(bad("--rate-burst"))?;
        }
        if let Some(ms) = flags.rate_interval_ms {
            if ms == 0 {
                c.rate_limit.enabled = false;
            } else {
                c.rate_limit.interval_ms = Ranged::new(ms).map_err(bad("--rate-interval-ms"))?;
            }
        }
        if let Some(n) = flags.max_connections {
            c.connections.max_clients = Ranged::new(n).map_err(bad("--max-connections"))?;
        }
        Ok(c)
    }

    /// The configuration equivalent to an old `policy.json`: the same
    /// values, and its 0s ("no limit") written out as "unbounded".
    pub fn from_legacy(p: &LegacyPolicy) -> Config {
        Config {
            retention: RetentionConfig {
                max_age_days: Limit::from_zero_unbounded(p.max_age_days),
                max_mib: Limit::from_zero_unbounded(p.max_mib),
                max_blobs: Limit::from_zero_unbounded(p.max_blobs),
            },
            // Old servers demanded their pow_bits on every post, or none.
            proof_of_work: PowConfig {
                max_bits: Ranged::clamped(u64::from(p.pow_bits)),
                threshold_posts_per_sec: Ranged(0),
                ..PowConfig::default()
            },
            rate_limit: RateLimitConfig {
                enabled: p.rate_interval_ms > 0,
                burst: Ranged::clamped(u64::from(p.rate_burst)),
                interval_ms: Ranged::clamped(p.rate_interval_ms.max(1)),
            },
            connections: ConnectionsConfig {
                max_clients: Ranged::clamped(p.max_connections),
                ..ConnectionsConfig::default()
            },
            ..Config::default()
        }
    }

    /// The retention bound in bytes (0: none), as the advert states it.
    pub fn max_bytes(&self) -> u64 {
        self.retention.max_mib.or_zero().saturating_mul(MIB)
    }

    /// The retention bound on age in seconds (0: none).
    pub fn max_age_secs(&self) -> u64 {
        self.retention.max_age_days.or_zero().saturating_mul(86_400)
    }

    /// What `server.toml` says for this configuration, every setting with
    /// its comment (`comments`) or bare.
    pub fn render(&self, comments: bool) -> String {
        let mut out = String::new();
        let mut c = |text: &str| {
            if comments {
                for line in text.lines() {
                    if line.is_empty() {
                        out.push_str("#\n");
                    } else {
                        let _ = writeln!(out, "# {line}");
                    }
                }
            }
        };
        c(HEADER);
        let mut s = out;
        let section = |s: &mut String, name: &str| {
            if !s.is_empty() {
                s.push('\n');
            }
            let _ = writeln!(s, "[{name}]");
        };
        let set = |s: &mut String, comment: &str, key: &str, value: String| {
            if comments {
                for line in comment.lines() {
                    let _ = writeln!(s, "# {line}");
                }
            }
            let _ = writeln!(s, "{key} = {value}");
        };
        let r = &self.retention;
        section(&mut s, "retention");
        if comments {
            s.push_str(RETENTION_COMMENT);
        }
        set(
            &mut s,
            "Blobs older than this many days are dropped, or \"unbounded\".",
            "max_age_days",
            r.max_age_days.toml(),
        );
        set(
            &mut s,
            "The most MiB of blobs kept (10240 = 10 GiB), or \"unbounded\".",
            "max_mib",
            r.max_mib.toml(),
        );
        set(
            &mut s,
            "The most blobs kept (one blob is 2 KiB), or \"unbounded\".",
            "max_blobs",
            r.max_blobs.toml(),
        );
        let p = &self.proof_of_work;
        section(&mut s, "proof_of_work");
        if comments {
            s.push_str(POW_COMMENT);
        }
        set(
            &mut s,
            "The most work a post is asked, in bits (0..=24; 0: never any). The signed\n\
             advert states it. Clients pay up to 20 bits by default and refuse more.",
            "max_bits",
            p.max_bits.get().to_string(),
        );
        set(
            &mut s,
            "Below this many posts per second (all clients together) no work is asked.\n\
             0: always ask max_bits.",
            "threshold_posts_per_sec",
            p.threshold_posts_per_sec.get().to_string(),
        );
        set(
            &mut s,
            "The rate is measured over this many seconds (1..=3600).",
            "window_secs",
            p.window_secs.get().to_string(),
        );
        set(
            &mut s,
            "The work asked once the rate reaches the threshold, in bits.",
            "start_bits",
            p.start_bits.get().to_string(),
        );
        set(
            &mut s,
            "Bits added for each doubling of the rate above the threshold.",
            "bits_per_doubling",
            p.bits_per_doubling.get().to_string(),
        );
        let l = &self.rate_limit;
        section(&mut s, "rate_limit");
        if comments {
            s.push_str(RATE_COMMENT);
        }
        set(
            &mut s,
            "false: no rate limit (proof of work and the connection limit still apply).",
            "enabled",
            l.enabled.to_string(),
        );
        set(
            &mut s,
            "Posts one connection may make in a burst (1..=65535).",
            "burst",
            l.burst.get().to_string(),
        );
        set(
            &mut s,
            "Then one more post every this many milliseconds (1..=3600000).",
            "interval_ms",
            l.interval_ms.get().to_string(),
        );
        let k = &self.connections;
        section(&mut s, "connections");
        set(
            &mut s,
            "Clients served at once once their handshake is done (1..=10000); more are\n\
             closed at once. Handshakes in progress are bounded apart (256).",
            "max_clients",
            k.max_clients.get().to_string(),
        );
        set(
            &mut s,
            "A client that neither subscribes nor asks anything for this many seconds is\n\
             closed (10..=86400).",
            "idle_timeout_secs",
            k.idle_timeout_secs.get().to_string(),
        );
        section(&mut s, "logging");
        set(
            &mut s,
            "error, warn, info, debug or trace. -v, -vv and RUST_LOG win over it. Logs\n\
             never hold keys or blob contents.",
            "level",
            format!("\"{}\"", self.logging.level.as_str()),
        );
        let st = &self.statistics;
        section(&mut s, "statistics");
        set(
            &mut s,
            "A statistics line is logged this often, whatever the level (seconds; 0:\n\
             never). `cwtch-node server stats` asks the running server at any time.",
            "log_interval_secs",
            st.log_interval_secs.get().to_string(),
        );
        match &st.metrics {
            Some(addr) => set(
                &mut s,
                "Prometheus metrics (text format) on a loopback ADDRESS:PORT or unix:PATH.",
                "metrics",
                format!("\"{addr}\""),
            ),
            None if comments => s.push_str(
                "# Prometheus metrics (text format) on a loopback ADDRESS:PORT or unix:PATH;\n\
                 # none unless set here or with `server run --metrics ADDR`.\n\
                 # metrics = \"127.0.0.1:9464\"\n",
            ),
            None => {}
        }
        s
    }
}

const HEADER: &str = "\
The configuration of this Cwtch server, written by `cwtch-node server init`.

`cwtch-node server config` prints what the server runs with. Edit this file,
then reload a running server with SIGHUP (`systemctl reload cwtch-server`,
or `kill -HUP PID`): a file that does not parse or holds a value out of
range is refused with its line and the reason, and the server keeps the
configuration it had. A change in what the server demands or keeps is
announced at once in a newly signed advert.

A setting left out takes its default. No limit is lifted unless you write
\"unbounded\". See OPERATING.md.";

const RETENTION_COMMENT: &str = "\
# What the server keeps, oldest blobs dropped first whichever bound is hit.
# The hello and the signed advert tell members these bounds, so they can
# tell a message pruned by retention from one withheld.
";

const POW_COMMENT: &str = "\
# Proof of work per post, chosen per connection from the current load: a
# new connection is asked 0 bits while fewer than threshold_posts_per_sec
# posts come in (over the last window_secs), then start_bits, plus
# bits_per_doubling for each doubling of that rate, up to max_bits. The
# level is fixed for the life of a connection (its hello states it); a
# flood thus makes new connections pay, which slows the flood, which
# lowers the level again.
";

const RATE_COMMENT: &str = "\
# The per-connection token bucket: `burst` posts at once, then one every
# `interval_ms`. Fetches are paced by the reader's own speed.
";

/// The policy file of homes made before `server.toml`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default)]
pub struct LegacyPolicy {
    /// Proof of work per post (bits; 0: none).
    pub pow_bits: u8,
    /// Most blobs (0: no limit).
    pub max_blobs: u64,
    /// Most MiB (0: no limit).
    pub max_mib: u64,
    /// Most days (0: no limit).
    pub max_age_days: u64,
    /// Token bucket size.
    pub rate_burst: u16,
    /// Token interval (0: no limit).
    pub rate_interval_ms: u64,
    /// Most clients.
    pub max_connections: u64,
}

impl Default for LegacyPolicy {
    /// The defaults `server init` had.
    fn default() -> Self {
        LegacyPolicy {
            pow_bits: 0,
            max_blobs: 0,
            max_mib: DEFAULT_MAX_MIB,
            max_age_days: DEFAULT_MAX_AGE_DAYS,
            rate_burst: 32,
            rate_interval_ms: 500,
            max_connections: MAX_CLIENTS,
        }
    }
}

fn read_legacy(home: &Path) -> Result<Option<LegacyPolicy>, ConfigError> {
    let path = home.join(LEGACY_POLICY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| ConfigError::BadLegacyPolicy {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(&path)(e)),
    }
}

/// Where a configuration came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `server.toml`.
    File,
    /// An old `policy.json` (converted; not written).
    Legacy,
    /// Neither file exists: the defaults.
    Defaults,
}

/// The configuration of the server in `home`, read only: `server.toml`,
/// else an old `policy.json` converted, else the defaults.
pub fn load(home: &Path) -> Result<(Config, Source), ConfigError> {
    if let Some(c) = Config::read(home)? {
        return Ok((c, Source::File));
    }
    if let Some(p) = read_legacy(home)? {
        return Ok((Config::from_legacy(&p), Source::Legacy));
    }
    Ok((Config::default(), Source::Defaults))
}

/// At the daemon's start: [`load`], and a home without `server.toml` gets
/// one (from its `policy.json`, kept as `policy.json.migrated`, or the
/// defaults). Returns the configuration and what was done, to tell the
/// operator.
pub fn load_or_migrate(home: &Path) -> Result<(Config, Option<String>), ConfigError> {
    let (config, source) = load(home)?;
    let note = match source {
        Source::File => None,
        Source::Legacy => {
            write_new(home, &config)?;
            let from = home.join(LEGACY_POLICY_FILE);
            let to = home.join(MIGRATED_POLICY_FILE);
            std::fs::rename(&from, &to).map_err(io_error(&from))?;
            Some(format!(
                "migrated {} to {} (same values; the old file is kept as {}). Proof of work \
                 stays as it was ({}); see [proof_of_work] in {} for the load-based default",
                from.display(),
                home.join(CONFIG_FILE).display(),
                to.display(),
                match config.proof_of_work.max_bits.get() {
                    0 => "none".to_string(),
                    n => format!("{n} bits on every post"),
                },
                CONFIG_FILE,
            ))
        }
        Source::Defaults => {
            write_new(home, &config)?;
            Some(format!(
                "no configuration in {}: wrote the defaults to {}",
                home.display(),
                home.join(CONFIG_FILE).display()
            ))
        }
    };
    Ok((config, note))
}

/// Writes `server.toml` (mode 0600) where there is none, durably.
pub fn write_new(home: &Path, config: &Config) -> Result<(), ConfigError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = home.join(CONFIG_FILE);
    let tmp = home.join(format!("{CONFIG_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(config.render(true).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(&tmp))?;
    // Never replaces a file the operator wrote meanwhile.
    std::fs::hard_link(&tmp, &path).map_err(io_error(&path))?;
    std::fs::remove_file(&tmp).map_err(io_error(&tmp))?;
    if let Ok(dir) = std::fs::File::open(home) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_line(text: &str) -> (usize, String) {
        match Config::parse(text, "server.toml") {
            Err(ConfigError::Invalid { line, reason, .. }) => (line, reason),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn the_written_file_reads_back_as_the_same_configuration() {
        let mut c = Config::default();
        assert_eq!(Config::parse(&c.render(true), "f").unwrap(), c);
        assert_eq!(Config::parse(&c.render(false), "f").unwrap(), c);
        c.retention.max_blobs = Limit::Unbounded;
        c.proof_of_work = PowConfig::fixed(12).unwrap();
        c.rate_limit.enabled = false;
        c.logging.level = LogLevel::Debug;
        c.statistics.metrics = Some(MetricsAddr::parse("unix:/run/m.sock").unwrap());
        assert_eq!(Config::parse(&c.render(true), "f").unwrap(), c);
        // Every setting is in the file, commented.
        let text = Config::default().render(true);
        for key in [
            "max_age_days",
            "max_mib",
            "max_blobs",
            "max_bits",
            "threshold_posts_per_sec",
            "window_secs",
            "start_bits",
            "bits_per_doubling",
            "enabled",
            "burst",
            "interval_ms",
            "max_clients",
            "idle_timeout_secs",
            "level",
            "log_interval_secs",
            "metrics",
        ] {
            assert!(text.contains(&format!("{key} = ")), "{key}");
        }
    }

    #[test]
    fn a_missing_setting_takes_its_bounded_default() {
        let c = Config::parse("", "f").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.retention.max_age_days, Limit::At(30));
        assert_eq!(c.retention.max_mib, Limit::At(10 * 1024));
        assert_eq!(c.retention.max_blobs, Limit::At(5 * 1024 * 1024));
        let c = Config::parse("[retention]\nmax_mib = 1\n", "f").unwrap();
        assert_eq!(c.retention.max_age_days, Limit::At(30));
        assert_eq!(c.retention.max_blobs, Limit::At(DEFAULT_MAX_BLOBS));
        let c = Config::parse("[retention]\nmax_blobs = \"unbounded\"\n", "f").unwrap();
        assert_eq!(c.retention.max_blobs, Limit::Unbounded);
    }

    #[test]
    fn a_bad_file_is_refused_with_its_line_and_the_reason() {
        let (line, reason) = err_line("[retention]\nmax_age_days = 30\nmax_blobs = 0\n");
        assert_eq!(line, 3);
        assert!(reason.contains("unbounded"), "{reason}");
        let (line, reason) = err_line("\n\n[proof_of_work]\nmax_bits = 30\n");
        assert_eq!(line, 4);
        assert!(reason.contains("from 0 to 24"), "{reason}");
        let (line, reason) = err_line("[connections]\nmax_clientz = 3\n");
        assert_eq!(line, 2);
        assert!(reason.contains("max_clientz"), "{reason}");
        let (line, _) = err_line("[logging]\nlevel = \"loud\"\n");
        assert_eq!(line, 2);
        let (line, _) = err_line("[retention\n");
        assert_eq!(line, 1);
        let (line, reason) = err_line("[statistics]\n\nmetrics = \"0.0.0.0:9464\"\n");
        assert_eq!(line, 3);
        assert!(reason.contains("loopback"), "{reason}");
        let (line, _) = err_line("[rate_limit]\nburst = -1\n");
        assert_eq!(line, 2);
        let (line, _) = err_line("[retention]\nmax_mib = \"lots\"\n");
        assert_eq!(line, 2);
        let e = Config::parse("[nope]\n", "/h/server.toml").unwrap_err();
        assert!(e.to_string().starts_with("/h/server.toml, line 1: "), "{e}");
    }

    #[test]
    fn the_level_is_zero_when_quiet_and_rises_with_each_doubling() {
        let p = PowConfig::default(); // 20 max, 100/s, start 10, +2
        assert_eq!(p.level(0, 10), 0);
        assert_eq!(p.level(999, 10), 0);
        assert_eq!(p.level(1_000, 10), 10);
        assert_eq!(p.level(1_999, 10), 10);
        assert_eq!(p.level(2_000, 10), 12);
        assert_eq!(p.level(4_000, 10), 14);
        assert_eq!(p.level(32_000, 10), 20);
        assert_eq!(p.level(u64::MAX, 10), 20);
        // A shorter elapsed time (just after start) scales the bar.
        assert_eq!(p.level(100, 1), 10);
        assert_eq!(p.level(99, 0), 0);
        let fixed = PowConfig::fixed(12).unwrap();
        assert_eq!(fixed.level(0, 10), 12);
        assert_eq!(fixed.level(u64::MAX, 10), 12);
        let off = PowConfig::fixed(0).unwrap();
        assert_eq!(off.level(u64::MAX, 10), 0);
        assert!(PowConfig::fixed(25).is_err());
    }

    #[test]
    fn init_flags_change_only_what_they_name() {
        let none = ServerPolicyArgs::default();
        assert_eq!(Config::from_init_flags(&none).unwrap(), Config::default());
        let flags = ServerPolicyArgs {
            pow_bits: Some(12),
            max_blobs: Some(0),
            rate_interval_ms: Some(0),
            max_connections: Some(400),
            ..ServerPolicyArgs::default()
        };
        let c = Config::from_init_flags(&flags).unwrap();
        assert_eq!(c.proof_of_work.level(0, 10), 12);
        assert_eq!(c.retention.max_blobs, Limit::Unbounded);
        assert_eq!(c.retention.max_mib, Limit::At(DEFAULT_MAX_MIB));
        assert!(!c.rate_limit.enabled);
        assert_eq!(c.connections.max_clients.get(), 400);
        let c = Config::from_init_flags(&ServerPolicyArgs {
            max_mib: Some(1),
            ..ServerPolicyArgs::default()
        })
        .unwrap();
        assert_eq!(c.retention.max_blobs, Limit::At(512));
        for bad in [
            ServerPolicyArgs {
                pow_bits: Some(25),
                ..ServerPolicyArgs::default()
            },
            ServerPolicyArgs {
                max_connections: Some(0),
                ..ServerPolicyArgs::default()
            },
            ServerPolicyArgs {
                rate_burst: Some(0),
                ..ServerPolicyArgs::default()
            },
        ] {
            assert!(matches!(
                Config::from_init_flags(&bad),
                Err(ConfigError::BadFlag { .. })
            ));
        }
    }

    #[test]
    fn an_old_policy_is_migrated_once_with_the_same_values() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        std::fs::write(
            home.join(LEGACY_POLICY_FILE),
            r#"{"pow_bits":4,"max_blobs":0,"max_mib":10240,"max_age_days":7,
                "rate_burst":32,"rate_interval_ms":0,"max_connections":10000}"#,
        )
        .unwrap();
        let (c, source) = load(home).unwrap();
        assert_eq!(source, Source::Legacy);
        assert!(!home.join(CONFIG_FILE).exists(), "reading writes nothing");
        let (migrated, note) = load_or_migrate(home).unwrap();
        assert_eq!(migrated, c);
        assert!(note.unwrap().contains("migrated"));
        assert!(!home.join(LEGACY_POLICY_FILE).exists());
        assert!(home.join(MIGRATED_POLICY_FILE).exists());
        assert_eq!(c.retention.max_blobs, Limit::Unbounded);
        assert_eq!(c.retention.max_age_days, Limit::At(7));
        assert_eq!(c.proof_of_work.level(0, 10), 4);
        assert!(!c.rate_limit.enabled);
        let text = std::fs::read_to_string(home.join(CONFIG_FILE)).unwrap();
        assert!(text.contains("max_blobs = \"unbounded\""), "{text}");
        // The second start reads the file and says nothing.
        let (again, note) = load_or_migrate(home).unwrap();
        assert_eq!(again, c);
        assert!(note.is_none());
    }
}
