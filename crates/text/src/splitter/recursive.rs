//! [`RecursiveCharacterTextSplitter`]: LangChain's recursive character splitter, reproduced chunk for chunk.
//!
//! The algorithm is the one of Python `langchain_text_splitters` 1.x (`character.py` and `base.py`):
//!
//! 1. Pick the first separator that occurs in the text (the empty separator always "occurs"); the separators
//!    after it are kept for recursion.
//! 2. Split the text at every occurrence (`re.split` semantics, empty pieces dropped), gluing each separator to
//!    the start or the end of its piece, or dropping it ([`KeepSeparator`]).
//! 3. Walk the pieces: pieces shorter than `chunk_size` are collected and merged; a piece that is not shorter
//!    is split recursively with the remaining separators (or emitted as it is when none remain).
//! 4. Merging packs consecutive pieces into chunks of at most `chunk_size` (joined with the separator when it
//!    was dropped), starts each new chunk with up to `chunk_overlap` of the previous one's tail pieces, strips
//!    whitespace and drops empty chunks.
//!
//! Lengths are Python's `len()`: Unicode code points, not bytes. Offsets ([`Chunk::start`]) are bytes.

use memchr::memmem;
use regex::Regex;

use super::{is_py_space, Chunk, TextSplitter};
use catena_core::error::{Error, Result};

/// LangChain's default separators: paragraphs, lines, words, characters.
pub const DEFAULT_SEPARATORS: [&str; 4] = ["\n\n", "\n", " ", ""];

/// What happens to the separator a text was split at (LangChain's `keep_separator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeepSeparator {
    /// The separator is removed from the pieces and put back between pieces merged into one chunk
    /// (Python `keep_separator=False`).
    Discard,
    /// The separator starts the piece that follows it (Python `keep_separator=True` or `"start"`; LangChain's
    /// default for the recursive splitter).
    Start,
    /// The separator ends the piece that precedes it (Python `keep_separator="end"`).
    End,
}

/// How the separators are interpreted (LangChain's `is_separator_regex`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeparatorKind {
    /// Each separator is a literal string (Python `is_separator_regex=False`, the default).
    Literal,
    /// Each separator is a regular expression in the syntax of the [`regex`] crate (Python
    /// `is_separator_regex=True`). See [`RecursiveCharacterTextSplitterBuilder::regex_separators`] for where
    /// that syntax differs from Python's `re`.
    Regex,
}

/// How one separator finds its occurrences.
#[derive(Debug, Clone)]
enum Matcher {
    /// The empty separator: every character is a piece.
    Chars,
    /// A literal string.
    Literal(Box<memmem::Finder<'static>>),
    /// A regular expression without capturing groups.
    Regex(Regex),
}

/// A separator as given by the user (`raw`, which is also what LangChain re-inserts between pieces when the
/// separator is discarded, even for a regex) and its compiled form.
#[derive(Debug, Clone)]
struct Separator {
    raw: String,
    matcher: Matcher,
}

impl Separator {
    fn new(raw: String, kind: SeparatorKind) -> Result<Self> {
        let matcher = if raw.is_empty() {
            Matcher::Chars
        } else {
            match kind {
                SeparatorKind::Literal => Matcher::Literal(Box::new(memmem::Finder::new(raw.as_bytes()).into_owned())),
                SeparatorKind::Regex => {
                    let re = Regex::new(&raw).map_err(|e| {
                        Error::InvalidInput(format!(
                            "separator {raw:?} is not a valid regular expression: {e}; note that the regex crate \
                             has no look-around and no backreferences"
                        ))
                    })?;
                    if re.captures_len() > 1 {
                        return Err(Error::InvalidInput(format!(
                            "separator {raw:?} has a capturing group; Python's re.split would return the group's \
                             text as extra pieces; use a non-capturing group (?:...) instead"
                        )));
                    }
                    Matcher::Regex(re)
                }
            }
        };
        Ok(Separator { raw, matcher })
    }

