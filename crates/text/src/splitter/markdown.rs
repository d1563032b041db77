//! [`MarkdownSplitter`]: Markdown cut at its headers, each chunk knowing its header path.

use serde_json::Value;

use super::{chunk_document, Chunk, RecursiveCharacterTextSplitter, TextSplitter};
use catena_core::document::Document;

/// Metadata key of a Markdown chunk's header path, as a JSON array of strings (outermost first).
pub const HEADERS_KEY: &str = "headers";
/// Metadata key of a Markdown chunk's header path joined with `" > "`.
pub const HEADER_PATH_KEY: &str = "header_path";

/// A chunk of a Markdown document and the headers it sits under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MarkdownChunk {
    /// The chunk's text.
    pub content: String,
    /// Byte offset of the chunk in the Markdown document.
    pub start: usize,
    /// The titles of the enclosing headers, outermost first (`["Chapter", "Section"]`); empty before the first
    /// header.
    pub headers: Vec<String>,
}

/// Splits Markdown into sections at ATX headers (`#` to `######`), then each section with a
/// [`RecursiveCharacterTextSplitter`].
///
/// A section runs from a header line to the next header line of any level. Its header path is the titles of the
/// last header of each level above it (a `##` after a `#` is nested in it; a new `#` closes both). Lines in
/// fenced code blocks (```` ``` ```` or `~~~`) are never headers; setext headers (underlined with `===`) are not
/// recognised. Header lines stay in the chunk text unless [`strip_headers`](Self::strip_headers) is set.
/// [`TextSplitter::split_documents`] stores the path in the [`HEADERS_KEY`] and [`HEADER_PATH_KEY`] metadata.
///
/// ```
/// use catena_text::splitter::{MarkdownSplitter, RecursiveCharacterTextSplitter};
///
/// let md = "# Guide\nIntro.\n## Install\nRun cargo.\n```sh\n# not a header\n```\n";
/// let splitter = MarkdownSplitter::new(RecursiveCharacterTextSplitter::new(200, 0)?);
/// let chunks = splitter.split_markdown(md);
/// assert_eq!(chunks.len(), 2);
/// assert_eq!(chunks[1].headers, ["Guide", "Install"]);
/// assert!(chunks[1].content.starts_with("## Install\nRun cargo."));
/// assert_eq!(&md[chunks[1].start..chunks[1].start + 10], "## Install");
/// # Ok::<(), catena_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MarkdownSplitter {
    splitter: RecursiveCharacterTextSplitter,
    strip_headers: bool,
}

impl MarkdownSplitter {
    /// Sections sub-split by `splitter`; header lines kept in the chunk text.
    pub fn new(splitter: RecursiveCharacterTextSplitter) -> Self {
        MarkdownSplitter { splitter, strip_headers: false }
    }

    /// Whether to leave the header lines out of the chunk text (they remain in the header path).
    pub fn strip_headers(mut self, strip: bool) -> Self {
        self.strip_headers = strip;
        self
    }

    /// Splits `text` into chunks with their header paths, in document order.
    pub fn split_markdown(&self, text: &str) -> Vec<MarkdownChunk> {
        let mut out = Vec::new();
        for section in sections(text) {
            let body_start = if self.strip_headers { section.body_start } else { section.start };
            let body = &text[body_start..section.end];
            for chunk in self.splitter.split_text(body) {
                out.push(MarkdownChunk {
                    content: chunk.content,
                    start: body_start + chunk.start,
                    headers: section.headers.clone(),
                });
            }
        }
        out
    }
}

impl TextSplitter for MarkdownSplitter {
    fn settings(&self) -> String {
        format!("markdown(strip_headers={}, {})", self.strip_headers, self.splitter.settings())
    }

    fn split_text(&self, text: &str) -> Vec<Chunk> {
        self.split_markdown(text).into_iter().map(|c| Chunk { content: c.content, start: c.start }).collect()
    }

    fn split_documents(&self, docs: &[Document]) -> Vec<Document> {
        let mut out = Vec::new();
        for doc in docs {
            for chunk in self.split_markdown(&doc.content) {
                let headers = chunk.headers;
                out.push(chunk_document(doc, chunk.content, chunk.start, |meta| {
                    meta.insert(HEADER_PATH_KEY.to_string(), Value::String(headers.join(" > ")));
                    meta.insert(
                        HEADERS_KEY.to_string(),
                        Value::Array(headers.into_iter().map(Value::String).collect()),
                    );
                }));
            }
        }
        out
    }
}

/// A header-delimited byte range of the document.
#[derive(Debug, PartialEq)]
struct Section {
    /// Start of the header line (or of the document).
    start: usize,
    /// Just after the header line (equal to `start` when the section has no header).
    body_start: usize,
    end: usize,
    headers: Vec<String>,
}

/// An open fenced code block: its fence character and length.
struct Fence {
    ch: u8,
    len: usize,
}

