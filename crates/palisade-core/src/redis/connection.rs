//! [`RedisConnection`]: one handle over the three topologies, reconnecting by itself.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use super::config::{RedisConfig, Topology};
use super::sentinel::SentinelConnection;
use super::state::ServerState;
use crate::config::ConfigError;

/// Timeouts and reconnection of a [`RedisConnection`]. The defaults: a connection attempt
/// gives up after 1 s, a reply after 5 s, and a lost connection is re-established with backoff
/// from 20 ms to 1 s, 3 attempts a round (the next command starts another round). Components
/// bound their own operations more tightly on top (the rate limiter's time budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionOptions {
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How long a reply may take.
    pub response_timeout: Duration,
    /// The first delay between reconnection attempts.
    pub reconnect_min_delay: Duration,
    /// The longest delay between reconnection attempts.
    pub reconnect_max_delay: Duration,
    /// Reconnection attempts per round.
    pub reconnect_attempts: usize,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(5),
            reconnect_min_delay: Duration::from_millis(20),
            reconnect_max_delay: Duration::from_secs(1),
            reconnect_attempts: 3,
        }
    }
}

impl ConnectionOptions {
    /// Options that fail fast, for health checks: replies within 2 s, one reconnection
    /// attempt, at most 500 ms apart.
    pub fn fail_fast() -> Self {
        ConnectionOptions {
            response_timeout: Duration::from_secs(2),
            reconnect_max_delay: Duration::from_millis(500),
            reconnect_attempts: 1,
            ..ConnectionOptions::default()
        }
    }

    /// What these options mean for a single node's connection manager (for a baseline that
    /// should talk to Redis as Palisade does).
    pub fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_min_delay(self.reconnect_min_delay)
            .set_max_delay(self.reconnect_max_delay)
            .set_number_of_retries(self.reconnect_attempts)
    }
}

