//! End to end, with real processes on loopback: gateway processes started from the binary,
//! flaky upstreams, stdio MCP servers, an rmcp client over streamable HTTP, the admin API, and
//! (for the shared rate limit and the dead-letter queue) the Redis the test command starts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rmcp::model::CallToolResult;
use serde_json::json;
use support::{
    Gateway, SERVER, TOKEN, Upstream, call, error_code, eventually, http_connector, running,
    signal, stdio_connector, text, unique,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_configuration_serves_its_tools_with_nothing_else_running() {
    // The README's first command, on free ports: the demo's upstreams are processes the gateway
    // starts itself.
    let demo = mcp_gateway::DEMO_CONFIG
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9090", "127.0.0.1:0");
    let gw = Gateway::start(&demo, &[]).await;
    let client = gw.client().await;
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    for expected in [
        "weather_forecast",
        "weather_alerts",
        "search_query",
        "notes_echo",
        "notes_add",
        "docs_echo",
        "docs_get_forecast",
        "docs_search_docs",
    ] {
        assert!(
            names.contains(&expected.to_owned()),
            "{expected} missing from {names:?}"
        );
    }
    let forecast = call(&client, "weather_forecast", json!({"city": "Lyon"})).await;
    assert_eq!(error_code(&forecast), None, "{forecast:?}");
    let body = forecast.structured_content.unwrap();
    assert_eq!(
        (body["tool"].as_str(), body["arguments"]["city"].as_str()),
        (Some("forecast"), Some("Lyon"))
    );
    let echo = call(&client, "notes_echo", json!({"text": "hello"})).await;
    assert_eq!(text(&echo), "hello");
    // The remote MCP connector, under its function-calling-safe name.
    let docs = call(&client, "docs_get_forecast", json!({"city": "Lyon"})).await;
    assert_eq!(error_code(&docs), None, "{docs:?}");
    assert_eq!(docs.structured_content.unwrap()["tool"], "get.forecast");
    let resilience = gw.get("/resilience").await;
    assert!(
        resilience.to_string().contains("mcp-clients"),
        "{resilience}"
    );
    drop(client);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_listed_and_called_and_bad_calls_are_named() {
    let upstream = Upstream::start(&[]).await;
    let config = format!(
        "{SERVER}{}{}",
        http_connector("weather", &upstream.url, ""),
        stdio_connector("notes", &[], "")
    );
    let gw = Gateway::start(&config, &[]).await;
    let client = gw.client().await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(
        names.contains(&"weather_forecast") && names.contains(&"notes_add"),
        "{names:?}"
    );

    let sum = call(&client, "notes_add", json!({"a": 2, "b": 40})).await;
    assert_eq!(sum.structured_content.unwrap()["sum"], 42.0);
    let forecast = call(&client, "weather_forecast", json!({"city": "Oslo"})).await;
    assert_eq!(
        forecast.structured_content.unwrap()["arguments"]["city"],
        "Oslo"
    );
    assert_eq!(upstream.calls_ok().await, 1);

    // Unknown tools are protocol errors that name the tool; the session survives them.
    let params = rmcp::model::CallToolRequestParams::new("weather_nope");
    let err = client.call_tool(params).await.unwrap_err().to_string();
    assert!(err.contains("weather_nope"), "{err}");
    // Bad input the upstream refuses is a tool error, and does not count against the breaker.
    let bad = call(&client, "notes_add", json!({"a": "two"})).await;
    assert_eq!(
        error_code(&bad).as_deref(),
        Some("rejected_by_upstream"),
        "{bad:?}"
    );
    assert_eq!(gw.breaker_state("notes").await, "closed");
    let again = call(&client, "notes_echo", json!({"text": "still here"})).await;
    assert_eq!(text(&again), "still here");
    drop(client);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_mutations_without_the_token_are_refused() {
    let upstream = Upstream::start(&[]).await;
    let config = format!("{SERVER}{}", http_connector("weather", &upstream.url, ""));
    let gw = Gateway::start(&config, &[]).await;
    let force = json!({"action": "force_open"});
    let (status, body) = gw
        .post("/circuit-breakers/weather", None, force.clone())
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = gw
        .post(
            "/circuit-breakers/weather",
            Some("wrong-token"),
            force.clone(),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = gw
        .post(
            "/rate-limiters/mcp-clients",
            None,
            json!({"action": "set_quota", "quota": {"rate": 1}}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        gw.breaker_state("weather").await,
        "closed",
        "refused requests change nothing"
    );

    let (status, _) = gw
        .post("/circuit-breakers/weather", Some(TOKEN), force)
        .await;
    assert_eq!(status, 200);
    assert_eq!(gw.breaker_state("weather").await, "forced_open");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_opens_the_breaker_which_says_when_to_retry_and_recovers() {
    let upstream = Upstream::start(&[]).await;
    let config = format!(
        "{SERVER}[breaker]\nconsecutive_failures = 3\nwait_duration = \"1s\"\nhalf_open_max_calls = 1\n{}",
        http_connector("weather", &upstream.url, "dead_letter = false")
    );
    let gw = Gateway::start(&config, &[]).await;
    let client = gw.client().await;
    upstream.control(json!({"failure_rate": 1})).await;

    for _ in 0..3 {
        let failed = call(&client, "weather_forecast", json!({})).await;
        assert_eq!(
            error_code(&failed).as_deref(),
            Some("upstream_failed"),
            "{failed:?}"
        );
        assert!(text(&failed).contains("503"), "{}", text(&failed));
    }
    let refused = call(&client, "weather_forecast", json!({})).await;
    let opened_at = Instant::now();
    assert_eq!(
        error_code(&refused).as_deref(),
        Some("breaker_open"),
        "{refused:?}"
    );
    let retry_ms = refused.structured_content.as_ref().unwrap()["retry_after_ms"]
        .as_u64()
        .unwrap();
    assert!((1..=1000).contains(&retry_ms), "retry after {retry_ms} ms");
    assert!(text(&refused).contains("Retry after"), "{}", text(&refused));
    assert_eq!(gw.breaker_state("weather").await, "open");
    let failed_calls = upstream.control(json!({})).await["calls"]["failed"].as_u64();
    assert_eq!(
        failed_calls,
        Some(3),
        "the refused call never reached the upstream"
    );

    // After the wait the breaker admits a trial call.
    eventually(
        "half_open after the 1 s wait",
        Duration::from_secs(10),
        || async { gw.breaker_state("weather").await == "half_open" },
    )
    .await;
    assert!(opened_at.elapsed() >= Duration::from_millis(retry_ms.saturating_sub(50)));

    upstream.control(json!({"failure_rate": 0})).await;
    let ok = call(&client, "weather_forecast", json!({"city": "Rome"})).await;
    assert_eq!(error_code(&ok), None, "{ok:?}");
    assert_eq!(gw.breaker_state("weather").await, "closed");
    drop(client);
    gw.stop().await;
}

const FAST_RESTARTS: &str = "[health]\ninterval = \"200ms\"\n[health.restart]\ninitial_backoff = \"100ms\"\nmax_backoff = \"400ms\"\njitter = 0.0\nmax_restarts = 3\nwindow = \"60s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_stdio_server_is_restarted_and_one_that_crashes_at_start_is_stopped() {
    // (A breaker that never trips: the calls polling for the restart would open it.)
    let config = format!(
        "{SERVER}{FAST_RESTARTS}[breaker]\nconsecutive_failures = 1000\n{}{}",
        stdio_connector("notes", &[], ""),
        stdio_connector("broken", &["--crash-at-start"], "")
    );
    let gw = Gateway::start(&config, &[]).await;
    let client = gw.client().await;
    let first = call(&client, "notes_pid", json!({})).await;
    let pid = first.structured_content.unwrap()["pid"].as_u64().unwrap();

    signal(u32::try_from(pid).unwrap(), "-KILL");
    eventually(
        "notes answers again from a new process",
        Duration::from_secs(20),
        || async {
            let r = call(&client, "notes_pid", json!({})).await;
            r.structured_content
                .and_then(|s| s["pid"].as_u64())
                .is_some_and(|p| p != pid)
        },
    )
    .await;
    let notes = gw.health("notes").await;
    assert_eq!(notes["restart_count"], 1, "{notes}");
    assert_eq!(notes["crash_loop"], false, "{notes}");
    let echo = call(&client, "notes_echo", json!({"text": "back"})).await;
    assert_eq!(text(&echo), "back");

    // A call that crashes the server is reported, and not queued for replay (a poison call
    // replayed after each restart would drive the server into a crash loop).
    let poison = call(&client, "notes_crash", json!({})).await;
    assert_eq!(
        error_code(&poison).as_deref(),
        Some("upstream_lost"),
        "{poison:?}"
    );
    let queued = gw
        .get("/dlq/gateway-calls/entries?operation=notes_crash")
        .await;
    assert_eq!(
        queued["entries"].as_array().map(Vec::len),
        Some(0),
        "{queued}"
    );
    eventually(
        "notes restarted after the crash",
        Duration::from_secs(20),
        || async {
            gw.health("notes").await["restart_count"] == 2
                && error_code(&call(&client, "notes_echo", json!({"text": "x"})).await).is_none()
        },
    )
    .await;

    // The server that exits at every start: restarted max_restarts times, then left stopped.
    eventually(
        "broken is in crash-loop protection",
        Duration::from_secs(20),
        || async { gw.health("broken").await["crash_loop"] == true },
    )
    .await;
    let broken = gw.health("broken").await;
    assert_eq!(broken["restart_count"], 3, "{broken}");
    assert_eq!(broken["status"], "unhealthy", "{broken}");
    assert!(
        broken["message"]
            .as_str()
            .unwrap()
            .contains("crashing at start"),
        "the child's last stderr line says why: {broken}"
    );
    let events = gw.get("/events?component=broken").await.to_string();
    assert!(
        events.contains("Entering crash loop protection"),
        "{events}"
    );
    // Its calls fail fast with an error the client can read, not a dropped session.
    let down = call(&client, "broken_echo", json!({"text": "x"})).await;
    assert_eq!(
        error_code(&down).as_deref(),
        Some("connector_unavailable"),
        "{down:?}"
    );
    assert!(text(&down).contains("broken"), "{}", text(&down));
    drop(client);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_failed_while_the_upstream_was_down_are_replayed_after_recovery() {
    let (redis_url, _conn) = palisade_testkit::shared_redis().await;
    let queue = unique("e2e-dlq");
    let upstream = Upstream::start(&["--failure-rate", "1"]).await;
    let config = format!(
        "{SERVER}[breaker]\nconsecutive_failures = 10\n{}",
        http_connector("weather", &upstream.url, "replay = \"idempotent\"")
    );
    let gw = Gateway::start(
        &config,
        &[
            ("REDIS_URL", redis_url.as_str()),
            ("MCP_GATEWAY_DLQ_QUEUE", queue.as_str()),
        ],
    )
    .await;
    let client = gw.client().await;
    let mut ids = Vec::new();
    for city in ["Lima", "Quito"] {
        let failed = call(&client, "weather_forecast", json!({"city": city})).await;
        assert_eq!(
            error_code(&failed).as_deref(),
            Some("upstream_failed"),
            "{failed:?}"
        );
        let queued = &failed.structured_content.as_ref().unwrap()["queued"];
        assert_eq!(queued["queue"], queue.as_str());
        ids.push(queued["id"].as_u64().unwrap());
        assert!(
            text(&failed).contains("will be replayed"),
            "{}",
            text(&failed)
        );
    }
    // Both are in the queue (in Redis), with their kind and arguments.
    let list = gw.get(&format!("/dlq/{queue}/entries")).await;
    let entries = list["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{list}");
    let entry = gw.get(&format!("/dlq/{queue}/entries/{}", ids[0])).await;
    assert_eq!(entry["kind"], "server_error", "{entry}");
    assert_eq!(entry["payload"]["arguments"]["city"], "Lima", "{entry}");
    assert_eq!(upstream.calls_ok().await, 0);

    upstream.control(json!({"failure_rate": 0})).await;
    eventually(
        "the worker replays both calls",
        Duration::from_secs(30),
        || async { upstream.calls_ok().await == 2 },
    )
    .await;
    eventually("the queue is empty", Duration::from_secs(10), || async {
        gw.get(&format!("/dlq/{queue}/entries")).await["entries"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .await;
    drop(client);
    gw.stop().await;
}

/// The tool error's `structuredContent`.
fn facts(result: &CallToolResult) -> serde_json::Value {
    result.structured_content.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tool_is_replayed_under_its_policy_with_one_idempotency_key() {
    let upstream = Upstream::start(&["--failure-rate", "1"]).await;
    let config = format!(
        r#"{SERVER}[breaker]
consecutive_failures = 100
[[connectors]]
name = "shop"
kind = "http"
url = "{}"
health_path = "/health"
tool_replay = {{ notify = "always" }}
tools = [
  {{ name = "price", annotations = {{ idempotentHint = true }} }},
  {{ name = "stock", annotations = {{ readOnlyHint = true }} }},
  {{ name = "order" }},
  {{ name = "notify" }},
]
"#,
        upstream.url
    );
    let gw = Gateway::start(&config, &[]).await;
    let client = gw.client().await;

    // Annotations reach clients.
    let tools = client.list_all_tools().await.unwrap();
    let price = tools.iter().find(|t| t.name == "shop_price").unwrap();
    assert_eq!(
        price.annotations.as_ref().and_then(|a| a.idempotent_hint),
        Some(true)
    );

    let mut results = BTreeMap::new();
    for tool in ["price", "stock", "order", "notify"] {
        let r = call(&client, &format!("shop_{tool}"), json!({"n": tool})).await;
        assert_eq!(error_code(&r).as_deref(), Some("upstream_failed"), "{r:?}");
        results.insert(tool, r);
    }
    // Idempotent (annotation) and always (config): queued for automatic replay.
    for tool in ["price", "notify"] {
        let r = &results[tool];
        assert_eq!(facts(r)["replay"], "automatic", "{tool}: {r:?}");
        assert!(
            text(r).contains("will be replayed automatically"),
            "{}",
            text(r)
        );
    }
    // Read-only: not queued, and the client is told so.
    let stock = &results["stock"];
    assert_eq!(facts(stock)["replay"], "none");
    assert_eq!(facts(stock)["queued"], serde_json::Value::Null);
    assert!(
        text(stock).contains("will not be replayed"),
        "{}",
        text(stock)
    );
    // Not marked idempotent: kept parked for an operator.
    let order = &results["order"];
    assert_eq!(facts(order)["replay"], "parked");
    assert!(
        text(order).contains("will NOT be replayed automatically"),
        "{}",
        text(order)
    );
    let order_id = facts(order)["queued"]["id"].as_u64().unwrap();
    let entry = gw
        .get(&format!("/dlq/gateway-calls/entries/{order_id}"))
        .await;
    assert_eq!(entry["state"], "parked", "{entry}");

    // Each first attempt carried a key, the one the client was told.
    let keyed = upstream.keyed_calls().await;
    let first_key = |tool: &str| {
        keyed
            .iter()
            .find(|c| c["tool"] == tool)
            .map(|c| c["key"].as_str().unwrap().to_owned())
    };
    for tool in ["price", "notify", "order"] {
        assert_eq!(
            first_key(tool).as_deref(),
            facts(&results[tool])["idempotency_key"].as_str(),
            "{tool}: {keyed:?}"
        );
    }
    assert_eq!(
        first_key("stock"),
        None,
        "read-only calls are never replayed"
    );

    // The upstream recovers: the worker replays price and notify, with their first keys; the
    // parked order waits.
    upstream.control(json!({"failure_rate": 0})).await;
    eventually(
        "price and notify are replayed",
        Duration::from_secs(30),
        || async { upstream.calls_ok().await == 2 },
    )
    .await;
    let replayed: Vec<serde_json::Value> = upstream
        .keyed_calls()
        .await
        .into_iter()
        .filter(|c| c["ok"] == true)
        .collect();
    for tool in ["price", "notify"] {
        let replay = replayed.iter().find(|c| c["tool"] == tool).unwrap();
        assert_eq!(replay["key"].as_str(), first_key(tool).as_deref(), "{tool}");
    }
    eventually(
        "only the parked order is left",
        Duration::from_secs(10),
        || async {
            let list = gw.get("/dlq/gateway-calls/entries").await;
            let left: Vec<u64> = list["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_u64().unwrap())
                .collect();
            left == vec![order_id]
        },
    )
    .await;

    // An operator replays the parked order: it runs once, with its first key.
    let (status, body) = gw
        .post(
            "/dlq/gateway-calls",
            Some(TOKEN),
            json!({"action": "retry", "id": order_id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    eventually("the order is replayed", Duration::from_secs(30), || async {
        upstream.calls_ok().await == 3
    })
    .await;
    let keyed = upstream.keyed_calls().await;
    let order_ok: Vec<&serde_json::Value> = keyed
        .iter()
        .filter(|c| c["tool"] == "order" && c["ok"] == true)
        .collect();
    assert_eq!(order_ok.len(), 1, "{keyed:?}");
    assert_eq!(order_ok[0]["key"].as_str(), first_key("order").as_deref());
    drop(client);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_receives_the_idempotency_key_in_meta() {
    let config = format!("{SERVER}{}", stdio_connector("notes", &[], ""));
    let gw = Gateway::start(&config, &[]).await;
    let client = gw.client().await;
    let tools = client.list_all_tools().await.unwrap();
    let echo = tools.iter().find(|t| t.name == "notes_echo").unwrap();
    assert_eq!(
        echo.annotations.as_ref().and_then(|a| a.read_only_hint),
        Some(true)
    );
    // echo_json has no annotations: its calls may be kept (parked), so they carry a key.
    let r = call(&client, "notes_echo_json", json!({"text": "hi"})).await;
    assert_eq!(error_code(&r), None, "{r:?}");
    let key = facts(&r)["idempotency_key"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 32, "{key}");
    let again = call(&client, "notes_echo_json", json!({"text": "hi"})).await;
    assert_ne!(
        facts(&again)["idempotency_key"].as_str(),
        Some(key.as_str()),
        "one key per call"
    );
    drop(client);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_against_one_redis_share_one_rate_limit() {
    let (redis_url, _conn) = palisade_testkit::shared_redis().await;
    let prefix = unique("e2e-rl");
    let upstream = Upstream::start(&[]).await;
    // Burst 5, then one call per hour: over the test's few seconds GCRA admits exactly 5.
    let config = format!(
        "{SERVER}[rate_limit]\nquota = {{ rate = 1, period = \"1h\", burst = 5 }}\n[rate_limit.redis]\nkey_prefix = \"{prefix}\"\nfailure_policy = \"fail_closed\"\ntimeout = \"2s\"\n{}",
        http_connector("weather", &upstream.url, "")
    );
    let env = [
        ("REDIS_URL", redis_url.as_str()),
        ("RATE_LIMIT_BACKEND", "redis"),
    ];
    let a = Gateway::start(&config, &env).await;
    let b = Gateway::start(&config, &env).await;
    let (ca, cb) = (a.client().await, b.client().await);
    let mut admitted = 0;
    let mut refused = 0;
    for _ in 0..8 {
        for client in [&ca, &cb] {
            let r = call(client, "weather_forecast", json!({})).await;
            match error_code(&r).as_deref() {
                None => admitted += 1,
                Some("rate_limited") => {
                    let retry = r.structured_content.as_ref().unwrap()["retry_after_ms"]
                        .as_u64()
                        .unwrap();
                    assert!(retry > 0, "{r:?}");
                    refused += 1;
                }
                other => panic!("unexpected {other:?}: {r:?}"),
            }
        }
    }
    assert_eq!(
        (admitted, refused),
        (5, 11),
        "burst 5 shared by both gateways"
    );
    assert_eq!(upstream.calls_ok().await, 5);
    for gw in [&a, &b] {
        let snap = gw.get("/rate-limiters/mcp-clients").await;
        assert_eq!(snap["snapshot"]["backend"], "redis", "{snap}");
    }
    drop((ca, cb));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_partition_refuses_with_a_tool_error_while_its_call_runs() {
    let upstream = Upstream::start(&["--latency-ms", "4000"]).await;
    let config = format!(
        "{SERVER}[[partitions]]\nname = \"slow\"\nmax_concurrent = 1\nmax_wait = \"10ms\"\n{}",
        http_connector("weather", &upstream.url, "partition = \"slow\"")
    );
    let gw = Gateway::start(&config, &[]).await;
    let (first, second) = (gw.client().await, gw.client().await);
    let running = tokio::spawn(async move {
        let r = call(&first, "weather_forecast", json!({"city": "Bern"})).await;
        drop(first);
        r
    });
    eventually(
        "the first call holds the partition's one slot",
        Duration::from_secs(10),
        || async { gw.get("/bulkheads/slow").await["snapshot"]["active"] == 1 },
    )
    .await;
    let refused = call(&second, "weather_forecast", json!({})).await;
    assert_eq!(
        error_code(&refused).as_deref(),
        Some("partition_full"),
        "{refused:?}"
    );
    assert_eq!(
        refused.structured_content.as_ref().unwrap()["partition"],
        "slow"
    );
    let done = running.await.unwrap();
    assert_eq!(
        error_code(&done),
        None,
        "the running call is not disturbed: {done:?}"
    );
    assert_eq!(upstream.calls_ok().await, 1);
    drop(second);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_client_has_its_own_limit() {
    let upstream = Upstream::start(&[]).await;
    let config = format!(
        "{SERVER}[rate_limit]\nquota = {{ rate = 1, period = \"1h\", burst = 2 }}\n{}",
        http_connector("weather", &upstream.url, "")
    );
    // Three calls of client A, then one of client B, through the same proxy (127.0.0.1).
    async fn codes(gw: &Gateway) -> Vec<Option<String>> {
        let (a, b) = (
            gw.client_via_proxy("203.0.113.1").await,
            gw.client_via_proxy("203.0.113.2").await,
        );
        let mut out = Vec::new();
        for client in [&a, &a, &a, &b] {
            out.push(error_code(
                &call(client, "weather_forecast", json!({})).await,
            ));
        }
        out
    }
    let limited = Some("rate_limited".to_owned());
    let trusting = Gateway::start(&config, &[("TRUSTED_PROXIES", "127.0.0.1")]).await;
    assert_eq!(
        codes(&trusting).await,
        [None, None, limited.clone(), None],
        "one bucket per client"
    );
    // IPv6 clients are keyed by their /64: rotating addresses within it gains nothing, while
    // another /64 is another client.
    let mut out = Vec::new();
    for address in [
        "2001:db8:1:2::1",
        "2001:db8:1:2::2",
        "2001:db8:1:2:ffff::3",
        "2001:db8:1:3::1",
    ] {
        let client = trusting.client_via_proxy(address).await;
        out.push(error_code(
            &call(&client, "weather_forecast", json!({})).await,
        ));
    }
    assert_eq!(
        out,
        [None, None, limited.clone(), None],
        "one bucket per /64"
    );
    trusting.stop().await;

    // Without TRUSTED_PROXIES the header is not believed: everyone is the proxy's address.
    let plain = Gateway::start(&config, &[]).await;
    assert_eq!(
        codes(&plain).await,
        [None, None, limited.clone(), limited],
        "a forged header changes nothing"
    );
    plain.stop().await;
}

/// An MCP client handler that counts `notifications/tools/list_changed`.
#[derive(Clone, Default)]
struct ListWatcher(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl rmcp::ClientHandler for ListWatcher {
    async fn on_tool_list_changed(
        &self,
        _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_stdio_server_with_other_tools_is_relisted_and_clients_are_told() {
    use rmcp::ServiceExt;
    let tools_file = std::env::temp_dir().join(format!("{}.tools", unique("e2e-tools")));
    std::fs::write(&tools_file, "alpha\n").unwrap();
    let path = tools_file.to_str().unwrap();
    let config = format!(
        "{SERVER}{FAST_RESTARTS}{}",
        stdio_connector("notes", &["--tools-file", path], "dead_letter = false")
    );
    let gw = Gateway::start(&config, &[]).await;
    let watcher = ListWatcher::default();
    let client = watcher
        .clone()
        .serve(rmcp::transport::StreamableHttpClientTransport::from_uri(
            gw.mcp.clone(),
        ))
        .await
        .unwrap();
    let names = |tools: Vec<rmcp::model::Tool>| -> Vec<String> {
        tools.into_iter().map(|t| t.name.to_string()).collect()
    };
    assert!(names(client.list_all_tools().await.unwrap()).contains(&"notes_alpha".to_owned()));
    assert_eq!(
        text(&call(&client, "notes_alpha", json!({"text": "a"})).await),
        "a"
    );

    // The server's next start serves `beta` instead of `alpha`.
    std::fs::write(&tools_file, "beta\n").unwrap();
    let pid = call(&client, "notes_pid", json!({}))
        .await
        .structured_content
        .unwrap()["pid"]
        .as_u64()
        .unwrap();
    signal(u32::try_from(pid).unwrap(), "-KILL");
    eventually(
        "the client is told the tool list changed",
        Duration::from_secs(20),
        || async { watcher.0.load(std::sync::atomic::Ordering::SeqCst) >= 1 },
    )
    .await;
    let now = names(client.list_all_tools().await.unwrap());
    assert!(
        now.contains(&"notes_beta".to_owned()) && !now.contains(&"notes_alpha".to_owned()),
        "{now:?}"
    );
    assert_eq!(
        text(&call(&client, "notes_beta", json!({"text": "b"})).await),
        "b"
    );
    drop(client);
    gw.stop().await;
    let _ = std::fs::remove_file(&tools_file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_failed_calls_are_kept_in_memory_and_replayed() {
    // A private redis-server, so the test can stop it.
    let mut redis = palisade_testkit::RedisServer::start();
    let upstream = Upstream::start(&["--failure-rate", "1"]).await;
    let config = format!(
        "{SERVER}[breaker]\nconsecutive_failures = 10\n{}",
        http_connector("weather", &upstream.url, "replay = \"idempotent\"")
    );
    let gw = Gateway::start(&config, &[("REDIS_URL", redis.url().as_str())]).await;
    let client = gw.client().await;
    redis.stop();

    let failed = call(&client, "weather_forecast", json!({"city": "Oslo"})).await;
    assert_eq!(
        error_code(&failed).as_deref(),
        Some("upstream_failed"),
        "{failed:?}"
    );
    let queued = &failed.structured_content.as_ref().unwrap()["queued"];
    assert_eq!(queued["queue"], "gateway-calls-local", "{failed:?}");
    let id = queued["id"].as_u64().unwrap();
    let local = gw
        .get(&format!("/dlq/gateway-calls-local/entries/{id}"))
        .await;
    assert_eq!(local["payload"]["arguments"]["city"], "Oslo", "{local}");

    // The upstream recovers while Redis is still down: the call is replayed from memory.
    upstream.control(json!({"failure_rate": 0})).await;
    eventually(
        "the kept call is replayed",
        Duration::from_secs(30),
        || async { upstream.calls_ok().await == 1 },
    )
    .await;
    eventually(
        "the in-memory queue is empty",
        Duration::from_secs(10),
        || async {
            gw.get("/dlq/gateway-calls-local/entries").await["entries"]
                .as_array()
                .is_some_and(Vec::is_empty)
        },
    )
    .await;
    // The Redis health component says why (checked now, on an operator's request).
    let (status, checked) = gw
        .post(
            "/health/components/redis",
            Some(TOKEN),
            json!({"action": "check"}),
        )
        .await;
    assert_eq!(status, 200);
    let message = checked["result"]["message"].as_str().unwrap();
    assert!(message.contains("Redis unreachable"), "{checked}");
    drop(client);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_past_the_cap_are_refused_and_idle_ones_are_closed() {
    let upstream = Upstream::start(&[]).await;
    let config = format!(
        "{SERVER}max_sessions = 2\nsession_idle_timeout = \"2s\"\n{}",
        http_connector("weather", &upstream.url, "")
    );
    let gw = Gateway::start(&config, &[]).await;
    let a = gw.client().await;
    let b = gw.client().await;

    // A third session is refused with a status, a Retry-After and a message naming the limit.
    let (status, retry_after, body) = gw.raw_initialize().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["id"], 1);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("session limit reached: 2 MCP sessions"),
        "{message}"
    );
    assert_eq!(error["error"]["data"]["error"], "session_limit");

    // The open sessions keep working.
    for client in [&a, &b] {
        let r = call(client, "weather_forecast", json!({"city": "Oslo"})).await;
        assert_eq!(error_code(&r), None, "{r:?}");
    }

    // A closed session (HTTP DELETE) frees its slot at once.
    a.cancel().await.unwrap();
    let (status, _, body) = gw.raw_initialize().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        gw.raw_initialize().await.0,
        503,
        "full again: b and the raw session"
    );

    // Sessions idle for 2 s are closed, so a new one is admitted again (nothing touches b or
    // the raw session meanwhile: refused initialize requests name no session).
    eventually(
        "an idle session closed",
        Duration::from_secs(30),
        || async { gw.raw_initialize().await.0 == 200 },
    )
    .await;
    drop(b);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_with_sigkill_leaves_no_child_behind() {
    let config = format!(
        r#"{SERVER}{}
[[connectors]]
name = "weather"
kind = "http"
url = "http://127.0.0.1:{{port}}"
health_path = "/health"
command = "{{self}}"
args = ["flaky-upstream", "--port", "{{port}}"]
tools = [{{ name = "forecast" }}]
"#,
        stdio_connector("notes", &[], "")
    );
    let gw = Gateway::start(&config, &[]).await;
    let client = gw.client().await;
    let pid_of = |r: CallToolResult| u32::try_from(facts(&r)["pid"].as_u64().unwrap()).unwrap();
    let stdio = pid_of(call(&client, "notes_pid", json!({})).await);
    let http = pid_of(call(&client, "weather_forecast", json!({"city": "Oslo"})).await);
    assert!(running(stdio) && running(http));
    drop(client);

    signal(gw.proc.pid(), "-KILL");
    eventually("both children are gone", Duration::from_secs(2), || async {
        !running(stdio) && !running(http)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_a_call_in_flight_finishes_and_new_calls_are_refused() {
    // Every answer of this upstream takes 3 s.
    let upstream = Upstream::start(&["--latency-ms", "3000"]).await;
    let config = format!("{SERVER}{}", http_connector("slow", &upstream.url, ""));
    let mut gw = Gateway::start(&config, &[]).await;
    let client = std::sync::Arc::new(gw.client().await);
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { call(&*client, "slow_forecast", json!({"city": "Rome"})).await })
    };
    eventually("the call is in flight", Duration::from_secs(10), || async {
        gw.get("/bulkheads/default").await["snapshot"]["active"] == 1
    })
    .await;

    signal(gw.proc.pid(), "-TERM");
    // The gateway says so, then refuses new calls while the first one runs on.
    tokio::time::timeout(
        Duration::from_secs(10),
        gw.proc.line_containing("shutting down"),
    )
    .await
    .expect("the gateway announces its shutdown");
    let refused = call(&*client, "slow_forecast", json!({"city": "Oslo"})).await;
    assert_eq!(
        error_code(&refused).as_deref(),
        Some("shutting_down"),
        "{refused:?}"
    );
    assert!(
        text(&refused).contains("shutting down"),
        "{}",
        text(&refused)
    );
    let finished = in_flight.await.unwrap();
    assert_eq!(error_code(&finished), None, "{finished:?}");
    assert_eq!(facts(&finished)["arguments"]["city"], "Rome");
    drop(client);
    gw.stop().await; // exits 0 once drained
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_still_in_flight_when_the_grace_ends_are_dead_lettered_by_policy() {
    let (redis_url, _conn) = palisade_testkit::shared_redis().await;
    let queue = unique("e2e-drain");
    let upstream = Upstream::start(&["--latency-ms", "60000"]).await;
    let config = format!(
        "{}shutdown_grace = \"500ms\"\n{}",
        SERVER,
        http_connector(
            "slow",
            &upstream.url,
            "replay = \"idempotent\"\ntimeout = \"120s\""
        )
    );
    let gw = Gateway::start(
        &config,
        &[
            ("REDIS_URL", redis_url.as_str()),
            ("MCP_GATEWAY_DLQ_QUEUE", queue.as_str()),
        ],
    )
    .await;
    let client = std::sync::Arc::new(gw.client().await);
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { call(&*client, "slow_forecast", json!({"city": "Kyiv"})).await })
    };
    eventually("the call is in flight", Duration::from_secs(10), || async {
        gw.get("/bulkheads/default").await["snapshot"]["active"] == 1
    })
    .await;
    signal(gw.proc.pid(), "-TERM");
    let cut = in_flight.await.unwrap();
    assert_eq!(
        error_code(&cut).as_deref(),
        Some("upstream_failed"),
        "{cut:?}"
    );
    assert_eq!(facts(&cut)["replay"], "automatic", "{cut:?}");
    assert_eq!(facts(&cut)["kind"], "timeout");
    assert!(text(&cut).contains("shut down"), "{}", text(&cut));
    let id = facts(&cut)["queued"]["id"].as_u64().unwrap();
    drop(client);
    gw.stop().await;

    // The entry outlives the gateway, in Redis, with its key for the replay.
    let dlq = palisade::dlq::DeadLetterQueue::<serde_json::Value>::builder(queue.as_str())
        .redis(&redis_url)
        .unwrap()
        .build()
        .unwrap();
    let entry = dlq.get(id).await.unwrap().expect("the cut call is kept");
    assert_eq!(entry.payload["arguments"]["city"], "Kyiv");
    assert_eq!(
        entry.payload["idempotency_key"],
        facts(&cut)["idempotency_key"]
    );
    dlq.purge().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_admin_token_goes_to_a_private_file_when_stdout_is_not_a_terminal() {
    let upstream = Upstream::start(&[]).await;
    let config = format!("{SERVER}{}", http_connector("weather", &upstream.url, ""));
    // No PALISADE_ADMIN_TOKEN: the gateway generates one; stdout is a pipe here, as in a log.
    let mut gw = Gateway::start(&config, &[("PALISADE_ADMIN_TOKEN", "")]).await;
    let within = Duration::from_secs(10);
    let dashboard = tokio::time::timeout(within, gw.proc.line_containing("dashboard:"))
        .await
        .unwrap();
    assert!(!dashboard.contains("#token="), "{dashboard}");
    let line = tokio::time::timeout(within, gw.proc.line_containing("admin token:"))
        .await
        .unwrap();
    let path = line
        .split_once(" in ")
        .and_then(|(_, rest)| rest.split("  ").next())
        .unwrap_or_else(|| panic!("no file named in {line:?}"))
        .to_owned();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{path}");
    let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    assert_eq!(token.len(), 32, "{token}");
    assert!(
        !line.contains(&token),
        "the token itself is not printed: {line}"
    );
    let admin = reqwest::Client::new();
    let url = format!("{}/resilience", gw.admin);
    let with = admin.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(with.status(), 200);
    let without = admin.get(&url).send().await.unwrap();
    assert_eq!(without.status(), 401, "reads need the token");
    let _ = std::fs::remove_file(&path);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_get_their_own_listener_and_the_mcp_endpoint_checks_its_host() {
    let upstream = Upstream::start(&[]).await;
    let config = format!(
        "{SERVER}probes_addr = \"127.0.0.1:0\"\nallowed_hosts = [\"mcp.example\"]\n{}",
        http_connector("weather", &upstream.url, "")
    );
    let mut gw = Gateway::start(&config, &[]).await;
    let line = tokio::time::timeout(Duration::from_secs(10), gw.proc.line_containing("probes:"))
        .await
        .unwrap();
    let probes = line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches("/readyz")
        .to_owned();
    let http = reqwest::Client::new();
    for path in ["/livez", "/readyz", "/metrics"] {
        let r = http.get(format!("{probes}{path}")).send().await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "{path} on the probes listener, without a token"
        );
    }
    let r = http
        .get(format!("{probes}/admin/resilience"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no admin API on the probes listener");
    let r = http
        .get(format!("{}/resilience", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the admin API still needs its token");

    // The MCP endpoint answers its own names and the configured one, not a stranger.
    let (status, _, body) = gw.raw_initialize_as(Some("evil.example")).await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = gw.raw_initialize_as(Some("mcp.example:443")).await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_rules_each_limit_their_own_key_and_a_refusal_names_the_rule() {
    let (redis_url, _conn) = palisade_testkit::shared_redis().await;
    let upstream = Upstream::start(&[]).await;
    // A tight quota on forecasts per client and tool; alerts only under the loose one.
    let config = format!(
        r#"{SERVER}[[connectors]]
name = "weather"
kind = "http"
url = "{}"
tools = [{{ name = "forecast" }}, {{ name = "alerts" }}]

[[quotas]]
name = "forecasts"
key = ["identity", "tool"]
tools = ["weather_forecast"]
quota = {{ rate = 1, period = "1h", burst = 2 }}

[[quotas]]
name = "weather-per-ip"
key = ["ip"]
tools = ["weather_*"]
quota = {{ rate = 1, period = "1h", burst = 3 }}
"#,
        upstream.url
    );
    for backend in ["memory", "redis"] {
        let mut env = vec![("RATE_LIMIT_BACKEND", backend)];
        if backend == "redis" {
            env.push(("REDIS_URL", redis_url.as_str()));
        }
        // Every run its own client address, so Redis buckets of earlier runs do not count.
        let address = format!(
            "203.0.113.{}",
            if backend == "redis" {
                fastrand::u8(1..250)
            } else {
                1
            }
        );
        let mut env_with_proxy = env.clone();
        env_with_proxy.push(("TRUSTED_PROXIES", "127.0.0.1"));
        let gw = Gateway::start(&config, &env_with_proxy).await;
        let client = gw.client_via_proxy(&address).await;
        let mut codes = Vec::new();
        let mut rules = Vec::new();
        for tool in [
            "weather_forecast",
            "weather_forecast",
            "weather_forecast",
            "weather_alerts",
            "weather_alerts",
        ] {
            let r = call(&client, tool, json!({})).await;
            codes.push(error_code(&r));
            rules.push(
                r.structured_content
                    .as_ref()
                    .and_then(|s| s["rule"].as_str().map(str::to_owned)),
            );
        }
        let limited = Some("rate_limited".to_owned());
        assert_eq!(
            codes,
            [None, None, limited.clone(), None, limited.clone()],
            "{backend}: forecasts stop at 2; the per-IP rule (a refused call does not count) stops the 5th"
        );
        assert_eq!(rules[2].as_deref(), Some("forecasts"), "{backend}");
        assert_eq!(rules[4].as_deref(), Some("weather-per-ip"), "{backend}");
        // Each rule is a rate limiter in the admin API.
        let snapshot = gw.get("/rate-limiters/quota-forecasts").await;
        assert!(
            snapshot["snapshot"]["rejected_total"].as_u64().unwrap() >= 1,
            "{snapshot}"
        );
        drop(client);
        gw.stop().await;
    }
}

/// The gateway on a Redis reached through `env` (`REDIS_URL` and friends): a failed call is
/// queued in Redis (not in the in-memory fallback), the limiter decides on Redis, and the
/// `redis` health component says what it reaches (`expect` in its message).
async fn gateway_keeps_its_state_in(env: &[(&str, &str)], expect: &str) {
    let queue = unique("e2e-topology");
    let upstream = Upstream::start(&["--failure-rate", "1"]).await;
    let config = format!(
        "{SERVER}[breaker]\nconsecutive_failures = 10\n{}",
        http_connector("weather", &upstream.url, "replay = \"idempotent\"")
    );
    let mut env = env.to_vec();
    env.push(("RATE_LIMIT_BACKEND", "redis"));
    env.push(("MCP_GATEWAY_DLQ_QUEUE", queue.as_str()));
    let gw = Gateway::start(&config, &env).await;
    let client = gw.client().await;
    let failed = call(&client, "weather_forecast", json!({"city": "Oslo"})).await;
    let queued = &failed.structured_content.as_ref().unwrap()["queued"];
    assert_eq!(queued["queue"], queue.as_str(), "{failed:?}");
    let entry = gw
        .get(&format!("/dlq/{queue}/entries/{}", queued["id"]))
        .await;
    assert_eq!(entry["payload"]["arguments"]["city"], "Oslo", "{entry}");
    // The limiter decides on Redis (on a loaded machine its very first decision may have
    // fallen back while the connection was still being set up: its budget is 50 ms).
    let mut calls = 1;
    eventually(
        "the limiter decides on Redis",
        Duration::from_secs(20),
        || {
            calls += 1;
            let client = &client;
            let gw = &gw;
            async move {
                call(client, "weather_forecast", json!({"city": "Oslo"})).await;
                let limiter = gw.get("/rate-limiters/mcp-clients").await;
                let s = &limiter["snapshot"];
                s["redis"]["available"] == true
                    && s["permitted_total"].as_u64().unwrap()
                        > s["redis"]["fallback_decisions_total"].as_u64().unwrap()
            }
        },
    )
    .await;
    let (status, checked) = gw
        .post(
            "/health/components/redis",
            Some(TOKEN),
            json!({"action": "check"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(checked["result"]["status"], "healthy", "{checked}");
    let message = checked["result"]["message"].as_str().unwrap();
    assert!(message.contains(expect), "{checked}");
    let (status, _) = gw
        .post(
            &format!("/dlq/{queue}"),
            Some(TOKEN),
            json!({"action": "purge"}),
        )
        .await;
    assert_eq!(status, 200);
    drop(client);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_on_redis_over_mutual_tls() {
    let redis = palisade_testkit::TlsRedis::start(true);
    let (url, ca, cert, key) = (
        redis.url(),
        redis.ca_file().display().to_string(),
        redis.client_cert_file().display().to_string(),
        redis.client_key_file().display().to_string(),
    );
    gateway_keeps_its_state_in(
        &[
            ("REDIS_URL", url.as_str()),
            ("REDIS_TLS_CA_FILE", ca.as_str()),
            ("REDIS_TLS_CERT_FILE", cert.as_str()),
            ("REDIS_TLS_KEY_FILE", key.as_str()),
        ],
        "; primary, 0 of 0 replicas online",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_on_a_redis_cluster() {
    let hosts: Vec<String> = palisade_testkit::shared_cluster()
        .iter()
        .map(|seed| seed.trim_start_matches("redis://").to_owned())
        .collect();
    let url = format!("redis+cluster://{}", hosts.join(","));
    gateway_keeps_its_state_in(
        &[("REDIS_URL", url.as_str())],
        "; cluster ok: 16384 slots ok",
    )
    .await;
}

#[test]
fn a_missing_redis_ca_file_stops_the_gateway_naming_the_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-gateway"))
        .env("REDIS_URL", "rediss://127.0.0.1:1")
        .env("REDIS_TLS_CA_FILE", "/nonexistent/redis-ca.pem")
        .env("PALISADE_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("REDIS_TLS_CA_FILE") && stderr.contains("/nonexistent/redis-ca.pem"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_fronts_a_remote_mcp_server_through_failures_and_restarts() {
    use rmcp::ServiceExt;
    let (upstream, endpoint) = Upstream::start_mcp(&[]).await;
    let port = endpoint
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/mcp")
        .to_owned();
    let config = format!(
        "{SERVER}[breaker]\nconsecutive_failures = 3\nwait_duration = \"60s\"\n\
         [[connectors]]\nname = \"remote\"\nkind = \"mcp\"\nurl = \"{endpoint}\"\n\
         headers = {{ \"X-Tenant\" = \"acme\" }}\n"
    );
    let gw = Gateway::start(&config, &[]).await;
    let watcher = ListWatcher::default();
    let client = watcher
        .clone()
        .serve(rmcp::transport::StreamableHttpClientTransport::from_uri(
            gw.mcp.clone(),
        ))
        .await
        .unwrap();
    let names = |tools: Vec<rmcp::model::Tool>| -> Vec<String> {
        tools.into_iter().map(|t| t.name.to_string()).collect()
    };

    // Listed, under names function-calling clients accept (the upstream's `get.forecast` and
    // `search docs` are outside ^[a-zA-Z0-9_-]{1,64}$), and called.
    let listed = names(client.list_all_tools().await.unwrap());
    for expected in ["remote_echo", "remote_get_forecast", "remote_search_docs"] {
        assert!(
            listed.contains(&expected.to_owned()),
            "{expected} not in {listed:?}"
        );
    }
    assert!(
        listed.iter().all(|n| !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')),
        "{listed:?}"
    );
    assert_eq!(
        text(&call(&client, "remote_echo", json!({"text": "hi"})).await),
        "hi"
    );
    let forecast = call(&client, "remote_get_forecast", json!({"city": "Oslo"})).await;
    assert_eq!(error_code(&forecast), None, "{forecast:?}");
    let body = forecast.structured_content.unwrap();
    assert_eq!(body["tool"], "get.forecast", "{body}");
    assert_eq!(body["arguments"]["city"], "Oslo", "{body}");

    // Its resources and prompts pass through (prompts named like tools).
    let resources = client.list_all_resources().await.unwrap();
    assert!(
        resources.iter().any(|r| r.uri == "flaky://status"),
        "{resources:?}"
    );
    let read = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "flaky://status",
        ))
        .await
        .unwrap();
    assert!(format!("{read:?}").contains("failure_rate"), "{read:?}");
    let prompts = client.list_all_prompts().await.unwrap();
    assert!(
        prompts.iter().any(|p| p.name == "remote_greet"),
        "{prompts:?}"
    );
    let mut args = rmcp::model::JsonObject::new();
    args.insert("name".into(), json!("Ada"));
    let greeting = client
        .get_prompt(rmcp::model::GetPromptRequestParams::new("remote_greet").with_arguments(args))
        .await
        .unwrap();
    assert!(
        format!("{greeting:?}").contains("Hello, Ada"),
        "{greeting:?}"
    );

    // The upstream fails: three failures open the breaker, the fourth call is not sent.
    upstream.control(json!({"failure_rate": 1})).await;
    for _ in 0..3 {
        let failed = call(&client, "remote_echo", json!({"text": "x"})).await;
        assert_eq!(
            error_code(&failed).as_deref(),
            Some("upstream_failed"),
            "{failed:?}"
        );
    }
    let refused = call(&client, "remote_echo", json!({"text": "x"})).await;
    assert_eq!(
        error_code(&refused).as_deref(),
        Some("breaker_open"),
        "{refused:?}"
    );
    assert_eq!(gw.breaker_state("remote").await, "open");
    // Resource reads go through the same breaker: refused too, with the same facts.
    let refused = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "flaky://status",
        ))
        .await
        .unwrap_err();
    let refused = format!("{refused:?}");
    assert!(
        refused.contains("breaker_open") && refused.contains("retry_after_ms"),
        "{refused}"
    );
    upstream.control(json!({"failure_rate": 0})).await;
    let (status, _) = gw
        .post(
            "/circuit-breakers/remote",
            Some(TOKEN),
            json!({"action": "reset"}),
        )
        .await;
    assert_eq!(status, 200);

    // The upstream lists another tool: the gateway's clients are told, and can call it.
    upstream.control(json!({"extra_tools": ["fresh"]})).await;
    eventually(
        "the client is told the tool list changed",
        Duration::from_secs(20),
        || async { watcher.0.load(std::sync::atomic::Ordering::SeqCst) >= 1 },
    )
    .await;
    assert!(names(client.list_all_tools().await.unwrap()).contains(&"remote_fresh".to_owned()));
    assert_eq!(
        text(&call(&client, "remote_fresh", json!({"text": "f"})).await),
        "f"
    );

    // Killed and started again on the same port, without the gateway's session: the call
    // made while it is down fails, and the next one, after it is back, goes through.
    signal(upstream.proc.pid(), "-KILL");
    drop(upstream);
    let down = call(&client, "remote_echo", json!({"text": "down"})).await;
    assert_eq!(
        error_code(&down).as_deref(),
        Some("upstream_failed"),
        "{down:?}"
    );
    let (_again, _) = Upstream::start_mcp(&["--port", &port]).await;
    let back = call(&client, "remote_echo", json!({"text": "back"})).await;
    assert_eq!(error_code(&back), None, "{back:?}");
    assert_eq!(text(&back), "back");
    // Its health is an MCP ping.
    let (status, checked) = gw
        .post(
            "/health/components/remote",
            Some(TOKEN),
            json!({"action": "check"}),
        )
        .await;
    assert_eq!(status, 200);
    let message = checked["result"]["message"].as_str().unwrap();
    assert!(message.starts_with("MCP ping answered in"), "{checked}");
    drop(client);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_tool_settings_give_a_tool_its_own_timeout_quota_and_replay_policy() {
    let upstream = Upstream::start(&["--latency-ms", "300"]).await;
    let config = format!(
        r#"{SERVER}[[connectors]]
name = "weather"
kind = "http"
url = "{}"
tools = [{{ name = "forecast" }}, {{ name = "alerts" }}]

[connectors.tool_settings.forecast]
quota = {{ rate = 1, period = "1h", burst = 1 }}

[connectors.tool_settings.alerts]
timeout = "100ms"
replay = "never"
"#,
        upstream.url
    );
    let gw = Gateway::start(&config, &[]).await;
    let client = gw.client().await;
    // forecast: the connector's timeout (10 s) lets its 300 ms answer through; its own quota
    // (one call an hour) refuses the second, naming the rule.
    let first = call(&client, "weather_forecast", json!({})).await;
    assert_eq!(error_code(&first), None, "{first:?}");
    let second = call(&client, "weather_forecast", json!({})).await;
    assert_eq!(
        error_code(&second).as_deref(),
        Some("rate_limited"),
        "{second:?}"
    );
    let facts = second.structured_content.unwrap();
    assert_eq!(facts["rule"], "weather.forecast", "{facts}");
    assert!(facts["retry_after_ms"].as_u64().unwrap() > 0, "{facts}");
    // alerts: its own 100 ms timeout, and never replayed.
    let slow = call(&client, "weather_alerts", json!({})).await;
    let facts = slow.structured_content.unwrap();
    assert_eq!(facts["error"], "upstream_failed", "{facts}");
    assert_eq!(facts["kind"], "timeout", "{facts}");
    assert_eq!(facts["replay"], "none", "{facts}");
    // The other tool is not limited by forecast's quota.
    let again = call(&client, "weather_alerts", json!({})).await;
    assert_ne!(error_code(&again).as_deref(), Some("rate_limited"));
    drop(client);
    gw.stop().await;
}

/// Starts one gateway of fleet `fleet` as instance `id`, in front of `upstream`.
async fn fleet_member(fleet: &str, id: &str, redis: &str, upstream: &str) -> Gateway {
    fleet_member_with(
        "[breaker]\nconsecutive_failures = 50\n",
        fleet,
        id,
        redis,
        upstream,
    )
    .await
}

/// [`fleet_member`] with `sections` (TOML) before its connector.
async fn fleet_member_with(
    sections: &str,
    fleet: &str,
    id: &str,
    redis: &str,
    upstream: &str,
) -> Gateway {
    let config = format!(
        "{SERVER}{sections}{}",
        http_connector("weather", upstream, "dead_letter = false")
    );
    Gateway::start(
        &config,
        &[
            ("REDIS_URL", redis),
            ("PALISADE_FLEET", fleet),
            ("PALISADE_INSTANCE_ID", id),
            ("MCP_GATEWAY_DLQ_QUEUE", fleet),
        ],
    )
    .await
}

fn statuses(answer: &serde_json::Value) -> BTreeMap<String, String> {
    answer["answers"]
        .as_array()
        .unwrap_or_else(|| panic!("no answers in {answer}"))
        .iter()
        .map(|a| {
            (
                a["instance"].as_str().unwrap().to_owned(),
                a["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_command_reaches_every_instance_and_a_persisted_one_survives_restarts() {
    let (redis, _conn) = palisade_testkit::shared_redis().await;
    let fleet = unique("e2e-fleet");
    let upstream = Upstream::start(&[]).await;
    let a = fleet_member(&fleet, "a", &redis, &upstream.url).await;
    let b = fleet_member(&fleet, "b", &redis, &upstream.url).await;
    let c = fleet_member(&fleet, "c", &redis, &upstream.url).await;
    let listed = a.get("/fleet").await;
    assert_eq!(listed["count"], 3, "{listed}");

    // force_open sent to one instance, persisted: every instance applies it before answering.
    let command = json!({
        "kind": "circuit_breaker", "name": "weather",
        "command": {"action": "force_open"}, "persist": true, "deadline_ms": 1000
    });
    let (status, _) = a.post("/fleet/commands", None, command.clone()).await;
    assert_eq!(status, 401, "fleet commands need the operator token");
    let (status, answer) = a.post("/fleet/commands", Some(TOKEN), command).await;
    assert_eq!(status, 200, "{answer}");
    let expected: BTreeMap<String, String> = ["a", "b", "c"]
        .iter()
        .map(|i| ((*i).to_owned(), "applied".to_owned()))
        .collect();
    assert_eq!(statuses(&answer), expected, "{answer}");
    for gw in [&a, &b, &c] {
        assert_eq!(gw.breaker_state("weather").await, "forced_open");
    }
    // The fleet view (snapshots published with the heartbeats) shows it on every instance.
    eventually(
        "the fleet view shows the breaker forced open everywhere",
        Duration::from_secs(10),
        || async {
            let view = b.get("/fleet/resilience").await;
            view["components"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["name"] == "weather"
                        && c["worst"] == "forced_open"
                        && c["instances"].as_object().is_some_and(|i| {
                            i.len() == 3 && i.values().all(|s| s["state"] == "forced_open")
                        })
                })
            })
        },
    )
    .await;
    let client = c.client().await;
    let refused = call(&client, "weather_forecast", json!({})).await;
    assert_eq!(
        error_code(&refused).as_deref(),
        Some("breaker_open"),
        "{refused:?}"
    );
    drop(client);

    // Every instance restarted: the persisted override comes back with them.
    a.stop().await;
    b.stop().await;
    c.stop().await;
    let a = fleet_member(&fleet, "a", &redis, &upstream.url).await;
    let b = fleet_member(&fleet, "b", &redis, &upstream.url).await;
    assert_eq!(a.breaker_state("weather").await, "forced_open");
    assert_eq!(b.breaker_state("weather").await, "forced_open");

    // b stops; a persisted reset is sent meanwhile (b's answer: none); b, back, catches up.
    b.stop().await;
    let reset = json!({
        "kind": "circuit_breaker", "name": "weather",
        "command": {"action": "reset"}, "persist": true, "deadline_ms": 500
    });
    let (status, answer) = a.post("/fleet/commands", Some(TOKEN), reset).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        statuses(&answer).get("a").map(String::as_str),
        Some("applied"),
        "{answer}"
    );
    assert_eq!(a.breaker_state("weather").await, "closed");
    let b = fleet_member(&fleet, "b", &redis, &upstream.url).await;
    assert_eq!(
        b.breaker_state("weather").await,
        "closed",
        "b applied the reset it missed"
    );
    let overrides = a.get("/fleet/overrides").await;
    assert_eq!(overrides["count"], 0, "{overrides}");

    // An instance killed with SIGKILL leaves the list within its ttl (10 s).
    signal(b.proc.pid(), "-KILL");
    eventually(
        "the killed instance leaves the fleet list",
        Duration::from_secs(20),
        || async {
            let listed = a.get("/fleet").await;
            listed["count"] == 1 && listed["instances"][0]["id"] == "a"
        },
    )
    .await;
    let listed = a.get("/fleet").await;
    assert_eq!(listed["count"], 1, "{listed}");
    a.stop().await;
}

/// Starts one gateway of fleet `fleet` as instance `id`, in front of `upstream`, sharing the
/// `weather` breaker: it trips on its own after 3 failures in a row, and on the fleet's word
/// when half of the fleet's calls (3 or more) failed.
async fn shared_member(fleet: &str, id: &str, redis: &str, upstream: &str) -> Gateway {
    let sections = "[breaker]\nconsecutive_failures = 3\nwait_duration = \"60s\"\n\
         [shared_breaker]\nmode = \"failure_rate\"\nfailure_rate_threshold = 50\n\
         minimum_calls = 3\nwindow = \"30s\"\n";
    fleet_member_with(sections, fleet, id, redis, upstream).await
}

/// The `shared` part of an instance's `weather` breaker snapshot.
async fn sharing(gw: &Gateway) -> serde_json::Value {
    gw.get("/circuit-breakers/weather").await["snapshot"]["shared"].clone()
}

/// Three calls of `weather_forecast` through `gw` (they fail when its upstream fails).
async fn three_calls(gw: &Gateway) {
    let client = gw.client().await;
    for _ in 0..3 {
        call(&client, "weather_forecast", json!({})).await;
    }
    drop(client);
}

async fn reset_locally(gw: &Gateway) {
    let (status, body) = gw
        .post(
            "/circuit-breakers/weather",
            Some(TOKEN),
            json!({"action": "reset"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_breaker_opens_everywhere_when_the_upstream_fails_through_one_instance() {
    let mut redis = palisade_testkit::RedisServer::start();
    let url = redis.url();
    let fleet = unique("e2e-shared");
    // The upstream fails only for calls arriving through A (its own path to it is broken).
    let good = Upstream::start(&[]).await;
    let bad = Upstream::start(&[]).await;
    bad.control(json!({"failure_rate": 1})).await;
    let a = shared_member(&fleet, "a", &url, &bad.url).await;
    let b = shared_member(&fleet, "b", &url, &good.url).await;
    let c = shared_member(&fleet, "c", &url, &good.url).await;
    assert_eq!(sharing(&b).await["mode"], "failure_rate");

    three_calls(&a).await;
    assert_eq!(a.breaker_state("weather").await, "open");
    for gw in [&b, &c] {
        eventually(
            "the breaker opens on the fleet's word",
            Duration::from_secs(10),
            || async { gw.breaker_state("weather").await == "open" },
        )
        .await;
        let snap = gw.get("/circuit-breakers/weather").await["snapshot"].clone();
        let reason = snap["last_transition"]["reason"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(reason.starts_with("fleet failure rate 100.0%"), "{reason}");
        assert_eq!(snap["shared"]["status"], "shared", "{snap}");
    }
    // Refused at B without calling its (healthy) upstream.
    let before = good.calls_ok().await;
    let client = b.client().await;
    let refused = call(&client, "weather_forecast", json!({})).await;
    assert_eq!(error_code(&refused).as_deref(), Some("breaker_open"));
    drop(client);
    assert_eq!(good.calls_ok().await, before);

    // Redis stopped: every instance decides on its own calls, and says so.
    redis.stop();
    for gw in [&a, &b, &c] {
        reset_locally(gw).await;
        eventually(
            "the breaker reports itself local",
            Duration::from_secs(10),
            || async { sharing(gw).await["status"] == "local" },
        )
        .await;
    }
    three_calls(&a).await;
    assert_eq!(a.breaker_state("weather").await, "open", "A decides alone");
    three_calls(&b).await;
    assert_eq!(b.breaker_state("weather").await, "closed");
    assert_eq!(c.breaker_state("weather").await, "closed");

    // Redis back: they rejoin, and A's failures open B and C again.
    redis.restart();
    for gw in [&a, &b, &c] {
        eventually(
            "the breaker is shared again",
            Duration::from_secs(15),
            || async { sharing(gw).await["status"] == "shared" },
        )
        .await;
    }
    reset_locally(&a).await;
    three_calls(&a).await;
    for gw in [&b, &c] {
        eventually(
            "the breaker opens on the fleet's word after the rejoin",
            Duration::from_secs(10),
            || async { gw.breaker_state("weather").await == "open" },
        )
        .await;
    }
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_inject_faults_into_a_connector_for_a_while_and_it_is_audited() {
    let upstream = Upstream::start(&[]).await;
    let config = format!(
        "{SERVER}[fault_injection]\nallowed = true\n{}",
        http_connector("weather", &upstream.url, "dead_letter = false")
    );
    let gw = Gateway::start(&config, &[]).await;
    let client = gw.client().await;
    assert_eq!(
        error_code(&call(&client, "weather_forecast", json!({})).await),
        None
    );

    let (status, body) = gw
        .post(
            "/fault-injectors/weather",
            Some(TOKEN),
            json!({"action": "enable", "mode": "error", "rate": 1, "ttl": "10m"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let before = upstream.calls_ok().await;
    let failed = call(&client, "weather_forecast", json!({})).await;
    assert_eq!(
        error_code(&failed).as_deref(),
        Some("upstream_failed"),
        "{failed:?}"
    );
    assert!(text(&failed).contains("injected"), "{}", text(&failed));
    assert_eq!(
        upstream.calls_ok().await,
        before,
        "the upstream was not called"
    );
    let snap = gw.get("/fault-injectors/weather").await["snapshot"].clone();
    assert_eq!(snap["enabled"], true, "{snap}");
    assert_eq!(snap["injected_errors_total"], 1, "{snap}");
    let audit = gw.get("/events?kind=fault_injector&type=audit").await;
    assert!(
        audit.to_string().contains("admin-token"),
        "the audit trail names who switched it on: {audit}"
    );

    let (status, _) = gw
        .post(
            "/fault-injectors/weather",
            Some(TOKEN),
            json!({"action": "disable"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        error_code(&call(&client, "weather_forecast", json!({})).await),
        None
    );
    drop(client);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fault_injection_in_the_config_there_is_no_injector() {
    let upstream = Upstream::start(&[]).await;
    let config = format!(
        "{SERVER}{}",
        http_connector("weather", &upstream.url, "dead_letter = false")
    );
    let gw = Gateway::start(&config, &[]).await;
    let listed = gw.get("/fault-injectors").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    gw.stop().await;
}

/// Calls `tool` answered with an error by `upstream` so far (`/control`'s `calls.failed`).
async fn failed_calls(upstream: &Upstream) -> u64 {
    upstream.control(json!({})).await["calls"]["failed"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_tools_are_retried_under_the_connectors_retry_and_others_are_not() {
    let upstream = Upstream::start(&[]).await;
    let config = format!(
        "{SERVER}[breaker]\nconsecutive_failures = 50\n\
         [[connectors]]\nname = \"weather\"\nkind = \"http\"\nurl = \"{}\"\n\
         dead_letter = false\n\
         retry = {{ max_attempts = 3, base_delay = \"10ms\", max_delay = \"50ms\" }}\n\
         tools = [\n  {{ name = \"forecast\", description = \"d\", annotations = {{ readOnlyHint = true }} }},\n  \
         {{ name = \"book\", description = \"d\" }},\n]\n",
        upstream.url
    );
    let gw = Gateway::start(&config, &[]).await;
    upstream.control(json!({"failure_rate": 1})).await;
    let client = gw.client().await;
    let before = failed_calls(&upstream).await;
    let read = call(&client, "weather_forecast", json!({})).await;
    assert_eq!(error_code(&read).as_deref(), Some("upstream_failed"));
    assert_eq!(
        failed_calls(&upstream).await - before,
        3,
        "read-only: 3 attempts"
    );
    let before = failed_calls(&upstream).await;
    let book = call(&client, "weather_book", json!({})).await;
    assert_eq!(error_code(&book).as_deref(), Some("upstream_failed"));
    assert_eq!(
        failed_calls(&upstream).await - before,
        1,
        "not idempotent: 1 attempt"
    );
    let snap = gw.get("/retries/weather").await["snapshot"].clone();
    assert_eq!(snap["retries_total"], 2, "{snap}");
    // Recovered: the first attempt answers.
    upstream.control(json!({"failure_rate": 0})).await;
    assert_eq!(
        error_code(&call(&client, "weather_forecast", json!({})).await),
        None
    );
    drop(client);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connectors_timeout_is_a_component_operators_change_at_runtime() {
    let upstream = Upstream::start(&[]).await;
    let config = format!(
        "{SERVER}{}",
        http_connector(
            "weather",
            &upstream.url,
            "dead_letter = false\ntimeout = \"5s\"\ntimeout_counts_as = \"slow\""
        )
    );
    let gw = Gateway::start(&config, &[]).await;
    upstream.control(json!({"latency_ms": 400})).await;
    let client = gw.client().await;
    assert_eq!(
        error_code(&call(&client, "weather_forecast", json!({})).await),
        None
    );
    let (status, body) = gw
        .post(
            "/timeouts/weather",
            Some(TOKEN),
            json!({"action": "set_deadline", "deadline": "100ms"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let late = call(&client, "weather_forecast", json!({})).await;
    assert_eq!(
        error_code(&late).as_deref(),
        Some("upstream_failed"),
        "{late:?}"
    );
    assert!(
        text(&late).contains("no answer within 100 ms"),
        "{}",
        text(&late)
    );
    let timeout = gw.get("/timeouts/weather").await["snapshot"].clone();
    assert_eq!(timeout["timeouts_total"], 1, "{timeout}");
    // Counted as slow, not as a failure.
    let calls = gw.get("/circuit-breakers/weather").await["snapshot"]["calls"].clone();
    assert_eq!(
        (calls["slow"].as_u64(), calls["failed"].as_u64()),
        (Some(1), Some(0)),
        "{calls}"
    );
    drop(client);
    gw.stop().await;
}
