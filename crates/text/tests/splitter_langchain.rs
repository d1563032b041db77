//! Differential tests of catena's splitters against the Python originals (langchain-text-splitters, tiktoken).
//!
//! Each test builds one request (texts and parameter sets), runs `tests/py/langchain_peer.py` once, and compares
//! every chunk's text with the Python result, exactly. The Python packages are required: a missing one fails the
//! test with the `pip install` command to run (see `tests/py/setup.sh`).
//!
//! Start offsets: LangChain's `start_index` is a guess (`str.find` from an estimated offset) that is wrong or -1
//! for a few percent of chunks, so the recursive splitter's offsets are checked against where the chunk is
//! without knowing how it was made: every text is also split in a "uniquified" copy (ASCII letters and digits
//! replaced by distinct ideographs, which changes no split decision) where nearly every chunk, or its first
//! character, occurs once. The token splitter's offsets are compared with the peer's own byte offsets of each
//! token window.
//!
//! Corpus: every file of `../shared/corpora/rust-book` (override the shared directory with `CATENA_SHARED_DIR`).

use std::path::{Path, PathBuf};
use std::process::Command;

use catena_text::splitter::{KeepSeparator, MarkdownSplitter, RecursiveCharacterTextSplitter, TextSplitter};
use serde_json::{json, Value};

