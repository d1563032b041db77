//! [`Gbnf`]: a GBNF grammar (llama.cpp's grammar format) checked on the client before any server sees it.
//!
//! llama.cpp parses a grammar when a request arrives, and llama-cpp-python's server does not survive a grammar
//! that llama.cpp rejects: the sampler it adds is a null pointer and the whole process dies, taking every other
//! client's requests with it. A repetition `{m,n}` with `n < m` is worse still: the parser loops for hours. So a
//! grammar is only sent once it passes the same checks as llama.cpp's parser (`src/llama-grammar.cpp`): its
//! syntax, its escapes, repetition limits, every referenced rule defined, a `root` rule, no left recursion.
//!
//! The checker follows llama.cpp's parser step by step, including the rules it synthesises for groups and
//! repetitions (the limits and the left-recursion check are defined on those), so that it accepts and rejects
//! the same grammars. It is stricter where a grammar could crash or stall a server: `{m,n}` with `n < m`, token
//! references written as text (`<think>`, which only the server's vocabulary can resolve; write the id,
//! `<[1234]>`), grammars whose repetitions unroll to more than [`MAX_ELEMENTS`] elements, and parentheses nested
//! deeper than [`MAX_NESTING`].

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use catena_core::{Error, Result};

/// llama.cpp's limit on a repetition count (`{m}`, `{m,n}`) and on the rules nested repetitions generate.
const MAX_REPETITION: u64 = 2000;

/// The most grammar elements (characters, rule references, separators) a grammar may unroll to once its
/// repetitions are expanded, as the server expands them: `"abc"{3}` is 9 characters, a 1000-character literal
/// repeated `{1999}` two million, which llama.cpp would accept and build in memory for every request.
const MAX_ELEMENTS: usize = 1 << 20;

/// How deeply parentheses may nest. The server's parser recurses once per level; so does this checker.
const MAX_NESTING: usize = 64;

/// A GBNF grammar that llama.cpp's parser accepts. Build it with [`Gbnf::parse`] (or `str::parse`); pass it to
/// [`ChatOptions::with_grammar`](super::ChatOptions::with_grammar).
///
/// The format (llama.cpp `grammars/README.md`): one rule per line, `name ::= alternatives`, names made of
/// letters, digits and `-`; `"literal"`, `[a-z]` / `[^"]` character classes, `.` (any character), `( ... )`,
/// `|`, `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`, `#` comments, token ids `<[id]>` and `!<[id]>`. Generation starts
/// at `root`. Alternatives continue on the next line only after a trailing `|` or inside parentheses.
///
/// The checks are llama.cpp's (syntax, escapes, repetition counts up to 2000, every referenced rule defined, a
/// `root` rule, no left recursion) plus a few that protect the server from grammars llama.cpp would accept but
/// choke on: `{m,n}` with `n < m`, tokens written as text (`<think>`; write the id, `<[1234]>`), more than a
/// million elements once repetitions are unrolled, parentheses nested more than 64 deep.
///
/// ```
/// use catena_providers::openai::Gbnf;
/// let yes_no = Gbnf::parse(r#"root ::= ("yes" | "no") "." "#).unwrap();
/// assert!(yes_no.as_str().starts_with("root"));
///
/// let err = Gbnf::parse("root ::= answer").unwrap_err().to_string();
/// assert!(err.contains("`answer` is referenced but never defined"), "{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Gbnf {
    text: String,
}

impl Gbnf {
    /// Checks `text` and wraps it.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the first problem with its line and column: a syntax error, an unknown
    /// escape, a repetition over llama.cpp's limits, a rule used but not defined, no `root` rule, a
    /// left-recursive rule, a token written as text, a NUL character.
    pub fn parse(text: impl Into<String>) -> Result<Gbnf> {
        let text = text.into();
        Checker::new(&text).check()?;
        Ok(Gbnf { text })
    }

    /// The grammar text, exactly as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The grammar text.
    pub fn into_string(self) -> String {
        self.text
    }
}

impl FromStr for Gbnf {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Gbnf::parse(s)
    }
}

impl fmt::Display for Gbnf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The last item of a sequence, which a repetition applies to.
#[derive(Debug, Clone, Copy)]
struct Item {
    /// Where it starts in the rule being built.
    start: usize,
    /// How many rules it stands for (1, or the symbols a group created), for llama.cpp's repetition limit.
    rules: u64,
}

