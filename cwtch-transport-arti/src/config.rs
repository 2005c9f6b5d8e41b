//! What the caller decides (where arti keeps its files, which Tor network)
//! and how that becomes arti's [`TorClientConfig`].

use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;
use std::path::PathBuf;

use arti_client::TorClientConfig;
use arti_client::config::TorClientConfigBuilder;
use arti_client::config::dir::FallbackDirBuilder;
use tor_config::ExplicitOrAuto;
use tor_guardmgr::VanguardMode;
use tor_keymgr::config::ArtiKeystoreKind;
use tor_linkspec::HasAddrs;

/// Default time allowed for [`crate::ArtiTransport::bootstrap`].
pub const DEFAULT_BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(180);

/// Where arti keeps its files and which Tor network it joins.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArtiConfig {
    /// The directory arti may write to (the profile's home, or a folder in
    /// it). Arti's state goes to `state_dir/state` and its directory cache
    /// to `state_dir/cache`; nothing is written elsewhere. Keys never go
    /// there: the keystore is in memory only.
    pub state_dir: PathBuf,
    /// The public Tor network, or a private one.
    pub network: Network,
    /// Time allowed for bootstrapping before it is given up.
    pub bootstrap_timeout: Duration,
}

impl ArtiConfig {
    /// A configuration with the default bootstrap timeout.
    pub fn new(state_dir: impl Into<PathBuf>, network: Network) -> Self {
        ArtiConfig {
            state_dir: state_dir.into(),
            network,
            bootstrap_timeout: DEFAULT_BOOTSTRAP_TIMEOUT,
        }
    }

    /// Where arti's persistent state goes.
    pub fn arti_state_dir(&self) -> PathBuf {
        self.state_dir.join("state")
    }

    /// Where arti's directory cache goes.
    pub fn arti_cache_dir(&self) -> PathBuf {
        self.state_dir.join("cache")
    }
}

/// Which Tor network to join.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Network {
    /// The Tor network, with arti's built-in authorities and fallbacks.
    Public,
    /// A private network (tests: see `cwtch_transport_socks::testnet`).
    Private(PrivateNetwork),
}

/// A private Tor network: who signs its consensus, where to fetch it first.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrivateNetwork {
    /// Its directory authorities.
    pub authorities: Vec<DirAuthority>,
    /// Where to download the first consensus (usually the authorities'
    /// ORPorts).
    pub fallbacks: Vec<FallbackDir>,
    /// Consensus parameters to override locally (`name`, value), as arti's
    /// `override_net_params`. Empty: take the consensus as it is. The
    /// network's own `ConsensusParams` are the better place for settings
    /// every client should share.
    pub net_params: Vec<(String, i32)>,
}

impl PrivateNetwork {
    /// A network of these authorities, fetched first from these fallbacks.
    pub fn new(authorities: Vec<DirAuthority>, fallbacks: Vec<FallbackDir>) -> Self {
        PrivateNetwork {
            authorities,
            fallbacks,
            net_params: Vec::new(),
        }
    }
}

