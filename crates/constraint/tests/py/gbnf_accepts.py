#!/usr/bin/env python3
"""llama.cpp's own GBNF grammar engine, driven through llama-cpp-python's low-level C API, for catena's
differential test of its GBNF -> Lark conversion (crates/core/tests/gbnf_lark.rs).

One JSON request on stdin, one JSON answer on stdout:

  {"mode": "grammars"}
      -> {"grammars": {"name": "gbnf text", ...}}
      The grammars llama-cpp-python ships (`llama_cpp.llama_grammar.*_GBNF`) and grammars its JSON-Schema
      converter (`json_schema_to_gbnf`, a port of llama.cpp's) writes for a few schemas.

  {"mode": "accepts", "model": "tiny.gguf", "cases": [{"grammar": "...", "strings": ["...", ...]}, ...]}
      -> {"results": [[true, false, null, ...], ...]}   whether each string is a complete sentence of its grammar
      (null: llama.cpp rejected a token that ends inside a character, see `accepts`)

  {"mode": "sample", "model": "tiny.gguf", "seed": 1, "cases": [{"grammar": "...", "count": 5}, ...]}
      -> {"samples": [["...", ...], ...]}   random sentences generated under each grammar by llama.cpp

How a string is checked: the model is loaded vocabulary-only and the string is tokenized with its byte-level BPE
tokenizer (no BOS, special-token text treated as text). The grammar sampler llama.cpp's servers use
(`llama_sampler_init_grammar`) is driven token by token: before each token `llama_sampler_apply` runs on a
candidate list holding just that token; if the grammar masks it (logit -inf) the string is rejected, otherwise
`llama_sampler_accept` advances the grammar. After the last token the same test is made with the end-of-generation
token, which llama.cpp allows exactly when the grammar can end there.

How a sentence is sampled: at each step the grammar is applied to every ordinary token of the vocabulary; one of
the allowed tokens is picked at random (half of the time among single-character punctuation tokens, so that
strings and brackets get closed), and generation stops at random once the end-of-generation token is allowed.

Errors (a grammar llama.cpp refuses, a model that does not load) go to stderr with exit status 1.
Needs llama-cpp-python (`import llama_cpp`).
"""

from __future__ import annotations

import ctypes
import json
import random
import re
import sys

import llama_cpp as L
import llama_cpp.llama_grammar as G

SCHEMAS = {
    "schema_person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "age": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"enum": ["a", "b-c", "ü"]}, "minItems": 1, "maxItems": 3},
        },
        "required": ["name"],
    },
    "schema_pattern": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{2,4}(x|yz)?$"},
    "schema_numbers": {"type": "array", "items": {"type": "number"}, "maxItems": 4},
    "schema_union": {"anyOf": [{"type": "boolean"}, {"const": "n/a"}, {"type": "null"}]},
}


def fail(message: str) -> None:
    print(f"gbnf_accepts.py: {message}", file=sys.stderr)
    sys.exit(1)


@L.llama_log_callback
def _quiet(level, text, user_data):  # llama.cpp's loader logs are noise here
    return None


def load_vocab(path: str):
    L.llama_log_set(_quiet, ctypes.c_void_p())
    L.llama_backend_init()
    params = L.llama_model_default_params()
    params.vocab_only = True
    model = L.llama_model_load_from_file(path.encode(), params)
    if not model:
        fail(f"llama.cpp cannot load the model {path}")
    return model, L.llama_model_get_vocab(model)


def tokenize(vocab, text: bytes) -> list[int]:
    cap = len(text) + 16
    buf = (L.llama_token * cap)()
    n = L.llama_tokenize(vocab, text, len(text), buf, cap, False, False)
    if n < 0:
        fail(f"cannot tokenize {text!r}")
    return list(buf[:n])


def piece(vocab, token: int) -> bytes:
    buf = ctypes.create_string_buffer(256)
    n = L.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
    return buf.raw[: max(n, 0)]


def grammar_sampler(vocab, grammar: str):
    sampler = L.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not sampler:
        fail(f"llama.cpp rejected the grammar:\n{grammar}")
    return sampler


def allowed_of(sampler, tokens: list[int]) -> list[int]:
    data = (L.llama_token_data * len(tokens))()
    for i, t in enumerate(tokens):
        data[i].id = t
        data[i].logit = 0.0
        data[i].p = 0.0
    arr = L.llama_token_data_array(data=data, size=len(tokens), selected=-1, sorted=False)
    L.llama_sampler_apply(sampler, ctypes.byref(arr))
    return [data[i].id for i in range(arr.size) if data[i].logit != float("-inf")]


