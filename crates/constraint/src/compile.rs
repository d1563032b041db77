//! Compiling [`Constraint`]s to token masks with llguidance (feature `constrain`).

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::earley::SlicedBiasComputer;
use llguidance::{JsonCompileOptions, Matcher, ParserFactory};
use serde_json::Value;
use tiktoken_rs::CoreBPE;
use toktrie::{InferenceCapabilities, SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};

use crate::TokenId;

use catena_core::{Constraint, Error, Result};

/// How JSON produced under a [`Constraint::JsonSchema`] may be laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JsonWhitespace {
    /// Any JSON whitespace between tokens (`{ "a" : 1 }` and `{"a":1}` are both allowed). This lets the model
    /// write JSON the way it was trained to, and is what the published MaskBench results use.
    #[default]
    Flexible,
    /// No whitespace at all (`{"a":1}`), with `,` and `:` as separators; fewer tokens, less natural for models.
    Compact,
}

/// `constraint` as llguidance's grammar description, laying out JSON as `whitespace` says.
///
/// This only checks the shape of the constraint (an empty choice list, a `false` or non-object schema); the
/// grammar itself is checked by [`ConstraintCompiler::compile`].
fn to_grammar(constraint: &Constraint, whitespace: JsonWhitespace) -> Result<TopLevelGrammar> {
    {
        match constraint {
            Constraint::JsonSchema(schema) => {
                let mut schema = match schema {
                    Value::Bool(true) => Value::Object(serde_json::Map::new()),
                    Value::Bool(false) => {
                        return Err(Error::InvalidInput(
                            "JSON Schema `false` accepts no value, so nothing can be generated under it".into(),
                        ))
                    }
                    Value::Object(_) => schema.clone(),
                    other => {
                        return Err(Error::InvalidInput(format!(
                            "a JSON Schema must be an object or a boolean, got {}",
                            catena_core::error::json_type_name(other)
                        )))
                    }
                };
                let options = JsonCompileOptions {
                    whitespace_flexible: whitespace == JsonWhitespace::Flexible,
                    ..JsonCompileOptions::default()
                };
                if let Value::Object(map) = &mut schema {
                    // A schema may carry its own `x-guidance` options; those win.
                    if !map.contains_key("x-guidance") {
                        map.insert("x-guidance".into(), serde_json::to_value(&options)?);
                    }
                }
                Ok(TopLevelGrammar::from_json_schema(schema))
            }
            Constraint::JsonObject => {
                to_grammar(&Constraint::JsonSchema(crate::validate::any_object_schema()), whitespace)
            }
            Constraint::Regex(rx) => Ok(TopLevelGrammar::from_regex(rx)),
            Constraint::Choice(options) => {
                if options.is_empty() {
                    return Err(Error::InvalidInput(
                        "Constraint::Choice needs at least one option; an empty choice allows no output".into(),
                    ));
                }
                let alternatives: Vec<String> = options.iter().map(|o| regex::escape(o)).collect();
                Ok(TopLevelGrammar::from_regex(&format!("(?:{})", alternatives.join("|"))))
            }
            Constraint::Grammar(lark) => {
                if lark.trim().is_empty() {
                    return Err(Error::InvalidInput(
                        "Constraint::Grammar is empty; give a Lark grammar with a `start` rule".into(),
                    ));
                }
                Ok(TopLevelGrammar::from_lark(lark.clone()))
            }
            Constraint::Gbnf(src) => Ok(TopLevelGrammar::from_lark(crate::gbnf::to_lark(src)?)),
        }
    }
}

/// Compiles [`Constraint`]s for one tokenizer.
///
/// Building one walks the whole vocabulary (tens to hundreds of milliseconds for a 200k vocabulary), so build it
/// once per tokenizer and clone it: clones share the state. [`ConstraintCompiler::o200k`] and
/// [`ConstraintCompiler::cl100k`] are built once per process.
#[derive(Clone)]
pub struct ConstraintCompiler {
    factory: Arc<ParserFactory>,
    whitespace: JsonWhitespace,
}

impl std::fmt::Debug for ConstraintCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintCompiler")
            .field("vocab_size", &self.factory.tok_env().tok_trie().vocab_size())
            .field("whitespace", &self.whitespace)
            .finish()
    }
}