impl PrivateNetwork {
    /// Reads a network from its text form, one item per line (`#` starts
    /// a comment; `cwtch_transport_socks::testnet` writes such files for
    /// the node's `--tor-network`):
    ///
    /// ```text
    /// authority v3ident=<40 hex digits> dir=<ip:port>
    /// fallback rsa=<40 hex digits> ed25519=<base64> orport=<ip:port>
    /// net_param <name>=<integer>
    /// ```
    ///
    /// `authority` gives a directory authority (its v3 identity and
    /// DirPort), `fallback` a relay to fetch the first consensus from (its
    /// identities and ORPort), `net_param` a consensus parameter to
    /// override. At least one authority and one fallback are needed.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut net = PrivateNetwork::new(Vec::new(), Vec::new());
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let bad = |what: &'static str| ParseError {
                what,
                input: line.to_owned(),
            };
            let mut words = line.split_whitespace();
            let kind = words.next().unwrap_or_default();
            let fields: Vec<(&str, &str)> = words
                .map(|w| w.split_once('=').ok_or_else(|| bad("NAME=VALUE field")))
                .collect::<Result<_, _>>()?;
            let field = |name: &str, what: &'static str| {
                fields
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| bad(what))
            };
            // Only loopback: the built-in Tor turns its path protections
            // off for a private network (relays on one address), so a
            // file naming real hosts must not put a user on someone's
            // network that way.
            let addr = |name: &str, what: &'static str| -> Result<SocketAddr, ParseError> {
                let a: SocketAddr = field(name, what)?.parse().map_err(|_| bad(what))?;
                if !a.ip().is_loopback() {
                    return Err(bad(
                        "loopback address (a private network runs on 127.0.0.0/8 or ::1)",
                    ));
                }
                Ok(a)
            };
            match kind {
                "authority" => net.authorities.push(DirAuthority::from_hex(
                    field(
                        "v3ident",
                        "authority line (authority v3ident=HEX dir=IP:PORT)",
                    )?,
                    addr("dir", "authority line (authority v3ident=HEX dir=IP:PORT)")?,
                )?),
                "fallback" => {
                    let what = "fallback line (fallback rsa=HEX ed25519=BASE64 orport=IP:PORT)";
                    net.fallbacks.push(FallbackDir::from_text(
                        field("rsa", what)?,
                        field("ed25519", what)?,
                        addr("orport", what)?,
                    )?)
                }
                "net_param" => {
                    let what = "net_param line (net_param NAME=INTEGER)";
                    let [(name, value)] = fields.as_slice() else {
                        return Err(bad(what));
                    };
                    let value = value.parse().map_err(|_| bad(what))?;
                    net.net_params.push(((*name).to_owned(), value));
                }
                _ => {
                    return Err(bad(
                        "private network line (authority, fallback or net_param)",
                    ));
                }
            }
        }
        if net.authorities.is_empty() || net.fallbacks.is_empty() {
            return Err(ParseError {
                what: "private network (it needs an authority and a fallback line)",
                input: text.chars().take(80).collect(),
            });
        }
        Ok(net)
    }

    /// The text form [`PrivateNetwork::parse`] reads.
    pub fn to_text(&self) -> String {
        let mut out = String::from("# A private Tor network for the built-in Tor (arti).\n");
        for a in &self.authorities {
            out.push_str(&format!(
                "authority v3ident={} dir={}\n",
                data_encoding::HEXUPPER.encode(&a.v3ident),
                a.dir_addr
            ));
        }
        for f in &self.fallbacks {
            out.push_str(&format!(
                "fallback rsa={} ed25519={} orport={}\n",
                data_encoding::HEXUPPER.encode(&f.rsa_identity),
                data_encoding::BASE64_NOPAD.encode(&f.ed_identity),
                f.or_addr
            ));
        }
        for (name, value) in &self.net_params {
            out.push_str(&format!("net_param {name}={value}\n"));
        }
        out
    }

    /// Every address this network names (authorities' DirPorts,
    /// fallbacks' ORPorts).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.authorities
            .iter()
            .map(|a| a.dir_addr)
            .chain(self.fallbacks.iter().map(|f| f.or_addr))
            .collect()
    }
}

/// A directory authority of a private network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirAuthority {
    /// Its v3 identity: the SHA-1 of its authority identity key (the
    /// `fingerprint` line of its `authority_certificate`).
    pub v3ident: [u8; 20],
    /// Its DirPort.
    pub dir_addr: SocketAddr,
}

/// A relay to fetch the first consensus from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FallbackDir {
    /// Its RSA identity (tor's `fingerprint` file).
    pub rsa_identity: [u8; 20],
    /// Its ed25519 identity (tor's `fingerprint-ed25519` file).
    pub ed_identity: [u8; 32],
    /// Its ORPort.
    pub or_addr: SocketAddr,
}

/// A value given in text does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    what: &'static str,
    input: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a valid {}", self.input, self.what)
    }
}

impl core::error::Error for ParseError {}

fn hex20(what: &'static str, text: &str) -> Result<[u8; 20], ParseError> {
    let err = || ParseError {
        what,
        input: text.to_owned(),
    };
    let compact: String = text.split_whitespace().collect();
    let bytes = data_encoding::HEXUPPER_PERMISSIVE
        .decode(compact.as_bytes())
        .map_err(|_| err())?;
    bytes.try_into().map_err(|_| err())
}

impl DirAuthority {
    /// From the v3 identity in hex (40 digits, spaces allowed).
    pub fn from_hex(v3ident: &str, dir_addr: SocketAddr) -> Result<Self, ParseError> {
        Ok(DirAuthority {
            v3ident: hex20("v3 identity (40 hex digits)", v3ident)?,
            dir_addr,
        })
    }
}

impl FallbackDir {
    /// From tor's text forms: the RSA fingerprint in hex and the ed25519
    /// identity in base64 (padding optional).
    pub fn from_text(
        rsa_identity: &str,
        ed_identity: &str,
        or_addr: SocketAddr,
    ) -> Result<Self, ParseError> {
        let ed_err = || ParseError {
            what: "ed25519 identity (base64 of 32 bytes)",
            input: ed_identity.to_owned(),
        };
        let ed = data_encoding::BASE64_NOPAD
            .decode(ed_identity.trim().trim_end_matches('=').as_bytes())
            .map_err(|_| ed_err())?;
        Ok(FallbackDir {
            rsa_identity: hex20("RSA fingerprint (40 hex digits)", rsa_identity)?,
            ed_identity: ed.try_into().map_err(|_| ed_err())?,
            or_addr,
        })
    }
}

