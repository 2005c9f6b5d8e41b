//! The server's durable blob store (SQLite, WAL, group commit).
