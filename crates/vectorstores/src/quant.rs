//! Int8 scalar quantisation for the scan: each vector becomes one signed byte per dimension and one `f32` scale
//! (`x[i] ≈ scale * code[i]`, `scale = max|x| / 127`), so a scan reads a quarter of the memory of `f32` rows.
//! Scores from codes are approximate; the stores rescore their best candidates from the exact vectors.
//!
//! The integer dot product has three implementations behind [`I8Kernel`]: AVX-512 (BW + VNNI) and AVX2 versions
//! chosen at run time, and a portable one; all three compute the same exact `i32` sums, since `127 * 127 * dim`
//! fits an `i32` for every dimension below 133,000 (the stores refuse wider vectors for this precision).

/// The largest dimension whose int8 dot products cannot overflow an `i32` (`127² · dim < 2³¹`).
pub(crate) const MAX_INT8_DIM: usize = (i32::MAX as usize) / (127 * 127);

/// Quantised rows: `codes.len() == scales.len() * dim`; `sq_norms[i]` is the exact squared norm of row `i` (used
/// for Euclidean scores).
#[derive(Debug, Default)]
pub(crate) struct Int8Rows {
    pub(crate) codes: Vec<i8>,
    pub(crate) scales: Vec<f32>,
    pub(crate) sq_norms: Vec<f32>,
}

impl Int8Rows {
    /// Appends `vector` as a new last row.
    pub(crate) fn push(&mut self, vector: &[f32]) {
        let start = self.codes.len();
        self.codes.resize(start + vector.len(), 0);
        let scale = quantize(vector, &mut self.codes[start..]);
        self.scales.push(scale);
        self.sq_norms.push(vector.iter().map(|x| x * x).sum());
    }

    /// Overwrites row `slot` with `vector`.
    pub(crate) fn set(&mut self, dim: usize, slot: usize, vector: &[f32]) {
        self.scales[slot] = quantize(vector, &mut self.codes[slot * dim..(slot + 1) * dim]);
        self.sq_norms[slot] = vector.iter().map(|x| x * x).sum();
    }

    /// Moves the last row into `slot` (when they differ) and drops the last row.
    pub(crate) fn swap_remove(&mut self, dim: usize, slot: usize) {
        let last = self.scales.len() - 1;
        if slot != last {
            self.codes.copy_within(last * dim..(last + 1) * dim, slot * dim);
        }
        self.codes.truncate(last * dim);
        self.scales.swap_remove(slot);
        self.sq_norms.swap_remove(slot);
    }
}

/// Writes the codes of `vector` into `out` and returns its scale (0 for the zero vector, whose codes are all 0).
pub(crate) fn quantize(vector: &[f32], out: &mut [i8]) -> f32 {
    let max = vector.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        out.fill(0);
        return 0.0;
    }
    let inv = 127.0 / max;
    for (o, x) in out.iter_mut().zip(vector) {
        // In [-127, 127] by construction of `inv`; the clamp guards the rounding of the extreme value.
        *o = (x * inv).round().clamp(-127.0, 127.0) as i8;
    }
    max / 127.0
}

/// An integer dot-product kernel picked once for the running CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum I8Kernel {
    /// A loop the compiler vectorises for the compile target.
    Portable,
    /// The same loop compiled for AVX2, detected at run time.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// The same loop compiled for AVX-512 (BW, VNNI), detected at run time.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl I8Kernel {
    /// The fastest kernel this CPU supports.
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vnni")
            {
                return I8Kernel::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") {
                return I8Kernel::Avx2;
            }
        }
        I8Kernel::Portable
    }

    /// `out[r] = sum(query[i] * rows[r * dim + i])` for every row of `rows`, with `dim = query.len()`.
    ///
    /// # Panics
    /// If `rows.len() != out.len() * query.len()` (an internal invariant: the stores slice whole rows).
    pub(crate) fn dots(self, query: &[i8], rows: &[i8], out: &mut [i32]) {
        assert_eq!(rows.len(), out.len() * query.len(), "int8 kernel called with a ragged block");
        match self {
            I8Kernel::Portable => dots_portable(query, rows, out),
            // SAFETY: these variants are only made by `detect` after checking the CPU features each one is
            // compiled for; the functions themselves only use safe slice code.
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Avx2 => unsafe { dots_avx2(query, rows, out) },
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Avx512 => unsafe { dots_avx512(query, rows, out) },
        }
    }
}

