//! The server protocol: what an anonymous client and an untrusted server say
//! to each other over the secure channel, and the server's per-connection
//! state machine.
//!
//! Specified in SPEC.md, section "Server protocol".
