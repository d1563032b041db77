//! Shared helpers for end-to-end tests against real local model peers.
//!
//! - [`tiny_gguf`]: a tiny random-weight llama GGUF written by `scripts/tiny_gguf.py`, generated once per test
//!   binary (cached by the script's content in the system temporary directory).
//! - [`LlamaServer`]: a real llama-cpp-python OpenAI-compatible server (`python3 -m llama_cpp.server`) on a free
//!   127.0.0.1 port, killed when dropped or, for the per-binary [`shared_server`], when the test process exits.
//! - [`gguf_u32`]: reads an integer from a GGUF file's metadata (for example `llama.embedding_length`).
//!
//! Missing Python packages make the tests fail (never skip) with a message naming `.ci/setup-llama-server.sh`.

use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The seed of the tiny model's weights. The tests' expectations (for example that greedy decoding never ends
/// on its own) hold for every seed, this one is just fixed so that failures reproduce.
pub const TINY_SEED: u64 = 7;

/// The name the shared server gives the tiny model (`--model_alias`).
pub const TINY_ALIAS: &str = "tiny";

/// How long a server may take to answer `/v1/models` after it was spawned. It needs about 2.5 s on an idle
/// machine; the margin covers a busy CI machine.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

const SETUP_HINT: &str = "run `bash .ci/setup-llama-server.sh` from the repository root (it installs \
llama-cpp-python[server], gguf, tokenizers and numpy)";

/// The repository root: the nearest directory at or above this package's manifest holding
/// `scripts/tiny_gguf.py` (so the helpers work from the root package's tests too).
pub fn repo_root() -> PathBuf {
    let start = Path::new(env!("CARGO_MANIFEST_DIR")).canonicalize().expect("manifest directory exists");
    start
        .ancestors()
        .find(|dir| dir.join("scripts/tiny_gguf.py").is_file())
        .expect("scripts/tiny_gguf.py above the manifest directory")
        .to_path_buf()
}

/// The Python interpreter to use: `$PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Panics with an actionable message unless `python3` can import every module in `modules`.
pub fn require_python_modules(modules: &[&str]) {
    let script = format!("import {}", modules.join(", "));
    let out = Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; install Python 3 and {SETUP_HINT}", python()));
    if !out.status.success() {
        panic!(
            "Python modules {modules:?} are not importable ({}); {SETUP_HINT}",
            String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("no error output")
        );
    }
}

/// The tiny test model, generated with [`TINY_SEED`] on first use in this test binary.
pub fn tiny_gguf() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| generate_tiny_gguf(TINY_SEED))
}

/// Runs `scripts/tiny_gguf.py` unless a model for this seed and this version of the script is already cached.
pub fn generate_tiny_gguf(seed: u64) -> PathBuf {
    let script = repo_root().join("scripts/tiny_gguf.py");
    let source = fs::read(&script).unwrap_or_else(|e| panic!("cannot read {}: {e}", script.display()));
    let mut hasher = DefaultHasher::new();
    source.hash(&mut hasher);
    let dir = std::env::temp_dir().join("catena-tiny-gguf");
    let path = dir.join(format!("tiny-seed{seed}-{:016x}.gguf", hasher.finish()));
    if path.is_file() {
        return path;
    }
    require_python_modules(&["gguf", "tokenizers", "numpy"]);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let mut command = Command::new(python());
    command.arg(&script).arg(&path).arg("--seed").arg(seed.to_string());
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success() && path.is_file(),
        "{command:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// How to start a [`LlamaServer`]. Every field is explicit; [`ServerOptions::tiny`] is what the tests use.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The GGUF model file.
    pub model: PathBuf,
    /// The name `/v1/models` reports.
    pub alias: String,
    /// `--chat_format` (for example `chatml-function-calling`); `None` uses the GGUF's chat template.
    pub chat_format: Option<String>,
    /// `--embedding true`: serve `/v1/embeddings` (chat keeps working on the same instance).
    pub embedding: bool,
    /// `--interrupt_requests`: when true (llama-cpp-python's default) a new request ends a running stream early;
    /// tests run in parallel, so they need false.
    pub interrupt_requests: bool,
    /// `--n_ctx`: the context size.
    pub n_ctx: u32,
}

impl ServerOptions {
    /// The tiny model with embeddings on, its own chat template, no stream interruption and a 4096-token context.
    pub fn tiny() -> Self {
        ServerOptions {
            model: tiny_gguf().to_path_buf(),
            alias: TINY_ALIAS.to_string(),
            chat_format: None,
            embedding: true,
            interrupt_requests: false,
            n_ctx: 4096,
        }
    }
}

/// A running `python3 -m llama_cpp.server`. Dropping it kills the server; if the test process dies first, the
/// server notices that its stdin closed and exits too.
#[derive(Debug)]
pub struct LlamaServer {
    child: Child,
    /// Held open: the server's watchdog thread exits the server when this pipe closes.
    _stdin: ChildStdin,
    port: u16,
    log_path: PathBuf,
    options: ServerOptions,
}

/// Runs the llama-cpp-python server in this interpreter after starting a thread that exits the process as soon
/// as stdin reaches end of file, that is when the test process that spawned it exits, however it exits.
const WATCHDOG: &str = "import os, runpy, sys, threading
def watch():
    sys.stdin.buffer.read()
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
sys.argv = ['llama_cpp.server'] + sys.argv[1:]
runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)
";