/// Arti refused the configuration we built (a bug in this crate, or a
/// value arti does not accept).
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "arti refused the configuration: {}", self.0)
    }
}

impl core::error::Error for ConfigError {}

/// Builds arti's configuration. Every address in it comes from `config`:
/// for a private network no public authority or fallback is left in (arti's
/// defaults carry the public authorities' addresses for uploads, downloads
/// and votes, so each list is replaced, not just the identities).
pub fn tor_client_config(config: &ArtiConfig) -> Result<TorClientConfig, ConfigError> {
    let mut b =
        TorClientConfigBuilder::from_directories(config.arti_state_dir(), config.arti_cache_dir());
    // The identity key is handed to arti at `listen`; an in-memory
    // keystore keeps it (and the keys arti derives) off the disk.
    b.storage()
        .keystore()
        .primary()
        .kind(ExplicitOrAuto::Explicit(ArtiKeystoreKind::Ephemeral));
    if let Network::Private(net) = &config.network {
        private_network(&mut b, net);
    }
    b.build().map_err(|e| ConfigError(e.to_string()))
}

fn private_network(b: &mut TorClientConfigBuilder, net: &PrivateNetwork) {
    {
        let authorities = b.tor_network().authorities();
        *authorities.v3idents() = net.authorities.iter().map(|a| a.v3ident.into()).collect();
        let dir_addrs: Vec<Vec<SocketAddr>> =
            net.authorities.iter().map(|a| vec![a.dir_addr]).collect();
        *authorities.uploads() = dir_addrs.clone();
        *authorities.downloads() = dir_addrs.clone();
        *authorities.votes() = dir_addrs;
    }
    let fallbacks: Vec<FallbackDirBuilder> = net
        .fallbacks
        .iter()
        .map(|f| {
            let mut fb = FallbackDirBuilder::default();
            fb.rsa_identity(f.rsa_identity.into())
                .ed_identity(f.ed_identity.into());
            fb.orports().push(f.or_addr);
            fb
        })
        .collect();
    b.tor_network().set_fallback_caches(fallbacks);
    // Every relay is on 127.0.0.1: without this arti refuses to put two of
    // them in one circuit (same /16).
    b.path_rules()
        .ipv4_subnet_family_prefix(33)
        .ipv6_subnet_family_prefix(129);
    b.address_filter().allow_local_addrs(true);
    // Vanguards pin the middle hops of onion-service circuits to a few
    // relays; on a network of a handful of relays they collide with the
    // rest of the path (C tor's test network turns them off for the same
    // reason: `VanguardsLiteEnabled 0`).
    b.vanguards()
        .mode(ExplicitOrAuto::Explicit(VanguardMode::Disabled));
    for (name, value) in &net.net_params {
        b.override_net_params().insert(name.clone(), *value);
    }
}

