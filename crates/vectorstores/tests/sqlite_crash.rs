//! No acknowledged write is lost when the writing process is killed with SIGKILL at a random point.
//!
//! The test runs this same test binary again as a child (`writer_child`, which does nothing unless
//! `CATENA_SQLITE_CRASH_FILE` is set): the child upserts and deletes batches in a `SqliteStore` and prints a line
//! after each call returns. The parent kills it after a random delay, reopens the file, and checks that every
//! acknowledged upsert and delete is there, that SQLite's integrity check passes, and that the store still
//! searches and takes writes. Five rounds on the same file, each killed at another point.
#![cfg(feature = "sqlite")]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use catena_core::{Document, EmbeddedDocument, Metadata, SearchRequest, VectorStore};
use catena_vectorstores::{Metric, SqliteStore};

const DIM: usize = 8;
const BATCH: usize = 20;

fn vector(round: u64, batch: u64, j: usize) -> Vec<f32> {
    (0..DIM).map(|d| ((round * 31 + batch * 7 + j as u64 * 3 + d as u64) % 17) as f32 - 8.0 + 0.5).collect()
}

fn batch(round: u64, i: u64) -> Vec<EmbeddedDocument> {
    (0..BATCH)
        .map(|j| EmbeddedDocument {
            document: Document::with_id(
                format!("r{round}-{i}-{j}"),
                format!("round {round} batch {i} doc {j}"),
                Metadata::new(),
            ),
            vector: vector(round, i, j),
        })
        .collect()
}

/// The child: writes until killed. Does nothing in a normal test run.
#[test]
fn writer_child() {
    let Some(path) = std::env::var_os("CATENA_SQLITE_CRASH_FILE") else { return };
    let round: u64 = std::env::var("CATENA_SQLITE_CRASH_ROUND").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(path, DIM, Metric::L2).await.unwrap();
        let mut out = std::io::stdout().lock();
        for i in 0.. {
            store.upsert(batch(round, i)).await.unwrap();
            writeln!(out, "upserted {i}").unwrap();
            if i % 3 == 2 {
                store.delete(&[format!("r{round}-{}-0", i - 1)]).await.unwrap();
                writeln!(out, "deleted {}", i - 1).unwrap();
            }
            out.flush().unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.sqlite");
    let mut rng = fastrand::Rng::with_seed(9);
    let mut total_acked = 0;
    for round in 0..5u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["writer_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("CATENA_SQLITE_CRASH_FILE", &path)
            .env("CATENA_SQLITE_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader =
            std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>());
        // Let it write for a while (it first has to start and open the file), then SIGKILL it mid-stream.
        tokio::time::sleep(Duration::from_millis(rng.u64(300..1500))).await;
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let mut upserted = Vec::new();
        let mut deleted = Vec::new();
        for line in &lines {
            match line.split_once(' ') {
                Some(("upserted", i)) => upserted.push(i.parse::<u64>().unwrap()),
                Some(("deleted", i)) => deleted.push(i.parse::<u64>().unwrap()),
                _ => {} // the test harness's own lines
            }
        }
        assert!(upserted.len() >= 2, "round {round}: the child acknowledged only {} batches in time", upserted.len());
        total_acked += upserted.len();

        let store = SqliteStore::open(&path, DIM, Metric::L2).await.expect("the killed store reopens");
        // A delete the child was killed before acknowledging may or may not have committed: the one that follows
        // the last acknowledged upsert when that upsert's index is 2 mod 3.
        let unacknowledged_delete =
            upserted.last().filter(|&&last| last % 3 == 2).map(|&last| last - 1).filter(|i| !deleted.contains(i));
        for &i in &upserted {
            let ids: Vec<String> = (0..BATCH).map(|j| format!("r{round}-{i}-{j}")).collect();
            let got = store.get(&ids).await.unwrap();
            let expected = if deleted.contains(&i) { BATCH - 1 } else { BATCH };
            let maybe_deleted = unacknowledged_delete == Some(i)
                && got.len() == BATCH - 1
                && got.iter().all(|d| d.id != format!("r{round}-{i}-0"));
            assert!(
                got.len() == expected || maybe_deleted,
                "round {round}: acknowledged batch {i} has {} of {expected} documents",
                got.len()
            );
            assert!(got.iter().all(|d| d.content.starts_with(&format!("round {round} batch {i} "))));
        }
        for &i in &deleted {
            assert!(
                store.get(&[format!("r{round}-{i}-0")]).await.unwrap().is_empty(),
                "an acknowledged delete came back"
            );
        }
        // The vectors are intact: each acknowledged document is its own nearest neighbour.
        let last = *upserted.last().unwrap();
        let hit = store.search(SearchRequest::new(vector(round, last, 5), 1)).await.unwrap();
        assert_eq!(hit[0].score, 0.0, "round {round}: {:?}", hit[0].document.id);
        store.upsert(batch(round + 100, 0)).await.expect("the reopened store takes writes");
        drop(store);
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let fts: rusqlite::Result<()> =
        conn.execute_batch("INSERT INTO documents_fts (documents_fts) VALUES ('integrity-check')");
    assert!(fts.is_ok(), "the full-text index matches the documents: {fts:?}");
    assert!(total_acked >= 10);
}
