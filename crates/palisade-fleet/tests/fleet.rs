//! The fleet over a real Redis: three instances, each with its own registry holding a circuit
//! breaker named `upstream`, one fleet name per test. Waits on Redis are polls with a
//! deadline (`eventually`), never sleeps that hope.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use palisade_breaker::{CircuitBreaker, State};
use palisade_core::{ComponentKind, EventKind, Registry};
use palisade_fleet::{Fleet, FleetCommand, FleetConfig, FleetError, Outcome};
use palisade_testkit::{RedisServer, eventually, shared_redis, unique};
use serde_json::{Value, json};

const CB: ComponentKind = ComponentKind::CircuitBreaker;
const DEADLINE: Duration = Duration::from_secs(10);

/// One instance: its fleet handle, its registry and its breaker `upstream`.
struct Node {
    fleet: Fleet,
    registry: Registry,
    breaker: CircuitBreaker,
}

async fn node_with(url: &str, config: FleetConfig) -> Node {
    let registry = Registry::new();
    let breaker = CircuitBreaker::builder("upstream")
        .registry(&registry)
        .build()
        .unwrap();
    let fleet = Fleet::join(url, config, &registry).await.unwrap();
    Node {
        fleet,
        registry,
        breaker,
    }
}

async fn node(url: &str, fleet: &str, id: &str) -> Node {
    node_with(url, FleetConfig::new(fleet, id)).await
}

async fn three(url: &str, fleet: &str) -> [Node; 3] {
    [
        node(url, fleet, "a").await,
        node(url, fleet, "b").await,
        node(url, fleet, "c").await,
    ]
}

fn command(action: &str) -> FleetCommand {
    FleetCommand::new(CB, "upstream", json!({ "action": action })).actor("alice")
}

async fn ids(fleet: &Fleet) -> Vec<String> {
    fleet
        .instances()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect()
}

fn statuses(answer: &palisade_fleet::FleetAnswer) -> Vec<(String, &'static str)> {
    answer
        .answers
        .iter()
        .map(|a| (a.instance.clone(), a.outcome.status()))
        .collect()
}

