//! Splitting one exact top-k scan across threads: each thread scans a contiguous share of the rows into its own
//! bounded heap, and the shares are merged with the same order a single-threaded scan gives (best score first,
//! lower slot first on ties), so the result does not depend on the thread count.

use std::num::NonZeroUsize;
use std::ops::Range;

use crate::topk::{Candidate, TopK};

/// Below this many scanned bytes (a quarter of a millisecond or so of memory traffic) a scan stays on one thread:
/// starting threads would cost more than it saves.
pub(crate) const PARALLEL_SCAN_BYTES: usize = 4 << 20;

/// The machine's parallelism (1 when the OS does not say).
pub(crate) fn available_threads() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// The best `k` of `len` items, where `scan(range, top)` offers the items of `range` (in increasing slot order) to
/// `top`. `bytes` is what the whole scan reads: it decides, with `threads`, how many threads share the work.
/// Returns the candidates best first, ties to the lower slot.
pub(crate) fn best_k<F>(k: usize, len: usize, bytes: usize, threads: NonZeroUsize, scan: F) -> Vec<Candidate>
where
    F: Fn(Range<usize>, &mut TopK) + Sync,
{
    let threads = threads.get().min(bytes / PARALLEL_SCAN_BYTES).min(len).max(1);
    if threads == 1 {
        let mut top = TopK::new(k);
        scan(0..len, &mut top);
        return top.into_sorted();
    }
    let share = len.div_ceil(threads);
    let scan = &scan;
    let mut all: Vec<Candidate> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut top = TopK::new(k);
                    scan((t * share).min(len)..((t + 1) * share).min(len), &mut top);
                    top.into_sorted()
                })
            })
            .collect();
        // The caller's thread takes the first share instead of idling.
        let mut top = TopK::new(k);
        scan(0..share.min(len), &mut top);
        let mut all = top.into_sorted();
        for h in handles {
            // A scan closure does not panic on store data (the stores check every vector on the way in); if one
            // ever did, re-raising it here keeps the panic's message instead of inventing a result.
            all.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        all
    });
    // `Candidate`'s order puts the better candidate first (see `topk`).
    all.sort_unstable();
    all.truncate(k);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_count_gives_the_single_threaded_answer() {
        let mut rng = fastrand::Rng::with_seed(9);
        // Coarse scores so that ties are common.
        let scores: Vec<f32> = (0..10_001).map(|_| (rng.f32() * 50.0).round()).collect();
        for k in [0usize, 1, 7, 100, 20_000] {
            let run = |threads: usize, bytes: usize| -> Vec<(usize, f32)> {
                best_k(k, scores.len(), bytes, NonZeroUsize::new(threads).unwrap(), |range, top| {
                    for slot in range {
                        top.offer(scores[slot], slot);
                    }
                })
                .into_iter()
                .map(|c| (c.slot, c.score))
                .collect()
            };
            let one = run(1, usize::MAX);
            assert_eq!(one.len(), k.min(scores.len()));
            for threads in [2, 3, 8] {
                assert_eq!(run(threads, usize::MAX), one, "k={k} threads={threads}");
            }
            // Small scans stay on one thread whatever the setting, with the same answer.
            assert_eq!(run(8, 1), one);
        }
    }

    #[test]
    fn more_threads_than_items() {
        let got = best_k(5, 2, usize::MAX, NonZeroUsize::new(16).unwrap(), |range, top| {
            for slot in range {
                top.offer(slot as f32, slot);
            }
        });
        assert_eq!(got.iter().map(|c| c.slot).collect::<Vec<_>>(), vec![1, 0]);
    }
}
