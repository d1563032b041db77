//! [`JsonLoader`]: one document per record of a JSON or JSON Lines file.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::Value;

use super::file::{finish, load_in_background, FileKind};
use super::{LoadFailure, LoadReport, Loader, LINE_KEY, RECORD_INDEX_KEY};
use catena_core::document::Metadata;
use catena_core::error::Error;

/// How JSON records become documents: where the records are, which field is the content, which fields are
/// metadata.
///
/// Fields are addressed by [JSON Pointer](https://www.rfc-editor.org/rfc/rfc6901) (`/text`, `/meta/author`,
/// `""` for the whole value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonOptions {
    /// Pointer, inside each record, to the string that becomes the document's content. A record without it (or
    /// where it is not a string) is reported as a failure naming the record.
    pub content: String,
    /// For JSON (not JSON Lines) files: pointer to the records, an array (one document per element) or an object
    /// (one document). [`JsonOptions::new`] sets `""`, the whole file.
    pub records: String,
    /// Which record fields are copied into the metadata. [`JsonOptions::new`] sets [`JsonMetadata::None`].
    pub metadata: JsonMetadata,
}

impl JsonOptions {
    /// Takes the content from `content` (a JSON Pointer such as `/text`), reads records from the file's root and
    /// copies no fields into metadata.
    pub fn new(content: impl Into<String>) -> Self {
        JsonOptions { content: content.into(), records: String::new(), metadata: JsonMetadata::None }
    }

    /// Reads the records of JSON files at this pointer (for example `/items`).
    pub fn with_records(mut self, records: impl Into<String>) -> Self {
        self.records = records.into();
        self
    }

    /// Sets which fields go into metadata.
    pub fn with_metadata(mut self, metadata: JsonMetadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Checks that every pointer is a JSON Pointer.
    fn check(&self) -> Result<(), Error> {
        let mut pointers =
            vec![("JsonOptions::content", self.content.as_str()), ("JsonOptions::records", &self.records)];
        if let JsonMetadata::Fields(fields) = &self.metadata {
            pointers.extend(fields.iter().map(|(_, p)| ("JsonMetadata::Fields", p.as_str())));
        }
        for (setting, pointer) in pointers {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(Error::config(
                    setting,
                    format!("`{pointer}` is not a JSON Pointer"),
                    format!("JSON Pointers start with `/`: write `/{pointer}`"),
                ));
            }
        }
        Ok(())
    }
}

/// Which fields of a JSON record are copied into the document's metadata.
///
/// The loader's own entries (`source`, `file_name`, ..., see [the module docs](super)) take precedence over record
/// fields of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonMetadata {
    /// None.
    None,
    /// Every top-level field of an object record except the content field.
    AllFields,
    /// These fields, as `(metadata key, JSON Pointer in the record)`. A record without one of them simply lacks
    /// that key.
    Fields(Vec<(String, String)>),
}

/// The layout of a JSON file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonFormat {
    /// One JSON value holding the records (see [`JsonOptions::records`]).
    Json,
    /// JSON Lines: one record per non-blank line.
    JsonLines,
}

impl JsonFormat {
    /// [`JsonFormat::JsonLines`] for the extensions `.jsonl` and `.ndjson` (any case), else [`JsonFormat::Json`].
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("jsonl" | "ndjson") => JsonFormat::JsonLines,
            _ => JsonFormat::Json,
        }
    }
}

/// Loads one JSON or JSON Lines file as one [`Document`](catena_core::Document) per record.
///
/// The format follows the extension ([`JsonFormat::from_path`]) unless set with [`JsonLoader::with_format`].
/// Each document gets the file metadata, the `record_index` (0-based), for JSON Lines the `line` (1-based),
/// and the fields chosen by [`JsonOptions::metadata`]. Records that cannot be used (invalid JSON on a line, no
/// content field) are reported as failures naming the line or record; the other records still load. Ids follow
/// [`Document::new`](catena_core::Document::new), so two records of one file with the same content share an id.
///
/// ```
/// # async fn demo() -> catena_core::Result<()> {
/// use catena_text::{JsonLoader, JsonMetadata, JsonOptions, Loader};
/// # let path = std::env::temp_dir().join("catena-doc-faq.jsonl");
/// # std::fs::write(&path, "{\"q\": \"What is catena?\", \"a\": \"A Rust LLM framework.\"}\n{\"q\": \"No answer\"}\n").unwrap();
/// let options = JsonOptions::new("/a").with_metadata(JsonMetadata::Fields(vec![("question".into(), "/q".into())]));
/// let report = JsonLoader::new(&path, options).load().await;
/// assert_eq!(report.documents[0].content, "A Rust LLM framework.");
/// assert_eq!(report.documents[0].metadata["question"], "What is catena?");
/// assert!(report.failures[0].to_string().contains("line 2"));
/// # Ok(())
/// # }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonLoader {
    path: PathBuf,
    options: JsonOptions,
    format: Option<JsonFormat>,
}

