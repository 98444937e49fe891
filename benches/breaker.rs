//! Circuit breaker benchmarks (being written).

fn main() {}
