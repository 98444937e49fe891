//! `flaky-upstream`: see the crate documentation ([`flaky_upstream`]) for its modes and flags.

fn main() -> std::process::ExitCode {
    flaky_upstream::main_with_args(std::env::args().skip(1))
}
