//! Both I/O placements against real HTTP/1.1 servers on 127.0.0.1 (raw sockets, so the tests control every byte
//! and every pause). The evcxr case itself (two copies of tokio in one process) is exercised by
//! `notebooks/providers.ipynb`, which CI runs.

use std::time::Duration;

use catena_http::{HttpClient, IoRuntime};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const BOTH: [IoRuntime; 2] = [IoRuntime::Caller, IoRuntime::Dedicated];

/// Reads one request head from `socket`.
async fn read_head(socket: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A server that answers each connection with `chunks` of a chunked body, `pause` apart, and reports each request
/// head, then whether it saw the client go away before the body ended (`true`) or sent it whole (`false`).
async fn chunk_server(chunks: Vec<&'static str>, pause: Duration) -> (String, mpsc::UnboundedReceiver<(String, bool)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            let chunks = chunks.clone();
            tokio::spawn(async move {
                let head = read_head(&mut socket).await;
                let mut gone = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nx-test: yes\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
                    )
                    .await
                    .is_err();
                for chunk in &chunks {
                    if gone {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                    let framed = format!("{:x}\r\n{chunk}\r\n", chunk.len());
                    gone = socket.write_all(framed.as_bytes()).await.is_err() || socket.flush().await.is_err();
                }
                if !gone {
                    gone = socket.write_all(b"0\r\n\r\n").await.is_err();
                }
                let _ = tx.send((head, gone));
            });
        }
    });
    (url, rx)
}

fn client(io: IoRuntime, timeout: Duration) -> HttpClient {
    let reqwest = reqwest::Client::builder().read_timeout(timeout).connect_timeout(timeout).build().unwrap();
    let client = HttpClient::new(reqwest, io).unwrap();
    assert_eq!(client.io_runtime(), io);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_body_and_stream_arrive_whole_in_both_placements() {
    let (url, mut seen) = chunk_server(vec!["alpha ", "beta ", "gamma"], Duration::from_millis(5)).await;
    for io in BOTH {
        let http = client(io, Duration::from_secs(10));
        let request = http.reqwest().post(&url).header("x-sent", "1").body("payload").build().unwrap();
        let response = http.execute(request).await.unwrap();
        assert_eq!(response.status(), 200, "{io:?}");
        assert_eq!(response.headers()["x-test"], "yes", "{io:?}");
        assert_eq!(&response.bytes().await.unwrap()[..], b"alpha beta gamma", "{io:?}");
        let (head, gone) = seen.recv().await.unwrap();
        assert!(head.starts_with("POST / HTTP/1.1\r\n") && head.contains("x-sent: 1"), "{io:?}: {head}");
        assert!(!gone, "{io:?}");

        let request = http.reqwest().get(&url).build().unwrap();
        let stream = http.execute(request).await.unwrap().bytes_stream();
        let chunks: Vec<_> = stream.map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap()).collect().await;
        assert_eq!(chunks.concat(), "alpha beta gamma", "{io:?}");
        assert!(!seen.recv().await.unwrap().1);

        let mut response = http.execute(http.reqwest().get(&url).build().unwrap()).await.unwrap();
        let mut whole = String::new();
        while let Some(chunk) = response.chunk().await.unwrap() {
            whole.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        assert_eq!(whole, "alpha beta gamma");
        assert!(response.chunk().await.unwrap().is_none(), "a finished body stays finished");
        assert!(!seen.recv().await.unwrap().1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_body_midway_closes_the_connection_in_both_placements() {
    let many: Vec<&'static str> = vec!["x"; 400];
    let (url, mut seen) = chunk_server(many, Duration::from_millis(10)).await;
    for io in BOTH {
        let http = client(io, Duration::from_secs(10));
        let mut stream = http.execute(http.reqwest().get(&url).build().unwrap()).await.unwrap().bytes_stream();
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"x");
        drop(stream);
        let (_, gone) = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await.unwrap().unwrap();
        assert!(gone, "{io:?}: the server should see the client leave long before 400 chunks x 10 ms");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_refused_connections_are_typed_and_name_their_cause() {
    // A server that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    for io in BOTH {
        let http = client(io, Duration::from_millis(300));
        let err = http.execute(http.reqwest().get(&silent_url).build().unwrap()).await.unwrap_err();
        assert!(err.is_timeout(), "{io:?}: {err}");
        assert!(err.to_string().contains("timed out"), "{io:?}: {err}");
        let err = http.execute(http.reqwest().get(&closed_url).build().unwrap()).await.unwrap_err();
        assert!(err.is_connect(), "{io:?}: {err}");
        assert!(err.to_string().to_lowercase().contains("refused"), "{io:?}: the cause is named: {err}");
        assert!(err.reqwest().is_some());
    }
}

/// A stalled body fails with a timeout instead of hanging, on the dedicated thread as on the caller's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_times_out() {
    let (url, _seen) = chunk_server(vec!["first", "never in time"], Duration::from_secs(30)).await;
    for io in BOTH {
        let http = client(io, Duration::from_millis(300));
        let mut response = http.execute(http.reqwest().get(&url).build().unwrap()).await.unwrap();
        let err = loop {
            match response.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("{io:?}: the body cannot end before its 30 s pause"),
                Err(e) => break e,
            }
        };
        assert!(err.is_timeout(), "{io:?}: {err}");
        assert!(response.chunk().await.unwrap().is_none(), "{io:?}: the body ends after its error");
    }
}

/// The dedicated placement does not depend on the runtime that built the client: a client built on one runtime
/// keeps working from another after the first is gone, and a body outlives the client.
#[test]
fn a_dedicated_client_outlives_the_runtime_that_built_it() {
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    let (url, _seen) = server_rt.block_on(chunk_server(vec!["one ", "two"], Duration::from_millis(5)));

    let first = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let http = first.block_on(async { client(IoRuntime::Dedicated, Duration::from_secs(10)) });
    drop(first);

    let second = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    second.block_on(async {
        let response = http.execute(http.reqwest().get(&url).build().unwrap()).await.unwrap();
        assert_eq!(&response.bytes().await.unwrap()[..], b"one two");
        let response = http.execute(http.reqwest().get(&url).build().unwrap()).await.unwrap();
        drop(http);
        assert_eq!(&response.bytes().await.unwrap()[..], b"one two", "the body outlives the client");
    });
    // No runtime at all: the caller's future is driven by a plain executor.
    let http = client(IoRuntime::Dedicated, Duration::from_secs(10));
    let body = futures::executor::block_on(async {
        let response = http.execute(http.reqwest().get(&url).build().unwrap()).await.unwrap();
        response.bytes().await.unwrap()
    });
    assert_eq!(&body[..], b"one two");
}

#[test]
fn detect_follows_the_evcxr_variable() {
    // Read-only: the test process is not evcxr.
    assert_eq!(IoRuntime::detect(), IoRuntime::Caller);
}