fn shared_dir() -> PathBuf {
    match std::env::var_os("CATENA_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

/// Every file of the rust-book corpus, sorted by name: (name, text).
fn rust_book() -> Vec<(String, String)> {
    let dir = shared_dir().join("corpora/rust-book");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {} ({e}); set CATENA_SHARED_DIR", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 114, "expected the 114 files of the rust-book corpus in {}", dir.display());
    files
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

/// Runs the Python peer on `request` and returns its `results` array (one entry per job).
fn run_python(request: &Value) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/langchain_peer.py");
    let dir = std::env::temp_dir().join(format!("catena-splitter-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("request-{}.json", fastrand::u64(..)));
    std::fs::write(&path, serde_json::to_vec(request).unwrap()).unwrap();
    let python = std::env::var("CATENA_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(&python).arg(&script).arg(&path).output().unwrap_or_else(|e| {
        panic!("cannot run {python} ({e}); install Python 3 and run crates/core/tests/py/setup.sh")
    });
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python peer failed ({}): {stderr}\nInstall the peers with: pip install langchain-text-splitters tiktoken \
         (or run crates/core/tests/py/setup.sh)",
        output.status
    );
    let response: Value = serde_json::from_slice(&output.stdout).expect("the Python peer printed invalid JSON");
    eprintln!("python peer: langchain-text-splitters {}", response["langchain_text_splitters"]);
    response["results"].as_array().expect("results").clone()
}

/// One parameter set of the recursive splitter, on both sides.
struct Params {
    chunk_size: usize,
    chunk_overlap: usize,
    separators: Option<Vec<&'static str>>,
    regex: bool,
    keep: KeepSeparator,
    /// The Python `keep_separator` value, when it should be something else than the obvious one (`"start"`).
    keep_py: Option<Value>,
    strip: bool,
}

impl Params {
    fn new(chunk_size: usize, chunk_overlap: usize) -> Self {
        Params {
            chunk_size,
            chunk_overlap,
            separators: None,
            regex: false,
            keep: KeepSeparator::Start,
            keep_py: None,
            strip: true,
        }
    }
    fn keep(mut self, keep: KeepSeparator) -> Self {
        self.keep = keep;
        self
    }
    fn separators(mut self, seps: &[&'static str], regex: bool) -> Self {
        self.separators = Some(seps.to_vec());
        self.regex = regex;
        self
    }

    fn label(&self) -> String {
        format!(
            "size={} overlap={} seps={:?} regex={} keep={:?} strip={}",
            self.chunk_size, self.chunk_overlap, self.separators, self.regex, self.keep, self.strip
        )
    }

    fn splitter(&self) -> RecursiveCharacterTextSplitter {
        let mut b = RecursiveCharacterTextSplitter::builder(self.chunk_size, self.chunk_overlap)
            .keep_separator(self.keep)
            .strip_whitespace(self.strip);
        if let Some(seps) = &self.separators {
            b = if self.regex { b.regex_separators(seps.iter().copied()) } else { b.separators(seps.iter().copied()) };
        }
        b.build().unwrap_or_else(|e| panic!("{}: {e}", self.label()))
    }

    fn job(&self) -> Value {
        let keep = self.keep_py.clone().unwrap_or(match self.keep {
            KeepSeparator::Discard => json!(false),
            KeepSeparator::Start => json!("start"),
            KeepSeparator::End => json!("end"),
        });
        json!({
            "kind": "recursive",
            "chunk_size": self.chunk_size,
            "chunk_overlap": self.chunk_overlap,
            "separators": self.separators,
            "is_separator_regex": self.regex,
            "keep_separator": keep,
            "strip_whitespace": self.strip,
        })
    }
}

/// Counts of how the start offsets were checked.
#[derive(Default)]
struct Stats {
    chunks: usize,
    /// Start equal to the reference offset (the chunk's, or its first character's, only occurrence).
    exact: usize,
    /// No unique reference: the text at the start is the chunk.
    occurs: usize,
    /// The chunk is not a slice of the text (separator re-inserted after dropped empty pieces, or a regex
    /// separator's source re-inserted): the text at the start begins with the chunk's first character.
    first_char: usize,
    /// LangChain's own `start_index` agrees.
    langchain_agrees: usize,
    /// LangChain's `str.find` did not find the chunk (`start_index == -1`).
    langchain_not_found: usize,
}

/// Compares one text's chunks with Python's `[[chunk, langchain_start, reference_start, occurs], ...]`;
/// `reinserted` are the regex separators whose source LangChain puts between merged pieces.
fn compare(
    label: &str,
    name: &str,
    text: &str,
    ours: &[(String, usize)],
    theirs: &Value,
    reinserted: &[&str],
    stats: &mut Stats,
) -> Vec<String> {
    let mut failures = Vec::new();
    let theirs = theirs.as_array().expect("chunk list");
    if ours.len() != theirs.len() {
        failures.push(format!("{label} {name}: {} chunks in Rust, {} in Python", ours.len(), theirs.len()));
    }
    for (i, ((content, start), py)) in ours.iter().zip(theirs).enumerate() {
        let py_content = py[0].as_str().expect("chunk text");
        if content != py_content {
            failures.push(format!(
                "{label} {name} chunk {i}: text differs\n  rust:   {content:?}\n  python: {py_content:?}"
            ));
            break;
        }
        stats.chunks += 1;
        if py[1].as_u64() == Some(*start as u64) {
            stats.langchain_agrees += 1;
        } else if py[1].is_null() {
            stats.langchain_not_found += 1;
        }
        let at = text
            .get(*start..)
            .unwrap_or_else(|| panic!("{label} {name} chunk {i}: start {start} is not a char boundary"));
        let ok = match (py[2].as_u64(), py[3].as_bool()) {
            (Some(reference), _) => {
                stats.exact += 1;
                reference as usize == *start
            }
            (None, Some(true)) => {
                stats.occurs += 1;
                at.starts_with(content.as_str())
            }
            _ => {
                // A chunk that starts inside a re-inserted regex separator starts, in the text, at the next piece.
                stats.first_char += 1;
                let own = reinserted.iter().find_map(|sep| content.strip_prefix(sep)).unwrap_or(content);
                at.chars().next() == own.chars().next()
            }
        };
        if !ok {
            failures.push(format!(
                "{label} {name} chunk {i} {content:.40?}: start {start} in Rust, reference {}, langchain {} (text \
                 there: {:?})",
                py[2],
                py[1],
                at.chars().take(40).collect::<String>()
            ));
        }
    }
    failures
}

/// The text with every ASCII letter and digit (except those in `keep`, the characters of the separators) replaced
/// by a different CJK ideograph or Hangul syllable, in turn. Splitting is unchanged (same separators, whitespace
/// and lengths in code points) but nearly every chunk becomes unique, so where it came from can be told by
/// searching for it.
fn uniquify(text: &str, keep: &str) -> String {
    let mut pool = (0x4E00..=0x9FFCu32)
        .chain(0xAC00..=0xD7A3)
        .chain(0x3400..=0x4DBF)
        .chain(0x20000..=0x2A6DD)
        .filter_map(char::from_u32)
        .cycle();
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() && !keep.contains(c) { pool.next().unwrap_or(c) } else { c })
        .collect()
}

/// Runs every parameter set on every text, and on its uniquified copy, in Rust and in Python (one Python run),
/// and checks chunk texts (exactly) and start offsets (see [`Stats`]); at least `min_unique` of the chunks must
/// have been checked against a unique occurrence.
fn check_recursive(docs: &[(String, String)], params: &[Params], min_unique: f64) {
    let keep: String = params.iter().flat_map(|p| p.separators.iter().flatten()).flat_map(|s| s.chars()).collect();
    let mut all: Vec<(String, String)> = docs.to_vec();
    all.extend(docs.iter().map(|(name, text)| (format!("{name} (uniquified)"), uniquify(text, &keep))));
    let request = json!({
        "docs": all.iter().map(|(_, t)| t).collect::<Vec<_>>(),
        "jobs": params.iter().map(Params::job).collect::<Vec<_>>(),
    });
    let results = run_python(&request);
    assert_eq!(results.len(), params.len());
    let mut failures = Vec::new();
    let mut stats = Stats::default();
    for (p, per_doc) in params.iter().zip(&results) {
        let splitter = p.splitter();
        let label = p.label();
        let reinserted = match (&p.separators, p.regex, p.keep) {
            (Some(seps), true, KeepSeparator::Discard) => seps.clone(),
            _ => Vec::new(),
        };
        for ((name, text), theirs) in all.iter().zip(per_doc.as_array().expect("per-doc results")) {
            let ours: Vec<(String, usize)> =
                splitter.split_text(text).into_iter().map(|c| (c.content, c.start)).collect();
            failures.extend(compare(&label, name, text, &ours, theirs, &reinserted, &mut stats));
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences with langchain over {} chunks; first ones:\n{}",
        failures.len(),
        stats.chunks,
        failures.iter().take(8).cloned().collect::<Vec<_>>().join("\n")
    );
    eprintln!(
        "{} chunks identical to langchain ({} parameter sets, {} texts); start offsets: {} checked against a unique \
         occurrence, {} against a repeated occurrence, {} by first character; langchain's own start_index agrees \
         on {}, is -1 on {}, points elsewhere on {}",
        stats.chunks,
        params.len(),
        all.len(),
        stats.exact,
        stats.occurs,
        stats.first_char,
        stats.langchain_agrees,
        stats.langchain_not_found,
        stats.chunks - stats.langchain_agrees - stats.langchain_not_found
    );
    assert!(stats.exact as f64 >= stats.chunks as f64 * min_unique, "too few chunks with a unique reference offset");
}

#[test]
fn recursive_splitter_matches_langchain_on_the_rust_book() {
    let docs = rust_book();
    let mut start_true = Params::new(500, 100);
    start_true.keep_py = Some(json!(true));
    let mut no_strip = Params::new(120, 30);
    no_strip.strip = false;
    let params = vec![
        Params::new(1000, 200),
        Params::new(300, 50),
        Params::new(100, 0),
        start_true,
        Params::new(50, 10).keep(KeepSeparator::Discard),
        Params::new(200, 30).keep(KeepSeparator::End),
        Params::new(250, 40).separators(&["\n## ", "\n\n", ". ", " "], false),
        Params::new(180, 60).separators(&["\n\n", "\n", " "], false).keep(KeepSeparator::Discard),
        Params::new(400, 80).separators(&[r"\n#{1,6} ", r"\n\n+", r"\n", r"\s+", ""], true),
        Params::new(150, 20).separators(&[r"\n\n", r"[.!?] ", r"\s"], true).keep(KeepSeparator::Discard),
        no_strip,
        Params::new(40, 40),
    ];
    check_recursive(&docs, &params, 0.9);
}

/// Short texts that exercise edge cases: empty, whitespace-only, non-ASCII (2-, 3- and 4-byte characters, ZWJ
/// sequences, combining marks), CRLF, Python-only whitespace (U+001C..U+001F), words longer than the chunk size,
/// runs of separators, repetition.
fn tricky_texts() -> Vec<(String, String)> {
    let texts: Vec<&str> = vec![
        "",
        " ",
        "\n\n\n",
        "a",
        "héllo wörld, ünïcödé façade naïve café",
        "日本語のテキストです。文章を分割します。\n\n二つ目の段落。とても長い文が続きます。",
        "emoji 🦀🦀🦀 crab 👩‍👩‍👧 family 🇫🇷 flag\n\n🦀 again and again 🦀",
        "windows\r\nline\r\nendings\r\n\r\nparagraph two\r\nend\r\n",
        "averyveryverylongwordwithoutanyseparatorsatallthatgoesonandonandonforeverandever",
        "short\n\naveryveryverylongwordwithoutanyseparatorsatallthatgoesonandon tail\n\nend",
        "  leading and trailing whitespace  \n\n  next  ",
        "tabs\tand\u{b}vertical\u{c}feeds\u{1c}info\u{1f}separators\u{85}next\u{a0}nbsp\u{2028}ls\u{3000}ideographic",
        "a\n\n\n\n\nb\n\n\n\nc d e f g h i j k l m n o p",
        "one. two! three? four. five six seven. eight nine ten eleven twelve.",
        "# Title\n\nSome text.\n\n## Section\n\nMore text here that is long enough.\n\n### Sub\n\nEnd.",
        "x y",
        "zero\u{200b}width\u{200b}spaces\u{200b}are\u{200b}not\u{200b}whitespace",
        "combining e\u{301}\u{301}\u{301} marks and \u{1F3FB}\u{1F3FB} modifiers",
        "repeat repeat repeat repeat repeat repeat repeat repeat repeat repeat repeat",
        "a\n\nb\n\na\n\nb\n\na\n\nb\n\na\n\nb",
    ];
    texts.iter().enumerate().map(|(i, t)| (format!("text#{i}"), t.to_string())).collect()
}

#[test]
fn recursive_splitter_matches_langchain_on_tricky_inputs() {
    let docs = tricky_texts();
    let mut params = Vec::new();
    for (size, overlap) in [(1, 0), (1, 1), (2, 1), (3, 0), (5, 2), (7, 3), (10, 5), (16, 0), (25, 10), (4000, 200)] {
        for keep in [KeepSeparator::Start, KeepSeparator::End, KeepSeparator::Discard] {
            params.push(Params::new(size, overlap).keep(keep));
        }
        params.push(Params::new(size, overlap).separators(&[". ", "! ", "? ", " "], false));
        let mut no_strip = Params::new(size, overlap).keep(KeepSeparator::Discard);
        no_strip.strip = false;
        params.push(no_strip);
    }
    check_recursive(&docs, &params, 0.5);
}

/// Regex separators on the tricky texts, except the ones where Python's `re` and the regex crate disagree by
/// design (documented on `regex_separators`): `\s` on U+001C..U+001F, and `\b`/`\w` on combining marks and
/// zero-width joiners.
#[test]
fn regex_separators_match_langchain_on_tricky_inputs() {
    let python_re_only = ['\u{1c}', '\u{1f}', '\u{301}', '\u{200d}'];
    let docs: Vec<(String, String)> = tricky_texts().into_iter().filter(|(_, t)| !t.contains(python_re_only)).collect();
    assert!(docs.len() >= 16);
    let mut params = Vec::new();
    for (size, overlap) in [(1, 0), (1, 1), (2, 1), (3, 0), (5, 2), (7, 3), (10, 5), (16, 0), (25, 10), (4000, 200)] {
        params.push(Params::new(size, overlap).separators(&[r"\s+", ""], true).keep(KeepSeparator::End));
        params.push(Params::new(size, overlap).separators(&["x*", ""], true));
        params.push(Params::new(size, overlap).separators(&[r"\b", ""], true).keep(KeepSeparator::Discard));
        params.push(Params::new(size, overlap).separators(&[r"[.!?] ", r"\n+", " ", ""], true));
    }
    check_recursive(&docs, &params, 0.5);
}

#[test]
fn whitespace_stripping_matches_python_isspace() {
    let results = run_python(&json!({"jobs": [{"kind": "isspace"}]}));
    let python: Vec<u32> = results[0].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    // The trailing character of "a{c}" is stripped exactly when it is whitespace to the splitter.
    let splitter = RecursiveCharacterTextSplitter::builder(10, 0).separators(["\u{0}"]).build().unwrap();
    let rust: Vec<u32> = (0..=0x10FFFFu32)
        .filter_map(char::from_u32)
        .filter(|c| splitter.split_text(&format!("a{c}"))[0].content == "a")
        .map(u32::from)
        .collect();
    assert_eq!(rust, python);
}

#[test]
fn markdown_sections_match_langchain_header_splitter_on_the_rust_book() {
    // LangChain's MarkdownHeaderTextSplitter strips every line and re-joins lines, so the comparison is on the
    // header path of each section and on its text with whitespace removed.
    let docs = rust_book();
    let md: Vec<&(String, String)> = docs.iter().filter(|(name, _)| name.ends_with(".md")).collect();
    let request = json!({
        "docs": md.iter().map(|(_, t)| t).collect::<Vec<_>>(),
        "jobs": [{"kind": "markdown_headers"}],
    });
    let results = run_python(&request);
    let splitter =
        MarkdownSplitter::new(RecursiveCharacterTextSplitter::new(1_000_000, 0).unwrap()).strip_headers(true);
    let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let mut sections = 0;
    for ((name, text), theirs) in md.iter().zip(results[0].as_array().unwrap()) {
        let ours: Vec<(String, Vec<String>)> =
            splitter.split_markdown(text).into_iter().map(|c| (squash(&c.content), c.headers)).collect();
        let theirs: Vec<(String, Vec<String>)> = theirs
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let path = d[1].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_string()).collect();
                (squash(d[0].as_str().unwrap()), path)
            })
            .collect();
        assert_eq!(ours, theirs, "{name}");
        sections += ours.len();
    }
    assert!(sections > 500, "only {sections} sections");
    eprintln!("{sections} Markdown sections identical to langchain's MarkdownHeaderTextSplitter");
}

