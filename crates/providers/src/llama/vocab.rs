//! The model's vocabulary and the token-level hook for constrained generation.

use catena_core::Result;

/// A token id of the loaded model's vocabulary (`0..Vocabulary::len()`).
pub use catena_constraint::TokenId;

/// What kind of token a vocabulary entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An ordinary text token; its bytes are what it stands for.
    Normal,
    /// A control token such as `<|im_start|>` or `<|endoftext|>`: its bytes are its name, it never appears in
    /// generated text.
    Control,
    /// A token the tokenizer adds for user-defined strings (added tokens that are not control tokens).
    UserDefined,
    /// Any other kind (unknown, unused, byte tokens of SentencePiece models, ...).
    Other,
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VocabEntry {
    /// The bytes the token stands for. For control tokens: the bytes of its name (for example `<|im_end|>`).
    pub bytes: Vec<u8>,
    /// The token's kind.
    pub kind: TokenKind,
    /// Whether generating this token ends generation (end of sequence / end of turn).
    pub end_of_generation: bool,
}

/// The loaded model's vocabulary: token id → bytes, kind and whether it ends generation.
///
/// This is what a token trie (for example llguidance's `toktrie`) is built from: every id in
/// `0..len()` maps to the bytes the tokenizer produces for it.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    pub(crate) entries: Vec<VocabEntry>,
    pub(crate) eos: Option<TokenId>,
}

impl Vocabulary {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the vocabulary is empty (never true for a loaded model).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of `id`, or `None` when `id` is out of range.
    pub fn get(&self, id: TokenId) -> Option<&VocabEntry> {
        self.entries.get(id as usize)
    }

    /// The bytes of `id` (see [`VocabEntry::bytes`]), or `None` when `id` is out of range.
    pub fn token_bytes(&self, id: TokenId) -> Option<&[u8]> {
        self.get(id).map(|e| e.bytes.as_slice())
    }

    /// All entries, indexed by token id.
    pub fn entries(&self) -> &[VocabEntry] {
        &self.entries
    }

    /// The end-of-sequence token, when the model declares one.
    pub fn eos(&self) -> Option<TokenId> {
        self.eos
    }

    /// All tokens that end generation (end of sequence, end of turn, ...).
    pub fn end_of_generation_tokens(&self) -> impl Iterator<Item = TokenId> + '_ {
        (0..).zip(&self.entries).filter(|(_, e)| e.end_of_generation).map(|(id, _)| id)
    }
}

/// A set of token ids of one vocabulary, stored as a bitmask of `u32` words (bit `id % 32` of word `id / 32`),
/// the layout llguidance uses for its token masks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSet {
    words: Vec<u32>,
    len: usize,
}

impl TokenSet {
    /// The empty set over a vocabulary of `vocab_len` tokens.
    pub fn none(vocab_len: usize) -> Self {
        TokenSet { words: vec![0; vocab_len.div_ceil(32)], len: vocab_len }
    }

    /// The set of all `vocab_len` tokens.
    pub fn all(vocab_len: usize) -> Self {
        let mut set = Self::none(vocab_len);
        set.fill();
        set
    }

    /// The set holding exactly `ids` (ids out of range are ignored).
    pub fn from_ids(vocab_len: usize, ids: impl IntoIterator<Item = TokenId>) -> Self {
        let mut set = Self::none(vocab_len);
        for id in ids {
            set.insert(id);
        }
        set
    }

    /// Size of the vocabulary this set ranges over.
    pub fn vocab_len(&self) -> usize {
        self.len
    }

    /// Adds `id`; returns `false` (and does nothing) when `id` is out of range.
    pub fn insert(&mut self, id: TokenId) -> bool {
        if (id as usize) >= self.len {
            return false;
        }
        self.words[id as usize / 32] |= 1 << (id % 32);
        true
    }

    /// Removes `id`.
    pub fn remove(&mut self, id: TokenId) {
        if (id as usize) < self.len {
            self.words[id as usize / 32] &= !(1 << (id % 32));
        }
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: TokenId) -> bool {
        (id as usize) < self.len && self.words[id as usize / 32] & (1 << (id % 32)) != 0
    }