impl JsonLoader {
    /// A loader for the file at `path` (also its `source` metadata).
    pub fn new(path: impl Into<PathBuf>, options: JsonOptions) -> Self {
        JsonLoader { path: path.into(), options, format: None }
    }

    /// Sets the format instead of deriving it from the extension.
    pub fn with_format(mut self, format: JsonFormat) -> Self {
        self.format = Some(format);
        self
    }

    /// The file this loader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl Loader for JsonLoader {
    async fn load(&self) -> LoadReport {
        load_in_background(self.path.clone(), FileKind::Json(self.options.clone(), self.format)).await
    }
}

/// Splits a JSON or JSON Lines text into documents.
pub(crate) fn to_documents(
    path: &Path,
    text: &str,
    file_metadata: &Metadata,
    options: &JsonOptions,
    format: Option<JsonFormat>,
) -> LoadReport {
    if let Err(error) = options.check() {
        return LoadReport::failed(path, error);
    }
    let format_error = |message: String| LoadFailure {
        path: path.to_path_buf(),
        error: Error::Format { path: path.to_path_buf(), message },
    };
    let mut report = LoadReport::default();
    let add = |report: &mut LoadReport, record: &Value, index: usize, line: Option<usize>, locator: &str| {
        match record_to_document(record, index, line, locator, file_metadata, options) {
            Ok(document) => report.documents.push(document),
            Err(message) => report.failures.push(format_error(message)),
        }
    };
    match format.unwrap_or_else(|| JsonFormat::from_path(path)) {
        JsonFormat::JsonLines => {
            let mut index = 0;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let locator = format!("line {}", i + 1);
                match serde_json::from_str::<Value>(line) {
                    Ok(record) => add(&mut report, &record, index, Some(i + 1), &locator),
                    Err(e) => report.failures.push(format_error(format!("{locator}: not valid JSON: {e}"))),
                }
                index += 1;
            }
        }
        JsonFormat::Json => {
            let root: Value = match serde_json::from_str(text) {
                Ok(root) => root,
                Err(e) => {
                    return LoadReport {
                        failures: vec![format_error(format!("not valid JSON: {e}"))],
                        ..Default::default()
                    }
                }
            };
            let records_at = &options.records;
            match root.pointer(records_at) {
                Some(Value::Array(records)) => {
                    for (index, record) in records.iter().enumerate() {
                        add(&mut report, record, index, None, &format!("record {index} (`{records_at}/{index}`)"));
                    }
                }
                Some(record @ Value::Object(_)) => {
                    let locator = if records_at.is_empty() {
                        "the root record".to_string()
                    } else {
                        format!("record `{records_at}`")
                    };
                    add(&mut report, record, 0, None, &locator)
                }
                Some(other) => report.failures.push(format_error(format!(
                    "the records at `{records_at}` are {}, expected an array or an object; set JsonOptions::records",
                    catena_core::error::json_type_name(other)
                ))),
                None => report.failures.push(format_error(format!(
                    "nothing at the records pointer `{records_at}`; set JsonOptions::records to where the records are"
                ))),
            }
        }
    }
    report
}

fn record_to_document(
    record: &Value,
    index: usize,
    line: Option<usize>,
    locator: &str,
    file_metadata: &Metadata,
    options: &JsonOptions,
) -> Result<catena_core::Document, String> {
    let pointer = &options.content;
    let content = match record.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(format!(
                "{locator}: the content field `{pointer}` is {}, expected a string",
                catena_core::error::json_type_name(other)
            ))
        }
        None => {
            return Err(format!(
                "{locator}: no content field `{pointer}`; every record needs it (or set JsonOptions::content)"
            ))
        }
    };
    let mut metadata = Metadata::new();
    match &options.metadata {
        JsonMetadata::None => {}
        JsonMetadata::AllFields => {
            if let Value::Object(fields) = record {
                for (key, value) in fields {
                    if pointer_to_key(key) != *pointer {
                        metadata.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        JsonMetadata::Fields(fields) => {
            for (key, field_pointer) in fields {
                if let Some(value) = record.pointer(field_pointer) {
                    metadata.insert(key.clone(), value.clone());
                }
            }
        }
    }
    for (key, value) in file_metadata {
        metadata.insert(key.clone(), value.clone());
    }
    metadata.insert(RECORD_INDEX_KEY.into(), Value::from(index));
    if let Some(line) = line {
        metadata.insert(LINE_KEY.into(), Value::from(line));
    }
    Ok(finish(content, metadata))
}

/// The JSON Pointer to a top-level key.
fn pointer_to_key(key: &str) -> String {
    format!("/{}", key.replace('~', "~0").replace('/', "~1"))
}
