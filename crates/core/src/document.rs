//! [`Document`]: a piece of text with metadata and a stable id, the unit loaders produce, splitters cut,
//! stores hold and retrievers return.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Metadata of a document: a JSON object.
pub type Metadata = Map<String, Value>;

/// The metadata key loaders use for the source path.
pub const SOURCE_KEY: &str = "source";
/// The metadata key splitters use for the chunk's byte offset in its source document.
pub const START_INDEX_KEY: &str = "start_index";

/// A piece of text with metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Stable id: given by the user, or derived from the source and content (see [`Document::new`]).
    pub id: String,
    /// The text.
    pub content: String,
    /// Metadata (source path, title, header path, start offset, ...).
    pub metadata: Metadata,
}

impl Document {
    /// A document whose id is derived from its content and its `source` metadata (if any), so the same text from
    /// the same file always gets the same id.
    pub fn new(content: impl Into<String>, metadata: Metadata) -> Self {
        let content = content.into();
        let source = metadata.get(SOURCE_KEY).and_then(Value::as_str).unwrap_or("");
        let id = stable_id(&[source, &content]);
        Document { id, content, metadata }
    }

    /// A document with an explicit id.
    pub fn with_id(id: impl Into<String>, content: impl Into<String>, metadata: Metadata) -> Self {
        Document { id: id.into(), content: content.into(), metadata }
    }

    /// The `source` metadata, if any.
    pub fn source(&self) -> Option<&str> {
        self.metadata.get(SOURCE_KEY).and_then(Value::as_str)
    }
}

impl fmt::Display for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let preview: String = self.content.chars().take(120).collect();
        let more = if self.content.chars().count() > 120 { "..." } else { "" };
        write!(f, "[{}] {}{}", self.source().unwrap_or(&self.id), preview.replace('\n', " "), more)
    }
}

/// A document with a relevance score (higher is more relevant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredDocument {
    /// The document.
    pub document: Document,
    /// The score: cosine similarity or dot product, or negated distance for L2.
    pub score: f32,
    /// The stored vector, when the search asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
}

impl fmt::Display for ScoredDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.4} {}", self.score, self.document)
    }
}

/// A hex SHA-256 over the parts (each length-prefixed, so `["ab","c"]` and `["a","bc"]` differ), truncated to 32
/// hex characters.
pub fn stable_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    let mut s = String::with_capacity(32);
    for b in &digest[..16] {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_source_sensitive() {
        let mut m = Metadata::new();
        m.insert(SOURCE_KEY.into(), "a.md".into());
        let a = Document::new("hello", m.clone());
        let b = Document::new("hello", m);
        assert_eq!(a.id, b.id);
        assert_eq!(a.id.len(), 32);
        let c = Document::new("hello", Metadata::new());
        assert_ne!(a.id, c.id);
        assert_ne!(stable_id(&["ab", "c"]), stable_id(&["a", "bc"]));
    }
}
