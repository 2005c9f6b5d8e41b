//! Control port authentication: `PROTOCOLINFO` and the SAFECOOKIE
//! challenge-response (control-spec sections 3.21, 3.24).
//!
//! Everything here is pure: the client does the I/O.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::reply::{ParseError, Reply, arg, split_args};

/// HMAC key of the hash the server proves its knowledge of the cookie with.
pub const SERVER_TO_CONTROLLER: &[u8] = b"Tor safe cookie authentication server-to-controller hash";
/// HMAC key of the hash we prove our knowledge of the cookie with.
pub const CONTROLLER_TO_SERVER: &[u8] = b"Tor safe cookie authentication controller-to-server hash";
/// Length of the authentication cookie file.
pub const COOKIE_LEN: usize = 32;
/// Length of each SAFECOOKIE nonce.
pub const NONCE_LEN: usize = 32;

/// What `PROTOCOLINFO 1` told us.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtocolInfo {
    /// Offered methods, upper case: `NULL`, `HASHEDPASSWORD`, `COOKIE`, `SAFECOOKIE`.
    pub methods: Vec<String>,
    /// Where tor keeps the cookie, if it uses one.
    pub cookie_file: Option<String>,
    /// Tor's version string, if given.
    pub tor_version: Option<String>,
}

impl ProtocolInfo {
    /// Whether `method` is offered.
    pub fn offers(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == method)
    }
}

/// Reads the `AUTH` and `VERSION` lines of a `PROTOCOLINFO` answer.
pub fn parse_protocol_info(reply: &Reply) -> Result<ProtocolInfo, ParseError> {
    let mut info = ProtocolInfo::default();
    let mut saw_auth = false;
    for line in &reply.lines {
        if let Some(rest) = line.text.strip_prefix("AUTH ") {
            let args = split_args(rest)?;
            let methods = arg(&args, "METHODS").ok_or(ParseError::BadField {
                what: "AUTH METHODS",
            })?;
            info.methods = methods
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect();
            info.cookie_file = arg(&args, "COOKIEFILE").map(str::to_owned);
            saw_auth = true;
        } else if let Some(rest) = line.text.strip_prefix("VERSION ") {
            let args = split_args(rest)?;
            info.tor_version = arg(&args, "Tor").map(str::to_owned);
        }
    }
    if !saw_auth {
        return Err(ParseError::BadField {
            what: "PROTOCOLINFO AUTH line",
        });
    }
    Ok(info)
}

/// Tor's answer to `AUTHCHALLENGE SAFECOOKIE <client nonce>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthChallenge {
    /// HMAC the server computed with [`SERVER_TO_CONTROLLER`].
    pub server_hash: [u8; 32],
    /// The server's nonce.
    pub server_nonce: [u8; NONCE_LEN],
}

/// Parses `250 AUTHCHALLENGE SERVERHASH=<hex> SERVERNONCE=<hex>`.
pub fn parse_auth_challenge(reply: &Reply) -> Result<AuthChallenge, ParseError> {
    let bad = ParseError::BadField {
        what: "AUTHCHALLENGE",
    };
    let text = reply
        .first_text()
        .strip_prefix("AUTHCHALLENGE ")
        .ok_or(bad.clone())?;
    let args = split_args(text)?;
    let hash = decode_hex32(arg(&args, "SERVERHASH").ok_or(bad.clone())?).ok_or(bad.clone())?;
    let nonce = decode_hex32(arg(&args, "SERVERNONCE").ok_or(bad.clone())?).ok_or(bad)?;
    Ok(AuthChallenge {
        server_hash: hash,
        server_nonce: nonce,
    })
}

fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = data_encoding::HEXUPPER_PERMISSIVE
        .decode(text.to_ascii_uppercase().as_bytes())
        .ok()?;
    bytes.try_into().ok()
}

fn safecookie_mac(
    key: &[u8],
    cookie: &[u8],
    client_nonce: &[u8],
    server_nonce: &[u8],
) -> Hmac<Sha256> {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(cookie);
    mac.update(client_nonce);
    mac.update(server_nonce);
    mac
}

