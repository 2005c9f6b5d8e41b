//! Server adverts (SPEC.md section 13): the vector, misuse, and the
//! request/reply pair that fetches one from a server session.

mod server_common;

use cwtch_proto::Identity;
use cwtch_proto::server::advert::{
    ADVERT_BODY_LEN, ADVERT_LEN, ADVERT_SIGNATURE_LABEL, AdvertError, MAX_ADVERT_LIFETIME_SECS,
    Requirements, Retention, ServerAdvert,
};
use cwtch_proto::server::client::{ClientConfig, ClientEvent, ServerClient};
use cwtch_proto::server::wire::{ADVERT_REPLY_LEN, MAX_SERVER_MESSAGE_LEN, TAG_ADVERT};
use cwtch_proto::server::{
    RefusalReason, Reply, Request, RequestKind, ServerConfig, ServerRefusal, ServerSession,
};
use cwtch_proto::{Instant, OnionAddress};
use server_common::*;

const ISSUED: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const WEEK: u64 = 7 * 86_400;

fn server() -> Identity {
    Identity::from_seed(&[0x42; 32])
}

fn advert(id: &Identity) -> ServerAdvert {
    ServerAdvert {
        server: id.public(),
        issued_at: ISSUED,
        expires_at: ISSUED + WEEK,
        requirements: Requirements {
            pow_bits: 16,
            rate_burst: 32,
            rate_interval_ms: 500,
            max_connections: 10_000,
        },
        retention: Retention {
            max_entries: 100_000,
            max_bytes: 1 << 30,
            max_age_secs: 30 * 86_400,
        },
    }
}

/// The vector of SPEC.md section 13, field by field (the signature was
/// also checked with Python's `cryptography` Ed25519).
const VECTOR: [&str; 12] = [
    "01",                                                               // version
    "2152f8d19b791d24453242e15f2eab6cb7cffa7b6a5ed30097960e069881db12", // server key (seed 0x42 x 32)
    "00b9556900000000",                                                 // issued_at 2026-01-01
    "80f35e6900000000",                                                 // expires_at + 7 days
    "10",                                                               // pow_bits 16
    "2000",                                                             // rate_burst 32
    "f4010000",                                                         // rate_interval_ms 500
    "10270000",                                                         // max_connections 10 000
    "a086010000000000",                                                 // max_entries 100 000
    "0000004000000000",                                                 // max_bytes 1 GiB
    "008d270000000000",                                                 // max_age_secs 30 days
    // signature
    "5447a2f61f05e48cb9bfd67d4b77318b98502c7ef2f0c86af488026cf613923e\
     f6d41617bc6902342345d19654b589e15be60b2ef6f7340560cf5f7860099c0f",
];

const SERVER_ADDRESS: &str = "efjprum3peosirjsilqv6lvlns3476t3njpngaexsyhangeb3mjo7sad";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn vector_is_fixed() {
    let id = server();
    let bytes = advert(&id).sign(&id).unwrap();
    assert_eq!(ADVERT_LEN, 148);
    assert_eq!(
        hex(&bytes),
        VECTOR.concat().replace(char::is_whitespace, "")
    );
    assert_eq!(id.address().to_string(), SERVER_ADDRESS);
    assert_eq!(ServerAdvert::decode(&bytes), Ok(advert(&id)));
}

#[test]
fn verify_accepts_inside_the_window_only() {
    let id = server();
    let bytes = advert(&id).sign(&id).unwrap();
    let me = Some(id.public());
    assert_eq!(
        ServerAdvert::verify(&bytes, me.as_ref(), ISSUED),
        Ok(advert(&id))
    );
    assert_eq!(
        ServerAdvert::verify(&bytes, None, ISSUED + WEEK - 1).map(|a| a.server),
        Ok(id.public())
    );
    assert_eq!(
        ServerAdvert::verify(&bytes, me.as_ref(), ISSUED + WEEK),
        Err(AdvertError::Expired)
    );
    // A little clock skew is tolerated, not more.
    assert!(ServerAdvert::verify(&bytes, me.as_ref(), ISSUED - 3_600).is_ok());
    assert_eq!(
        ServerAdvert::verify(&bytes, me.as_ref(), ISSUED - 3_601),
        Err(AdvertError::NotYetValid)
    );
}

