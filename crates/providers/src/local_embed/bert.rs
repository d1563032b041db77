//! A BERT encoder (the architecture of MiniLM, BGE and E5 sentence-embedding models) on candle.
//!
//! Reads the Hugging Face `config.json` and the `model.safetensors` weights and returns the last hidden state for a
//! padded batch of token ids. Pooling and normalisation live in the parent module.

use std::collections::HashMap;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Module, Shape, Tensor, D};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use rayon::prelude::*;
use serde::Deserialize;

/// The fields of a Hugging Face BERT `config.json` the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BertConfig {
    /// `bert` for every supported model.
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

fn default_type_vocab_size() -> usize {
    2
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

/// The activation of the feed-forward block, from `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `gelu`: the exact, erf-based GELU (what PyTorch's `nn.GELU()` and BERT use).
    GeluErf,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `relu`.
    Relu,
}

impl Activation {
    /// Parses a `hidden_act` value; `None` for activations this encoder does not implement.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            _ => None,
        }
    }

    fn apply(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::GeluErf if xs.dtype() == DType::F32 && xs.is_contiguous() => xs.apply_op1_no_bwd(&FastGelu),
            Activation::GeluErf => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
            Activation::Relu => xs.relu(),
        }
    }
}

struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// A loaded BERT encoder: embeddings and `num_hidden_layers` transformer layers.
pub(crate) struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    activation: Activation,
    device: Device,
}

/// Why the weights could not be turned into a model.
pub(crate) enum LoadError {
    /// The weights file does not contain BERT weights under the expected names.
    NotBert,
    /// A tensor is missing or has the wrong shape.
    Candle(candle_core::Error),
}

impl From<candle_core::Error> for LoadError {
    fn from(e: candle_core::Error) -> Self {
        LoadError::Candle(e)
    }
}

fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<LayerNorm> {
    candle_nn::layer_norm(size, eps, vb)
}