static O200K: OnceLock<std::result::Result<ConstraintCompiler, String>> = OnceLock::new();
static CL100K: OnceLock<std::result::Result<ConstraintCompiler, String>> = OnceLock::new();

impl ConstraintCompiler {
    /// For OpenAI's `o200k_base` vocabulary (GPT-4o, GPT-4.1, o-series), from the ranks bundled in `tiktoken-rs`.
    pub fn o200k() -> Result<Self> {
        O200K
            .get_or_init(|| {
                Self::from_tok_env(tiktoken_env(tiktoken_rs::o200k_base_singleton(), "o200k_base")?)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(Error::InvalidInput)
    }

    /// For OpenAI's `cl100k_base` vocabulary (GPT-4, GPT-3.5), from the ranks bundled in `tiktoken-rs`.
    pub fn cl100k() -> Result<Self> {
        CL100K
            .get_or_init(|| {
                Self::from_tok_env(tiktoken_env(tiktoken_rs::cl100k_base_singleton(), "cl100k_base")?)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(Error::InvalidInput)
    }

    /// For any tokenizer: `tokens[id]` is token `id` (its bytes, or a special token's name), `eos` ends a
    /// sequence, and `tokenizer` turns text into token ids (a local model's own tokenizer). Walks the whole
    /// vocabulary once (tens to hundreds of milliseconds); clone the result to share it.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty vocabulary, or an end-of-sequence id outside it.
    pub fn from_vocabulary(tokens: Vec<VocabToken>, eos: TokenId, tokenizer: Arc<dyn Tokenize>) -> Result<Self> {
        Self::from_tok_env(vocabulary_env(tokens, eos, tokenizer)?)
    }

    fn from_tok_env(tok_env: TokEnv) -> Result<Self> {
        let mut factory =
            ParserFactory::new(&tok_env, InferenceCapabilities::default(), &SlicedBiasComputer::json_slices())
                .map_err(|e| {
                    Error::InvalidInput(format!("cannot build the token-mask tables for this tokenizer: {e}"))
                })?;
        factory.quiet();
        Ok(ConstraintCompiler { factory: Arc::new(factory), whitespace: JsonWhitespace::Flexible })
    }

    /// Uses `whitespace` for JSON Schema constraints compiled from now on (default: [`JsonWhitespace::Flexible`]).
    pub fn with_json_whitespace(mut self, whitespace: JsonWhitespace) -> Self {
        self.whitespace = whitespace;
        self
    }

    fn tok_env(&self) -> &TokEnv {
        self.factory.tok_env()
    }

    /// Whether the tokenizer is canonical (tokenizing text gives the same ids whatever text precedes it, as
    /// byte-level BPE does): forcing tokens and token healing are only exact then.
    pub fn tokenize_is_canonical(&self) -> bool {
        self.tok_env().tokenize_is_canonical()
    }

    /// The end-of-sequence token id.
    pub fn eos_token(&self) -> TokenId {
        self.tok_env().tok_trie().eos_token()
    }

    /// The number of token ids (the length of every [`AllowedTokens`]).
    pub fn vocab_size(&self) -> usize {
        self.tok_env().tok_trie().vocab_size()
    }

    /// Tokenizes `text` with this compiler's tokenizer (special-token text is treated as ordinary text).
    pub fn tokenize(&self, text: &str) -> Vec<TokenId> {
        self.tok_env().tokenize(text)
    }

    /// The bytes of `tokens` concatenated (special tokens come out as `\xff` followed by their name).
    pub fn decode(&self, tokens: &[TokenId]) -> Vec<u8> {
        self.tok_env().tok_trie().decode(tokens)
    }

    /// Compiles `constraint` into a matcher positioned at the start of the output.
    ///
    /// Fails with [`Error::InvalidInput`] carrying llguidance's explanation when the regex, grammar or schema is
    /// invalid or uses something llguidance cannot enforce (for example an unknown JSON Schema keyword).
    pub fn compile(&self, constraint: &Constraint) -> Result<ConstraintMatcher> {
        let _span =
            tracing::debug_span!("catena.constraint.compile", catena.constraint.kind = constraint.kind()).entered();
        let parser = self.parser(constraint)?;
        self.matcher(constraint, parser)
    }

    /// Compiles `constraint` for a generation that continues `prompt`, with token healing: the prompt's last
    /// tokens, which a tokenizer would merge differently with the text that follows (a trailing space, half a
    /// word), are removed and the constraint is extended to regenerate their bytes first; text the constraint
    /// forces at its start is moved into the prompt. Returns the matcher and the prompt to decode.
    ///
    /// `prompt` should hold the text tokens right before the output (no BOS or other special tokens: they are
    /// never healed, so pass only the tokens after the last special one). Bytes of the returned prompt plus
    /// the generated output always equal the bytes of `prompt` plus the constrained output.
    ///
    /// # Errors
    /// As [`ConstraintCompiler::compile`]; [`Error::Unsupported`] when this compiler's tokenizer is not
    /// canonical (its tokenization depends on context llguidance cannot see), where healing is impossible.
    pub fn compile_for_prompt(
        &self,
        constraint: &Constraint,
        prompt: Vec<TokenId>,
    ) -> Result<(ConstraintMatcher, Vec<TokenId>)> {
        let _span = tracing::debug_span!(
            "catena.constraint.compile",
            catena.constraint.kind = constraint.kind(),
            catena.constraint.healing = true
        )
        .entered();
        if !self.tok_env().tokenize_is_canonical() {
            return Err(Error::unsupported(
                "llguidance",
                "token healing",
                "this tokenizer is not canonical; compile without a prompt (ConstraintCompiler::compile)",
            ));
        }
        if let Some(t) = prompt.iter().find(|&&t| t as usize >= self.vocab_size()) {
            return Err(Error::InvalidInput(format!(
                "prompt token id {t} is outside the vocabulary of {} tokens",
                self.vocab_size()
            )));
        }
        let mut parser = self.parser(constraint)?;
        let healed = std::panic::catch_unwind(AssertUnwindSafe(|| parser.process_prompt(prompt))).map_err(|panic| {
            Error::InvalidInput(format!(
                "{} constraint: llguidance failed while healing the prompt ({})",
                constraint.kind(),
                panic_text(&panic)
            ))
        })?;
        Ok((self.matcher(constraint, parser)?, healed))
    }

    fn parser(&self, constraint: &Constraint) -> Result<llguidance::TokenParser> {
        let grammar = to_grammar(constraint, self.whitespace)?;
        let factory = &self.factory;
        std::panic::catch_unwind(AssertUnwindSafe(|| factory.create_parser(grammar)))
            .map_err(|panic| {
                Error::InvalidInput(format!(
                    "{} constraint: llguidance failed while compiling it ({}); simplify the constraint",
                    constraint.kind(),
                    panic_text(&panic)
                ))
            })?
            .map_err(|e| Error::InvalidInput(format!("{} constraint rejected: {e}", constraint.kind())))
    }

    fn matcher(&self, constraint: &Constraint, parser: llguidance::TokenParser) -> Result<ConstraintMatcher> {
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::InvalidInput(format!("{} constraint rejected: {e}", constraint.kind())));
        }
        Ok(ConstraintMatcher { matcher, kind: constraint.kind(), vocab_size: self.vocab_size() })
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// One token of a vocabulary, for [`ConstraintCompiler::from_vocabulary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VocabToken {
    /// A token that stands for these bytes of text.
    Text(Vec<u8>),
    /// A special (control) token with this name (`<|im_end|>`); an empty name stands for `<[id]>`. Grammars can
    /// only name it, text never produces it.
    Special(String),
}

/// The vocabulary and its tokenizer as llguidance's tokenizer environment.
fn vocabulary_env(tokens: Vec<VocabToken>, eos: TokenId, tokenizer: Arc<dyn Tokenize>) -> Result<TokEnv> {
    let size = u32::try_from(tokens.len())
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| Error::InvalidInput(format!("a vocabulary needs 1 to 2^32-1 tokens, not {}", tokens.len())))?;
    if eos >= size {
        return Err(Error::InvalidInput(format!(
            "the end-of-sequence id {eos} is outside the vocabulary of {size} tokens"
        )));
    }
    let words: Vec<Vec<u8>> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, token)| match token {
            VocabToken::Text(bytes) if !bytes.is_empty() => bytes,
            VocabToken::Text(_) => special_word(&format!("<[{id}]>")),
            VocabToken::Special(name) if name.is_empty() => special_word(&format!("<[{id}]>")),
            VocabToken::Special(name) => special_word(&name),
        })
        .collect();
    let trie = TokTrie::from(&TokRxInfo::new(size, eos), &words);
    // Canonical when text tokenizes the same way on its own as the trie reads it back.
    let canonical = ["hello", " world", "{\"key\": [1, 2]}", "a\nb"].iter().all(|sample| {
        let tokens = tokenizer.tokenize(sample.as_bytes());
        trie.decode(&tokens) == sample.as_bytes()
    });
    Ok(Arc::new(VocabEnv { trie, tokenizer, canonical }))
}

