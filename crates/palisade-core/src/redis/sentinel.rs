//! Following a Sentinel group's primary: ask the sentinels, connect, and ask again when the
//! connection fails or the node turns out to be a replica.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisResult, ServerErrorKind, Value};

use super::config::RedisConfig;
use super::connection::ConnectionOptions;
use super::tls::Certificates;
use crate::config::ConfigError;

pub(crate) struct SentinelConnection {
    /// Resolves the primary; one resolution at a time.
    client: tokio::sync::Mutex<SentinelClient>,
    /// The connection to the primary last resolved, with its generation.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    connection_config: AsyncConnectionConfig,
    options: ConnectionOptions,
    db: i64,
    master: String,
}

impl SentinelConnection {
    pub(crate) fn new(
        config: &RedisConfig,
        master: &str,
        certs: Certificates,
        options: ConnectionOptions,
    ) -> Result<SentinelConnection, ConfigError> {
        let addrs = config
            .nodes()
            .iter()
            .map(|(h, p)| super::tls::addr(config, h, *p))
            .collect::<Vec<_>>();
        let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
        let mut builder = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)
            .map_err(|e| ConfigError::new("redis_url", format!("bad Sentinel settings: {e}")))?
            .set_client_to_redis_db(config.db())
            .set_client_to_redis_tcp_settings(tcp.clone())
            .set_client_to_sentinel_tcp_settings(tcp);
        if let Some(user) = config.username() {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(pass) = config.password() {
            builder = builder.set_client_to_redis_password(pass);
        }
        if let Some(user) = config.sentinel_username() {
            builder = builder.set_client_to_sentinel_username(user);
        }
        if let Some(pass) = config.sentinel_password() {
            builder = builder.set_client_to_sentinel_password(pass);
        }
        let builder = super::tls::sentinel_builder(builder, config, certs);
        let client = builder
            .build()
            .map_err(|e| ConfigError::new("redis_url", format!("bad Sentinel settings: {e}")))?;
        Ok(SentinelConnection {
            client: tokio::sync::Mutex::new(client),
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
            connection_config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(options.connect_timeout))
                .set_response_timeout(Some(options.response_timeout)),
            options,
            db: config.db(),
            master: master.to_owned(),
        })
    }

    pub(crate) fn db(&self) -> i64 {
        self.db
    }

    /// The connection to the current primary, asking the sentinels when there is none.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.current.lock().clone() {
            return Ok(current);
        }
        let mut client = self.client.lock().await;
        if let Some(current) = self.current.lock().clone() {
            return Ok(current);
        }
        // Each sentinel is asked in turn, then the primary it names is connected and checked
        // with ROLE: bound the whole walk.
        let budget = self.options.connect_timeout * 2 + self.options.response_timeout;
        let conn = tokio::time::timeout(
            budget,
            client.get_async_connection_with_config(&self.connection_config),
        )
        .await
        .map_err(|_| {
            RedisError::from((
                ErrorKind::Io,
                "no primary found through the sentinels in time",
                format!("master {:?}, waited {budget:?}", self.master),
            ))
        })??;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.current.lock() = Some((generation, conn.clone()));
        tracing::debug!(target: "palisade::core", master = %self.master, generation, "connected to the primary named by the sentinels");
        Ok((generation, conn))
    }

    /// Forgets the connection of `generation` (not a newer one) so that the next command asks
    /// the sentinels again.
    fn forget(&self, generation: u64, error: &RedisError) {
        let mut current = self.current.lock();
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
            tracing::info!(target: "palisade::core", master = %self.master, %error, "lost the primary; asking the sentinels again");
        }
    }

    fn check<T>(&self, generation: u64, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result
            && needs_new_primary(e)
        {
            self.forget(generation, e);
        }
        result
    }

    pub(crate) async fn req_command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let (generation, mut conn) = self.connection().await?;
        let result = conn.req_packed_command(cmd).await;
        self.check(generation, result)
    }

    pub(crate) async fn req_pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let (generation, mut conn) = self.connection().await?;
        let result = conn.req_packed_commands(pipeline, offset, count).await;
        self.check(generation, result)
    }
}

/// Errors after which the node may no longer be the primary: the connection failed or timed
/// out, or the node says it is a replica (`READONLY`, also inside a script's error) or lost
/// its primary (`MASTERDOWN`).
fn needs_new_primary(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
        || e.to_string().contains("READONLY")
}
