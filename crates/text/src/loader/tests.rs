//! Loader tests on real files in temporary directories, and on the shared Rust book corpus.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use catena_core::document::{stable_id, SOURCE_KEY};

fn write(root: &Path, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
    path
}

fn sources(report: &LoadReport, root: &Path) -> Vec<String> {
    report
        .documents
        .iter()
        .map(|d| Path::new(d.source().unwrap()).strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn directory_walk_is_sorted_recursive_and_filtered_by_globs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "b.md", "# B\n");
    write(root, "a.txt", "plain a");
    write(root, "guide/z.md", "# Z\n");
    write(root, "guide/deep/er/x.MD", "# X\n");
    write(root, "guide/drafts/wip.md", "# WIP\n");
    write(root, "target/out.md", "# build output\n");
    write(root, "notes.rs", "fn main() {}");

    let everything = DirectoryLoader::new(root).load().await;
    assert!(everything.is_complete(), "{:?}", everything.failures);
    assert_eq!(
        sources(&everything, root),
        ["a.txt", "b.md", "guide/deep/er/x.MD", "guide/drafts/wip.md", "guide/z.md", "notes.rs", "target/out.md"]
    );

    let loader = DirectoryLoader::new(root)
        .with_include("**/*.md")
        .unwrap()
        .with_include("**/*.MD")
        .unwrap()
        .with_exclude("**/drafts/**")
        .unwrap()
        .with_exclude("target")
        .unwrap();
    let report = loader.load().await;
    assert!(report.is_complete(), "{:?}", report.failures);
    assert_eq!(sources(&report, root), ["b.md", "guide/deep/er/x.MD", "guide/z.md"]);
    // Markdown chosen by extension, any case.
    let titles: Vec<_> = report.documents.iter().map(|d| d.metadata[TITLE_KEY].as_str().unwrap()).collect();
    assert_eq!(titles, ["B", "X", "Z"]);

    // `*` does not cross directories.
    let top_only = DirectoryLoader::new(root).with_include("*.md").unwrap().load().await;
    assert_eq!(sources(&top_only, root), ["b.md"]);

    // A bad glob is a configuration error naming the pattern.
    let err = DirectoryLoader::new(root).with_include("src/[a-").unwrap_err();
    assert!(matches!(&err, Error::Config { setting, .. } if setting == "DirectoryLoader::with_include"), "{err}");
    assert!(err.to_string().contains("src/[a-"), "{err}");
}

#[tokio::test]
async fn metadata_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "sub/hello.txt", "\u{feff}Hello, world!\n");
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();

    let docs = DirectoryLoader::new(dir.path()).load().await.into_result().unwrap();
    assert_eq!(docs.len(), 1);
    let doc = &docs[0];
    assert_eq!(doc.content, "Hello, world!\n", "the byte order mark is removed");
    assert_eq!(doc.metadata[SOURCE_KEY], path.to_string_lossy().as_ref());
    assert_eq!(doc.metadata[FILE_NAME_KEY], "hello.txt");
    assert_eq!(doc.metadata[EXTENSION_KEY], "txt");
    assert_eq!(doc.metadata[SIZE_BYTES_KEY], 17);
    let modified = doc.metadata[MODIFIED_KEY].as_u64().unwrap();
    assert!(modified.abs_diff(before) < 60, "{modified} vs {before}");
    assert_eq!(doc.metadata[CONTENT_HASH_KEY], stable_id(&["Hello, world!\n"]).as_str());
    assert_eq!(doc.id, Document::new(doc.content.clone(), doc.metadata.clone()).id);

    // The same file loaded by TextLoader gives the same document.
    let single = TextLoader::new(&path).load().await.into_result().unwrap();
    assert_eq!(single, docs);

    // Changing the file changes the hash and the id; loading again without changes does not.
    fs::write(&path, "Hello, changed world!\n").unwrap();
    let changed = TextLoader::new(&path).load().await.into_result().unwrap();
    assert_ne!(changed[0].metadata[CONTENT_HASH_KEY], doc.metadata[CONTENT_HASH_KEY]);
    assert_ne!(changed[0].id, doc.id);
    let again = TextLoader::new(&path).load().await.into_result().unwrap();
    assert_eq!(again[0].id, changed[0].id);
}

