//! OpenAI-compatible provider (being written).
