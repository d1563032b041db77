//! `InMemoryStore::save` / `load`: round trips, atomic replacement, and clear errors for every kind of damaged
//! file. The layout is also checked by an independent reader (Python's `struct`, `json` and `zlib.crc32`).

use std::path::Path;

use catena_core::{Document, EmbeddedDocument, Embedder, Error, Metadata, Result, SearchRequest, VectorStore};
use catena_vectorstores::{InMemoryStore, Metric, FORMAT_VERSION};
use serde_json::json;

fn edoc(id: &str, content: &str, metadata: serde_json::Value, vector: Vec<f32>) -> EmbeddedDocument {
    let metadata: Metadata = metadata.as_object().expect("object").clone();
    EmbeddedDocument { document: Document::with_id(id, content, metadata), vector }
}

async fn sample(metric: Metric) -> InMemoryStore {
    let store = InMemoryStore::new(3, metric).unwrap();
    store
        .upsert(vec![
            edoc(
                "a",
                "first ✓ ünïcode\nline",
                json!({"source": "a.md", "hash": "x1", "nested": {"n": 1.5}}),
                vec![1.0, 2.0, 3.0],
            ),
            edoc("b", "", json!({}), vec![-1.0, 0.5, 0.25]),
            edoc("c", "third", json!({"tags": ["t1", "t2"], "none": null}), vec![0.1, -0.2, 0.3]),
        ])
        .await
        .unwrap();
    store
}

fn format_message(e: Error) -> String {
    match e {
        Error::Format { message, .. } => message,
        other => panic!("expected Error::Format, got {other:?}"),
    }
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn round_trip_preserves_everything_for_every_metric() {
    let dir = tempfile::tempdir().unwrap();
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        let store = sample(metric).await;
        store.delete(&["a".into()]).await.unwrap(); // rows now out of insertion order
        store.upsert(vec![edoc("a", "again", json!({"v": 2}), vec![3.0, 2.0, 1.0])]).await.unwrap();
        let store = store.with_embedder_model("all-MiniLM-L6-v2");
        let path = dir.path().join(format!("{metric}.catena"));
        store.save(&path).unwrap();
        let back = InMemoryStore::load(&path).unwrap();
        assert_eq!(back.metric(), metric);
        assert_eq!(back.dim(), 3);
        assert_eq!(back.embedder_model().as_deref(), Some("all-MiniLM-L6-v2"));
        assert_eq!(back.ids(), store.ids());
        assert_eq!(back.documents(), store.documents());
        let ids = store.ids();
        let before = store.get_embedded(&ids);
        let after = back.get_embedded(&ids);
        assert_eq!(before, after, "vectors are bit-identical");
        for q in [vec![1.0, 0.0, 0.0], vec![0.3, -2.0, 0.7]] {
            let r1 = store.search(SearchRequest::new(q.clone(), 3)).await.unwrap();
            let r2 = back.search(SearchRequest::new(q, 3)).await.unwrap();
            assert_eq!(r1, r2);
        }
        // The loaded store is fully usable.
        back.upsert(vec![edoc("d", "new", json!({}), vec![1.0, 1.0, 1.0])]).await.unwrap();
        assert_eq!(back.count(), 4);
    }
    assert_eq!(dir_entries(dir.path()), ["cosine.catena", "dot.catena", "l2.catena"], "no temporary files left");
}

#[tokio::test]
async fn empty_store_and_no_model_name_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.bin");
    InMemoryStore::new(7, Metric::L2).unwrap().save(&path).unwrap();
    let back = InMemoryStore::load(&path).unwrap();
    assert_eq!((back.count(), back.dim(), back.metric(), back.embedder_model()), (0, 7, Metric::L2, None));
    // An empty model name is a name, distinct from none.
    InMemoryStore::new(7, Metric::L2).unwrap().with_embedder_model("").save(&path).unwrap();
    assert_eq!(InMemoryStore::load(&path).unwrap().embedder_model().as_deref(), Some(""));
}

