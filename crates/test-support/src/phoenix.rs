//! Arize Phoenix, a real OpenTelemetry trace backend (OTLP over HTTP/protobuf in, REST and GraphQL out),
//! installed by `.ci/setup-phoenix.sh` in `$CATENA_CACHE_DIR/phoenix-venv`. [`Phoenix::start`] runs
//! `phoenix serve` on free 127.0.0.1 ports with a temporary working directory (its SQLite database) and every
//! outbound feature off (no telemetry, no external resources, no assistant, no MCP server), waits until
//! `/healthz` answers, and stops it when dropped. Finding it panics with the install command when it is missing,
//! so that a test never passes without it.
//!
//! Phoenix takes OTLP on the same port as its UI and REST API (`POST /v1/traces`, protobuf only), files spans
//! into the project named by the `x-project-name` header (or the `openinference.project.name` resource
//! attribute, else `default`), and stores them a moment after the export returns: read them back with
//! [`Phoenix::wait_for_spans`].

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const INSTALL: &str = "install it with `bash .ci/setup-phoenix.sh`";

/// How long [`Phoenix::start`] waits for `/healthz` (Phoenix takes about 10 s on a busy two-core machine).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);

/// The `phoenix` executable that `.ci/setup-phoenix.sh` installs; panics with the install command when missing.
pub fn executable() -> PathBuf {
    let path = catena_providers::cache_dir()
        .expect("neither CATENA_CACHE_DIR nor HOME is set")
        .join("phoenix-venv/bin/phoenix");
    assert!(path.is_file(), "Phoenix is not installed at {}; {INSTALL}", path.display());
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// A running Phoenix server; stopped (SIGTERM, then killed after 10 s) and its working directory removed when
/// dropped.
pub struct Phoenix {
    child: Child,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    startup: Duration,
}

impl Phoenix {
    /// Starts `phoenix serve` offline on free ports and waits (up to [`STARTUP_TIMEOUT`]) until `GET /healthz`
    /// answers 200; panics with its log when it exits or does not come up.
    pub fn start() -> Phoenix {
        let program = executable();
        let port = free_port();
        let grpc_port = free_port();
        let dir = std::env::temp_dir().join(format!("catena-phoenix-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a working directory for Phoenix");
        let log = dir.join("phoenix.log");
        let file = std::fs::File::create(&log).expect("a log file");
        let mut command = Command::new(&program);
        command
            .arg("serve")
            .env("PHOENIX_WORKING_DIR", &dir)
            .env("PHOENIX_HOST", "127.0.0.1")
            .env("PHOENIX_PORT", port.to_string())
            // The gRPC receiver always starts and binds every interface: a port of its own per instance.
            .env("PHOENIX_GRPC_PORT", grpc_port.to_string())
            .env("PHOENIX_ALLOW_EXTERNAL_RESOURCES", "false")
            .env("PHOENIX_TELEMETRY_ENABLED", "false")
            .env("PHOENIX_DISABLE_AGENT_ASSISTANT", "true")
            .env("PHOENIX_ENABLE_MCP_SERVER", "false")
            .env("PHOENIX_LOG_MIGRATIONS", "false")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log handle"))
            .stderr(file);
        // Nothing of the caller's may point Phoenix at another database or make it export its own traces.
        for (name, _) in std::env::vars_os() {
            let name_str = name.to_string_lossy();
            if name_str.starts_with("OTEL_") || name_str.starts_with("PHOENIX_SQL") || name_str == "PHOENIX_ENABLE_AUTH"
            {
                command.env_remove(&name);
            }
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {} ({e}); {INSTALL}", program.display()));
        let started = Instant::now();
        let mut phoenix = Phoenix { child, port, dir, log, startup: Duration::ZERO };
        loop {
            if matches!(phoenix.get("/healthz"), Some((200, _))) {
                break;
            }
            if let Ok(Some(status)) = phoenix.child.try_wait() {
                panic!("Phoenix exited ({status}):\n{}", phoenix.log());
            }
            assert!(started.elapsed() < STARTUP_TIMEOUT, "Phoenix did not come up:\n{}", phoenix.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        phoenix.startup = started.elapsed();
        phoenix
    }

    /// How long it took to answer `/healthz`.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Its root, `http://127.0.0.1:PORT`: the UI, the REST API (`/v1/...`) and the OTLP base endpoint (what
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` takes; the exporter appends `/v1/traces`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its OTLP/HTTP traces endpoint, `http://127.0.0.1:PORT/v1/traces` (what
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` takes).
    pub fn traces_endpoint(&self) -> String {
        format!("{}/v1/traces", self.base_url())
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The spans of `project` (oldest first, at most 1000) as the REST API returns them
    /// (`GET /v1/projects/{project}/spans`): a JSON array of
    /// `{name, context: {trace_id, span_id}, parent_id, span_kind, status_code, attributes: {...}, events: [...]}`,
    /// with flat dotted attribute keys. An unknown project has no spans (an empty array); panics when Phoenix
    /// answers anything else.
    pub fn spans(&self, project: &str) -> Value {
        let path = format!("/v1/projects/{}/spans?limit=1000&sort=start_time&order=asc", encode(project));
        match self.get(&path) {
            Some((200, body)) => {
                let mut page: Value = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("Phoenix answered {path} with invalid JSON ({e}): {body}"));
                page.get_mut("data").map(Value::take).unwrap_or_else(|| panic!("no `data` in {body}"))
            }
            Some((404, _)) => Value::Array(Vec::new()),
            other => panic!("GET {path} failed: {other:?}\n{}", self.log()),
        }
    }

    /// Polls [`Phoenix::spans`] until `project` has at least `count` spans (Phoenix inserts exported spans in
    /// the background, a fraction of a second after the export), at most `timeout`; returns them, or panics
    /// listing what arrived.
    pub fn wait_for_spans(&self, project: &str, count: usize, timeout: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let spans = self.spans(project).as_array().cloned().unwrap_or_default();
            if spans.len() >= count {
                return spans;
            }
            assert!(
                started.elapsed() < timeout,
                "project {project} has {} spans after {timeout:?}, expected {count}: {spans:#?}",
                spans.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET path` over HTTP/1.0: the status and body, or `None` when the server does not answer.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nAccept: application/json\r\n\r\n", self.port);
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).ok()?;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let body = if chunked { dechunk(body)? } else { body.to_string() };
        Some((status, body))
    }
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Decodes a chunked HTTP body.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

impl Drop for Phoenix {
    fn drop(&mut self) {
        // SIGTERM lets uvicorn shut down cleanly (about 0.3 s); kill it if it does not.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
