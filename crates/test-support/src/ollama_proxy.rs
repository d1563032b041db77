//! A real server of Ollama's native API for the Ollama provider's peer tests: ollama-proxy-plus (PyPI), installed
//! by `.ci/setup-ollama-proxy.sh` in `$CATENA_CACHE_DIR/ollama-proxy/venv`, in front of llm-katan's OpenAI
//! endpoint (echo backend, [`crate::katan`]).
//!
//! Ollama's own binary cannot be installed on the test machines. ollama-proxy-plus answers `/api/chat` as Ollama
//! does (one JSON object, or newline-delimited JSON objects with a final `"done": true` line carrying
//! `done_reason` and the counts) and forwards the conversation to an OpenAI-compatible provider; llm-katan's echo
//! backend answers with what it received, so a test sees its messages and options come back. What the proxy does
//! not reproduce: tool calls (it forwards text only), token counts (it counts words, differently in plain and
//! streamed answers), and `/api/embed` needs an upstream with embeddings, which llm-katan has not.
//!
//! [`OllamaPeer::start`] runs both on free 127.0.0.1 ports and waits until they answer; both are killed when it is
//! dropped. Finding either program panics with the install command when it is missing, so that a test never passes
//! without it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::katan::Katan;

const INSTALL: &str = "install it with `bash .ci/setup-ollama-proxy.sh`";

/// The routing prefix of the upstream in model names: `katan/<model>` goes to llm-katan.
pub const PREFIX: &str = "katan";

/// The `ollama-proxy` executable that `.ci/setup-ollama-proxy.sh` installs; panics with the install command
/// when missing.
pub fn executable() -> PathBuf {
    let path = catena_providers::cache_dir()
        .expect("neither CATENA_CACHE_DIR nor HOME is set")
        .join("ollama-proxy/venv/bin/ollama-proxy");
    assert!(path.is_file(), "ollama-proxy-plus is not installed at {}; {INSTALL}", path.display());
    path
}

/// ollama-proxy-plus in front of llm-katan; both killed when dropped.
pub struct OllamaPeer {
    child: Child,
    port: u16,
    log: PathBuf,
    katan: Katan,
}

impl OllamaPeer {
    /// Starts llm-katan (OpenAI API, echo backend, with `katan_extra` arguments such as key validation) and the
    /// proxy in front of it, sending `upstream_key` as the OpenAI key, and waits (up to 30 s) until the proxy's
    /// `GET /health` answers 200; panics with its log when it exits or does not come up.
    pub fn start(upstream_key: &str, katan_extra: &[&str]) -> OllamaPeer {
        let katan = Katan::start("openai", katan_extra);
        let program = executable();
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let log = std::env::temp_dir().join(format!("catena-ollama-proxy-{}-{port}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("a log file");
        let prefix = PREFIX.to_ascii_uppercase();
        let child = Command::new(&program)
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .env(format!("PROVIDERS_{prefix}_BASE_URL"), format!("{}/v1", katan.base_url()))
            .env(format!("PROVIDERS_{prefix}_API_KEY"), upstream_key)
            // It reads ./ollama-proxy.yaml when there is one: run it where there is none.
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}); {INSTALL}", program.display()));
        let mut peer = OllamaPeer { child, port, log, katan };
        let started = Instant::now();
        while !peer.healthy() {
            if let Ok(Some(status)) = peer.child.try_wait() {
                panic!("ollama-proxy exited ({status}):\n{}", peer.log());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "ollama-proxy did not come up:\n{}", peer.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        peer
    }

    fn healthy(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
    }

    /// `127.0.0.1:PORT`, as `OLLAMA_HOST` is often written (no scheme).
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the proxy has logged so far, then llm-katan's log.
    pub fn log(&self) -> String {
        let proxy = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("{proxy}\n--- llm-katan ---\n{}", self.katan.log())
    }
}

impl Drop for OllamaPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