impl BertModel {
    /// Builds the encoder from the tensors of a safetensors file. Weights may be stored with or without the `bert.`
    /// prefix (the former when the file was saved from a `BertFor...` head model); other dtypes are converted to f32.
    pub(crate) fn load(
        tensors: HashMap<String, Tensor>,
        config: &BertConfig,
        activation: Activation,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let prefix = ["", "bert.", "model."]
            .into_iter()
            .find(|p| tensors.contains_key(&format!("{p}embeddings.word_embeddings.weight")))
            .ok_or(LoadError::NotBert)?;
        let root = VarBuilder::from_tensors(tensors, DType::F32, device);
        let vb = if prefix.is_empty() { root } else { root.pp(prefix.trim_end_matches('.')) };
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;

        let ve = vb.pp("embeddings");
        let embeddings = Embeddings {
            word: candle_nn::embedding(config.vocab_size, h, ve.pp("word_embeddings"))?,
            position: candle_nn::embedding(config.max_position_embeddings, h, ve.pp("position_embeddings"))?,
            token_type: candle_nn::embedding(config.type_vocab_size, h, ve.pp("token_type_embeddings"))?,
            norm: layer_norm(h, eps, ve.pp("LayerNorm"))?,
        };
        let head_dim = h / config.num_attention_heads;
        // Attention scores are scaled by 1/sqrt(head_dim); folding that into the query projection saves a pass
        // over every batch x heads x seq x seq score tensor.
        let scale = 1.0 / (head_dim as f64).sqrt();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let vl = vb.pp(format!("encoder.layer.{i}"));
            let va = vl.pp("attention");
            let query = candle_nn::linear(h, h, va.pp("self.query"))?;
            let query_bias = query.bias().map(|b| b * scale).transpose()?;
            layers.push(Layer {
                query: Linear::new((query.weight() * scale)?, query_bias),
                key: candle_nn::linear(h, h, va.pp("self.key"))?,
                value: candle_nn::linear(h, h, va.pp("self.value"))?,
                attention_out: candle_nn::linear(h, h, va.pp("output.dense"))?,
                attention_norm: layer_norm(h, eps, va.pp("output.LayerNorm"))?,
                intermediate: candle_nn::linear(h, config.intermediate_size, vl.pp("intermediate.dense"))?,
                output: candle_nn::linear(config.intermediate_size, h, vl.pp("output.dense"))?,
                output_norm: layer_norm(h, eps, vl.pp("output.LayerNorm"))?,
            });
        }
        Ok(BertModel {
            embeddings,
            layers,
            heads: config.num_attention_heads,
            head_dim,
            activation,
            device: device.clone(),
        })
    }

    /// The device the weights live on.
    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the encoder on `input_ids` (`batch x seq`, u32) with `mask` (`batch x seq`, f32: 1 for real tokens, 0
    /// for padding). Returns the last hidden state, `batch x seq x hidden`. Padded positions never influence real
    /// ones: they get zero attention weight.
    pub(crate) fn forward(&self, input_ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (_, seq) = input_ids.dims2()?;
        let positions = Tensor::arange(0u32, seq as u32, &self.device)?;
        let token_types = Tensor::zeros(seq, DType::U32, &self.device)?;
        let position_and_type =
            (self.embeddings.position.forward(&positions)? + self.embeddings.token_type.forward(&token_types)?)?;
        let xs = self.embeddings.word.forward(input_ids)?.broadcast_add(&position_and_type)?;
        self.encode(xs, mask)
    }

    /// [`forward`](Self::forward) with segment ids (`batch x seq`, u32: 0 for the first text of a pair, 1 for the
    /// second), as cross-encoders take them.
    pub(crate) fn forward_typed(
        &self,
        input_ids: &Tensor,
        token_types: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (_, seq) = input_ids.dims2()?;
        let positions = Tensor::arange(0u32, seq as u32, &self.device)?;
        let xs = (self.embeddings.word.forward(input_ids)? + self.embeddings.token_type.forward(token_types)?)?
            .broadcast_add(&self.embeddings.position.forward(&positions)?)?;
        self.encode(xs, mask)
    }

    /// The embedding layer norm and the transformer layers over summed embeddings `xs` (`batch x seq x hidden`).
    fn encode(&self, xs: Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, seq, _) = xs.dims3()?;
        let mut xs = self.embeddings.norm.forward(&xs)?;
        let mask = mask.to_dtype(DType::F32)?.contiguous()?;
        for layer in &self.layers {
            xs = self.layer_forward(layer, &xs, &mask, batch, seq)?;
        }
        Ok(xs)
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        xs: &Tensor,
        mask: &Tensor,
        batch: usize,
        seq: usize,
    ) -> candle_core::Result<Tensor> {
        let split_heads = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((batch, seq, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous()
        };
        let q = split_heads(layer.query.forward(xs)?)?;
        let k = split_heads(layer.key.forward(xs)?)?;
        let v = split_heads(layer.value.forward(xs)?)?;
        let scores = q.matmul(&k.t()?)?.contiguous()?;
        let probs = scores.apply_op2_no_bwd(mask, &MaskedSoftmax)?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((batch, seq, self.heads * self.head_dim))?;
        let attended = layer.attention_norm.forward(&(layer.attention_out.forward(&context)? + xs)?)?;
        let inner = self.activation.apply(&layer.intermediate.forward(&attended)?)?;
        layer.output_norm.forward(&(layer.output.forward(&inner)? + &attended)?)
    }
}

/// Averages the hidden states of real tokens (mask 1), ignoring padding: `batch x seq x hidden` -> `batch x hidden`.
pub(crate) fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let (sum, count) = masked_sum(hidden, mask)?;
    sum.broadcast_div(&count.clamp(1e-9, f64::MAX)?)
}

/// Sum of the real tokens' hidden states divided by the square root of their count.
pub(crate) fn mean_sqrt_len_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let (sum, count) = masked_sum(hidden, mask)?;
    sum.broadcast_div(&count.clamp(1e-9, f64::MAX)?.sqrt()?)
}

