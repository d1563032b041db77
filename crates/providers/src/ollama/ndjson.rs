//! An incremental splitter for newline-delimited JSON (NDJSON): bytes in, complete lines out.
//!
//! HTTP chunks cut a stream anywhere: inside a line, inside a UTF-8 character, between a `\r` and its `\n`. The
//! splitter keeps the unfinished line and hands out each line once its `\n` has arrived (a trailing `\r` removed;
//! lines of nothing but whitespace skipped), plus the last line at the end of the body even without a newline. It
//! works on bytes, so a character cut in two is whole again by the time its line is handed out; decoding the line
//! (UTF-8 and JSON) is the caller's job. A line longer than the splitter's limit is an error, so a server that
//! never sends a newline cannot make it hold unbounded memory.

/// The longest line the Ollama client accepts: 16 MiB (a streamed line carries one token, or whole tool calls;
/// a non-streamed answer, which can be long, is not split into lines).
pub(crate) const MAX_LINE: usize = 16 * 1024 * 1024;

/// A line exceeded the limit; the splitter holds nothing more after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineTooLong {
    /// The limit, in bytes.
    pub(crate) limit: usize,
    /// The start of the line, for error messages (at most 80 bytes, lossily decoded).
    pub(crate) start: String,
}

/// Splits a byte stream into lines (see the module documentation).
#[derive(Debug)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
    limit: usize,
    failed: bool,
}

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter::with_limit(MAX_LINE)
    }
}

impl LineSplitter {
    /// A splitter that refuses lines longer than `limit` bytes (not counting the `\n`).
    pub(crate) fn with_limit(limit: usize) -> Self {
        LineSplitter { buf: Vec::new(), limit, failed: false }
    }

    /// Adds `bytes` and appends every line they complete to `out`.
    ///
    /// # Errors
    /// [`LineTooLong`] when the unfinished line grows past the limit; the lines completed before it are still in
    /// `out`, and every later call returns nothing.
    pub(crate) fn push(&mut self, mut bytes: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), LineTooLong> {
        if self.failed {
            return Ok(());
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.append(&bytes[..end])?;
            self.emit(out);
            bytes = &bytes[end + 1..];
        }
        self.append(bytes)
    }

    /// Ends the stream: the last line, when it had no newline, is appended to `out`.
    pub(crate) fn finish(&mut self, out: &mut Vec<Vec<u8>>) {
        if !self.failed {
            self.emit(out);
        }
    }

    fn append(&mut self, piece: &[u8]) -> Result<(), LineTooLong> {
        if self.buf.len() + piece.len() > self.limit {
            let mut start = self.buf.clone();
            start.extend_from_slice(&piece[..piece.len().min(80)]);
            start.truncate(80);
            self.failed = true;
            self.buf = Vec::new();
            return Err(LineTooLong { limit: self.limit, start: String::from_utf8_lossy(&start).into_owned() });
        }
        self.buf.extend_from_slice(piece);
        Ok(())
    }

    fn emit(&mut self, out: &mut Vec<Vec<u8>>) {
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            out.push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_in(pieces: &[&[u8]], limit: usize) -> Result<Vec<String>, LineTooLong> {
        let mut s = LineSplitter::with_limit(limit);
        let mut out = Vec::new();
        for piece in pieces {
            s.push(piece, &mut out)?;
        }
        s.finish(&mut out);
        Ok(out.into_iter().map(|l| String::from_utf8(l).unwrap()).collect())
    }

    fn split(pieces: &[&[u8]]) -> Vec<String> {
        split_in(pieces, MAX_LINE).unwrap()
    }

    #[test]
    fn whole_lines_blank_lines_and_crlf() {
        let text = b"{\"a\":1}\n\n   \n{\"b\":2}\r\n\r\n{\"c\":3}";
        assert_eq!(split(&[text]), vec!["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
        assert_eq!(split(&[b"x\n"]), vec!["x"]);
        assert_eq!(split(&[b""]), Vec::<String>::new());
        assert_eq!(split(&[b"\n\n\r\n"]), Vec::<String>::new());
    }

    #[test]
    fn a_final_line_without_newline_comes_out_at_finish() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.push(b"{\"done\":true}", &mut out).unwrap();
        assert!(out.is_empty());
        s.finish(&mut out);
        assert_eq!(out, vec![b"{\"done\":true}".to_vec()]);
    }

    #[test]
    fn cuts_inside_utf8_characters_and_between_cr_and_lf() {
        let text = "{\"t\":\"naïve ☃ 🦀\"}\r\n{\"t\":\"é\"}\n";
        let bytes = text.as_bytes();
        for cut in 1..bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(split(&[a, b]), vec!["{\"t\":\"naïve ☃ 🦀\"}", "{\"t\":\"é\"}"], "cut at {cut}");
        }
        let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(split(&one_by_one), vec!["{\"t\":\"naïve ☃ 🦀\"}", "{\"t\":\"é\"}"]);
    }

    #[test]
    fn random_chunkings_give_the_same_lines() {
        // Seeded, so a failure reproduces; many shapes of input, each cut at random points.
        let mut rng = fastrand::Rng::with_seed(0x0011_a3a0);
        let alphabet = ["a", "{", "}", "\"", "é", "☃", "🦀", "\n", "\r\n", " ", "\n\n", "\\n"];
        for round in 0..500 {
            let mut text = String::new();
            for _ in 0..rng.usize(0..60) {
                text.push_str(alphabet[rng.usize(..alphabet.len())]);
            }
            let bytes = text.as_bytes();
            let expected = split(&[bytes]);
            let mut pieces: Vec<&[u8]> = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                let n = rng.usize(0..=rest.len().min(7));
                let (piece, tail) = rest.split_at(n);
                pieces.push(piece);
                rest = tail;
            }
            assert_eq!(split(&pieces), expected, "round {round}: {text:?} cut as {pieces:?}");
            // The reference: split on '\n', drop one '\r' before it, skip whitespace-only lines.
            let reference: Vec<String> = text
                .split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
                .filter(|l| !l.trim().is_empty())
                .collect();
            assert_eq!(expected, reference, "round {round}: {text:?}");
        }
    }

    #[test]
    fn a_line_past_the_limit_is_an_error_and_holds_no_more_memory() {
        assert_eq!(split_in(&[b"12345678\n"], 8).unwrap(), vec!["12345678"]);
        let err = split_in(&[b"1234", b"56789\n"], 8).unwrap_err();
        assert_eq!(err.limit, 8);
        assert_eq!(err.start, "123456789");
        // Lines completed before the long one are kept; nothing after it.
        let mut s = LineSplitter::with_limit(8);
        let mut out = Vec::new();
        assert!(s.push(b"ok\n0123456789", &mut out).is_err());
        assert_eq!(out, vec![b"ok".to_vec()]);
        assert!(s.buf.capacity() == 0);
        s.push(b"\nmore\n", &mut out).unwrap();
        s.finish(&mut out);
        assert_eq!(out.len(), 1);
        // Endless input without a newline, fed in small pieces: fails as soon as it passes the limit.
        let mut s = LineSplitter::with_limit(1000);
        let mut fed = 0;
        let result = loop {
            match s.push(&[b'x'; 64], &mut out) {
                Ok(()) => fed += 64,
                Err(e) => break e,
            }
            assert!(fed <= 1000);
        };
        assert_eq!(result.start.len(), 80);
    }
}