    /// Python's `re.search(separator, text)`, as used to choose the separator.
    fn occurs_in(&self, text: &str) -> bool {
        match &self.matcher {
            Matcher::Chars => true,
            Matcher::Literal(f) => f.find(text.as_bytes()).is_some(),
            Matcher::Regex(re) => re.is_match(text),
        }
    }
}

/// A piece of the text being split: a byte range of it and its length in code points.
#[derive(Debug, Clone, Copy)]
struct Piece {
    start: usize,
    end: usize,
    chars: usize,
}

/// Splits text recursively by a list of separators, exactly like LangChain's `RecursiveCharacterTextSplitter`.
///
/// Chunk texts are identical to Python's for any input with literal separators (checked against
/// langchain-text-splitters 1.1 on the rust-book corpus and on edge cases); for regex separators, see
/// [`RecursiveCharacterTextSplitterBuilder::regex_separators`]. Like Python, a merged chunk longer than
/// `chunk_size` is reported with a `tracing` warning, not an error.
///
/// Start offsets are tracked through the splitting, so [`Chunk::start`] is where the chunk's first character
/// really is. LangChain's `add_start_index` instead searches for the chunk text from an estimated offset, which
/// lands on an earlier copy in repetitive text, and finds nothing (`-1`) when the chunk is not a slice of the text
/// (with [`KeepSeparator::Discard`], merged pieces are joined with one separator even where the text had several).
/// In those cases `start` is the offset of the chunk's first piece.
///
/// ```
/// use catena_text::splitter::{KeepSeparator, RecursiveCharacterTextSplitter, TextSplitter};
///
/// let splitter = RecursiveCharacterTextSplitter::builder(30, 10)
///     .separators(["\n\n", "\n", " ", ""])
///     .keep_separator(KeepSeparator::Start)
///     .build()?;
/// let text = "Rust is fast.\n\nRust is safe and it is also productive.";
/// let chunks = splitter.split_text(text);
/// assert_eq!(chunks[0].content, "Rust is fast.");
/// assert_eq!(chunks[1].content, "Rust is safe and it is also");
/// assert_eq!(&text[chunks[1].start..chunks[1].start + 4], "Rust");
/// # Ok::<(), catena_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RecursiveCharacterTextSplitter {
    chunk_size: usize,
    chunk_overlap: usize,
    separators: Vec<Separator>,
    keep_separator: KeepSeparator,
    strip_whitespace: bool,
}

/// Builder of a [`RecursiveCharacterTextSplitter`]; see [`RecursiveCharacterTextSplitter::builder`].
#[derive(Debug, Clone)]
pub struct RecursiveCharacterTextSplitterBuilder {
    chunk_size: usize,
    chunk_overlap: usize,
    separators: Vec<String>,
    kind: SeparatorKind,
    keep_separator: KeepSeparator,
    strip_whitespace: bool,
}

impl RecursiveCharacterTextSplitterBuilder {
    /// Sets literal separators, tried in order (LangChain's `separators`).
    pub fn separators<I, S>(mut self, separators: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.separators = separators.into_iter().map(Into::into).collect();
        self.kind = SeparatorKind::Literal;
        self
    }

    /// Sets regular-expression separators, tried in order (LangChain's `separators` with
    /// `is_separator_regex=True`).
    ///
    /// The syntax is the [`regex`] crate's. Simple patterns (character classes, alternations, repetitions,
    /// `\s`, `\d`, `\w`) behave as in Python's `re`; the differences are: no look-around and no backreferences
    /// (rejected by [`build`](Self::build)); `$` matches only at the very end (Python's also before a final
    /// newline); `\s` follows Unicode `White_Space` (Python's also matches U+001C..U+001F). Capturing groups are
    /// rejected: write `(?:...)`. When the separator is discarded ([`KeepSeparator::Discard`]) LangChain joins
    /// merged pieces with the pattern's *source text*, and so does this splitter.
    pub fn regex_separators<I, S>(mut self, separators: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.separators = separators.into_iter().map(Into::into).collect();
        self.kind = SeparatorKind::Regex;
        self
    }

    /// Sets where separators go (default [`KeepSeparator::Start`], like LangChain).
    pub fn keep_separator(mut self, keep: KeepSeparator) -> Self {
        self.keep_separator = keep;
        self
    }

    /// Whether to strip whitespace (Python's `str.strip()`) from both ends of merged chunks (default `true`, like
    /// LangChain).
    pub fn strip_whitespace(mut self, strip: bool) -> Self {
        self.strip_whitespace = strip;
        self
    }