fn masked_sum(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let mask = mask.unsqueeze(2)?; // batch x seq x 1
    let sum = hidden.broadcast_mul(&mask)?.sum(1)?; // batch x hidden
    let count = mask.sum(1)?; // batch x 1
    Ok((sum, count))
}

/// The element-wise maximum over real tokens (padding set to -1e9 first, as sentence-transformers does).
pub(crate) fn max_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.unsqueeze(2)?;
    let penalty = ((mask.ones_like()? - &mask)? * -1e9)?;
    hidden.broadcast_mul(&mask)?.broadcast_add(&penalty)?.max(1)
}

/// The hidden state of the first token (`[CLS]`).
pub(crate) fn cls_pool(hidden: &Tensor) -> candle_core::Result<Tensor> {
    hidden.narrow(1, 0, 1)?.squeeze(1)
}

/// Divides every row by its L2 norm (at least 1e-12, like `torch.nn.functional.normalize`).
pub(crate) fn l2_normalize(xs: &Tensor) -> candle_core::Result<Tensor> {
    let norm = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    xs.broadcast_div(&norm)
}

/// `e^x` for f32 without a library call, so loops over slices vectorise: `e^x = 2^n * e^r` with
/// `n = round(x / ln 2)`, `|r| <= ln(2) / 2`, `e^r` from its Taylor series to degree 7 (truncation error below
/// 3e-9 relative, under f32 rounding) and `2^n` built from exponent bits. Inputs are clamped to [-87, 88], where
/// f32 `exp` is normal and finite.
#[inline(always)]
fn exp(x: f32) -> f32 {
    // ln 2 split in two so that n * LN2_HIGH is exact for the n that occur (Cody and Waite).
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds x / ln 2 to the nearest integer n and leaves n in the low mantissa bits, so both n
    // and 2^n come from plain arithmetic and bit operations (no float-to-int conversion or `round` call), which
    // keeps the function vectorisable on baseline x86-64.
    const ROUNDER: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = x - n * LN2_HIGH - n * LN2_LOW;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // shifted's bits are ROUNDER's bits + n; (n + 127) << 23 is the f32 2^n.
    let two_n = shifted.to_bits().wrapping_sub(ROUNDER.to_bits()).wrapping_add(127) << 23;
    p * f32::from_bits(two_n)
}

/// The error function, Abramowitz & Stegun formula 7.1.26 (absolute error at most 1.5e-7, at the level of f32
/// resolution around 1): a polynomial and one `exp`, several times cheaper than a correctly rounded `erff`.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// Exact (erf-based) GELU on contiguous f32 data, split across the CPU threads.
struct FastGelu;

impl CustomOp1 for FastGelu {
    fn name(&self) -> &'static str {
        "catena-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("catena-gelu-erf needs contiguous f32 input");
        };
        let src = &data[start..end];
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(PAR_CHUNK).zip(src.par_chunks(PAR_CHUNK)).for_each(|(d, s)| {
            for (d, &x) in d.iter_mut().zip(s) {
                *d = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
            }
        });
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// Elements per parallel work item of the element-wise ops.
const PAR_CHUNK: usize = 16 * 1024;

