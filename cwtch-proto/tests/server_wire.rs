//! Encoding of server requests and replies: the vectors printed in SPEC.md
//! section 8, checked byte for byte, and round-trip / canonicity properties.

use cwtch_proto::group::SEALED_BLOB_LEN;
use cwtch_proto::server::admission::{pow_digest, pow_solve, pow_verify};
use cwtch_proto::server::wire::{FULL_RETRY, MAX_SERVER_MESSAGE_LEN, MIN_RETRY};
use cwtch_proto::server::{
    BufferTooSmall, DecodeError, Policy, RefusalReason, Reply, Request, RequestKind,
    ServerCloseReason, ServerRefusal,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const SPEC: &str = include_str!("../../SPEC.md");

/// The blob used by the vectors: byte `i` is `i mod 256`.
fn vector_blob() -> [u8; SEALED_BLOB_LEN] {
    core::array::from_fn(|i| i as u8)
}

/// How a vector is written in SPEC.md: the whole message in hex if short,
/// else the hex of the bytes before the blob and the SHA-256 of the message.
fn spec_form(bytes: &[u8]) -> String {
    if bytes.len() > SEALED_BLOB_LEN {
        let head = &bytes[..bytes.len() - SEALED_BLOB_LEN];
        format!(
            "`{}` ‖ blob, SHA-256 `{}`",
            hex::encode(head),
            hex::encode(Sha256::digest(bytes))
        )
    } else {
        format!("`{}`", hex::encode(bytes))
    }
}

fn check_request(r: Request<'_>, expected: &str) {
    let mut out = vec![0u8; r.encoded_len()];
    assert_eq!(r.encode(&mut out), Ok(out.len()));
    assert_eq!(spec_form(&out), expected, "{r:?}");
    assert!(
        SPEC.contains(expected),
        "SPEC.md lacks the vector {expected}"
    );
    assert_eq!(Request::decode(&out), Ok(r));
    // Every shorter buffer is refused with the size needed.
    assert_eq!(
        r.encode(&mut out[..r.encoded_len() - 1]),
        Err(BufferTooSmall {
            required: r.encoded_len()
        })
    );
}

fn check_reply(r: Reply<'_>, expected: &str) {
    let mut out = vec![0u8; r.encoded_len()];
    assert_eq!(r.encode(&mut out), Ok(out.len()));
    assert_eq!(spec_form(&out), expected, "{r:?}");
    assert!(
        SPEC.contains(expected),
        "SPEC.md lacks the vector {expected}"
    );
    assert_eq!(Reply::decode(&out), Ok(r));
    assert_eq!(
        r.encode(&mut out[..r.encoded_len() - 1]),
        Err(BufferTooSmall {
            required: r.encoded_len()
        })
    );
}

#[test]
fn request_vectors() {
    let blob = vector_blob();
    check_request(
        Request::Post {
            pow: None,
            blob: &blob,
        },
        "`01` ‖ blob, SHA-256 `2d15aa41c7df7e1e54eef787f86feac8361ea19c3b81718886126f040abde9b6`",
    );
    check_request(
        Request::Post {
            pow: Some(0x0102_0304_0506_0708),
            blob: &blob,
        },
        "`020807060504030201` ‖ blob, SHA-256 `115d5149ccef563e5ac4b5ad75588677d644c717c5caed9d571dca1f3b43aa76`",
    );
    check_request(
        Request::Fetch {
            after: 42,
            limit: 64,
        },
        "`032a000000000000004000`",
    );
    check_request(
        Request::Subscribe {
            after: 0x1122_3344_5566_7788,
        },
        "`048877665544332211`",
    );
    check_request(Request::Unsubscribe, "`05`");
}

#[test]
fn reply_vectors() {
    let blob = vector_blob();
    check_reply(
        Reply::Hello(Policy {
            version: 1,
            pow_bits: 16,
            challenge: [0xaa; 32],
            head: 1000,
            page_max: 64,
            max_pending_posts: 16,
            rate_burst: 32,
            rate_interval_ms: 500,
            retention_max_entries: 100_000,
            retention_max_age_secs: 2_592_000,
        }),
        "`810110aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaae803000000000000400010002000f4010000a086010000000000008d270000000000`",
    );
    check_reply(
        Reply::Posted {
            seq: 3,
            index: 1001,
        },
        "`820300000000000000e903000000000000`",
    );
    check_reply(
        Reply::Entry {
            index: 7,
            blob: &blob,
        },
        "`830700000000000000` ‖ blob, SHA-256 `74645b4a19dc4f1f19e9acfc617290122aa443513e21d7a8b104336acd11f287`",
    );
    check_reply(
        Reply::PageEnd {
            next: 70,
            head: 1000,
        },
        "`844600000000000000e803000000000000`",
    );
    check_reply(
        Reply::Push {
            index: 1001,
            blob: &blob,
        },
        "`85e903000000000000` ‖ blob, SHA-256 `5cb85f3ed523d7631e0632e3496ebd63e090f1ab1c1e649026c4608a6cdf430a`",
    );
    check_reply(Reply::Subscribed { after: 1000 }, "`86e803000000000000`");
    check_reply(Reply::Unsubscribed, "`87`");
    check_reply(
        Reply::Refused(ServerRefusal {
            request: RequestKind::Post,
            seq: 5,
            reason: RefusalReason::RateLimited {
                retry_after_ms: 1500,
            },
        }),
        "`8801050000000000000002dc050000`",
    );
    check_reply(
        Reply::Refused(ServerRefusal {
            request: RequestKind::Post,
            seq: 6,
            reason: RefusalReason::WrongBlobSize { found: 101 },
        }),
        "`880106000000000000000765000000`",
    );
    check_reply(
        Reply::Refused(ServerRefusal {
            request: RequestKind::Fetch,
            seq: 0,
            reason: RefusalReason::Malformed,
        }),
        "`880300000000000000000300000000`",
    );
    check_reply(
        Reply::Closing {
            reason: ServerCloseReason::Idle,
        },
        "`8901`",
    );
}

#[test]
fn pow_vector() {
    // Checked independently with Python's hashlib.
    let blob = vector_blob();
    let challenge = [0xaa; 32];
    assert_eq!(pow_solve(&challenge, 0, &blob, 16, 0, 1 << 20), Some(57840));
    let digest = hex::encode(pow_digest(&challenge, 0, &blob, 57840));
    assert_eq!(
        digest,
        "0000085ee1eb3a77ebe2f8bd76007403406a6da64202ff3aee5f1214e0fb3b13"
    );
    assert!(SPEC.contains(&digest));
    assert!(SPEC.contains("57840"));
    assert!(pow_verify(&challenge, 0, &blob, 57840, 16));
    assert!(pow_verify(&challenge, 0, &blob, 57840, 20));
    assert!(!pow_verify(&challenge, 0, &blob, 57840, 21));
    assert!(
        !pow_verify(&challenge, 1, &blob, 57840, 16),
        "bound to the sequence number"
    );
    assert!(
        !pow_verify(&[0xab; 32], 0, &blob, 57840, 16),
        "bound to the challenge"
    );
}

#[test]
fn strict_decoding() {
    // Trailing byte, unknown tag, reply tag as a request and back.
    assert_eq!(
        Request::decode(&[0x05, 0x00]),
        Err(DecodeError::WrongLength {
            tag: 5,
            expected: 1,
            found: 2
        })
    );
    assert_eq!(
        Request::decode(&[0x87]),
        Err(DecodeError::UnknownTag { tag: 0x87 })
    );
    assert_eq!(
        Reply::decode(&[0x05]),
        Err(DecodeError::UnknownTag { tag: 0x05 })
    );
    // A zero page limit.
    assert_eq!(
        Request::decode(&hex::decode("032a000000000000000000").unwrap()),
        Err(DecodeError::InvalidField)
    );
    // Unknown refusal reason, detail on a reason without one, seq on a non-post.
    for bad in [
        "880300000000000000000900000000",
        "880300000000000000000301000000",
        "880301000000000000000300000000",
        "880900000000000000000300000000",
    ] {
        assert_eq!(
            Reply::decode(&hex::decode(bad).unwrap()),
            Err(DecodeError::InvalidField),
            "{bad}"
        );
    }
    assert_eq!(Reply::decode(&[0x89, 0x03]), Err(DecodeError::InvalidField));
    assert_eq!(Reply::decode(&[]), Err(DecodeError::Empty));
}

fn arb_refusal() -> impl Strategy<Value = ServerRefusal> {
    let reason = prop_oneof![
        Just(RefusalReason::Full),
        any::<u32>().prop_map(|retry_after_ms| RefusalReason::RateLimited { retry_after_ms }),
        Just(RefusalReason::Malformed),
        Just(RefusalReason::TooManySubscriptions),
        Just(RefusalReason::PowMissing),
        Just(RefusalReason::PowWrong),
        any::<u32>().prop_map(|found| RefusalReason::WrongBlobSize { found }),
        Just(RefusalReason::Unavailable),
    ];
    let kind = prop_oneof![
        Just(RequestKind::Unknown),
        Just(RequestKind::Post),
        Just(RequestKind::Fetch),
        Just(RequestKind::Subscribe),
        Just(RequestKind::Unsubscribe),
    ];
    (kind, any::<u64>(), reason).prop_map(|(request, seq, reason)| ServerRefusal {
        request,
        seq: if request == RequestKind::Post { seq } else { 0 },
        reason,
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_decode_canonically_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        // Whatever decodes re-encodes to exactly the same bytes.
        if let Ok(r) = Request::decode(&bytes) {
            let mut out = vec![0u8; MAX_SERVER_MESSAGE_LEN];
            let n = r.encode(&mut out).unwrap();
            prop_assert_eq!(&out[..n], &bytes[..]);
        }
        if let Ok(r) = Reply::decode(&bytes) {
            let mut out = vec![0u8; MAX_SERVER_MESSAGE_LEN];
            let n = r.encode(&mut out).unwrap();
            prop_assert_eq!(&out[..n], &bytes[..]);
        }
    }

    #[test]
    fn small_messages_round_trip(after in any::<u64>(), limit in 1u16.., head in any::<u64>(),
                                 refusal in arb_refusal(), challenge in any::<[u8; 32]>()) {
        let mut out = [0u8; MAX_SERVER_MESSAGE_LEN];
        for r in [Request::Fetch { after, limit }, Request::Subscribe { after }, Request::Unsubscribe] {
            let n = r.encode(&mut out).unwrap();
            prop_assert_eq!(Request::decode(&out[..n]), Ok(r));
        }
        let policy = Policy {
            version: 1, pow_bits: limit as u8, challenge, head, page_max: limit,
            max_pending_posts: limit, rate_burst: limit, rate_interval_ms: after as u32,
            retention_max_entries: after, retention_max_age_secs: head,
        };
        for r in [
            Reply::Hello(policy),
            Reply::Posted { seq: after, index: head },
            Reply::PageEnd { next: after, head },
            Reply::Subscribed { after },
            Reply::Refused(refusal),
        ] {
            let n = r.encode(&mut out).unwrap();
            prop_assert_eq!(Reply::decode(&out[..n]), Ok(r));
        }
    }
}

#[test]
fn only_refusals_that_waiting_can_cure_have_a_retry_delay() {
    let limited = |ms| RefusalReason::RateLimited { retry_after_ms: ms };
    assert_eq!(
        limited(1500).retry_after(),
        Some(cwtch_proto::Duration::from_millis(1500))
    );
    assert_eq!(
        limited(0).retry_after(),
        Some(MIN_RETRY),
        "never a busy loop"
    );
    assert_eq!(RefusalReason::Full.retry_after(), Some(FULL_RETRY));
    for r in [
        RefusalReason::Malformed,
        RefusalReason::TooManySubscriptions,
        RefusalReason::PowMissing,
        RefusalReason::PowWrong,
        RefusalReason::WrongBlobSize { found: 3 },
    ] {
        assert_eq!(r.retry_after(), None, "{r:?}");
    }
}
