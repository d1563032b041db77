//! In-memory store (being written).
