//! Shared by the benches that talk to Redis (`ratelimit`, `dlq`): connecting with Palisade's
//! own connection settings, and latency quantiles.

use redis::aio::ConnectionManager;

/// The nearest-rank `p` quantile of `sorted` (ns), in µs.
pub fn quantile_us(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

/// The URL without its password, for printing.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Connects to `url` with the settings Palisade's components use (so baseline and Palisade
/// talk to Redis alike) and checks that Redis answers; panics naming `who` (the bench or
/// section) and what to do otherwise.
pub async fn connect(url: &str, who: &str) -> ConnectionManager {
    let fail = |e: &dyn std::fmt::Display| -> ! {
        panic!(
            "{who} needs Redis at {} (REDIS_URL), which is unreachable: {e}. Start one \
             (scripts/test does), point REDIS_URL at one, or skip it with \
             PALISADE_BENCH_NO_REDIS=1",
            redacted(url)
        )
    };
    let client = redis::Client::open(url).unwrap_or_else(|e| fail(&e));
    let mut conn = ConnectionManager::new_with_config(
        client,
        palisade::core::redis::ConnectionOptions::default().manager_config(),
    )
    .await
    .unwrap_or_else(|e| fail(&e));
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| fail(&e));
    assert_eq!(pong, "PONG");
    conn
}
