//! [`DirectoryLoader`]: every selected file below a directory.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use tracing::Instrument;

use super::file::{load_in_background, FileKind};
use super::json::JsonOptions;
use super::markdown::MarkdownOptions;
use super::{LoadFailure, LoadReport, Loader, SkipReason, SkippedFile};
use catena_core::error::{Error, Result};

/// Loads every selected file below a directory, choosing the loader by extension.
///
/// | extension (any case) | loaded as |
/// | --- | --- |
/// | `.md`, `.markdown` | Markdown ([`MarkdownLoader`](super::MarkdownLoader), with [`DirectoryLoader::with_markdown`]'s options) |
/// | `.json`, `.jsonl`, `.ndjson` | JSON records ([`JsonLoader`](super::JsonLoader)) when [`DirectoryLoader::with_json`] is set, else text |
/// | anything else | text ([`TextLoader`](super::TextLoader)) |
///
/// Selection: a file is loaded when its path relative to the root (with `/` separators, for example
/// `src/ch01.md`) matches an include glob (every file when none is set) and no exclude glob. Globs follow
/// [`globset`] syntax with `*` not crossing `/`: `**/*.md` matches Markdown files at any depth, `*.md` only at the
/// top. A directory whose relative path matches an exclude glob (`target`, `**/node_modules`) is not entered.
///
/// The walk is sorted by file name, so documents come out in the same order on every run. Symbolic links are
/// followed; a link cycle or a dangling link is reported as a failure, never followed forever. Files are read on
/// tokio's blocking pool, at most [`DirectoryLoader::with_concurrency`] at a time (default 8). The `source` of
/// each document is the root joined with the file's relative path, exactly as the walk produced it.
///
/// ```
/// # async fn demo() -> catena_core::Result<()> {
/// use catena_text::{DirectoryLoader, Loader};
/// # let root = std::env::temp_dir().join("catena-doc-dir");
/// # std::fs::create_dir_all(root.join("guide")).unwrap();
/// # std::fs::write(root.join("guide/intro.md"), "# Intro\n").unwrap();
/// # std::fs::write(root.join("notes.txt"), "not selected").unwrap();
/// let report = DirectoryLoader::new(&root)
///     .with_include("**/*.md")?
///     .with_max_file_size(1 << 20)
///     .load()
///     .await;
/// assert_eq!(report.documents.len(), 1);
/// assert_eq!(report.documents[0].metadata["title"], "Intro");
/// assert!(report.documents[0].source().unwrap().ends_with("guide/intro.md"));
/// # Ok(())
/// # }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct DirectoryLoader {
    root: PathBuf,
    include: Globs,
    exclude: Globs,
    max_file_size: Option<u64>,
    json: Option<JsonOptions>,
    markdown: MarkdownOptions,
    concurrency: usize,
}

/// A list of glob patterns and their compiled set.
#[derive(Debug, Clone)]
struct Globs {
    patterns: Vec<Glob>,
    set: GlobSet,
}

impl Globs {
    fn new() -> Self {
        Globs { patterns: Vec::new(), set: GlobSet::empty() }
    }

    fn add(&mut self, setting: &str, pattern: &str) -> Result<()> {
        let glob = GlobBuilder::new(pattern).literal_separator(true).build().map_err(|e| {
            Error::config(
                setting,
                format!("`{pattern}` is not a valid glob: {e}"),
                "use globset syntax such as `**/*.md`",
            )
        })?;
        self.patterns.push(glob);
        let mut builder = GlobSetBuilder::new();
        for glob in &self.patterns {
            builder.add(glob.clone());
        }
        self.set = builder.build().map_err(|e| {
            Error::config(setting, format!("the glob set does not compile: {e}"), "simplify the patterns")
        })?;
        Ok(())
    }
}

