//! A real Chroma server (`chroma run`, from the PyPI package `chromadb`, which `.ci/setup-chroma.sh` installs) on
//! a free port of 127.0.0.1, with its data in a fresh temporary folder; stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `chroma run` server.
pub struct ChromaServer {
    child: Child,
    url: String,
    data: PathBuf,
}

impl ChromaServer {
    /// Starts a server and waits until its heartbeat answers (up to two minutes). Panics with the install command
    /// when `chroma` is not on the PATH, and with the server's log when it does not come up.
    pub fn start() -> ChromaServer {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let data = std::env::temp_dir().join(format!("catena-chroma-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&data).expect("a data folder");
        let log = std::fs::File::create(data.join("server.log")).expect("a log file");
        let child = Command::new("chroma")
            .args(["run", "--host", "127.0.0.1", "--port", &port.to_string(), "--path"])
            .arg(data.join("db"))
            .stdout(log.try_clone().expect("a log handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `chroma run` ({e}); install it with `bash .ci/setup-chroma.sh`"));
        let mut server = ChromaServer { child, url: format!("http://127.0.0.1:{port}"), data };
        let started = Instant::now();
        while !server.heartbeat(port) {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("`chroma run` exited ({status}):\n{}", server.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "Chroma did not come up in 2 minutes:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    /// The server's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
    }

    fn heartbeat(&self, port: u16) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET /api/v2/heartbeat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200")
    }
}

impl Drop for ChromaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
