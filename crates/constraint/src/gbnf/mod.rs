//! [`Gbnf`]: a GBNF grammar (llama.cpp's grammar format) checked on the client before any server sees it.
//!
//! llama.cpp parses a grammar when a request arrives, and llama-cpp-python's server does not survive a grammar
//! that llama.cpp rejects: the sampler it adds is a null pointer and the whole process dies, taking every other
//! client's requests with it. A repetition `{m,n}` with `n < m` is worse still: the parser loops for hours. So a
//! grammar is only sent once it passes the same checks as llama.cpp's parser (`src/llama-grammar.cpp`): its
//! syntax, its escapes, repetition limits, every referenced rule defined, a `root` rule, no left recursion.
//!
//! A grammar is parsed once, following llama.cpp's parser step by step, into a syntax tree. The checks rebuild
//! from that tree the rules llama.cpp synthesises for groups and repetitions (its limits and its left-recursion
//! check are defined on those), so that they accept and reject the same grammars. They are
//! stricter where a grammar could crash or stall a server: `{m,n}` with `n < m`, token references written as text
//! (`<think>`, which only the server's vocabulary can resolve; write the id, `<[1234]>`), grammars whose
//! repetitions unroll to more than 2^20 (`MAX_ELEMENTS`) elements, and parentheses nested deeper than 64
//! (`MAX_NESTING`).
//!
//! [`to_lark`] writes the same tree in llguidance's Lark dialect, with the same language, for enforcing a grammar
//! anywhere else than on a llama.cpp server; the conversion and the checks cannot disagree about what a grammar
//! means.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use catena_core::{Constraint, Error, Result};

mod convert;
pub use convert::{choice_to_gbnf, regex_to_gbnf};

/// llama.cpp's limit on a repetition count (`{m}`, `{m,n}`) and on the rules nested repetitions generate.
const MAX_REPETITION: u64 = 2000;

/// The most grammar elements (characters, rule references, separators) a grammar may unroll to once its
/// repetitions are expanded, as the server expands them: `"abc"{3}` is 9 characters, a 1000-character literal
/// repeated `{1999}` two million, which llama.cpp would accept and build in memory for every request.
const MAX_ELEMENTS: usize = 1 << 20;

/// How deeply parentheses may nest. The server's parser recurses once per level; so do the parser, the checks and
/// the Lark writer here.
const MAX_NESTING: usize = 64;

/// A GBNF grammar that llama.cpp's parser accepts. Build it with [`Gbnf::parse`] (or `str::parse`); use it as a
/// [`Constraint::Gbnf`](catena_core::Constraint::Gbnf), or convert it with [`to_lark`].
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
/// use catena_constraint::gbnf::Gbnf;
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
        check(&text)?;
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

/// Parses `src` and runs every check of [`Gbnf::parse`] on the tree; returns the tree and the index of `root`.
fn check(src: &str) -> Result<(Ast, usize)> {
    if let Some(pos) = src.find('\0') {
        return Err(error(src, pos, "contains a NUL character, which ends the grammar early on the server"));
    }
    let ast = Parser::new(src).grammar()?;
    let root = Llama::check(src, &ast)?;
    Ok((ast, root))
}

/// An [`Error::InvalidInput`] pointing at byte `pos` of `src`.
fn error(src: &str, pos: usize, problem: impl fmt::Display) -> Error {
    let pos = pos.min(src.len());
    let before = &src[..pos];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let near: String = src[pos..].chars().take(24).collect();
    let near = if near.is_empty() { "at the end".to_string() } else { format!("near `{}`", near.escape_debug()) };
    Error::InvalidInput(format!("GBNF grammar, line {line}, column {column} ({near}): {problem}"))
}

/// An [`Error::InvalidInput`] about the grammar as a whole.
fn grammar_error(problem: impl fmt::Display) -> Error {
    Error::InvalidInput(format!("GBNF grammar: {problem}"))
}

/// The problem with a repetition that follows no item, or an item that adds nothing to the rule.
const NOTHING_TO_REPEAT: &str = "this repetition has nothing to repeat (it must follow an item)";

/// Whether `c` may appear in a rule name: letters, digits and `-`.
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

/// A hint for an unexpected `_`, usually a rule name written with one.
fn underscore_hint(c: u8) -> &'static str {
    if c == b'_' {
        " (rule names may only contain letters, digits and `-`, not `_`)"
    } else {
        ""
    }
}

/// A parsed GBNF grammar: every rule definition, in order, as a tree of [`Item`]s.
struct Ast {
    /// Rule names by rule index, in the order the names first appear.
    names: Vec<String>,
    /// Where each rule's name first appears (in a reference or a definition), for "never defined" messages.
    first_use: Vec<usize>,
    /// The index in `defs` of each rule's last definition, the one that counts (`None`: never defined).
    defined: Vec<Option<usize>>,
    /// Every definition in order (rule index and body), also those a later definition of the rule replaces.
    defs: Vec<(usize, Body)>,
    /// The index of `root`, if the name appears.
    root: Option<usize>,
    /// Where the first token reference (`<[id]>`, `!<[id]>`) is, which [`to_lark`] refuses.
    first_token: Option<Range<usize>>,
}

/// Alternatives separated by `|`: the body of a rule or of a group.
struct Body {
    /// Each alternative, a sequence of items (possibly none).
    alternatives: Vec<Vec<Item>>,
    /// Where the alternatives end (a line break, `)`, the end of the grammar).
    end: usize,
}

/// One item of a sequence and the repetitions applied to it.
struct Item {
    /// What the item matches once.
    atom: Atom,
    /// Its repetitions in the order written: `"a"?*` is `?`, then `*`.
    reps: Vec<Rep>,
    /// Where the item (without its repetitions) is in the grammar.
    span: Range<usize>,
}

impl Item {
    /// Whether llama.cpp adds no element to the rule for this item (`""`, `[]`, `x{0}`), leaving a repetition after
    /// it nothing to repeat.
    fn adds_nothing(&self) -> bool {
        match self.reps.last() {
            Some(rep) => rep.max == Some(0),
            None => matches!(&self.atom, Atom::Literal(chars) if chars.is_empty()),
        }
    }
}

/// What an item matches, before repetitions.
enum Atom {
    /// A literal: these code points in order (none: the empty string, also for `[]` and `[^]`, which add nothing
    /// in llama.cpp).
    Literal(Vec<u32>),
    /// A non-empty character class, `negated` for `[^...]`: each entry a code point or an inclusive range (`a-z`).
    Class { negated: bool, ranges: Vec<(u32, Option<u32>)> },
    /// `.`: any one character.
    Any,
    /// A token id, `<[id]>` or `!<[id]>`.
    Token,
    /// A reference to the rule with this index.
    Rule(usize),
    /// `( ... )`.
    Group(Body),
}

/// A repetition written at `pos`: `min` to `max` times (`None`: no bound).
#[derive(Clone, Copy)]
struct Rep {
    /// The fewest repetitions.
    min: u64,
    /// The most repetitions; llama.cpp reads a bound over [`MAX_REPETITION`] as none.
    max: Option<u64>,
    /// Where the `*`, `+`, `?` or `{` is.
    pos: usize,
}

