//! The cross-encoder reranker on tiny BERT cross-encoders these tests write (random weights, a 30-word WordPiece
//! vocabulary): no cross-encoder weights can be installed from the package registries here, so these tests check
//! the mechanics (pair encoding with segment ids, padding, pooler and classifier, truncation, ranking) and make no
//! quality claim. The BERT encoder itself is checked against sentence-transformers' outputs in `local_embed.rs`'s
//! tests.

#![cfg(feature = "local-embed")]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use catena_core::{Document, Metadata, Reranker, RerankingRetriever, Retriever, ScoredDocument};
use catena_providers::local_embed::CrossEncoder;

const HIDDEN: usize = 8;
const WORDS: [&str; 26] = [
    "the",
    "borrow",
    "checker",
    "enforces",
    "ownership",
    "rules",
    "file",
    "read",
    "string",
    "into",
    "a",
    "how",
    "do",
    "i",
    "vector",
    "stores",
    "values",
    "hash",
    "map",
    "keys",
    "rust",
    "is",
    "fast",
    "memory",
    "safe",
    "and",
];

fn vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"].iter().map(|s| s.to_string()).collect();
    v.extend(WORDS.iter().map(|s| s.to_string()));
    v
}

/// A BERT WordPiece tokenizer.json over [`vocab`], with the pair template `[CLS] A [SEP] B [SEP]` (segments 0, 1).
fn tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> =
        vocab().into_iter().enumerate().map(|(i, w)| (w, serde_json::json!(i))).collect();
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                           "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"), special(3, "[SEP]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
    .to_string()
}