/// Softmax over the last dimension of attention scores (`batch x heads x seq x seq`, contiguous f32) that gives
/// weight only to keys whose `mask` (`batch x seq`, f32) is non-zero: the same result as adding a very large
/// negative bias to padded keys, without the extra pass. Rows run in parallel.
struct MaskedSoftmax;

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "catena-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        scores: &CpuStorage,
        scores_layout: &Layout,
        mask: &CpuStorage,
        mask_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(scores), CpuStorage::F32(mask)) = (scores, mask) else {
            candle_core::bail!("catena-masked-softmax needs f32 scores and mask");
        };
        let (Some((s0, s1)), Some((m0, m1))) = (scores_layout.contiguous_offsets(), mask_layout.contiguous_offsets())
        else {
            candle_core::bail!("catena-masked-softmax needs contiguous scores and mask");
        };
        let (batch, heads, rows, seq) = scores_layout.shape().dims4()?;
        if mask_layout.shape().dims2()? != (batch, seq) {
            candle_core::bail!("catena-masked-softmax: mask {:?} does not match scores", mask_layout.shape());
        }
        let (scores, mask) = (&scores[s0..s1], &mask[m0..m1]);
        let mut out = vec![0f32; scores.len()];
        // Rows are short (seq floats): hand them to threads in groups, or scheduling costs more than the work.
        let rows_per_task = (PAR_CHUNK / seq.max(1)).max(1);
        out.par_chunks_mut(seq).zip(scores.par_chunks(seq)).enumerate().with_min_len(rows_per_task).for_each(
            |(row, (dst, src))| {
                let b = row / (heads * rows);
                let keep = &mask[b * seq..(b + 1) * seq];
                for ((d, &x), &k) in dst.iter_mut().zip(src).zip(keep) {
                    *d = if k != 0.0 { x } else { f32::NEG_INFINITY };
                }
                let max = lanes(dst, f32::NEG_INFINITY, f32::max);
                for d in dst.iter_mut() {
                    // exp clamps its input, so a masked key (-inf) would get a tiny non-zero weight: select 0.
                    *d = if *d == f32::NEG_INFINITY { 0.0 } else { exp(*d - max) };
                }
                let sum = lanes(dst, 0.0, |a, b| a + b);
                if sum > 0.0 {
                    let inv = 1.0 / sum;
                    dst.iter_mut().for_each(|d| *d *= inv);
                }
            },
        );
        Ok((CpuStorage::F32(out), scores_layout.shape().clone()))
    }
}

/// Reduces `xs` with `op` over eight interleaved accumulators, so the loop vectorises (a single accumulator
/// would serialise on `op`'s latency).
#[inline(always)]
fn lanes(xs: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = op(acc[i], c[i]);
        }
    }
    let mut total = rest.iter().fold(init, |a, &x| op(a, x));
    for a in acc {
        total = op(total, a);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_to_f32_rounding() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let exact = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - exact).abs() / exact);
        }
        assert!(worst < 5e-7, "max relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
    }

    #[test]
    fn fast_gelu_matches_candle_exact_gelu() {
        let xs: Vec<f32> = (0..100_003).map(|i| (i as f32 / 100_003.0 - 0.5) * 16.0).collect();
        let t = Tensor::from_vec(xs, 100_003, &Device::Cpu).unwrap();
        let exact = t.to_dtype(DType::F64).unwrap().gelu_erf().unwrap().to_vec1::<f64>().unwrap();
        let fast = Activation::GeluErf.apply(&t).unwrap().to_vec1::<f32>().unwrap();
        let worst = exact.iter().zip(&fast).map(|(a, b)| (a - *b as f64).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-6, "max abs difference {worst:e}");
    }

    #[test]
    fn masked_softmax_matches_softmax_with_a_large_negative_bias() {
        let dev = Device::Cpu;
        let scores = Tensor::randn(0f32, 3.0, (2, 3, 4, 5), &dev).unwrap();
        let mask = Tensor::new(&[[1f32, 1., 1., 0., 0.], [1., 1., 1., 1., 1.]], &dev).unwrap();
        let bias = ((mask.ones_like().unwrap() - &mask).unwrap() * -1e30).unwrap().reshape((2, 1, 1, 5)).unwrap();
        let expected = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&bias).unwrap()).unwrap();
        let got = scores.apply_op2_no_bwd(&mask, &MaskedSoftmax).unwrap();
        let diff = (expected - &got).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6, "max abs difference {diff:e}");
        let padded = got.narrow(0, 0, 1).unwrap().narrow(3, 3, 2).unwrap();
        assert_eq!(padded.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }
}
