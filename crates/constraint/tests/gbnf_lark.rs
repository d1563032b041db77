//! Differential test of [`catena_core::constraint::gbnf::to_lark`] against llama.cpp's own grammar engine.
//!
//! Path taken: the low-level one. `tests/py/gbnf_accepts.py` loads a tiny byte-level-BPE GGUF vocabulary
//! (written by `scripts/tiny_gguf.py`) with llama-cpp-python and drives llama.cpp's grammar sampler
//! (`llama_sampler_init_grammar`, `llama_sampler_apply`, `llama_sampler_accept`) token by token, so llama.cpp
//! itself says whether a string is a complete sentence of a GBNF grammar; it also generates random sentences
//! under each grammar with that sampler. Nothing is mocked.
//!
//! The grammars are the ones llama-cpp-python ships (`llama_cpp.llama_grammar.*_GBNF`: arithmetic, C, JSON,
//! JSON array, list, Japanese ...), grammars its JSON-Schema converter writes, and grammars written here after
//! llama.cpp's examples (chess moves, Japanese text) or to exercise one construct each (escapes, classes,
//! repetitions, rule names, lexer traps, redefinitions). The strings are sentences llama.cpp generated, mutations
//! of them (mostly not sentences), and hand-picked ones. For every string, catena's Lark conversion (compiled by
//! llguidance for o200k) must give the same verdict as llama.cpp.
//!
//! Needs python3 with llama-cpp-python, gguf, tokenizers and numpy; without them the test fails saying so.

#![cfg(feature = "constrain")]

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use catena_constraint::gbnf::to_lark;
use catena_constraint::{ConstraintCompiler, Validator};
use catena_core::Constraint;
use serde_json::{json, Value};

const SETUP_HINT: &str = "install them with `pip install llama-cpp-python gguf tokenizers numpy`";

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("scripts/tiny_gguf.py").is_file())
        .expect("scripts/tiny_gguf.py above the manifest directory")
        .to_path_buf()
}

fn require_python_modules(modules: &[&str]) {
    let out = Command::new(python())
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; this test needs Python 3 with {modules:?}", python()));
    assert!(
        out.status.success(),
        "this test needs the Python modules {modules:?}, which do not import ({}); {SETUP_HINT}",
        String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("no error output")
    );
}

/// The tiny model of `scripts/tiny_gguf.py` (seed 7), cached by the script's content like the providers' tests.
fn tiny_gguf() -> PathBuf {
    let script = repo_root().join("scripts/tiny_gguf.py");
    let source = std::fs::read(&script).unwrap_or_else(|e| panic!("cannot read {}: {e}", script.display()));
    let mut hasher = DefaultHasher::new();
    source.hash(&mut hasher);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("catena-tiny-gguf");
    let path = dir.join(format!("tiny-seed7-{:016x}.gguf", hasher.finish()));
    if path.is_file() {
        return path;
    }
    require_python_modules(&["gguf", "tokenizers", "numpy"]);
    std::fs::create_dir_all(&dir).unwrap();
    // Write to a temporary name first so that a concurrent test binary never reads a half-written model.
    let partial = dir.join(format!("partial-{}.gguf", std::process::id()));
    let out = Command::new(python()).arg(&script).arg(&partial).args(["--seed", "7"]).output().unwrap();
    assert!(out.status.success(), "{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    std::fs::rename(&partial, &path).unwrap();
    path
}

/// Runs `tests/py/gbnf_accepts.py` with one JSON request.
fn llama_cpp(request: Value) -> Value {
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/gbnf_accepts.py");
    let mut child = Command::new(python())
        .arg(&helper)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}",
        helper.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the helper answers JSON")
}