/// The GBNF parser, after llama.cpp's: reads a grammar into an [`Ast`] and refuses, as it reads, what llama.cpp's
/// parser refuses (syntax, escapes, repetition counts), and `{m,n}` with `n < m`, tokens written as text and
/// parentheses nested deeper than [`MAX_NESTING`]. The checks that need the whole grammar are [`Llama`]'s.
struct Parser<'a> {
    /// The grammar.
    src: &'a str,
    /// The grammar's bytes.
    bytes: &'a [u8],
    /// Rule names to rule indices.
    index: HashMap<&'a str, usize>,
    /// The tree read so far.
    ast: Ast,
    /// How many groups enclose the current position.
    depth: usize,
}

impl<'a> Parser<'a> {
    /// A parser of `src`.
    fn new(src: &'a str) -> Self {
        let ast = Ast {
            names: Vec::new(),
            first_use: Vec::new(),
            defined: Vec::new(),
            defs: Vec::new(),
            root: None,
            first_token: None,
        };
        Parser { src, bytes: src.as_bytes(), index: HashMap::new(), ast, depth: 0 }
    }

    /// The byte at `pos`.
    fn at(&self, pos: usize) -> Option<u8> {
        self.bytes.get(pos).copied()
    }

    /// An error at byte `pos`.
    fn error(&self, pos: usize, problem: impl fmt::Display) -> Error {
        error(self.src, pos, problem)
    }

    /// Skips blanks, tabs and `#` comments from `pos`, and line breaks when `newline_ok` (llama.cpp's
    /// `parse_space`).
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

    /// The end of the rule name starting at `pos`.
    fn name_end(&self, pos: usize) -> usize {
        (pos..).find(|&p| !self.at(p).is_some_and(is_word)).unwrap_or(pos)
    }

    /// The whole grammar.
    fn grammar(mut self) -> Result<Ast> {
        let mut pos = self.space(0, true);
        while pos < self.bytes.len() {
            pos = self.rule(pos)?;
        }
        self.ast.root = self.index.get("root").copied();
        Ok(self.ast)
    }

    /// The index of the rule `name`, met at `pos`; a new name gets the next one.
    fn rule_index(&mut self, name: &'a str, pos: usize) -> usize {
        let ast = &mut self.ast;
        *self.index.entry(name).or_insert_with(|| {
            ast.names.push(name.to_string());
            ast.first_use.push(pos);
            ast.defined.push(None);
            ast.names.len() - 1
        })
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

    /// `name ::= alternatives` and the line break after it.
    fn rule(&mut self, start: usize) -> Result<usize> {
        let name_end = self.name_end(start);
        if name_end == start {
            let problem = match self.at(start) {
                Some(b'|') => {
                    "expected a rule name; a line cannot start with `|`: end the previous line with `|` \
                               or put the alternatives in parentheses"
                }
                _ => "expected a rule name (letters, digits and `-`)",
            };
            return Err(self.error(start, problem));
        }
        let src = self.src;
        let name = &src[start..name_end];
        let rule = self.rule_index(name, start);
        let pos = self.space(name_end, false);
        if !src[pos..].starts_with("::=") {
            let problem = if self.at(pos) == Some(b'_') {
                format!("expected `::=` after `{name}`; rule names may only contain letters, digits and `-`, not `_`")
            } else {
                format!("expected `::=` after the rule name `{name}`")
            };
            return Err(self.error(pos, problem));
        }
        let body = self.alternates(self.space(pos + 3, true), false)?;
        let mut pos = body.end;
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
                        underscore_hint(c)
                    ),
                ))
            }
        }
        self.ast.defined[rule] = Some(self.ast.defs.len());
        self.ast.defs.push((rule, body));
        Ok(self.space(pos, true))
    }

    /// Alternatives separated by `|`; `nested` inside parentheses, where line breaks are spaces.
    fn alternates(&mut self, pos: usize, nested: bool) -> Result<Body> {
        let (first, mut pos) = self.sequence(pos, nested)?;
        let mut alternatives = vec![first];
        while self.at(pos) == Some(b'|') {
            let (next, end) = self.sequence(self.space(pos + 1, true), nested)?;
            alternatives.push(next);
            pos = end;
        }
        Ok(Body { alternatives, end: pos })
    }

    /// Items and their repetitions until something else (`|`, `)`, a line break at the top level, the end).
    ///
    /// Each kind of item is parsed by its own method, so that the frame this recursion (through groups) keeps
    /// on the stack stays small.
    fn sequence(&mut self, mut pos: usize, nested: bool) -> Result<(Vec<Item>, usize)> {
        let mut items: Vec<Item> = Vec::new();
        while let Some(c) = self.at(pos) {
            let (atom, end) = match c {
                b'"' => self.literal(pos)?,
                b'[' => self.class(pos)?,
                b'<' | b'!' => self.token(pos)?,
                b'(' => self.group(pos)?,
                b'.' => (Atom::Any, pos + 1),
                c if is_word(c) => {
                    let end = self.name_end(pos);
                    let src = self.src;
                    (Atom::Rule(self.rule_index(&src[pos..end], pos)), end)
                }
                b'*' | b'+' | b'?' | b'{' => {
                    let (min, max, end) = match c {
                        b'*' => (0, None, pos + 1),
                        b'+' => (1, None, pos + 1),
                        b'?' => (0, Some(1), pos + 1),
                        _ => self.braces(pos, nested)?,
                    };
                    let item = items.last_mut().filter(|item| !item.adds_nothing());
                    let item = item.ok_or_else(|| self.error(pos, NOTHING_TO_REPEAT))?;
                    item.reps.push(Rep { min, max, pos });
                    pos = self.space(end, nested);
                    continue;
                }
                _ => break,
            };
            items.push(Item { atom, reps: Vec::new(), span: pos..end });
            pos = self.space(end, nested);
        }
        Ok((items, pos))
    }

    /// One character of a literal or class, a UTF-8 character or an escape: its code point and the position
    /// after it.
    fn character(&self, pos: usize) -> Result<(u32, usize)> {
        if self.at(pos) != Some(b'\\') {
            let c = self.src.get(pos..).and_then(|s| s.chars().next());
            let c = c.ok_or_else(|| self.error(pos, "unexpected end of the grammar"))?;
            return Ok((u32::from(c), pos + c.len_utf8()));
        }
        let hex = |digits: usize| {
            let text = self.src.get(pos + 2..pos + 2 + digits).filter(|t| t.bytes().all(|c| c.is_ascii_hexdigit()));
            let value = text.and_then(|t| u32::from_str_radix(t, 16).ok());
            let value =
                value.ok_or_else(|| self.error(pos, format!("this escape needs exactly {digits} hexadecimal digits")));
            Ok((value?, pos + 2 + digits))
        };
        match self.at(pos + 1) {
            Some(b'x') => hex(2),
            Some(b'u') => hex(4),
            Some(b'U') => hex(8),
            Some(b't') => Ok((u32::from('\t'), pos + 2)),
            Some(b'r') => Ok((u32::from('\r'), pos + 2)),
            Some(b'n') => Ok((u32::from('\n'), pos + 2)),
            Some(c @ (b'\\' | b'"' | b'[' | b']' | b'-')) => Ok((u32::from(c), pos + 2)),
            _ => Err(self.error(
                pos,
                "unknown escape; use \\x.., \\u...., \\U........, \\t, \\r, \\n, \\\\, \\\", \\[, \\] or \\-",
            )),
        }
    }

    /// A `"..."` literal at `open`.
    fn literal(&self, open: usize) -> Result<(Atom, usize)> {
        let mut chars = Vec::new();
        let mut pos = open + 1;
        loop {
            match self.at(pos) {
                None => return Err(self.error(open, "string literal is never closed (missing `\"`)")),
                Some(b'"') => return Ok((Atom::Literal(chars), pos + 1)),
                Some(_) => {
                    let (c, next) = self.character(pos)?;
                    chars.push(c);
                    pos = next;
                }
            }
        }
    }

    /// A `[...]` character class at `open`.
    fn class(&self, open: usize) -> Result<(Atom, usize)> {
        let never_closed = || self.error(open, "character class is never closed (missing `]`)");
        let negated = self.at(open + 1) == Some(b'^');
        let mut pos = open + 1 + usize::from(negated);
        let mut ranges = Vec::new();
        loop {
            match self.at(pos) {
                None => return Err(never_closed()),
                Some(b']') => break,
                Some(_) => {
                    let (first, next) = self.character(pos)?;
                    pos = next;
                    let mut last = None;
                    if self.at(pos) == Some(b'-') && self.at(pos + 1) != Some(b']') {
                        if self.at(pos + 1).is_none() {
                            return Err(never_closed());
                        }
                        let (c, next) = self.character(pos + 1)?;
                        (last, pos) = (Some(c), next);
                    }
                    ranges.push((first, last));
                }
            }
        }
        let atom = if ranges.is_empty() { Atom::Literal(Vec::new()) } else { Atom::Class { negated, ranges } };
        Ok((atom, pos + 1))
    }

    /// A token id `<[id]>`, or `!<[id]>` when `pos` is at a `!`.
    fn token(&mut self, pos: usize) -> Result<(Atom, usize)> {
        let open = if self.at(pos) == Some(b'!') { pos + 1 } else { pos };
        if self.at(open) != Some(b'<') {
            return Err(self.error(open, "expected `<` after `!` (a negated token is written `!<[id]>`)"));
        }
        if self.at(open + 1) != Some(b'[') {
            return Err(self.error(
                open,
                "a token written as text (`<name>`) can only be resolved by the server's vocabulary, and a server \
                 that cannot resolve it crashes; write the token id instead, `<[id]>`",
            ));
        }
        let (_, end) = self.int(open + 2)?;
        if self.at(end) != Some(b']') {
            return Err(self.error(end, "expected `]` in the token id `<[id]>`"));
        }
        if self.at(end + 1) != Some(b'>') {
            return Err(self.error(end + 1, "expected `>` to end the token id `<[id]>`"));
        }
        self.ast.first_token.get_or_insert(pos..end + 2);
        Ok((Atom::Token, end + 2))
    }

    /// A `( ... )` group at `open`.
    fn group(&mut self, open: usize) -> Result<(Atom, usize)> {
        if self.depth >= MAX_NESTING {
            return Err(self.error(open, format!("parentheses nest deeper than {MAX_NESTING} levels")));
        }
        self.depth += 1;
        let body = self.alternates(self.space(open + 1, true), true)?;
        self.depth -= 1;
        let end = body.end;
        match self.at(end) {
            Some(b')') => Ok((Atom::Group(body), end + 1)),
            None => Err(self.error(open, "`(` is never closed (missing `)`)")),
            Some(c) => Err(self.error(
                end,
                format!("unexpected character inside `( ... )`; expected an item, `|` or `)`{}", underscore_hint(c)),
            )),
        }
    }

    /// A `{m}`, `{m,}` or `{m,n}` repetition at `open`: its bounds as llama.cpp applies them and the position
    /// after its `}`.
    fn braces(&self, open: usize, nested: bool) -> Result<(u64, Option<u64>, usize)> {
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
        Ok((min, max, pos + 1))
    }
}