/// Lane-wise `i32` sums the compiler turns into widening multiply-adds.
#[inline(always)]
fn dots_portable(query: &[i8], rows: &[i8], out: &mut [i32]) {
    let dim = query.len();
    if dim == 0 {
        out.fill(0);
        return;
    }
    for (row, o) in rows.chunks_exact(dim).zip(out.iter_mut()) {
        *o = row.iter().zip(query).map(|(&a, &b)| i32::from(a) * i32::from(b)).sum();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dots_avx2(query: &[i8], rows: &[i8], out: &mut [i32]) {
    dots_portable(query, rows, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn dots_avx512(query: &[i8], rows: &[i8], out: &mut [i32]) {
    dots_portable(query, rows, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernels() -> Vec<I8Kernel> {
        let mut k = vec![I8Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                k.push(I8Kernel::Avx2);
            }
            if I8Kernel::detect() == I8Kernel::Avx512 {
                k.push(I8Kernel::Avx512);
            }
        }
        k
    }

    #[test]
    fn kernels_compute_exact_integer_dots_for_odd_shapes_and_extremes() {
        let mut rng = fastrand::Rng::with_seed(11);
        for dim in [1usize, 3, 15, 16, 17, 31, 33, 64, 65, 384, 1000] {
            for n in [0usize, 1, 2, 7] {
                let q: Vec<i8> = (0..dim).map(|_| rng.i8(-127..=127)).collect();
                let mut rows: Vec<i8> = (0..n * dim).map(|_| rng.i8(-127..=127)).collect();
                if n > 0 {
                    // The extreme: every product is 127 * 127 (or its negation).
                    rows[..dim].iter_mut().zip(&q).for_each(|(r, qv)| *r = if *qv < 0 { -127 } else { 127 });
                }
                let want: Vec<i32> = rows
                    .chunks_exact(dim)
                    .map(|r| r.iter().zip(&q).map(|(&a, &b)| a as i64 * b as i64).sum::<i64>() as i32)
                    .collect();
                for kernel in kernels() {
                    let mut out = vec![i32::MIN; n];
                    kernel.dots(&q, &rows, &mut out);
                    assert_eq!(out, want, "{kernel:?} dim={dim} n={n}");
                }
            }
        }
    }

    #[test]
    fn quantize_round_trips_within_half_a_step() {
        let mut rng = fastrand::Rng::with_seed(5);
        let v: Vec<f32> = (0..384).map(|_| rng.f32() * 2.0 - 1.0).collect();
        let mut codes = vec![0i8; v.len()];
        let scale = quantize(&v, &mut codes);
        let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!((scale - max / 127.0).abs() < 1e-9);
        for (x, c) in v.iter().zip(&codes) {
            assert!((x - scale * *c as f32).abs() <= scale * 0.5 + 1e-6, "{x} vs {c} * {scale}");
        }
        assert!(codes.iter().any(|c| c.abs() == 127), "the largest component maps to ±127");
        let mut zero = vec![5i8; 4];
        assert_eq!(quantize(&[0.0; 4], &mut zero), 0.0);
        assert_eq!(zero, vec![0; 4]);
    }

    #[test]
    fn rows_keep_scales_norms_and_codes_aligned_through_set_and_swap_remove() {
        let dim = 3;
        let mut rows = Int8Rows::default();
        rows.push(&[1.0, 0.0, 0.0]);
        rows.push(&[0.0, 2.0, 0.0]);
        rows.push(&[0.0, 0.0, -4.0]);
        rows.set(dim, 0, &[0.0, 0.0, 8.0]);
        assert_eq!(&rows.codes[0..3], &[0, 0, 127]);
        assert_eq!(rows.sq_norms[0], 64.0);
        rows.swap_remove(dim, 0);
        assert_eq!(rows.scales.len(), 2);
        assert_eq!(&rows.codes, &[0, 0, -127, 0, 127, 0]);
        assert_eq!(rows.sq_norms, vec![16.0, 4.0]);
        rows.swap_remove(dim, 1);
        assert_eq!(&rows.codes, &[0, 0, -127]);
        assert_eq!(rows.scales, vec![4.0 / 127.0]);
    }
}
