//! [`TokenTextSplitter`] and [`count_tokens`]: windows of tiktoken tokens (feature `tokens`).

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

use super::{Chunk, TextSplitter};
use catena_core::error::{Error, Result};

/// A tiktoken encoding (the BPE vocabularies are embedded by `tiktoken-rs`; nothing is downloaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `cl100k_base`: GPT-4, GPT-3.5, `text-embedding-3-*`.
    Cl100k,
    /// `o200k_base`: GPT-4o, GPT-4.1, o-series.
    O200k,
}

impl Encoding {
    /// The encoding's tiktoken name (`cl100k_base`, `o200k_base`).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Cl100k => "cl100k_base",
            Encoding::O200k => "o200k_base",
        }
    }

    /// The encoder, built on first use (building takes a noticeable fraction of a second) and shared after.
    fn bpe(self) -> Result<&'static CoreBPE> {
        static CL100K: OnceLock<Result<CoreBPE, String>> = OnceLock::new();
        static O200K: OnceLock<Result<CoreBPE, String>> = OnceLock::new();
        let loaded = match self {
            Encoding::Cl100k => CL100K.get_or_init(|| tiktoken_rs::cl100k_base().map_err(|e| e.to_string())),
            Encoding::O200k => O200K.get_or_init(|| tiktoken_rs::o200k_base().map_err(|e| e.to_string())),
        };
        loaded.as_ref().map_err(|e| {
            Error::config(
                format!("Encoding::{self:?}"),
                format!("could not be loaded: {e}"),
                "the vocabulary embedded in tiktoken-rs is broken; reinstall the crate (cargo clean -p tiktoken-rs)",
            )
        })
    }
}

/// Counts the tokens of `text` in `encoding`. Special-token text such as `<|endoftext|>` counts as plain text.
///
/// ```
/// use catena_text::splitter::{count_tokens, Encoding};
///
/// assert_eq!(count_tokens(Encoding::Cl100k, "hello world")?, 2);
/// # Ok::<(), catena_core::Error>(())
/// ```
pub fn count_tokens(encoding: Encoding, text: &str) -> Result<usize> {
    Ok(encoding.bpe()?.encode_ordinary(text).len())
}

/// Splits text into windows of `chunk_size` tokens, each starting `chunk_size - chunk_overlap` tokens after the
/// previous one, like LangChain's `TokenTextSplitter`.
///
/// A window's text is its tokens decoded with invalid UTF-8 replaced by U+FFFD (Python's `errors="replace"`), so a
/// window that starts or ends inside a multi-byte character has a replacement character there. Differences from
/// Python: text that looks like a special token (`<|endoftext|>`) is encoded as plain text, where LangChain raises
/// `ValueError`. [`Chunk::start`] is the byte offset of the window's first token, moved back to the start of its
/// character when the window starts inside one.
///
/// ```
/// use catena_text::splitter::{Encoding, TextSplitter, TokenTextSplitter};
///
/// let splitter = TokenTextSplitter::new(Encoding::Cl100k, 4, 1)?;
/// let chunks = splitter.split_text("one two three four five six seven");
/// assert_eq!(chunks[0].content, "one two three four");
/// assert_eq!(chunks[1].content, " four five six seven");
/// assert_eq!(chunks[1].start, 13);
/// # Ok::<(), catena_core::Error>(())
/// ```
#[derive(Clone)]
pub struct TokenTextSplitter {
    encoding: Encoding,
    bpe: &'static CoreBPE,
    chunk_size: usize,
    chunk_overlap: usize,
}

impl std::fmt::Debug for TokenTextSplitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenTextSplitter")
            .field("encoding", &self.encoding)
            .field("chunk_size", &self.chunk_size)
            .field("chunk_overlap", &self.chunk_overlap)
            .finish()
    }
}