NEGATED_CLASS = re.compile(r"\[\^((?:\\.|[^\]\\])*)\]")


def excludes_non_ascii(grammar: str) -> bool:
    """Whether some `[^...]` in the grammar (roughly found) names a character outside ASCII."""
    for m in NEGATED_CLASS.finditer(grammar):
        inner = m.group(1)
        if any(ord(c) >= 0x80 for c in inner) or re.search(r"\\(x[89a-fA-F]|u|U)", inner):
            return True
    return False


def accepts(vocab, grammar: str, text: str) -> bool | None:
    """True or False, or None when llama.cpp's verdict depends on where the tokenizer split a character.

    llama.cpp checks a token that ends inside a multi-byte character against every character that could complete
    it, and for a negated class (`[^\u2028]`) it refuses the token as soon as one possible completion is
    excluded, even if the character the next token completes is allowed. Such a rejection says nothing about the
    grammar, so it is reported as None, when the grammar has a negated class excluding a non-ASCII character
    (only those can exclude a completion: partial characters are never ASCII).
    """
    raw = text.encode()
    tokens = tokenize(vocab, raw)
    if b"".join(piece(vocab, t) for t in tokens) != raw:
        fail(f"{text!r} does not round-trip through the tokenizer")
    sampler = grammar_sampler(vocab, grammar)
    done = b""
    try:
        for t in tokens:
            done += piece(vocab, t)
            if not allowed_of(sampler, [t]):
                try:
                    done.decode()
                except UnicodeDecodeError:
                    if excludes_non_ascii(grammar):
                        return None  # the token ends inside a character
                return False
            L.llama_sampler_accept(sampler, t)
        return bool(allowed_of(sampler, [L.llama_vocab_eos(vocab)]))
    finally:
        L.llama_sampler_free(sampler)


def sample_one(vocab, grammar: str, rng: random.Random, ordinary, punctuation, max_tokens=120):
    eos = L.llama_vocab_eos(vocab)
    sampler = grammar_sampler(vocab, grammar)
    out = b""
    try:
        for _ in range(max_tokens):
            allowed = allowed_of(sampler, ordinary + [eos])
            can_end = eos in allowed
            choices = [t for t in allowed if t != eos]
            if can_end and (not choices or rng.random() < 0.3):
                try:
                    return out.decode()
                except UnicodeDecodeError:
                    return None
            if not choices:
                return None
            short = [t for t in choices if t in punctuation]
            token = rng.choice(short if short and rng.random() < 0.5 else choices)
            L.llama_sampler_accept(sampler, token)
            out += piece(vocab, token)
        return None
    finally:
        L.llama_sampler_free(sampler)


def main() -> None:
    request = json.load(sys.stdin)
    mode = request["mode"]
    if mode == "grammars":
        grammars = {name.lower(): getattr(G, name) for name in dir(G) if name.endswith("_GBNF")}
        for name, schema in SCHEMAS.items():
            grammars[name] = G.json_schema_to_gbnf(json.dumps(schema))
        json.dump({"grammars": grammars}, sys.stdout)
        return
    _model, vocab = load_vocab(request["model"])
    if mode == "accepts":
        results = [[accepts(vocab, c["grammar"], s) for s in c["strings"]] for c in request["cases"]]
        json.dump({"results": results}, sys.stdout)
    elif mode == "sample":
        rng = random.Random(request["seed"])
        eos = L.llama_vocab_eos(vocab)
        pieces = {t: piece(vocab, t) for t in range(L.llama_vocab_n_tokens(vocab))}
        ordinary = [t for t, p in pieces.items() if p and t != eos and not L.llama_vocab_get_attr(vocab, t) & L.LLAMA_TOKEN_ATTR_CONTROL]
        punctuation = {t for t in ordinary if len(pieces[t]) == 1 and chr(pieces[t][0]) in "\"'[]{}(),.:;-+*/=\n"}
        samples = []
        for case in request["cases"]:
            found: list[str] = []
            for _ in range(case["count"] * 20):
                if len(found) == case["count"]:
                    break
                s = sample_one(vocab, case["grammar"], rng, ordinary, punctuation)
                if s is not None:
                    found.append(s)
            samples.append(found)
        json.dump({"samples": samples}, sys.stdout)
    else:
        fail(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