#[tokio::test]
async fn non_utf8_file_is_reported_with_path_and_offset_while_others_load() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", "fine");
    let bad = write(dir.path(), "b.txt", b"caf\xe9\nline two\xff");
    write(dir.path(), "c.txt", "also fine");

    let report = DirectoryLoader::new(dir.path()).load().await;
    assert_eq!(report.documents.len(), 2);
    assert_eq!(report.failures.len(), 1);
    let failure = &report.failures[0];
    assert_eq!(failure.path, bad);
    match &failure.error {
        Error::Format { path, message } => {
            assert_eq!(path, &bad);
            assert!(message.contains("not valid UTF-8"), "{message}");
            assert!(message.contains("0xe9 at byte offset 3 (line 1)"), "{message}");
        }
        other => panic!("expected a format error, got {other:?}"),
    }
    assert!(failure.to_string().starts_with(&bad.display().to_string()), "{failure}");

    // The offset counts from the start of the file, byte order mark included.
    let with_bom = write(dir.path(), "bom.txt", b"\xef\xbb\xbfok\n\x80");
    let err = TextLoader::new(&with_bom).load().await.into_result().unwrap_err().to_string();
    assert!(err.contains("byte offset 6 (line 2)"), "{err}");

    // Strict callers get the error.
    let err = report.into_result().unwrap_err();
    assert!(matches!(err, Error::Format { .. }));
}

#[tokio::test]
async fn unreadable_paths_are_io_failures() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A directory given as a file.
    let sub = root.join("a-directory");
    fs::create_dir(&sub).unwrap();
    let report = TextLoader::new(&sub).load().await;
    assert!(report.documents.is_empty());
    assert!(matches!(&report.failures[0].error, Error::Io { path, .. } if path == &sub), "{:?}", report.failures);

    // A file that does not exist.
    let missing = root.join("missing.md");
    let err = MarkdownLoader::new(&missing).load().await.into_result().unwrap_err();
    match err {
        Error::Io { path, source } => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }

    // In a directory walk: a dangling link and a link cycle are reported; the good file still loads.
    let tree = root.join("tree");
    write(&tree, "good.md", "# Good\n");
    std::os::unix::fs::symlink(tree.join("nowhere.md"), tree.join("dangling.md")).unwrap();
    std::os::unix::fs::symlink(&tree, tree.join("loop")).unwrap();
    let report = DirectoryLoader::new(&tree).load().await;
    assert_eq!(sources(&report, &tree), ["good.md"]);
    let failed: Vec<_> = report.failures.iter().map(|f| f.path.strip_prefix(&tree).unwrap().to_owned()).collect();
    assert_eq!(failed, [PathBuf::from("dangling.md"), PathBuf::from("loop")], "{:?}", report.failures);
    assert!(report.failures.iter().all(|f| matches!(f.error, Error::Io { .. })));

    // A dangling link outside the include globs is not selected, so not reported.
    let report =
        DirectoryLoader::new(&tree).with_include("**/*.txt").unwrap().with_exclude("loop").unwrap().load().await;
    assert!(report.documents.is_empty() && report.failures.is_empty(), "{:?}", report.failures);

    // Several failures: the strict error lists every path.
    let err = DirectoryLoader::new(&tree).load().await.into_result().unwrap_err().to_string();
    assert!(err.contains("2 sources failed") && err.contains("dangling.md") && err.contains("loop"), "{err}");

    // A root that does not exist is one failure naming it.
    let report = DirectoryLoader::new(root.join("no-such-dir")).load().await;
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].path, root.join("no-such-dir"));
}

#[tokio::test]
async fn max_file_size_skips_visibly() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "small.txt", "12345");
    let big = write(dir.path(), "big.txt", "x".repeat(2000));
    let report = DirectoryLoader::new(dir.path()).with_max_file_size(1000).load().await;
    assert_eq!(report.documents.len(), 1);
    assert!(report.is_complete());
    assert_eq!(
        report.skipped,
        [SkippedFile { path: big, reason: SkipReason::TooLarge { size_bytes: 2000, limit: 1000 } }]
    );
    assert!(report.skipped[0].to_string().contains("2000 bytes"));
    assert_eq!(report.into_result().unwrap().len(), 1);
}

