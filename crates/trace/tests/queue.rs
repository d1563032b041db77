//! The recorder never blocks the caller and stays bounded when its sink is stuck or failing.
//!
//! The sink here is a test double on purpose: a sink that hangs on demand or fails on demand cannot be had from a
//! real SQLite file deterministically (the real store is exercised in `record.rs`).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use catena_trace::{RecorderConfig, Run, RunRecorder, RunSink};
use tracing_subscriber::layer::SubscriberExt;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Store,
    Stuck,
    Fail,
}

/// The mode and the names of the runs stored so far, with the condition variable a stuck sink waits on.
type State = Arc<(Mutex<(Mode, Vec<String>)>, Condvar)>;

#[derive(Clone)]
struct Controlled {
    state: State,
}

impl Controlled {
    fn set(&self, mode: Mode) {
        self.state.0.lock().unwrap().0 = mode;
        self.state.1.notify_all();
    }
    fn stored(&self) -> Vec<String> {
        self.state.0.lock().unwrap().1.clone()
    }
}

impl RunSink for Controlled {
    fn write(&mut self, runs: &[Run]) -> catena_core::Result<()> {
        let (lock, wake) = &*self.state;
        let mut state = lock.lock().unwrap();
        while state.0 == Mode::Stuck {
            state = wake.wait(state).unwrap();
        }
        if state.0 == Mode::Fail {
            return Err(catena_core::Error::Store { store: "test sink".into(), message: "disk full".into() });
        }
        state.1.extend(runs.iter().map(|r| r.name.clone()));
        Ok(())
    }
}

#[test]
fn a_stuck_or_failing_sink_costs_dropped_runs_never_a_blocked_caller() {
    let sink = Controlled { state: Arc::new((Mutex::new((Mode::Store, Vec::new())), Condvar::new())) };
    let config = RecorderConfig { queue_capacity: 100, batch_size: 10, ..RecorderConfig::default() };
    let (recorder, handle) = RunRecorder::new(sink.clone(), config).unwrap();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(recorder)).unwrap();

    // Working: every run stored.
    for i in 0..50 {
        let _s = tracing::info_span!("working", i).entered();
    }
    assert!(handle.flush(Duration::from_secs(10)));
    assert_eq!(sink.stored().len(), 50);
    assert_eq!(handle.stats().written, 50);

    // Stuck: 20,000 spans still close at once; what does not fit the queue is counted, not kept.
    sink.set(Mode::Stuck);
    for i in 0..20_000 {
        let _s = tracing::info_span!("while stuck", i).entered();
    }
    let stats = handle.stats();
    assert_eq!(stats.recorded + stats.dropped, 50 + 20_000);
    assert!(stats.recorded - 50 <= 100 + 10, "at most the queue and one batch are held: {stats:?}");
    assert!(stats.dropped >= 20_000 - 110, "{stats:?}");
    assert!(!handle.flush(Duration::from_millis(200)), "a stuck sink cannot be flushed, and flush does not hang");

    // Released: what was queued is written.
    sink.set(Mode::Store);
    assert!(handle.flush(Duration::from_secs(10)));
    assert_eq!(handle.stats().written, handle.stats().recorded);

    // Failing: counted, and the error kept.
    sink.set(Mode::Fail);
    for _ in 0..7 {
        let _s = tracing::info_span!("failing").entered();
    }
    assert!(handle.flush(Duration::from_secs(10)));
    assert_eq!(handle.stats().write_failures, 7);
    assert!(handle.last_error().unwrap().contains("disk full"));

    // After shutdown, runs are dropped (and counted) rather than queued.
    sink.set(Mode::Store);
    let before = handle.stats();
    let after = handle.shutdown(Duration::from_secs(10));
    assert_eq!(after, before);
    let _s = tracing::info_span!("after shutdown").entered();
    drop(_s);
    assert!(!sink.stored().iter().any(|n| n == "after shutdown"));
}
