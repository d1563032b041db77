//! `catena-studio`: the runs a catena application recorded (`CATENA_TRACE_DB=<file>`), in a web page on this
//! machine.
//!
//! ```text
//! cargo run --release -p catena-studio -- --db traces.db [--port 7180]
//! ```
//!
//! Pages: the runs list (filters by name, model, status, tag and time; totals of tokens and cost) and a trace's
//! tree with a waterfall of its timings and every run's inputs, outputs, tokens, cost, time to first chunk and
//! errors. The same data is served as JSON under `/api/` (`/api/traces?...`, `/api/traces/<trace id>`).
//! Nothing is loaded from the network: the page's style is served by the binary itself.

mod datasets;
mod pages;
mod playground;
mod providers;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

/// Browse the runs recorded into a catena trace store.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The trace store file (what CATENA_TRACE_DB named when the runs were recorded).
    #[arg(long, env = "CATENA_TRACE_DB")]
    db: PathBuf,
    /// The port to serve on (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 7180)]
    port: u16,
    /// The address to serve on. The studio has no login: keep it on loopback unless you mean to share it.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Opening creates the file and its schema, so a studio started before the first run shows an empty list.
    let store = catena_trace::TraceStore::open(&args.db).with_context(|| format!("opening {}", args.db.display()))?;
    // The studio's own runs (playground reruns, evaluations) go into the same store.
    let (recorder, handle) = catena_trace::RunRecorder::new(store, catena_trace::RecorderConfig::default())?;
    {
        use tracing_subscriber::layer::SubscriberExt;
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(recorder))
            .context("installing the studio's recorder")?;
    }
    let handle = std::sync::Arc::new(handle);
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.host, args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{} (pass --port to pick another)", args.host, args.port))?;
    let address = listener.local_addr()?;
    println!("catena studio: http://{address}/ (runs from {})", args.db.display());
    axum::serve(listener, pages::router(args.db, Some(handle.clone())))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
