#!/usr/bin/env python3
"""Writes a tiny random-weight GGUF chat model for catena's end-to-end tests.

The model is a standard llama-architecture network (2 layers, hidden size 128, grouped-query attention) with a
byte-level BPE tokenizer stored the way llama.cpp expects GPT-2 style vocabularies (tokenizer.ggml.model =
"gpt2", pre-tokenizer "gpt-2"), ChatML control tokens and a ChatML chat template. Its answers are gibberish, but
every code path of a real server runs on it: prompt templating, tokenization, sampling, grammars, stop
sequences, streaming and embeddings (mean pooling, declared in the metadata).

The tokenizer is trained on the Rust book in shared/corpora/rust-book (sorted files) and the weights come from a
seeded NumPy generator, so the same seed always gives a byte-identical file.

Usage: python3 scripts/tiny_gguf.py OUTPUT.gguf [--seed N] [--corpus DIR]

Needs the PyPI packages gguf, tokenizers and numpy (.ci/setup-llama-server.sh installs them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Deterministic tokenizer training: one thread, no fork warnings.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from gguf import GGUFWriter, GGMLQuantizationType, PoolingType, TokenType  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

# Hyper-parameters. Small enough to load and run in milliseconds, large enough to exercise GQA and RoPE.
VOCAB_SIZE = 1024
N_EMBD = 128
N_HEAD = 4
N_HEAD_KV = 2
N_LAYER = 2
N_FF = 384
N_CTX_TRAIN = 4096
RMS_EPS = 1e-5
ROPE_BASE = 10000.0

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]

# ChatML, as used by Qwen and many fine-tunes. Tool messages are shown as their own role.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_corpus() -> Path:
    shared = os.environ.get("CATENA_SHARED_DIR")
    base = Path(shared) if shared else REPO_ROOT.parent / "shared"
    return base / "corpora" / "rust-book"


def train_tokenizer(corpus: Path) -> Tokenizer:
    files = sorted(str(p) for p in corpus.glob("*.md"))
    if not files:
        sys.exit(f"tiny_gguf.py: no *.md files in {corpus}; pass --corpus or set CATENA_SHARED_DIR")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train(files, trainer)
    return tok


def vocabulary(tok: Tokenizer) -> tuple[list[str], list[int], list[str]]:
    """Tokens ordered by id, their GGUF token types, and the merges as 'left right' strings."""
    vocab = tok.get_vocab(with_added_tokens=True)
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        sys.exit("tiny_gguf.py: the trained vocabulary has gaps in its ids")
    tokens = [t for t, _ in by_id]
    types = [int(TokenType.CONTROL) if t in SPECIAL_TOKENS else int(TokenType.NORMAL) for t in tokens]
    raw_merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in raw_merges]
    return tokens, types, merges


def byte_decoder() -> dict[str, int]:
    """The GPT-2 byte-level alphabet: printable bytes stand for themselves, the others are shifted above 255."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + shifted)
            shifted += 1
    return {c: b for b, c in chars.items()}


def never_predicted(tokens: list[str]) -> list[int]:
    """Ids of control tokens and of tokens whose bytes are not UTF-8 text free of control characters."""
    decode = byte_decoder()
    out = []
    for i, token in enumerate(tokens):
        if token in SPECIAL_TOKENS:
            out.append(i)
            continue
        try:
            text = bytes(decode[c] for c in token).decode("utf-8")
        except UnicodeDecodeError:
            out.append(i)
            continue
        if any((ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0 for c in text):
            out.append(i)
    return out


def write_model(out: Path, seed: int, corpus: Path) -> None:
    tok = train_tokenizer(corpus)
    tokens, types, merges = vocabulary(tok)
    n_vocab = len(tokens)
    ids = {t: i for i, t in enumerate(tokens)}
    head_dim = N_EMBD // N_HEAD
    n_embd_kv = head_dim * N_HEAD_KV

    rng = np.random.default_rng(seed)

    def mat(rows: int, cols: int, std: float) -> np.ndarray:
        # numpy shape (rows, cols) is GGUF shape [cols, rows]: llama.cpp's ne0 is the input dimension.
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    ones = np.ones(N_EMBD, dtype=np.float32)

    w = GGUFWriter(None, arch="llama")
    w.add_name(f"catena-tiny-random-{seed}")
    w.add_description("Random weights, for tests only: answers are gibberish.")
    w.add_file_type(0)  # ALL_F32
    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(ROPE_BASE)
    w.add_vocab_size(n_vocab)
    # Used only when a context is created for embeddings; generation ignores it.
    w.add_pooling_type(PoolingType.MEAN)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(ids[ENDOFTEXT])
    w.add_eos_token_id(ids[IM_END])
    w.add_eot_token_id(ids[IM_END])
    w.add_pad_token_id(ids[ENDOFTEXT])
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    token_embd = mat(n_vocab, N_EMBD, 1.0)
    output = mat(n_vocab, N_EMBD, 1.0)
    # Some tokens get an all-zero output row, so their logit is 0 while the best of ~1000 random logits is
    # far above it: the model (greedy or sampled) practically never predicts them unless a grammar leaves no
    # other choice.
    # - Control tokens: generation never ends on its own (tests end it with max_tokens or stop sequences), but
    #   a grammar that has completed can still pick <|im_end|>, its only allowed token.
    # - Tokens that are not whole UTF-8 text or that hold control characters: the output is printable text, and
    #   streamed text equals the non-streamed text (llama-cpp-python drops characters split across streamed
    #   tokens).
    for token_id in never_predicted(tokens):
        output[token_id] = 0.0

    w.add_tensor("token_embd.weight", token_embd)
    w.add_tensor("output_norm.weight", ones)
    w.add_tensor("output.weight", output)
    attn_std = 1.0 / np.sqrt(N_EMBD)
    for layer in range(N_LAYER):
        p = f"blk.{layer}"
        w.add_tensor(f"{p}.attn_norm.weight", ones)
        w.add_tensor(f"{p}.attn_q.weight", mat(N_EMBD, N_EMBD, attn_std))
        w.add_tensor(f"{p}.attn_k.weight", mat(n_embd_kv, N_EMBD, attn_std))
        w.add_tensor(f"{p}.attn_v.weight", mat(n_embd_kv, N_EMBD, attn_std))
        w.add_tensor(f"{p}.attn_output.weight", mat(N_EMBD, N_EMBD, attn_std))
        w.add_tensor(f"{p}.ffn_norm.weight", ones)
        w.add_tensor(f"{p}.ffn_gate.weight", mat(N_FF, N_EMBD, attn_std))
        w.add_tensor(f"{p}.ffn_up.weight", mat(N_FF, N_EMBD, attn_std))
        w.add_tensor(f"{p}.ffn_down.weight", mat(N_EMBD, N_FF, 1.0 / np.sqrt(N_FF)))

    tmp = out.with_name(out.name + ".tmp")
    # Write to a temporary file, then rename: a concurrent reader never sees a half-written model.
    w.write_header_to_file(path=tmp)
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="where to write the .gguf file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    parser.add_argument("--corpus", type=Path, default=None, help="Markdown files to train the tokenizer on")
    args = parser.parse_args()
    corpus = args.corpus or default_corpus()
    if not corpus.is_dir():
        sys.exit(f"tiny_gguf.py: corpus directory {corpus} does not exist; pass --corpus or set CATENA_SHARED_DIR")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_model(args.output, args.seed, corpus)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes, seed {args.seed})")


if __name__ == "__main__":
    main()
