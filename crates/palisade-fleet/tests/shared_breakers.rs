//! Shared breakers over a real Redis: three instances share the breaker `upstream`; each test
//! uses its own fleet name (or its own Redis server). Exchanges are driven explicitly with
//! `Fleet::exchange_breakers` (the background task does the same every publish interval), so
//! what each instance has seen is known without waiting on timers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use palisade_breaker::{CircuitBreaker, SharingStatus, State};
use palisade_core::{ManualClock, Registry};
use palisade_fleet::{Fleet, FleetConfig, ShareMode};
use palisade_testkit::{RedisServer, eventually, shared_redis, unique};

struct Node {
    fleet: Fleet,
    breaker: CircuitBreaker,
    clock: ManualClock,
}

/// An instance whose breaker `upstream` trips on its own after `threshold` failures in a row.
async fn node(url: &str, config: FleetConfig, mode: &ShareMode, threshold: u32) -> Node {
    let registry = Registry::new();
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder("upstream")
        .consecutive_failures(threshold)
        .wait_duration(Duration::from_secs(30))
        .half_open_max_calls(1)
        .clock(clock.shared())
        .registry(&registry)
        .build()
        .unwrap();
    let fleet = Fleet::join(url, config, &registry).await.unwrap();
    fleet.share_breaker(&breaker, mode.clone()).unwrap();
    Node {
        fleet,
        breaker,
        clock,
    }
}

async fn three(url: &str, fleet: &str, mode: ShareMode, threshold: u32) -> [Node; 3] {
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(node(url, FleetConfig::new(fleet, id), &mode, threshold).await);
    }
    nodes.try_into().ok().unwrap()
}

fn record(b: &CircuitBreaker, successes: usize, failures: usize) {
    for _ in 0..successes {
        b.try_acquire().unwrap().success();
    }
    for _ in 0..failures {
        // Refused once it has opened: those calls never ran.
        if let Ok(p) = b.try_acquire() {
            p.failure();
        }
    }
}

async fn exchange(nodes: &[&Node]) {
    for n in nodes {
        assert_eq!(n.fleet.exchange_breakers().await.unwrap(), 1);
    }
}