/// Grammars written here: llama.cpp's example grammars (chess, Japanese) in our own words, and one grammar per
/// tricky construct. Each comes with strings worth asking about; llama.cpp decides which are sentences.
fn handwritten() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        (
            "chess",
            "# Moves in algebraic notation, numbered like PGN\n\
             root ::= \"1. \" move \" \" move \"\\n\" ([1-9] [0-9]? \". \" move \" \" move \"\\n\")*\n\
             move ::= (pawn | piece | castle) [+#]?\n\
             piece ::= [NBKQR] [a-h]? [1-8]? \"x\"? [a-h] [1-8]\n\
             pawn ::= ([a-h] \"x\")? [a-h] [1-8] (\"=\" [NBKQR])?\n\
             castle ::= \"O-O\" \"-O\"?\n",
            vec![
                "1. e4 e5\n",
                "1. e4 e5\n2. Nf3 Nc6\n",
                "1. O-O-O Qxd8#\n",
                "1. e4 e5",
                "1. e9 e5\n",
                "1. exd8=Q+ a1\n",
            ],
        ),
        (
            "japanese",
            "root ::= jp-char+ ([ \\t\\n] jp-char+)*\n\
             jp-char ::= hiragana | katakana | punctuation | cjk\n\
             hiragana ::= [ぁ-ゟ]\nkatakana ::= [ァ-ヿ]\npunctuation ::= [、-〾]\ncjk ::= [一-鿿]\n",
            vec!["こんにちは", "日本語 テキスト", "漢字、かな。", "abc", "日本 ", "", "カタカナ\nひらがな"],
        ),
        (
            "escapes",
            r#"root ::= "\x41\u00e9\U0001F600\"\\" [\t\n\\\]\-^"]+ [^\x00-\x1F\u2028]*"#,
            vec!["Aé😀\"\\\t\\]-^\"x y", "Aé😀\"\\-", "Aé😀\"\\", "Aé😀\"\\^\u{2028}", "Aé😀\"\\^\u{2029}é", "A"],
        ),
        (
            "repetitions",
            "root ::= (\"ab\" | [0-9]{2,3}){1,3} \"c\"{0,5000} x?\nx ::= \"x\"+ \"y\"{2}",
            vec!["ab", "ababab", "abababab", "12ab345", "1", "abccccc", "abxyy", "abxxxyy", "abxy", "1234"],
        ),
        (
            "names",
            "root ::= json-value Value\njson-value ::= [a-c]+\nValue ::= \"-\" value\nvalue ::= \"v\"{1,2}\n",
            vec!["a-v", "abc-vv", "a-vvv", "-v", "a-"],
        ),
        (
            "lexer-traps",
            "root ::= (\"a\" | \"ab\") \"b\"* \":\" ([0-9]* [0-9] | \"if\" [a-z]* | [a-c] \"1\" | \"b\" \"2\")",
            vec!["a:1", "ab:12", "abbb:if", "a:iff", "a:b2", "a:b1", "a:c2", "a:", "b:1"],
        ),
        (
            "empty-and-any",
            "root ::= [] \"<\" . [^] \">\" (\"\" | \"!\")\n",
            vec!["<x>", "<\n>!", "<😀>", "<>", "<ab>", "<x>!!"],
        ),
        (
            "redefined",
            "root ::= \"first\"\nroot ::= \"second\" tail\ntail ::= | \"!\"\n",
            vec!["second", "second!", "first"],
        ),
        (
            "odd-ranges",
            "root ::= ([z-a] | \"\\uD800\" | [\\uD000-\\uE000] | \"-\")+ [^\\uD800]",
            vec!["-x", "\u{D7FF}\u{E000}-\n", "z", "a-", "\u{CFFF}x"],
        ),
        (
            "layout",
            "# comments, multi-line alternatives and groups\nroot ::= greeting # trailing comment\n\
             greeting ::= \"hi\" |\n    \"hello\" (\n      \" world\"\n    | \" there\"\n    )?\n",
            vec!["hi", "hello", "hello there", "hello world", "hi there", "hello "],
        ),
    ]
}

/// A few random edits of `s`: deletions, insertions, duplications, truncations.
fn mutations(s: &str, rng: &mut fastrand::Rng, count: usize) -> Vec<String> {
    const INSERT: &[char] = &['"', '{', ']', ' ', '\n', 'a', '1', '-', 'é', '\\', ',', 'x', '.'];
    let chars: Vec<char> = s.chars().collect();
    (0..count)
        .map(|_| {
            let mut c = chars.clone();
            match rng.u8(..4) {
                0 if !c.is_empty() => {
                    c.remove(rng.usize(..c.len()));
                }
                1 if !c.is_empty() => {
                    let i = rng.usize(..c.len());
                    c.insert(i, c[i]);
                }
                2 if !c.is_empty() => c.truncate(rng.usize(..c.len())),
                _ => c.insert(rng.usize(..=c.len()), INSERT[rng.usize(..INSERT.len())]),
            }
            c.into_iter().collect()
        })
        .collect()
}

