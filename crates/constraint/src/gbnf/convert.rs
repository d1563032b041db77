//! Exact translations into GBNF: a choice of strings and a regular expression (the subset with a GBNF
//! equivalent), for servers that take grammars (llama.cpp).

use catena_core::{Error, Result};

use super::Gbnf;

/// A GBNF grammar whose language is exactly `options` (each verbatim).
///
/// ```
/// use catena_constraint::gbnf::choice_to_gbnf;
/// let g = choice_to_gbnf(&["yes".to_string(), "say \"no\"".to_string()]).unwrap();
/// assert_eq!(g.as_str(), r#"root ::= "yes" | "say \x22no\x22""#);
/// ```
///
/// # Errors
/// [`Error::InvalidInput`] for an empty list.
pub fn choice_to_gbnf(options: &[String]) -> Result<Gbnf> {
    if options.is_empty() {
        return Err(Error::InvalidInput(
            "Constraint::Choice needs at least one option; an empty choice allows no output".into(),
        ));
    }
    let mut text = String::from("root ::=");
    for (i, option) in options.iter().enumerate() {
        text.push_str(if i == 0 { " " } else { " | " });
        gbnf_literal(option, &mut text);
    }
    Gbnf::parse(text)
}

/// Appends `s` as a GBNF string literal: printable ASCII as is, everything else (and `"`, `\`) escaped.
fn gbnf_literal(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        if (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\' {
            out.push(c);
        } else {
            gbnf_escape(c, out);
        }
    }
    out.push('"');
}

fn gbnf_escape(c: char, out: &mut String) {
    let v = u32::from(c);
    if v <= 0xFF {
        out.push_str(&format!("\\x{v:02X}"));
    } else if v <= 0xFFFF {
        out.push_str(&format!("\\u{v:04X}"));
    } else {
        out.push_str(&format!("\\U{v:08X}"));
    }
}

/// Converts a regular expression (Rust `regex` syntax, matched against the whole text, as
/// [`Constraint::Regex`] means it) into a GBNF grammar with exactly the same language, for llama.cpp servers.
///
/// Everything that describes a set of strings converts: literals, classes (Unicode ones such as `\w` or `\p{L}`
/// become explicit ranges), `.`, case-insensitive flags, groups, alternation and every repetition (`*`, `+`, `?`,
/// `{m,n}`; laziness does not change what matches the whole text). `^`/`\A` at the very start and `$`/`\z` at
/// the very end are allowed (the match is anchored anyway). Assertions elsewhere (`\b`, `^` in the middle) have no
/// GBNF equivalent and are refused, as are patterns that match bytes outside UTF-8 (`(?-u:\xFF)`), rather than
/// approximated.
///
/// ```
/// use catena_constraint::gbnf::regex_to_gbnf;
/// let g = regex_to_gbnf("[a-c]{2}-(?:x|yz)?").unwrap();
/// assert_eq!(g.as_str(), r#"root ::= [a-c]{2} "-" ("x" | "yz")?"#);
/// assert!(regex_to_gbnf(r"\bword\b").is_err());
/// ```
///
/// # Errors
/// [`Error::InvalidInput`] for a regex that does not parse or whose grammar exceeds llama.cpp's limits;
/// [`Error::Unsupported`] naming the construct that has no exact GBNF form.
pub fn regex_to_gbnf(regex: &str) -> Result<Gbnf> {
    use regex_syntax::hir::{Hir, HirKind, Look};
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(regex)
        .map_err(|e| Error::InvalidInput(format!("invalid regex constraint: {e}")))?;
    // Drop anchors at the very start and end: the whole text is matched anyway.
    let is_start = |h: &Hir| matches!(h.kind(), HirKind::Look(Look::Start | Look::StartLF | Look::StartCRLF));
    let is_end = |h: &Hir| matches!(h.kind(), HirKind::Look(Look::End | Look::EndLF | Look::EndCRLF));
    let body: Vec<&Hir> = match hir.kind() {
        HirKind::Concat(items) => {
            let mut items: Vec<&Hir> = items.iter().collect();
            if items.first().is_some_and(|h| is_start(h)) {
                items.remove(0);
            }
            if items.last().is_some_and(|h| is_end(h)) {
                items.pop();
            }
            items
        }
        _ if is_start(&hir) || is_end(&hir) => Vec::new(),
        _ => vec![&hir],
    };
    let mut text = String::from("root ::= ");
    if body.is_empty() {
        text.push_str("\"\"");
    }
    for (i, h) in body.iter().enumerate() {
        if i > 0 {
            text.push(' ');
        }
        hir_to_gbnf(h, &mut text, 0)?;
    }
    Gbnf::parse(text).map_err(|e| {
        Error::InvalidInput(format!("the regex {regex:?} converts to a grammar llama.cpp would not accept: {e}"))
    })
}