fn all(status: &'static str, instances: &[&str]) -> Vec<(String, &'static str)> {
    instances
        .iter()
        .map(|i| ((*i).to_owned(), status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_open_sent_through_one_instance_reaches_all_three() {
    let (url, _) = shared_redis().await;
    let name = unique("fleet-force");
    let nodes = three(&url, &name).await;
    assert_eq!(ids(&nodes[1].fleet).await, ["a", "b", "c"]);
    let info = &nodes[0].fleet.instances().await.unwrap()[0];
    assert!(
        info.last_seen_ms >= info.started_at_ms.saturating_sub(5_000),
        "{info:?}"
    );

    let answer = nodes[0]
        .fleet
        .send(command("force_open"), DEADLINE)
        .await
        .unwrap();
    assert_eq!(statuses(&answer), all("applied", &["a", "b", "c"]));
    assert_eq!(answer.applied(), 3);
    assert_eq!(answer.action.as_deref(), Some("force_open"));
    for n in &nodes {
        assert_eq!(n.breaker.state(), State::ForcedOpen);
        let Some(Outcome::Applied { result }) = answer.get(n.fleet.instance_id()) else {
            panic!("{answer:?}");
        };
        assert_eq!(result["state"], "forced_open", "{result}");
        // The audit trail of each instance names the actor, the sender and itself.
        let audit = n
            .registry
            .events()
            .recent(&Default::default())
            .into_iter()
            .find_map(|e| match e.kind {
                EventKind::Audit {
                    actor,
                    action,
                    before,
                    after,
                } => Some((actor, action, before, after)),
                _ => None,
            })
            .unwrap();
        assert_eq!(audit.1, "force_open");
        assert!(audit.0.starts_with("alice via fleet "), "{}", audit.0);
        assert!(audit.0.contains("sent from a"), "{}", audit.0);
        assert!(
            audit
                .0
                .contains(&format!("applied on {}", n.fleet.instance_id())),
            "{}",
            audit.0
        );
        assert_eq!(audit.2["state"], "closed");
        assert_eq!(audit.3["state"], "forced_open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_is_at_once_and_a_silent_instance_expires_within_its_ttl() {
    let (url, _) = shared_redis().await;
    let name = unique("fleet-leave");
    let [a, b, _c] = three(&url, &name).await;
    let ttl = Duration::from_secs(1);
    let short = FleetConfig {
        heartbeat: Duration::from_millis(100),
        ttl,
        ..FleetConfig::new(&name, "d")
    };
    let d = node_with(&url, short).await;
    assert_eq!(ids(&b.fleet).await, ["a", "b", "c", "d"]);

    a.fleet.leave().await.unwrap();
    assert_eq!(ids(&b.fleet).await, ["b", "c", "d"]);
    a.fleet.leave().await.unwrap(); // idempotent

    // Killed: no heartbeat any more, no leave.
    drop(d);
    let dropped = Instant::now();
    eventually("d leaves the list", ttl * 3, || async {
        !ids(&b.fleet).await.contains(&"d".to_owned())
    })
    .await;
    let gone_after = dropped.elapsed();
    assert!(
        gone_after <= ttl + Duration::from_millis(500),
        "{gone_after:?}"
    );
    assert_eq!(ids(&b.fleet).await, ["b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_applies_what_it_missed_when_it_joins_again() {
    let (url, mut redis) = shared_redis().await;
    let name = unique("fleet-catchup");
    let [a, b, c] = three(&url, &name).await;
    // c stops (its heartbeat and command loop are aborted); it stays listed until its ttl.
    drop(c);
    let answer = a
        .fleet
        .send(command("force_open"), Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(
        statuses(&answer),
        [
            ("a".to_owned(), "applied"),
            ("b".to_owned(), "applied"),
            ("c".to_owned(), "no_answer")
        ]
    );
    assert_eq!(b.breaker.state(), State::ForcedOpen);

    // c comes back (a fresh process: a fresh registry) under the same id: the command is
    // applied before `join` returns.
    let c = node(&url, &name, "c").await;
    assert_eq!(c.breaker.state(), State::ForcedOpen);
    let recorded: String = redis::cmd("HGET")
        .arg(format!("palisade:fleet:{{{name}}}:results:{}", answer.id))
        .arg("c")
        .query_async(&mut redis)
        .await
        .unwrap();
    let recorded: Value = serde_json::from_str(&recorded).unwrap();
    assert_eq!(recorded["status"], "applied");

    // A new instance id starts at the stream's end: a command sent before it existed (and not
    // persisted) is not replayed to it.
    let d = node(&url, &name, "d").await;
    assert_eq!(d.breaker.state(), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_older_than_the_catch_up_window_are_skipped() {
    let (url, mut redis) = shared_redis().await;
    let name = unique("fleet-cutoff");
    let window = Duration::from_secs(1);
    let config = |id: &str| FleetConfig {
        catch_up: window,
        ..FleetConfig::new(&name, id)
    };
    let a = node_with(&url, config("a")).await;
    let b = node_with(&url, config("b")).await;
    drop(b);
    let answer = a
        .fleet
        .send(command("force_open"), Duration::ZERO)
        .await
        .unwrap();
    // Wait (on Redis's clock, which decides) until the command is older than the window.
    let sent_ms: u64 = answer.id.split('-').next().unwrap().parse().unwrap();
    eventually(
        "the command ages past the window",
        Duration::from_secs(5),
        || {
            let mut redis = redis.clone();
            async move {
                palisade_testkit::redis_time_us(&mut redis).await / 1000
                    > sent_ms + window.as_millis() as u64
            }
        },
    )
    .await;
    let b = node_with(&url, config("b")).await;
    assert_eq!(b.breaker.state(), State::Closed);
    // Its cursor moved past the skipped command: nothing is pending for it.
    let cursor: String = redis::cmd("GET")
        .arg(format!("palisade:fleet:{{{name}}}:cursor:b"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(cursor, answer.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_force_open_reaches_replicas_that_join_later_until_cleared() {
    let (url, _) = shared_redis().await;
    let name = unique("fleet-override");
    let a = node(&url, &name, "a").await;
    let answer = a
        .fleet
        .send(command("force_open").persist(true), DEADLINE)
        .await
        .unwrap();
    assert_eq!(statuses(&answer), all("applied", &["a"]));
    assert!(answer.persisted);
    let overrides = a.fleet.overrides().await.unwrap();
    assert_eq!(overrides.len(), 1);
    assert_eq!(overrides[0].kind, CB);
    assert_eq!(overrides[0].name, "upstream");
    assert_eq!(overrides[0].slot, "state");
    assert_eq!(overrides[0].command, json!({"action": "force_open"}));
    assert_eq!(overrides[0].actor, "alice");
    assert_eq!(overrides[0].id, answer.id);

    // A replica that joins later comes back forced open, before `join` returns.
    let b = node(&url, &name, "b").await;
    assert_eq!(b.breaker.state(), State::ForcedOpen);

    // A later persisted state replaces the earlier one (one override per breaker state).
    a.fleet
        .send(command("disable").persist(true), DEADLINE)
        .await
        .unwrap();
    let overrides = a.fleet.overrides().await.unwrap();
    assert_eq!(overrides.len(), 1);
    assert_eq!(overrides[0].command, json!({"action": "disable"}));
    let c = node(&url, &name, "c").await;
    assert_eq!(c.breaker.state(), State::Disabled);

    // Clearing removes it; running instances keep their state, new ones start closed.
    assert_eq!(a.fleet.clear_override(CB, "upstream").await.unwrap(), 1);
    assert!(a.fleet.overrides().await.unwrap().is_empty());
    assert_eq!(a.fleet.clear_override(CB, "upstream").await.unwrap(), 0);
    assert_eq!(c.breaker.state(), State::Disabled);
    let d = node(&url, &name, "d").await;
    assert_eq!(d.breaker.state(), State::Closed);

    // A persisted reset closes every breaker and removes the breaker's state override.
    a.fleet
        .send(command("force_open").persist(true), DEADLINE)
        .await
        .unwrap();
    assert_eq!(a.fleet.overrides().await.unwrap().len(), 1);
    let answer = a
        .fleet
        .send(command("reset").persist(true), DEADLINE)
        .await
        .unwrap();
    assert_eq!(statuses(&answer), all("applied", &["a", "b", "c", "d"]));
    assert!(a.fleet.overrides().await.unwrap().is_empty());
    for n in [&a, &b, &c, &d] {
        assert_eq!(n.breaker.state(), State::Closed);
    }

    // clear_all removes every override.
    a.fleet
        .send(command("metrics_only").persist(true), DEADLINE)
        .await
        .unwrap();
    assert_eq!(a.fleet.clear_all().await.unwrap(), 1);
    assert!(a.fleet.overrides().await.unwrap().is_empty());

    // One-off actions are not persisted, and nothing is sent.
    let err = a
        .fleet
        .send(
            FleetCommand::new(
                ComponentKind::DeadLetterQueue,
                "calls",
                json!({"action": "purge"}),
            )
            .persist(true),
            DEADLINE,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, FleetError::NotPersistable { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_command_is_refused_everywhere_with_the_registry_reason() {
    let (url, _) = shared_redis().await;
    let name = unique("fleet-malformed");
    let nodes = three(&url, &name).await;
    let bad = json!({"action": "explode"});
    // What a registry says about it.
    let expected = nodes[0]
        .registry
        .control(CB, "upstream", bad.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(expected.contains("malformed command"), "{expected}");

    let answer = nodes[1]
        .fleet
        .send(FleetCommand::new(CB, "upstream", bad), DEADLINE)
        .await
        .unwrap();
    assert_eq!(statuses(&answer), all("refused", &["a", "b", "c"]));
    for a in &answer.answers {
        let Outcome::Refused { reason, error } = &a.outcome else {
            panic!("{a:?}");
        };
        assert_eq!(reason, &expected);
        assert_eq!(error["error"], "malformed_command");
    }
    for n in &nodes {
        assert_eq!(n.breaker.state(), State::Closed);
    }

    // A component an instance does not have: refused by the registry, naming it.
    let answer = nodes[0]
        .fleet
        .send(command("force_open").actor("bob"), DEADLINE)
        .await
        .unwrap();
    assert_eq!(answer.applied(), 3);
    let answer = nodes[0]
        .fleet
        .send(
            FleetCommand::new(CB, "nope", json!({"action": "force_open"})),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(answer.refused(), 3);
    let Some(Outcome::Refused { reason, .. }) = answer.get("b") else {
        panic!("{answer:?}");
    };
    assert_eq!(reason, "no circuit_breaker named 'nope' is registered");

    // An invalid name is refused before anything is sent.
    let err = nodes[0]
        .fleet
        .send(
            FleetCommand::new(CB, "a/b", json!({"action": "reset"})),
            DEADLINE,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, FleetError::InvalidCommand { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_send_fails_and_the_loops_resume_after_a_restart() {
    let mut server = RedisServer::start();
    let url = server.url();
    let name = unique("fleet-down");
    let fast = |id: &str| FleetConfig {
        heartbeat: Duration::from_millis(200),
        ttl: Duration::from_secs(2),
        join_timeout: Duration::from_secs(1),
        ..FleetConfig::new(&name, id)
    };
    let a = node_with(&url, fast("a")).await;
    let b = node_with(&url, fast("b")).await;
    assert_eq!(ids(&a.fleet).await, ["a", "b"]);

    server.stop();
    let started = Instant::now();
    let err = a
        .fleet
        .send(command("force_open"), DEADLINE)
        .await
        .unwrap_err();
    assert!(matches!(err, FleetError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("Redis is unavailable"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let err = a.fleet.instances().await.unwrap_err();
    assert!(matches!(err, FleetError::Unavailable { .. }), "{err}");
    // Joining while Redis is down succeeds (lazily connected), within its join timeout.
    let started = Instant::now();
    let c = node_with(&url, fast("c")).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Redis comes back empty: heartbeats re-register everyone, the command loops resume.
    server.restart();
    eventually(
        "all three registered again",
        Duration::from_secs(10),
        || async { a.fleet.instances().await.is_ok_and(|l| l.len() == 3) },
    )
    .await;
    let answer = b.fleet.send(command("force_open"), DEADLINE).await.unwrap();
    assert_eq!(statuses(&answer), all("applied", &["a", "b", "c"]));
    for n in [&a, &b, &c] {
        assert_eq!(n.breaker.state(), State::ForcedOpen);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_commands_and_overrides_reach_every_instance() {
    let config =
        palisade_core::redis::RedisConfig::cluster(palisade_testkit::shared_cluster()).unwrap();
    let url = config.to_string();
    let name = unique("fleet-cluster");
    let a = node(&url, &name, "a").await;
    let b = node(&url, &name, "b").await;
    let answer = a
        .fleet
        .send(command("force_open").persist(true), DEADLINE)
        .await
        .unwrap();
    assert_eq!(statuses(&answer), all("applied", &["a", "b"]));
    assert_eq!(b.breaker.state(), State::ForcedOpen);
    let c = node(&url, &name, "c").await;
    assert_eq!(c.breaker.state(), State::ForcedOpen);
    assert_eq!(ids(&c.fleet).await, ["a", "b", "c"]);
    b.fleet.leave().await.unwrap();
    assert_eq!(ids(&c.fleet).await, ["a", "c"]);
    assert_eq!(a.fleet.clear_all().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_view_sums_counters_and_shows_the_worst_state_per_instance() {
    let (url, _conn) = shared_redis().await;
    let name = unique("fleet-view");
    let fast = |id: &str| FleetConfig {
        heartbeat: Duration::from_millis(100),
        ..FleetConfig::new(&name, id)
    };
    let a = node_with(&url, fast("a")).await;
    let b = node_with(&url, fast("b")).await;
    // Locally, on b only: the breaker is forced open and refuses two calls.
    b.breaker.force_open();
    for _ in 0..2 {
        assert!(b.breaker.try_acquire().is_err());
    }
    palisade_testkit::eventually("the fleet view shows b's breaker", DEADLINE, || async {
        let view = a.fleet.resilience().await.unwrap();
        view.components.iter().any(|c| {
            c.kind == CB
                && c.name == "upstream"
                && c.worst.as_deref() == Some("forced_open")
                && c.instances.len() == 2
        })
    })
    .await;
    let view = a.fleet.resilience().await.unwrap();
    assert_eq!(view.instances, ["a", "b"]);
    let breaker = view.components.iter().find(|c| c.kind == CB).unwrap();
    assert_eq!(breaker.instances["a"]["state"], "closed");
    assert_eq!(breaker.instances["b"]["state"], "forced_open");
    let rejected: u64 = ["a", "b"]
        .iter()
        .map(|i| {
            breaker.instances[*i]["rejected_total"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(
        breaker.totals.get("rejected_total").copied().unwrap_or(0),
        rejected
    );
    // An instance that leaves leaves the view.
    b.fleet.leave().await.unwrap();
    let view = a.fleet.resilience().await.unwrap();
    assert_eq!(view.instances, ["a"]);
}
