//! The `palisade` binary against a real admin API on loopback: every command group's happy
//! path (asserting on the output and on the components afterwards), refusals, auth, an
//! unreachable address, usage errors, `--json`, completions and confirmations.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use common::{TOKEN, VIEWER, dead_address, eventually, palisade, service};
use palisade_breaker::State;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_whole_service_on_one_screen() {
    let svc = service().await;
    // Trouble everywhere: a breaker forced open, a full partition, an unhealthy upstream, a
    // crash loop, an injector switched on.
    svc.breaker.force_open();
    let _a = svc.bulkhead.try_acquire().unwrap();
    let _b = svc.bulkhead.try_acquire().unwrap();
    svc.upstream_down.store(true, Ordering::Relaxed);
    svc.monitor.check_all().await;
    svc.crashing.store(true, Ordering::Relaxed);
    let crasher = svc.monitor.component("crasher").unwrap();
    eventually("the crasher's crash loop", || crasher.snapshot().crash_loop).await;
    svc.registry
        .control(
            palisade_core::ComponentKind::FaultInjector,
            "weather",
            json!({"action": "enable", "mode": "error", "rate": 0.5, "ttl": "5m"}),
        )
        .await
        .unwrap();

    let run = svc.run(&["status"]).await;
    let out = run.ok();
    eprintln!("{out}");
    let has = |needle: &str| assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    has(&format!("palisade {}", svc.url));
    has("Health: unhealthy · not ready · live · auto-restart on");
    has("1 crash looping");
    has("crasher   crash loop");
    has("upstream  unhealthy");
    has("GET /health returned 503");
    has("Breakers: 1 of 1 not closed");
    has("weather  forced_open");
    has("Partitions: 1 of 1 saturated");
    has("full");
    has("Rate limiters: 1, 0 requests refused in all");
    has("mcp-clients  memory   120/60s burst 20");
    has("Dead letters: 3 in 1 queue (as last counted)");
    has("gateway-calls  memory   3      parked=1 scheduled=2");
    has("Fault injectors: 1 of 1 ON");
    has("weather  yes      on     error  0.5");

    // All well: one line each.
    svc.breaker.reset();
    drop((_a, _b));
    svc.upstream_down.store(false, Ordering::Relaxed);
    svc.crashing.store(false, Ordering::Relaxed);
    crasher.reset_crash_loop();
    svc.injector.disable();
    svc.monitor.check_all().await;
    let run = svc.run(&["status"]).await;
    let out = run.ok();
    eprintln!("{out}");
    for line in [
        "Health: healthy · ready · live · auto-restart on",
        "Breakers: all 1 closed",
        "Partitions: none of 1 saturated",
        "Fault injectors: none of 1 on",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }

    let doc = svc.run(&["status", "--json"]).await.json();
    // breaker, bulkhead, limiter, dlq, injector, timeout, 3 health
    assert_eq!(doc["total"], 9, "{doc}");
    assert_eq!(doc["health"]["status"], "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakers_list_show_and_every_command_change_the_breaker() {
    let svc = service().await;
    let out = svc.run(&["breakers"]).await;
    let out = out.ok();
    eprintln!("{out}");
    assert!(
        out.starts_with("NAME     STATE   RETRY IN  FAILURES"),
        "{out}"
    );
    assert!(out.contains("weather  closed  -"), "{out}");

    let run = svc
        .run(&["breakers", "open", "weather", "--actor", "alice"])
        .await;
    assert_eq!(
        run.ok(),
        "circuit breaker weather: force_open applied; state forced_open\n"
    );
    assert_eq!(svc.breaker.state(), State::ForcedOpen);
    let list = svc.run(&["breakers", "list"]).await;
    assert!(
        list.ok()
            .contains("weather  forced_open  -         0         0/0/0"),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout
            .contains("closed → forced_open: admin: force_open, just now"),
        "{}",
        list.stdout
    );

    svc.run(&["breakers", "disable", "weather"]).await.ok();
    assert_eq!(svc.breaker.state(), State::Disabled);
    svc.run(&["breakers", "metrics-only", "weather"]).await.ok();
    assert_eq!(svc.breaker.state(), State::MetricsOnly);
    let run = svc.run(&["breakers", "reset", "weather"]).await;
    assert!(run.ok().ends_with("state closed\n"), "{run:?}");
    assert_eq!(svc.breaker.state(), State::Closed);

    let run = svc
        .run(&[
            "breakers",
            "set",
            "weather",
            "wait_duration=30s",
            "consecutive_failures=5",
        ])
        .await;
    assert_eq!(
        run.ok(),
        "circuit breaker weather: config updated: wait_duration=30s consecutive_failures=5 (state closed)\n"
    );
    let config = svc.breaker.config();
    assert_eq!(config.wait_duration, Duration::from_secs(30));
    assert_eq!(config.consecutive_failures, 5);

    let show = svc.run(&["breakers", "show", "weather"]).await;
    let out = show.ok();
    eprintln!("{out}");
    assert!(out.starts_with("circuit breaker weather\n"), "{out}");
    assert!(out.contains("\nstate:"), "{out}");
    assert!(out.contains("config.wait_duration:"), "{out}");
    assert!(out.contains("30s"), "{out}");

    // The audit trail names the operator: --actor, else $USER.
    let audits = svc.audits();
    assert!(
        audits[0].0.starts_with("alice from 127.0.0.1:"),
        "{audits:?}"
    );
    assert_eq!(audits[0].1, "force_open");
    assert!(
        audits[1].0.starts_with("tester from 127.0.0.1:"),
        "{audits:?}"
    );
    let actions: Vec<&str> = audits.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "force_open",
            "disable",
            "metrics_only",
            "reset",
            "update_config"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulkheads_list_and_set_limit() {
    let svc = service().await;
    let _slot = svc.bulkhead.try_acquire().unwrap();
    let run = svc.run(&["bulkheads"]).await;
    let out = run.ok();
    eprintln!("{out}");
    assert!(
        out.contains("web   1       2    0        0         0         0 ms      no"),
        "{out}"
    );
    let run = svc.run(&["bulkheads", "set-limit", "web", "16"]).await;
    assert_eq!(
        run.ok(),
        "bulkhead web: max_concurrent 16 (active 1, waiting 0)\n"
    );
    assert_eq!(svc.bulkhead.max_concurrent(), 16);
    let show = svc.run(&["bulkheads", "show", "web"]).await;
    assert!(show.ok().contains("max_concurrent:"), "{show:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_list_set_quota_and_reset() {
    let svc = service().await;
    for _ in 0..25 {
        let _ = svc.limiter.check_key("10.0.0.7");
    }
    let run = svc.run(&["limits"]).await;
    let out = run.ok();
    eprintln!("{out}");
    assert!(
        out.contains("mcp-clients  memory   120/60s burst 20  20         5         1     -"),
        "{out}"
    );
    let run = svc
        .run(&[
            "limits",
            "set-quota",
            "mcp-clients",
            "--rate",
            "600",
            "--period",
            "1m",
            "--burst",
            "100",
        ])
        .await;
    assert_eq!(
        run.ok(),
        "rate limiter mcp-clients: quota 600/60s burst 100\n"
    );
    let quota = svc.limiter.quota();
    assert_eq!((quota.rate, quota.burst()), (600, 100));

    // The client keeps its used share of the burst: still limited, until its key is reset.
    assert!(svc.limiter.check_key("10.0.0.7").is_err());
    let run = svc
        .run(&["limits", "reset", "mcp-clients", "--key", "10.0.0.7"])
        .await;
    assert_eq!(
        run.ok(),
        "rate limiter mcp-clients: key 10.0.0.7 has its burst back\n"
    );
    assert!(svc.limiter.check_key("10.0.0.7").is_ok());
    let run = svc.run(&["limits", "reset", "mcp-clients"]).await;
    assert_eq!(
        run.ok(),
        "rate limiter mcp-clients: every key has its burst back\n"
    );
    let show = svc
        .run(&["limits", "show", "mcp-clients", "--json"])
        .await
        .json();
    assert_eq!(show["snapshot"]["keys"]["tracked"], 0, "{show}");
    assert_eq!(show["snapshot"]["quota"]["rate"], 600);

    // A memory limiter has no failure policy: the server refuses, and says why.
    let run = svc
        .run(&["limits", "set-failure-policy", "mcp-clients", "fail_open"])
        .await;
    run.exits(1);
    assert!(run.stderr.contains("no backend to fail"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_show_retry_discard_purge_and_stats() {
    let svc = service().await;
    let run = svc.run(&["dlq"]).await;
    let out = run.ok();
    eprintln!("{out}");
    assert!(
        out.starts_with("QUEUE          BACKEND  TOTAL  BY STATE"),
        "{out}"
    );
    assert!(
        out.contains("gateway-calls  memory   3      parked=1 scheduled=2  ok"),
        "{out}"
    );

    let run = svc.run(&["dlq", "show", "gateway-calls"]).await;
    let out = run.ok();
    eprintln!("{out}");
    assert!(
        out.contains("ID  STATE      KIND          OPERATION"),
        "{out}"
    );
    assert!(out.contains("search_query"), "{out}");
    assert!(out.contains("422 the query is empty"), "{out}");
    let run = svc
        .run(&["dlq", "show", "gateway-calls", "--state", "parked"])
        .await;
    let out = run.ok();
    assert_eq!(out.lines().count(), 2, "{out}");
    let run = svc
        .run(&["dlq", "show", "gateway-calls", "--limit", "1"])
        .await;
    let out = run.ok();
    assert!(
        out.contains(&format!(
            "more: palisade dlq show gateway-calls --after {}",
            svc.entry_ids[0]
        )),
        "{out}"
    );
    let id = svc.entry_ids[2].to_string();
    let run = svc.run(&["dlq", "show", "gateway-calls", &id]).await;
    let out = run.ok();
    eprintln!("{out}");
    assert!(
        out.contains("payload.city:"),
        "the operator sees the payload: {out}"
    );
    assert!(out.contains("Lyon"), "{out}");

    // Retry at most one timeout: the oldest.
    let run = svc
        .run(&[
            "dlq",
            "retry",
            "gateway-calls",
            "--kind",
            "timeout",
            "--max",
            "1",
        ])
        .await;
    assert_eq!(
        run.ok(),
        "queue gateway-calls: 1 retried (due now), 0 could not be\n"
    );
    let first = svc.dlq.get(svc.entry_ids[0]).await.unwrap().unwrap();
    let second = svc.dlq.get(svc.entry_ids[1]).await.unwrap().unwrap();
    assert_eq!(
        (first.attempts, second.attempts),
        (0, 1),
        "only the oldest was retried"
    );
    // All parked ones, by filter.
    let run = svc
        .run(&["dlq", "retry", "gateway-calls", "--state", "parked"])
        .await;
    assert_eq!(
        run.ok(),
        "queue gateway-calls: 1 retried (due now), 0 could not be\n"
    );

    // Discard one by id (no question), then by filter (asked: --yes).
    let run = svc.run(&["dlq", "discard", "gateway-calls", &id]).await;
    assert_eq!(run.ok(), "queue gateway-calls: 1 entry discarded\n");
    assert!(svc.dlq.get(svc.entry_ids[2]).await.unwrap().is_none());
    let run = svc
        .run(&[
            "dlq",
            "discard",
            "gateway-calls",
            "--operation",
            "weather_alerts",
            "--yes",
        ])
        .await;
    assert_eq!(run.ok(), "queue gateway-calls: 1 entry discarded\n");

    let run = svc.run(&["dlq", "stats", "gateway-calls"]).await;
    let out = run.ok();
    eprintln!("{out}");
    assert!(out.starts_with("queue gateway-calls\n"), "{out}");
    assert!(out.contains("total:"), "{out}");
    assert!(out.contains("level:"), "{out}");

    let run = svc.run(&["dlq", "purge", "gateway-calls", "-y"]).await;
    assert_eq!(run.ok(), "queue gateway-calls: 1 entry purged\n");
    assert_eq!(svc.dlq.stats().await.unwrap().store.total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_list_restart_crash_loop_auto_restart_and_check() {
    let svc = service().await;
    let run = svc.run(&["health"]).await;
    let out = run.ok();
    eprintln!("{out}");
    assert!(
        out.starts_with("health monitor: healthy · ready · live · auto-restart on\n"),
        "{out}"
    );
    assert!(
        out.contains("worker    healthy  0         on            no"),
        "{out}"
    );

    let run = svc.run(&["health", "restart", "worker"]).await;
    assert!(
        run.ok()
            .starts_with("health component worker: restart applied; healthy · restarts 1"),
        "{run:?}"
    );
    assert_eq!(svc.restarts.load(Ordering::Relaxed), 1);

    svc.crashing.store(true, Ordering::Relaxed);
    let crasher = svc.monitor.component("crasher").unwrap();
    eventually("the crasher's crash loop", || crasher.snapshot().crash_loop).await;
    let run = svc.run(&["health", "list"]).await;
    assert!(run.ok().contains("crasher   crash loop"), "{run:?}");
    svc.crashing.store(false, Ordering::Relaxed);
    let run = svc.run(&["health", "reset-crash-loop", "crasher"]).await;
    assert!(
        run.ok()
            .starts_with("health component crasher: reset_crash_loop applied"),
        "{run:?}"
    );
    assert!(!crasher.snapshot().crash_loop);

    let run = svc.run(&["health", "auto-restart", "off", "worker"]).await;
    assert!(run.ok().contains("auto-restart off"), "{run:?}");
    assert!(
        !svc.monitor
            .component("worker")
            .unwrap()
            .snapshot()
            .auto_restart
    );
    let run = svc.run(&["health", "auto-restart", "off"]).await;
    assert_eq!(
        run.ok(),
        "health monitor: auto-restart off for every component (each component's own switch still applies)\n"
    );
    assert!(!svc.monitor.auto_restart());
    svc.run(&["health", "auto-restart", "on"]).await.ok();
    assert!(svc.monitor.auto_restart());

    svc.upstream_down.store(true, Ordering::Relaxed);
    let run = svc.run(&["health", "check", "upstream"]).await;
    assert!(
        run.ok()
            .starts_with("health component upstream: check applied; unhealthy"),
        "{run:?}"
    );
    svc.upstream_down.store(false, Ordering::Relaxed);
    let run = svc.run(&["health", "check"]).await;
    let out = run.ok();
    assert!(out.starts_with("health monitor: healthy"), "{out}");
    assert!(out.contains("upstream  healthy"), "{out}");
    let show = svc.run(&["health", "show", "upstream"]).await;
    assert!(show.ok().contains("message:"), "{show:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_list_enable_and_disable() {
    let svc = service().await;
    let run = svc.run(&["faults"]).await;
    let out = run.ok();
    eprintln!("{out}");
    assert!(out.contains("weather  yes      off    -"), "{out}");
    let run = svc
        .run(&[
            "faults",
            "enable",
            "weather",
            "--mode",
            "latency",
            "--latency-ms",
            "200",
            "--rate",
            "0.5",
            "--ttl",
            "5m",
            "--actor",
            "alice",
        ])
        .await;
    assert_eq!(
        run.ok(),
        "fault injector weather: latency on 0.5 of calls for 5 min\n"
    );
    assert!(svc.injector.is_enabled());
    let run = svc.run(&["faults", "list"]).await;
    let out = run.ok();
    eprintln!("{out}");
    assert!(
        out.contains("weather  yes      on     latency  0.5   5 min"),
        "{out}"
    );
    assert!(
        out.contains("alice from 127.0.0.1:"),
        "who switched it on: {out}"
    );
    let run = svc.run(&["faults", "disable", "weather"]).await;
    assert_eq!(run.ok(), "fault injector weather: off\n");
    assert!(!svc.injector.is_enabled());
    let run = svc.run(&["faults", "show", "weather"]).await;
    assert!(run.ok().contains("enabled:"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_lists_recent_and_follows_the_stream() {
    let svc = service().await;
    svc.run(&["breakers", "open", "weather"]).await.ok();
    let run = svc
        .run(&["events", "--kind", "breaker", "--type", "state_transition"])
        .await;
    let out = run.ok();
    eprintln!("{out}");
    assert!(out.starts_with("SEQ"), "{out}");
    assert!(
        out.contains(
            "circuit_breaker/weather  state_transition  closed → forced_open: admin: force_open"
        ),
        "{out}"
    );
    let json = svc
        .run(&["events", "--component", "weather", "--json"])
        .await
        .json();
    assert!(
        json["events"].as_array().is_some_and(|e| !e.is_empty()),
        "{json}"
    );

    // --follow: a child that prints events as they happen.
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args([
            "events",
            "--follow",
            "--kind",
            "circuit_breaker",
            "--url",
            &svc.url,
        ])
        .env("PALISADE_ADMIN_TOKEN", TOKEN)
        .env_remove("PALISADE_ADMIN_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // Reset the breaker until the follower shows it (it may not have subscribed yet).
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !seen.iter().any(|l: &String| l.contains("reset")) {
        assert!(
            std::time::Instant::now() < deadline,
            "no event followed: {seen:?}"
        );
        svc.breaker.force_open();
        svc.breaker.reset();
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let line = seen.iter().find(|l| l.contains("→ closed")).unwrap();
    assert!(line.starts_with('#'), "{line}");
    assert!(line.contains("circuit_breaker/weather"), "{line}");
    assert!(line.contains("state_transition"), "{line}");
    assert!(
        line.contains("forced_open → closed: admin: reset"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_exits_1_with_the_servers_reason() {
    let svc = service().await;
    let run = svc.run(&["health", "restart", "upstream"]).await;
    run.exits(1);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr
            .contains("cannot restart: component 'upstream' is not restartable [409 rejected]"),
        "{run:?}"
    );
    let run = svc.run(&["breakers", "reset", "nope"]).await;
    run.exits(1);
    assert!(
        run.stderr
            .contains("no circuit_breaker named 'nope' is registered [404 not_found]"),
        "{run:?}"
    );
    let run = svc
        .run(&["breakers", "set", "weather", "consecutive_failures=0"])
        .await;
    run.exits(1);
    assert!(run.stderr.contains("[422 invalid_config]"), "{run:?}");
    assert!(run.stderr.contains("consecutive_failures"), "{run:?}");
    let run = svc
        .run(&["breakers", "set", "weather", "wait_durration=30s"])
        .await;
    run.exits(1);
    assert!(run.stderr.contains("wait_durration"), "{run:?}");
    assert_eq!(svc.breaker.config().wait_duration, Duration::from_secs(60));
    let run = svc.run(&["dlq", "discard", "gateway-calls", "99999"]).await;
    assert_eq!(run.ok(), "queue gateway-calls: 0 entries discarded\n");
    let run = svc
        .run(&["dlq", "retry", "gateway-calls", "--id", "99999", "--json"])
        .await;
    run.exits(1);
    let body = run.json();
    assert_eq!(
        body["error"], "rejected",
        "--json prints the server's error: {body}"
    );
    assert!(
        run.stderr
            .contains("no entry 99999 in queue 'gateway-calls'"),
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_missing_or_viewer_token_exits_4() {
    let svc = service().await;
    let url = svc.url.as_str();
    let run = palisade(
        &[
            ("PALISADE_ADMIN_URL", url),
            ("PALISADE_ADMIN_TOKEN", "wrong-token-0123456789"),
        ],
        &["breakers"],
    )
    .await;
    run.exits(4);
    assert!(
        run.stderr
            .contains("the bearer token is not valid [401 unauthorized]"),
        "{run:?}"
    );
    assert!(run.stderr.contains("the token was refused"), "{run:?}");
    assert!(
        !run.stderr.contains("wrong-token"),
        "the token is never printed: {run:?}"
    );

    let run = palisade(&[("PALISADE_ADMIN_URL", url)], &["breakers"]).await;
    run.exits(4);
    assert!(run.stderr.contains("no token was given"), "{run:?}");

    // The viewer reads, and is refused commands.
    let viewer = [
        ("PALISADE_ADMIN_URL", url),
        ("PALISADE_ADMIN_TOKEN", VIEWER),
    ];
    palisade(&viewer, &["breakers"]).await.ok();
    let run = palisade(&viewer, &["breakers", "reset", "weather"]).await;
    run.exits(4);
    assert!(run.stderr.contains("[403 forbidden]"), "{run:?}");

    // A token file, trimmed.
    let dir = std::env::temp_dir().join(format!("palisade-cli-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, format!("  {TOKEN}\n\n")).unwrap();
    let path = file.to_str().unwrap();
    palisade(
        &[("PALISADE_ADMIN_URL", url)],
        &["breakers", "--token-file", path],
    )
    .await
    .ok();
    palisade(
        &[
            ("PALISADE_ADMIN_URL", url),
            ("PALISADE_ADMIN_TOKEN_FILE", path),
        ],
        &["breakers"],
    )
    .await
    .ok();
    let missing = dir.join("missing");
    let run = palisade(
        &[("PALISADE_ADMIN_URL", url)],
        &["breakers", "--token-file", missing.to_str().unwrap()],
    )
    .await;
    run.exits(2);
    assert!(run.stderr.contains("cannot read the token file"), "{run:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_address_exits_3() {
    let url = format!("http://{}", dead_address());
    let run = palisade(
        &[("PALISADE_ADMIN_TOKEN", TOKEN)],
        &["status", "--url", &url],
    )
    .await;
    run.exits(3);
    assert!(
        run.stderr.contains("cannot connect to the admin API"),
        "{run:?}"
    );
    assert!(run.stderr.contains(&url), "{run:?}");
    assert!(run.stderr.contains("Connection refused"), "{run:?}");
    let run = palisade(
        &[("PALISADE_ADMIN_URL", "http://no-such-host.invalid:9090")],
        &["breakers"],
    )
    .await;
    run.exits(3);
    // A listener that never answers: the request times out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let run = palisade(&[], &["breakers", "--url", &url, "--timeout", "500ms"]).await;
    run.exits(3);
    assert!(
        run.stderr.contains(&format!(
            "no answer in time from the admin API at {url} (waited 0.5 s)"
        )),
        "{run:?}"
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let svc = service().await;
    for args in [
        &["breakers", "frobnicate"][..],
        &["nope"],
        &[],
        &["breakers", "set", "weather"],
        &["bulkheads", "set-limit", "web", "many"],
        &["health", "auto-restart", "maybe"],
        &["dlq", "retry", "q", "--id", "1", "--kind", "timeout"],
        &["fleet", "overrides", "clear", "breaker"],
        &["--timeout", "soon", "status"],
    ] {
        let run = svc.run(args).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
    }
    let run = svc.run(&["breakers", "set", "weather", "novalue"]).await;
    run.exits(2);
    assert!(run.stderr.contains("is not key=value"), "{run:?}");
    let run = svc
        .run(&["breakers", "--url", "https://127.0.0.1:9090"])
        .await;
    run.exits(2);
    assert!(run.stderr.contains("plain HTTP only"), "{run:?}");
    let run = svc.run(&["dlq", "discard", "gateway-calls"]).await;
    run.exits(2);
    assert!(
        run.stderr.contains("palisade dlq purge gateway-calls"),
        "{run:?}"
    );
    let run = svc.run(&["fleet", "send", "widget", "x", "reset"]).await;
    run.exits(2);
    assert!(run.stderr.contains("unknown component kind"), "{run:?}");
    // Help is not an error.
    let run = svc.run(&["--help"]).await;
    assert!(run.ok().contains("Exit codes:"), "{run:?}");
    let run = svc.run(&["dlq", "retry", "--help"]).await;
    assert!(run.ok().contains("--max"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_parses_and_is_the_servers() {
    let svc = service().await;
    let list = svc.run(&["breakers", "--json"]).await.json();
    assert_eq!(list["kind"], "circuit_breaker");
    assert_eq!(list["items"][0]["name"], "weather");
    let answer = svc
        .run(&["--json", "breakers", "open", "weather"])
        .await
        .json();
    assert_eq!(answer["action"], "force_open");
    assert_eq!(answer["result"]["state"], "forced_open");
    for args in [
        &["bulkheads", "--json"][..],
        &["limits", "--json"],
        &["dlq", "--json"],
        &["dlq", "show", "gateway-calls", "--json"],
        &["dlq", "stats", "gateway-calls", "--json"],
        &["health", "--json"],
        &["faults", "--json"],
        &["events", "--json"],
        &["status", "--json"],
    ] {
        let run = svc.run(args).await;
        run.ok();
        let v = run.json();
        assert!(v.is_object(), "{args:?}: {v}");
    }
    let entries = svc
        .run(&["dlq", "show", "gateway-calls", "--json"])
        .await
        .json();
    assert_eq!(entries["entries"].as_array().map(Vec::len), Some(3));
    let retried = svc
        .run(&["dlq", "retry", "gateway-calls", "--max", "5", "--json"])
        .await
        .json();
    assert_eq!(retried["retried"], 3, "{retried}");
    assert_eq!(retried["ids"], json!(svc.entry_ids));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_only_when_asked_into_a_pipe() {
    let svc = service().await;
    svc.breaker.force_open();
    let plain = svc.run(&["breakers"]).await;
    plain.ok(); // asserts no escape codes
    let coloured = svc.run(&["breakers", "--color", "always"]).await;
    assert_eq!(coloured.code, 0);
    assert!(
        coloured.stdout.contains("\x1b[31mforced_open\x1b[0m"),
        "{coloured:?}"
    );
    let json = svc.run(&["breakers", "--color", "always", "--json"]).await;
    assert!(!json.stdout.contains('\x1b'), "never colour in JSON");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_generate_for_every_shell() {
    for (shell, marker) in [
        ("bash", "_palisade()"),
        ("zsh", "#compdef palisade"),
        ("fish", "complete -c palisade"),
        ("elvish", "palisade"),
        ("powershell", "palisade"),
    ] {
        let run = palisade(&[], &["completions", shell]).await;
        let out = run.ok();
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(
            out.contains("breakers") && out.contains("reset-crash-loop"),
            "{shell}"
        );
    }
    palisade(&[], &["completions", "tcsh"]).await.exits(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destructive_commands_refuse_without_yes_when_they_cannot_ask() {
    let svc = service().await;
    for args in [
        &["dlq", "purge", "gateway-calls"][..],
        &["dlq", "discard", "gateway-calls", "--kind", "timeout"],
        &["fleet", "overrides", "clear"],
    ] {
        let run = svc.run(args).await;
        run.exits(2);
        assert!(run.stderr.contains("pass --yes"), "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("stdin is not a terminal"),
            "{args:?}: {run:?}"
        );
    }
    assert_eq!(
        svc.dlq.stats().await.unwrap().store.total,
        3,
        "nothing removed"
    );
    assert!(svc.audits().is_empty(), "no command was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_health_monitor_health_and_status_say_so() {
    let registry = palisade_core::Registry::new();
    let _breaker = palisade_breaker::CircuitBreaker::builder("weather")
        .registry(&registry)
        .build()
        .unwrap();
    let server = palisade_admin::AdminRouter::builder(&registry)
        .token(TOKEN)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr());
    let env = [
        ("PALISADE_ADMIN_URL", url.as_str()),
        ("PALISADE_ADMIN_TOKEN", TOKEN),
    ];
    let run = palisade(&env, &["health"]).await;
    assert_eq!(
        run.ok(),
        "no health monitor is attached to this admin API\nno health components\n"
    );
    let run = palisade(&env, &["status"]).await;
    let out = run.ok();
    assert!(out.contains("Health: no health monitor attached"), "{out}");
    assert!(out.contains("Breakers: all 1 closed"), "{out}");
    let run = palisade(&env, &["dlq"]).await;
    assert_eq!(run.ok(), "no dead-letter queues\n");
    let run = palisade(&env, &["health", "check"]).await;
    run.exits(1);
    assert!(run.stderr.contains("[404 no_health_monitor]"), "{run:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_with_json_prints_one_event_a_line_and_stops_with_the_server() {
    let svc = service().await;
    svc.breaker.force_open();
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["events", "--follow", "--json", "--since-seq", "0"])
        .env("PALISADE_ADMIN_URL", &svc.url)
        .env("PALISADE_ADMIN_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // The kept events are replayed first (since_seq 0): the force-open is among them.
    let mut events = Vec::new();
    while !events
        .iter()
        .any(|e: &serde_json::Value| e["to"] == "forced_open")
    {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("no event line ({e}); got {events:?}"));
        events.push(serde_json::from_str(&line).unwrap());
    }
    // A graceful stop ends the stream: the follower exits 0 on its own.
    svc.server.shutdown().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the follower did not stop with the server");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_and_send_reach_any_kind_such_as_a_timeout() {
    let svc = service().await;
    let run = svc.run(&["show", "timeouts"]).await;
    let out = run.ok();
    assert!(out.contains("weather"), "{out}");
    let run = svc.run(&["show", "timeout", "weather"]).await;
    let out = run.ok();
    assert!(out.contains("deadline_ms") && out.contains("5000"), "{out}");
    let run = svc
        .run(&["send", "timeout", "weather", "set-deadline", "deadline=2s"])
        .await;
    let out = run.ok();
    assert!(out.contains("2000"), "{out}");
    assert_eq!(svc.timeout.deadline(), std::time::Duration::from_secs(2));
    // Refused by the server: exit 1 with its reason, nothing changed.
    let run = svc
        .run(&["send", "timeout", "weather", "set_deadline", "deadline=0"])
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("deadline"), "{run:?}");
    assert_eq!(svc.timeout.deadline(), std::time::Duration::from_secs(2));
    let run = svc.run(&["show", "nonsense"]).await;
    assert_eq!(run.code, 2, "{run:?}");
}