fn hir_to_gbnf(hir: &regex_syntax::hir::Hir, out: &mut String, depth: usize) -> Result<()> {
    use regex_syntax::hir::{Class, HirKind};
    let unsupported = |what: String| {
        Err(Error::unsupported(
            "llama.cpp grammar conversion",
            format!("regex constraints with {what}"),
            "remove the construct from the regex, or use the validate-and-repair fallback (catena_constraint::structured)",
        ))
    };
    if depth > 48 {
        return unsupported("groups nested more than 48 deep".into());
    }
    match hir.kind() {
        HirKind::Empty => out.push_str("\"\""),
        HirKind::Literal(lit) => match std::str::from_utf8(&lit.0) {
            Ok(s) => gbnf_literal(s, out),
            Err(_) => return unsupported("a literal that is not UTF-8".into()),
        },
        HirKind::Class(Class::Unicode(class)) => {
            let ranges: Vec<(char, char)> = class.ranges().iter().map(|r| (r.start(), r.end())).collect();
            gbnf_class(&ranges, out).or_else(|()| unsupported("a class that matches nothing".into()))?;
        }
        HirKind::Class(Class::Bytes(class)) => {
            if class.ranges().iter().any(|r| r.end() > 0x7F) {
                return unsupported("a byte class beyond ASCII (which may match non-UTF-8 bytes)".into());
            }
            let ranges: Vec<(char, char)> =
                class.ranges().iter().map(|r| (char::from(r.start()), char::from(r.end()))).collect();
            gbnf_class(&ranges, out).or_else(|()| unsupported("a class that matches nothing".into()))?;
        }
        HirKind::Look(look) => return unsupported(format!("the assertion {look:?} (only a leading ^ and trailing $)")),
        HirKind::Repetition(rep) => {
            let mut sub = &*rep.sub;
            while let HirKind::Capture(cap) = sub.kind() {
                sub = &cap.sub;
            }
            // Classes, one-character literals and groups (concatenations and alternations bring their own
            // parentheses) take a repetition suffix directly.
            let atomic = match sub.kind() {
                HirKind::Class(_) | HirKind::Concat(_) | HirKind::Alternation(_) => true,
                HirKind::Literal(lit) => std::str::from_utf8(&lit.0).is_ok_and(|s| s.chars().count() == 1),
                _ => false,
            };
            if atomic {
                hir_to_gbnf(sub, out, depth + 1)?;
            } else {
                out.push('(');
                hir_to_gbnf(sub, out, depth + 1)?;
                out.push(')');
            }
            match (rep.min, rep.max) {
                (0, None) => out.push('*'),
                (1, None) => out.push('+'),
                (0, Some(1)) => out.push('?'),
                (m, None) => out.push_str(&format!("{{{m},}}")),
                (m, Some(n)) if m == n => out.push_str(&format!("{{{m}}}")),
                (m, Some(n)) => out.push_str(&format!("{{{m},{n}}}")),
            }
        }
        HirKind::Capture(cap) => hir_to_gbnf(&cap.sub, out, depth)?,
        HirKind::Concat(items) => {
            out.push('(');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                hir_to_gbnf(item, out, depth + 1)?;
            }
            out.push(')');
        }
        HirKind::Alternation(items) => {
            out.push('(');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(" | ");
                }
                hir_to_gbnf(item, out, depth + 1)?;
            }
            out.push(')');
        }
    }
    Ok(())
}

/// Appends a GBNF character class for these inclusive ranges; `Err` when there are none.
fn gbnf_class(ranges: &[(char, char)], out: &mut String) -> std::result::Result<(), ()> {
    if ranges.is_empty() {
        return Err(());
    }
    out.push('[');
    let push = |c: char, out: &mut String| {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            gbnf_escape(c, out);
        }
    };
    for &(start, end) in ranges {
        push(start, out);
        if end != start {
            out.push('-');
            push(end, out);
        }
    }
    out.push(']');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_convert_to_exact_grammars() {
        let g = |rx: &str| regex_to_gbnf(rx).map(Gbnf::into_string);
        assert_eq!(g("^a\\.b$").unwrap(), r#"root ::= "a.b""#);
        assert_eq!(g("(?i)x").unwrap(), "root ::= [Xx]");
        assert_eq!(g("\"|\\\\").unwrap(), r#"root ::= [\x22\x5C]"#);
        assert_eq!(g("(ab)*c{2,}").unwrap(), r#"root ::= ("ab")* "c"{2,}"#);
        assert_eq!(g("").unwrap(), r#"root ::= """#);
        assert_eq!(g(".").unwrap(), r"root ::= [\x00-\x09\x0B-\U0010FFFF]");
        assert!(matches!(g("a^b"), Err(Error::Unsupported { .. })));
        // Bytes outside UTF-8 are refused by the parser already.
        assert!(g("(?-u:\\xFF)").is_err());
        assert!(matches!(g("("), Err(Error::InvalidInput(_))));
    }
}
