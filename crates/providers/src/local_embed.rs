//! Local embeddings (being written).
