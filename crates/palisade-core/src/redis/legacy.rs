//! The single-node helpers that came before [`RedisConnection`](super::RedisConnection); kept
//! while components move over.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::ConfigError;

/// The settings of Palisade's Redis connections: a connection attempt gives up after 1 s, a
/// reply after 5 s, and a lost connection is re-established with backoff from 20 ms to 1 s, 3
/// attempts a round (the next command starts another round). Components bound their own
/// operations more tightly on top (the rate limiter's time budget).
///
/// ```
/// # #[cfg(feature = "redis")] {
/// let config = palisade_core::redis::connection_config().set_number_of_retries(1);
/// # let _ = config;
/// # }
/// ```
pub fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_secs(1))
        .set_number_of_retries(3)
}

/// `url` parsed, with `TCP_NODELAY` on: Palisade's Redis commands are small writes, often
/// several in flight on one multiplexed connection, and Nagle's algorithm would hold each write
/// behind the previous one's acknowledgement (up to 40 ms with a delayed-ACK peer). Errors name
/// `field`; the URL is never quoted (it may hold a password).
pub fn connection_info(url: &str, field: &str) -> Result<redis::ConnectionInfo, ConfigError> {
    use redis::IntoConnectionInfo;
    let info = url
        .into_connection_info()
        .map_err(|e| ConfigError::new(field, format!("not a Redis URL: {e}")))?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    Ok(info.set_tcp_settings(tcp))
}

/// A multiplexed, reconnecting connection to `url` that connects on first use, so a component
/// can be built while Redis is down. Errors name `field`: outside a tokio runtime (where the
/// redis crate would panic on its first reconnect), a URL that does not parse, or settings the
/// connection manager refuses. The URL is never quoted (it may hold a password).
pub fn lazy_connection(
    url: &str,
    field: &str,
    config: ConnectionManagerConfig,
) -> Result<ConnectionManager, ConfigError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(ConfigError::new(
            field,
            "a Redis connection must be set up inside a tokio runtime",
        ));
    }
    let client = redis::Client::open(connection_info(url, field)?)
        .map_err(|e| ConfigError::new(field, format!("cannot open the connection: {e}")))?;
    ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| ConfigError::new(field, format!("cannot set up the connection: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_outside_a_runtime_and_bad_urls_naming_the_field() {
        let err = lazy_connection("redis://127.0.0.1:6379", "redis_url", connection_config())
            .unwrap_err();
        assert_eq!(err.field, "redis_url");
        assert!(err.reason.contains("tokio runtime"), "{err}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = rt
            .block_on(async { lazy_connection("http://x", "url", connection_config()) })
            .unwrap_err();
        assert_eq!(err.field, "url");
        assert!(err.reason.contains("not a Redis URL"), "{err}");
    }

    #[test]
    fn connections_have_nodelay() {
        let info = connection_info("redis://127.0.0.1:6379/2", "redis_url").unwrap();
        assert!(info.tcp_settings().nodelay());
        assert_eq!(info.redis_settings().db(), 2);
        let err = connection_info("redis://:secret@[bad", "redis_url").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
