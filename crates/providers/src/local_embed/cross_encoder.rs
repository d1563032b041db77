//! [`CrossEncoder`]: a BERT cross-encoder (a `BertForSequenceClassification` with one relevance logit, the shape
//! of the ms-marco MiniLM rerankers) that scores (query, passage) pairs in process on candle; a [`Reranker`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module};
use catena_core::{async_trait, Error, Reranker, Result, ScoredDocument};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams, TruncationStrategy};

use super::bert::{self, BertConfig, BertModel};
use super::{check_bert_config, dir_name, load_safetensors, missing_file, read_json, run_blocking};

/// Pairs per forward pass unless [`CrossEncoder::with_batch_size`] says otherwise.
pub const DEFAULT_RERANK_BATCH_SIZE: usize = 16;

/// The environment variable naming a cross-encoder directory (what the examples' `--rerank` reads).
pub const RERANK_MODEL_ENV: &str = "CATENA_RERANK_MODEL";

/// The classification head's part of `config.json`.
#[derive(Debug, Deserialize)]
struct HeadConfig {
    #[serde(default)]
    num_labels: Option<usize>,
    #[serde(default)]
    id2label: Option<HashMap<String, String>>,
}

struct Loaded {
    dir: PathBuf,
    bert: BertModel,
    pooler: Linear,
    classifier: Linear,
    pad_id: u32,
    /// The model's position embeddings: the longest pair it can take.
    max_positions: usize,
}

/// A cross-encoder reranker loaded from a local directory with `config.json` (BERT, one label), `tokenizer.json`
/// and `model.safetensors` holding the encoder, its pooler (`bert.pooler.dense`) and the classifier
/// (`classifier`): the layout of Hugging Face `BertForSequenceClassification` checkpoints such as
/// `cross-encoder/ms-marco-MiniLM-L-6-v2`.
///
/// A pair is encoded as `[CLS] query [SEP] passage [SEP]` (segment ids 0 then 1), truncated longest-first to
/// the model's positions; its score is the classifier's logit on the pooled `[CLS]` state (higher is more
/// relevant; a sigmoid maps it to 0..1). Inference runs on the CPU off the async runtime, in batches of pairs of
/// similar length. Cheap to clone (clones share the weights).
///
/// No cross-encoder weights can be installed from the package registries this project is built with, so catena
/// tests the mechanics on a tiny random model its tests write (and makes no quality claim); point it at a real
/// checkpoint directory to rerank for real.
#[derive(Clone)]
pub struct CrossEncoder {
    model: Arc<Loaded>,
    tokenizer: Arc<Tokenizer>,
    name: String,
    batch_size: usize,
    max_seq_length: usize,
}

impl std::fmt::Debug for CrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoder")
            .field("dir", &self.model.dir)
            .field("name", &self.name)
            .field("batch_size", &self.batch_size)
            .field("max_seq_length", &self.max_seq_length)
            .finish()
    }
}

