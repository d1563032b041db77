//! Text splitters: cut [`Document`]s into [`Chunk`]s small enough to embed and to fit in a prompt.
//!
//! - [`RecursiveCharacterTextSplitter`]: LangChain's recursive splitter, chunk for chunk identical to Python
//!   `langchain_text_splitters.RecursiveCharacterTextSplitter` (sizes counted in Unicode code points).
//! - [`TokenTextSplitter`] (feature `tokens`): fixed windows of tiktoken tokens (`cl100k_base`, `o200k_base`),
//!   like LangChain's `TokenTextSplitter`; [`count_tokens`] counts tokens.
//! - [`MarkdownSplitter`]: splits Markdown at ATX headers, records the header path of every chunk, and sub-splits
//!   long sections with a [`RecursiveCharacterTextSplitter`].
//!
//! Every chunk knows where it came from: [`Chunk::start`] is a byte offset into the text that was split, so
//! `&text[chunk.start..]` is valid and, for the usual settings, starts with the chunk's text.
//! [`TextSplitter::split_documents`] stores it in the [`START_INDEX_KEY`] metadata and derives each chunk's id from
//! its parent's id, its offset and its text, so two identical passages of one file get different ids.

mod markdown;
mod recursive;
#[cfg(feature = "tokens")]
mod token;

pub use markdown::{MarkdownChunk, MarkdownSplitter, HEADERS_KEY, HEADER_PATH_KEY};
pub use recursive::{
    KeepSeparator, RecursiveCharacterTextSplitter, RecursiveCharacterTextSplitterBuilder, SeparatorKind,
    DEFAULT_SEPARATORS,
};
#[cfg(feature = "tokens")]
pub use token::{count_tokens, Encoding, TokenTextSplitter};

use catena_core::document::{stable_id, Document, START_INDEX_KEY};

/// A piece of a text produced by a [`TextSplitter`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chunk {
    /// The chunk's text.
    pub content: String,
    /// Byte offset of the chunk's first character in the text that was split.
    pub start: usize,
}

/// Cuts text into [`Chunk`]s.
///
/// Implementors provide [`split_text`](TextSplitter::split_text); [`split_documents`](TextSplitter::split_documents)
/// turns chunks into [`Document`]s with their parent's metadata.
///
/// ```
/// use catena_text::splitter::{RecursiveCharacterTextSplitter, TextSplitter};
/// use catena_core::{Document, Metadata, START_INDEX_KEY};
///
/// let splitter = RecursiveCharacterTextSplitter::new(12, 0)?;
/// let doc = Document::new("one two three four five", Metadata::new());
/// let chunks = splitter.split_documents(&[doc]);
/// let texts: Vec<&str> = chunks.iter().map(|d| d.content.as_str()).collect();
/// assert_eq!(texts, ["one two", "three four", "five"]);
/// assert_eq!(chunks[1].metadata[START_INDEX_KEY], 8);
/// # Ok::<(), catena_core::Error>(())
/// ```
pub trait TextSplitter: Send + Sync {
    /// Splits `text` into chunks, in order.
    fn split_text(&self, text: &str) -> Vec<Chunk>;

    /// Every setting that changes the chunks, as text (kind, sizes, separators, ...). An index records it and
    /// re-splits everything when it changes, so two splitters with equal settings must split alike.
    fn settings(&self) -> String;

    /// Splits every document. Each chunk keeps a copy of its parent's metadata plus [`START_INDEX_KEY`] (the byte
    /// offset in the parent's content) and gets the id `stable_id(&[parent id, start, content])`.
    fn split_documents(&self, docs: &[Document]) -> Vec<Document> {
        let mut out = Vec::new();
        for doc in docs {
            for chunk in self.split_text(&doc.content) {
                out.push(chunk_document(doc, chunk.content, chunk.start, |_| {}));
            }
        }
        out
    }
}

/// Builds the document of one chunk of `parent`: copies the metadata, records the start offset, lets `extra` add
/// fields, and derives the id from the parent's id, the offset and the text.
pub(crate) fn chunk_document(
    parent: &Document,
    content: String,
    start: usize,
    extra: impl FnOnce(&mut catena_core::Metadata),
) -> Document {
    let mut metadata = parent.metadata.clone();
    metadata.insert(START_INDEX_KEY.to_string(), start.into());
    extra(&mut metadata);
    let id = stable_id(&[&parent.id, &start.to_string(), &content]);
    Document::with_id(id, content, metadata)
}

/// Whether Python's `str.isspace()` holds for `c`: Unicode `White_Space` plus the four information separators
/// U+001C..U+001F, which Python also strips.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use catena_core::Metadata;

    #[test]
    fn documents_copy_metadata_and_get_distinct_ids_for_repeated_text() {
        let splitter = RecursiveCharacterTextSplitter::new(5, 0).unwrap();
        let mut meta = Metadata::new();
        meta.insert("source".into(), "a.md".into());
        let doc = Document::new("same\n\nsame", meta);
        let chunks = splitter.split_documents(std::slice::from_ref(&doc));
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].content, chunks[1].content);
        assert_ne!(chunks[0].id, chunks[1].id, "identical text at two offsets must get two ids");
        assert_eq!(chunks[0].metadata["source"], "a.md");
        assert_eq!(chunks[0].metadata[START_INDEX_KEY], 0);
        assert_eq!(chunks[1].metadata[START_INDEX_KEY], 6);
        // Stable across runs.
        assert_eq!(chunks, splitter.split_documents(&[doc]));
    }

    #[test]
    fn py_space_includes_information_separators() {
        assert!(is_py_space('\u{1f}'));
        assert!(is_py_space('\u{3000}'));
        assert!(!is_py_space('\u{200b}'));
        assert!(!is_py_space('x'));
    }
}
