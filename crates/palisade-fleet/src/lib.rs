//! # palisade-fleet
//!
//! One control plane for a fleet of replicas. A service runs as several instances, each with
//! its own [`Registry`](palisade_core::Registry) of breakers, bulkheads and limiters; an
//! operator's command must reach all of them, and a replica started later must come up in the
//! state the fleet is in. Over one Redis (single node, Sentinel or Cluster):
//!
//! - **Instance registry**: [`Fleet::join`] registers the instance and heartbeats it;
//!   [`Fleet::instances`] lists the live ones; an instance that stops heartbeating leaves the
//!   list within its ttl, and [`Fleet::leave`] removes it at once.
//! - **Fleet commands**: [`Fleet::send`] appends a component command to a Redis stream; every
//!   instance's command loop applies it, in order, through its registry and records `applied`
//!   or `refused`; the [`FleetAnswer`] lists each live instance's outcome, or `no_answer` at the
//!   deadline. An instance stopped while commands were sent applies them when it joins again
//!   under the same id (unless they are older than `catch_up`, one hour by default).
//! - **Durable overrides**: a command sent with `persist` is also stored, and every instance
//!   that joins re-applies the stored overrides before [`Fleet::join`] returns, so a restarted
//!   replica comes back `forced_open` if the fleet is.
//! - **Shared breakers** (opt-in per breaker): [`Fleet::share_breaker`] makes a breaker learn
//!   from the whole fleet — it opens on every instance when the fleet's failure rate crosses
//!   its threshold, or when a quorum of instances opened theirs — while every call is still
//!   decided locally, with no Redis round trip; see [Shared breakers](#shared-breakers).
//! - **Admin routes** (feature `axum`): [`fleet_router`], to mount behind palisade-admin's
//!   token check — it does no authentication itself.
//!
//! ## Example
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use palisade_breaker::CircuitBreaker;
//! use palisade_core::{ComponentKind, Registry};
//! use palisade_fleet::{Fleet, FleetCommand, FleetConfig, Outcome};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::new();
//! let github = CircuitBreaker::builder("github").registry(&registry).build()?;
//!
//! // At start: one id per replica, stable across its restarts (host and port, pod name).
//! let config = FleetConfig {
//!     version: env!("CARGO_PKG_VERSION").into(),
//!     addresses: vec!["http://10.0.0.7:8080".into()],
//!     ..FleetConfig::new("mcp-gateway", "10.0.0.7:8080")
//! };
//! let fleet = Fleet::join("redis://127.0.0.1:6379", config, &registry).await?;
//! for instance in fleet.instances().await? {
//!     tracing::info!(target: "palisade::fleet", id = %instance.id, version = %instance.version, "replica");
//! }
//!
//! // An operator opens `github` on every replica, and on the replicas that start later.
//! let command = FleetCommand::new(
//!     ComponentKind::CircuitBreaker,
//!     "github",
//!     serde_json::json!({"action": "force_open"}),
//! )
//! .persist(true)
//! .actor("alice");
//! let answer = fleet.send(command, Duration::from_secs(5)).await?;
//! for a in &answer.answers {
//!     if let Outcome::Refused { reason, .. } = &a.outcome {
//!         tracing::warn!(target: "palisade::fleet", instance = %a.instance, %reason, "refused");
//!     }
//! }
//! assert_eq!(github.state().as_str(), "forced_open");
//! assert_eq!(fleet.overrides().await?.len(), 1);
//!
//! // A persisted reset closes them all and removes the override.
//! let reset = FleetCommand::new(
//!     ComponentKind::CircuitBreaker,
//!     "github",
//!     serde_json::json!({"action": "reset"}),
//! )
//! .persist(true);
//! fleet.send(reset, Duration::from_secs(5)).await?;
//!
//! // At shutdown: leave the list at once.
//! fleet.leave().await?;
//! # Ok(()) }
//! ```
//!
//! ## Key layout
//!
//! Every key of fleet `f` shares the hash tag `{f}`, so all of them live in one Redis Cluster
//! slot: the scripts (`src/lua/`, each declaring every key it touches in `KEYS`) and
//! multi-key operations are cluster-safe, and different fleets spread over the cluster.
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `palisade:fleet:{f}:instances` | sorted set | instance id, scored by its registration's expiry (Redis `TIME` + ttl, ms) |
//! | `palisade:fleet:{f}:info` | hash | instance id → `{"id", "version", "addresses", "started_at_ms", "ttl_ms"}` |
//! | `palisade:fleet:{f}:commands` | stream | one entry per command, field `cmd`: `{"kind", "name", "command", "persist", "actor", "origin"}`; `MAXLEN ~ 10000` |
//! | `palisade:fleet:{f}:results:<stream id>` | hash | instance id → `{"status": "applied", "result"}` or `{"status": "refused", "reason", "error"}`; expires after `catch_up` |
//! | `palisade:fleet:{f}:cursor:<instance>` | string | the last stream id the instance handled; expires `max(catch_up, 24 h)` after its last heartbeat or command |
//! | `palisade:fleet:{f}:overrides` | hash | `<kind>/<name>/<slot>` → `<stream id> {"kind", "name", "command", "actor", "origin"}` |
//!
//! Times that decide anything (registration expiry, a command's age) are Redis time, so the
//! instances' clocks do not matter.
//!
//! ## Catching up
//!
//! Each instance stores the last stream id it handled (its cursor, per instance id). An
//! instance that joins with an id that has a cursor re-applies the overrides, then every
//! command after its cursor, in order, before [`Fleet::join`] returns; commands older than
//! [`FleetConfig::catch_up`] (one hour by default) are skipped — an hour-old "force open" is
//! more likely to hurt than help, and the overrides carry what must last. An id without a
//! cursor (a new replica, or one gone longer than the cursor's retention) starts at the
//! stream's end: it gets the fleet's durable state from the overrides, not by replaying
//! one-off commands sent before it existed. The stream keeps the last 10,000 commands; an
//! instance that was away while more were sent misses the oldest.
//!
//! Commands are applied at least once: an instance that dies between applying a command and
//! recording it applies it again when it comes back (component commands set a state or a
//! value, so applying one twice is harmless).
//!
//! ## Durable overrides
//!
//! A command sent with `persist: true` is stored under `<kind>/<name>/<slot>`, in the same
//! atomic step that sends it:
//!
//! | command | slot | stored |
//! | --- | --- | --- |
//! | circuit breaker `force_open`, `disable`, `metrics_only` | `state` | replaces the breaker's earlier persisted state |
//! | circuit breaker `reset` (or `close`) | `state` | **removes** the breaker's persisted state (closed is the default) |
//! | `update_config` (any kind) | `update_config:<the fields it sets>` | replaces an earlier update of the same fields; updates of other fields stay |
//! | any other action | the action | replaces the earlier persisted command with that action |
//! | any dead-letter queue command; health `restart`, `check`, `reset_crash_loop`; rate limiter `reset` | — | refused with [`FleetError::NotPersistable`]: one-off actions, or state that already lives in Redis |
//!
//! A persisted command needs an `action`. Joining instances re-apply the overrides in the
//! order they were sent, so the last word wins as it did on the running instances; an
//! override for a component an instance does not have is skipped. A command sent without
//! `persist` changes no override (a plain `reset` closes the breakers now, and a replica
//! joining later still applies a persisted `force_open`: send the reset with `persist`).
//! [`Fleet::clear_override`] and [`Fleet::clear_all`] remove stored overrides without changing
//! the running instances.
//!
//! Overrides live in Redis: run it with persistence (AOF) if they must survive a Redis restart.
//!
//! ## When Redis is down
//!
//! [`Fleet::join`] fails only for an invalid configuration: it connects lazily, waits at most
//! `join_timeout`, and otherwise returns with a warning. The heartbeat and the command loop
//! retry with backoff (100 ms doubling to 2 s; the heartbeat up to its interval), logging one
//! warning per outage and one line when Redis is back; the loop then re-registers, re-applies
//! the overrides if it never could, and continues where it stopped. [`Fleet::send`],
//! [`Fleet::instances`] and the override calls fail with [`FleetError::Unavailable`] naming
//! Redis. Nothing panics.
//!
//! ## Shared breakers
//!
//! Sharing is opt-in per breaker ([`Fleet::share_breaker`]) and adds nothing to a call's path:
//! the breaker still admits and records locally, with no Redis round trip. Every
//! [`publish_interval`](crate::FleetConfig::publish_interval) (1 s by default) one script call
//! per instance — for all its shared breakers together — adds the outcome counts recorded
//! since the last exchange to the fleet's window in Redis and brings back the fleet's numbers.
//! Each instance then opens its own breaker when:
//!
//! - **failure-rate mode**: the fleet's failure rate over the window (default 30 s) reaches
//!   the threshold with at least `minimum_calls` calls; or
//! - **quorum mode**: at least `quorum` instances have opened theirs on their own (a breaker
//!   opened on the fleet's word does not count toward the quorum until it has closed again).
//!
//! A breaker opened by the fleet is an ordinary open breaker: it waits its own wait, then its
//! half-open trials decide locally whether it closes. When it closes, its view of the fleet's
//! window starts afresh (failures from before do not re-open it), as a local breaker clears
//! its window. Its own rules (consecutive failures, its own window) keep working throughout.
//! Operator states win: a `forced_open`, `disabled` or `metrics_only` breaker is never moved
//! by the fleet.
//!
//! When Redis cannot be reached, each shared breaker is a local breaker again and its
//! snapshot says so (`shared.status: "local"`, with the error); at the next exchange that
//! succeeds it is shared again. The counts an exchange could not send are dropped, not sent
//! later (a late burst would distort the fleet's window), and a report from an instance that stops exchanging expires after three intervals.
//!
//! ```no_run
//! use palisade_breaker::CircuitBreaker;
//! use palisade_core::Registry;
//! use palisade_fleet::{Fleet, FleetConfig, ShareMode};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::new();
//! let github = CircuitBreaker::builder("github").registry(&registry).build()?;
//! let fleet = Fleet::join("redis://127.0.0.1:6379", FleetConfig::new("api", "pod-1"), &registry).await?;
//! // Open on every replica when half the fleet's calls of the last 30 s failed (20 calls or more).
//! fleet.share_breaker(&github, ShareMode::failure_rate(50.0, 20))?;
//! assert_eq!(github.snapshot().shared.unwrap().mode, "failure_rate");
//! # Ok(()) }
//! ```
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `palisade:fleet:{f}:breaker:<name>` | hash | `c:<second>`/`f:<second>` calls and failures per second of Redis time; `m:<instance>` and `o:<instance>` until when the instance counts as a member and as open on its own; `s:<instance>` when its breaker last closed. Expires after twice the window. |
//!
//! ## Audit trail
//!
//! Each instance that applies a command publishes, on its registry's event bus, the
//! registry's own `admin_action` event and an [`EventKind::Audit`](palisade_core::EventKind::Audit)
//! with the component's snapshots before and after and `actor` = `"<actor> via fleet <fleet>
//! (command <id>, sent from <instance>, applied on <instance>)"` (overrides re-applied at join
//! say so instead). Refused commands change nothing and publish no audit event; every command
//! is also logged (`palisade::fleet`).
//!
//! ## Caveats
//!
//! - Write access to the fleet's Redis keys is control of every instance: whoever can `XADD`
//!   to the stream commands the fleet. Protect Redis (ACLs, TLS, a private network) as you
//!   protect the admin token.
//! - Instance ids must be unique among running replicas; two processes with the same id share
//!   one registration and one cursor.
//! - A command applies on every instance: for a component whose state already lives in Redis
//!   (a Redis dead-letter queue), send it once through any instance's own admin API instead.
//! - Each instance uses two Redis connections: one multiplexed for everything, and one for the
//!   blocking stream read (`XREAD BLOCK` holds its connection while it waits).

mod apply;
mod backoff;
mod breakers;
mod command;
mod config;
mod error;
mod fleet;
#[cfg(feature = "axum")]
mod http;
mod instance;
mod keys;
mod overrides;
mod reply;
mod scripts;
mod store;
mod view;
mod worker;

pub use apply::APPLY_TIMEOUT;
pub use breakers::{MAX_SHARE_WINDOW, ShareMode};
pub use command::{FleetAnswer, FleetCommand, InstanceAnswer, MAX_COMMAND_BYTES, Outcome};
pub use config::{CURSOR_RETENTION, FleetConfig, MAX_ADDRESSES, MAX_TEXT_LEN};
pub use error::FleetError;
pub use fleet::Fleet;
#[cfg(feature = "axum")]
pub use http::{ACTOR_HEADER, DEFAULT_ACTOR, DEFAULT_DEADLINE, MAX_DEADLINE, fleet_router};
pub use instance::InstanceInfo;
pub use overrides::Override;
pub use store::STREAM_MAX_LEN;
pub use view::{FleetComponent, FleetResilience, aggregate};
