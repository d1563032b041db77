//! llm-katan, a real test server speaking the OpenAI, Anthropic, Gemini/Vertex and Azure APIs, installed by
//! `.ci/setup-katan.sh` in `$CATENA_CACHE_DIR/katan/venv`. [`Katan::start`] runs it with its `echo` backend (no
//! model: the answer reports what the server received) on a free 127.0.0.1 port and waits until it answers;
//! it is killed when dropped. Finding it panics with the install command when it is missing, so that a test never
//! passes without it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str = "install it with `bash .ci/setup-katan.sh`";

/// The `llm-katan` executable that `.ci/setup-katan.sh` installs; panics with the install command when missing.
pub fn executable() -> PathBuf {
    let path = catena_providers::cache_dir()
        .expect("neither CATENA_CACHE_DIR nor HOME is set")
        .join("katan/venv/bin/llm-katan");
    assert!(path.is_file(), "llm-katan is not installed at {}; {INSTALL}", path.display());
    path
}

/// A running llm-katan (echo backend); killed when dropped.
pub struct Katan {
    child: Child,
    port: u16,
    log: PathBuf,
    stats: PathBuf,
}

impl Katan {
    /// Starts llm-katan with the echo backend and the API `providers` (comma-separated, `anthropic`,
    /// `openai`, ...), plus `extra` arguments (failure simulation such as `--rate-limit-after 1`, key validation,
    /// ...), and waits (up to 30 s) until `GET /health` answers 200; panics with its log when it exits or does not
    /// come up.
    pub fn start(providers: &str, extra: &[&str]) -> Katan {
        let program = executable();
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let dir = std::env::temp_dir();
        let log = dir.join(format!("catena-katan-{}-{port}.log", std::process::id()));
        let stats = dir.join(format!("catena-katan-{}-{port}-stats.json", std::process::id()));
        let file = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(&program)
            .args(["--model", "echo", "--backend", "echo", "--host", "127.0.0.1", "--disable-dashboard"])
            .args(["--port", &port.to_string(), "--providers", providers])
            .arg("--stats-file")
            .arg(&stats)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}); {INSTALL}", program.display()));
        let mut katan = Katan { child, port, log, stats };
        let started = Instant::now();
        while !katan.healthy() {
            if let Ok(Some(status)) = katan.child.try_wait() {
                panic!("llm-katan exited ({status}):\n{}", katan.log());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "llm-katan did not come up:\n{}", katan.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        katan
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

    /// Its API root, `http://127.0.0.1:PORT` (Anthropic's endpoint is `/v1/messages`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client of its OpenAI API (`/v1`, the generic OpenAI dialect, model `echo`, any key), each call bounded
    /// by 30 s.
    pub fn openai_client(&self) -> catena_providers::openai::OpenAiClient {
        catena_providers::openai::OpenAiClient::builder()
            .base_url(format!("{}/v1", self.base_url()))
            .api_key("katan-key")
            .compat(catena_providers::openai::Compat::OpenAi)
            .model("echo")
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a client of llm-katan")
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Katan {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.stats);
    }
}
