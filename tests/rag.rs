//! End-to-end RAG on real pieces: the Rust book, the real all-MiniLM-L6-v2 embedder, the in-memory store saved to
//! a file, and two real generators: a tiny random-weight GGUF in process (llama.cpp) and the same model behind a
//! real llama-cpp-python OpenAI-compatible server on 127.0.0.1. The model's words are gibberish; retrieval,
//! prompting, streaming, sources and usage are real.

#![cfg(all(feature = "local-embed", feature = "llama-cpp"))]

#[path = "../examples/common/mod.rs"]
mod common;
use catena_test_support::llama as support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use catena::providers::llama::{LocalLlm, LocalLlmOptions};
use catena::providers::local_embed::LocalEmbedder;
use catena::{
    chain_fn, Chain, ChatChunk, ChatPromptTemplate, ChatRequest, ChatResponseBuilder, Embedder, Llm, LlmChain, Message,
    RagChain, RagEvent, Retriever, TextOutput, VectorRetriever,
};
use futures::TryStreamExt;

fn book() -> PathBuf {
    let dir = std::env::var_os("CATENA_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    dir.join("corpora/rust-book")
}

fn embedder() -> Arc<dyn Embedder> {
    static E: OnceLock<Arc<dyn Embedder>> = OnceLock::new();
    E.get_or_init(|| {
        Arc::new(LocalEmbedder::from_env().expect(
            "all-MiniLM-L6-v2 model: run `bash .ci/fetch-minilm.sh` and set CATENA_EMBED_MODEL to the printed directory",
        ))
    })
    .clone()
}

fn local_llm() -> Arc<dyn Llm> {
    static L: OnceLock<Arc<dyn Llm>> = OnceLock::new();
    L.get_or_init(|| {
        let options = LocalLlmOptions { context_length: 2048, ..Default::default() };
        Arc::new(LocalLlm::from_gguf(support::tiny_gguf(), options).expect("tiny GGUF loads"))
    })
    .clone()
}

/// Copies a few rust-book chapters into a fresh folder.
fn corpus(chapters: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for c in chapters {
        std::fs::copy(book().join(c), dir.path().join(c)).unwrap();
    }
    dir
}

const CHAPTERS: [&str; 4] =
    ["ch04-01-what-is-ownership.md", "ch08-03-hash-maps.md", "ch12-02-reading-a-file.md", "ch16-01-threads.md"];

async fn retriever_over(dir: &Path, k: usize) -> Arc<dyn Retriever> {
    let include = vec!["**/*.md".to_string()];
    let opts = common::IndexOptions {
        docs: dir,
        include: &include,
        index: None,
        store: common::StoreKind::Sqlite,
        store_url: None,
        collection: "catena-rag",
        chunk_size: 1000,
        chunk_overlap: 200,
        progress: false,
    };
    let (store, stats) = common::index_folder(&embedder(), opts).await.unwrap();
    assert_eq!(stats.files, CHAPTERS.len());
    Arc::new(VectorRetriever::new(embedder(), store.shared()).with_k(k))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_index_reembeds_only_what_changed() {
    incremental_index(common::StoreKind::Sqlite).await;
    incremental_index(common::StoreKind::Memory).await;
}

/// The same incremental re-index on a Chroma server's collection (a real `chroma run`) and on Qdrant (its
/// local-mode engine behind its gRPC protocol; the front is test code, see `catena_test_support::qdrant`): the
/// server holds the chunks, `--index` only the record of indexed files.
#[cfg(all(feature = "chroma", feature = "qdrant"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_index_on_server_stores() {
    let chroma = catena_test_support::chroma::ChromaServer::start();
    incremental_index_at(common::StoreKind::Chroma, Some(chroma.url())).await;
    let qdrant = catena_test_support::qdrant::QdrantServer::start();
    incremental_index_at(common::StoreKind::Qdrant, Some(qdrant.url())).await;
}

async fn incremental_index(kind: common::StoreKind) {
    incremental_index_at(kind, None).await;
}

async fn incremental_index_at(kind: common::StoreKind, store_url: Option<&str>) {
    let dir = corpus(&CHAPTERS);
    let index = dir.path().join("index.catena");
    let include = vec!["**/*.md".to_string()];
    let opts = |index| common::IndexOptions {
        docs: dir.path(),
        include: &include,
        index: Some(index),
        store: kind,
        store_url,
        collection: "catena-incremental",
        chunk_size: 1000,
        chunk_overlap: 200,
        progress: false,
    };
    let (_, first) = common::index_folder(&embedder(), opts(&index)).await.unwrap();
    assert_eq!((first.added.len(), first.changed.len(), first.removed.len()), (4, 0, 0));
    assert!(first.embedded_chunks > 4);
    // The index file for the embedded stores; for server stores only the record beside where it would be.
    assert!(index.exists() || (store_url.is_some() && dir.path().join("index.catena.record.json").exists()));

    let (_, again) = common::index_folder(&embedder(), opts(&index)).await.unwrap();
    assert_eq!((again.added.len(), again.changed.len(), again.removed.len(), again.embedded_chunks), (0, 0, 0, 0));
    assert_eq!(again.total_chunks, first.total_chunks);

    // Change one file, remove one, add one.
    std::fs::write(dir.path().join(CHAPTERS[0]), "# Ownership\n\nA short replacement chapter about moves.\n").unwrap();
    std::fs::remove_file(dir.path().join(CHAPTERS[1])).unwrap();
    std::fs::copy(book().join("ch15-04-rc.md"), dir.path().join("ch15-04-rc.md")).unwrap();
    let (store, third) = common::index_folder(&embedder(), opts(&index)).await.unwrap();
    assert_eq!((third.added.len(), third.changed.len(), third.removed.len()), (1, 1, 1));
    let documents = store.documents().await.unwrap();
    let sources: std::collections::BTreeSet<String> =
        documents.iter().filter_map(|d| d.source().map(str::to_string)).collect();
    assert!(!sources.iter().any(|s| s.ends_with(CHAPTERS[1])), "removed file still indexed: {sources:?}");
    assert!(sources.iter().any(|s| s.ends_with("ch15-04-rc.md")));
    let replaced: Vec<_> =
        documents.into_iter().filter(|d| d.source().is_some_and(|s| s.ends_with(CHAPTERS[0]))).collect();
    assert_eq!(replaced.len(), 1, "the changed file's old chunks must be gone");
    // Only the changed and the added file were embedded.
    assert!(third.embedded_chunks < first.embedded_chunks, "{third}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rag_with_local_model_streams_the_same_answer_with_sources() {
    let dir = corpus(&CHAPTERS);
    let retriever = retriever_over(dir.path(), 3).await;
    let request = ChatRequest::default().with_max_tokens(24).with_temperature(0.0).with_seed(3);
    let rag = RagChain::new(retriever, local_llm()).unwrap().with_request(request);
    assert!(rag.streams_incrementally());

    let question = "How do I read the contents of a file into a String?".to_string();
    let answer = rag.invoke(question.clone()).await.unwrap();
    assert_eq!(answer.sources.iter().map(|s| s.rank).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(answer.sources[0].source.ends_with("ch12-02-reading-a-file.md"), "{:?}", answer.sources[0]);
    assert!(answer.sources.windows(2).all(|w| w[0].score >= w[1].score));
    let usage = answer.usage.expect("local model reports usage");
    assert_eq!(usage.output_tokens, 24, "the tiny model never stops on its own");
    // The prompt carries the sources: far more tokens than the question alone.
    assert!(usage.input_tokens > 200, "{usage:?}");
    assert!(!answer.text.is_empty());

    let events: Vec<RagEvent> = rag.stream(question).try_collect().await.unwrap();
    let texts: Vec<&str> =
        events.iter().filter_map(|e| if let RagEvent::Text(t) = e { Some(t.as_str()) } else { None }).collect();
    assert!(texts.len() > 1, "the answer must stream in several deltas, got {}", texts.len());
    let Some(RagEvent::Done(done)) = events.last() else { panic!("stream must end with Done: {events:?}") };
    assert_eq!(texts.concat(), answer.text);
    assert_eq!(done.text, answer.text);
    assert_eq!(done.sources, answer.sources);
    assert_eq!(done.usage, answer.usage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rag_over_a_real_openai_compatible_server() {
    let server = support::shared_server();
    let client = server.client();
    let dir = corpus(&CHAPTERS);
    let retriever = retriever_over(dir.path(), 2).await;
    let request = ChatRequest::default().with_max_tokens(16).with_temperature(0.0);
    let rag = RagChain::new(retriever, Arc::new(client)).unwrap().with_request(request);
    let question = "How do I spawn a new thread?".to_string();
    let answer = rag.invoke(question.clone()).await.unwrap();
    assert!(answer.sources[0].source.ends_with("ch16-01-threads.md"), "{:?}", answer.sources);
    assert!(!answer.text.is_empty());
    let events: Vec<RagEvent> = rag.stream(question).try_collect().await.unwrap();
    let streamed: String =
        events.iter().filter_map(|e| if let RagEvent::Text(t) = e { Some(t.as_str()) } else { None }).collect();
    assert_eq!(streamed, answer.text);
    assert!(matches!(events.last(), Some(RagEvent::Done(d)) if d.sources == answer.sources));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_flows_through_a_composed_chain() {
    let request = ChatRequest::default().with_max_tokens(12).with_temperature(0.0);
    let chain = chain_fn(|topic: String| async move { Ok(vec![Message::user(format!("Tell me about {topic}."))]) })
        .then(LlmChain::new(local_llm()).with_request(request));
    assert!(chain.streams_incrementally());
    let whole = chain.invoke("borrowing".into()).await.unwrap();
    assert!(whole.usage.is_some_and(|u| u.output_tokens == 12), "{:?}", whole.usage);
    let chunks: Vec<ChatChunk> = chain.stream("borrowing".into()).try_collect().await.unwrap();
    assert!(chunks.iter().filter(|c| c.text.is_some()).count() > 1, "expected incremental chunks, got {chunks:?}");
    let mut folded = ChatResponseBuilder::default();
    chunks.iter().for_each(|c| folded.push(c));
    let folded = folded.finish();
    assert_eq!(folded.text(), whole.text());
    assert_eq!(folded.finish_reason, whole.finish_reason);
}

/// The README's composition: a template, a shared model and an output parser are chain steps as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_models_and_parsers_compose_as_the_readme_writes() {
    let prompt = ChatPromptTemplate::builder().user("Say the word {{word}} and nothing else.").build().unwrap();
    let llm = local_llm();
    // A bare `Arc<dyn Llm>` is a step (default settings); `LlmChain` sets the request (here: reproducible, short).
    assert!(prompt.clone().then(llm.clone()).streams_incrementally());
    let settings = ChatRequest::default().with_max_tokens(8).with_temperature(0.0);
    let chain = prompt.then(LlmChain::new(llm.clone()).with_request(settings.clone())).then(TextOutput);
    let text = chain.invoke(serde_json::json!({"word": "crab"})).await.unwrap();
    let direct = llm
        .chat(ChatRequest { messages: vec![Message::user("Say the word crab and nothing else.")], ..settings })
        .await
        .unwrap()
        .text();
    assert_eq!(text, direct, "the chain must send exactly the rendered prompt");
    // The stream is 'static: it outlives the chain and crosses tasks.
    let stream = chain.stream(serde_json::json!({"word": "crab"}));
    drop(chain);
    let streamed: Vec<String> = tokio::spawn(stream.try_collect()).await.unwrap().unwrap();
    assert_eq!(streamed.concat(), direct);
}

/// The rag example's indexing refuses a folder that does not exist and an index location that cannot be written,
/// before any embedding work.
#[tokio::test]
async fn missing_folders_and_unwritable_index_paths_fail_up_front() {
    let dir = corpus(&CHAPTERS[..1]);
    let include = vec!["**/*.md".to_string()];
    std::fs::write(dir.path().join("plain-file"), "x").unwrap();
    let unwritable = dir.path().join("plain-file").join("index.catena");
    let opts = common::IndexOptions {
        docs: dir.path(),
        include: &include,
        index: Some(&unwritable),
        store: common::StoreKind::Sqlite,
        store_url: None,
        collection: "catena-rag",
        chunk_size: 1000,
        chunk_overlap: 200,
        progress: false,
    };
    let err = common::index_folder(&embedder(), opts).await.unwrap_err();
    assert!(format!("{err:#}").contains("plain-file"), "{err:#}");

    let missing = dir.path().join("no-such-folder");
    let opts = common::IndexOptions {
        docs: &missing,
        include: &include,
        index: None,
        store: common::StoreKind::Sqlite,
        store_url: None,
        collection: "catena-rag",
        chunk_size: 1000,
        chunk_overlap: 200,
        progress: false,
    };
    let err = common::index_folder(&embedder(), opts).await.unwrap_err();
    assert!(format!("{err:#}").contains("no-such-folder"), "{err:#}");
}

/// Stores without a keyword index of their own get one in memory (`Bm25Index` over the indexed chunks): BM25
/// finds the identifier `or_insert` in the hash-maps chapter, on the in-memory store as on SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_search_over_a_store_without_its_own_index() {
    let dir = corpus(&["ch08-03-hash-maps.md", "ch12-02-reading-a-file.md", "ch04-01-what-is-ownership.md"]);
    let include = vec!["**/*.md".to_string()];
    let opts = common::IndexOptions {
        docs: dir.path(),
        include: &include,
        index: None,
        store: common::StoreKind::Memory,
        store_url: None,
        collection: "catena-rag",
        chunk_size: 1000,
        chunk_overlap: 200,
        progress: false,
    };
    let (store, _) = common::index_folder(&embedder(), opts).await.unwrap();
    assert!(matches!(store, common::IndexStore::Memory(_)));
    let keyword = store.keyword_retriever(3).await.unwrap();
    let hits = keyword.retrieve("or_insert").await.unwrap();
    assert!(
        !hits.is_empty() && hits.iter().all(|h| h.document.source().unwrap().ends_with("ch08-03-hash-maps.md")),
        "{hits:?}"
    );
    assert!(keyword.retrieve("zyzzyva").await.unwrap().is_empty());
}

/// Hybrid retrieval on the real corpus: BM25 from the SQLite store's FTS5 index and dense MiniLM vectors, fused
/// with RRF. An exact identifier the embedder blurs (`or_insert`) is found by the keyword half; the fused list
/// holds the best of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_retrieval_fuses_bm25_and_dense_results() {
    use catena::vectorstores::{Metric, SqliteStore};
    use catena::EnsembleRetriever;
    let dir = corpus(&CHAPTERS);
    let index = dir.path().join("hybrid.sqlite");
    let include = vec!["**/*.md".to_string()];
    let opts = common::IndexOptions {
        docs: dir.path(),
        include: &include,
        index: Some(&index),
        store: common::StoreKind::Sqlite,
        store_url: None,
        collection: "catena-rag",
        chunk_size: 1000,
        chunk_overlap: 200,
        progress: false,
    };
    common::index_folder(&embedder(), opts).await.unwrap();
    let store = SqliteStore::open_for_embedder(&index, embedder().as_ref(), Metric::Cosine).await.unwrap();
    let keyword: Arc<dyn Retriever> = Arc::new(store.keyword_retriever(5));
    let dense: Arc<dyn Retriever> = Arc::new(VectorRetriever::new(embedder(), Arc::new(store.clone())).with_k(5));
    let hybrid = EnsembleRetriever::new(5).with(keyword.clone(), 1.0).unwrap().with(dense.clone(), 1.0).unwrap();

    let query = "or_insert";
    let by_keyword = keyword.retrieve(query).await.unwrap();
    let by_dense = dense.retrieve(query).await.unwrap();
    let fused = hybrid.retrieve(query).await.unwrap();
    assert!(by_keyword[0].document.content.contains("or_insert"), "{:?}", by_keyword[0].document.content);
    assert!(by_keyword[0].document.source().is_some_and(|s| s.ends_with("ch08-03-hash-maps.md")));
    let ids = |hits: &[catena::ScoredDocument]| hits.iter().map(|h| h.document.id.clone()).collect::<Vec<_>>();
    let fused_ids = ids(&fused);
    assert_eq!(fused.len(), 5);
    assert!(fused_ids.contains(&by_keyword[0].document.id) && fused_ids.contains(&by_dense[0].document.id));
    // Within the top 5 of each half, any document both return (at least 2/65) outranks any only one returns (at
    // most 1/61).
    let both: Vec<&String> =
        fused_ids.iter().filter(|id| ids(&by_keyword).contains(id) && ids(&by_dense).contains(id)).collect();
    if let Some(first_both) = both.first() {
        let pos = fused_ids.iter().position(|id| id == *first_both).unwrap();
        assert_eq!(pos, 0, "a document found by both halves is at fused rank {pos}: {fused_ids:?}");
    }
    assert!(fused.windows(2).all(|w| w[0].score >= w[1].score));
}

/// The LLM reranker on a real local model (the tiny random GGUF, so the grades are noise, but every one is a
/// grade: the answer is constrained to "0".."10"), inside a RerankingRetriever over the real MiniLM retrieval.
#[cfg(feature = "constrain")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_reranker_grades_every_passage_and_keeps_the_best() {
    use catena::{LlmReranker, Reranker, RerankingRetriever};
    let dir = corpus(&CHAPTERS);
    let wide = retriever_over(dir.path(), 6).await;
    let reranker = Arc::new(LlmReranker::new(local_llm()).with_max_chars(300).with_concurrency(2));
    let question = "How do I read the contents of a file into a String?";
    let candidates = wide.retrieve(question).await.unwrap();
    assert_eq!(candidates.len(), 6);
    let ranked = reranker.rerank(question, candidates.clone()).await.unwrap();
    assert_eq!(ranked.len(), 6, "every passage comes back once");
    let mut before: Vec<&str> = candidates.iter().map(|c| c.document.id.as_str()).collect();
    let mut after: Vec<&str> = ranked.iter().map(|c| c.document.id.as_str()).collect();
    before.sort();
    after.sort();
    assert_eq!(before, after);
    for hit in &ranked {
        let grade = hit.score * 10.0;
        assert!((0.0..=10.0).contains(&grade) && (grade - grade.round()).abs() < 1e-5, "score {}", hit.score);
    }
    assert!(ranked.windows(2).all(|w| w[0].score >= w[1].score), "best first");
    let top3 = RerankingRetriever::new(wide, reranker, 3).retrieve(question).await.unwrap();
    assert_eq!(top3.len(), 3);
}