impl CrossEncoder {
    /// Loads a cross-encoder directory. Blocks while it reads the weights; call it at startup or inside
    /// `spawn_blocking`.
    ///
    /// # Errors
    /// [`Error::Config`] naming a missing file; [`Error::Unsupported`] for a model that is not BERT or has more
    /// than one label; [`Error::Format`] for weights without the pooler or classifier, or not matching the config.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::config(
                "cross-encoder directory",
                format!("{} does not exist or is not a directory", dir.display()),
                format!(
                    "pass a directory with config.json, tokenizer.json and model.safetensors of a BERT \
                     cross-encoder (for example cross-encoder/ms-marco-MiniLM-L-6-v2), or set {RERANK_MODEL_ENV}"
                ),
            ));
        }
        for file in ["config.json", "tokenizer.json", "model.safetensors"] {
            if !dir.join(file).is_file() {
                return Err(missing_file(dir, file, ""));
            }
        }
        let config_path = dir.join("config.json");
        let config: BertConfig = read_json(&config_path)?;
        let head: HeadConfig = read_json(&config_path)?;
        let activation = check_bert_config(&config, &config_path, "CrossEncoder")?;
        let labels = head.id2label.as_ref().map(HashMap::len).or(head.num_labels).unwrap_or(1);
        if labels != 1 {
            return Err(Error::unsupported(
                "CrossEncoder",
                format!("{labels} labels ({})", config_path.display()),
                "use a cross-encoder with one relevance logit (num_labels 1)",
            ));
        }

        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| Error::Format { path: tokenizer_path.clone(), message: e.to_string() })?;
        tokenizer.with_padding(None);
        let max_seq_length = config.max_position_embeddings.min(512);
        set_truncation(&mut tokenizer, max_seq_length)
            .map_err(|e| Error::Format { path: tokenizer_path.clone(), message: e })?;

        let weights_path = dir.join("model.safetensors");
        let device = Device::Cpu;
        let tensors = load_safetensors(&weights_path, &device)?;
        let format_error = |message: String| Error::Format { path: weights_path.clone(), message };
        let linear = |tensors: &HashMap<String, Tensor>, names: &[&str]| -> Result<Linear> {
            let find = |suffix: &str| {
                names.iter().find_map(|n| tensors.get(&format!("{n}.{suffix}"))).map(|t| t.to_dtype(DType::F32))
            };
            match (find("weight"), find("bias")) {
                (Some(Ok(w)), Some(Ok(b))) => Ok(Linear::new(w, Some(b))),
                (Some(Err(e)), _) | (_, Some(Err(e))) => Err(format_error(e.to_string())),
                _ => Err(format_error(format!(
                    "holds no {}.weight and .bias: not a cross-encoder (BertForSequenceClassification) checkpoint",
                    names[0]
                ))),
            }
        };
        let pooler = linear(&tensors, &["bert.pooler.dense", "pooler.dense", "model.pooler.dense"])?;
        let classifier = linear(&tensors, &["classifier", "bert.classifier"])?;
        if classifier.weight().dims() != [1, config.hidden_size] || pooler.weight().dims() != [config.hidden_size; 2] {
            return Err(format_error(format!(
                "the pooler {:?} and classifier {:?} do not fit hidden_size {}",
                pooler.weight().dims(),
                classifier.weight().dims(),
                config.hidden_size
            )));
        }
        let bert = BertModel::load(tensors, &config, activation, &device).map_err(|e| {
            format_error(match e {
                bert::LoadError::NotBert => "holds no embeddings.word_embeddings.weight: not a BERT model".into(),
                bert::LoadError::Candle(e) => format!("does not match config.json: {e}"),
            })
        })?;
        let name = dir_name(dir);
        Ok(CrossEncoder {
            model: Arc::new(Loaded {
                dir: dir.to_path_buf(),
                bert,
                pooler,
                classifier,
                pad_id: config.pad_token_id.unwrap_or(0),
                max_positions: config.max_position_embeddings,
            }),
            tokenizer: Arc::new(tokenizer),
            name,
            batch_size: DEFAULT_RERANK_BATCH_SIZE,
            max_seq_length,
        })
    }

    /// Loads the directory named by `CATENA_RERANK_MODEL`.
    ///
    /// # Errors
    /// [`Error::Config`] when the variable is unset; otherwise as [`CrossEncoder::from_dir`].
    pub fn from_env() -> Result<Self> {
        match std::env::var_os(RERANK_MODEL_ENV).filter(|v| !v.is_empty()) {
            Some(dir) => Self::from_dir(PathBuf::from(dir)),
            None => Err(Error::config(
                RERANK_MODEL_ENV,
                "is not set",
                "set it to a cross-encoder directory (config.json, tokenizer.json, model.safetensors)",
            )),
        }
    }

    /// Pairs per forward pass (default [`DEFAULT_RERANK_BATCH_SIZE`]; at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Truncates pairs to `tokens` (at most the model's positions, and room for the three special tokens).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `tokens` is out of that range.
    pub fn with_max_seq_length(self, tokens: usize) -> Result<Self> {
        let limit = self.max_seq_length_limit();
        if !(4..=limit).contains(&tokens) {
            return Err(Error::InvalidInput(format!(
                "max_seq_length {tokens} is outside 4..={limit} for the cross-encoder {}",
                self.name
            )));
        }
        let mut tokenizer = (*self.tokenizer).clone();
        set_truncation(&mut tokenizer, tokens).map_err(Error::InvalidInput)?;
        Ok(CrossEncoder { tokenizer: Arc::new(tokenizer), max_seq_length: tokens, ..self })
    }

    fn max_seq_length_limit(&self) -> usize {
        self.model.max_positions
    }

    /// The model's name (its directory's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The relevance logit of `query` against each passage, in order.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when tokenizing fails; [`Error::Format`] when the model fails to run.
    pub async fn score(&self, query: &str, passages: &[String]) -> Result<Vec<f32>> {
        if passages.is_empty() {
            return Ok(Vec::new());
        }
        let this = self.clone();
        let query = query.to_string();
        let passages = passages.to_vec();
        let span = tracing::Span::current();
        run_blocking(move || span.in_scope(|| this.score_now(&query, &passages))).await
    }

    fn score_now(&self, query: &str, passages: &[String]) -> Result<Vec<f32>> {
        let pairs: Vec<(String, String)> = passages.iter().map(|p| (query.to_string(), p.clone())).collect();
        let encodings = self
            .tokenizer
            .encode_batch(pairs, true)
            .map_err(|e| Error::InvalidInput(format!("tokenizing for the cross-encoder {} failed: {e}", self.name)))?;
        let rows: Vec<(Vec<u32>, Vec<u32>)> =
            encodings.iter().map(|e| (e.get_ids().to_vec(), e.get_type_ids().to_vec())).collect();
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(rows[i].0.len()));
        let mut scores = vec![0f32; rows.len()];
        for chunk in order.chunks(self.batch_size) {
            let seq = chunk.iter().map(|&i| rows[i].0.len()).max().unwrap_or(0);
            let batch = chunk.len();
            let (mut ids, mut types, mut mask) =
                (Vec::with_capacity(batch * seq), Vec::with_capacity(batch * seq), Vec::with_capacity(batch * seq));
            for &i in chunk {
                let (row_ids, row_types) = &rows[i];
                let pad = seq - row_ids.len();
                ids.extend_from_slice(row_ids);
                ids.extend(std::iter::repeat_n(self.model.pad_id, pad));
                types.extend_from_slice(row_types);
                types.extend(std::iter::repeat_n(0u32, pad));
                mask.extend(std::iter::repeat_n(1f32, row_ids.len()));
                mask.extend(std::iter::repeat_n(0f32, pad));
            }
            let logits = (|| {
                let device = self.model.bert.device();
                let ids = Tensor::from_vec(ids, (batch, seq), device)?;
                let types = Tensor::from_vec(types, (batch, seq), device)?;
                let mask = Tensor::from_vec(mask, (batch, seq), device)?;
                let hidden = self.model.bert.forward_typed(&ids, &types, &mask)?;
                let pooled = self.model.pooler.forward(&bert::cls_pool(&hidden)?)?.tanh()?;
                self.model.classifier.forward(&pooled)?.squeeze(1)?.to_vec1::<f32>()
            })()
            .map_err(|e| Error::Format {
                path: self.model.dir.clone(),
                message: format!("running the cross-encoder failed: {e}"),
            })?;
            for (&i, logit) in chunk.iter().zip(logits) {
                scores[i] = logit;
            }
        }
        Ok(scores)
    }
}

fn set_truncation(tokenizer: &mut Tokenizer, max_length: usize) -> std::result::Result<(), String> {
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            ..Default::default()
        }))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Scores every document's text against the query and returns them best first (the score is the logit; equal
/// scores keep their incoming order).
#[async_trait]
impl Reranker for CrossEncoder {
    async fn rerank(&self, query: &str, documents: Vec<ScoredDocument>) -> Result<Vec<ScoredDocument>> {
        let texts: Vec<String> = documents.iter().map(|d| d.document.content.clone()).collect();
        let scores = self.score(query, &texts).await?;
        let mut ranked: Vec<ScoredDocument> =
            documents.into_iter().zip(scores).map(|(d, score)| ScoredDocument { score, ..d }).collect();
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(ranked)
    }
}
