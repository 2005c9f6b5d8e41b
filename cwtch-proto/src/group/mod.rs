//! Groups: a random secret plus the servers it uses; sealed group messages,
//! cheap detection tags, invites, and missing-message detection.
//!
//! Specified in SPEC.md, sections "Groups", "Sealed group messages" and
//! "Missing-message detection".

/// Length of every sealed group blob on the wire, whatever its content. The
/// server stores and relays blobs of exactly this length and nothing else.
pub const SEALED_BLOB_LEN: usize = 2048;