impl TokenTextSplitter {
    /// Windows of `chunk_size` tokens overlapping by `chunk_overlap` tokens. Loads the encoding (once per
    /// process).
    ///
    /// Fails with [`Error::InvalidInput`] unless `chunk_overlap < chunk_size` (LangChain raises the same
    /// condition when splitting).
    pub fn new(encoding: Encoding, chunk_size: usize, chunk_overlap: usize) -> Result<Self> {
        if chunk_overlap >= chunk_size {
            return Err(Error::InvalidInput(format!(
                "token chunk_overlap ({chunk_overlap}) must be smaller than chunk_size ({chunk_size})"
            )));
        }
        Ok(TokenTextSplitter { encoding, bpe: encoding.bpe()?, chunk_size, chunk_overlap })
    }

    /// The encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Tokens per window.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Tokens shared by consecutive windows.
    pub fn chunk_overlap(&self) -> usize {
        self.chunk_overlap
    }
}

impl TextSplitter for TokenTextSplitter {
    fn settings(&self) -> String {
        format!(
            "tokens(encoding={:?}, chunk_size={}, chunk_overlap={})",
            self.encoding, self.chunk_size, self.chunk_overlap
        )
    }

    fn split_text(&self, text: &str) -> Vec<Chunk> {
        let tokens = self.bpe.encode_ordinary(text);
        // Byte offset of every token: ordinary encoding is lossless, so the tokens' bytes tile the text and a
        // window decodes to a byte range of it.
        let mut offsets = Vec::with_capacity(tokens.len() + 1);
        offsets.push(0usize);
        let mut end = 0;
        for &token in &tokens {
            // A token produced by this encoder always decodes; 0 keeps the offsets monotone if it ever did not.
            end += self.bpe.decode_bytes(&[token]).map_or(0, |b| b.len());
            offsets.push(end.min(text.len()));
        }
        let bytes = text.as_bytes();
        let step = self.chunk_size - self.chunk_overlap;
        let mut out = Vec::new();
        let mut start = 0;
        while start < tokens.len() {
            let stop = (start + self.chunk_size).min(tokens.len());
            let content = String::from_utf8_lossy(&bytes[offsets[start]..offsets[stop]]).into_owned();
            if !content.is_empty() {
                out.push(Chunk { content, start: floor_char_boundary(text, offsets[start]) });
            }
            if stop == tokens.len() {
                break;
            }
            start += step;
        }
        out
    }
}

/// The largest char boundary of `text` not after `i`.
fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_must_be_smaller_than_size() {
        assert!(matches!(TokenTextSplitter::new(Encoding::Cl100k, 4, 4), Err(Error::InvalidInput(_))));
        assert!(TokenTextSplitter::new(Encoding::O200k, 4, 3).is_ok());
    }

    #[test]
    fn windows_tile_the_text_without_overlap() {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        for encoding in [Encoding::Cl100k, Encoding::O200k] {
            let s = TokenTextSplitter::new(encoding, 7, 0).unwrap();
            let chunks = s.split_text(&text);
            let total = count_tokens(encoding, &text).unwrap();
            assert_eq!(chunks.len(), total.div_ceil(7));
            let rebuilt: String = chunks.iter().map(|c| c.content.as_str()).collect();
            assert_eq!(rebuilt, text);
            for c in &chunks {
                assert!(text[c.start..].starts_with(&c.content));
                assert!(count_tokens(encoding, &c.content).unwrap() <= 7);
            }
        }
    }

    #[test]
    fn split_multibyte_characters_become_replacement_characters() {
        // An emoji is several tokens in cl100k: 1-token windows cut it.
        let text = "a🦀b";
        let s = TokenTextSplitter::new(Encoding::Cl100k, 1, 0).unwrap();
        let chunks = s.split_text(text);
        assert!(chunks.iter().any(|c| c.content.contains('\u{FFFD}')), "{chunks:?}");
        for c in &chunks {
            assert!(text.is_char_boundary(c.start));
        }
        assert!(s.split_text("").is_empty());
    }
}
