//! LiteLLM's proxy (installed by `.ci/setup-litellm.sh` in `$CATENA_CACHE_DIR/litellm/venv`) in front of a real
//! llama.cpp server (llama-cpp-python on SmolLM2-135M-Instruct): its Anthropic-format `/v1/messages` endpoint
//! translates a Messages API conversation for the model, so a client of Anthropic's format reaches a real model.
//! [`LiteLlmProxy::start`] starts both on free 127.0.0.1 ports and waits until they answer; both are stopped when
//! it is dropped, or when the test process exits (each watches its stdin). A missing install makes it panic with
//! the command that installs it.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::llama::{free_port, http_get, LlamaServer, ServerOptions};

const INSTALL: &str = "install it with `bash .ci/setup-litellm.sh`";

/// Runs LiteLLM's proxy after starting a thread that exits the process when stdin reaches end of file (the test
/// process that spawned it is gone, however it ended).
const WATCHDOG: &str = "import os, sys, threading
def watch():
    sys.stdin.buffer.read()
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
from litellm import run_server
sys.argv = ['litellm'] + sys.argv[1:]
sys.exit(run_server())
";

/// The interpreter of LiteLLM's virtualenv; panics with the install command when it is missing.
pub fn python() -> PathBuf {
    let path = catena_providers::cache_dir()
        .expect("neither CATENA_CACHE_DIR nor HOME is set")
        .join("litellm/venv/bin/python");
    let litellm = path.with_file_name("litellm");
    assert!(litellm.is_file(), "LiteLLM is not installed at {}; {INSTALL}", litellm.display());
    path
}

/// A running LiteLLM proxy routing the model [`LiteLlmProxy::MODEL`] to a llama.cpp server on SmolLM2.
pub struct LiteLlmProxy {
    child: Child,
    _stdin: ChildStdin,
    port: u16,
    log: PathBuf,
    config: PathBuf,
    llama: LlamaServer,
}

impl LiteLlmProxy {
    /// The model name the proxy serves (routed as `hosted_vllm/smollm2`, LiteLLM's OpenAI-compatible provider).
    pub const MODEL: &'static str = "smollm2";

    /// Starts llama-cpp-python's server on SmolLM2 (2048-token context) and LiteLLM's proxy in front of it
    /// (no master key: a local proxy), and waits (up to 120 s) until `/health/liveliness` answers 200; panics with
    /// the proxy's log when it exits or does not come up.
    pub fn start() -> LiteLlmProxy {
        let python = python();
        let llama = LlamaServer::start(ServerOptions {
            model: crate::smollm2_path(),
            alias: Self::MODEL.to_string(),
            chat_format: None,
            embedding: false,
            interrupt_requests: false,
            n_ctx: 2048,
        });
        let port = free_port();
        let dir = std::env::temp_dir();
        let config = dir.join(format!("catena-litellm-{}-{port}.yaml", std::process::id()));
        std::fs::write(
            &config,
            format!(
                "model_list:\n  - model_name: {model}\n    litellm_params:\n      model: hosted_vllm/{model}\n      \
                 api_base: http://127.0.0.1:{llama_port}/v1\n      api_key: none\n",
                model = Self::MODEL,
                llama_port = llama.port()
            ),
        )
        .expect("the proxy's config file is written");
        let log = dir.join(format!("catena-litellm-{}-{port}.log", std::process::id()));
        let file = File::create(&log).expect("a log file");
        let mut child = Command::new(&python)
            .args(["-c", WATCHDOG, "--config"])
            .arg(&config)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--telemetry", "False"])
            // A proxy on 127.0.0.1 for one test needs no master key; LiteLLM refuses to start without one unless told.
            .env("LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY", "true")
            // The bundled model cost map, not a download.
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(file.try_clone().expect("a log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start LiteLLM with {} ({e}); {INSTALL}", python.display()));
        let stdin = child.stdin.take().expect("stdin was piped");
        let mut proxy = LiteLlmProxy { child, _stdin: stdin, port, log, config, llama };
        let started = Instant::now();
        while !matches!(http_get(port, "/health/liveliness"), Ok((200, _))) {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("LiteLLM exited ({status}):\n{}", proxy.log());
            }
            assert!(started.elapsed() < Duration::from_secs(120), "LiteLLM did not come up:\n{}", proxy.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        proxy
    }

    /// The proxy's API root, `http://127.0.0.1:PORT` (the Anthropic-format endpoint is `/v1/messages`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The llama.cpp server behind the proxy.
    pub fn llama(&self) -> &LlamaServer {
        &self.llama
    }

    /// What the proxy has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LiteLlmProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.config);
    }
}
