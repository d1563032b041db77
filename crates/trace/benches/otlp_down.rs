//! Memory with the OTLP endpoint down: catena's spans exported to a port where nothing listens, under a steady
//! load, for 10 minutes by default; the process's resident memory is sampled every 10 s. The batch processor's
//! queue is bounded (2,048 spans by default), so memory must level off instead of growing with the spans lost.
//!
//! Run: `cargo bench -p catena-trace --features otlp --bench otlp_down` (`OTLP_DOWN_SECS=60` for a shorter run).
//! The load is 2,000 chat spans per second (the span `TelemetryLayer` makes) on one thread, and the run recorder
//! is not installed: only the exporter is measured.

use std::time::{Duration, Instant};

use catena_trace::otlp::OtlpConfig;
use tracing::field::Empty;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let seconds: u64 = std::env::var("OTLP_DOWN_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = closed.local_addr().expect("an address").port();
    drop(closed);
    let export = OtlpConfig::new()
        .endpoint(format!("http://127.0.0.1:{port}"))
        .service_name("otlp-down-bench")
        .timeout(Duration::from_secs(2))
        .build()
        .expect("an exporter");
    let subscriber = tracing_subscriber::registry()
        .with(export.tracing_layer().with_filter(tracing_subscriber::filter::LevelFilter::INFO));
    let _guard = tracing::subscriber::set_default(subscriber);

    println!("OTLP endpoint down (127.0.0.1:{port}, nothing listening): {seconds} s at 2,000 spans/s");
    println!("| elapsed | spans | RSS (MiB) |");
    println!("|---:|---:|---:|");
    let start = Instant::now();
    let mut spans: u64 = 0;
    let mut next_sample = Duration::ZERO;
    let (mut first, mut peak) = (0u64, 0u64);
    while start.elapsed() < Duration::from_secs(seconds) {
        let tick = Instant::now();
        for _ in 0..200 {
            let span = tracing::info_span!(
                "gen_ai",
                otel.name = "chat gpt-4o-mini",
                gen_ai.operation.name = "chat",
                gen_ai.provider.name = "openai",
                gen_ai.request.model = "gpt-4o-mini",
                gen_ai.usage.input_tokens = Empty,
                gen_ai.usage.output_tokens = Empty,
                catena.latency_ms = Empty,
            );
            span.record("gen_ai.usage.input_tokens", 1200u64);
            span.record("gen_ai.usage.output_tokens", 80u64);
            span.record("catena.latency_ms", 850.0);
            spans += 1;
        }
        if start.elapsed() >= next_sample {
            let rss = rss_kib();
            if first == 0 {
                first = rss;
            }
            peak = peak.max(rss);
            println!("| {:>4} s | {spans} | {:.1} |", start.elapsed().as_secs(), rss as f64 / 1024.0);
            next_sample += Duration::from_secs(10);
        }
        // 200 spans per 100 ms.
        std::thread::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed()));
    }
    let end = rss_kib();
    println!(
        "\n{spans} spans over {seconds} s with the endpoint down: RSS {:.1} MiB at the first sample, {:.1} MiB peak, \
         {:.1} MiB at the end",
        first as f64 / 1024.0,
        peak as f64 / 1024.0,
        end as f64 / 1024.0
    );
    let _ = export.shutdown();
}
