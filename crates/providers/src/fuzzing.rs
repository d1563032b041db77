//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not a stable API): a response body, cut into
//! network chunks, through each provider's whole streaming path (the SSE or NDJSON framing, the event decoder,
//! tool-call argument accumulation, usage, the end-of-stream checks), exactly as a client reads a server's answer.
//! The property tests below run the same path on random and mutated bodies in every `cargo test`.

use std::sync::OnceLock;

use bytes::Bytes;
use futures::StreamExt;

use crate::anthropic::AnthropicClient;
use crate::gemini::GeminiClient;
use crate::ollama::OllamaClient;
use crate::openai::{Compat, IoRuntime, OpenAiClient};

/// A provider's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI's chat-completions SSE.
    OpenAi,
    /// Anthropic's Messages SSE.
    Anthropic,
    /// Gemini's `streamGenerateContent?alt=sse`.
    Gemini,
    /// Ollama's NDJSON.
    Ollama,
}

impl Format {
    /// All four.
    pub const ALL: [Format; 4] = [Format::OpenAi, Format::Anthropic, Format::Gemini, Format::Ollama];
}

struct Clients {
    openai: OpenAiClient,
    anthropic: AnthropicClient,
    gemini: GeminiClient,
    ollama: OllamaClient,
}

fn clients() -> &'static Clients {
    static CLIENTS: OnceLock<Clients> = OnceLock::new();
    CLIENTS.get_or_init(|| {
        let url = "http://127.0.0.1:9";
        Clients {
            openai: OpenAiClient::builder()
                .base_url(url)
                .compat(Compat::OpenAi)
                .model("m")
                .io_runtime(IoRuntime::Caller)
                .build()
                .expect("a client"),
            anthropic: AnthropicClient::builder()
                .base_url(url)
                .model("m")
                .io_runtime(IoRuntime::Caller)
                .build()
                .expect("a client"),
            gemini: GeminiClient::builder()
                .base_url(url)
                .model("m")
                .io_runtime(IoRuntime::Caller)
                .build()
                .expect("a client"),
            ollama: OllamaClient::builder()
                .host(url)
                .model("m")
                .io_runtime(IoRuntime::Caller)
                .build()
                .expect("a client"),
        }
    })
}

/// What reading one body gave.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Chunks before the end or the first error.
    pub chunks: usize,
    /// Whether the stream ended with an error (as its last item).
    pub error: bool,
    /// Items after an error (must be 0: an error ends a stream).
    pub after_error: usize,
}

/// Reads `body`, cut into chunks of `cut` bytes (at least 1), through `format`'s streaming path.
pub fn read(format: Format, body: &[u8], cut: usize) -> Outcome {
    let chunks: Vec<Bytes> = body.chunks(cut.max(1)).map(Bytes::copy_from_slice).collect();
    let c = clients();
    let mut stream = match format {
        Format::OpenAi => c.openai.stream_of(chunks),
        Format::Anthropic => c.anthropic.stream_of(chunks),
        Format::Gemini => c.gemini.stream_of(chunks),
        Format::Ollama => c.ollama.stream_of(chunks),
    };
    futures::executor::block_on(async move {
        let mut outcome = Outcome::default();
        while let Some(item) = stream.next().await {
            match item {
                _ if outcome.error => outcome.after_error += 1,
                Ok(_) => outcome.chunks += 1,
                Err(_) => outcome.error = true,
            }
        }
        outcome
    })
}

/// A valid streamed answer in `format` (text, a tool call with its arguments in pieces, usage), for seeding fuzzers
/// and the property tests.
pub fn sample(format: Format) -> &'static str {
    match format {
        Format::OpenAi => concat!(
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hej ☃ \"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\n",
            "data: [DONE]\n\n"
        ),
        Format::Anthropic => concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hej ☃\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":4}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        ),
        Format::Gemini => concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hej ☃\"}],\"role\":\"model\"},\"index\":0}]}\n\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"f\",\"args\":{\"a\":1}},\"thoughtSignature\":\"c2ln\"}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":4,\"totalTokenCount\":7}}\n\n"
        ),
        Format::Ollama => concat!(
            "{\"model\":\"m\",\"created_at\":\"2026-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"Hej ☃\"},\"done\":false}\n",
            "{\"model\":\"m\",\"created_at\":\"2026-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":{\"a\":1}}}]},\"done\":false}\n",
            "{\"model\":\"m\",\"created_at\":\"2026-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":3,\"eval_count\":4}\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample of each format reads whole at every chunk size, always to the same number of chunks.
    #[test]
    fn samples_read_the_same_at_every_cut() {
        for format in Format::ALL {
            let body = sample(format).as_bytes();
            let whole = read(format, body, body.len());
            assert!(!whole.error && whole.chunks > 0, "{format:?}: {whole:?}");
            for cut in 1..64 {
                assert_eq!(read(format, body, cut), whole, "{format:?} cut at {cut}");
            }
        }
    }

    /// Random mutations of the samples (bytes flipped, inserted, deleted, the body truncated) and random bytes:
    /// every read ends, yields nothing after an error, and never panics. A few thousand cases per format per run,
    /// seeded from the clock so that each run tries new ones (the seed is printed on failure).
    #[test]
    fn mutated_and_random_bodies_end_in_a_result_or_one_error() {
        let seed = std::env::var("CATENA_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7)
        });
        let mut rng = fastrand::Rng::with_seed(seed);
        let interesting: &[u8] = b"{}[]\":,\\\n\r data: event: [DONE] \xff\xc3\xe2\x98";
        for format in Format::ALL {
            let sample = sample(format).as_bytes();
            for case in 0..3000 {
                let mut body = sample.to_vec();
                match case % 4 {
                    0 => body = (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect(),
                    1 => body.truncate(rng.usize(0..=body.len())),
                    _ => {
                        for _ in 0..rng.usize(1..8) {
                            let at = rng.usize(0..=body.len());
                            match rng.u8(0..3) {
                                0 if at < body.len() => body[at] = interesting[rng.usize(0..interesting.len())],
                                1 => body.insert(at, interesting[rng.usize(0..interesting.len())]),
                                _ if at < body.len() => {
                                    body.remove(at);
                                }
                                _ => {}
                            }
                        }
                    }
                }
                let cut = rng.usize(1..40);
                let outcome = std::panic::catch_unwind(|| read(format, &body, cut)).unwrap_or_else(|_| {
                    panic!("{format:?} panicked (seed {seed}, case {case}) on {:?}", String::from_utf8_lossy(&body))
                });
                assert_eq!(outcome.after_error, 0, "{format:?} went on after an error (seed {seed}, case {case})");
            }
        }
    }
}