/// toktrie's spelling of a special token: its marker byte, then the name.
fn special_word(name: &str) -> Vec<u8> {
    let mut word = vec![TokTrie::SPECIAL_TOKEN_MARKER];
    word.extend_from_slice(name.as_bytes());
    word
}

/// Text to token ids with a model's own tokenizer, for [`ConstraintCompiler::from_vocabulary`].
pub trait Tokenize: Send + Sync {
    /// The token ids of `text` (no special tokens parsed, no beginning-of-sequence added).
    fn tokenize(&self, text: &[u8]) -> Vec<TokenId>;
}

/// A vocabulary and its tokenizer as llguidance sees them.
struct VocabEnv {
    trie: TokTrie,
    tokenizer: Arc<dyn Tokenize>,
    canonical: bool,
}

impl TokenizerEnv for VocabEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |text| self.tokenizer.tokenize(text.as_bytes()))
    }

    fn tokenize_is_canonical(&self) -> bool {
        self.canonical
    }
}

struct Tiktoken(&'static CoreBPE);

impl Tokenize for Tiktoken {
    fn tokenize(&self, text: &[u8]) -> Vec<TokenId> {
        self.0.encode_ordinary(&String::from_utf8_lossy(text))
    }
}

/// A tiktoken vocabulary: every rank's bytes from `decode_bytes`, special tokens by name, holes in the rank
/// space as unreachable placeholders.
fn tiktoken_env(bpe: &'static CoreBPE, name: &str) -> std::result::Result<TokEnv, String> {
    let mut specials: Vec<(String, u32)> = Vec::new();
    for text in bpe.special_tokens() {
        match bpe.encode_with_special_tokens(text).as_slice() {
            [id] => specials.push((text.to_string(), *id)),
            other => return Err(format!("{name}: special token {text} encodes to {other:?}, expected one id")),
        }
    }
    let max_special = specials.iter().map(|(_, id)| *id).max().unwrap_or(0);
    let eos = specials
        .iter()
        .find(|(t, _)| t == "<|endoftext|>")
        .map(|(_, id)| *id)
        .ok_or_else(|| format!("{name}: no <|endoftext|> special token"))?;
    let mut tokens: Vec<Option<VocabToken>> = vec![None; max_special as usize + 1];
    for (text, id) in specials {
        tokens[id as usize] = Some(VocabToken::Special(text));
    }
    let tokens = tokens
        .into_iter()
        .enumerate()
        .map(|(id, token)| match token {
            Some(token) => token,
            None => match bpe.decode_bytes(&[id as u32]) {
                Ok(bytes) if !bytes.is_empty() => VocabToken::Text(bytes),
                _ => VocabToken::Special(String::new()),
            },
        })
        .collect();
    vocabulary_env(tokens, eos, Arc::new(Tiktoken(bpe))).map_err(|e| e.to_string())
}

/// The set of token ids allowed at one step: a bitmask over the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedTokens(SimpleVob);

impl AllowedTokens {
    /// Whether `token` is allowed (ids outside the vocabulary never are).
    pub fn is_allowed(&self, token: TokenId) -> bool {
        (token as usize) < self.0.len() && self.0.is_allowed(token)
    }

    /// How many tokens are allowed.
    pub fn num_allowed(&self) -> usize {
        self.0.num_set()
    }

    /// The vocabulary size the mask covers.
    pub fn vocab_size(&self) -> usize {
        self.0.len()
    }

    /// The mask as little-endian 32-bit words: bit `i % 32` of word `i / 32` is token `i` (the layout
    /// inference engines take for logit biasing).
    pub fn as_words(&self) -> &[u32] {
        self.0.as_slice()
    }

    /// The allowed token ids, ascending.
    pub fn allowed(&self) -> Vec<TokenId> {
        self.0.to_list()
    }

    /// Sets the logits of disallowed tokens to negative infinity.
    pub fn apply_to_logits(&self, logits: &mut [f32]) {
        for (i, logit) in logits.iter_mut().enumerate() {
            if !self.is_allowed(i as TokenId) {
                *logit = f32::NEG_INFINITY;
            }
        }
    }
}

/// Follows one generation under a compiled [`Constraint`].
///
/// Cheap to [`Clone`] (clones share lexer caches and go on independently), so one compiled constraint can serve
/// many generations.
#[derive(Clone)]
pub struct ConstraintMatcher {
    matcher: Matcher,
    kind: &'static str,
    vocab_size: usize,
}

impl std::fmt::Debug for ConstraintMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintMatcher")
            .field("kind", &self.kind)
            .field("stopped", &self.matcher.is_stopped())
            .field("error", &self.matcher.get_error())
            .finish()
    }
}

