//! Traces and logs, end to end with real processes: a gateway process exporting over OTLP/HTTP
//! to a receiver in this test, in front of a flaky-upstream HTTP server and a flaky-upstream
//! MCP server that report the `traceparent` they received; and the gateway's JSON log lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::{SERVER, TOKEN, Upstream};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The trace test: a receiver, and the gateway exporting to it.
#[cfg(feature = "otel")]
mod traces {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::extract::State;
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    use prost::Message as _;
    use rmcp::model::{CallToolRequestParams, CallToolResult, MetaObject, RequestMetaObject};
    use rmcp::service::{RoleClient, RunningService};
    use serde_json::{Value, json};

    use crate::support::{Gateway, SERVER, TOKEN, Upstream, call, error_code, eventually};

    /// One span as the receiver got it, its ids in hex and its attributes as strings.
    #[derive(Debug, Clone)]
    struct Got {
        service: String,
        trace_id: String,
        span_id: String,
        parent: String,
        name: String,
        kind: i32,
        attrs: BTreeMap<String, String>,
        events: Vec<(String, BTreeMap<String, String>)>,
        status: i32,
        status_message: String,
        links: Vec<String>,
    }

    impl Got {
        fn attr(&self, key: &str) -> Option<&str> {
            self.attrs.get(key).map(String::as_str)
        }

        /// The attributes of its first event named `name`.
        fn event(&self, name: &str) -> Option<&BTreeMap<String, String>> {
            self.events.iter().find(|(n, _)| n == name).map(|(_, a)| a)
        }

        /// The attributes of its first event named `name`; the test fails naming the events it
        /// has when it has none.
        fn ev(&self, name: &str) -> &BTreeMap<String, String> {
            self.event(name).unwrap_or_else(|| {
                let names: Vec<&str> = self.events.iter().map(|(n, _)| n.as_str()).collect();
                panic!("no event {name} in {}: {names:?}", self.name)
            })
        }
    }

