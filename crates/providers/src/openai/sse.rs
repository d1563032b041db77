//! An incremental parser for `text/event-stream` (Server-Sent Events) bodies.
//!
//! Network chunks split the stream anywhere: in the middle of a line, between `\r` and `\n`, inside a multi-byte
//! UTF-8 character. [`SseParser::push`] buffers the unfinished line and emits an [`SseEvent`] for every blank line
//! that ends an event. Comment lines (`: keep-alive`) and fields other than `data` and `event` are skipped, as the
//! SSE specification says.

/// One dispatched event: its `event:` name (if any) and its `data:` lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field, when the server set one (OpenAI does not; some servers send `event: error`).
    pub(crate) event: Option<String>,
    /// The data lines of the event, joined with `\n`.
    pub(crate) data: String,
}

/// A line of the event stream was not valid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidUtf8 {
    /// The first bytes of the offending line, lossily decoded, for the error message.
    pub(crate) line_start: String,
}

/// Incremental SSE parser; feed it bytes as they arrive.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// Bytes of the line that has not ended yet.
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` at the start of the next chunk belongs to that line ending.
    after_cr: bool,
    /// Data lines of the event being built.
    data: String,
    /// Whether the event being built has at least one data line (an empty `data:` line counts).
    has_data: bool,
    /// The event being built's `event:` name.
    event: Option<String>,
}

impl SseParser {
    /// Parses `bytes` and appends every event they complete to `out`.
    pub(crate) fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), InvalidUtf8> {
        let mut rest = bytes;
        if self.after_cr {
            self.after_cr = false;
            if let [b'\n', tail @ ..] = rest {
                rest = tail;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..pos]);
            let was_cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            if was_cr {
                match rest {
                    [b'\n', tail @ ..] => rest = tail,
                    [] => self.after_cr = true,
                    _ => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out)?;
        }
        self.line.extend_from_slice(rest);
        Ok(())
    }

    /// Ends the stream: a final event whose blank line never came is dispatched (lenient; servers that close the
    /// connection right after `data: [DONE]` exist), a trailing unterminated line is processed first.
    pub(crate) fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), InvalidUtf8> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out)?;
        }
        self.dispatch(out);
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), InvalidUtf8> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // comment
        }
        let line = std::str::from_utf8(line).map_err(|_| InvalidUtf8 {
            line_start: String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned(),
        })?;
        let (field, value) = match line.find(':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            _ => {} // `id`, `retry` and unknown fields do not matter for chat completions
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data {
            out.push(SseEvent { event: self.event.take(), data: std::mem::take(&mut self.data) });
        }
        self.has_data = false;
        self.event = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], sizes: &[usize]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            p.push(&rest[..n], &mut out).unwrap();
            rest = &rest[n..];
            i += 1;
        }
        p.finish(&mut out).unwrap();
        out
    }

    fn data(s: &str) -> SseEvent {
        SseEvent { event: None, data: s.to_string() }
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let input = "data: {\"a\":\"naïve ☃\"}\n\n: keep-alive\n\ndata:{\"b\":2}\r\n\r\nevent: error\ndata: x\ndata: y\n\ndata: [DONE]\n\n";
        let expected = vec![
            data("{\"a\":\"naïve ☃\"}"),
            data("{\"b\":2}"),
            SseEvent { event: Some("error".into()), data: "x\ny".into() },
            data("[DONE]"),
        ];
        for size in 1..input.len() {
            assert_eq!(parse_in_pieces(input.as_bytes(), &[size]), expected, "piece size {size}");
        }
        assert_eq!(parse_in_pieces(input.as_bytes(), &[3, 1, 7, 2]), expected);
    }

    #[test]
    fn bare_cr_line_endings_and_cr_split_from_lf() {
        let input = b"data: a\r\rdata: b\r\n\r\n";
        for size in 1..input.len() {
            assert_eq!(parse_in_pieces(input, &[size]), vec![data("a"), data("b")], "piece size {size}");
        }
    }

    #[test]
    fn unterminated_last_event_is_dispatched_at_eof() {
        assert_eq!(parse_in_pieces(b"data: [DONE]", &[100]), vec![data("[DONE]")]);
        assert_eq!(parse_in_pieces(b"data: [DONE]\n", &[100]), vec![data("[DONE]")]);
    }

    #[test]
    fn empty_data_line_is_an_event_and_comments_are_not() {
        assert_eq!(parse_in_pieces(b"data:\n\n:only a comment\n\n", &[100]), vec![data("")]);
    }

    #[test]
    fn invalid_utf8_is_reported() {
        let mut p = SseParser::default();
        let err = p.push(b"data: \xff\xfe\n\n", &mut Vec::new()).unwrap_err();
        assert!(err.line_start.starts_with("data: "), "{err:?}");
    }
}