/// Random weights (normal, std 0.5) for every tensor of a one-layer BertForSequenceClassification, seeded.
fn random_weights(seed: u64, max_positions: usize) -> HashMap<String, Tensor> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut t = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        // Box-Muller from two uniforms.
        let data: Vec<f32> = (0..n)
            .map(|_| {
                let (u, v) = (rng.f32().max(1e-7), rng.f32());
                0.5 * (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    };
    let (h, i, v) = (HIDDEN, 16, vocab().len());
    let mut w = HashMap::new();
    w.insert("bert.embeddings.word_embeddings.weight".into(), t(&[v, h]));
    w.insert("bert.embeddings.position_embeddings.weight".into(), t(&[max_positions, h]));
    w.insert("bert.embeddings.token_type_embeddings.weight".into(), t(&[2, h]));
    w.insert(
        "bert.embeddings.LayerNorm.weight".into(),
        Tensor::ones(h, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    w.insert("bert.embeddings.LayerNorm.bias".into(), t(&[h]));
    let l = "bert.encoder.layer.0";
    for (name, shape) in [
        ("attention.self.query", [h, h]),
        ("attention.self.key", [h, h]),
        ("attention.self.value", [h, h]),
        ("attention.output.dense", [h, h]),
        ("intermediate.dense", [i, h]),
        ("output.dense", [h, i]),
    ] {
        w.insert(format!("{l}.{name}.weight"), t(&shape));
        w.insert(format!("{l}.{name}.bias"), t(&[shape[0]]));
    }
    for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
        w.insert(format!("{l}.{norm}.weight"), Tensor::ones(h, candle_core::DType::F32, &Device::Cpu).unwrap());
        w.insert(format!("{l}.{norm}.bias"), t(&[h]));
    }
    w.insert("bert.pooler.dense.weight".into(), t(&[h, h]));
    w.insert("bert.pooler.dense.bias".into(), t(&[h]));
    w.insert("classifier.weight".into(), t(&[1, h]));
    w.insert("classifier.bias".into(), t(&[1]));
    w
}

fn write_model(dir: &Path, weights: &HashMap<String, Tensor>, max_positions: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["BertForSequenceClassification"], "model_type": "bert", "vocab_size": vocab().len(),
        "hidden_size": HIDDEN, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
        "hidden_act": "gelu", "max_position_embeddings": max_positions, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "pad_token_id": 0, "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();
    candle_core::safetensors::save(weights, dir.join("model.safetensors")).unwrap();
}

const PASSAGES: [&str; 4] = [
    "the borrow checker enforces ownership rules",
    "read a file into a string",
    "a vector stores values and a hash map stores keys and values and rust is fast and memory safe",
    "rust",
];

fn passages() -> Vec<String> {
    PASSAGES.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn pooler_and_classifier_are_wired_as_in_bert_for_sequence_classification() {
    let dir = tempfile::tempdir().unwrap();
    let mut weights = random_weights(1, 64);
    // A zero classifier weight leaves the bias: every pair scores it.
    weights
        .insert("classifier.weight".into(), Tensor::zeros((1, HIDDEN), candle_core::DType::F32, &Device::Cpu).unwrap());
    weights.insert("classifier.bias".into(), Tensor::new(&[0.7f32], &Device::Cpu).unwrap());
    write_model(dir.path(), &weights, 64);
    let scores = CrossEncoder::from_dir(dir.path()).unwrap().score("how do i read a file", &passages()).await.unwrap();
    assert!(scores.iter().all(|s| (s - 0.7).abs() < 1e-6), "{scores:?}");

    // A zero pooler weight pools every pair to tanh(bias): the score is classifier . tanh(pooler bias) + bias.
    let pooler_bias = [0.3f32, -1.2, 0.5, 2.0, -0.1, 0.0, 1.0, -0.7];
    let classifier = [0.9f32, 0.2, -0.4, 0.1, 1.5, -2.0, 0.3, 0.05];
    weights.insert(
        "bert.pooler.dense.weight".into(),
        Tensor::zeros((HIDDEN, HIDDEN), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    weights.insert("bert.pooler.dense.bias".into(), Tensor::new(&pooler_bias, &Device::Cpu).unwrap());
    weights.insert("classifier.weight".into(), Tensor::new(&[classifier], &Device::Cpu).unwrap());
    weights.insert("classifier.bias".into(), Tensor::new(&[-0.25f32], &Device::Cpu).unwrap());
    write_model(dir.path(), &weights, 64);
    let expected: f32 = pooler_bias.iter().zip(classifier).map(|(b, w)| w * b.tanh()).sum::<f32>() - 0.25;
    let scores = CrossEncoder::from_dir(dir.path()).unwrap().score("how", &passages()).await.unwrap();
    assert!(scores.iter().all(|s| (s - expected).abs() < 1e-5), "{scores:?} vs {expected}");
}

#[tokio::test]
async fn batches_segments_truncation_and_ranking() {
    let dir = tempfile::tempdir().unwrap();
    let weights = random_weights(7, 32);
    write_model(dir.path(), &weights, 32);
    let encoder = CrossEncoder::from_dir(dir.path()).unwrap();
    let query = "how do i read a file into a string";
    let together = encoder.score(query, &passages()).await.unwrap();
    assert_eq!(together.len(), 4);
    // Padding never leaks: each pair alone, and in batches of two, scores the same as all four together.
    for (i, p) in passages().iter().enumerate() {
        let alone = encoder.score(query, std::slice::from_ref(p)).await.unwrap();
        assert!((alone[0] - together[i]).abs() < 1e-4, "pair {i}: {} alone vs {} batched", alone[0], together[i]);
    }
    let pairs = encoder.clone().with_batch_size(2).score(query, &passages()).await.unwrap();
    for (a, b) in pairs.iter().zip(&together) {
        assert!((a - b).abs() < 1e-4, "{pairs:?} vs {together:?}");
    }
    let distinct: std::collections::BTreeSet<u32> = together.iter().map(|s| s.to_bits()).collect();
    assert_eq!(distinct.len(), 4, "random weights give each pair its own score: {together:?}");

    // The passage is segment 1: changing only segment 1's embedding changes the scores.
    let mut other = weights.clone();
    let types = other["bert.embeddings.token_type_embeddings.weight"].clone();
    let row0 = types.narrow(0, 0, 1).unwrap();
    other.insert("bert.embeddings.token_type_embeddings.weight".into(), Tensor::cat(&[&row0, &row0], 0).unwrap());
    let same_types = tempfile::tempdir().unwrap();
    write_model(same_types.path(), &other, 32);
    let changed = CrossEncoder::from_dir(same_types.path()).unwrap().score(query, &passages()).await.unwrap();
    assert!(changed.iter().zip(&together).any(|(a, b)| (a - b).abs() > 1e-3), "segment ids are ignored");

    // Longer than the 32 positions: truncated, not an error; a shorter limit changes the long pair only.
    let long = vec![["rust is fast and memory safe"; 20].join(" ")];
    assert_eq!(encoder.score(query, &long).await.unwrap().len(), 1);
    let short = encoder.clone().with_max_seq_length(12).unwrap();
    assert_eq!(short.score(query, &long).await.unwrap().len(), 1);
    assert!(encoder.clone().with_max_seq_length(33).is_err() && encoder.clone().with_max_seq_length(3).is_err());
    assert!(encoder.score(query, &[]).await.unwrap().is_empty());

    // As a reranker: every document comes back, ordered by the cross-encoder's scores.
    let docs: Vec<ScoredDocument> = passages()
        .into_iter()
        .enumerate()
        .map(|(i, p)| ScoredDocument {
            document: Document::with_id(format!("p{i}"), p, Metadata::new()),
            score: 0.0,
            vector: None,
        })
        .collect();
    let ranked = encoder.rerank(query, docs).await.unwrap();
    let mut order: Vec<usize> = (0..4).collect();
    order.sort_by(|&a, &b| together[b].total_cmp(&together[a]));
    let ids: Vec<String> = ranked.iter().map(|d| d.document.id.clone()).collect();
    assert_eq!(ids, order.iter().map(|i| format!("p{i}")).collect::<Vec<_>>());
    assert!(ranked.windows(2).all(|w| w[0].score >= w[1].score));

    // Inside a RerankingRetriever: candidates from any retriever, the best k kept.
    struct Fixed(Vec<ScoredDocument>);
    #[catena_core::async_trait]
    impl Retriever for Fixed {
        async fn retrieve(&self, _query: &str) -> catena_core::Result<Vec<ScoredDocument>> {
            Ok(self.0.clone())
        }
    }
    let retriever =
        RerankingRetriever::new(Arc::new(Fixed(ranked.iter().rev().cloned().collect())), Arc::new(encoder), 2);
    let top = retriever.retrieve(query).await.unwrap();
    assert_eq!(top.iter().map(|d| d.document.id.clone()).collect::<Vec<_>>(), ids[..2]);
}

#[test]
fn missing_or_foreign_directories_fail_with_what_to_do() {
    let err = CrossEncoder::from_dir("/nonexistent/cross-encoder").unwrap_err().to_string();
    assert!(err.contains("does not exist") && err.contains("CATENA_RERANK_MODEL"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let mut weights = random_weights(3, 16);
    write_model(dir.path(), &weights, 16);
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    assert!(CrossEncoder::from_dir(dir.path()).unwrap_err().to_string().contains("tokenizer.json"));
    // An embedding model (no classifier) is not a cross-encoder.
    weights.remove("classifier.weight");
    write_model(dir.path(), &weights, 16);
    let err = CrossEncoder::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("classifier") && err.contains("not a cross-encoder"), "{err}");
    // Two labels: declared unsupported.
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    config["id2label"] = serde_json::json!({"0": "no", "1": "yes"});
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let err = CrossEncoder::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("2 labels"), "{err}");
}