/// Cuts the document at ATX header lines outside fenced code.
fn sections(text: &str) -> Vec<Section> {
    let mut out = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut current = Section { start: 0, body_start: 0, end: 0, headers: Vec::new() };
    let mut fence: Option<Fence> = None;
    let mut line_start = 0;
    while line_start < text.len() {
        let line_end = memchr::memchr(b'\n', &text.as_bytes()[line_start..]).map_or(text.len(), |i| line_start + i + 1);
        let line = text[line_start..line_end].trim_end_matches(['\n', '\r']);
        if let Some(open) = &fence {
            if closes_fence(line, open) {
                fence = None;
            }
        } else if let Some(f) = opens_fence(line) {
            fence = Some(f);
        } else if let Some((level, title)) = atx_header(line) {
            current.end = line_start;
            if current.end > current.start {
                out.push(current);
            }
            while stack.last().is_some_and(|(l, _)| *l >= level) {
                stack.pop();
            }
            stack.push((level, title.to_string()));
            current = Section {
                start: line_start,
                body_start: line_end,
                end: 0,
                headers: stack.iter().map(|(_, t)| t.clone()).collect(),
            };
        }
        line_start = line_end;
    }
    current.end = text.len();
    if current.end > current.start {
        out.push(current);
    }
    out
}

/// Strips up to three leading spaces (more make an indented code block in CommonMark).
fn strip_indent(line: &str) -> Option<&str> {
    let indent = line.bytes().take_while(|&b| b == b' ').count();
    (indent <= 3).then(|| &line[indent..])
}

/// The level and title of an ATX header line (`## Title ##`).
fn atx_header(line: &str) -> Option<(usize, &str)> {
    let rest = strip_indent(line)?;
    let level = rest.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let after = &rest[level..];
    if !(after.is_empty() || after.starts_with([' ', '\t'])) {
        return None;
    }
    let mut title = after.trim_matches([' ', '\t']);
    // An optional closing sequence of '#'s, preceded by a space or making up the whole title.
    let without_closing = title.trim_end_matches('#');
    if without_closing.is_empty() {
        title = "";
    } else if without_closing.ends_with([' ', '\t']) {
        title = without_closing.trim_end_matches([' ', '\t']);
    }
    Some((level, title))
}

/// A fence opening line: three or more backticks (with no backtick after them) or tildes.
fn opens_fence(line: &str) -> Option<Fence> {
    let rest = strip_indent(line)?;
    let ch = *rest.as_bytes().first()?;
    if ch != b'`' && ch != b'~' {
        return None;
    }
    let len = rest.bytes().take_while(|&b| b == ch).count();
    if len < 3 || (ch == b'`' && rest[len..].contains('`')) {
        return None;
    }
    Some(Fence { ch, len })
}

/// Whether `line` closes the open fence: at least as many of the same character, then only blanks.
fn closes_fence(line: &str, open: &Fence) -> bool {
    let Some(rest) = strip_indent(line) else { return false };
    let len = rest.bytes().take_while(|&b| b == open.ch).count();
    len >= open.len && rest[len..].trim_matches([' ', '\t']).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_syntax() {
        assert_eq!(atx_header("# Title"), Some((1, "Title")));
        assert_eq!(atx_header("   ### Deep ###  "), Some((3, "Deep")));
        assert_eq!(atx_header("## C# and F#"), Some((2, "C# and F#")));
        assert_eq!(atx_header("#"), Some((1, "")));
        assert_eq!(atx_header("#hashtag"), None);
        assert_eq!(atx_header("####### seven"), None);
        assert_eq!(atx_header("    # indented code"), None);
    }

    #[test]
    fn fences_hide_headers_and_paths_nest() {
        let md = "pre\n# A\na\n~~~~\n# no\n~~~\n# still no\n~~~~\n## B\nb\r\n### C\nc\n## D\nd\n# E\ne";
        let s = sections(md);
        let paths: Vec<Vec<&str>> = s.iter().map(|s| s.headers.iter().map(String::as_str).collect()).collect();
        assert_eq!(
            paths,
            [vec![], vec!["A"], vec!["A", "B"], vec!["A", "B", "C"], vec!["A", "D"], vec!["E"]] as [Vec<&str>; 6]
        );
        assert_eq!(&md[s[1].start..s[1].end], "# A\na\n~~~~\n# no\n~~~\n# still no\n~~~~\n");
        assert_eq!(&md[s[2].body_start..s[2].end], "b\r\n");
        let rebuilt: String = s.iter().map(|s| &md[s.start..s.end]).collect();
        assert_eq!(rebuilt, md);
    }

    #[test]
    fn long_sections_are_sub_split_with_offsets_into_the_document() {
        let md = format!("# Top\n{}\n## Sub\nshort", "word ".repeat(50));
        let splitter = MarkdownSplitter::new(RecursiveCharacterTextSplitter::new(60, 10).unwrap());
        let chunks = splitter.split_markdown(&md);
        assert!(chunks.len() > 4);
        for c in &chunks {
            assert!(md[c.start..].starts_with(&c.content));
            assert!(c.content.chars().count() <= 60);
        }
        assert_eq!(chunks.last().unwrap().headers, ["Top", "Sub"]);
        let stripped = splitter.strip_headers(true).split_markdown(&md);
        assert_eq!(stripped.last().unwrap().content, "short");
        assert!(stripped.iter().all(|c| !c.content.contains('#')));
    }

    #[test]
    fn documents_carry_the_header_path() {
        let splitter = MarkdownSplitter::new(RecursiveCharacterTextSplitter::new(100, 0).unwrap());
        let doc = Document::new("# A\n## B\ntext", catena_core::Metadata::new());
        let docs = splitter.split_documents(&[doc]);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].metadata[HEADERS_KEY], serde_json::json!(["A", "B"]));
        assert_eq!(docs[1].metadata[HEADER_PATH_KEY], "A > B");
        assert_eq!(docs[1].metadata[catena_core::START_INDEX_KEY], 4);
    }
}
