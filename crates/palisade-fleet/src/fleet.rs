//! [`Fleet`]: one instance's membership of its fleet, and the background tasks that keep it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::Registry;
use palisade_core::redis::{IntoRedisConfig, RedisConnection};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::config::FleetConfig;
use crate::error::FleetError;
use crate::instance::{self, Details};
use crate::store::Store;
use crate::worker::{self, Worker};

/// What the background tasks and the handle share (the tasks never own the handle, so that
/// dropping the last handle stops them).
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) config: FleetConfig,
    pub(crate) registry: Registry,
    /// This instance's details, as JSON, written by every heartbeat.
    pub(crate) details: String,
    /// The breakers shared with the fleet.
    pub(crate) breakers: crate::breakers::Breakers,
}

struct Inner {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A dropped fleet stops heartbeating (it leaves the list within its ttl) and stops
        // applying commands; `leave` removes it at once.
        for task in self.tasks.get_mut().drain(..) {
            task.abort();
        }
    }
}

/// This instance's membership of a fleet: it heartbeats into Redis, applies the commands sent
/// to the fleet to its [`Registry`], and sends commands to the whole fleet. Cheap to clone;
/// dropping the last clone stops the background tasks (the instance then leaves the list
/// within its ttl) — call [`Fleet::leave`] at shutdown to leave at once.
///
/// See the [crate documentation](crate) for an example, the key layout and the rules.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.inner.shared.config;
        f.debug_struct("Fleet")
            .field("fleet", &c.fleet)
            .field("instance_id", &c.instance_id)
            .field("running", &!self.inner.tasks.lock().is_empty())
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Joins fleet `config.fleet` as instance `config.instance_id`, applying its commands to
    /// `registry`. Must be called inside a tokio runtime.
    ///
    /// `redis` is a URL (`redis://`, `rediss://`, `redis+sentinel://…/<master>`,
    /// `redis+cluster://…`) or a [`RedisConfig`](palisade_core::redis::RedisConfig). Before it
    /// returns, `join` registers the instance, re-applies every stored override to `registry`
    /// (see [`Fleet::overrides`]) and applies the commands this instance id missed while it was
    /// stopped — waiting at most `config.join_timeout` for Redis. It fails only for an invalid
    /// configuration ([`FleetError::Config`], naming the field): when Redis is down it logs a
    /// warning and returns, and the background tasks register, re-apply and catch up as soon
    /// as Redis answers.
    ///
    /// Two background tasks run until [`Fleet::leave`] or the last clone is dropped: the
    /// heartbeat, and the command loop that reads the fleet's stream in order and applies each
    /// command. Both retry with backoff (100 ms doubling to 2 s; the heartbeat's up to its
    /// interval) while Redis fails, and log one warning per outage.
    pub async fn join(
        redis: impl IntoRedisConfig,
        config: FleetConfig,
        registry: &Registry,
    ) -> Result<Fleet, FleetError> {
        config.validate()?;
        let redis = redis.into_redis_config()?;
        let conn = RedisConnection::open(&redis, config.connection)?;
        // The blocking stream read holds its connection until it returns: it gets its own,
        // whose replies may take as long as the block.
        let mut reading = config.connection;
        reading.response_timeout += worker::BLOCK;
        let reader = RedisConnection::open(&redis, reading)?;
        let shared = Arc::new(Shared {
            store: Store::new(conn, &config.fleet, &config.instance_id),
            details: Details::of(&config).to_json(),
            registry: registry.clone(),
            breakers: Default::default(),
            config,
        });
        let mut worker = Worker::new(Arc::clone(&shared), reader);
        let started = tokio::time::timeout(shared.config.join_timeout, async {
            instance::beat(&shared).await?;
            worker.start().await?;
            worker.catch_up().await
        })
        .await;
        let (fleet, id) = (&shared.config.fleet, &shared.config.instance_id);
        match started {
            Ok(Ok(applied)) => tracing::info!(
                target: "palisade::fleet", fleet = %fleet, instance = %id, caught_up = applied,
                "joined the fleet"
            ),
            Ok(Err(e)) => tracing::warn!(
                target: "palisade::fleet", fleet = %fleet, instance = %id, error = %e,
                "joined the fleet without Redis; registering, overrides and commands follow \
                 when it answers"
            ),
            Err(_) => tracing::warn!(
                target: "palisade::fleet", fleet = %fleet, instance = %id,
                timeout_ms = crate::config::millis(shared.config.join_timeout),
                "Redis did not answer in time while joining; registering, overrides and \
                 commands follow in the background"
            ),
        }
        let tasks = vec![
            tokio::spawn(instance::heartbeat_loop(Arc::clone(&shared))),
            tokio::spawn(worker.run()),
            tokio::spawn(crate::breakers::run(Arc::clone(&shared))),
        ];
        Ok(Fleet {
            inner: Arc::new(Inner {
                shared,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    /// Leaves the fleet at once (graceful stop): stops the heartbeat and the command loop,
    /// then removes this instance from the list. Its cursor stays, so the same instance id
    /// catches up on the commands sent meanwhile when it joins again. Idempotent; the handle
    /// can still list instances and overrides and send commands afterwards, but this instance
    /// no longer applies any.
    ///
    /// Fails with [`FleetError::Unavailable`] when Redis cannot be reached; the tasks are
    /// stopped anyway, and the instance leaves the list within its ttl.
    pub async fn leave(&self) -> Result<(), FleetError> {
        let tasks: Vec<_> = self.inner.tasks.lock().drain(..).collect();
        for task in &tasks {
            task.abort();
        }
        // Wait until they are gone, so that no heartbeat in flight re-registers the instance
        // after it left (commands on one connection run in the order they were sent).
        for task in tasks {
            let _ = task.await;
        }
        let was = self.shared().store.leave().await?;
        tracing::info!(
            target: "palisade::fleet", fleet = %self.name(), instance = %self.instance_id(),
            registered = was, "left the fleet"
        );
        Ok(())
    }

    /// The fleet's name.
    pub fn name(&self) -> &str {
        &self.shared().config.fleet
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.shared().config.instance_id
    }

    /// The configuration this instance joined with.
    pub fn config(&self) -> &FleetConfig {
        &self.shared().config
    }

    /// The registry the fleet's commands are applied to.
    pub fn registry(&self) -> &Registry {
        &self.shared().registry
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }
}

/// The backoff bounds of the command loop while Redis fails.
pub(crate) const RETRY_MIN: Duration = Duration::from_millis(100);
/// See [`RETRY_MIN`].
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(2);
