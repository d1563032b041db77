//! Document loaders: turn files into [`Document`]s.
//!
//! A [`Loader`] reads its sources and returns a [`LoadReport`]: the documents it could load *and* a
//! [`LoadFailure`] for every source it could not (unreadable, not UTF-8, malformed JSON, a record without the
//! content field). One bad file never aborts the others and is never skipped silently; callers that want
//! all-or-nothing use [`LoadReport::into_result`].
//!
//! | loader | reads | documents |
//! | --- | --- | --- |
//! | [`TextLoader`] | one UTF-8 file | one, the whole text |
//! | [`MarkdownLoader`] | one Markdown file | one, with a `title` from front matter or the first heading |
//! | [`JsonLoader`] | one `.json` or `.jsonl` file | one per record, content taken by JSON Pointer |
//! | [`DirectoryLoader`] | a directory tree, filtered by globs | the above, chosen by file extension |
//!
//! # Metadata
//!
//! Every document loaded from a file carries these metadata entries:
//!
//! | key | value |
//! | --- | --- |
//! | [`SOURCE_KEY`] `source` | the file's path as the loader saw it: the path given to a single-file loader, or the directory root joined with the path below it for [`DirectoryLoader`] (`../shared/corpora/rust-book/ch01-00-getting-started.md`) |
//! | [`FILE_NAME_KEY`] `file_name` | the last path component |
//! | [`EXTENSION_KEY`] `extension` | the extension without the dot, as written (`""` when there is none) |
//! | [`SIZE_BYTES_KEY`] `size_bytes` | the file's size in bytes |
//! | [`MODIFIED_KEY`] `modified` | last modification time in Unix seconds (absent only where the platform has no mtime) |
//! | [`CONTENT_HASH_KEY`] `content_hash` | [`stable_id`] of the document's content, so an index can tell which documents changed |
//!
//! Markdown documents add [`TITLE_KEY`]; JSON records add [`RECORD_INDEX_KEY`], [`LINE_KEY`] (JSON Lines) and the
//! fields chosen by [`JsonMetadata`].
//!
//! Ids come from [`Document::new`]: a hash of `source` and content, stable across runs.
//!
//! Text is decoded as strict UTF-8; a leading byte order mark is removed.
//!
//! ```
//! # async fn demo() -> catena_core::Result<()> {
//! use catena_text::{DirectoryLoader, Loader};
//!
//! let loader = DirectoryLoader::new("docs").with_include("**/*.md")?.with_exclude("drafts/**")?;
//! let report = loader.load().await;
//! for failure in &report.failures {
//!     eprintln!("skipping {}", failure);
//! }
//! let documents = report.documents;
//! # let _ = documents;
//! # Ok(())
//! # }
//! ```
//!
//! [`Document`]: catena_core::Document
//! [`Document::new`]: catena_core::Document::new
//! [`stable_id`]: catena_core::stable_id
//! [`SOURCE_KEY`]: catena_core::SOURCE_KEY

mod directory;
mod file;
pub(crate) mod json;
mod markdown;

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;

use catena_core::document::Document;
use catena_core::error::{Error, Result};

pub use directory::DirectoryLoader;
pub use file::TextLoader;
pub use json::{JsonFormat, JsonLoader, JsonMetadata, JsonOptions};
pub use markdown::{MarkdownLoader, MarkdownOptions};

/// The file's last path component.
pub const FILE_NAME_KEY: &str = "file_name";
/// The file's extension without the dot (`""` when there is none).
pub const EXTENSION_KEY: &str = "extension";
/// The file's size in bytes.
pub const SIZE_BYTES_KEY: &str = "size_bytes";
/// The file's modification time in Unix seconds.
pub const MODIFIED_KEY: &str = "modified";
/// [`stable_id`](catena_core::stable_id) of the document's content.
pub const CONTENT_HASH_KEY: &str = "content_hash";
/// A Markdown document's title (front matter `title:` or first heading).
pub const TITLE_KEY: &str = "title";
/// For JSON loaders: the 0-based index of the record among the file's records.
pub const RECORD_INDEX_KEY: &str = "record_index";
/// For JSON Lines: the 1-based line number of the record.
pub const LINE_KEY: &str = "line";

/// Loads documents from some source.
///
/// Implementations report every source they could not load in [`LoadReport::failures`] and keep going.
#[async_trait]
pub trait Loader: Send + Sync {
    /// Loads everything, returning the documents and the failures.
    async fn load(&self) -> LoadReport;
}

#[async_trait]
impl<T: Loader + ?Sized> Loader for std::sync::Arc<T> {
    async fn load(&self) -> LoadReport {
        (**self).load().await
    }
}

/// What a [`Loader`] produced: the documents, and what it could not load.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// The documents, in a deterministic order (file path order, then record order).
    pub documents: Vec<Document>,
    /// Sources (files or records) that could not be loaded.
    pub failures: Vec<LoadFailure>,
    /// Files left out on purpose by a configured limit (not errors).
    pub skipped: Vec<SkippedFile>,
}

impl LoadReport {
    /// A report with no documents and this one failure.
    pub fn failed(path: impl Into<PathBuf>, error: Error) -> Self {
        LoadReport { failures: vec![LoadFailure { path: path.into(), error }], ..Default::default() }
    }

    /// Whether every source loaded.
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty()
    }

    /// Appends another report's documents, failures and skipped files.
    pub fn extend(&mut self, other: LoadReport) {
        self.documents.extend(other.documents);
        self.failures.extend(other.failures);
        self.skipped.extend(other.skipped);
    }

    /// The documents if nothing failed.
    ///
    /// # Errors
    /// With one failure, that failure's error (it names the path). With several, an [`Error::InvalidInput`]
    /// listing each failed path and its error.
    pub fn into_result(mut self) -> Result<Vec<Document>> {
        match self.failures.len() {
            0 => Ok(self.documents),
            1 => Err(self.failures.remove(0).error),
            n => {
                let mut message =
                    format!("{n} sources failed to load (fix or exclude them, or use the partial LoadReport):");
                for failure in &self.failures {
                    message.push_str("\n  ");
                    message.push_str(&failure.to_string());
                }
                Err(Error::InvalidInput(message))
            }
        }
    }
}

/// A source that could not be loaded.
#[derive(Debug)]
pub struct LoadFailure {
    /// The file concerned.
    pub path: PathBuf,
    /// What went wrong: [`Error::Io`] when the file could not be read, [`Error::Format`] when its content is not
    /// valid (not UTF-8, malformed JSON, a record without the content field), [`Error::Config`] when the
    /// loader's options cannot apply.
    pub error: Error,
}

impl fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            // These variants already lead with the path.
            Error::Io { .. } | Error::Format { .. } => write!(f, "{}", self.error),
            other => write!(f, "{}: {other}", self.path.display()),
        }
    }
}

/// A file a loader left out because of a configured limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file concerned.
    pub path: PathBuf,
    /// Why it was left out.
    pub reason: SkipReason,
}

/// Why a file was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The file is larger than [`DirectoryLoader::with_max_file_size`].
    TooLarge {
        /// The file's size.
        size_bytes: u64,
        /// The configured limit.
        limit: u64,
    },
}

impl fmt::Display for SkippedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            SkipReason::TooLarge { size_bytes, limit } => {
                write!(f, "{}: {size_bytes} bytes, over the {limit}-byte limit", self.path.display())
            }
        }
    }
}

#[cfg(test)]
mod tests;
