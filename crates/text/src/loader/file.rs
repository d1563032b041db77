//! Reading one file: UTF-8 decoding, file metadata, and [`TextLoader`].

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use serde_json::Value;

use super::json::{self, JsonOptions};
use super::markdown::{self, MarkdownOptions};
use super::{LoadReport, Loader, CONTENT_HASH_KEY, EXTENSION_KEY, FILE_NAME_KEY, MODIFIED_KEY, SIZE_BYTES_KEY};
use catena_core::document::{stable_id, Document, Metadata, SOURCE_KEY};
use catena_core::error::{Error, Result};

/// Loads one UTF-8 text file as one [`Document`] holding the whole text.
///
/// ```no_run
/// # async fn demo() -> catena_core::Result<()> {
/// use catena_text::{Loader, TextLoader};
/// let docs = TextLoader::new("notes.txt").load().await.into_result()?;
/// assert_eq!(docs.len(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextLoader {
    path: PathBuf,
}

impl TextLoader {
    /// A loader for the file at `path` (also its `source` metadata).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TextLoader { path: path.into() }
    }

    /// The file this loader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl Loader for TextLoader {
    async fn load(&self) -> LoadReport {
        load_in_background(self.path.clone(), FileKind::Text).await
    }
}

/// How a file's text becomes documents.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FileKind {
    Text,
    Markdown(MarkdownOptions),
    Json(JsonOptions, Option<json::JsonFormat>),
}

/// Runs [`load_file`] on tokio's blocking pool, so neither the file system nor parsing blocks the runtime.
pub(crate) async fn load_in_background(path: PathBuf, kind: FileKind) -> LoadReport {
    let for_error = path.clone();
    match tokio::task::spawn_blocking(move || load_file(&path, &kind)).await {
        Ok(report) => report,
        Err(join_error) => LoadReport::failed(
            for_error.clone(),
            Error::io(for_error, std::io::Error::other(format!("loading task failed: {join_error}"))),
        ),
    }
}

/// Reads, decodes and parses one file (blocking).
pub(crate) fn load_file(path: &Path, kind: &FileKind) -> LoadReport {
    let (text, metadata) = match read_text(path) {
        Ok(read) => read,
        Err(error) => return LoadReport::failed(path, error),
    };
    match kind {
        FileKind::Text => LoadReport { documents: vec![finish(text, metadata)], ..Default::default() },
        FileKind::Markdown(options) => {
            LoadReport { documents: vec![markdown::to_document(text, metadata, options)], ..Default::default() }
        }
        FileKind::Json(options, format) => json::to_documents(path, &text, &metadata, options, *format),
    }
}

/// Reads `path` as UTF-8 text (without a leading byte order mark) and returns it with the file metadata.
pub(crate) fn read_text(path: &Path) -> Result<(String, Metadata)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file_meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let text = decode_utf8(path, bytes)?;

    let mut metadata = Metadata::new();
    metadata.insert(SOURCE_KEY.into(), Value::String(path.to_string_lossy().into_owned()));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    metadata.insert(FILE_NAME_KEY.into(), Value::String(file_name));
    let extension = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
    metadata.insert(EXTENSION_KEY.into(), Value::String(extension));
    metadata.insert(SIZE_BYTES_KEY.into(), Value::from(file_meta.len()));
    if let Some(secs) = file_meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
        metadata.insert(MODIFIED_KEY.into(), Value::from(secs.as_secs()));
    }
    Ok((text, metadata))
}

/// Decodes strict UTF-8, dropping a leading byte order mark; an error names the byte offset and line.
fn decode_utf8(path: &Path, mut bytes: Vec<u8>) -> Result<String> {
    let bom = if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) { 3 } else { 0 };
    bytes.drain(..bom);
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
        Error::Format {
            path: path.to_path_buf(),
            message: format!(
                "not valid UTF-8: invalid byte 0x{:02x} at byte offset {} (line {line}); \
                 convert the file to UTF-8 or exclude it from the loader",
                bytes[offset],
                offset + bom
            ),
        }
    })
}

/// Adds the content hash and builds the document (id from source and content).
pub(crate) fn finish(content: String, mut metadata: Metadata) -> Document {
    metadata.insert(CONTENT_HASH_KEY.into(), Value::String(stable_id(&[&content])));
    Document::new(content, metadata)
}