/// Every socket address a configuration tells arti to contact on its own:
/// authorities (uploads, downloads, votes) and fallback caches.
pub fn configured_addresses(config: &TorClientConfig) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    if let Ok(dir) = config.dir_mgr_config() {
        let authorities = dir.network.authorities();
        for list in [
            authorities.uploads(),
            authorities.downloads(),
            authorities.votes(),
        ] {
            out.extend(list.iter().flatten().copied());
        }
        for fallback in dir.network.fallback_caches().iter() {
            out.extend(fallback.addrs());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr};

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    fn private() -> PrivateNetwork {
        let authorities = (0..3)
            .map(|i| DirAuthority {
                v3ident: [i as u8 + 1; 20],
                dir_addr: loopback(7000 + i),
            })
            .collect();
        let fallbacks = (0..3)
            .map(|i| FallbackDir {
                rsa_identity: [i as u8 + 10; 20],
                ed_identity: [i as u8 + 20; 32],
                or_addr: loopback(5000 + i),
            })
            .collect();
        PrivateNetwork::new(authorities, fallbacks)
    }

    #[test]
    fn a_private_network_config_names_only_loopback_addresses() {
        let dir = PathBuf::from("/nonexistent/profile");
        let config = ArtiConfig::new(&dir, Network::Private(private()));
        let built = tor_client_config(&config).unwrap();
        let addrs = configured_addresses(&built);
        // 3 authorities x (upload, download, vote) + 3 fallbacks.
        assert_eq!(addrs.len(), 12, "{addrs:?}");
        for a in &addrs {
            assert_eq!(a.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST), "{addrs:?}");
        }
        let dir_config = built.dir_mgr_config().unwrap();
        let v3: Vec<_> = dir_config.network.authorities().v3idents().clone();
        assert_eq!(v3.len(), 3);
        assert_eq!(v3[0].as_bytes(), &[1; 20]);
        // Arti's cache is inside the given directory.
        assert!(dir_config.cache_dir.starts_with(&dir));
    }

    #[test]
    fn the_public_config_keeps_arti_defaults() {
        let config = ArtiConfig::new("/nonexistent/profile", Network::Public);
        let built = tor_client_config(&config).unwrap();
        // Arti's compiled-in authorities and fallbacks: public addresses.
        assert!(
            configured_addresses(&built)
                .iter()
                .any(|a| !a.ip().is_loopback())
        );
    }

    #[test]
    fn the_keystore_is_in_memory() {
        for network in [Network::Public, Network::Private(private())] {
            let config = ArtiConfig::new("/nonexistent/profile", network);
            let built = tor_client_config(&config).unwrap();
            assert_eq!(
                built.keystore().primary_kind(),
                Some(ArtiKeystoreKind::Ephemeral)
            );
        }
    }

    #[test]
    fn net_params_override() {
        let mut net = private();
        net.net_params.push(("hsdir_interval".into(), 6));
        let config = ArtiConfig::new("/nonexistent/profile", Network::Private(net));
        let built = tor_client_config(&config).unwrap();
        let dir = built.dir_mgr_config().unwrap();
        assert_eq!(dir.override_net_params.get("hsdir_interval"), Some(&6));
    }

    #[test]
    fn private_network_text_round_trip() {
        let mut net = private();
        net.net_params.push(("hsdir_interval".into(), 6));
        let text = net.to_text();
        assert_eq!(PrivateNetwork::parse(&text).unwrap(), net, "{text}");
        assert_eq!(net.addresses().len(), 6);
        // Comments, blank lines, any order.
        let text = format!(
            "\n# hi\n{}\n",
            text.lines().rev().collect::<Vec<_>>().join("\n")
        );
        let back = PrivateNetwork::parse(&text).unwrap();
        assert_eq!(back.authorities.len(), 3);
        assert_eq!(back.fallbacks.len(), 3);
        for bad in [
            "",
            "authority v3ident=00 dir=127.0.0.1:1",
            "fallback rsa=00",
            "bogus x=y",
            "net_param a=b",
            "authority v3ident=DC4CED069F1C1369790635892FB5943C5A62CA7E dir=nowhere",
            "authority v3ident=DC4CED069F1C1369790635892FB5943C5A62CA7E",
        ] {
            assert!(PrivateNetwork::parse(bad).is_err(), "{bad:?}");
        }
        // Only authorities: no fallback to start from.
        let only = "authority v3ident=DC4CED069F1C1369790635892FB5943C5A62CA7E dir=127.0.0.1:1";
        let e = PrivateNetwork::parse(only).unwrap_err();
        assert!(
            e.to_string().contains("needs an authority and a fallback"),
            "{e}"
        );
    }

    /// A network file naming a host off this machine is refused, for an
    /// authority and for a fallback alike.
    #[test]
    fn a_private_network_is_on_loopback_only() {
        let text = private().to_text();
        assert!(PrivateNetwork::parse(&text).is_ok());
        for (from, to) in [
            ("dir=127.0.0.1:", "dir=1.2.3.4:"),
            ("orport=127.0.0.1:", "orport=192.168.1.9:"),
        ] {
            let moved = text.replacen(from, to, 1);
            assert_ne!(moved, text, "{from} is in the text");
            let e = PrivateNetwork::parse(&moved).unwrap_err();
            assert!(e.to_string().contains("loopback"), "{e}");
        }
    }

    #[test]
    fn parse_tor_text_forms() {
        let a = DirAuthority::from_hex("DC4CED069F1C1369790635892FB5943C5A62CA7E", loopback(1))
            .unwrap();
        assert_eq!(a.v3ident[0], 0xDC);
        let f = FallbackDir::from_text(
            "DC4C ED06 9F1C 1369 7906 3589 2FB5 943C 5A62 CA7E",
            "zc4ShTh8xMyfeDsZMBsxjw4iHlgH8MKfE0x4uOP0ySE",
            loopback(2),
        )
        .unwrap();
        assert_eq!(f.rsa_identity, a.v3ident);
        assert!(FallbackDir::from_text("00", "zc4S", loopback(2)).is_err());
        assert!(DirAuthority::from_hex("XYZ", loopback(1)).is_err());
        assert!(
            ParseError {
                what: "x",
                input: "y".into()
            }
            .to_string()
            .contains("not a valid")
        );
    }
}