#[test]
fn gbnf_conversion_accepts_exactly_what_llama_cpp_accepts() {
    require_python_modules(&["llama_cpp"]);
    let model = tiny_gguf();
    let model = model.to_str().expect("UTF-8 model path");

    let bundled = llama_cpp(json!({"mode": "grammars"}));
    let mut grammars: Vec<(String, String, Vec<String>)> = bundled["grammars"]
        .as_object()
        .expect("a map of grammars")
        .iter()
        .map(|(name, text)| (name.clone(), text.as_str().unwrap().to_string(), Vec::new()))
        .collect();
    for expected in ["arithmetic_gbnf", "json_gbnf", "json_arr_gbnf", "list_gbnf", "japanese_gbnf", "c_gbnf"] {
        assert!(grammars.iter().any(|(name, ..)| name == expected), "llama_cpp.llama_grammar has no {expected}");
    }
    for (name, text, strings) in handwritten() {
        grammars.push((name.to_string(), text.to_string(), strings.into_iter().map(String::from).collect()));
    }

    // Sentences llama.cpp generates under each grammar, then edits of them.
    let cases: Vec<Value> = grammars.iter().map(|(_, text, _)| json!({"grammar": text, "count": 6})).collect();
    let samples = llama_cpp(json!({"mode": "sample", "model": model, "seed": 11, "cases": cases}));
    let mut rng = fastrand::Rng::with_seed(11);
    for ((name, _, strings), generated) in grammars.iter_mut().zip(samples["samples"].as_array().unwrap()) {
        let generated: Vec<String> =
            generated.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
        assert!(!generated.is_empty(), "llama.cpp generated no sentence of {name}");
        for s in &generated {
            strings.extend(mutations(s, &mut rng, 2));
        }
        strings.extend(generated);
        strings.sort();
        strings.dedup();
        // NUL ends a string inside llama.cpp's grammar engine; keep it out of the comparison.
        strings.retain(|s| !s.contains('\0'));
    }

    let cases: Vec<Value> =
        grammars.iter().map(|(_, text, strings)| json!({"grammar": text, "strings": strings})).collect();
    let verdicts = llama_cpp(json!({"mode": "accepts", "model": model, "cases": cases}));

    ConstraintCompiler::o200k().unwrap();
    let (mut accepted, mut rejected, mut disagreements, mut undetermined) = (0, 0, Vec::new(), Vec::new());
    for ((name, text, strings), verdicts) in grammars.iter().zip(verdicts["results"].as_array().unwrap()) {
        let lark = to_lark(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let validator = Validator::new(&Constraint::Grammar(lark.clone()))
            .unwrap_or_else(|e| panic!("{name}: the Lark conversion does not compile: {e}\n{lark}"));
        for (s, verdict) in strings.iter().zip(verdicts.as_array().unwrap()) {
            let catena = validator.check(s);
            let Some(llama) = verdict.as_bool() else {
                // llama.cpp refused a token ending inside a character (see the helper): no verdict to compare.
                undetermined.push((name.as_str(), s.as_str(), catena));
                continue;
            };
            if llama {
                accepted += 1;
            } else {
                rejected += 1;
            }
            if catena.is_ok() != llama {
                disagreements.push(format!(
                    "{name}: {s:?}: llama.cpp {}, catena {catena:?}\n{lark}",
                    if llama { "accepts" } else { "rejects" }
                ));
            }
        }
    }
    assert!(disagreements.is_empty(), "{} disagreements:\n{}", disagreements.len(), disagreements.join("\n"));
    assert!(grammars.len() >= 20, "only {} grammars", grammars.len());
    // Only grammars with negated classes excluding non-ASCII characters can hit llama.cpp's partial-character
    // check; the `escapes` grammar does on purpose, with U+2029 against `[^...\u2028]`.
    let known = undetermined.iter().find(|(name, s, _)| *name == "escapes" && s.contains('\u{2029}'));
    assert!(
        known.is_some_and(|(.., catena)| catena.is_ok()),
        "the known llama.cpp partial-character case was not seen, or catena rejects it: {undetermined:#?}"
    );
    assert!(undetermined.len() * 20 <= accepted + rejected, "too many undetermined verdicts: {undetermined:#?}");
    assert!(accepted >= 80 && rejected >= 80, "too one-sided: {accepted} accepted, {rejected} rejected");
    eprintln!(
        "{} grammars, {accepted} strings accepted and {rejected} rejected by both, {} undetermined:\n{}",
        grammars.len(),
        undetermined.len(),
        undetermined
            .iter()
            .map(|(name, s, catena)| format!("{name}: {s:?}: catena {catena:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