    /// Removes every token.
    pub fn clear(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
    }

    /// Adds every token.
    pub fn fill(&mut self) {
        self.words.iter_mut().for_each(|w| *w = u32::MAX);
        let tail = self.len % 32;
        if tail != 0 {
            if let Some(last) = self.words.last_mut() {
                *last = (1u32 << tail) - 1;
            }
        }
    }

    /// Number of tokens in the set.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The ids in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = TokenId> + '_ {
        let len = self.len;
        (0..).zip(&self.words).flat_map(move |(index, &word): (TokenId, &u32)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                Some(index * 32 + bit)
            })
            .take_while(move |&id| (id as usize) < len)
        })
    }

    /// The bitmask words (read).
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// The bitmask words (write); bits at or beyond [`TokenSet::vocab_len`] are ignored.
    pub fn words_mut(&mut self) -> &mut [u32] {
        &mut self.words
    }
}

/// A per-step restriction of which tokens may be generated next: the hook constrained generation (grammars,
/// JSON schemas) plugs into.
///
/// Before sampling each token the worker calls [`TokenMask::constrain`] with the tokens generated so far in
/// this request (prompt excluded; the last one is the token sampled at the previous step) and a set holding
/// every token; the mask removes what is not allowed. Sampling (temperature, top-k, top-p, seed) then only
/// considers the allowed tokens. Allowing only end-of-generation tokens ends the answer.
///
/// It runs on the generation thread between two decode steps, so it should be fast (llguidance computes a
/// mask in well under a millisecond).
///
/// ```
/// use catena_providers::llama::{TokenId, TokenMask, TokenSet};
///
/// /// Allows only the given tokens.
/// struct Only(Vec<TokenId>);
/// impl TokenMask for Only {
///     fn constrain(&mut self, _generated: &[TokenId], allowed: &mut TokenSet) -> catena_core::Result<()> {
///         allowed.clear();
///         for &id in &self.0 {
///             allowed.insert(id);
///         }
///         Ok(())
///     }
/// }
/// let mut allowed = TokenSet::all(8);
/// Only(vec![3, 5]).constrain(&[], &mut allowed).unwrap();
/// assert_eq!(allowed.iter().collect::<Vec<_>>(), vec![3, 5]);
/// ```
pub trait TokenMask: Send {
    /// Removes the tokens that may not come next from `allowed`.
    ///
    /// # Errors
    /// Any error ends the generation and is passed on to the caller (for example "the grammar cannot
    /// continue").
    fn constrain(&mut self, generated: &[TokenId], allowed: &mut TokenSet) -> Result<()>;

    /// Tokens that must come next whatever the model prefers (fast-forward): the worker appends them without
    /// sampling and decodes them in one batch. Called before every step with the tokens generated so far; the
    /// default forces nothing.
    ///
    /// # Errors
    /// As [`TokenMask::constrain`].
    fn forced_tokens(&mut self, generated: &[TokenId]) -> Result<Vec<TokenId>> {
        let _ = generated;
        Ok(Vec::new())
    }

    /// Whether the output is complete: the mask would now allow nothing but end-of-generation tokens. Asked
    /// when the token limit is reached, to tell a finished answer (`Stop`) from a cut one (`Length`); the
    /// default says `false`.
    ///
    /// # Errors
    /// As [`TokenMask::constrain`].
    fn is_complete(&mut self, generated: &[TokenId]) -> Result<bool> {
        let _ = generated;
        Ok(false)
    }

    /// Named parts of the output the mask recognised (a grammar's captures), reported in
    /// [`GenerationSummary::captures`](super::GenerationSummary::captures) when generation ends. The default
    /// reports none.
    fn captures(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_set_bits() {
        let mut s = TokenSet::all(35);
        assert_eq!(s.count(), 35);
        assert!(s.contains(34) && !s.contains(35));
        s.remove(3);
        assert!(!s.contains(3));
        s.clear();
        assert!(s.insert(33));
        assert!(!s.insert(35));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![33]);
        assert_eq!(TokenSet::from_ids(64, [0, 63]).words(), &[1, 1 << 31]);
    }
}