/// A connection to Redis (one node, a Sentinel group's primary or a Cluster) shared by clones,
/// multiplexed (concurrent commands pipeline over it) and reconnecting by itself:
///
/// - **one node**: a connection manager that reconnects with backoff;
/// - **Sentinel**: the sentinels are asked for the primary on first use and again whenever the
///   connection fails or the node answers as a replica (`READONLY`), so a failover is followed
///   without a restart; the commands in flight during the failover fail;
/// - **Cluster**: the slot map is read from the seeds on first use; `MOVED` and `ASK` are
///   followed and the map refreshed by the redis crate's cluster client.
///
/// Nothing connects until the first command, so components can be built while Redis is down.
/// It implements [`redis::aio::ConnectionLike`]: use it with `cmd.query_async(&mut conn)` and
/// `script.invoke_async(&mut conn)`; on a cluster a script is routed by its first key.
///
/// ```no_run
/// use palisade_core::redis::{ConnectionOptions, RedisConfig, RedisConnection};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let config = RedisConfig::from_url("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster")?;
/// let mut conn = RedisConnection::open(&config, ConnectionOptions::default())?;
/// let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
/// # let _ = pong;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisConnection {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Sentinel(Arc<SentinelConnection>),
    Cluster(Arc<LazyCluster>),
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("topology", &self.topology_name())
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// A connection to `config`'s Redis, connecting on first use. Must be called inside a
    /// tokio runtime. Refused, naming the field, when TLS files cannot be read or parsed, when
    /// TLS is asked for in a build without the `redis-tls` feature, or outside a runtime.
    pub fn open(
        config: &RedisConfig,
        options: ConnectionOptions,
    ) -> Result<RedisConnection, ConfigError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::new(
                "redis_url",
                "a Redis connection must be set up inside a tokio runtime",
            ));
        }
        config.validate()?;
        #[allow(clippy::let_unit_value)] // `()` without the `redis-tls` feature
        let certs = super::tls::certificates(config)?;
        let inner = match config.topology() {
            Topology::Single => {
                let (host, port) = &config.nodes()[0];
                let info = node_info(config, host, *port)?;
                let client = super::tls::client(info, certs)?;
                let manager =
                    ConnectionManager::new_lazy_with_config(client, options.manager_config())
                        .map_err(|e| {
                            ConfigError::new(
                                "redis_url",
                                format!("cannot set up the connection: {e}"),
                            )
                        })?;
                Inner::Single(manager)
            }
            Topology::Sentinel { master } => Inner::Sentinel(Arc::new(SentinelConnection::new(
                config, master, certs, options,
            )?)),
            Topology::Cluster => {
                Inner::Cluster(Arc::new(LazyCluster::new(config, certs, options)?))
            }
        };
        Ok(RedisConnection { inner })
    }

    /// `single`, `sentinel` or `cluster`.
    pub fn topology_name(&self) -> &'static str {
        match &self.inner {
            Inner::Single(_) => "single",
            Inner::Sentinel(_) => "sentinel",
            Inner::Cluster(_) => "cluster",
        }
    }

    /// Waits until `replicas` replicas of the primary that holds `key` acknowledged every
    /// write this connection sent before (Redis `WAIT`), at most `timeout`; returns how many
    /// did. On a cluster the `WAIT` goes to the primary of `key`'s slot.
    ///
    /// A write that reached fewer replicas than asked is on the primary only: an asynchronous
    /// replica promoted at a failover may not have it.
    pub async fn wait_for_replicas(
        &self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> RedisResult<u32> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        match &self.inner {
            Inner::Cluster(cluster) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(super::slot::key_slot(key.as_bytes()), SlotAddr::Master),
                ));
                let mut conn = cluster.get().await?;
                let v = conn.route_command(wait, route).await?;
                redis::from_redis_value(v).map_err(Into::into)
            }
            _ => {
                let mut conn = self.clone();
                wait.query_async(&mut conn).await
            }
        }
    }

    /// The role, replication and cluster state of the node(s) behind this connection (`INFO
    /// replication`, and `CLUSTER INFO` on a cluster), for health checks.
    pub async fn server_state(&self) -> RedisResult<ServerState> {
        let mut conn = self.clone();
        let info: Value = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await?;
        // On a cluster, INFO goes to every primary and comes back as a map node → text.
        let mut state = match info {
            Value::Map(nodes) => {
                let mut states = Vec::with_capacity(nodes.len());
                for (_, text) in nodes {
                    let text: String = redis::from_redis_value(text)?;
                    states.push(ServerState::from_info_replication(&text));
                }
                ServerState::combine(&states)
            }
            other => {
                let text: String = redis::from_redis_value(other)?;
                ServerState::from_info_replication(&text)
            }
        };
        state.topology = self.topology_name();
        if let Inner::Cluster(_) = &self.inner {
            let cluster: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await?;
            state.cluster = Some(super::state::ClusterState::from_cluster_info(&cluster));
        }
        Ok(state)
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.inner {
            Inner::Single(conn) => conn.req_packed_command(cmd),
            Inner::Sentinel(s) => {
                let s = Arc::clone(s);
                Box::pin(async move { s.req_command(cmd).await })
            }
            Inner::Cluster(c) => {
                let c = Arc::clone(c);
                Box::pin(async move { c.get().await?.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.inner {
            Inner::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Inner::Sentinel(s) => {
                let s = Arc::clone(s);
                Box::pin(async move { s.req_pipeline(cmd, offset, count).await })
            }
            Inner::Cluster(c) => {
                let c = Arc::clone(c);
                Box::pin(
                    async move { c.get().await?.req_packed_commands(cmd, offset, count).await },
                )
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(conn) => conn.get_db(),
            Inner::Sentinel(s) => s.db(),
            Inner::Cluster(_) => 0,
        }
    }
}

/// `config`'s URL for one node, parsed, with `TCP_NODELAY` on: Palisade's Redis commands are
/// small writes, often several in flight on one multiplexed connection, and Nagle's algorithm
/// would hold each write behind the previous one's acknowledgement (up to 40 ms with a
/// delayed-ACK peer).
pub(crate) fn node_info(
    config: &RedisConfig,
    host: &str,
    port: u16,
) -> Result<redis::ConnectionInfo, ConfigError> {
    use redis::IntoConnectionInfo;
    let info = config
        .node_url(host, port, true)
        .into_connection_info()
        .map_err(|e| ConfigError::new("redis_url", format!("not a usable Redis address: {e}")))?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    Ok(info.set_tcp_settings(tcp))
}

/// A cluster connection opened on first use (and again after a failed first attempt).
pub(crate) struct LazyCluster {
    client: redis::cluster::ClusterClient,
    conn: tokio::sync::OnceCell<redis::cluster_async::ClusterConnection>,
}

impl LazyCluster {
    fn new(
        config: &RedisConfig,
        certs: super::tls::Certificates,
        options: ConnectionOptions,
    ) -> Result<LazyCluster, ConfigError> {
        let seeds = config
            .nodes()
            .iter()
            .map(|(h, p)| node_info(config, h, *p))
            .collect::<Result<Vec<_>, _>>()?;
        let builder = redis::cluster::ClusterClientBuilder::new(seeds)
            .connection_timeout(options.connect_timeout)
            .response_timeout(options.response_timeout)
            .min_retry_wait(duration_ms(options.reconnect_min_delay))
            .max_retry_wait(duration_ms(options.reconnect_max_delay))
            .retries(u32::try_from(options.reconnect_attempts).unwrap_or(u32::MAX));
        let builder = super::tls::cluster_builder(builder, certs);
        let client = builder.build().map_err(|e| {
            ConfigError::new(
                "redis_url",
                format!("cannot set up the cluster client: {e}"),
            )
        })?;
        Ok(LazyCluster {
            client,
            conn: tokio::sync::OnceCell::new(),
        })
    }

    async fn get(&self) -> Result<redis::cluster_async::ClusterConnection, RedisError> {
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
