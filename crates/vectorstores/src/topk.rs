//! Exact top-k selection with a bounded heap: at most `k` candidates are ever held, and a candidate only touches
//! the heap when it beats the current worst.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A scored slot. Orders so that the *worse* candidate is the greater one, which puts the worst on top of
/// `BinaryHeap` (a max-heap): lower score is worse, and on equal scores the later slot is worse.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub(crate) score: f32,
    pub(crate) slot: usize,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        other.score.total_cmp(&self.score).then(self.slot.cmp(&other.slot))
    }
}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}

/// The best `k` candidates seen so far.
#[derive(Debug)]
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Candidate>,
    /// The score a new candidate must beat: the worst kept score once the heap is full, `-inf` before.
    threshold: f32,
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        TopK { k, heap: BinaryHeap::with_capacity(k.saturating_add(1).min(4096)), threshold: f32::NEG_INFINITY }
    }

    /// Offers a candidate. Slots must be offered in increasing order for ties to resolve to the lower slot.
    #[inline]
    pub(crate) fn offer(&mut self, score: f32, slot: usize) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Candidate { score, slot });
            if self.heap.len() == self.k {
                self.threshold = self.heap.peek().map_or(f32::NEG_INFINITY, |c| c.score);
            }
            return;
        }
        // A strict `>`: on a tie the kept candidate (lower slot) stays, and NaN never enters.
        if score > self.threshold {
            if let Some(mut worst) = self.heap.peek_mut() {
                *worst = Candidate { score, slot };
            }
            self.threshold = self.heap.peek().map_or(f32::NEG_INFINITY, |c| c.score);
        }
    }

    /// The kept candidates, best first (ties: lower slot first).
    pub(crate) fn into_sorted(self) -> Vec<Candidate> {
        // Ascending in `Ord` is best first, since the greater candidate is the worse one.
        self.heap.into_sorted_vec()
    }
}

/// Rows scored per kernel call.
pub(crate) const BLOCK_ROWS: usize = 256;

/// Offers every row of `vectors` (`dim` numbers each; row `i` is slot `first_slot + i`) to `top`, scored by
/// `kernel`.
pub(crate) fn scan_rows(
    top: &mut TopK,
    kernel: crate::kernel::Kernel,
    op: crate::kernel::Op,
    query: &[f32],
    vectors: &[f32],
    dim: usize,
    first_slot: usize,
) {
    let mut scores = [0.0f32; BLOCK_ROWS];
    for (block, rows) in vectors.chunks(BLOCK_ROWS * dim).enumerate() {
        let out = &mut scores[..rows.len() / dim];
        kernel.score(op, query, rows, out);
        for (j, &s) in out.iter().enumerate() {
            top.offer(s, first_slot + block * BLOCK_ROWS + j);
        }
    }
}

/// The score a store reports for a scan score: the scan ranks L2 by negated squared distance, the stores report
/// the negated distance; other metrics are reported as scanned.
pub(crate) fn reported_score(metric: crate::Metric, scanned: f32) -> f32 {
    if metric == crate::Metric::L2 {
        -(-scanned).max(0.0).sqrt()
    } else {
        scanned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_k_in_order() {
        let scores = [0.1f32, 0.9, 0.3, 0.9, -1.0, 0.5, 0.7, 0.2];
        let mut t = TopK::new(3);
        for (slot, s) in scores.iter().enumerate() {
            t.offer(*s, slot);
        }
        let got: Vec<(f32, usize)> = t.into_sorted().iter().map(|c| (c.score, c.slot)).collect();
        assert_eq!(got, vec![(0.9, 1), (0.9, 3), (0.7, 6)]);
    }

    #[test]
    fn k_zero_and_k_larger_than_n() {
        let mut t = TopK::new(0);
        t.offer(1.0, 0);
        assert!(t.into_sorted().is_empty());
        let mut t = TopK::new(10);
        t.offer(1.0, 0);
        t.offer(2.0, 1);
        let got: Vec<usize> = t.into_sorted().iter().map(|c| c.slot).collect();
        assert_eq!(got, vec![1, 0]);
    }

    #[test]
    fn ties_resolve_to_lower_slot_and_nan_is_ignored_when_full() {
        let mut t = TopK::new(2);
        for slot in 0..5 {
            t.offer(1.0, slot);
        }
        t.offer(f32::NAN, 5);
        let got: Vec<usize> = t.into_sorted().iter().map(|c| c.slot).collect();
        assert_eq!(got, vec![0, 1]);
    }

    #[test]
    fn matches_a_full_sort_on_random_data() {
        let mut rng = fastrand::Rng::with_seed(3);
        for k in [1usize, 2, 5, 10, 50] {
            let scores: Vec<f32> = (0..1000).map(|_| (rng.f32() * 100.0).round()).collect();
            let mut t = TopK::new(k);
            for (slot, s) in scores.iter().enumerate() {
                t.offer(*s, slot);
            }
            let mut all: Vec<(f32, usize)> = scores.iter().copied().zip(0..).collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let want: Vec<usize> = all.iter().take(k).map(|x| x.1).collect();
            let got: Vec<usize> = t.into_sorted().iter().map(|c| c.slot).collect();
            assert_eq!(got, want, "k={k}");
        }
    }
}