/// One element of a rule, as far as the checks need it (llama.cpp also keeps the characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    /// A character, character-class entry, `.` or token.
    Terminal,
    /// A reference to the rule with this symbol id.
    Ref(u32),
    /// The end of one alternative, another follows.
    Alt,
    /// The end of the rule.
    End,
}

/// Where a symbol id came from, for messages.
#[derive(Debug, Clone)]
enum Origin {
    /// A rule name written in the grammar.
    Named(String),
    /// A rule synthesised for a group or repetition inside the named rule.
    Synthesised(String),
}

struct Checker<'a> {
    src: &'a str,
    bytes: &'a [u8],
    /// Symbol names to ids, maintained exactly as llama.cpp does (synthesised names included).
    symbols: HashMap<String, u32>,
    origins: HashMap<u32, Origin>,
    /// Rule definitions by symbol id; `None` for ids that were referenced but (so far) not defined.
    rules: Vec<Option<Vec<Elem>>>,
    /// Where each named rule was first referenced, for "never defined" messages.
    first_use: HashMap<u32, usize>,
    elements: usize,
    depth: usize,
}

impl<'a> Checker<'a> {
    fn new(src: &'a str) -> Self {
        Checker {
            src,
            bytes: src.as_bytes(),
            symbols: HashMap::new(),
            origins: HashMap::new(),
            rules: Vec::new(),
            first_use: HashMap::new(),
            elements: 0,
            depth: 0,
        }
    }

    fn at(&self, pos: usize) -> Option<u8> {
        self.bytes.get(pos).copied()
    }

    /// An [`Error::InvalidInput`] pointing at byte `pos`.
    fn error(&self, pos: usize, problem: impl fmt::Display) -> Error {
        let pos = pos.min(self.src.len());
        let before = &self.src[..pos];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let near: String = self.src[pos..].chars().take(24).collect();
        let near = if near.is_empty() { "at the end".to_string() } else { format!("near `{}`", near.escape_debug()) };
        Error::InvalidInput(format!("GBNF grammar, line {line}, column {column} ({near}): {problem}"))
    }

    fn grammar_error(problem: impl fmt::Display) -> Error {
        Error::InvalidInput(format!("GBNF grammar: {problem}"))
    }

    fn check(mut self) -> Result<()> {
        if let Some(pos) = self.src.find('\0') {
            return Err(self.error(pos, "contains a NUL character, which ends the grammar early on the server"));
        }
        let mut pos = self.space(0, true);
        while pos < self.bytes.len() {
            pos = self.rule(pos)?;
        }
        self.check_defined()?;
        if !self.symbols.contains_key("root") {
            return Err(Self::grammar_error(
                "there is no `root` rule; generation starts at `root`, so define it (`root ::= ...`)",
            ));
        }
        self.check_left_recursion()
    }

    /// Skips blanks, tabs and `#` comments, and line breaks when `newline_ok`.
    fn space(&self, mut pos: usize, newline_ok: bool) -> usize {
        while let Some(c) = self.at(pos) {
            match c {
                b' ' | b'\t' => pos += 1,
                b'\r' | b'\n' if newline_ok => pos += 1,
                b'#' => {
                    while !matches!(self.at(pos), None | Some(b'\r' | b'\n')) {
                        pos += 1;
                    }
                }
                _ => break,
            }
        }
        pos
    }