    /// Validates the settings and compiles the separators.
    ///
    /// Fails with [`Error::InvalidInput`] when `chunk_size` is 0, `chunk_overlap > chunk_size`, the separator
    /// list is empty, or a regex separator does not compile or has a capturing group.
    pub fn build(self) -> Result<RecursiveCharacterTextSplitter> {
        if self.chunk_size == 0 {
            return Err(Error::InvalidInput("chunk_size must be > 0, got 0".into()));
        }
        if self.chunk_overlap > self.chunk_size {
            return Err(Error::InvalidInput(format!(
                "chunk_overlap ({}) is larger than chunk_size ({}); use an overlap smaller than the chunk size",
                self.chunk_overlap, self.chunk_size
            )));
        }
        if self.separators.is_empty() {
            return Err(Error::InvalidInput(
                "the separator list is empty; give at least one separator, e.g. DEFAULT_SEPARATORS".into(),
            ));
        }
        let separators =
            self.separators.into_iter().map(|s| Separator::new(s, self.kind)).collect::<Result<Vec<_>>>()?;
        Ok(RecursiveCharacterTextSplitter {
            chunk_size: self.chunk_size,
            chunk_overlap: self.chunk_overlap,
            separators,
            keep_separator: self.keep_separator,
            strip_whitespace: self.strip_whitespace,
        })
    }
}

impl RecursiveCharacterTextSplitter {
    /// A builder for chunks of at most `chunk_size` code points overlapping by up to `chunk_overlap` code points,
    /// with LangChain's other defaults: [`DEFAULT_SEPARATORS`] (literal), [`KeepSeparator::Start`], whitespace
    /// stripped.
    pub fn builder(chunk_size: usize, chunk_overlap: usize) -> RecursiveCharacterTextSplitterBuilder {
        RecursiveCharacterTextSplitterBuilder {
            chunk_size,
            chunk_overlap,
            separators: DEFAULT_SEPARATORS.iter().map(|s| s.to_string()).collect(),
            kind: SeparatorKind::Literal,
            keep_separator: KeepSeparator::Start,
            strip_whitespace: true,
        }
    }

    /// A splitter with LangChain's defaults apart from the sizes: `builder(chunk_size, chunk_overlap).build()`.
    pub fn new(chunk_size: usize, chunk_overlap: usize) -> Result<Self> {
        Self::builder(chunk_size, chunk_overlap).build()
    }

    /// The maximum chunk length, in code points.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// The maximum overlap between consecutive chunks, in code points.
    pub fn chunk_overlap(&self) -> usize {
        self.chunk_overlap
    }

    /// LangChain's `_split_text`: `text` is `base` bytes into the original text.
    fn split_recursive(&self, text: &str, base: usize, separators: &[Separator], out: &mut Vec<Chunk>) {
        // The first separator found in the text; the empty one always matches and ends the search.
        let Some(mut chosen) = separators.last() else { return };
        let mut rest: &[Separator] = &[];
        for (i, sep) in separators.iter().enumerate() {
            if sep.raw.is_empty() {
                chosen = sep;
                break;
            }
            if sep.occurs_in(text) {
                chosen = sep;
                rest = &separators[i + 1..];
                break;
            }
        }

        let ascii = text.is_ascii();
        let pieces = split_pieces(text, &chosen.matcher, self.keep_separator, ascii);

        // Merge with the separator only when it was discarded from the pieces.
        let (merge_sep, merge_sep_literal) = match self.keep_separator {
            KeepSeparator::Discard => (chosen.raw.as_str(), !matches!(chosen.matcher, Matcher::Regex(_))),
            KeepSeparator::Start | KeepSeparator::End => ("", true),
        };
        let merge_sep = Joiner { text: merge_sep, chars: merge_sep.chars().count(), literal: merge_sep_literal };

        let mut good_from = 0;
        for (i, piece) in pieces.iter().enumerate() {
            if piece.chars < self.chunk_size {
                continue;
            }
            if good_from < i {
                self.merge(text, &pieces[good_from..i], &merge_sep, base, out);
            }
            good_from = i + 1;
            let piece_text = &text[piece.start..piece.end];
            if rest.is_empty() {
                out.push(Chunk { content: piece_text.to_owned(), start: base + piece.start });
            } else {
                self.split_recursive(piece_text, base + piece.start, rest, out);
            }
        }
        if good_from < pieces.len() {
            self.merge(text, &pieces[good_from..], &merge_sep, base, out);
        }
    }

