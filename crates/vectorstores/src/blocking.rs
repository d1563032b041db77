//! Running blocking work (scans, SQLite, file writes) off the async runtime's worker threads.

use catena_core::{Error, Result};

/// Runs `f` on tokio's blocking pool when called inside a tokio runtime, so an async worker thread never blocks;
/// outside one (another executor, `futures::executor::block_on`) it runs `f` in place, since there is no tokio
/// pool to hand it to and panicking would be worse. `store` names the store in the error of a failed task.
pub(crate) async fn off_runtime<T, F>(store: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.spawn_blocking(f).await.map_err(|e| Error::Store {
            store: store.to_string(),
            message: format!("the blocking task failed: {e}"),
        })?,
        Err(_) => f(),
    }
}