impl ConstraintMatcher {
    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::InvalidInput(format!("{} constraint: {e}", self.kind))
    }

    /// The tokens allowed next. Fails if the matcher is in an error state (after a rejected token) or the
    /// grammar cannot continue (check [`ConstraintMatcher::is_stopped`] first).
    pub fn compute_mask(&mut self) -> Result<AllowedTokens> {
        self.matcher.compute_mask().map(AllowedTokens).map_err(|e| self.err(e))
    }

    /// Advances past `tokens`. A token the constraint does not allow puts the matcher in an error state and
    /// returns [`Error::InvalidInput`]; use [`ConstraintMatcher::try_consume_tokens`] to probe instead.
    pub fn consume_tokens(&mut self, tokens: &[TokenId]) -> Result<()> {
        self.check_range(tokens)?;
        self.matcher.consume_tokens(tokens).map_err(|e| self.err(e))
    }

    /// Advances past the longest allowed prefix of `tokens` and returns its length; the matcher stays usable.
    pub fn try_consume_tokens(&mut self, tokens: &[TokenId]) -> Result<usize> {
        self.check_range(tokens)?;
        self.matcher.try_consume_tokens(tokens).map_err(|e| self.err(e))
    }

    fn check_range(&self, tokens: &[TokenId]) -> Result<()> {
        match tokens.iter().find(|&&t| t as usize >= self.vocab_size) {
            Some(t) => Err(self.err(format!("token id {t} is outside the vocabulary of {} tokens", self.vocab_size))),
            None => Ok(()),
        }
    }

    /// Whether the output so far is complete (end-of-sequence would be allowed now).
    pub fn is_accepting(&mut self) -> Result<bool> {
        self.matcher.is_accepting().map_err(|e| self.err(e))
    }

    /// Whether generation must stop: the grammar allows no further token, or the matcher is in an error state.
    pub fn is_stopped(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// An independent copy that also copies the lexer caches (a plain [`Clone`] shares them). Costs more than
    /// `clone` but later mask computations of the copy are not sped up by work done for the original.
    pub fn deep_clone(&self) -> Self {
        ConstraintMatcher { matcher: self.matcher.deep_clone(), kind: self.kind, vocab_size: self.vocab_size }
    }

    /// The error that stopped the matcher, if any.
    pub fn error(&self) -> Option<String> {
        self.matcher.get_error()
    }

    /// Undoes the last `num_tokens` consumed tokens (for speculative decoding).
    pub fn rollback(&mut self, num_tokens: usize) -> Result<()> {
        self.matcher.rollback(num_tokens).map_err(|e| self.err(e))
    }

    /// Tokens the grammar forces next (for example the rest of a fixed key), tokenized canonically; empty when
    /// nothing is forced or the matcher is in an error state. They are not consumed.
    pub fn compute_ff_tokens(&mut self) -> Vec<TokenId> {
        self.matcher.compute_ff_tokens()
    }

    /// Bytes the grammar forces next; empty when nothing is forced or the matcher is in an error state.
    pub fn compute_ff_bytes(&mut self) -> Vec<u8> {
        self.matcher.compute_ff_bytes()
    }

    /// What each `[capture]` rule of a Lark grammar matched so far, in the order the captures completed (a rule
    /// captured twice appears twice). Bytes that are not UTF-8 are replaced with U+FFFD.
    pub fn captures(&self) -> Vec<(String, String)> {
        self.matcher
            .captures()
            .iter()
            .map(|(name, bytes)| (name.clone(), String::from_utf8_lossy(bytes).into_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o200k() -> ConstraintCompiler {
        ConstraintCompiler::o200k().expect("o200k compiler")
    }

    /// Feeds `text` token by token; returns whether every token was allowed and the end state was accepting.
    fn accepts(compiler: &ConstraintCompiler, constraint: &Constraint, text: &str) -> bool {
        let mut m = compiler.compile(constraint).expect("compiles");
        for t in compiler.tokenize(text) {
            if !m.compute_mask().expect("mask").is_allowed(t) {
                return false;
            }
            m.consume_tokens(&[t]).expect("consume allowed token");
        }
        m.is_accepting().expect("accepting")
    }

    #[test]
    fn o200k_tokenizes_like_tiktoken() {
        let c = o200k();
        let text = "{\"name\": \"Ada Lovelace\", \"born\": 1815} — ünïcödé ✓";
        let expected: Vec<u32> = tiktoken_rs::o200k_base_singleton().encode_ordinary(text);
        assert_eq!(c.tokenize(text), expected);
        assert_eq!(String::from_utf8(c.decode(&expected)).unwrap(), text);
        assert_eq!(c.vocab_size(), 200019);
        let cl = ConstraintCompiler::cl100k().unwrap();
        assert_eq!(cl.tokenize(text), tiktoken_rs::cl100k_base_singleton().encode_ordinary(text));
    }

    #[test]
    fn regex_three_digits_allows_only_digits_and_accepts_after_three() {
        let c = o200k();
        let mut m = c.compile(&Constraint::Regex("[0-9]{3}".into())).unwrap();
        let mask = m.compute_mask().unwrap();
        assert!(mask.num_allowed() > 0);
        for t in mask.allowed() {
            let bytes = c.decode(&[t]);
            assert!(!bytes.is_empty() && bytes.len() <= 3, "token {t} {bytes:?}");
            assert!(bytes.iter().all(u8::is_ascii_digit), "non-digit token {t} {bytes:?} allowed");
        }
        let letter = c.tokenize("a")[0];
        assert!(!mask.is_allowed(letter));
        assert!(!m.is_accepting().unwrap());
        // Feed one digit at a time.
        for (i, d) in ["1", "2", "3"].iter().enumerate() {
            let t = c.tokenize(d);
            assert_eq!(t.len(), 1);
            assert!(m.compute_mask().unwrap().is_allowed(t[0]));
            m.consume_tokens(&t).unwrap();
            assert_eq!(m.is_accepting().unwrap(), i == 2);
        }
        assert!(m.is_stopped(), "nothing can follow three digits");
        assert!(accepts(&c, &Constraint::Regex("[0-9]{3}".into()), "042"));
        assert!(!accepts(&c, &Constraint::Regex("[0-9]{3}".into()), "04a"));
        assert!(!accepts(&c, &Constraint::Regex("[0-9]{3}".into()), "04"));
    }

    #[test]
    fn rejected_token_is_an_error_and_try_consume_probes() {
        let c = o200k();
        let mut m = c.compile(&Constraint::Regex("[0-9]{3}".into())).unwrap();
        let toks = c.tokenize("12x");
        assert_eq!(m.try_consume_tokens(&toks).unwrap(), toks.len() - 1);
        let err = m.consume_tokens(&c.tokenize("x")).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        assert!(m.is_stopped());
        assert!(m.error().is_some());
        assert!(m.consume_tokens(&[u32::MAX]).is_err());
    }

    #[test]
    fn choice_allows_exactly_the_options() {
        let c = o200k();
        let choice = Constraint::Choice(vec!["red".into(), "green".into(), "a.b (c)".into()]);
        assert!(accepts(&c, &choice, "red"));
        assert!(accepts(&c, &choice, "green"));
        assert!(accepts(&c, &choice, "a.b (c)"), "regex metacharacters are literal");
        assert!(!accepts(&c, &choice, "blue"));
        assert!(!accepts(&c, &choice, "re"));
        assert!(!accepts(&c, &choice, "axb (c)"));
        let err = c.compile(&Constraint::Choice(vec![])).unwrap_err();
        assert!(err.to_string().contains("at least one option"), "{err}");
    }

    #[derive(schemars::JsonSchema, serde::Serialize)]
    #[allow(dead_code)]
    struct Person {
        name: String,
        age: u8,
        email: Option<String>,
    }

    #[test]
    fn json_schema_for_derived_struct() {
        let c = o200k();
        let constraint = Constraint::json_schema_for::<Person>();
        let ok = serde_json::to_string(&Person { name: "Ada".into(), age: 36, email: None }).unwrap();
        assert!(accepts(&c, &constraint, &ok), "{ok}");
        assert!(accepts(&c, &constraint, r#"{ "name" : "Ada", "age": 36 }"#), "flexible whitespace");
        assert!(!accepts(&c, &constraint, r#"{"name":"Ada"}"#), "missing required age");
        assert!(!accepts(&c, &constraint, r#"{"name":"Ada","age":"36"}"#), "age must be an integer");
        assert!(!accepts(&c, &constraint, r#"{"name":"Ada","age":300}"#), "u8 maximum is enforced");
        let compact = c.clone().with_json_whitespace(JsonWhitespace::Compact);
        assert!(!accepts(&compact, &constraint, r#"{ "name": "Ada", "age": 36}"#));
        assert!(accepts(&compact, &constraint, r#"{"name":"Ada","age":36}"#));
    }

    #[test]
    fn forced_tokens_and_rollback() {
        let c = o200k();
        let mut m = c.compile(&Constraint::Grammar("start: \"hello world\" /[0-9]+/".into())).unwrap();
        let ff = m.compute_ff_tokens();
        assert_eq!(String::from_utf8(c.decode(&ff)).unwrap(), "hello world");
        m.consume_tokens(&ff).unwrap();
        let before = m.compute_mask().unwrap();
        m.consume_tokens(&c.tokenize("42")).unwrap();
        assert!(m.is_accepting().unwrap());
        m.rollback(c.tokenize("42").len()).unwrap();
        assert_eq!(m.compute_mask().unwrap(), before);
        assert!(!m.is_accepting().unwrap());
    }

    #[test]
    fn invalid_regex_grammar_and_schema_are_rejected_with_the_reason() {
        let c = o200k();
        let err = c.compile(&Constraint::Regex("[0-9".into())).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
        let msg = err.to_string();
        assert!(msg.contains("regex constraint rejected"), "{msg}");
        assert!(msg.to_lowercase().contains("unclosed") || msg.contains("class"), "{msg}");

        let err = c.compile(&Constraint::Grammar("start: foo\n".into())).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("grammar constraint rejected") && msg.contains("foo"), "{msg}");

        let err = c.compile(&Constraint::Grammar("start: \"a\" (".into())).unwrap_err();
        assert!(err.to_string().contains("grammar constraint rejected"), "{err}");

        let err =
            c.compile(&Constraint::JsonSchema(serde_json::json!({"type": "array", "uniqueItems": true}))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("json_schema constraint rejected") && msg.contains("uniqueItems"), "{msg}");
        // Unknown keywords are annotations under JSON Schema rules, so they are ignored, not rejected.
        assert!(c.compile(&Constraint::JsonSchema(serde_json::json!({"type": "string", "x-ui": 1}))).is_ok());

        let err = c.compile(&Constraint::JsonSchema(serde_json::json!({"type": "strnig"}))).unwrap_err();
        assert!(err.to_string().contains("strnig"), "{err}");

        let err = c.compile(&Constraint::JsonSchema(Value::Bool(false))).unwrap_err();
        assert!(err.to_string().contains("`false`"), "{err}");
        let err = c.compile(&Constraint::JsonSchema(serde_json::json!([1]))).unwrap_err();
        assert!(err.to_string().contains("an array"), "{err}");
        assert!(c.compile(&Constraint::JsonSchema(Value::Bool(true))).is_ok());
    }

    /// A byte-level tokenizer over a small vocabulary: the longest token that matches, byte by byte.
    struct Greedy(Vec<Vec<u8>>);

    impl Tokenize for Greedy {
        fn tokenize(&self, mut text: &[u8]) -> Vec<TokenId> {
            let mut out = Vec::new();
            while !text.is_empty() {
                let (id, len) = (self.0.iter().enumerate())
                    .filter(|(_, t)| !t.is_empty() && text.starts_with(t))
                    .map(|(id, t)| (id as TokenId, t.len()))
                    .max_by_key(|&(_, len)| len)
                    .expect("every byte is a token");
                out.push(id);
                text = &text[len..];
            }
            out
        }
    }

    /// Every printable ASCII byte and newline as a token, then `ab`, then the special end-of-sequence token.
    fn small_vocabulary() -> (Vec<VocabToken>, Arc<Greedy>, TokenId) {
        let mut words: Vec<Vec<u8>> = (b' '..=b'~').map(|b| vec![b]).collect();
        words.push(b"\n".to_vec());
        words.push(b"ab".to_vec());
        let mut tokens: Vec<VocabToken> = words.iter().cloned().map(VocabToken::Text).collect();
        tokens.push(VocabToken::Special("<eos>".into()));
        let eos = (tokens.len() - 1) as TokenId;
        words.push(Vec::new());
        (tokens, Arc::new(Greedy(words)), eos)
    }

    #[test]
    fn a_custom_vocabulary_builds_masks_over_its_own_ids() {
        let (tokens, tokenizer, eos) = small_vocabulary();
        assert_eq!(tokens.len(), 98);
        let c = ConstraintCompiler::from_vocabulary(tokens, eos, tokenizer).unwrap();
        assert_eq!(c.vocab_size(), 98);
        assert_eq!(c.eos_token(), eos);
        assert!(c.tokenize_is_canonical());
        let ab = 96;
        assert_eq!(c.tokenize("abc"), vec![ab, u32::from(b'c' - b' ')]);

        let constraint = Constraint::Regex("[ab]+".into());
        let mut m = c.compile(&constraint).unwrap();
        let mask = m.compute_mask().unwrap();
        let allowed: Vec<Vec<u8>> = mask.allowed().into_iter().map(|t| c.decode(&[t])).collect();
        assert_eq!(allowed, vec![b"a".to_vec(), b"b".to_vec(), b"ab".to_vec()]);
        assert!(!mask.is_allowed(eos), "nothing is matched yet, so the answer cannot end");
        m.consume_tokens(&[ab]).unwrap();
        assert!(m.compute_mask().unwrap().is_allowed(eos), "`ab` matches, so it may end");
        assert!(accepts(&c, &constraint, "abba"));
        assert!(!accepts(&c, &constraint, "abc"));
    }

    #[test]
    fn a_tokenizer_that_depends_on_context_is_not_canonical() {
        /// Prefixes a space, as SentencePiece tokenizers do.
        struct PrefixSpace(Arc<Greedy>);
        impl Tokenize for PrefixSpace {
            fn tokenize(&self, text: &[u8]) -> Vec<TokenId> {
                self.0.tokenize(&[b" ", text].concat())
            }
        }
        let (tokens, tokenizer, eos) = small_vocabulary();
        let c = ConstraintCompiler::from_vocabulary(tokens, eos, Arc::new(PrefixSpace(tokenizer))).unwrap();
        assert!(!c.tokenize_is_canonical());
    }

    #[test]
    fn a_vocabulary_without_tokens_or_with_a_foreign_eos_is_rejected() {
        let (_, tokenizer, _) = small_vocabulary();
        let Err(err) = ConstraintCompiler::from_vocabulary(vec![], 0, tokenizer.clone()) else {
            panic!("an empty vocabulary was accepted")
        };
        assert!(err.to_string().contains("not 0"), "{err}");
        let tokens = vec![VocabToken::Text(b"a".to_vec()), VocabToken::Special(String::new())];
        let Err(err) = ConstraintCompiler::from_vocabulary(tokens, 2, tokenizer) else {
            panic!("an end-of-sequence id outside the vocabulary was accepted")
        };
        assert!(err.to_string().contains("end-of-sequence id 2 is outside the vocabulary of 2 tokens"), "{err}");
    }
}
