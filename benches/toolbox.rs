//! Placeholder: the retry, hedge and timeout benchmarks (issue 19) are written here.

fn main() {}
