//! `palisade fleet` against a real fleet of two instances on the shared Redis (`REDIS_URL`,
//! default `redis://127.0.0.1:6379`; the test fails, loudly, when it does not answer). Instance
//! `gw-a` serves the admin API with the fleet's routes, as the gateway does.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod common;

use std::time::Duration;

use common::{TOKEN, palisade};
use palisade_admin::AdminRouter;
use palisade_breaker::{CircuitBreaker, State};
use palisade_bulkhead::Bulkhead;
use palisade_core::Registry;
use palisade_fleet::{Fleet, FleetConfig, fleet_router};
use palisade_testkit::{shared_redis, unique};

/// One instance: its registry, its `weather` breaker and `web` bulkhead, and its membership.
struct Member {
    registry: Registry,
    breaker: CircuitBreaker,
    bulkhead: Bulkhead,
    fleet: Fleet,
}

async fn member(redis: &str, fleet: &str, id: &str) -> Member {
    let registry = Registry::new();
    let breaker = CircuitBreaker::builder("weather")
        .registry(&registry)
        .build()
        .unwrap();
    let bulkhead = Bulkhead::builder("web")
        .max_concurrent(8)
        .registry(&registry)
        .build()
        .unwrap();
    let config = FleetConfig {
        version: "1.4.2".into(),
        addresses: vec![format!("http://{id}.internal:8080")],
        heartbeat: Duration::from_millis(200),
        ttl: Duration::from_secs(2),
        ..FleetConfig::new(fleet, id)
    };
    let fleet = Fleet::join(redis, config, &registry).await.unwrap();
    Member {
        registry,
        breaker,
        bulkhead,
        fleet,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_list_send_overrides_and_resilience_reach_every_instance() {
    let (redis, _conn) = shared_redis().await; // panics, loudly, without Redis
    let name = unique("cli-fleet");
    let a = member(&redis, &name, "gw-a").await;
    let b = member(&redis, &name, "gw-b").await;
    let server = AdminRouter::builder(&a.registry)
        .token(TOKEN)
        .extension(fleet_router(a.fleet.clone()))
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr());
    let env = [
        ("PALISADE_ADMIN_URL", url.as_str()),
        ("PALISADE_ADMIN_TOKEN", TOKEN),
    ];
    let run = |args: &'static [&'static str]| palisade(&env, args);

    // The instances.
    let list = run(&["fleet"]).await;
    let out = list.ok();
    eprintln!("{out}");
    assert!(
        out.starts_with(&format!("fleet {name}: 2 instances (this one: gw-a)\n")),
        "{out}"
    );
    assert!(
        out.contains("gw-a  1.4.2    http://gw-a.internal:8080"),
        "{out}"
    );
    assert!(
        out.contains("gw-b  1.4.2    http://gw-b.internal:8080"),
        "{out}"
    );
    let json = run(&["fleet", "list", "--json"]).await.json();
    assert_eq!(json["count"], 2, "{json}");

    // A persisted force-open: both instances apply it.
    let send = run(&[
        "fleet",
        "send",
        "breaker",
        "weather",
        "force-open",
        "--persist",
        "--actor",
        "alice",
    ])
    .await;
    let out = send.ok();
    eprintln!("{out}");
    assert!(
        out.starts_with(
            "force_open on circuit_breaker weather (persisted): 2 of 2 instances applied it\n"
        ),
        "{out}"
    );
    assert!(out.contains("gw-a      applied  now forced_open"), "{out}");
    assert!(out.contains("gw-b      applied  now forced_open"), "{out}");
    assert_eq!(a.breaker.state(), State::ForcedOpen);
    assert_eq!(b.breaker.state(), State::ForcedOpen);

    // A command with fields, as k=v pairs.
    let send = run(&[
        "fleet",
        "send",
        "bulkhead",
        "web",
        "set-max-concurrent",
        "max_concurrent=16",
        "--json",
    ])
    .await;
    send.ok();
    let answer = send.json();
    assert_eq!(answer["answers"][0]["status"], "applied", "{answer}");
    assert_eq!(a.bulkhead.max_concurrent(), 16);
    assert_eq!(b.bulkhead.max_concurrent(), 16);

    // Refused by every instance: exit 1, each one's reason.
    let refused = run(&["fleet", "send", "breaker", "nope", "reset"]).await;
    refused.exits(1);
    assert!(
        refused
            .stdout
            .contains("no circuit_breaker named 'nope' is registered"),
        "{refused:?}"
    );
    assert!(
        refused.stderr.contains("2 of 2 instances did not apply it"),
        "{refused:?}"
    );

    // The override.
    let overrides = run(&["fleet", "overrides"]).await;
    let out = overrides.ok();
    eprintln!("{out}");
    assert!(
        out.contains(r#"circuit_breaker  weather  state  {"action":"force_open"}  alice"#),
        "{out}"
    );

    // The fleet view, once the heartbeats carried the new state.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let view = run(&["fleet", "resilience"]).await;
        let out = view.ok().to_owned();
        if out.contains("circuit_breaker  weather  forced_open  gw-a=forced_open gw-b=forced_open")
        {
            eprintln!("{out}");
            assert!(
                out.starts_with(&format!("fleet {name}: 2 instances\n")),
                "{out}"
            );
            assert!(
                out.contains("bulkhead         web      -            gw-a=0/16 gw-b=0/16"),
                "{out}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Clear one component's overrides (no question), then all of them (asked: --yes).
    let clear = run(&["fleet", "overrides", "clear", "circuit-breakers", "weather"]).await;
    assert_eq!(
        clear.ok(),
        "fleet: 1 override(s) of circuit_breaker weather removed\n"
    );
    assert!(a.fleet.overrides().await.unwrap().is_empty());
    assert_eq!(
        a.breaker.state(),
        State::ForcedOpen,
        "the instances keep their state"
    );
    run(&["fleet", "send", "breaker", "weather", "reset", "--persist"])
        .await
        .ok();
    assert_eq!(a.breaker.state(), State::Closed);
    assert_eq!(b.breaker.state(), State::Closed);
    run(&[
        "fleet",
        "send",
        "bulkhead",
        "web",
        "set_max_concurrent",
        "max_concurrent=4",
        "--persist",
    ])
    .await
    .ok();
    assert_eq!(a.fleet.overrides().await.unwrap().len(), 1);
    let refused = run(&["fleet", "overrides", "clear"]).await;
    refused.exits(2);
    assert!(refused.stderr.contains("pass --yes"), "{refused:?}");
    assert_eq!(
        a.fleet.overrides().await.unwrap().len(),
        1,
        "nothing removed"
    );
    let clear = run(&["fleet", "overrides", "clear", "--yes"]).await;
    assert_eq!(clear.ok(), "fleet: 1 override(s) removed\n");
    assert!(a.fleet.overrides().await.unwrap().is_empty());

    server.shutdown().await.unwrap();
    a.fleet.leave().await.unwrap();
    b.fleet.leave().await.unwrap();
}