#[test]
fn an_advert_of_another_server_is_refused() {
    let id = server();
    let other = Identity::from_seed(&[0x43; 32]);
    let bytes = advert(&id).sign(&id).unwrap();
    assert_eq!(
        ServerAdvert::verify(&bytes, Some(&other.public()), ISSUED),
        Err(AdvertError::WrongServer)
    );
    // Nobody else can sign for the server...
    assert_eq!(advert(&id).sign(&other), Err(AdvertError::WrongSigner));
    // ...and a body naming the server signed by another key fails.
    let mut forged = bytes;
    let mut signed = ADVERT_SIGNATURE_LABEL.to_vec();
    signed.extend_from_slice(&bytes[..ADVERT_BODY_LEN]);
    forged[ADVERT_BODY_LEN..].copy_from_slice(&other.sign(&signed));
    assert_eq!(
        ServerAdvert::decode(&forged),
        Err(AdvertError::BadSignature)
    );
    // Replacing the key with the forger's makes it the forger's advert.
    let mut swapped = forged;
    swapped[1..33].copy_from_slice(other.public().as_bytes());
    assert_eq!(
        ServerAdvert::decode(&swapped),
        Err(AdvertError::BadSignature)
    );
}

#[test]
fn every_bit_flip_is_refused() {
    let id = server();
    let bytes = advert(&id).sign(&id).unwrap();
    for byte in 0..ADVERT_LEN {
        for bit in 0..8 {
            let mut b = bytes;
            b[byte] ^= 1 << bit;
            let r = ServerAdvert::verify(&b, Some(&id.public()), ISSUED);
            assert!(r.is_err(), "flip of bit {bit} of byte {byte} accepted");
        }
    }
}

#[test]
fn wrong_lengths_and_versions_are_refused() {
    let id = server();
    let bytes = advert(&id).sign(&id).unwrap();
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert_eq!(ServerAdvert::decode(&longer), Err(AdvertError::Malformed));
    assert_eq!(
        ServerAdvert::decode(&bytes[..ADVERT_LEN - 1]),
        Err(AdvertError::Malformed)
    );
    assert_eq!(ServerAdvert::decode(&[]), Err(AdvertError::Malformed));
    let mut v2 = bytes;
    v2[0] = 2;
    assert_eq!(
        ServerAdvert::decode(&v2),
        Err(AdvertError::UnsupportedVersion(2))
    );
}

/// Signs an arbitrary body with the server's key (what a buggy or hostile
/// server could send): the fields are still checked.
fn sign_raw(id: &Identity, body: &[u8; ADVERT_BODY_LEN]) -> [u8; ADVERT_LEN] {
    let mut signed = ADVERT_SIGNATURE_LABEL.to_vec();
    signed.extend_from_slice(body);
    let mut out = [0u8; ADVERT_LEN];
    out[..ADVERT_BODY_LEN].copy_from_slice(body);
    out[ADVERT_BODY_LEN..].copy_from_slice(&id.sign(&signed));
    out
}

#[test]
fn signed_but_invalid_fields_are_refused() {
    let id = server();
    let good = advert(&id).sign(&id).unwrap();
    let body: [u8; ADVERT_BODY_LEN] = good[..ADVERT_BODY_LEN].try_into().unwrap();
    assert!(ServerAdvert::decode(&sign_raw(&id, &body)).is_ok());
    // expires_at (offset 41) before issued_at: an empty window.
    let mut b = body;
    b[41..49].copy_from_slice(&(ISSUED - 1).to_le_bytes());
    assert_eq!(
        ServerAdvert::decode(&sign_raw(&id, &b)),
        Err(AdvertError::Malformed)
    );
    // A window longer than the maximum.
    let mut b = body;
    b[41..49].copy_from_slice(&(ISSUED + MAX_ADVERT_LIFETIME_SECS + 1).to_le_bytes());
    assert_eq!(
        ServerAdvert::decode(&sign_raw(&id, &b)),
        Err(AdvertError::Malformed)
    );
    // A difficulty over the protocol's cap (offset 49).
    let mut b = body;
    b[49] = 41;
    assert_eq!(
        ServerAdvert::decode(&sign_raw(&id, &b)),
        Err(AdvertError::Malformed)
    );
    // sign() refuses the same.
    let mut a = advert(&id);
    a.expires_at = a.issued_at;
    assert_eq!(a.sign(&id), Err(AdvertError::Malformed));
}

#[test]
fn the_address_is_the_key() {
    let id = server();
    let bytes = advert(&id).sign(&id).unwrap();
    let a = ServerAdvert::decode(&bytes).unwrap();
    let address: OnionAddress = a.server.address();
    assert_eq!(address, id.address());
    assert_eq!(
        ServerAdvert::verify(&bytes, Some(&address.public_identity()), ISSUED),
        Ok(a)
    );
}