    /// LangChain's `_merge_splits`: packs consecutive pieces into chunks with overlap.
    fn merge(&self, text: &str, pieces: &[Piece], sep: &Joiner<'_>, base: usize, out: &mut Vec<Chunk>) {
        let sep_len = sep.chars;
        let mut lo = 0;
        let mut total = 0usize;
        for (i, piece) in pieces.iter().enumerate() {
            let len = piece.chars;
            let sep_if = |n: usize| if n > 0 { sep_len } else { 0 };
            if total + len + sep_if(i - lo) > self.chunk_size {
                if total > self.chunk_size {
                    tracing::warn!(
                        "Created a chunk of size {total}, which is longer than the specified {}",
                        self.chunk_size
                    );
                }
                if i > lo {
                    self.emit(text, &pieces[lo..i], sep, base, out);
                    while total > self.chunk_overlap || (total + len + sep_if(i - lo) > self.chunk_size && total > 0) {
                        total -= pieces[lo].chars + if i - lo > 1 { sep_len } else { 0 };
                        lo += 1;
                    }
                }
            }
            total += len + if i + 1 - lo > 1 { sep_len } else { 0 };
        }
        self.emit(text, &pieces[lo..], sep, base, out);
    }

    /// LangChain's `_join_docs`: joins pieces with the separator, strips, drops an empty result.
    fn emit(&self, text: &str, pieces: &[Piece], sep: &Joiner<'_>, base: usize, out: &mut Vec<Chunk>) {
        let (Some(first), Some(last)) = (pieces.first(), pieces.last()) else {
            return;
        };
        let joined_len: usize =
            pieces.iter().map(|p| p.end - p.start).sum::<usize>() + sep.text.len() * (pieces.len() - 1);
        // With a literal separator, consecutive pieces are separated in the text by one or more separators; when
        // the span has exactly the joined length, every gap is exactly one separator and the join is the span.
        if sep.literal && last.end - first.start == joined_len {
            let span = &text[first.start..last.end];
            let (content, lead) = if self.strip_whitespace { strip(span) } else { (span, 0) };
            if !content.is_empty() {
                out.push(Chunk { content: content.to_owned(), start: base + first.start + lead });
            }
            return;
        }
        let mut joined = String::with_capacity(joined_len);
        for (k, p) in pieces.iter().enumerate() {
            if k > 0 {
                joined.push_str(sep.text);
            }
            joined.push_str(&text[p.start..p.end]);
        }
        let (content, lead) = if self.strip_whitespace { strip(&joined) } else { (joined.as_str(), 0) };
        if content.is_empty() {
            return;
        }
        let start = base + source_offset(pieces, sep, lead);
        let content = if content.len() == joined.len() { joined } else { content.to_owned() };
        out.push(Chunk { content, start });
    }
}

impl TextSplitter for RecursiveCharacterTextSplitter {
    fn settings(&self) -> String {
        let separators: Vec<String> = self
            .separators
            .iter()
            .map(|s| match &s.matcher {
                Matcher::Regex(_) => format!("regex:{:?}", s.raw),
                Matcher::Chars | Matcher::Literal(_) => format!("{:?}", s.raw),
            })
            .collect();
        format!(
            "recursive(chunk_size={}, chunk_overlap={}, separators=[{}], keep_separator={:?}, strip_whitespace={})",
            self.chunk_size,
            self.chunk_overlap,
            separators.join(", "),
            self.keep_separator,
            self.strip_whitespace
        )
    }

    fn split_text(&self, text: &str) -> Vec<Chunk> {
        let mut out = Vec::new();
        self.split_recursive(text, 0, &self.separators, &mut out);
        out
    }
}

/// The string merged pieces are joined with.
struct Joiner<'a> {
    text: &'a str,
    /// Its length in code points.
    chars: usize,
    /// Whether it is what separates the pieces in the text (a literal separator, or nothing).
    literal: bool,
}

/// Python's `str.strip()`: the stripped slice and the number of bytes removed at the front.
fn strip(s: &str) -> (&str, usize) {
    let front = s.trim_start_matches(is_py_space);
    let lead = s.len() - front.len();
    (front.trim_end_matches(is_py_space), lead)
}