#[tokio::test]
async fn save_replaces_an_existing_file_atomically_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.catena");
    let store = sample(Metric::Cosine).await;
    store.save(&path).unwrap();
    store.delete(&["b".into()]).await.unwrap();
    store.save(&path).unwrap();
    assert_eq!(InMemoryStore::load(&path).unwrap().count(), 2);
    assert_eq!(dir_entries(dir.path()), ["index.catena"]);

    // A save that fails at the rename (the target is a non-empty directory) leaves no temporary file behind and
    // does not touch the target.
    let blocked = dir.path().join("blocked");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("keep.txt"), "x").unwrap();
    let err = store.save(&blocked).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_eq!(dir_entries(dir.path()), ["blocked", "index.catena"]);
    assert_eq!(dir_entries(&blocked), ["keep.txt"]);

    // A missing directory is an I/O error naming the path.
    let err = store.save(dir.path().join("missing/dir/x.catena")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("missing"), "{err}");
    // A path without a file name is rejected before touching the disk.
    assert!(matches!(store.save(Path::new("/")), Err(Error::InvalidInput(_))));
}

#[tokio::test]
async fn layout_matches_the_documented_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layout.catena");
    let store = sample(Metric::L2).await.with_embedder_model("m1");
    store.save(&path).unwrap();
    let b = std::fs::read(&path).unwrap();
    assert_eq!(&b[0..8], b"CATENAVS");
    assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), FORMAT_VERSION);
    assert_eq!(b[12], 2, "l2");
    assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), 3);
    assert_eq!(u64::from_le_bytes(b[20..28].try_into().unwrap()), 3);
    assert_eq!(u32::from_le_bytes(b[28..32].try_into().unwrap()), 2);
    assert_eq!(&b[32..34], b"m1");
}

/// Reads the file with Python's standard library only (struct, json, zlib.crc32), independently of the Rust
/// reader, and prints what it found.
#[tokio::test]
async fn an_independent_python_reader_decodes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("py.catena");
    let store = sample(Metric::Dot).await.with_embedder_model("all-MiniLM-L6-v2");
    store.save(&path).unwrap();
    let script = r#"
import json, struct, sys, zlib
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"CATENAVS", b[:8]
version, metric, dim, n, mlen = struct.unpack_from("<IB3xIQI", b, 8)
pos = 32
model = None
if mlen != 0xFFFFFFFF:
    model = b[pos:pos + mlen].decode(); pos += mlen
(jlen,) = struct.unpack_from("<Q", b, pos); pos += 8
docs = json.loads(b[pos:pos + jlen]); pos += jlen
vecs = struct.unpack_from("<%df" % (n * dim), b, pos); pos += 4 * n * dim
(crc,) = struct.unpack_from("<I", b, pos); pos += 4
assert pos == len(b), (pos, len(b))
assert crc == zlib.crc32(b[:-4]), "crc"
print(json.dumps({"version": version, "metric": metric, "dim": dim, "n": n, "model": model,
                  "ids": [d["id"] for d in docs], "first": list(vecs[:dim]), "meta": docs[0]["metadata"]}))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("python3 must be installed to run this test");
    assert!(out.status.success(), "python reader failed: {}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = store.get_embedded(&[store.ids()[0].clone()]).remove(0);
    assert_eq!(
        got,
        json!({
            "version": FORMAT_VERSION, "metric": 1, "dim": 3, "n": 3, "model": "all-MiniLM-L6-v2",
            "ids": store.ids(), "first": first.vector, "meta": first.document.metadata,
        })
    );
}

#[tokio::test]
async fn every_truncation_and_every_flipped_byte_is_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.catena");
    sample(Metric::Cosine).await.with_embedder_model("m").save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let bad = dir.path().join("bad.catena");
    for len in 0..bytes.len() {
        std::fs::write(&bad, &bytes[..len]).unwrap();
        let msg = format_message(InMemoryStore::load(&bad).unwrap_err());
        if len >= 12 {
            assert!(msg.contains("truncated"), "prefix of {len} bytes: {msg}");
        } else if len == 0 {
            assert!(msg.contains("not a catena vector store"), "{msg}");
        }
    }
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        std::fs::write(&bad, &b).unwrap();
        let err = InMemoryStore::load(&bad).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("bad.catena"), "the error names the file: {shown}");
        let msg = format_message(err);
        assert!(["not a catena", "version", "truncated", "corrupt"].iter().any(|w| msg.contains(w)), "byte {i}: {msg}");
    }
    // Extra bytes after the checksum.
    let mut b = bytes.clone();
    b.extend_from_slice(b"junk");
    std::fs::write(&bad, &b).unwrap();
    assert!(format_message(InMemoryStore::load(&bad).unwrap_err()).contains("unexpected bytes"));
    // A flipped bit in the vector block is caught by the checksum.
    let mut b = bytes.clone();
    let at = b.len() - 8;
    b[at] ^= 1;
    std::fs::write(&bad, &b).unwrap();
    assert!(format_message(InMemoryStore::load(&bad).unwrap_err()).contains("checksum mismatch"));
}