/// One element of a rule as llama.cpp builds it, as far as the checks need it (llama.cpp also keeps the
/// characters).
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
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// The rule with this index.
    Named(usize),
    /// A rule synthesised for a group or repetition inside the rule with this index.
    Synthesised(usize),
}

/// The rules llama.cpp's parser builds from an [`Ast`], including those it synthesises for groups and
/// repetitions, numbered as it numbers them: its limits and its checks for undefined rules and left recursion
/// are defined on these.
struct Llama<'a> {
    /// The grammar, for messages.
    src: &'a str,
    /// Its tree.
    ast: &'a Ast,
    /// The symbol id of each rule index, given where the name first appears, as llama.cpp gives them.
    ids: Vec<Option<u32>>,
    /// Where each symbol id came from; its length is the next id.
    origins: Vec<Origin>,
    /// Rule definitions by symbol id; `None` for ids that were referenced but not defined.
    rules: Vec<Option<Vec<Elem>>>,
    /// How many elements llama.cpp would have built so far.
    elements: usize,
}

impl<'a> Llama<'a> {
    /// Builds llama.cpp's rules from `ast`, checks its limits, that every rule is defined, that `root` is and
    /// that no rule is left-recursive; returns the index of `root`.
    fn check(src: &'a str, ast: &'a Ast) -> Result<usize> {
        let ids = vec![None; ast.names.len()];
        let mut llama = Llama { src, ast, ids, origins: Vec::new(), rules: Vec::new(), elements: 0 };
        for (rule, body) in &ast.defs {
            let id = llama.named(*rule);
            let elems = llama.alternates(body, *rule)?;
            llama.add_rule(id, elems);
        }
        llama.check_defined()?;
        let root = ast.root.filter(|&root| ast.defined[root].is_some()).ok_or_else(|| {
            grammar_error("there is no `root` rule; generation starts at `root`, so define it (`root ::= ...`)")
        })?;
        llama.check_left_recursion()?;
        Ok(root)
    }

    /// The symbol id of the rule with index `rule`.
    fn named(&mut self, rule: usize) -> u32 {
        let next = self.origins.len() as u32;
        *self.ids[rule].get_or_insert_with(|| {
            self.origins.push(Origin::Named(rule));
            next
        })
    }

    /// A fresh id for a rule synthesised inside the rule `base`.
    fn synthesise(&mut self, base: usize) -> u32 {
        self.origins.push(Origin::Synthesised(base));
        self.origins.len() as u32 - 1
    }

    /// Defines symbol `id` (a later definition replaces an earlier one, as in llama.cpp).
    fn add_rule(&mut self, id: u32, rule: Vec<Elem>) {
        let id = id as usize;
        if self.rules.len() <= id {
            self.rules.resize(id + 1, None);
        }
        self.rules[id] = Some(rule);
    }