impl DirectoryLoader {
    /// Loads every file below `root`, with no size limit, JSON loaded as text, Markdown front matter kept, and 8
    /// files read at a time.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirectoryLoader {
            root: root.into(),
            include: Globs::new(),
            exclude: Globs::new(),
            max_file_size: None,
            json: None,
            markdown: MarkdownOptions::default(),
            concurrency: 8,
        }
    }

    /// Adds an include glob, relative to the root (`**/*.md`). Once any is set, only matching files load.
    ///
    /// # Errors
    /// [`Error::Config`] when `pattern` is not a valid glob.
    pub fn with_include(mut self, pattern: &str) -> Result<Self> {
        self.include.add("DirectoryLoader::with_include", pattern)?;
        Ok(self)
    }

    /// Adds an exclude glob, relative to the root (`drafts/**`, `**/SUMMARY.md`).
    ///
    /// # Errors
    /// [`Error::Config`] when `pattern` is not a valid glob.
    pub fn with_exclude(mut self, pattern: &str) -> Result<Self> {
        self.exclude.add("DirectoryLoader::with_exclude", pattern)?;
        Ok(self)
    }

    /// Leaves out files larger than `bytes`; they are listed in [`LoadReport::skipped`].
    pub fn with_max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = Some(bytes);
        self
    }

    /// Loads `.json`, `.jsonl` and `.ndjson` files as records with these options.
    pub fn with_json(mut self, options: JsonOptions) -> Self {
        self.json = Some(options);
        self
    }

    /// Sets how Markdown files are loaded.
    pub fn with_markdown(mut self, options: MarkdownOptions) -> Self {
        self.markdown = options;
        self
    }

    /// Reads at most `files` files at the same time (at least 1).
    pub fn with_concurrency(mut self, files: usize) -> Self {
        self.concurrency = files.max(1);
        self
    }

    /// The directory this loader walks.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The loader for a selected file, by extension.
    fn kind_for(&self, path: &Path) -> FileKind {
        let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match (extension.as_deref(), &self.json) {
            (Some("md" | "markdown"), _) => FileKind::Markdown(self.markdown),
            (Some("json" | "jsonl" | "ndjson"), Some(options)) => FileKind::Json(options.clone(), None),
            _ => FileKind::Text,
        }
    }

    /// Walks the tree (blocking): the files to load, in order, interleaved with walk failures and skips.
    fn walk(&self) -> Vec<Entry> {
        let root = self.root.clone();
        let exclude = self.exclude.set.clone();
        let prune_root = root.clone();
        let walker = walkdir::WalkDir::new(&root).follow_links(true).sort_by_file_name().into_iter().filter_entry(
            move |entry| {
                !(entry.depth() > 0
                    && entry.file_type().is_dir()
                    && exclude.is_match(relative(&prune_root, entry.path())))
            },
        );
        let mut entries = Vec::new();
        for item in walker {
            let entry = match item {
                Ok(entry) => entry,
                Err(error) => {
                    let path = error.path().map_or_else(|| root.clone(), Path::to_path_buf);
                    let rel = relative(&root, &path);
                    // A dangling link looks like a file: apply the file selection to it. Anything else (an
                    // unreadable directory, a link cycle) is reported unless explicitly excluded.
                    let dangling_link = error.loop_ancestor().is_none()
                        && std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
                    let wanted = if dangling_link { self.selects(&rel) } else { !self.exclude.set.is_match(&rel) };
                    if wanted {
                        let io = std::io::Error::from(error);
                        entries.push(Entry::Failed(LoadFailure { path: path.clone(), error: Error::io(path, io) }));
                    }
                    continue;
                }
            };
            if entry.file_type().is_dir() {
                continue;
            }
            let rel = if entry.depth() == 0 {
                entry.file_name().to_string_lossy().into_owned()
            } else {
                relative(&root, entry.path())
            };
            if !self.selects(&rel) {
                continue;
            }
            let path = entry.path().to_path_buf();
            if let Some(limit) = self.max_file_size {
                match entry.metadata() {
                    Ok(meta) if meta.len() > limit => {
                        let reason = SkipReason::TooLarge { size_bytes: meta.len(), limit };
                        entries.push(Entry::Skipped(SkippedFile { path, reason }));
                        continue;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        let io = std::io::Error::from(error);
                        entries.push(Entry::Failed(LoadFailure { path: path.clone(), error: Error::io(path, io) }));
                        continue;
                    }
                }
            }
            let kind = self.kind_for(&path);
            entries.push(Entry::File(path, kind));
        }
        entries
    }

    /// Whether a file at `rel` (relative to the root) is selected by the globs.
    fn selects(&self, rel: &str) -> bool {
        (self.include.patterns.is_empty() || self.include.set.is_match(rel)) && !self.exclude.set.is_match(rel)
    }
}

/// One step of the walk.
enum Entry {
    File(PathBuf, FileKind),
    Failed(LoadFailure),
    Skipped(SkippedFile),
}

/// `path` relative to `root`, with `/` separators.
fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<_> = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect();
    parts.join("/")
}

#[async_trait]
impl Loader for DirectoryLoader {
    async fn load(&self) -> LoadReport {
        let span = tracing::debug_span!("load_directory", root = %self.root.display());
        async {
            let this = self.clone();
            let entries = match tokio::task::spawn_blocking(move || this.walk()).await {
                Ok(entries) => entries,
                Err(join_error) => {
                    let io = std::io::Error::other(format!("directory walk failed: {join_error}"));
                    return LoadReport::failed(self.root.clone(), Error::io(self.root.clone(), io));
                }
            };
            let mut report = LoadReport::default();
            let mut loads = stream::iter(entries)
                .map(|entry| async move {
                    match entry {
                        Entry::File(path, kind) => load_in_background(path, kind).await,
                        Entry::Failed(failure) => LoadReport { failures: vec![failure], ..Default::default() },
                        Entry::Skipped(skipped) => LoadReport { skipped: vec![skipped], ..Default::default() },
                    }
                })
                .buffered(self.concurrency);
            while let Some(one) = loads.next().await {
                report.extend(one);
            }
            tracing::debug!(
                documents = report.documents.len(),
                failures = report.failures.len(),
                skipped = report.skipped.len(),
                "directory loaded"
            );
            report
        }
        .instrument(span)
        .await
    }
}
