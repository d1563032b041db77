//! The real MCP peers that `.ci/setup-mcp.sh` installs under `$CATENA_CACHE_DIR/mcp`: the `mcp-server-time`
//! stdio server (PyPI), `@modelcontextprotocol/server-everything` (npm; stdio, and streamable HTTP through
//! [`EverythingHttp`]) and the official conformance suite (npm `@modelcontextprotocol/conformance`). Each lookup
//! panics with the install command when the peer is missing, so that a test never passes without it.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str = "install the MCP test peers with `bash .ci/setup-mcp.sh`";

/// Where `.ci/setup-mcp.sh` installs the peers: `$CATENA_CACHE_DIR/mcp` (default `~/.cache/catena/mcp`).
pub fn peers_dir() -> PathBuf {
    catena_providers::cache_dir().expect("neither CATENA_CACHE_DIR nor HOME is set").join("mcp")
}

fn installed(path: PathBuf, what: &str) -> PathBuf {
    assert!(path.is_file(), "{what} is not installed at {}; {INSTALL}", path.display());
    path
}

/// The `mcp-server-time` stdio server's executable.
pub fn server_time() -> PathBuf {
    installed(peers_dir().join("venv/bin/mcp-server-time"), "mcp-server-time")
}

/// The `@modelcontextprotocol/server-everything` executable (a node script; argument `stdio` or `streamableHttp`).
pub fn server_everything() -> PathBuf {
    installed(
        peers_dir().join("npm/node_modules/.bin/mcp-server-everything"),
        "@modelcontextprotocol/server-everything",
    )
}

/// The conformance suite's `conformance` executable.
pub fn conformance() -> PathBuf {
    installed(peers_dir().join("npm/node_modules/.bin/conformance"), "@modelcontextprotocol/conformance")
}

/// `server-everything streamableHttp` on a free port (it listens on all interfaces; the tests reach it through
/// 127.0.0.1 only); killed when dropped.
pub struct EverythingHttp {
    child: Child,
    port: u16,
}

impl EverythingHttp {
    /// Starts the server and waits until its port accepts connections (up to 30 s); panics with its log when it
    /// exits or does not come up.
    pub fn start() -> EverythingHttp {
        let program = server_everything();
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let log = std::env::temp_dir().join(format!("catena-everything-{}-{port}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(&program)
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}); {INSTALL}", program.display()));
        let mut server = EverythingHttp { child, port };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = || std::fs::read_to_string(&log).unwrap_or_default();
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("server-everything exited ({status}):\n{}", log());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "server-everything did not come up:\n{}", log());
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Its MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

impl Drop for EverythingHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
