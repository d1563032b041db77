//! Qdrant behind Qdrant's real gRPC protocol: `qdrant_server.py` (in this crate's folder) serves the gRPC
//! services of Qdrant's published protocol with the server stubs and converters of the PyPI package
//! `qdrant-client`, over Qdrant's own local-mode engine (`QdrantLocal`) from the same package. The front is test
//! code; the engine and the protocol are Qdrant's. No Qdrant server binary can be installed on the machines catena
//! is tested on. `.ci/setup-qdrant.sh` installs the package.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running Qdrant gRPC test server on a free port of 127.0.0.1; killed when dropped, and exiting by itself when
/// the test process dies (it watches its standard input).
pub struct QdrantServer {
    child: Child,
    _stdin: ChildStdin,
    url: String,
    log: PathBuf,
}

impl QdrantServer {
    /// Starts a server with its data in memory.
    pub fn start() -> QdrantServer {
        Self::spawn(None)
    }

    /// Starts a server keeping its data in `dir` (a restart on the same folder finds it again).
    pub fn start_in(dir: &Path) -> QdrantServer {
        Self::spawn(Some(dir))
    }

    fn spawn(dir: Option<&Path>) -> QdrantServer {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("qdrant_server.py");
        let log = std::env::temp_dir().join(format!("catena-qdrant-{}-{port}.log", std::process::id()));
        let mut command = Command::new(crate::llama::python());
        command.arg(&script).args(["--port", &port.to_string()]);
        if let Some(dir) = dir {
            command.arg("--path").arg(dir);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("a log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}); install Python 3", script.display()));
        let stdin = child.stdin.take().expect("a piped stdin");
        let stdout = child.stdout.take().expect("a piped stdout");
        let (ready, wait) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("qdrant-grpc listening on") {
                    let _ = ready.send(());
                }
            }
        });
        let read_log = |log: &Path| std::fs::read_to_string(log).unwrap_or_default();
        if wait.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            panic!(
                "the Qdrant gRPC test server did not start (install its packages with `bash .ci/setup-qdrant.sh`):\n{}",
                read_log(&log)
            );
        }
        QdrantServer { child, _stdin: stdin, url: format!("http://127.0.0.1:{port}"), log }
    }

    /// The gRPC URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the server wrote to its standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for QdrantServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