#[tokio::test]
async fn markdown_title_from_front_matter_or_heading() {
    let dir = tempfile::tempdir().unwrap();
    let front = write(
        dir.path(),
        "front.md",
        "---\ntitle: \"Front: the title\"\ntags: [a, b]\n---\n# Heading title\n\nBody text.\n",
    );
    let heading =
        write(dir.path(), "heading.md", "Intro line\n\n```bash\n# a comment, not a title\n```\n\n# Real Title #\n");
    let sub = write(dir.path(), "sub.md", "## What Is Ownership?\n\ntext\n");
    let none = write(dir.path(), "none.md", "no headings here\n");

    let doc = |path: &Path, options: MarkdownOptions| {
        let loader = MarkdownLoader::new(path).with_options(options);
        async move { loader.load().await.into_result().unwrap().remove(0) }
    };
    let kept = doc(&front, MarkdownOptions::default()).await;
    assert_eq!(kept.metadata[TITLE_KEY], "Front: the title");
    assert!(kept.content.starts_with("---\ntitle:"));
    let stripped = doc(&front, MarkdownOptions { strip_front_matter: true }).await;
    assert_eq!(stripped.metadata[TITLE_KEY], "Front: the title");
    assert_eq!(stripped.content, "# Heading title\n\nBody text.\n");
    assert_eq!(stripped.metadata[CONTENT_HASH_KEY], stable_id(&[&stripped.content]).as_str());
    assert_ne!(stripped.id, kept.id);

    assert_eq!(doc(&heading, MarkdownOptions::default()).await.metadata[TITLE_KEY], "Real Title");
    assert_eq!(doc(&sub, MarkdownOptions::default()).await.metadata[TITLE_KEY], "What Is Ownership?");
    assert!(!doc(&none, MarkdownOptions::default()).await.metadata.contains_key(TITLE_KEY));
}

#[tokio::test]
async fn json_lines_with_missing_field_reports_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "faq.jsonl",
        concat!(
            "{\"id\": 1, \"text\": \"first\", \"meta\": {\"lang\": \"en\"}}\n",
            "\n",
            "{\"id\": 2, \"body\": \"no text field\"}\n",
            "{\"id\": 3, \"text\": \"third\", \"meta\": {\"lang\": \"fr\"}, \"source\": \"spoofed\"}\n",
            "{not json}\n",
            "{\"id\": 5, \"text\": 42}\n",
        ),
    );
    let options = JsonOptions::new("/text")
        .with_metadata(JsonMetadata::Fields(vec![("lang".into(), "/meta/lang".into()), ("id".into(), "/id".into())]));
    let report = JsonLoader::new(&path, options.clone()).load().await;

    let contents: Vec<_> = report.documents.iter().map(|d| d.content.as_str()).collect();
    assert_eq!(contents, ["first", "third"]);
    let first = &report.documents[0];
    assert_eq!(first.metadata["lang"], "en");
    assert_eq!(first.metadata["id"], 1);
    assert_eq!(first.metadata[LINE_KEY], 1);
    assert_eq!(first.metadata[RECORD_INDEX_KEY], 0);
    assert_eq!(first.metadata[CONTENT_HASH_KEY], stable_id(&["first"]).as_str());
    let third = &report.documents[1];
    assert_eq!(third.metadata[LINE_KEY], 4);
    assert_eq!(third.metadata[RECORD_INDEX_KEY], 2);
    assert_eq!(third.source(), Some(path.to_string_lossy().as_ref()));

    let messages: Vec<String> = report.failures.iter().map(|f| f.to_string()).collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages[0].contains("line 3: no content field `/text`"), "{messages:?}");
    assert!(messages[1].contains("line 5: not valid JSON"), "{messages:?}");
    assert!(messages[2].contains("line 6: the content field `/text` is a number"), "{messages:?}");
    assert!(report.failures.iter().all(|f| f.path == path && matches!(f.error, Error::Format { .. })));

    // All top-level fields except the content, with the loader's keys winning.
    let all = JsonLoader::new(&path, options.with_metadata(JsonMetadata::AllFields)).load().await;
    let third = &all.documents[1];
    assert_eq!(third.metadata["id"], 3);
    assert_eq!(third.metadata["meta"]["lang"], "fr");
    assert!(!third.metadata.contains_key("text"));
    assert_eq!(third.source(), Some(path.to_string_lossy().as_ref()));
}