impl LlamaServer {
    /// Starts a server and waits until `/v1/models` answers.
    ///
    /// # Panics
    /// When llama-cpp-python is not installed (naming `.ci/setup-llama-server.sh`), or when the server exits or does
    /// not answer within [`STARTUP_TIMEOUT`] (with the server's log).
    pub fn start(options: ServerOptions) -> LlamaServer {
        require_python_modules(&["llama_cpp", "llama_cpp.server", "uvicorn", "fastapi", "sse_starlette"]);
        let port = free_port();
        let log_dir = std::env::temp_dir().join("catena-llama-server-logs");
        fs::create_dir_all(&log_dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", log_dir.display()));
        let log_path = log_dir.join(format!("{}-{port}.log", std::process::id()));
        let log = File::create(&log_path).unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let mut command = Command::new(python());
        command
            .args(["-c", WATCHDOG])
            .arg("--model")
            .arg(&options.model)
            .args(["--model_alias", &options.alias])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--n_ctx", &options.n_ctx.to_string()])
            .args(["--n_threads", "1", "--n_threads_batch", "1"])
            .args(["--embedding", if options.embedding { "true" } else { "false" }])
            .args(["--interrupt_requests", if options.interrupt_requests { "true" } else { "false" }])
            .args(["--verbose", "false"]);
        if let Some(format) = &options.chat_format {
            command.args(["--chat_format", format]);
        }
        command
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log file handle can be cloned"))
            .stderr(log)
            .env("PYTHONUNBUFFERED", "1");
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot spawn {command:?}: {e}; {SETUP_HINT}"));
        let stdin = child.stdin.take().expect("stdin was piped");
        let mut server = LlamaServer { child, _stdin: stdin, port, log_path, options };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("can poll the server process") {
                panic!(
                    "llama.cpp server exited with {status} before answering /v1/models; {SETUP_HINT}\n--- server \
                     log {} ---\n{}",
                    self.log_path.display(),
                    self.log_tail()
                );
            }
            if let Ok((200, _)) = http_get(self.port, "/v1/models") {
                return;
            }
            if start.elapsed() > STARTUP_TIMEOUT {
                panic!(
                    "llama.cpp server on port {} did not answer /v1/models within {STARTUP_TIMEOUT:?}\n--- server \
                     log {} ---\n{}",
                    self.port,
                    self.log_path.display(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The OpenAI-compatible base URL, `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The options it was started with.
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// The model name to put in requests (the alias).
    pub fn model(&self) -> &str {
        &self.options.alias
    }

    /// An OpenAI-compatible client for this server: the llama.cpp profile, this server's model, a 120 s timeout
    /// (a loaded 2-core machine can be slow to answer).
    pub fn client(&self) -> catena_providers::openai::OpenAiClient {
        catena_providers::openai::OpenAiClient::builder()
            .base_url(self.base_url())
            .compat(catena_providers::openai::Compat::LlamaCpp)
            .model(self.model())
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client builds")
    }

    /// The last 8 KiB of the server's combined stdout and stderr, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let mut cut = text.len().saturating_sub(8192);
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text[cut..].to_string()
    }

    /// Whether the server process is still running (a crash shows up here and in [`LlamaServer::log_tail`]).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One server per test binary, shared by all its tests (which run in parallel threads): the tiny model with
/// [`ServerOptions::tiny`]. It lives until the test process exits, then its watchdog stops it.
pub fn shared_server() -> &'static LlamaServer {
    static SERVER: OnceLock<LlamaServer> = OnceLock::new();
    SERVER.get_or_init(|| LlamaServer::start(ServerOptions::tiny()))
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("can bind an ephemeral port on 127.0.0.1");
    listener.local_addr().expect("bound socket has an address").port()
}

/// A minimal blocking HTTP/1.1 GET to 127.0.0.1: the status code and the body. Enough to poll readiness without
/// an async runtime.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:.80}")))?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Reads an unsigned integer metadata value (GGUF types uint8..uint64, int8..int64) by key from a GGUF v2/v3
/// file, for example `gguf_u32(path, "llama.embedding_length")`. Panics if the file is not GGUF or lacks the key.
pub fn gguf_u32(path: &Path, key: &str) -> u32 {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut r = GgufCursor { bytes: &bytes, pos: 0 };
    assert_eq!(r.take(4), b"GGUF", "{} is not a GGUF file", path.display());
    let version = r.u32();
    assert!(version >= 2, "{}: GGUF version {version} is too old", path.display());
    let _tensors = r.u64();
    let kv_count = r.u64();
    for _ in 0..kv_count {
        let name = r.string();
        let value_type = r.u32();
        if name == key {
            let value = match value_type {
                0 | 1 => u64::from(r.take(1)[0]),
                2 | 3 => u64::from(u16::from_le_bytes(r.take(2).try_into().expect("2 bytes"))),
                4 | 5 => u64::from(r.u32()),
                10 | 11 => r.u64(),
                other => panic!("{}: {key} has GGUF type {other}, not an integer", path.display()),
            };
            return u32::try_from(value).unwrap_or_else(|_| panic!("{key} = {value} does not fit u32"));
        }
        r.skip_value(value_type);
    }
    panic!("{} has no metadata key {key}", path.display());
}

struct GgufCursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl GgufCursor<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().expect("4 bytes"))
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().expect("8 bytes"))
    }
    fn string(&mut self) -> String {
        let len = self.u64() as usize;
        String::from_utf8_lossy(self.take(len)).into_owned()
    }
    fn skip_value(&mut self, value_type: u32) {
        match value_type {
            0 | 1 | 7 => self.pos += 1,
            2 | 3 => self.pos += 2,
            4..=6 => self.pos += 4,
            10..=12 => self.pos += 8,
            8 => {
                self.string();
            }
            9 => {
                let item_type = self.u32();
                let count = self.u64();
                for _ in 0..count {
                    self.skip_value(item_type);
                }
            }
            other => panic!("unknown GGUF value type {other}"),
        }
    }
}
