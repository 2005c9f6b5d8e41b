//! The server daemon: publishes its onion service, serves anonymous
//! clients, stores blobs durably.

use std::path::Path;

use cwtch_proto::Identity;
use cwtch_transport_socks::AnyTransport;

use crate::clock;

/// The server's key file inside its home directory (mode 0600).
pub const KEY_FILE: &str = "server.key";

/// Creates a server identity in `home`.
pub fn init(home: &Path, json: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
    crate::peer::restrict_dir(home);
    let identity = Identity::generate(&mut clock::rng());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(home.join(KEY_FILE))
        .map_err(|e| format!("cannot create the server key in {}: {e}", home.display()))?;
    file.write_all(identity.seed().as_ref())
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot write the server key: {e}"))?;
    print_info(&identity, json);
    Ok(())
}

/// Loads the server identity.
pub fn load_identity(home: &Path) -> Result<Identity, String> {
    let bytes = std::fs::read(home.join(KEY_FILE)).map_err(|e| {
        format!(
            "no server in {} ({e}): run `cwtch-node --home {} server init`",
            home.display(),
            home.display()
        )
    })?;
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| "the server key file is damaged".to_string())?;
    Ok(Identity::from_seed(&seed))
}

/// The paste-able string peers need.
pub fn paste_string(identity: &Identity) -> String {
    format!("cwtch-server:{}", identity.address())
}

fn print_info(identity: &Identity, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({"address": identity.address().to_string(), "server": paste_string(identity)})
        );
    } else {
        println!("{}", paste_string(identity));
    }
}

/// Prints the server's paste-able string.
pub fn info(home: &Path, json: bool) -> Result<(), String> {
    let identity = load_identity(home)?;
    print_info(&identity, json);
    Ok(())
}

/// Runs the server until the process ends.
pub async fn run(home: &Path, transport: AnyTransport) -> Result<(), String> {
    let _identity = load_identity(home)?;
    let _ = transport;
    Err("the server daemon is not built yet".into())
}