    /// Counts `n` more elements, built at `pos`, against [`MAX_ELEMENTS`].
    fn grow(&mut self, n: usize, pos: usize) -> Result<()> {
        self.elements = self.elements.saturating_add(n);
        if self.elements > MAX_ELEMENTS {
            return Err(error(
                self.src,
                pos,
                format!(
                    "the grammar unrolls to more than {MAX_ELEMENTS} elements once its repetitions are expanded, \
                     which the server would build for every request; use `*` or `+`, or smaller counts"
                ),
            ));
        }
        Ok(())
    }

    /// The elements of `body`, inside the rule `base`.
    fn alternates(&mut self, body: &Body, base: usize) -> Result<Vec<Elem>> {
        let mut rule = Vec::new();
        for (i, sequence) in body.alternatives.iter().enumerate() {
            if i > 0 {
                rule.push(Elem::Alt);
            }
            for item in sequence {
                self.item(item, base, &mut rule)?;
            }
        }
        rule.push(Elem::End);
        self.grow(rule.len(), body.end)?;
        Ok(rule)
    }

    /// Appends `item` to `rule`, inside the rule `base`.
    fn item(&mut self, item: &Item, base: usize, rule: &mut Vec<Elem>) -> Result<()> {
        let start = rule.len();
        // How many rules the item stands for (1, or the symbols a group created), for llama.cpp's repetition limit.
        let mut rules = 1;
        // Literals and classes count when their closing delimiter is read, other items where they start.
        let (elem, count, pos) = match &item.atom {
            Atom::Literal(chars) => (Elem::Terminal, chars.len(), item.span.end - 1),
            Atom::Class { ranges, .. } => {
                let count = ranges.iter().map(|(_, last)| 1 + usize::from(last.is_some())).sum();
                (Elem::Terminal, count, item.span.end - 1)
            }
            Atom::Any | Atom::Token => (Elem::Terminal, 1, item.span.start),
            Atom::Rule(r) => (Elem::Ref(self.named(*r)), 1, item.span.start),
            Atom::Group(body) => {
                let before = self.origins.len();
                let sub = self.synthesise(base);
                let elems = self.alternates(body, base)?;
                self.add_rule(sub, elems);
                rules = (self.origins.len() - before) as u64;
                (Elem::Ref(sub), 1, item.span.start)
            }
        };
        rule.extend(std::iter::repeat_n(elem, count));
        self.grow(count, pos)?;
        for &rep in &item.reps {
            self.repeat(rep, base, rule, start, &mut rules)?;
        }
        Ok(())
    }

    /// Applies `rep` to the item that starts at `start` in `rule` and stands for `rules` rules, the way llama.cpp
    /// rewrites it: `S{m,n}` becomes `S` m times followed by `n - m` nested optional rules (one recursive rule if
    /// unbounded).
    fn repeat(&mut self, rep: Rep, base: usize, rule: &mut Vec<Elem>, start: usize, rules: &mut u64) -> Result<()> {
        let Rep { min, max, pos } = rep;
        let total = match max {
            Some(m) if m > 0 => m,
            _ => min.max(1),
        };
        if rules.saturating_mul(total) >= MAX_REPETITION {
            return Err(error(
                self.src,
                pos,
                format!(
                    "nested repetitions generate too many rules (the server's limit is {MAX_REPETITION}); reduce \
                     the counts or use `*` / `+`"
                ),
            ));
        }
        let item: Vec<Elem> = rule[start..].to_vec();
        if min == 0 {
            rule.truncate(start);
        } else {
            for _ in 1..min {
                self.grow(item.len(), pos)?;
                rule.extend_from_slice(&item);
            }
        }
        let optional = match max {
            None => 1,
            Some(m) => m - min,
        };
        let mut last_rec = 0;
        for i in 0..optional {
            let id = self.synthesise(base);
            let mut rec = item.clone();
            if i > 0 || max.is_none() {
                rec.push(Elem::Ref(if max.is_none() { id } else { last_rec }));
            }
            rec.push(Elem::Alt);
            rec.push(Elem::End);
            self.grow(rec.len(), pos)?;
            self.add_rule(id, rec);
            last_rec = id;
        }
        if optional > 0 {
            rule.push(Elem::Ref(last_rec));
        }
        *rules = rules.saturating_mul(total);
        Ok(())
    }

    /// Symbol `id` for messages.
    fn describe(&self, id: u32) -> String {
        match self.origins.get(id as usize) {
            Some(&Origin::Named(rule)) => format!("rule `{}`", self.ast.names[rule]),
            Some(&Origin::Synthesised(base)) => format!("a group or repetition in rule `{}`", self.ast.names[base]),
            None => format!("rule #{id}"),
        }
    }