/// Checks tor's `SERVERHASH` in constant time: true when tor knows the cookie.
pub fn verify_server_hash(cookie: &[u8], client_nonce: &[u8], challenge: &AuthChallenge) -> bool {
    safecookie_mac(
        SERVER_TO_CONTROLLER,
        cookie,
        client_nonce,
        &challenge.server_nonce,
    )
    .verify_slice(&challenge.server_hash)
    .is_ok()
}

/// The hash to send with `AUTHENTICATE` after a SAFECOOKIE challenge.
pub fn client_hash(cookie: &[u8], client_nonce: &[u8], server_nonce: &[u8]) -> [u8; 32] {
    let out = safecookie_mac(CONTROLLER_TO_SERVER, cookie, client_nonce, server_nonce)
        .finalize()
        .into_bytes();
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&out);
    hash
}

/// Quotes a string for the control protocol (`"..."` with `\` escapes).
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::super::reply::ReplyParser;
    use super::*;

    fn reply(bytes: &[u8]) -> Reply {
        let mut p = ReplyParser::new();
        p.push(bytes).unwrap();
        p.next_reply().unwrap().unwrap()
    }

    #[test]
    fn protocol_info() {
        let r = reply(b"250-PROTOCOLINFO 1\r\n250-AUTH METHODS=COOKIE,SAFECOOKIE,HASHEDPASSWORD COOKIEFILE=\"/var/lib/tor/control_auth_cookie\"\r\n250-VERSION Tor=\"0.4.9.11\"\r\n250 OK\r\n");
        let info = parse_protocol_info(&r).unwrap();
        assert!(info.offers("SAFECOOKIE"));
        assert!(info.offers("HASHEDPASSWORD"));
        assert!(!info.offers("NULL"));
        assert_eq!(
            info.cookie_file.as_deref(),
            Some("/var/lib/tor/control_auth_cookie")
        );
        assert_eq!(info.tor_version.as_deref(), Some("0.4.9.11"));
        let r = reply(b"250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250 OK\r\n");
        assert_eq!(
            parse_protocol_info(&r).unwrap().methods,
            vec!["NULL".to_string()]
        );
        let r = reply(b"250-PROTOCOLINFO 1\r\n250 OK\r\n");
        assert!(parse_protocol_info(&r).is_err());
    }

    #[test]
    fn safecookie_round_trip() {
        // A server built from the same spec formulas: our check accepts it,
        // and a server that does not know the cookie is refused.
        let cookie = [7u8; 32];
        let client_nonce = [1u8; 32];
        let server_nonce = [2u8; 32];
        let server_hash =
            safecookie_mac(SERVER_TO_CONTROLLER, &cookie, &client_nonce, &server_nonce)
                .finalize()
                .into_bytes();
        let line = format!(
            "250 AUTHCHALLENGE SERVERHASH={} SERVERNONCE={}\r\n",
            data_encoding::HEXUPPER.encode(&server_hash),
            data_encoding::HEXLOWER.encode(&server_nonce)
        );
        let ch = parse_auth_challenge(&reply(line.as_bytes())).unwrap();
        assert!(verify_server_hash(&cookie, &client_nonce, &ch));
        assert!(!verify_server_hash(&[8u8; 32], &client_nonce, &ch));
        assert_ne!(
            client_hash(&cookie, &client_nonce, &server_nonce)[..],
            server_hash[..]
        );
    }

    #[test]
    fn safecookie_known_answer() {
        // HMAC-SHA256 computed independently (Python hmac module) for
        // cookie = 00..1f, client nonce = 20..3f, server nonce = 40..5f.
        let cookie: Vec<u8> = (0u8..32).collect();
        let cn: Vec<u8> = (32u8..64).collect();
        let sn: Vec<u8> = (64u8..96).collect();
        let h = client_hash(&cookie, &cn, &sn);
        assert_eq!(data_encoding::HEXLOWER.encode(&h), KNOWN_CLIENT_HASH);
    }

    const KNOWN_CLIENT_HASH: &str =
        "b47642df2d5abb84f69e6d02d41bed6b44aee33e69562528a82166fc98bc0b1e";

    #[test]
    fn challenge_malformed() {
        assert!(
            parse_auth_challenge(&reply(
                b"250 AUTHCHALLENGE SERVERHASH=zz SERVERNONCE=00\r\n"
            ))
            .is_err()
        );
        assert!(parse_auth_challenge(&reply(b"250 OK\r\n")).is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