fn reason(b: &CircuitBreaker) -> String {
    b.snapshot().last_transition.unwrap().reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_seen_by_one_instance_open_the_breaker_on_the_others() {
    let (url, _) = shared_redis().await;
    let mode = ShareMode::failure_rate(50.0, 20);
    // Local breakers that would take 100 failures in a row to trip on their own.
    let [a, b, c] = three(&url, &unique("shared-rate"), mode, 100).await;
    // The upstream fails only for calls arriving through A; B and C see successes.
    record(&a.breaker, 0, 8);
    record(&b.breaker, 4, 0);
    record(&c.breaker, 4, 0);
    exchange(&[&a, &b, &c]).await;
    // 8 failures in 16 calls, under 20 calls: nobody moves.
    for n in [&a, &b, &c] {
        assert_eq!(n.breaker.state(), State::Closed);
    }
    // A keeps failing: after A's exchange, B and C see 12 of 20 calls failed.
    record(&a.breaker, 0, 4);
    exchange(&[&a, &b, &c]).await;
    for n in [&b, &c] {
        assert_eq!(n.breaker.state(), State::Open, "{}", n.fleet.instance_id());
        assert!(
            reason(&n.breaker).starts_with("fleet failure rate"),
            "{}",
            reason(&n.breaker)
        );
        let shared = n.breaker.snapshot().shared.unwrap();
        assert_eq!(shared.status, SharingStatus::Shared);
        assert_eq!(shared.mode, "failure_rate");
        assert_eq!(shared.instances, Some(3));
        assert!(shared.fleet_calls.unwrap() >= 20, "{shared:?}");
    }
    // B's own trials decide when it closes: its path works.
    b.clock.advance(Duration::from_secs(30));
    b.breaker.try_acquire().unwrap().success();
    assert_eq!(b.breaker.state(), State::Closed);
    // Closed again, B's view of the window starts afresh: A's old failures do not re-open it.
    exchange(&[&b]).await;
    assert_eq!(b.breaker.state(), State::Closed);
    assert_eq!(b.breaker.snapshot().shared.unwrap().fleet_calls, Some(0));
    for n in [a, b, c] {
        n.fleet.leave().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_of_instances_open_on_their_own_opens_the_rest_and_nothing_loops() {
    let (url, _) = shared_redis().await;
    let [a, b, c] = three(
        &url,
        &unique("shared-quorum"),
        ShareMode::Quorum { quorum: 2 },
        3,
    )
    .await;
    record(&a.breaker, 0, 3);
    assert_eq!(a.breaker.state(), State::Open);
    exchange(&[&a, &b, &c]).await;
    assert_eq!(c.breaker.state(), State::Closed, "one of a quorum of 2");
    record(&b.breaker, 0, 3);
    exchange(&[&a, &b, &c]).await;
    assert_eq!(c.breaker.state(), State::Open);
    assert_eq!(
        reason(&c.breaker),
        "2 instances of the fleet opened on their own (quorum 2)"
    );
    assert_eq!(c.breaker.snapshot().shared.unwrap().instances_open, Some(2));
    // A and B recover; C, open on the fleet's word, does not count: nobody re-opens (A still
    // sees B's last report, one instance; B, exchanging last, sees none).
    a.breaker.reset();
    b.breaker.reset();
    exchange(&[&c, &a, &b]).await;
    assert_eq!(a.breaker.state(), State::Closed);
    assert_eq!(b.breaker.state(), State::Closed);
    assert_eq!(a.breaker.snapshot().shared.unwrap().instances_open, Some(1));
    assert_eq!(b.breaker.snapshot().shared.unwrap().instances_open, Some(0));
    for n in [a, b, c] {
        n.fleet.leave().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_states_are_never_moved_by_the_fleet() {
    let (url, _) = shared_redis().await;
    let [a, b, c] = three(
        &url,
        &unique("shared-operator"),
        ShareMode::Quorum { quorum: 1 },
        3,
    )
    .await;
    b.breaker.disable();
    c.breaker.metrics_only();
    record(&a.breaker, 0, 3);
    exchange(&[&a, &b, &c]).await;
    assert_eq!(b.breaker.state(), State::Disabled);
    assert_eq!(c.breaker.state(), State::MetricsOnly);
    for n in [a, b, c] {
        n.fleet.leave().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_breaker_decides_locally_and_says_so_then_rejoins() {
    let mut server = RedisServer::start();
    let url = server.url();
    let mode = ShareMode::failure_rate(50.0, 4);
    let [a, b, c] = three(&url, &unique("shared-outage"), mode, 3).await;
    exchange(&[&a, &b, &c]).await;
    server.stop();
    for n in [&a, &b] {
        assert!(n.fleet.exchange_breakers().await.is_err());
        let shared = n.breaker.snapshot().shared.unwrap();
        assert_eq!(shared.status, SharingStatus::Local);
        assert!(
            shared.detail.contains("cannot reach the fleet"),
            "{}",
            shared.detail
        );
    }
    // A still decides on its own calls; B knows nothing of them.
    record(&a.breaker, 0, 3);
    assert_eq!(a.breaker.state(), State::Open);
    assert_eq!(b.breaker.state(), State::Closed);
    server.restart();
    for n in [&a, &b, &c] {
        eventually(
            "the exchange succeeds again",
            Duration::from_secs(10),
            || async { n.fleet.exchange_breakers().await.is_ok() },
        )
        .await;
        assert_eq!(
            n.breaker.snapshot().shared.unwrap().status,
            SharingStatus::Shared
        );
    }
    // Rejoined: failures through A (closed by an operator) open B and C again.
    a.breaker.reset();
    record(&a.breaker, 0, 2);
    a.breaker.reset();
    record(&a.breaker, 0, 2);
    exchange(&[&a, &b, &c]).await;
    assert_eq!(b.breaker.state(), State::Open);
    assert_eq!(c.breaker.state(), State::Open);
    for n in [a, b, c] {
        n.fleet.leave().await.unwrap();
    }
}

/// Reads `cmdstat_<command>`'s `calls` from `INFO commandstats`.
async fn calls(conn: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_exchange_is_one_redis_command_for_all_shared_breakers() {
    let server = RedisServer::start();
    let registry = Registry::new();
    let config = FleetConfig {
        heartbeat: Duration::from_secs(3600),
        ttl: Duration::from_secs(3 * 3600),
        publish_interval: Duration::from_secs(3600),
        ..FleetConfig::new(unique("shared-count"), "a")
    };
    let fleet = Fleet::join(server.url(), config, &registry).await.unwrap();
    for name in ["github", "slack", "weather"] {
        let b = CircuitBreaker::builder(name)
            .registry(&registry)
            .build()
            .unwrap();
        fleet
            .share_breaker(&b, ShareMode::failure_rate(50.0, 20))
            .unwrap();
        record(&b, 5, 1);
    }
    assert_eq!(fleet.shared_breakers(), ["github", "slack", "weather"]);
    fleet.exchange_breakers().await.unwrap(); // loads the script
    let mut conn = palisade_testkit::connect(&server.url()).await.unwrap();
    let before = (
        calls(&mut conn, "evalsha").await,
        calls(&mut conn, "eval").await,
    );
    for _ in 0..5 {
        assert_eq!(fleet.exchange_breakers().await.unwrap(), 3);
    }
    let after = (
        calls(&mut conn, "evalsha").await,
        calls(&mut conn, "eval").await,
    );
    assert_eq!((after.0 - before.0, after.1 - before.1), (5, 0));
    assert!(fleet.unshare_breaker("slack"));
    assert!(!fleet.unshare_breaker("slack"));
    assert_eq!(fleet.exchange_breakers().await.unwrap(), 2);
    fleet.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_mode_is_refused_naming_the_field() {
    let (url, _) = shared_redis().await;
    let registry = Registry::new();
    let fleet = Fleet::join(&url, FleetConfig::new(unique("shared-bad"), "a"), &registry)
        .await
        .unwrap();
    let b = CircuitBreaker::builder("x").build().unwrap();
    let err = fleet
        .share_breaker(&b, ShareMode::failure_rate(150.0, 20))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("shared_breaker.failure_rate_threshold"),
        "{err}"
    );
    assert!(b.snapshot().shared.is_none());
    fleet.leave().await.unwrap();
}