/// Maps byte `offset` of the joined pieces back to a byte offset of the text the pieces come from.
fn source_offset(pieces: &[Piece], sep: &Joiner<'_>, offset: usize) -> usize {
    let mut pos = 0;
    for (k, p) in pieces.iter().enumerate() {
        let len = p.end - p.start;
        if offset < pos + len {
            return p.start + (offset - pos);
        }
        pos += len;
        if let Some(next) = pieces.get(k + 1) {
            if offset < pos + sep.text.len() {
                // Inside a re-inserted separator: a literal one is really there, right after the piece; the text
                // of a regex separator is not, so the chunk's text starts at the next piece.
                return if sep.literal { p.end + (offset - pos) } else { next.start };
            }
            pos += sep.text.len();
        }
    }
    pieces.last().map_or(0, |p| p.end)
}

/// Python's `_split_text_with_regex`: the non-empty pieces of `text` split at every match of `matcher`, each
/// match glued to the following piece (`Start`), the preceding one (`End`), or dropped (`Discard`).
fn split_pieces(text: &str, matcher: &Matcher, keep: KeepSeparator, ascii: bool) -> Vec<Piece> {
    let count = |start: usize, end: usize| if ascii { end - start } else { text[start..end].chars().count() };
    let mut pieces = Vec::new();
    match matcher {
        Matcher::Chars => {
            if ascii {
                pieces.extend((0..text.len()).map(|i| Piece { start: i, end: i + 1, chars: 1 }));
            } else {
                pieces.extend(text.char_indices().map(|(i, c)| Piece { start: i, end: i + c.len_utf8(), chars: 1 }));
            }
            return pieces;
        }
        Matcher::Literal(_) | Matcher::Regex(_) => {}
    }
    let mut prev = 0;
    let mut push = |start: usize, end: usize| {
        if end > start {
            pieces.push(Piece { start, end, chars: count(start, end) });
        }
    };
    for_each_match(text, matcher, |b, e| {
        let cut = match keep {
            KeepSeparator::Discard => {
                push(prev, b);
                e
            }
            KeepSeparator::Start => {
                push(prev, b);
                b
            }
            KeepSeparator::End => {
                push(prev, e);
                e
            }
        };
        prev = cut;
    });
    push(prev, text.len());
    pieces
}