    /// Every id that exists or is referenced has a definition (synthesised rules always do); the error names the
    /// undefined rule whose name appears first.
    fn check_defined(&self) -> Result<()> {
        let defined = |id: u32| self.rules.get(id as usize).is_some_and(Option::is_some);
        let missing = (self.rules.iter().flatten().flatten())
            .filter_map(|e| match e {
                Elem::Ref(id) => Some(*id),
                _ => None,
            })
            .chain(0..self.rules.len() as u32)
            .filter(|&id| !defined(id))
            .filter_map(|id| match self.origins.get(id as usize) {
                Some(&Origin::Named(rule)) => Some(rule),
                _ => None,
            })
            .min_by_key(|&rule| self.ast.first_use[rule]);
        match missing {
            None => Ok(()),
            Some(rule) => Err(error(
                self.src,
                self.ast.first_use[rule],
                format!(
                    "`{}` is referenced but never defined; add a rule `name ::= ...` for it (names may only contain \
                     letters, digits and `-`)",
                    self.ast.names[rule]
                ),
            )),
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
                                return Err(grammar_error(format!(
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

/// `constraint` with a GBNF grammar converted to Lark ([`to_lark`]); other kinds are returned unchanged.
///
/// # Errors
/// [`Error::InvalidInput`] naming the GBNF construct that cannot be parsed or converted.
pub fn into_lark(constraint: Constraint) -> Result<Constraint> {
    match constraint {
        Constraint::Gbnf(src) => Ok(Constraint::Grammar(to_lark(&src)?)),
        other => Ok(other),
    }
}

/// Converts a GBNF grammar (start rule `root`) to a grammar in llguidance's Lark dialect (start rule `start`) that
/// accepts exactly the same strings.
///
/// The grammar is parsed and checked exactly as [`Gbnf::parse`] does, and the conversion writes the tree those
/// checks accepted, keeping llama.cpp's reading of every construct: literals and character classes with all of GBNF's escapes (`\xNN`, `\uNNNN` and `\UNNNNNNNN` name
/// code points; an escape naming no Unicode scalar value, a surrogate for example, matches nothing), negated
/// classes and ranges (an inverted range matches nothing, `[]` and `[^]` match the empty string, as in llama.cpp),
/// `.` (any character, line breaks included), groups, alternatives, `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}` (an
/// upper bound over llama.cpp's limit of 2000 means no bound, as there) and a rule defined twice (the last
/// definition wins).
///
/// Why the Lark grammar has the same language: llguidance splits text into lexemes greedily (a lexeme is extended
/// as long as the next byte allows it, and never revisited), which would change the language if one lexeme could
/// be a prefix of the text another path needs. So every lexeme in the output matches exactly one character: each
/// character of a GBNF literal is its own string literal, every class and `.` a one-character regex. A complete
/// character ends every lexeme that matched it (valid UTF-8 is prefix-free), all lexemes matching it reach the
/// Earley parser, and greediness has nothing to choose. Everything else is a lowercase rule, so the GBNF grammar is
/// the same context-free grammar over characters. No `%ignore` is emitted, so no text is skipped.
///
/// One difference is llama.cpp's, not the grammar's: when a model token ends inside a multi-byte character,
/// llama.cpp refuses it under a negated class as soon as *some* character starting with those bytes is excluded
/// (`[^\u2028]` refuses the first bytes of U+2029, which only a token holding the whole character gets past). The
/// Lark grammar follows the grammar's meaning on whole characters and accepts U+2029 there.
///
/// Rule names are lowercased with `-` written `_` (`json-value` becomes `json_value`); a name not starting with a
/// letter gets the prefix `r_`, and a name that would clash with another (`Value` and `value`) or with `start`
/// gets a numeric suffix. Groups nested deeper than llguidance's parser allows become rules of their own.
///
/// ```
/// use catena_constraint::gbnf::to_lark;
///
/// # fn main() -> catena_core::Result<()> {
/// let lark = to_lark(r#"root ::= "yes" | "no" ws
/// ws ::= [ \t]*"#)?;
/// assert_eq!(lark.lines().find(|l| l.starts_with("start:")), Some("start: root"));
/// assert!(lark.contains(r#"root: "y" "e" "s" | "n" "o" ws"#), "{lark}");
///
/// let err = to_lark("root ::= <[128000]> \"hi\"").unwrap_err().to_string();
/// assert!(err.contains("line 1") && err.contains("<[128000]>"), "{err}");
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::InvalidInput`] when the grammar does not parse (see [`Gbnf::parse`]), or when it references a token
/// by id (`<[id]>`, `!<[id]>`); the error names the reference and its line. llguidance writes token ids the same
/// way (`<[id]>`, `<[^id]>`), but an id only means the same token in the same vocabulary, and the converted
/// grammar is used with other tokenizers (a text [`Validator`](crate::Validator) uses o200k), where the id would
/// silently name another token; so the reference is refused rather than carried over.
pub fn to_lark(src: &str) -> Result<String> {
    let (ast, root) = check(src)?;
    if let Some(token) = ast.first_token.clone() {
        return Err(error(
            src,
            token.start,
            format!(
                "the token reference `{}` names a token id of the vocabulary of the model llama.cpp runs; ids mean \
                 other tokens (or nothing) in another vocabulary and match no text, so a grammar with `<[id]>` or \
                 `!<[id]>` cannot be converted to Lark; send it to a llama.cpp server as GBNF, or write the token's \
                 text as a literal",
                &src[token]
            ),
        ));
    }
    Ok(Writer::new(&ast).write(root))
}

/// How deeply groups may nest in the Lark output; deeper ones become rules of their own (llguidance's Lark parser
/// refuses nesting deeper than 30).
const MAX_LARK_NESTING: usize = 16;

/// A regex that matches no string: a class holding no Unicode scalar value.
const LARK_NOTHING: &str = r"/[^\x{0}-\x{10FFFF}]/";

/// A regex matching any one character, line breaks included.
const LARK_ANY: &str = "/(?s:.)/";

/// What an emitted piece of Lark is, for deciding whether a repetition needs parentheses around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Nothing (the empty string).
    Empty,
    /// A single Lark atom (a literal, a regex, a rule name, a parenthesised group).
    Atom,
    /// Several atoms, or an atom with a repetition.
    Compound,
}

/// Writes an [`Ast`] as Lark.
struct Writer<'a> {
    /// The grammar.
    ast: &'a Ast,
    /// The Lark name of each GBNF rule.
    names: Vec<String>,
    /// The Lark names given so far.
    used: HashSet<String>,
    /// Rules created for deeply nested groups.
    helpers: Vec<(String, String)>,
}

impl<'a> Writer<'a> {
    /// A writer of `ast`, with the Lark names of its rules.
    fn new(ast: &'a Ast) -> Self {
        let mut used = HashSet::new();
        used.insert("start".to_string());
        let mut names = Vec::with_capacity(ast.names.len());
        for name in &ast.names {
            let mut base: String = name.chars().map(|c| if c == '-' { '_' } else { c.to_ascii_lowercase() }).collect();
            if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
                base.insert_str(0, "r_");
            }
            names.push(Self::fresh(&mut used, base));
        }
        Writer { ast, names, used, helpers: Vec::new() }
    }

    /// `base`, or `base_2`, `base_3`, ... whichever is not yet used.
    fn fresh(used: &mut HashSet<String>, base: String) -> String {
        let mut name = base.clone();
        let mut n = 2u64;
        while used.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        used.insert(name.clone());
        name
    }

    /// The Lark grammar, starting at the rule with index `root`: the rules in the order of their (last)
    /// definitions, then the helper rules.
    fn write(mut self, root: usize) -> String {
        let mut rules = Vec::new();
        for (i, (rule, body)) in self.ast.defs.iter().enumerate() {
            if self.ast.defined[*rule] == Some(i) {
                let body = self.alternatives(&body.alternatives, 0);
                rules.push((self.names[*rule].clone(), body));
            }
        }
        let mut out = String::from("// Converted from GBNF by catena; every lexeme is one character.\n");
        out.push_str(&format!("start: {}\n", self.names[root]));
        for (name, body) in rules.iter().chain(&self.helpers) {
            out.push_str(name);
            out.push(':');
            if !body.is_empty() {
                out.push(' ');
                out.push_str(body);
            }
            out.push('\n');
        }
        out
    }

    /// Alternatives at group depth `depth`.
    fn alternatives(&mut self, alternatives: &[Vec<Item>], depth: usize) -> String {
        let parts: Vec<String> = alternatives.iter().map(|seq| self.sequence(seq, depth).0).collect();
        parts.join(" | ")
    }

    /// A sequence at group depth `depth`.
    fn sequence(&mut self, items: &[Item], depth: usize) -> (String, Shape) {
        let mut parts = Vec::new();
        let mut shape = Shape::Empty;
        for item in items {
            let (text, s) = self.item(item, depth);
            if s != Shape::Empty {
                shape = if shape == Shape::Empty { s } else { Shape::Compound };
                parts.push(text);
            }
        }
        (parts.join(" "), shape)
    }

    /// A group at `depth`: parenthesised, or a rule of its own when it would nest too deeply.
    fn group(&mut self, body: String, depth: usize) -> String {
        if depth + 1 < MAX_LARK_NESTING {
            format!("({body})")
        } else {
            let name = Self::fresh(&mut self.used, "group".to_string());
            self.helpers.push((name.clone(), body));
            name
        }
    }

    /// An item and its repetitions at group depth `depth`. `?`, `*` and `+` applied to one another collapse into
    /// one (the counts they allow always form an interval) and `{1}` changes nothing, so that a long chain of them
    /// does not nest; other repetitions nest, each one level deeper.
    fn item(&mut self, item: &Item, depth: usize) -> (String, Shape) {
        let simple = |(min, max): (u64, Option<u64>)| min <= 1 && max.is_none_or(|m| m == 1);
        let mut layers: Vec<(u64, Option<u64>)> = Vec::new();
        for rep in item.reps.iter().map(|rep| (rep.min, rep.max)) {
            match layers.last_mut() {
                _ if rep == (1, Some(1)) => {}
                Some(last) if simple(*last) && simple(rep) => *last = (last.0 * rep.0, last.1.and(rep.1)),
                _ => layers.push(rep),
            }
        }
        if layers.iter().any(|&(_, max)| max == Some(0)) {
            return (String::new(), Shape::Empty);
        }
        let (mut text, mut shape) = self.atom(&item.atom, depth + layers.len());
        for (i, &(min, max)) in layers.iter().enumerate() {
            let atom = match shape {
                Shape::Empty => return (String::new(), Shape::Empty),
                Shape::Atom => text,
                Shape::Compound => self.group(text, depth + layers.len() - 1 - i),
            };
            let op = match (min, max) {
                (0, Some(1)) => "?".to_string(),
                (0, None) => "*".to_string(),
                (1, None) => "+".to_string(),
                (m, None) => format!("{{{m},}}"),
                (m, Some(n)) if m == n => format!("{{{m}}}"),
                (m, Some(n)) => format!("{{{m},{n}}}"),
            };
            (text, shape) = (format!("{atom}{op}"), Shape::Compound);
        }
        (text, shape)
    }

    /// What an item matches once, at group depth `depth`.
    fn atom(&mut self, atom: &Atom, depth: usize) -> (String, Shape) {
        match atom {
            Atom::Literal(chars) => {
                let parts: Vec<String> = chars.iter().map(|&c| lark_char(c)).collect();
                let shape = match parts.len() {
                    0 => Shape::Empty,
                    1 => Shape::Atom,
                    _ => Shape::Compound,
                };
                (parts.join(" "), shape)
            }
            Atom::Class { negated, ranges } => (lark_class(*negated, ranges), Shape::Atom),
            Atom::Any => (LARK_ANY.to_string(), Shape::Atom),
            // [`to_lark`] refuses token ids before writing; in another vocabulary they match no text.
            Atom::Token => (LARK_NOTHING.to_string(), Shape::Atom),
            Atom::Rule(rule) => (self.names[*rule].clone(), Shape::Atom),
            Atom::Group(body) => {
                let inner = if depth + 1 < MAX_LARK_NESTING { depth + 1 } else { 0 };
                let body = self.alternatives(&body.alternatives, inner);
                (self.group(body, depth), Shape::Atom)
            }
        }
    }
}

/// One character of a GBNF literal as a Lark lexeme; a code point that is no Unicode scalar value (a surrogate,
/// or over U+10FFFF) matches nothing in llama.cpp either.
fn lark_char(c: u32) -> String {
    match char::from_u32(c) {
        None => LARK_NOTHING.to_string(),
        Some('"') => r#""\"""#.to_string(),
        Some('\\') => r#""\\""#.to_string(),
        Some(ch) if ch.is_control() || (ch.is_whitespace() && ch != ' ') => format!("\"\\u{c:04x}\""),
        Some(ch) => format!("\"{ch}\""),
    }
}

/// A GBNF character class as a one-character Lark regex. Code points that are no Unicode scalar values are
/// dropped from ranges (no text contains them); an inverted range matches nothing, as in llama.cpp.
fn lark_class(negated: bool, ranges: &[(u32, Option<u32>)]) -> String {
    const SURROGATES: (u32, u32) = (0xD800, 0xDFFF);
    let mut valid = Vec::new();
    for &(lo, hi) in ranges {
        let hi = hi.unwrap_or(lo).min(0x10FFFF);
        for (a, b) in [(lo, hi.min(SURROGATES.0 - 1)), (lo.max(SURROGATES.1 + 1), hi)] {
            if a <= b {
                valid.push((a, b));
            }
        }
    }
    if valid.is_empty() {
        return if negated { LARK_ANY.to_string() } else { LARK_NOTHING.to_string() };
    }
    let one = |c: u32| match char::from_u32(c) {
        Some(ch) if ch.is_ascii_alphanumeric() => ch.to_string(),
        _ => format!("\\x{{{c:x}}}"),
    };
    let mut out = String::from(if negated { "/[^" } else { "/[" });
    for (a, b) in valid {
        out.push_str(&one(a));
        if b != a {
            out.push('-');
            out.push_str(&one(b));
        }
    }
    out.push_str("]/");
    out
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
            // `root` only named in a replaced definition: llama.cpp would read past the end of its rules.
            ("x ::= root\nx ::= \"a\"", "no `root` rule"),
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

/// [`to_lark`] on its own: names, errors, robustness (no grammar engine needed).
#[cfg(test)]
mod to_lark_tests {
    use super::*;

    #[test]
    fn rule_names_become_lowercase_and_never_clash() {
        let lark = to_lark(
            "root ::= json-value Value value start 1x r-1x\njson-value ::= \"a\"\nValue ::= \"b\"\nvalue ::= \"c\"\n\
             start ::= \"d\"\n1x ::= \"e\"\nr-1x ::= \"f\"",
        )
        .unwrap();
        let defined: Vec<&str> = lark.lines().filter_map(|l| l.split_once(':').map(|(name, _)| name)).collect();
        assert_eq!(defined, ["start", "root", "json_value", "value", "value_2", "start_2", "r_1x", "r_1x_2"], "{lark}");
        assert!(lark.contains("root: json_value value value_2 start_2 r_1x r_1x_2"), "{lark}");
        assert!(lark.contains("value: \"b\"") && lark.contains("value_2: \"c\""), "{lark}");
    }

    #[test]
    fn output_has_only_rules_and_one_character_lexemes() {
        let lark = to_lark(&json_gbnf()).unwrap();
        assert!(!lark.contains("%ignore"), "{lark}");
        for line in lark.lines().skip(1) {
            let name = line.split(':').next().unwrap();
            assert!(name.starts_with(|c: char| c.is_ascii_lowercase()), "terminal definition in {line:?}");
        }
        // Literals are split into characters.
        assert!(lark.contains(r#""t" "r" "u" "e""#), "{lark}");
    }

    #[test]
    fn token_references_are_refused_with_their_line() {
        for (text, construct, line) in
            [("root ::= \"a\"\nx ::= <[12]>\n", "`<[12]>`", "line 2"), ("root ::= \"a\" !<[7]>*", "`!<[7]>`", "line 1")]
        {
            let message = to_lark(text).unwrap_err().to_string();
            assert!(message.contains(construct) && message.contains(line), "{text:?}: {message}");
            assert!(message.contains("cannot be converted to Lark"), "{message}");
        }
    }

    #[test]
    fn a_replaced_definition_may_name_undefined_rules() {
        // llama.cpp accepts this (only `x`'s symbol id is past its rules), and so do the checks and the conversion.
        let text = "root ::= \"a\"\nroot ::= x\nroot ::= \"b\"";
        Gbnf::parse(text).unwrap();
        assert!(to_lark(text).unwrap().ends_with("start: root\nroot: \"b\"\n"));
    }

    #[test]
    fn invalid_grammars_fail_like_the_checker() {
        for text in ["root ::= answer", "root ::= \"a\"{3,2}", "root ::= root \"a\"", "", "root ::= <think>"] {
            let expected = Gbnf::parse(text).unwrap_err().to_string();
            assert_eq!(to_lark(text).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn long_chains_of_repetitions_and_deep_groups_stay_flat() {
        // llama.cpp calls `x?*` left-recursive, but long chains of `?` or of `+` are fine; they collapse.
        let chain = format!("root ::= \"a\"{}", "?".repeat(100_000));
        assert!(to_lark(&chain).unwrap().contains("root: \"a\"?\n"));
        let chain = format!("root ::= \"a\"{}", "+".repeat(1_000));
        assert!(to_lark(&chain).unwrap().contains("root: \"a\"+\n"));
        let deep = format!("root ::= {}\"a\"{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        let lark = to_lark(&deep).unwrap();
        let deepest = lark.lines().map(|l| l.matches('(').count()).max().unwrap();
        assert!(deepest < MAX_LARK_NESTING, "{lark}");
    }

    /// Feeds thousands of random and mutated grammars to `Gbnf::parse` and `to_lark`: they must return, never
    /// panic, and agree: `to_lark` fails with the checker's error, or refuses a token id in a grammar the checker
    /// accepts.
    #[test]
    fn never_panics_on_random_or_mutated_grammars() {
        let mut rng = fastrand::Rng::with_seed(0x9b4f);
        let seeds = fuzz_seeds();
        const ALPHABET: &[&str] = &[
            "\"", "[", "]", "(", ")", "|", "*", "+", "?", "{", "}", ",", "-", "^", ".", "\\", "\\x", "\\u", "\\U",
            "<[", "]>", "!", "#", "\n", "\r\n", " ", "::=", "root", "a", "0", "9", "2001", "é", "😀", "\u{0}",
            "x ::= ", "{0}", "{1,}", "{2,1}", "{0,3000}",
        ];
        let mut converted = 0;
        for round in 0..4000 {
            let text = if round % 5 == 0 {
                (0..rng.usize(1..40)).map(|_| ALPHABET[rng.usize(..ALPHABET.len())]).collect::<String>()
            } else {
                let mut text = seeds[rng.usize(..seeds.len())].clone();
                for _ in 0..rng.usize(1..4) {
                    let mut at = rng.usize(..=text.len());
                    while !text.is_char_boundary(at) {
                        at -= 1;
                    }
                    match rng.u8(..3) {
                        0 => text.insert_str(at, ALPHABET[rng.usize(..ALPHABET.len())]),
                        1 => {
                            let mut end = (at + rng.usize(1..6)).min(text.len());
                            while !text.is_char_boundary(end) {
                                end += 1;
                            }
                            text.replace_range(at..end, "");
                        }
                        _ => {
                            let mut end = (at + 1).min(text.len());
                            while !text.is_char_boundary(end) {
                                end += 1;
                            }
                            text.replace_range(at..end, ALPHABET[rng.usize(..ALPHABET.len())]);
                        }
                    }
                }
                text
            };
            let outcome = std::panic::catch_unwind(|| (Gbnf::parse(text.as_str()).map(|_| ()), to_lark(&text)));
            let Ok((checked, lark)) = outcome else { panic!("Gbnf::parse or to_lark panicked on {text:?}") };
            match (checked, lark) {
                (Ok(()), Ok(_)) => converted += 1,
                (Ok(()), Err(Error::InvalidInput(message))) => {
                    assert!(message.contains("cannot be converted to Lark"), "{text:?}: {message}")
                }
                (Err(expected), Err(error)) => assert_eq!(error.to_string(), expected.to_string(), "{text:?}"),
                (checked, lark) => panic!("{text:?}: the checker says {checked:?}, to_lark {lark:?}"),
            }
            if let Err(Error::InvalidInput(message)) = Gbnf::parse(text.as_str()) {
                assert!(message.starts_with("GBNF grammar"), "{message}");
            }
        }
        assert!(converted > 400, "only {converted} mutated grammars were valid; the fuzzing is too destructive");
    }

    pub(super) fn fuzz_seeds() -> Vec<String> {
        vec![
            json_gbnf(),
            "root ::= (expr \"=\" ws term \"\\n\")+\nexpr ::= term ([-+*/] term)*\nterm ::= [a-z]+ | [0-9]+ ws\n\
             ws ::= [ \\t\\n]*"
                .to_string(),
            "root ::= \"a\"{2,5} [^\\x00-\\x1F\"] . \"\\u00e9\" ([\\]\\-] | \"b\")? x\nx ::= \"q\"*".to_string(),
            "root ::= [a-] [] [^] \"\" \"\\U0001F600\"+\n# comment\nother-rule ::= root? \"x\" |\n  \"y\"".to_string(),
        ]
    }

    pub(super) fn json_gbnf() -> String {
        r#"root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws
array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws
string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws ::= | " " | "\n" [ \t]{0,20}
"#
        .to_string()
    }
}

/// The Lark output compiled by llguidance and checked against hand-picked strings, one construct at a time.
#[cfg(all(test, feature = "constrain"))]
mod lark_semantics_tests {
    use super::*;
    use crate::compile::ConstraintCompiler;
    use catena_core::Constraint;

    /// Converts `gbnf`, compiles the result for o200k, and checks every string in `accept` is a complete sentence
    /// and none in `reject` is.
    fn check(gbnf: &str, accept: &[&str], reject: &[&str]) {
        let lark = to_lark(gbnf).unwrap_or_else(|e| panic!("{gbnf:?}: {e}"));
        let grammar = Constraint::Grammar(lark.clone());
        ConstraintCompiler::o200k()
            .unwrap()
            .compile(&grammar)
            .unwrap_or_else(|e| panic!("{gbnf:?} converted to\n{lark}\ndoes not compile: {e}"));
        let validator = crate::Validator::new(&grammar).unwrap();
        for s in accept {
            if let Err(why) = validator.check(s) {
                panic!("{gbnf:?} should accept {s:?}: {why}\nLark:\n{lark}");
            }
        }
        for s in reject {
            assert!(validator.check(s).is_err(), "{gbnf:?} should reject {s:?}\nLark:\n{lark}");
        }
    }

    #[test]
    fn literals_with_every_escape() {
        check(
            r#"root ::= "a\n\t\r\\\"\x41\u00e9\U0001F600\[\]\-" "#,
            &["a\n\t\r\\\"Aé😀[]-"],
            &["a\n\t\r\\\"Aé😀[]", "a\\n\t\r\\\"Aé😀[]-", "", "a"],
        );
        check("root ::= \"日本\" \"語\"", &["日本語"], &["日本", "日本語 "]);
        check("root ::= \"x\" \"\" \"y\"", &["xy"], &["x", "x y"]);
        check("root ::= \"\\x7F\\x01\"", &["\u{7f}\u{1}"], &["\u{7f}"]);
        // \uD800 is no character: the literal matches nothing, as in llama.cpp.
        check("root ::= \"a\" | \"\\uD800\" | \"\\UFFFFFFFF\"", &["a"], &["", "\u{FFFD}"]);
    }

    #[test]
    fn character_classes() {
        check("root ::= [a-z0-9_]+", &["abc_09", "z"], &["", "A", "a-b"]);
        check(r#"root ::= [^"\\]*"#, &["", "abc", "é\n"], &["\"", "a\\"]);
        check(r"root ::= [\]\-\\^/]+", &["]-\\^/"], &["[", "a"]);
        check("root ::= [a-]+", &["a-a"], &["b"]);
        check(r"root ::= [\x00-\x1F]", &["\u{0}", "\n", "\u{1f}"], &[" ", "a"]);
        check("root ::= [α-ω]{2}", &["αω"], &["α", "Ω"]);
        check("root ::= [^a-c\\n]", &["d", "😀", "\r"], &["a", "b", "\n", ""]);
        check(r"root ::= [\u0100-\U0010FFFF]", &["Ā", "😀", "\u{10FFFF}"], &["ÿ", "a"]);
        // An inverted range matches nothing; surrogates are dropped from a range.
        check("root ::= [z-a] | \"ok\"", &["ok"], &["z", "a", "m"]);
        check(r"root ::= [\uD000-\uE000]", &["\u{D000}", "\u{D7FF}", "\u{E000}"], &["\u{CFFF}"]);
        check(r"root ::= [^\uD800]", &["a", "\n"], &["", "ab"]);
        // `[]` and `[^]` add nothing in llama.cpp: they match the empty string.
        check("root ::= \"x\" [] [^] \"y\"", &["xy"], &["x", "xzy"]);
    }

    #[test]
    fn any_character() {
        check("root ::= . .", &["ab", "\n😀", "日本"], &["a", "abc", ""]);
    }

    #[test]
    fn groups_alternatives_and_comments() {
        check("# comment\nroot ::= (\"a\" | \"b\" \"c\") | # trailing\n  \"d\"", &["a", "bc", "d"], &["b", "c", "ad"]);
        check("root ::= \"a\" |\n  \"b\" |\n  \"c\"", &["a", "b", "c"], &["ab"]);
        check("root ::= (\n  \"a\"\n  | \"b\"\n) \"!\"", &["a!", "b!"], &["!"]);
        check("root ::=\r\n  \"crlf\"\r\nother ::= root\r\n", &["crlf"], &["crl"]);
        check("root ::= | x\nx ::= \"x\"", &["", "x"], &["xx"]);
        check("root ::= ", &[""], &["a"]);
        check("root ::= ()", &[""], &["a"]);
    }

    #[test]
    fn repetitions() {
        check("root ::= \"ab\"*", &["", "ab", "abab"], &["a", "aba"]);
        check("root ::= \"ab\"+", &["ab", "abab"], &["", "a"]);
        check("root ::= \"ab\"? \"c\"", &["c", "abc"], &["ababc"]);
        check("root ::= [0-9]{3}", &["123"], &["12", "1234"]);
        check("root ::= [0-9]{2,}", &["12", "12345"], &["1"]);
        check("root ::= [0-9]{1,3}", &["1", "123"], &["", "1234"]);
        check("root ::= \"a\"{ 0 , 2 } \"b\"{0}", &["", "aa"], &["aaa", "b"]);
        check("root ::= (\"a\"{2}){2}", &["aaaa"], &["aa", "aaa", "aaaaaa"]);
        check("root ::= (\"a\" | \"bc\"){2,3}", &["aa", "bca", "abcbc"], &["a", "aaaa"]);
        check("root ::= \"a\"+*", &["", "a", "aaa"], &["b"]);
        check("root ::= \"a\"+?", &["", "a", "aaa"], &["b"]);
        check("root ::= (\"a\" \"b\"?)+*", &["", "a", "abaab"], &["b", "abb"]);
        check("root ::= \"ab\"{2}?", &["", "abab"], &["ab"]);
        // Over llama.cpp's limit of 2000, an upper bound means no bound.
        check("root ::= \"a\"{0,5000}", &["", &"a".repeat(2500)], &["b"]);
        check("root ::= \"a\"{1999}", &[&"a".repeat(1999)], &[&"a".repeat(1998)]);
    }

    #[test]
    fn rules_and_recursion() {
        check(
            "root ::= item (\",\" item)*\nitem ::= [a-z]+ | \"[\" root \"]\"",
            &["a", "a,b", "[a,[b]],c"],
            &["", "a,", "[a"],
        );
        check("root ::= \"a\" root | \"b\"", &["b", "aab"], &["a"]);
        check("root ::= json-value\njson-value ::= Value\nValue ::= \"v\"", &["v"], &["x"]);
        // A rule defined twice: llama.cpp keeps the last definition.
        check("root ::= \"a\"\nroot ::= \"b\"", &["b"], &["a"]);
        let deep = format!("root ::= {}\"a\"{}", "(".repeat(MAX_NESTING), ")+".repeat(MAX_NESTING));
        check(&deep, &["a", "aaa"], &[""]);
    }

    /// Greedy lexing would change these languages if lexemes were longer than one character.
    #[test]
    fn no_lexer_ambiguity() {
        check("root ::= (\"a\" | \"ab\") \"b\"", &["ab", "abb"], &["a", "b"]);
        check("root ::= [0-9]* [0-9] \"x\"", &["1x", "123x"], &["x"]);
        check("root ::= \"if\" | [a-z]+", &["if", "iff", "i"], &[""]);
        check("root ::= [a-c] \"1\" | \"b\" \"2\"", &["a1", "b1", "b2"], &["a2", "c2"]);
        check("root ::= \"ab\" \"c\" | \"a\" \"bcd\"", &["abc", "abcd"], &["ab"]);
        check("root ::= [^\"]* \"\\\"\"", &["abc\"", "\""], &["a\"b"]);
    }

    #[test]
    fn real_world_json_grammar() {
        check(
            &super::to_lark_tests::json_gbnf(),
            &[r#"{"a": [1, -2.5e3, true, null, "x\u00e9\n"], "b": {}}"#, "{}", "{\n  \"k\": \"v\"\n}"],
            &["[1]", "{\"a\":}", "{\"a\": 01}", "{'a': 1}", "{\"a\": \"\u{1}\"}"],
        );
    }

    /// Every mutated grammar that converts also compiles in llguidance.
    #[test]
    fn converted_fuzz_grammars_compile() {
        let compiler = ConstraintCompiler::o200k().unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let seeds = super::to_lark_tests::fuzz_seeds();
        let pieces = ["\"q\"", "[a-c]", "(", ")", "|", "*", "+", "?", "{2}", "{1,3}", ".", " ", "\n", "[^x]", "\"\""];
        let mut compiled = 0;
        for _ in 0..300 {
            let mut text = seeds[rng.usize(..seeds.len())].clone();
            let mut at = rng.usize(..=text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.insert_str(at, pieces[rng.usize(..pieces.len())]);
            if let Ok(lark) = to_lark(&text) {
                compiler
                    .compile(&Constraint::Grammar(lark.clone()))
                    .unwrap_or_else(|e| panic!("{text:?} converted to\n{lark}\nwhich llguidance rejects: {e}"));
                compiled += 1;
            }
        }
        assert!(compiled > 50, "only {compiled} mutations converted");
    }
}