    fn text(value: Option<&AnyValue>) -> String {
        match value.and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            Some(any_value::Value::IntValue(i)) => i.to_string(),
            Some(any_value::Value::DoubleValue(d)) => d.to_string(),
            Some(any_value::Value::BoolValue(b)) => b.to_string(),
            other => format!("{other:?}"),
        }
    }

    fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
        kvs.iter()
            .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
            .collect()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// An OTLP/HTTP receiver on loopback: `POST /v1/traces` with protobuf, as the gateway's
    /// exporter sends it; every span it got.
    struct Receiver {
        endpoint: String,
        spans: Arc<Mutex<Vec<Got>>>,
        server: tokio::task::JoinHandle<()>,
    }

    impl Receiver {
        async fn start() -> Receiver {
            async fn export(
                State(spans): State<Arc<Mutex<Vec<Got>>>>,
                headers: axum::http::HeaderMap,
                body: axum::body::Bytes,
            ) -> impl axum::response::IntoResponse {
                assert_eq!(
                    headers.get("content-type").unwrap(),
                    "application/x-protobuf"
                );
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut got = spans.lock().unwrap();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .as_ref()
                        .map(|r| attrs(&r.attributes))
                        .and_then(|a| a.get("service.name").cloned())
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            let status = span.status.clone().unwrap_or_default();
                            got.push(Got {
                                service: service.clone(),
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent: hex(&span.parent_span_id),
                                name: span.name.clone(),
                                kind: span.kind,
                                attrs: attrs(&span.attributes),
                                events: span
                                    .events
                                    .iter()
                                    .map(|e| (e.name.clone(), attrs(&e.attributes)))
                                    .collect(),
                                status: status.code,
                                status_message: status.message,
                                links: span
                                    .links
                                    .iter()
                                    .map(|l| format!("{}-{}", hex(&l.trace_id), hex(&l.span_id)))
                                    .collect(),
                            });
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
            let spans = Arc::new(Mutex::new(Vec::new()));
            let app = axum::Router::new()
                .route("/v1/traces", axum::routing::post(export))
                .with_state(spans.clone());
            let listener = palisade::admin::bind_nodelay(([127, 0, 0, 1], 0).into())
                .await
                .unwrap();
            let endpoint = format!(
                "http://{}",
                axum::serve::Listener::local_addr(&listener).unwrap()
            );
            let server = tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
            Receiver {
                endpoint,
                spans,
                server,
            }
        }

        fn spans(&self) -> Vec<Got> {
            self.spans.lock().unwrap().clone()
        }

        /// The server spans of calls of `tool`, in the order the calls ended.
        fn calls_of(&self, tool: &str) -> Vec<Got> {
            self.spans()
                .into_iter()
                .filter(|s| {
                    s.kind == SpanKind::Server as i32 && s.attr("gen_ai.tool.name") == Some(tool)
                })
                .collect()
        }

        /// The spans whose parent is `span`.
        fn children_of(&self, span: &Got) -> Vec<Got> {
            self.spans()
                .into_iter()
                .filter(|s| s.trace_id == span.trace_id && s.parent == span.span_id)
                .collect()
        }

        /// Waits (bounded) for `n` server spans of `tool` and returns them.
        async fn wait_calls(&self, tool: &str, n: usize) -> Vec<Got> {
            eventually(
                &format!("{n} spans of {tool} calls"),
                Duration::from_secs(30),
                || async { self.calls_of(tool).len() >= n },
            )
            .await;
            self.calls_of(tool)
        }

        /// Waits (bounded) for a span named `name` and returns the first.
        async fn wait_calls_named(&self, name: &str) -> Got {
            eventually(
                &format!("a span {name}"),
                Duration::from_secs(30),
                || async { self.spans().iter().any(|s| s.name == name) },
            )
            .await;
            self.spans().into_iter().find(|s| s.name == name).unwrap()
        }

        /// Waits (bounded) for the children of `span` to be `n` and returns them.
        async fn wait_children(&self, span: &Got, n: usize) -> Vec<Got> {
            eventually(
                &format!("{n} child spans of {}", span.name),
                Duration::from_secs(30),
                || async { self.children_of(span).len() >= n },
            )
            .await;
            self.children_of(span)
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            self.server.abort();
        }
    }

    /// A trace the test's "agent" is part of: the trace id and its span's id.
    const AGENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const AGENT_SPAN: &str = "00f067aa0ba902b7";
    /// Another one, sent in `params._meta` instead of the HTTP header.
    const META_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const META_SPAN: &str = "b7ad6b7169203331";

    async fn call_with_meta(
        client: &RunningService<RoleClient, ()>,
        name: &str,
        traceparent: &str,
    ) -> CallToolResult {
        let mut meta = MetaObject::new();
        meta.set_traceparent(traceparent);
        let mut params = CallToolRequestParams::new(name.to_owned());
        params.meta = Some(RequestMetaObject(meta));
        client.call_tool(params).await.unwrap()
    }

    /// Whether `traceparents` (an upstream's report) has one for `tool` naming `span`.
    fn received(traceparents: &[Value], tool: &str, span: &Got) -> bool {
        let expected = format!("00-{}-{}-01", span.trace_id, span.span_id);
        traceparents
            .iter()
            .any(|t| t["tool"] == tool && t["traceparent"] == expected.as_str())
    }

    /// The outcome attributes every server span carries.
    fn assert_tool_call(span: &Got, tool: &str, outcome: &str) {
        assert_eq!(span.name, format!("tools/call {tool}"), "{span:#?}");
        assert_eq!(span.kind, SpanKind::Server as i32, "{span:#?}");
        assert_eq!(
            span.attr("mcp.method.name"),
            Some("tools/call"),
            "{span:#?}"
        );
        assert_eq!(span.attr("gen_ai.operation.name"), Some("execute_tool"));
        assert_eq!(span.attr("network.transport"), Some("tcp"));
        assert!(
            span.attr("mcp.session.id").is_some_and(|s| !s.is_empty()),
            "{span:#?}"
        );
        assert!(span.attr("jsonrpc.request.id").is_some(), "{span:#?}");
        assert_eq!(span.attr("client.address"), Some("127.0.0.1"));
        assert_eq!(span.attr("palisade.outcome"), Some(outcome), "{span:#?}");
        assert_eq!(span.service, "gateway-under-test");
        if outcome == "ok" {
            assert_eq!(span.attr("error.type"), None, "{span:#?}");
            assert_ne!(span.status, StatusCode::Error as i32, "{span:#?}");
        } else {
            assert_eq!(span.attr("error.type"), Some("tool_error"), "{span:#?}");
            assert_eq!(span.status, StatusCode::Error as i32, "{span:#?}");
            assert!(!span.status_message.is_empty(), "{span:#?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tool_calls_are_traced_with_their_decisions_and_the_trace_reaches_the_upstreams() {
        let receiver = Receiver::start().await;
        let http = Upstream::start(&[]).await;
        let (mcp, endpoint) = Upstream::start_mcp(&["--no-odd-names"]).await;
        let config = format!(
            r#"{SERVER}[breaker]
consecutive_failures = 2
wait_duration = "60s"

[fault_injection]
allowed = true

[[connectors]]
name = "weather"
kind = "http"
url = "{http}"
retry = {{ max_attempts = 2, base_delay = "20ms", max_delay = "40ms" }}
tools = [{{ name = "forecast", annotations = {{ readOnlyHint = true }} }}]

[[connectors]]
name = "docs"
kind = "mcp"
url = "{endpoint}"
timeout = "500ms"
tool_replay = {{ echo_json = "idempotent" }}

[[quotas]]
name = "echo-quota"
key = ["identity", "tool"]
tools = ["docs_echo"]
quota = {{ rate = 1, period = "1h", burst = 1 }}
"#,
            http = http.url,
        );
        let gw = Gateway::start(
            &config,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
                ("OTEL_SERVICE_NAME", "gateway-under-test"),
            ],
        )
        .await;
        let agent = format!("00-{AGENT_TRACE}-{AGENT_SPAN}-01");
        let client = gw.client_with_headers(&[("traceparent", &agent)]).await;

        // 1. An answered HTTP call: the agent's span is its parent, and the upstream got the
        // trace context of the gateway's attempt.
        let ok = call(&client, "weather_forecast", json!({"city": "Oslo"})).await;
        assert_eq!(error_code(&ok), None, "{ok:?}");
        let spans = receiver.wait_calls("weather_forecast", 1).await;
        let forecast = &spans[0];
        assert_tool_call(forecast, "weather_forecast", "ok");
        assert_eq!(
            (forecast.trace_id.as_str(), forecast.parent.as_str()),
            (AGENT_TRACE, AGENT_SPAN),
            "the incoming traceparent header is the parent: {forecast:#?}"
        );
        let admitted = forecast.ev("palisade.breaker.admitted");
        assert_eq!(admitted["palisade.breaker.name"], "weather");
        assert_eq!(admitted["palisade.breaker.state"], "closed");
        let acquired = forecast.ev("palisade.bulkhead.acquired");
        assert_eq!(acquired["palisade.bulkhead.name"], "default");
        assert!(
            acquired["palisade.bulkhead.wait_ms"]
                .parse::<f64>()
                .unwrap()
                >= 0.0
        );
        let attempts = receiver.wait_children(forecast, 1).await;
        let post = &attempts[0];
        assert_eq!(
            (post.name.as_str(), post.kind),
            ("POST", SpanKind::Client as i32)
        );
        assert_eq!(post.attr("http.request.method"), Some("POST"));
        assert_eq!(post.attr("http.response.status_code"), Some("200"));
        assert_eq!(post.attr("palisade.connector"), Some("weather"));
        assert_eq!(
            post.attr("url.full"),
            Some(format!("{}/tools/forecast", http.url).as_str())
        );
        assert!(
            received(&http.traceparents().await, "forecast", post),
            "the HTTP upstream got the attempt's traceparent: {:?}",
            http.traceparents().await
        );

        // 2. An answered MCP call: the upstream got it in `params._meta`.
        let ok = call(&client, "docs_echo_json", json!({"q": 1})).await;
        assert_eq!(error_code(&ok), None, "{ok:?}");
        let echo_json = receiver.wait_calls("docs_echo_json", 1).await[0].clone();
        assert_tool_call(&echo_json, "docs_echo_json", "ok");
        assert_eq!(echo_json.trace_id, AGENT_TRACE);
        let upstream_call = receiver.wait_children(&echo_json, 1).await[0].clone();
        assert_eq!(upstream_call.name, "tools/call echo_json");
        assert_eq!(upstream_call.kind, SpanKind::Client as i32);
        assert_eq!(upstream_call.attr("mcp.method.name"), Some("tools/call"));
        assert_eq!(upstream_call.attr("gen_ai.tool.name"), Some("echo_json"));
        assert_eq!(upstream_call.attr("network.transport"), Some("tcp"));
        assert_eq!(upstream_call.attr("palisade.connector"), Some("docs"));
        assert!(
            received(&mcp.traceparents().await, "echo_json", &upstream_call),
            "the MCP upstream got the attempt's traceparent in _meta: {:?}",
            mcp.traceparents().await
        );

        // 3. A traceparent in the call's `_meta` wins over the HTTP header (the MCP convention);
        // a client that sends none starts a trace of its own.
        let pid = call_with_meta(
            &client,
            "docs_pid",
            &format!("00-{META_TRACE}-{META_SPAN}-01"),
        )
        .await;
        assert_eq!(error_code(&pid), None, "{pid:?}");
        let plain = gw.client().await;
        assert_eq!(error_code(&call(&plain, "docs_pid", json!({})).await), None);
        let pids = receiver.wait_calls("docs_pid", 2).await;
        let from_meta = pids.iter().find(|s| s.trace_id == META_TRACE).unwrap();
        assert_eq!(from_meta.parent, META_SPAN);
        let root = pids.iter().find(|s| s.trace_id != META_TRACE).unwrap();
        assert_eq!(root.parent, "", "no incoming context: a root span");
        assert_ne!(root.trace_id, AGENT_TRACE);
        assert!(
            mcp.traceparents().await.iter().any(|t| t["tool"] == "pid"
                && t["traceparent"].as_str().unwrap().contains(&root.trace_id)),
            "a root trace reaches the upstream too"
        );

        // 4. Rate limited by a quota rule: an event naming the rule, and no upstream call.
        assert_eq!(
            error_code(&call(&client, "docs_echo", json!({"text": "a"})).await),
            None
        );
        let limited = call(&client, "docs_echo", json!({"text": "b"})).await;
        assert_eq!(error_code(&limited).as_deref(), Some("rate_limited"));
        let echoes = receiver.wait_calls("docs_echo", 2).await;
        let refused = echoes
            .iter()
            .find(|s| s.attr("palisade.outcome") == Some("rate_limited"))
            .unwrap();
        assert_tool_call(refused, "docs_echo", "rate_limited");
        let event = refused.ev("palisade.rate_limited");
        assert_eq!(event["palisade.rate_limit.rule"], "echo-quota");
        assert!(event["palisade.retry_after_ms"].parse::<u64>().unwrap() > 0);
        assert!(receiver.children_of(refused).is_empty());

        // 5. A failing upstream: the attempt and its retry (after a delay), each a child span
        // with the status; not queued (read-only); the two failures open the breaker.
        http.control(json!({"failure_rate": 1})).await;
        let failed = call(&client, "weather_forecast", json!({})).await;
        assert_eq!(error_code(&failed).as_deref(), Some("upstream_failed"));
        let spans = receiver.wait_calls("weather_forecast", 2).await;
        let failed = spans
            .iter()
            .find(|s| s.attr("palisade.outcome") == Some("upstream_failed"))
            .unwrap();
        assert_tool_call(failed, "weather_forecast", "upstream_failed");
        let retry = failed.ev("palisade.retry.attempt");
        assert_eq!(retry["palisade.retry.name"], "weather");
        assert_eq!(retry["palisade.retry.attempt"], "2");
        assert_eq!(retry["palisade.retry.previous"], "server_error");
        assert!(retry["palisade.retry.delay_ms"].parse::<f64>().unwrap() >= 0.0);
        let skipped = failed.ev("palisade.dead_letter.skipped");
        assert_eq!(skipped["palisade.replay.policy"], "never");
        let attempts = receiver.wait_children(failed, 2).await;
        for attempt in &attempts {
            assert_eq!(attempt.attr("http.response.status_code"), Some("503"));
            assert_eq!(attempt.attr("error.type"), Some("503"));
            assert_eq!(attempt.status, StatusCode::Error as i32);
            assert!(received(&http.traceparents().await, "forecast", attempt));
        }

        // 6. Refused by the open breaker: the refusal and the breaker's state, no upstream call.
        let refused = call(&client, "weather_forecast", json!({})).await;
        assert_eq!(error_code(&refused).as_deref(), Some("breaker_open"));
        let spans = receiver.wait_calls("weather_forecast", 3).await;
        let refused = spans
            .iter()
            .find(|s| s.attr("palisade.outcome") == Some("breaker_open"))
            .unwrap();
        assert_tool_call(refused, "weather_forecast", "breaker_open");
        let rejected = refused.ev("palisade.breaker.rejected");
        assert_eq!(rejected["palisade.breaker.state"], "open");
        assert!(rejected["palisade.retry_after_ms"].parse::<u64>().unwrap() > 0);
        assert!(receiver.children_of(refused).is_empty());

        // 7. A timeout: dead-lettered for an automatic replay, the entry named; the replay is a
        // trace of its own, linked to the call's.
        mcp.control(json!({"latency_ms": 2000})).await;
        let slow = call(&client, "docs_echo_json", json!({})).await;
        assert_eq!(error_code(&slow).as_deref(), Some("upstream_failed"));
        let entry = slow.structured_content.as_ref().unwrap()["queued"]["id"].clone();
        mcp.control(json!({"latency_ms": 0})).await;
        let spans = receiver.wait_calls("docs_echo_json", 2).await;
        let slow = spans
            .iter()
            .find(|s| s.attr("palisade.outcome") == Some("upstream_failed"))
            .unwrap();
        let unanswered = &receiver.wait_children(slow, 1).await[0];
        assert_eq!(
            unanswered.attr("error.type"),
            Some("cancelled"),
            "{unanswered:#?}"
        );
        let timeout = slow.ev("palisade.timeout");
        assert_eq!(timeout["palisade.timeout_ms"], "500");
        let dead = slow.ev("palisade.dead_letter");
        assert_eq!(dead["palisade.dlq.entry_id"], entry.to_string());
        assert_eq!(dead["palisade.replay.policy"], "idempotent");
        assert_eq!(dead["palisade.replay.source"], "configured");
        assert_eq!(dead["palisade.dlq.parked"], "false");
        assert_eq!(dead["palisade.failure.kind"], "timeout");
        let replay = receiver.wait_calls_named("replay docs_echo_json").await;
        assert_eq!(replay.kind, SpanKind::Internal as i32, "{replay:#?}");
        assert_eq!(replay.parent, "", "{replay:#?}");
        assert_eq!(replay.links, [format!("{AGENT_TRACE}-{}", slow.span_id)]);
        assert_eq!(
            replay.attr("palisade.dlq.entry_id"),
            Some(entry.to_string().as_str())
        );
        assert_eq!(replay.attr("palisade.outcome"), Some("done"), "{replay:#?}");
        let replayed = &receiver.wait_children(&replay, 1).await[0];
        assert_eq!(replayed.name, "tools/call echo_json");
        assert!(received(&mcp.traceparents().await, "echo_json", replayed));

        // 8. An injected fault: the event, and the upstream never called.
        let (status, body) = gw
            .post(
                "/fault-injectors/docs",
                Some(TOKEN),
                json!({"action": "enable", "mode": "error", "rate": 1, "ttl": "10m"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let faulted = call(&client, "docs_add", json!({"a": 1, "b": 2})).await;
        assert_eq!(error_code(&faulted).as_deref(), Some("upstream_failed"));
        let faulted = receiver.wait_calls("docs_add", 1).await[0].clone();
        let fault = faulted.ev("palisade.fault.injected");
        assert_eq!(fault["palisade.fault_injector.name"], "docs");
        assert_eq!(fault["palisade.fault"], "error");
        assert!(receiver.children_of(&faulted).is_empty(), "{faulted:#?}");

        // Every span of the run went to one service; the calls link to nothing.
        let all = receiver.spans();
        assert!(all.iter().all(|s| s.service == "gateway-under-test"));
        assert!(
            all.iter()
                .filter(|s| s.kind == SpanKind::Server as i32)
                .all(|s| s.links.is_empty())
        );
        drop((client, plain));
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_lines_under_a_rust_log_filter_and_nothing_is_exported_by_default() {
    let http = Upstream::start(&[]).await;
    let path = std::env::temp_dir().join(format!("{}.toml", support::unique("otel-logs")));
    std::fs::write(
        &path,
        format!(
            "{SERVER}{}\n[auth]\nmode = \"none\"\n",
            support::http_connector("weather", &http.url, "")
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(support::bin())
        .arg("--config")
        .arg(&path)
        .args(["--log-format", "json"])
        .env_remove("REDIS_URL")
        .env_remove("LOG_LEVEL")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env("RUST_LOG", "warn,palisade::admin=info")
        .env("PALISADE_ADMIN_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("backends:") {
                break;
            }
        }
    })
    .await
    .expect("the gateway starts");
    assert!(
        !printed.contains("traces:"),
        "no exporter by default: {printed}"
    );
    support::signal(child.id().unwrap(), "-TERM");
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut lines = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            lines.push(line);
        }
    })
    .await
    .expect("the gateway stops");
    let _ = std::fs::remove_file(&path);
    let logs: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let admin = logs
        .iter()
        .find(|l| l["target"] == "palisade::admin")
        .unwrap_or_else(|| panic!("palisade::admin logs at info: {lines:#?}"));
    assert_eq!(admin["level"], "INFO");
    assert!(admin["fields"]["message"].is_string(), "{admin}");
    assert!(admin["timestamp"].is_string(), "{admin}");
    // Everything else only from warn.
    for log in &logs {
        if log["target"] != "palisade::admin" {
            assert!(
                log["level"] == "WARN" || log["level"] == "ERROR",
                "filtered out by RUST_LOG: {log}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_log_and_trace_settings_are_refused_naming_them() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let output = std::process::Command::new(support::bin())
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--log-format", "xml"], &[]);
    assert_eq!(code, Some(64));
    assert!(err.contains("--log-format") && err.contains("xml"), "{err}");
    let (code, err) = run(&[], &[("LOG_FORMAT", "yaml")]);
    assert_eq!(code, Some(78));
    assert!(err.contains("LOG_FORMAT"), "{err}");
    let (code, err) = run(&[], &[("RUST_LOG", "palisade=loudest")]);
    assert_eq!(code, Some(78));
    assert!(err.contains("RUST_LOG"), "{err}");
    if cfg!(feature = "otel") {
        let (code, err) = run(
            &[],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")],
        );
        assert_eq!(code, Some(78));
        assert!(err.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{err}");
    }
    let (code, out) = {
        let output = std::process::Command::new(support::bin())
            .arg("--help")
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    assert_eq!(code, Some(0));
    for documented in [
        "RUST_LOG",
        "LOG_FORMAT",
        "--log-format",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_SERVICE_NAME",
    ] {
        assert!(out.contains(documented), "--help documents {documented}");
    }
}