/// Calls `f(start, end)` for each match of `matcher` in `text`, in the order and with the empty-match rules of
/// Python's `re.split` (3.7+): an empty match may directly follow a non-empty one, and after an empty match at `p`
/// the next match may not be empty at `p`.
fn for_each_match(text: &str, matcher: &Matcher, mut f: impl FnMut(usize, usize)) {
    match matcher {
        Matcher::Chars => {}
        Matcher::Literal(finder) => {
            let bytes = text.as_bytes();
            let n = finder.needle().len();
            let mut pos = 0;
            while let Some(i) = finder.find(&bytes[pos..]) {
                f(pos + i, pos + i + n);
                pos += i + n;
            }
        }
        Matcher::Regex(re) => {
            let mut pos = 0;
            let mut after_empty = false;
            while pos <= text.len() {
                let Some(mut m) = re.find_at(text, pos) else { break };
                if after_empty && m.start() == pos && m.end() == pos {
                    // Python retries from the next character.
                    let Some(c) = text[pos..].chars().next() else { break };
                    match re.find_at(text, pos + c.len_utf8()) {
                        Some(next) => m = next,
                        None => break,
                    }
                }
                f(m.start(), m.end());
                after_empty = m.start() == m.end();
                pos = m.end();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(chunks: &[Chunk]) -> Vec<&str> {
        chunks.iter().map(|c| c.content.as_str()).collect()
    }

    /// Every chunk whose text is a slice of the input starts where it says.
    fn assert_offsets(text: &str, chunks: &[Chunk]) {
        for c in chunks {
            assert!(text[c.start..].starts_with(&c.content), "chunk {:?} not at {}", c.content, c.start);
        }
    }

    #[test]
    fn validation_matches_python() {
        assert!(matches!(RecursiveCharacterTextSplitter::new(10, 11), Err(Error::InvalidInput(_))));
        assert!(matches!(RecursiveCharacterTextSplitter::new(0, 0), Err(Error::InvalidInput(_))));
        assert!(RecursiveCharacterTextSplitter::new(10, 10).is_ok());
        let e = RecursiveCharacterTextSplitter::builder(10, 0).regex_separators(["(a)"]).build().unwrap_err();
        assert!(e.to_string().contains("(?:"), "{e}");
        let e = RecursiveCharacterTextSplitter::builder(10, 0).regex_separators(["(?=#)"]).build().unwrap_err();
        assert!(e.to_string().contains("look-around"), "{e}");
        assert!(RecursiveCharacterTextSplitter::builder(10, 0).separators(Vec::<String>::new()).build().is_err());
    }

    // Expected values below are the output of Python langchain-text-splitters 1.1.3 on the same input.

    #[test]
    fn words_with_overlap() {
        let s = RecursiveCharacterTextSplitter::new(7, 3).unwrap();
        let text = "a bb ccc d";
        let chunks = s.split_text(text);
        assert_eq!(texts(&chunks), ["a bb", "bb ccc", "d"]);
        assert_offsets(text, &chunks);
        assert_eq!(chunks.iter().map(|c| c.start).collect::<Vec<_>>(), [0, 2, 9]);
    }

    #[test]
    fn lengths_are_code_points_and_offsets_are_bytes() {
        let s = RecursiveCharacterTextSplitter::new(3, 0).unwrap();
        let text = "ééé ñññ";
        let chunks = s.split_text(text);
        assert_eq!(texts(&chunks), ["ééé", "ññ", "ñ"]);
        assert_offsets(text, &chunks);
        assert_eq!(chunks[1].start, "ééé ".len());
        assert_eq!(chunks[2].start, "ééé ññ".len());
    }

    #[test]
    fn keep_separator_modes() {
        let text = "a.b.c";
        let split = |keep| {
            let s = RecursiveCharacterTextSplitter::builder(2, 0).separators(["."]).keep_separator(keep).build();
            texts(&s.unwrap().split_text(text)).into_iter().map(String::from).collect::<Vec<_>>()
        };
        assert_eq!(split(KeepSeparator::Start), ["a", ".b", ".c"]);
        assert_eq!(split(KeepSeparator::End), ["a.", "b.", "c"]);
        assert_eq!(split(KeepSeparator::Discard), ["a", "b", "c"]);
    }

    #[test]
    fn discarded_separator_is_reinserted_and_offsets_survive_dropped_empties() {
        let s = RecursiveCharacterTextSplitter::builder(10, 0)
            .separators(["--"])
            .keep_separator(KeepSeparator::Discard)
            .build()
            .unwrap();
        let text = "ab----cd--ef";
        let chunks = s.split_text(text);
        // Python: re.split gives ["ab", "", "cd", "ef"] -> ["ab", "cd", "ef"] -> joined "ab--cd--ef".
        assert_eq!(texts(&chunks), ["ab--cd--ef"]);
        assert_eq!(chunks[0].start, 0);
    }

    #[test]
    fn unsplittable_piece_is_emitted_unstripped() {
        let s = RecursiveCharacterTextSplitter::builder(3, 0).separators([" "]).build().unwrap();
        let text = "abcdef gh";
        let chunks = s.split_text(text);
        assert_eq!(texts(&chunks), ["abcdef", " gh"]);
        let s = RecursiveCharacterTextSplitter::new(1, 0).unwrap();
        assert_eq!(texts(&s.split_text("a b")), ["a", " ", "b"]);
    }

    #[test]
    fn empty_and_whitespace_only_text_give_no_chunks() {
        let s = RecursiveCharacterTextSplitter::new(10, 2).unwrap();
        assert!(s.split_text("").is_empty());
        assert!(s.split_text(" \n\n \t ").is_empty());
    }

    #[test]
    fn regex_empty_matches_follow_python_split() {
        // re.split("x*", "axb") == ['', 'a', '', 'b', ''].
        let re = Matcher::Regex(Regex::new("x*").unwrap());
        let mut matches = Vec::new();
        for_each_match("axb", &re, |b, e| matches.push((b, e)));
        assert_eq!(matches, [(0, 0), (1, 2), (2, 2), (3, 3)]);
    }

    #[test]
    fn regex_separators_split_markdown_headers() {
        let s = RecursiveCharacterTextSplitter::builder(20, 0).regex_separators([r"\n#{1,6} ", r"\n"]).build().unwrap();
        let text = "# A\nalpha beta\n## B\ngamma delta";
        let chunks = s.split_text(text);
        assert_eq!(texts(&chunks), ["# A\nalpha beta", "## B\ngamma delta"]);
        assert_offsets(text, &chunks);
    }
}