// ----- fetching an advert over the server protocol ----------------------

fn request(r: Request<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; r.encoded_len()];
    r.encode(&mut buf).unwrap();
    buf
}

#[test]
fn wire_encoding_of_the_pair() {
    assert_eq!(request(Request::GetAdvert), vec![0x06]);
    assert_eq!(Request::decode(&[0x06]), Ok(Request::GetAdvert));
    assert!(Request::decode(&[0x06, 0]).is_err());
    let id = server();
    let bytes = advert(&id).sign(&id).unwrap();
    let reply = Reply::Advert { advert: &bytes };
    let mut buf = vec![0u8; MAX_SERVER_MESSAGE_LEN];
    let n = reply.encode(&mut buf).unwrap();
    assert_eq!(n, ADVERT_REPLY_LEN);
    assert_eq!(buf[0], TAG_ADVERT);
    assert_eq!(&buf[1..n], &bytes[..]);
    assert_eq!(Reply::decode(&buf[..n]), Ok(reply));
    assert!(Reply::decode(&buf[..n - 1]).is_err());
}

fn session_and_client(store: &MemStore) -> (ServerSession, ServerClient) {
    let now = Instant::from_secs(1);
    let mut server = ServerSession::new(ServerConfig::default(), store, &mut rng(1), now);
    let config = ClientConfig {
        auto_sync: false,
        ..ClientConfig::default()
    };
    let mut client = ServerClient::new(config, 0, &mut rng(2));
    let mut buf = vec![0u8; MAX_SERVER_MESSAGE_LEN];
    let n = server.poll_transmit(store, &mut buf).unwrap().unwrap();
    client.handle_message(&buf[..n], Instant::ZERO).unwrap();
    assert!(matches!(
        client.poll_event(),
        Some(ClientEvent::Connected(_))
    ));
    (server, client)
}

fn exchange(server: &mut ServerSession, client: &mut ServerClient, store: &mut MemStore) {
    let now = Instant::from_secs(1);
    let mut buf = vec![0u8; MAX_SERVER_MESSAGE_LEN];
    let n = client
        .poll_transmit(Instant::ZERO, &mut buf)
        .unwrap()
        .expect("a request");
    assert_eq!(&buf[..n], &[0x06]);
    server.handle_message(&buf[..n], now, store).unwrap();
    let n = server.poll_transmit(store, &mut buf).unwrap().unwrap();
    client.handle_message(&buf[..n], Instant::ZERO).unwrap();
}

#[test]
fn a_client_fetches_the_advert_from_the_session() {
    let id = server();
    let bytes = advert(&id).sign(&id).unwrap();
    let mut store = MemStore {
        advert: Some(bytes),
        ..MemStore::default()
    };
    let (mut server, mut client) = session_and_client(&store);
    client.request_advert();
    exchange(&mut server, &mut client, &mut store);
    assert_eq!(client.poll_event(), Some(ClientEvent::Advert(bytes)));
    // An advert nobody asked for breaks the protocol.
    let mut buf = vec![0u8; MAX_SERVER_MESSAGE_LEN];
    let n = Reply::Advert { advert: &bytes }.encode(&mut buf).unwrap();
    assert!(client.handle_message(&buf[..n], Instant::ZERO).is_err());
    // The session can be asked again.
    client.request_advert();
    exchange(&mut server, &mut client, &mut store);
    assert_eq!(client.poll_event(), Some(ClientEvent::Advert(bytes)));
}

#[test]
fn a_server_without_an_advert_refuses_the_request() {
    let mut store = MemStore::default();
    let (mut server, mut client) = session_and_client(&store);
    client.request_advert();
    exchange(&mut server, &mut client, &mut store);
    assert_eq!(
        client.poll_event(),
        Some(ClientEvent::Refused(ServerRefusal {
            request: RequestKind::GetAdvert,
            seq: 0,
            reason: RefusalReason::Unavailable,
        }))
    );
    // The refusal is coded as request kind 6.
    let mut buf = vec![0u8; MAX_SERVER_MESSAGE_LEN];
    let n = Reply::Refused(ServerRefusal {
        request: RequestKind::GetAdvert,
        seq: 0,
        reason: RefusalReason::Unavailable,
    })
    .encode(&mut buf)
    .unwrap();
    assert_eq!(hex(&buf[..n]), "880600000000000000000800000000");
}