#[tokio::test]
async fn json_records_at_a_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "data.json",
        r#"{"version": 2, "items": [{"body": {"text": "a"}}, {"body": {}}, {"body": {"text": "c"}}], "one": {"body": {"text": "only"}}}"#,
    );
    let report = JsonLoader::new(&path, JsonOptions::new("/body/text").with_records("/items")).load().await;
    let contents: Vec<_> = report.documents.iter().map(|d| d.content.as_str()).collect();
    assert_eq!(contents, ["a", "c"]);
    assert_eq!(report.documents[1].metadata[RECORD_INDEX_KEY], 2);
    assert!(!report.documents[0].metadata.contains_key(LINE_KEY));
    assert_eq!(report.failures.len(), 1);
    assert!(report.failures[0].to_string().contains("record 1 (`/items/1`): no content field `/body/text`"));

    // The root object as the only record.
    let root_record = JsonLoader::new(&path, JsonOptions::new("/text")).load().await;
    assert!(root_record.failures[0].to_string().contains("the root record: no content field `/text`"));

    // An object at the pointer is one record.
    let one = JsonLoader::new(&path, JsonOptions::new("/body/text").with_records("/one")).load().await;
    assert_eq!(one.into_result().unwrap()[0].content, "only");

    // The records pointer leads nowhere, or to a scalar.
    let nowhere = JsonLoader::new(&path, JsonOptions::new("/text").with_records("/nope")).load().await;
    assert!(nowhere.failures[0].to_string().contains("nothing at the records pointer `/nope`"));
    let scalar = JsonLoader::new(&path, JsonOptions::new("/text").with_records("/version")).load().await;
    assert!(scalar.failures[0].to_string().contains("are a number, expected an array or an object"));

    // A field name instead of a pointer is a configuration error with the fix.
    let err = JsonLoader::new(&path, JsonOptions::new("text")).load().await.into_result().unwrap_err();
    assert!(matches!(&err, Error::Config { setting, .. } if setting == "JsonOptions::content"), "{err}");
    assert!(err.to_string().contains("write `/text`"), "{err}");

    // Malformed JSON is one failure with serde's line and column.
    let broken = write(dir.path(), "broken.json", "[{\"text\": \"a\"},\n oops]");
    let err = JsonLoader::new(&broken, JsonOptions::new("/text")).load().await.into_result().unwrap_err().to_string();
    assert!(err.contains("not valid JSON") && err.contains("line 2"), "{err}");

    // An array of strings with the empty pointer; the format can be forced.
    let strings = write(dir.path(), "strings.txt", "[\"x\", \"y\"]");
    let docs = JsonLoader::new(&strings, JsonOptions::new("")).with_format(JsonFormat::Json).load().await;
    assert_eq!(docs.into_result().unwrap().len(), 2);
}

#[tokio::test]
async fn directory_picks_json_loader_only_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.jsonl", "{\"text\": \"one\"}\n{\"text\": \"two\"}\n");
    write(dir.path(), "b.json", "[{\"text\": \"three\"}]");
    let as_text = DirectoryLoader::new(dir.path()).load().await.into_result().unwrap();
    assert_eq!(as_text.len(), 2);
    assert!(as_text[0].content.starts_with("{\"text\""));
    let records =
        DirectoryLoader::new(dir.path()).with_json(JsonOptions::new("/text")).load().await.into_result().unwrap();
    let contents: Vec<_> = records.iter().map(|d| d.content.as_str()).collect();
    assert_eq!(contents, ["one", "two", "three"]);
}

/// The shared corpus directory: `$CATENA_SHARED_DIR` or `../shared` beside the repository.
fn shared_dir() -> PathBuf {
    std::env::var_os("CATENA_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

/// Runs on the current-thread runtime `#[tokio::test]` uses: file reads go to the blocking pool.
#[tokio::test]
async fn loads_the_rust_book_corpus() {
    let root = shared_dir().join("corpora/rust-book");
    assert!(root.is_dir(), "the shared corpus is missing at {}; set CATENA_SHARED_DIR", root.display());
    let loader = DirectoryLoader::new(&root).with_include("**/*.md").unwrap();
    let report = loader.load().await;
    assert!(report.is_complete(), "{:?}", report.failures);
    // 112 Markdown files (the folder's 114 files include LICENSE-APACHE and LICENSE-MIT).
    assert_eq!(report.documents.len(), 112);

    let source = root.join("ch01-00-getting-started.md").to_string_lossy().into_owned();
    let getting_started = report.documents.iter().find(|d| d.source() == Some(source.as_str())).unwrap();
    assert_eq!(getting_started.metadata[TITLE_KEY], "Getting Started");
    assert_eq!(getting_started.metadata[FILE_NAME_KEY], "ch01-00-getting-started.md");
    let ownership = report.documents.iter().find(|d| d.metadata[FILE_NAME_KEY] == "ch04-01-what-is-ownership.md");
    assert_eq!(ownership.unwrap().metadata[TITLE_KEY], "What Is Ownership?");
    assert!(report.documents.iter().all(|d| d.metadata.contains_key(TITLE_KEY)));

    // Sorted, unique ids, and the same on a second run (with a different concurrency).
    let names: Vec<_> = report.documents.iter().map(|d| d.metadata[FILE_NAME_KEY].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let ids: std::collections::BTreeSet<_> = report.documents.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids.len(), 112);
    let again = loader.with_concurrency(1).load().await.into_result().unwrap();
    assert_eq!(again, report.documents);
}
