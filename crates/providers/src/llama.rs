//! Local GGUF generation (being written).
