//! rag (being written).
