//! Helpers shared by the benchmark binaries: settings from the environment, medians.

#![allow(dead_code)]

/// The value of the environment variable `name` parsed as `T`, or `default` when it is not set; panics naming
/// the variable when it does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v} is not valid")),
        Err(_) => default,
    }
}

/// The median (upper median for an even count) of `v`, which must not be empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Whether the binary runs as a benchmark: `cargo bench` passes `--bench`, `cargo test --benches` passes
/// nothing, and then the benchmarks run one small round as a smoke test.
pub fn benching() -> bool {
    std::env::args().any(|a| a == "--bench")
}
