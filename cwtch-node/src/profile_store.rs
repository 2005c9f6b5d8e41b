//! The peer's encrypted profile store: nothing readable on disk.