#[test]
fn markdown_splitter_on_a_rust_book_chapter() {
    let path = shared_dir().join("corpora/rust-book/ch04-01-what-is-ownership.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let splitter = MarkdownSplitter::new(RecursiveCharacterTextSplitter::new(500, 50).unwrap());
    let chunks = splitter.split_markdown(&text);
    for c in &chunks {
        assert!(text[c.start..].starts_with(&c.content), "chunk at {} is not where it says", c.start);
        assert!(c.content.chars().count() <= 500);
        assert_eq!(c.headers[0], "What Is Ownership?");
    }
    let paths: Vec<String> = chunks.iter().map(|c| c.headers.join(" > ")).collect();
    for expected in [
        "What Is Ownership? > Ownership Rules",
        "What Is Ownership? > The `String` Type",
        "What Is Ownership? > Memory and Allocation > Variables and Data Interacting with Move",
        "What Is Ownership? > Memory and Allocation > Stack-Only Data: Copy",
        "What Is Ownership? > Return Values and Scope",
    ] {
        assert!(paths.iter().any(|p| p == expected), "no chunk under {expected:?}: {paths:?}");
    }
    // A level-3 header closes the level-4 ones before it.
    let i = paths.iter().position(|p| p == "What Is Ownership? > Ownership and Functions").unwrap();
    assert!(paths[i - 1].ends_with("Stack-Only Data: Copy"));
    // split_documents carries the same data as metadata.
    let doc = catena_core::Document::new(text.clone(), catena_core::Metadata::new());
    let docs = splitter.split_documents(&[doc]);
    assert_eq!(docs.len(), chunks.len());
    assert_eq!(docs[i].metadata["header_path"], paths[i]);
    assert_eq!(docs[i].metadata["start_index"], chunks[i].start);
    assert_eq!(docs[i].metadata["headers"], json!(chunks[i].headers));
}

#[cfg(feature = "tokens")]
mod tokens {
    use super::*;
    use catena_text::splitter::{count_tokens, Encoding, TokenTextSplitter};

    /// The directory of the `.tiktoken` vocabularies embedded in the tiktoken-rs crate (from `cargo metadata`),
    /// or `CATENA_TIKTOKEN_ASSETS`.
    fn tiktoken_assets() -> PathBuf {
        if let Some(dir) = std::env::var_os("CATENA_TIKTOKEN_ASSETS") {
            return PathBuf::from(dir);
        }
        // Resolve for the host only: resolving every platform would need crates that are not downloaded.
        let rustc = Command::new("rustc").arg("-vV").output().expect("rustc -vV");
        let host = String::from_utf8_lossy(&rustc.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
            .expect("host triple in rustc -vV");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let output = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &host])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo metadata");
        assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
        let meta: Value = serde_json::from_slice(&output.stdout).unwrap();
        let package = meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "tiktoken-rs")
            .expect("tiktoken-rs in cargo metadata");
        Path::new(package["manifest_path"].as_str().unwrap()).parent().unwrap().join("assets")
    }

    #[test]
    fn token_splitter_matches_langchain() {
        let mut docs = rust_book();
        let tricky = tricky_texts();
        let n_tricky = tricky.len();
        docs.extend(tricky);
        // (encoding, tokens per chunk, overlap, texts): tiny windows only on the short texts and three chapters.
        let all: Vec<usize> = (0..docs.len()).collect();
        let few: Vec<usize> = (docs.len() - n_tricky - 3..docs.len()).collect();
        let cases = [
            (Encoding::Cl100k, 200, 20, all.clone()),
            (Encoding::O200k, 64, 16, all),
            (Encoding::Cl100k, 3, 1, few.clone()),
            (Encoding::O200k, 1, 0, few),
        ];
        let request = json!({
            "docs": docs.iter().map(|(_, t)| t).collect::<Vec<_>>(),
            "tiktoken_assets": tiktoken_assets(),
            "jobs": cases.iter().map(|(e, size, overlap, texts)| json!({
                "kind": "token", "encoding": e.name(), "chunk_size": size, "chunk_overlap": overlap, "docs": texts,
            })).collect::<Vec<_>>(),
        });
        let results = run_python(&request);
        let mut failures: Vec<String> = Vec::new();
        let mut compared = 0;
        for ((encoding, size, overlap, texts), per_doc) in cases.iter().zip(&results) {
            let splitter = TokenTextSplitter::new(*encoding, *size, *overlap).unwrap();
            let label = format!("{encoding:?} size={size} overlap={overlap}");
            for (&i, theirs) in texts.iter().zip(per_doc.as_array().unwrap()) {
                let (name, text) = &docs[i];
                let ours: Vec<(String, usize)> =
                    splitter.split_text(text).into_iter().map(|c| (c.content, c.start)).collect();
                let theirs: Vec<(String, usize)> = theirs
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| (c[0].as_str().unwrap().to_string(), c[1].as_u64().unwrap() as usize))
                    .collect();
                compared += ours.len();
                if ours != theirs {
                    let i = ours.iter().zip(&theirs).position(|(a, b)| a != b).unwrap_or(ours.len().min(theirs.len()));
                    failures.push(format!(
                        "{label} {name}: {} chunks in Rust, {} in Python; first difference at {i}: {:?} vs {:?}",
                        ours.len(),
                        theirs.len(),
                        ours.get(i),
                        theirs.get(i)
                    ));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} differences:\n{}",
            failures.len(),
            failures[..failures.len().min(8)].join("\n")
        );
        assert!(compared > 1000);
        eprintln!("{compared} token chunks identical to langchain");
    }

    #[test]
    fn count_tokens_agrees_with_the_splitter() {
        let text = std::fs::read_to_string(shared_dir().join("corpora/rust-book/ch01-01-installation.md")).unwrap();
        let n = count_tokens(Encoding::Cl100k, &text).unwrap();
        let windows = TokenTextSplitter::new(Encoding::Cl100k, 100, 0).unwrap().split_text(&text);
        assert_eq!(windows.len(), n.div_ceil(100));
        assert!(count_tokens(Encoding::O200k, &text).unwrap() > 0);
    }
}