#[test]
fn bad_magic_and_unsupported_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.catena");
    std::fs::write(&path, b"{\"this\": \"is json\"}").unwrap();
    let msg = format_message(InMemoryStore::load(&path).unwrap_err());
    assert!(msg.contains("not a catena vector store") && msg.contains("InMemoryStore::save"), "{msg}");

    InMemoryStore::new(2, Metric::Dot).unwrap().save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    for (version, hint) in [(FORMAT_VERSION + 1, "upgrade catena-vectorstores"), (0, "corrupt")] {
        let mut b = good.clone();
        b[8..12].copy_from_slice(&version.to_le_bytes());
        std::fs::write(&path, &b).unwrap();
        let msg = format_message(InMemoryStore::load(&path).unwrap_err());
        assert!(msg.contains(&format!("format version {version}")) && msg.contains(hint), "{msg}");
    }
    let missing = InMemoryStore::load(dir.path().join("nope.catena")).unwrap_err();
    assert!(matches!(missing, Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound));
}

/// Stand-in embedder: only `dimensions` and `model_name` are read (no text is embedded), so no model is needed.
struct Named(&'static str, usize);

#[catena_core::async_trait]
impl Embedder for Named {
    async fn embed_documents(&self, _texts: &[String]) -> Result<Vec<Vec<f32>>> {
        Err(Error::unsupported(self.0, "embedding", "this is a test stand-in"))
    }
    async fn embed_query(&self, _text: &str) -> Result<Vec<f32>> {
        Err(Error::unsupported(self.0, "embedding", "this is a test stand-in"))
    }
    fn dimensions(&self) -> usize {
        self.1
    }
    fn model_name(&self) -> String {
        self.0.to_string()
    }
}

#[tokio::test]
async fn load_checks_dimension_metric_and_embedder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx.catena");
    let store = InMemoryStore::for_embedder(&Named("model-a", 3), Metric::Cosine).unwrap();
    store.upsert(vec![edoc("a", "x", json!({}), vec![1.0, 0.0, 0.0])]).await.unwrap();
    store.save(&path).unwrap();

    assert_eq!(InMemoryStore::load_expecting(&path, 3, Metric::Cosine).unwrap().count(), 1);
    let msg = format_message(InMemoryStore::load_expecting(&path, 384, Metric::Cosine).unwrap_err());
    assert!(msg.contains("3-dimensional") && msg.contains("384") && msg.contains("model-a"), "{msg}");
    let msg = format_message(InMemoryStore::load_expecting(&path, 3, Metric::L2).unwrap_err());
    assert!(msg.contains("cosine metric") && msg.contains("l2 was expected"), "{msg}");

    assert!(InMemoryStore::load_for_embedder(&path, &Named("model-a", 3), Metric::Cosine).is_ok());
    let msg =
        format_message(InMemoryStore::load_for_embedder(&path, &Named("model-b", 3), Metric::Cosine).unwrap_err());
    assert!(msg.contains("\"model-a\"") && msg.contains("\"model-b\"") && msg.contains("re-index"), "{msg}");
    let msg =
        format_message(InMemoryStore::load_for_embedder(&path, &Named("model-a", 4), Metric::Cosine).unwrap_err());
    assert!(msg.contains("3-dimensional"), "{msg}");
}

#[tokio::test]
async fn open_for_embedder_creates_then_reloads_and_refuses_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rag.catena");
    let embedder = Named("model-a", 2);
    let store = InMemoryStore::open_for_embedder(&path, &embedder, Metric::Cosine).unwrap();
    assert_eq!((store.count(), store.dim()), (0, 2));
    assert_eq!(store.embedder_model().as_deref(), Some("model-a"));
    assert!(!path.exists(), "opening does not write");
    store.upsert(vec![edoc("a", "x", json!({"source": "a.md"}), vec![1.0, 1.0])]).await.unwrap();
    store.save(&path).unwrap();
    let again = InMemoryStore::open_for_embedder(&path, &embedder, Metric::Cosine).unwrap();
    assert_eq!(again.ids(), ["a"]);
    assert!(InMemoryStore::open_for_embedder(&path, &Named("model-b", 2), Metric::Cosine).is_err());
    std::fs::write(&path, b"CATENAVS").unwrap();
    let msg = format_message(InMemoryStore::open_for_embedder(&path, &embedder, Metric::Cosine).unwrap_err());
    assert!(msg.contains("truncated"), "{msg}");
}
