//! Chain overhead: a 3-step chain of trivial async closures, `invoke`d and awaited, versus LangChain LCEL
//! `RunnableLambda | RunnableLambda | RunnableLambda` measured in the same run (benches/lcel_peer.py).
//!
//! Run: `cargo bench --bench chain` (needs `pip install langchain-core`).

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use catena::{chain_fn, Chain};

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("tokio runtime");
    let chain = chain_fn(|x: i64| async move { Ok(x + 1) })
        .then(chain_fn(|x: i64| async move { Ok(x * 2) }))
        .then(chain_fn(|x: i64| async move { Ok(x - 3) }));
    let iterations: i64 = 2_000_000;
    let (rust_ns, total) = rt.block_on(async {
        for i in 0..10_000 {
            black_box(chain.invoke(i).await.expect("invoke"));
        }
        let start = Instant::now();
        let mut total = 0i64;
        for i in 0..iterations {
            total = total.wrapping_add(chain.invoke(black_box(i)).await.expect("invoke"));
        }
        (start.elapsed().as_nanos() as f64 / iterations as f64, total)
    });
    let expected: i64 = (0..iterations).map(|i| (i + 1) * 2 - 3).sum();
    assert_eq!(total, expected, "chain computed a wrong result");
    println!("catena  3-step chain invoke: {rust_ns:>10.1} ns/invoke ({iterations} invokes, awaited)");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/lcel_peer.py");
    let out = Command::new("python3").arg(script).arg("3000").output().expect("run python3");
    if !out.status.success() {
        eprintln!("LCEL peer failed (pip install langchain-core): {}", String::from_utf8_lossy(&out.stderr));
        std::process::exit(1);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("peer JSON");
    let py_ns = v["per_invoke_ns"].as_f64().expect("per_invoke_ns");
    println!("LCEL    3-step chain invoke: {py_ns:>10.1} ns/invoke ({} invokes)", v["iterations"]);
    println!("ratio: catena is {:.0}x less overhead than LCEL (target >= 1000x)", py_ns / rust_ns);
}
