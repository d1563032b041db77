//! [`MarkdownLoader`]: one Markdown file, with its title in metadata.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::Value;

use super::file::{finish, load_in_background, FileKind};
use super::{LoadReport, Loader, TITLE_KEY};
use catena_core::document::{Document, Metadata};

/// How Markdown files are turned into documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MarkdownOptions {
    /// Remove a leading YAML front matter block (`---` ... `---`) from the content. Default `false`: the content
    /// is the file's text unchanged.
    pub strip_front_matter: bool,
}

/// Loads one Markdown file as one [`Document`], with a `title` metadata entry.
///
/// The title is the front matter's `title:` value when the file starts with a YAML front matter block that has
/// one; otherwise the text of the first level-1 ATX heading (`# Title`); otherwise the first ATX heading of any
/// level (`## Title`), as many book chapters start at level 2. Headings inside fenced or indented code blocks
/// do not count. Without any heading there is no `title` entry.
///
/// ```
/// # async fn demo() -> catena_core::Result<()> {
/// use catena_text::{Loader, MarkdownLoader};
/// # let path = std::env::temp_dir().join("catena-doc-markdown.md");
/// # std::fs::write(&path, "# Getting Started\n\nHello.\n").unwrap();
/// let docs = MarkdownLoader::new(&path).load().await.into_result()?;
/// assert_eq!(docs[0].metadata["title"], "Getting Started");
/// # Ok(())
/// # }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkdownLoader {
    path: PathBuf,
    options: MarkdownOptions,
}

impl MarkdownLoader {
    /// A loader for the file at `path` (also its `source` metadata), keeping front matter in the content.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        MarkdownLoader { path: path.into(), options: MarkdownOptions::default() }
    }

    /// Sets the options.
    pub fn with_options(mut self, options: MarkdownOptions) -> Self {
        self.options = options;
        self
    }

    /// The file this loader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl Loader for MarkdownLoader {
    async fn load(&self) -> LoadReport {
        load_in_background(self.path.clone(), FileKind::Markdown(self.options)).await
    }
}

/// Builds the document for a Markdown text.
pub(crate) fn to_document(text: String, mut metadata: Metadata, options: &MarkdownOptions) -> Document {
    let front = front_matter(&text);
    let title = front.and_then(|(yaml, _)| front_matter_title(yaml)).or_else(|| {
        let body = front.map_or(text.as_str(), |(_, body_start)| &text[body_start..]);
        first_heading(body)
    });
    if let Some(title) = title {
        metadata.insert(TITLE_KEY.into(), Value::String(title));
    }
    let content = match front {
        Some((_, body_start)) if options.strip_front_matter => text[body_start..].to_string(),
        _ => text,
    };
    finish(content, metadata)
}

/// If `text` starts with a YAML front matter block, returns its inside and the byte offset where the body starts.
fn front_matter(text: &str) -> Option<(&str, usize)> {
    let first_end = text.find('\n')?;
    if text[..first_end].trim_end() != "---" {
        return None;
    }
    let inner_start = first_end + 1;
    let mut pos = inner_start;
    while pos <= text.len() {
        let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        let line = text[pos..line_end].trim_end();
        if line == "---" || line == "..." {
            let body_start = (line_end + 1).min(text.len());
            return Some((&text[inner_start..pos], body_start));
        }
        if line_end == text.len() {
            break;
        }
        pos = line_end + 1;
    }
    None
}

/// The value of a top-level `title:` key in YAML front matter (plain, single- or double-quoted scalars).
fn front_matter_title(yaml: &str) -> Option<String> {
    let line = yaml.lines().find_map(|l| l.strip_prefix("title:"))?;
    let value = line.trim();
    let title = if let Some(rest) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    other => out.push(other),
                },
                c => out.push(c),
            }
        }
        out
    } else if let Some(rest) = value.strip_prefix('\'') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        loop {
            match chars.next()? {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    out.push('\'');
                }
                '\'' => break,
                c => out.push(c),
            }
        }
        out
    } else {
        // A plain scalar ends at a comment; block scalars (`|`, `>`) are not read.
        let plain = value.split(" #").next().unwrap_or("").trim();
        if plain.starts_with('|') || plain.starts_with('>') {
            return None;
        }
        plain.to_string()
    };
    let title = title.trim().to_string();
    (!title.is_empty()).then_some(title)
}

/// The first level-1 ATX heading's text, else the first ATX heading of any level, outside code blocks.
pub(crate) fn first_heading(text: &str) -> Option<String> {
    let mut fence: Option<(char, usize)> = None;
    let mut first_any: Option<String> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let trimmed = &line[indent..];
        if let Some((ch, len)) = fence {
            let run = trimmed.chars().take_while(|&c| c == ch).count();
            if indent < 4 && run >= len && trimmed[run..].trim().is_empty() {
                fence = None;
            }
            continue;
        }
        if indent >= 4 {
            continue;
        }
        for ch in ['`', '~'] {
            let run = trimmed.chars().take_while(|&c| c == ch).count();
            if run >= 3 {
                fence = Some((ch, run));
            }
        }
        if fence.is_some() {
            continue;
        }
        if let Some((level, heading)) = atx_heading(trimmed) {
            if level == 1 {
                return Some(heading);
            }
            first_any.get_or_insert(heading);
        }
    }
    first_any
}

/// Parses `## Heading ##` into (level, text); `None` when the line is not a non-empty ATX heading.
fn atx_heading(line: &str) -> Option<(usize, String)> {
    let level = line.chars().take_while(|&c| c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let mut text = rest.trim();
    // An optional closing sequence of `#`s, preceded by a space.
    let without_closing = text.trim_end_matches('#');
    if without_closing.is_empty() || without_closing.ends_with(' ') || without_closing.ends_with('\t') {
        text = without_closing.trim_end();
    }
    (!text.is_empty()).then(|| (level, text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings() {
        assert_eq!(first_heading("intro\n# Title #\n## Sub"), Some("Title".into()));
        assert_eq!(first_heading("## Sub\ntext\n# Later H1"), Some("Later H1".into()));
        assert_eq!(first_heading("## What Is Ownership?\n\ntext"), Some("What Is Ownership?".into()));
        assert_eq!(first_heading("```sh\n# not a heading\n```\n# Real"), Some("Real".into()));
        assert_eq!(first_heading("~~~~\n```\n# inside\n~~~~\n## After"), Some("After".into()));
        assert_eq!(first_heading("    # indented code\n#hashtag\n#\n"), None);
        assert_eq!(first_heading("# C# ##"), Some("C#".into()));
    }

    #[test]
    fn front_matter_titles() {
        let text = "---\nlayout: post\ntitle: \"Say \\\"hi\\\"\"\n---\n# Heading\n";
        let (yaml, body) = front_matter(text).unwrap();
        assert_eq!(front_matter_title(yaml), Some("Say \"hi\"".into()));
        assert_eq!(&text[body..], "# Heading\n");
        assert_eq!(front_matter_title("title: 'It''s' \n"), Some("It's".into()));
        assert_eq!(front_matter_title("title: Plain words # comment"), Some("Plain words".into()));
        assert_eq!(front_matter_title("title: >\n  folded\n"), None);
        assert_eq!(front_matter_title("subtitle: no\n  title: nested"), None);
        assert!(front_matter("---\nnot closed\n").is_none());
        assert!(front_matter("text\n---\n").is_none());
    }
}