    fn underscore_hint(c: u8) -> &'static str {
        if c == b'_' {
            " (rule names may only contain letters, digits and `-`, not `_`)"
        } else {
            ""
        }
    }

    fn is_word(c: u8) -> bool {
        c.is_ascii_alphanumeric() || c == b'-'
    }

    fn name_end(&self, pos: usize) -> usize {
        let mut end = pos;
        while self.at(end).is_some_and(Self::is_word) {
            end += 1;
        }
        end
    }

    /// A decimal number; llama.cpp fails on numbers beyond 64 bits too.
    fn int(&self, pos: usize) -> Result<(u64, usize)> {
        let end = (pos..).find(|&p| !self.at(p).is_some_and(|c| c.is_ascii_digit())).unwrap_or(pos);
        if end == pos {
            return Err(self.error(pos, "expected a number"));
        }
        let value = self.src[pos..end].parse().map_err(|_| self.error(pos, "number too large"))?;
        Ok((value, end))
    }

    fn symbol(&mut self, name: &str, pos: usize) -> u32 {
        let next = self.symbols.len() as u32;
        let id = *self.symbols.entry(name.to_string()).or_insert(next);
        self.origins.entry(id).or_insert_with(|| Origin::Named(name.to_string()));
        self.first_use.entry(id).or_insert(pos);
        id
    }

    /// A fresh id for a synthesised rule, named `<base>_<id>` like llama.cpp (a clash with a written name
    /// replaces it, as there).
    fn synthesise(&mut self, base: &str) -> u32 {
        let id = self.symbols.len() as u32;
        self.symbols.insert(format!("{base}_{id}"), id);
        self.origins.insert(id, Origin::Synthesised(base.to_string()));
        id
    }

    fn add_rule(&mut self, id: u32, rule: Vec<Elem>) {
        let id = id as usize;
        if self.rules.len() <= id {
            self.rules.resize(id + 1, None);
        }
        self.rules[id] = Some(rule);
    }

    fn grow(&mut self, n: usize, pos: usize) -> Result<()> {
        self.elements = self.elements.saturating_add(n);
        if self.elements > MAX_ELEMENTS {
            return Err(self.error(
                pos,
                format!(
                    "the grammar unrolls to more than {MAX_ELEMENTS} elements once its repetitions are expanded, \
                     which the server would build for every request; use `*` or `+`, or smaller counts"
                ),
            ));
        }
        Ok(())
    }

    /// `name ::= alternatives` and the line break after it.
    fn rule(&mut self, start: usize) -> Result<usize> {
        let name_end = self.name_end(start);
        if name_end == start {
            let problem = match self.at(start) {
                Some(b'|') => "expected a rule name; a line cannot start with `|`: end the previous line with `|` \
                               or put the alternatives in parentheses"
                    .to_string(),
                _ => "expected a rule name (letters, digits and `-`)".to_string(),
            };
            return Err(self.error(start, problem));
        }
        let name = self.src[start..name_end].to_string();
        let pos = self.space(name_end, false);
        let id = self.symbol(&name, start);
        if !self.src[pos..].starts_with("::=") {
            let problem = if self.at(pos) == Some(b'_') {
                format!("expected `::=` after `{name}`; rule names may only contain letters, digits and `-`, not `_`")
            } else {
                format!("expected `::=` after the rule name `{name}`")
            };
            return Err(self.error(pos, problem));
        }
        let pos = self.space(pos + 3, true);
        let mut pos = self.alternates(pos, &name, id, None)?;
        match self.at(pos) {
            None => {}
            Some(b'\r') => pos += if self.at(pos + 1) == Some(b'\n') { 2 } else { 1 },
            Some(b'\n') => pos += 1,
            Some(b')') => return Err(self.error(pos, "`)` without a matching `(`")),
            Some(c) => {
                return Err(self.error(
                    pos,
                    format!(
                        "unexpected character in rule `{name}`; expected an item, `|` or the end of the line{}",
                        Self::underscore_hint(c)
                    ),
                ))
            }
        }
        Ok(self.space(pos, true))
    }

    /// Alternatives separated by `|`, defining rule `id`. `group` is the position of the `(` when nested.
    fn alternates(&mut self, pos: usize, rule_name: &str, id: u32, group: Option<usize>) -> Result<usize> {
        let mut rule = Vec::new();
        let mut pos = self.sequence(pos, rule_name, &mut rule, group.is_some())?;
        while self.at(pos) == Some(b'|') {
            rule.push(Elem::Alt);
            pos = self.space(pos + 1, true);
            pos = self.sequence(pos, rule_name, &mut rule, group.is_some())?;
        }
        rule.push(Elem::End);
        self.grow(rule.len(), pos)?;
        self.add_rule(id, rule);
        Ok(pos)
    }

    /// One character of a literal or class: a UTF-8 character or an escape.
    fn character(&self, pos: usize) -> Result<usize> {
        match self.at(pos) {
            None => Err(self.error(pos, "unexpected end of the grammar")),
            Some(b'\\') => {
                let hex = |digits: usize| {
                    let ok = (0..digits).all(|i| self.at(pos + 2 + i).is_some_and(|c| c.is_ascii_hexdigit()));
                    if ok {
                        Ok(pos + 2 + digits)
                    } else {
                        Err(self.error(pos, format!("this escape needs exactly {digits} hexadecimal digits")))
                    }
                };
                match self.at(pos + 1) {
                    Some(b'x') => hex(2),
                    Some(b'u') => hex(4),
                    Some(b'U') => hex(8),
                    Some(b't' | b'r' | b'n' | b'\\' | b'"' | b'[' | b']' | b'-') => Ok(pos + 2),
                    _ => Err(self.error(
                        pos,
                        "unknown escape; use \\x.., \\u...., \\U........, \\t, \\r, \\n, \\\\, \\\", \\[, \\] or \\-",
                    )),
                }
            }
            Some(_) => Ok(pos + self.src[pos..].chars().next().map_or(1, char::len_utf8)),
        }
    }

    /// `<[id]>` after an optional `!` (at `pos`, the `<`).
    fn token(&self, pos: usize) -> Result<usize> {
        if self.at(pos) != Some(b'<') {
            return Err(self.error(pos, "expected `<` after `!` (a negated token is written `!<[id]>`)"));
        }
        if self.at(pos + 1) != Some(b'[') {
            return Err(self.error(
                pos,
                "a token written as text (`<name>`) can only be resolved by the server's vocabulary, and a server \
                 that cannot resolve it crashes; write the token id instead, `<[id]>`",
            ));
        }
        let (_, end) = self.int(pos + 2)?;
        if self.at(end) != Some(b']') {
            return Err(self.error(end, "expected `]` in the token id `<[id]>`"));
        }
        if self.at(end + 1) != Some(b'>') {
            return Err(self.error(end + 1, "expected `>` to end the token id `<[id]>`"));
        }
        Ok(end + 2)
    }

    /// Items until something that is not an item (`|`, `)`, a line break at the top level, the end).
    ///
    /// Each kind of item is parsed by its own method, so that the frame this recursion (through groups) keeps
    /// on the stack stays small.
    fn sequence(&mut self, mut pos: usize, rule_name: &str, rule: &mut Vec<Elem>, nested: bool) -> Result<usize> {
        // Where the last item starts in `rule` and how many rules it stands for, as llama.cpp tracks them for
        // repetitions.
        let mut last = Item { start: rule.len(), rules: 1 };
        while let Some(c) = self.at(pos) {
            let end = match c {
                b'"' | b'[' => {
                    last = Item { start: rule.len(), rules: 1 };
                    if c == b'"' {
                        self.literal(pos, rule)?
                    } else {
                        self.class(pos, rule)?
                    }
                }
                b'<' | b'!' => {
                    last = Item { start: rule.len(), rules: 1 };
                    rule.push(Elem::Terminal);
                    self.grow(1, pos)?;
                    self.token(if c == b'!' { pos + 1 } else { pos })?
                }
                c if Self::is_word(c) => {
                    let end = self.name_end(pos);
                    let src = self.src;
                    let id = self.symbol(&src[pos..end], pos);
                    last = Item { start: rule.len(), rules: 1 };
                    rule.push(Elem::Ref(id));
                    self.grow(1, pos)?;
                    end
                }
                b'(' => {
                    let (end, sub, rules) = self.group(pos, rule_name)?;
                    last = Item { start: rule.len(), rules };
                    rule.push(Elem::Ref(sub));
                    self.grow(1, pos)?;
                    end
                }
                b'.' => {
                    last = Item { start: rule.len(), rules: 1 };
                    rule.push(Elem::Terminal);
                    self.grow(1, pos)?;
                    pos + 1
                }
                b'*' | b'+' | b'?' => {
                    let (min, max) = match c {
                        b'*' => (0, None),
                        b'+' => (1, None),
                        _ => (0, Some(1)),
                    };
                    self.repeat(pos, rule_name, rule, &mut last, min, max)?;
                    pos + 1
                }
                b'{' => self.braces(pos, rule_name, rule, &mut last, nested)?,
                _ => break,
            };
            pos = self.space(end, nested);
        }
        Ok(pos)
    }

    /// A `"..."` literal at `open`; returns the position after its closing quote.
    fn literal(&mut self, open: usize, rule: &mut Vec<Elem>) -> Result<usize> {
        let start = rule.len();
        let mut pos = open + 1;
        loop {
            match self.at(pos) {
                None => return Err(self.error(open, "string literal is never closed (missing `\"`)")),
                Some(b'"') => break,
                Some(_) => {
                    pos = self.character(pos)?;
                    rule.push(Elem::Terminal);
                }
            }
        }
        self.grow(rule.len() - start, pos)?;
        Ok(pos + 1)
    }

    /// A `[...]` character class at `open`; returns the position after its `]`.
    fn class(&mut self, open: usize, rule: &mut Vec<Elem>) -> Result<usize> {
        let start = rule.len();
        let never_closed = |this: &Self| this.error(open, "character class is never closed (missing `]`)");
        let mut pos = open + 1;
        if self.at(pos) == Some(b'^') {
            pos += 1;
        }
        loop {
            match self.at(pos) {
                None => return Err(never_closed(self)),
                Some(b']') => break,
                Some(_) => {
                    pos = self.character(pos)?;
                    rule.push(Elem::Terminal);
                    if self.at(pos) == Some(b'-') && self.at(pos + 1) != Some(b']') {
                        if self.at(pos + 1).is_none() {
                            return Err(never_closed(self));
                        }
                        pos = self.character(pos + 1)?;
                        rule.push(Elem::Terminal);
                    }
                }
            }
        }
        self.grow(rule.len() - start, pos)?;
        Ok(pos + 1)
    }

    /// A `( ... )` group at `open`, which becomes a synthesised rule: returns the position after `)`, the rule's
    /// id and how many symbols the group created (llama.cpp's repetition limit counts them).
    fn group(&mut self, open: usize, rule_name: &str) -> Result<(usize, u32, u64)> {
        if self.depth >= MAX_NESTING {
            return Err(self.error(open, format!("parentheses nest deeper than {MAX_NESTING} levels")));
        }
        let pos = self.space(open + 1, true);
        let before = self.symbols.len() as u64;
        let sub = self.synthesise(rule_name);
        self.depth += 1;
        let pos = self.alternates(pos, rule_name, sub, Some(open))?;
        self.depth -= 1;
        let created = (self.symbols.len() as u64).saturating_sub(before).max(1);
        match self.at(pos) {
            Some(b')') => Ok((pos + 1, sub, created)),
            None => Err(self.error(open, "`(` is never closed (missing `)`)")),
            Some(c) => Err(self.error(
                pos,
                format!(
                    "unexpected character inside `( ... )`; expected an item, `|` or `)`{}",
                    Self::underscore_hint(c)
                ),
            )),
        }
    }

    /// A `{m}`, `{m,}` or `{m,n}` repetition at `open`; returns the position after its `}`.
    fn braces(
        &mut self,
        open: usize,
        rule_name: &str,
        rule: &mut Vec<Elem>,
        last: &mut Item,
        nested: bool,
    ) -> Result<usize> {
        let mut pos = self.space(open + 1, nested);
        if !self.at(pos).is_some_and(|c| c.is_ascii_digit()) {
            return Err(self.error(pos, "expected a number after `{`"));
        }
        let (min, end) = self.int(pos)?;
        pos = self.space(end, nested);
        let max = match self.at(pos) {
            Some(b'}') => Some(min),
            Some(b',') => {
                pos = self.space(pos + 1, nested);
                let mut max = None;
                if self.at(pos).is_some_and(|c| c.is_ascii_digit()) {
                    let (n, end) = self.int(pos)?;
                    max = Some(n);
                    pos = self.space(end, nested);
                }
                if self.at(pos) != Some(b'}') {
                    return Err(self.error(pos, "expected `}` to end the repetition `{m,n}`"));
                }
                max
            }
            _ => return Err(self.error(pos, "expected `,` or `}` in the repetition `{m,n}`")),
        };
        if min > MAX_REPETITION {
            return Err(
                self.error(open, format!("repetition count {min} is over the server's limit of {MAX_REPETITION}"))
            );
        }
        // The server treats an upper bound over its limit as no bound.
        let max = max.filter(|&m| m <= MAX_REPETITION);
        if let Some(m) = max.filter(|&m| m < min) {
            return Err(self.error(
                open,
                format!(
                    "repetition {{{min},{m}}} has its upper bound below its lower bound (the server's parser would \
                     never finish)"
                ),
            ));
        }
        self.repeat(open, rule_name, rule, last, min, max)?;
        Ok(pos + 1)
    }

    /// Applies a repetition to the last item of `rule` the way llama.cpp rewrites it:
    /// `S{m,n}` becomes `S` m times followed by `n - m` nested optional rules (one recursive rule if unbounded).
    fn repeat(
        &mut self,
        op: usize,
        rule_name: &str,
        rule: &mut Vec<Elem>,
        last: &mut Item,
        min: u64,
        max: Option<u64>,
    ) -> Result<()> {
        if last.start == rule.len() {
            return Err(self.error(op, "this repetition has nothing to repeat (it must follow an item)"));
        }
        let total = match max {
            Some(m) if m > 0 => m,
            _ => min.max(1),
        };
        if last.rules.saturating_mul(total) >= MAX_REPETITION {
            return Err(self.error(
                op,
                format!(
                    "nested repetitions generate too many rules (the server's limit is {MAX_REPETITION}); reduce \
                     the counts or use `*` / `+`"
                ),
            ));
        }
        let item: Vec<Elem> = rule[last.start..].to_vec();
        if min == 0 {
            rule.truncate(last.start);
        } else {
            for _ in 1..min {
                self.grow(item.len(), op)?;
                rule.extend_from_slice(&item);
            }
        }
        let optional = match max {
            None => 1,
            Some(m) => m - min,
        };
        let mut last_rec = 0;
        for i in 0..optional {
            let id = self.synthesise(rule_name);
            let mut rec = item.clone();
            if i > 0 || max.is_none() {
                rec.push(Elem::Ref(if max.is_none() { id } else { last_rec }));
            }
            rec.push(Elem::Alt);
            rec.push(Elem::End);
            self.grow(rec.len(), op)?;
            self.add_rule(id, rec);
            last_rec = id;
        }
        if optional > 0 {
            rule.push(Elem::Ref(last_rec));
        }
        last.rules = last.rules.saturating_mul(total);
        Ok(())
    }

    fn describe(&self, id: u32) -> String {
        match self.origins.get(&id) {
            Some(Origin::Named(name)) => format!("rule `{name}`"),
            Some(Origin::Synthesised(base)) => format!("a group or repetition in rule `{base}`"),
            None => format!("rule #{id}"),
        }
    }

    /// Every id that exists or is referenced has a definition.
    fn check_defined(&self) -> Result<()> {
        let defined = |id: u32| self.rules.get(id as usize).is_some_and(Option::is_some);
        let mut missing: Vec<u32> = self
            .rules
            .iter()
            .flatten()
            .flatten()
            .filter_map(|e| match e {
                Elem::Ref(id) if !defined(*id) => Some(*id),
                _ => None,
            })
            .chain((0..self.rules.len() as u32).filter(|&id| !defined(id)))
            .collect();
        missing.sort_by_key(|id| self.first_use.get(id).copied().unwrap_or(usize::MAX));
        match missing.first() {
            None => Ok(()),
            Some(&id) => {
                let what = match self.origins.get(&id) {
                    Some(Origin::Named(name)) => format!("`{name}` is referenced but never defined"),
                    _ => format!("{} is never defined", self.describe(id)),
                };
                let hint = "; add a rule `name ::= ...` for it (names may only contain letters, digits and `-`)";
                Err(match self.first_use.get(&id) {
                    Some(&pos) => self.error(pos, format!("{what}{hint}")),
                    None => Self::grammar_error(format!("{what}{hint}")),
                })
            }
        }
    }

    /// llama.cpp refuses grammars where a rule can reach itself through leftmost references (following a
    /// reference past another only when that one has an empty alternative).
    fn check_left_recursion(&self) -> Result<()> {
        let n = self.rules.len();
        let rule = |id: usize| self.rules[id].as_deref().unwrap_or(&[]);
        let may_be_empty: Vec<bool> = (0..n)
            .map(|id| {
                let r = rule(id);
                r.first().is_some_and(|e| matches!(e, Elem::Alt | Elem::End))
                    || r.windows(2).any(|w| matches!(w[0], Elem::Alt) && matches!(w[1], Elem::Alt | Elem::End))
            })
            .collect();
        // The leftmost references of each rule.
        let edges: Vec<Vec<usize>> = (0..n)
            .map(|id| {
                let mut out = Vec::new();
                let mut leftmost = true;
                for e in rule(id) {
                    match *e {
                        Elem::Ref(r) if leftmost => {
                            out.push(r as usize);
                            leftmost = may_be_empty[r as usize];
                        }
                        Elem::Alt | Elem::End => leftmost = true,
                        _ => leftmost = false,
                    }
                }
                out
            })
            .collect();
        #[derive(Clone, Copy, PartialEq)]
        enum State {
            New,
            InProgress,
            Done,
        }
        let mut state = vec![State::New; n];
        for start in 0..n {
            if state[start] != State::New {
                continue;
            }
            let mut stack = vec![(start, 0usize)];
            state[start] = State::InProgress;
            while let Some((id, next)) = stack.last_mut() {
                let id = *id;
                match edges[id].get(*next) {
                    Some(&to) => {
                        *next += 1;
                        match state[to] {
                            State::InProgress => {
                                return Err(Self::grammar_error(format!(
                                    "{} is left-recursive: it can reach itself before matching any text, which \
                                     llama.cpp does not support; rewrite `list ::= list \",\" item | item` as \
                                     `list ::= item (\",\" item)*`",
                                    self.describe(to as u32)
                                )))
                            }
                            State::New => {
                                state[to] = State::InProgress;
                                stack.push((to, 0));
                            }
                            State::Done => {}
                        }
                    }
                    None => {
                        state[id] = State::Done;
                        stack.pop();
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> String {
        match Gbnf::parse(text) {
            Ok(_) => panic!("accepted: {text:?}"),
            Err(Error::InvalidInput(message)) => message,
            Err(other) => panic!("wrong error type {other:?}"),
        }
    }

    #[test]
    fn accepts_the_documented_syntax() {
        for text in [
            r#"root ::= "yes" | "no""#,
            "root ::= [0-9]+",
            "root ::= [0-9]{1,3} (\",\" [0-9]{3})*\n",
            "# a comment\nroot ::= greeting \" \" name # trailing comment\ngreeting ::= \"hi\" | \"hello\"\nname ::= [A-Z] [a-z]*\n",
            "root ::= (\n  \"a\"\n  | \"b\"\n)",
            "root ::= \"a\" |\n  \"b\" |\n  \"c\"",
            "root ::= [^\"\\\\] . \"\\x41\\u00e9\\U0001F600\\t\\r\\n\\[\\]\\-\"",
            "root ::= [a-] [\\]-\\x7F] [^] []",
            "root ::= \"\u{e9}\u{65e5}\u{1F600}\" [\u{3b1}-\u{3c9}]",
            "root ::= x? y{2} z{0,} w{0,3} v{ 1 , 2 }\nx ::= \"x\"\ny ::= \"y\"\nz ::= \"z\"\nw ::= \"w\"\nv ::= \"v\"",
            "root ::= <[5]> !<[7]>* ",
            "root ::=\r\n  \"crlf\"\r\nother ::= root\r\n",
            "root ::= ",
            "root ::= list\nlist ::= item (\",\" item)*\nitem ::= [a-z]+",
            "root ::= \"a\"{0,5000}",
            "root ::= (\"a\"{0,30}){0,30}",
            "root ::= later\nlater ::= \"defined after use\"",
        ] {
            Gbnf::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        }
    }

    #[test]
    fn names_the_problem_and_where_it_is() {
        let long = format!("root ::= \"{}\"{{1999}}", "x".repeat(1000));
        let nested = format!("root ::= {}\"a\"{}", "(".repeat(300), ")".repeat(300));
        let cases: &[(&str, &str)] = &[
            ("", "no `root` rule"),
            ("greeting ::= \"hi\"", "no `root` rule"),
            ("root ::= answer", "`answer` is referenced but never defined"),
            ("root ::= \"a\"\n\nroot2 ::= b c\nc ::= \"c\"", "line 3, column 11"),
            ("root ::= \"open", "string literal is never closed"),
            ("root ::= [a-z", "character class is never closed"),
            ("root ::= [a-", "character class is never closed"),
            ("root ::= (\"a\" | \"b\"", "`(` is never closed"),
            ("root ::= \"a\" )", "`)` without a matching `(`"),
            ("root ::= (\"a\" ] )", "inside `( ... )`"),
            ("root ::= \"a\" @", "unexpected character in rule `root`"),
            ("root ::= \"a\"\n| \"b\"", "a line cannot start with `|`"),
            ("root = \"a\"", "expected `::=` after the rule name `root`"),
            ("root ::= my_rule\nmy_rule ::= \"x\"", "not `_`"),
            ("root ::= \"\\q\"", "unknown escape"),
            ("root ::= \"\\", "unknown escape"),
            ("root ::= \"\\x4\"", "exactly 2 hexadecimal digits"),
            ("root ::= \"\\u12G4\"", "exactly 4 hexadecimal digits"),
            ("root ::= *", "nothing to repeat"),
            ("root ::= \"\"+", "nothing to repeat"),
            ("root ::= \"a\"{0}*", "nothing to repeat"),
            ("root ::= \"a\"{x}", "expected a number after `{`"),
            ("root ::= \"a\"{,3}", "expected a number after `{`"),
            ("root ::= \"a\"{2 3}", "expected `,` or `}`"),
            ("root ::= \"a\"{2,3", "expected `}`"),
            ("root ::= \"a\"{2001}", "over the server's limit of 2000"),
            ("root ::= \"a\"{3,2}", "upper bound below its lower bound"),
            ("root ::= \"a\"{99999999999999999999999}", "number too large"),
            ("root ::= (\"a\"{0,100}){0,30}", "too many rules"),
            (long.as_str(), "unrolls to more than"),
            (nested.as_str(), "nest deeper than 64"),
            ("root ::= <think>", "write the token id instead"),
            ("root ::= !\"a\"", "expected `<` after `!`"),
            ("root ::= <[12>", "expected `]`"),
            ("root ::= <[12]", "expected `>`"),
            ("root ::= root \"a\" | \"b\"", "rule `root` is left-recursive"),
            ("root ::= x\nx ::= y \"1\"\ny ::= z\nz ::= x | \"z\"", "rule `x` is left-recursive"),
            ("root ::= opt root\nopt ::= \"a\" | ", "rule `root` is left-recursive"),
            ("root ::= \"a\"* root", "rule `root` is left-recursive"),
            ("root ::= \"a\u{0}\"", "NUL"),
        ];
        for (text, expected) in cases {
            let message = problem(text);
            assert!(message.contains(expected), "{text:?}: {message:?} should contain {expected:?}");
            assert!(message.starts_with("GBNF grammar"), "{message}");
        }
    }

    #[test]
    fn left_recursion_follows_only_leftmost_references() {
        // Right recursion and recursion after a terminal are fine.
        Gbnf::parse("root ::= \"a\" root | \"b\"").unwrap();
        Gbnf::parse("root ::= x\nx ::= \"(\" x \")\" | \"\"").unwrap();
        // llama.cpp only treats a rule as possibly empty when one of its alternatives is literally empty, so a
        // reference to a rule that is empty only through another rule stops the search, as on the server.
        Gbnf::parse("root ::= x root | \"b\"\nx ::= y\ny ::= ").unwrap();
    }

    #[test]
    fn keeps_the_text_and_parses_from_str() {
        let text = "root ::= \"ok\"  # done\n";
        let g: Gbnf = text.parse().unwrap();
        assert_eq!(g.as_str(), text);
        assert_eq!(g.to_string(), text);
        assert_eq!(g.clone().into_string(), text);
        assert!("root ::= nope".parse::<Gbnf>().is_err());
    }

    #[test]
    fn deepest_allowed_nesting_fits_a_small_stack() {
        let text = format!("root ::= {}\"a\"{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        let parsed = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || Gbnf::parse(text).map(|_| ()))
            .unwrap()
            .join()
            .unwrap();
        parsed.unwrap();
    }

    #[test]
    fn deep_rule_chains_do_not_overflow_the_stack() {
        let mut text = String::from("root ::= r0\n");
        for i in 0..20_000 {
            text.push_str(&format!("r{i} ::= r{}\n", i + 1));
        }
        text.push_str("r20000 ::= \"end\"\n");
        Gbnf::parse(&text).unwrap();
        text.push_str("r20000 ::= r0\n");
        assert!(problem(&text).contains("left-recursive"));
    }
}
