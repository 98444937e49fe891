//! Drives a Palisade circuit breaker through its whole life against a simulated flaky upstream,
//! printing what an operator would see: refusals with their retry time, the state transitions
//! as events, and the breaker's JSON snapshot from the registry.
//!
//! ```text
//! cargo run -p breaker-demo
//! ```
//!
//! `CIRCUIT_BREAKER_THRESHOLD` and `CIRCUIT_BREAKER_TIMEOUT` are honoured; the demo shortens the
//! default 60 s wait to 2 s unless `CIRCUIT_BREAKER_TIMEOUT` is set.
#![allow(clippy::print_stdout)] // a demo program talks to its user

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade::breaker::{BreakerConfig, CallError, CircuitBreaker};
use palisade::core::{ComponentKind, EventKind, Registry};
use serde_json::json;

/// A stand-in for an HTTP or MCP upstream whose health we flip.
#[derive(Clone, Default)]
struct Upstream {
    down: Arc<AtomicBool>,
}

impl Upstream {
    async fn get(&self, i: u32) -> Result<String, String> {
        tokio::task::yield_now().await;
        if self.down.load(Ordering::Relaxed) {
            Err(format!("request {i}: upstream returned 503"))
        } else {
            Ok(format!("request {i}: 200 OK"))
        }
    }
}

async fn burst(breaker: &CircuitBreaker, upstream: &Upstream, from: u32, n: u32) {
    for i in from..from + n {
        match breaker.call(upstream.get(i)).await {
            Ok(body) => println!("  {body}"),
            Err(CallError::Inner(e)) => println!("  {e}"),
            Err(CallError::Rejected(r)) => println!("  request {i}: refused: {r}"),
        }
        // Let the event printer run, so events appear next to the calls that caused them.
        tokio::task::yield_now().await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = BreakerConfig::from_env()?;
    if std::env::var_os("CIRCUIT_BREAKER_TIMEOUT").is_none() {
        config.wait_duration = Duration::from_secs(2);
    }
    config.half_open_max_calls = 2;
    let wait = config.wait_duration;

    let registry = Registry::new();
    let breaker = CircuitBreaker::builder("flaky-upstream")
        .config(config)
        .registry(&registry)
        .build()?;
    let mut events = registry.events().subscribe();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            if let EventKind::StateTransition { from, to, reason } = e.kind {
                println!(
                    "  [event #{}] {}: {from} -> {to} ({reason})",
                    e.seq, e.component
                );
            }
        }
    });
    let upstream = Upstream::default();

    println!("1. upstream healthy");
    burst(&breaker, &upstream, 1, 2).await;

    println!("2. upstream goes down: failures open the breaker, then calls are refused at once");
    upstream.down.store(true, Ordering::Relaxed);
    burst(&breaker, &upstream, 3, 5).await;

    println!("3. upstream recovers; after {wait:?} the breaker lets trial calls through");
    upstream.down.store(false, Ordering::Relaxed);
    tokio::time::sleep(wait).await;
    println!("  state now: {}", breaker.state());
    burst(&breaker, &upstream, 8, 3).await;

    println!(
        "4. an operator forces it open and resets it, through the registry (as the admin API does)"
    );
    registry
        .control(
            ComponentKind::CircuitBreaker,
            "flaky-upstream",
            json!({"action": "force_open"}),
        )
        .await?;
    burst(&breaker, &upstream, 11, 1).await;
    registry
        .control(
            ComponentKind::CircuitBreaker,
            "flaky-upstream",
            json!({"action": "reset"}),
        )
        .await?;
    burst(&breaker, &upstream, 12, 1).await;
    tokio::task::yield_now().await;

    println!("5. the breaker's snapshot:");
    let snapshot = registry.snapshot(ComponentKind::CircuitBreaker, "flaky-upstream")?;
    println!("{}", serde_json::to_string_pretty(&snapshot)?);
    Ok(())
}
