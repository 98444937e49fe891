//! Logs and traces.
//!
//! **Logs**: `tracing` events on stderr, as text or as one JSON object a line ([`LogFormat`]:
//! `LOG_FORMAT`, `--log-format`), filtered like `RUST_LOG` (`info` by default; `LOG_LEVEL`
//! still works as a plain level when `RUST_LOG` is unset). The gateway logs under the target
//! `mcp_gateway`, each Palisade crate under its own (`palisade::mcp`, `palisade::fleet`, …).
//!
//! **Traces** (feature `otel`, on by default): when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, every MCP tool call is an OpenTelemetry span
//! (`tools/call <tool>`, kind server, with the MCP and GenAI semantic-convention attributes
//! and `palisade.outcome`), every resilience decision on its path a span event (`palisade.*`:
//! rate limit, breaker, bulkhead, retry, timeout, fault injection, dead letter), and every
//! upstream attempt a child span (kind client) whose W3C `traceparent` goes to the upstream:
//! an HTTP header for HTTP connectors, `params._meta.traceparent` for MCP ones. An incoming
//! `traceparent` (in the call's `params._meta`, else the `/mcp` request's header) becomes the
//! parent of the call's span. Spans are exported over OTLP/HTTP with protobuf, in batches
//! (`OTEL_BSP_*`), under the resource of `OTEL_SERVICE_NAME` (default `mcp-gateway`) and
//! `OTEL_RESOURCE_ATTRIBUTES`, sampled by `OTEL_TRACES_SAMPLER`. Unset, nothing is built and
//! the spans cost one disabled-callsite check each.
//!
//! The spans and events are plain `tracing` ones, at level debug (so a default `RUST_LOG`
//! does not print a line per call): the trace layer has its own filter, [`TRACE_FILTER`].

use std::io::IsTerminal;
use std::str::FromStr;

use rmcp::RoleServer;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::service::RequestContext;
use tracing::Span;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::gateway::Caller;

#[cfg(feature = "otel")]
mod otel;

/// What reaches traces, whatever `RUST_LOG` says: the gateway's and Palisade's spans and
/// events from level debug (the call path's decisions), everything else from warn.
pub const TRACE_FILTER: &str = "warn,mcp_gateway=debug,palisade=debug";

/// The `traceparent` key (W3C Trace Context), in HTTP headers and in MCP `params._meta`.
pub const TRACEPARENT: &str = "traceparent";

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, `fields` (with `message`), and
    /// `span` (the current span's name and fields) inside a tool call.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: text or json")),
        }
    }
}

/// How to log: the format and the filter.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Text or JSON lines.
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter (`info`, `warn,mcp_gateway=debug`, `palisade::fleet=trace`).
    pub filter: Option<String>,
    /// A plain level (`LOG_LEVEL`: error, warn, info, debug, trace), used when there is no
    /// filter; an unknown one is `info`.
    pub level: Option<String>,
}

impl LogOptions {
    /// The filter of the log lines; an invalid `filter` is refused, naming `RUST_LOG`.
    pub fn env_filter(&self) -> Result<EnvFilter, String> {
        if let Some(filter) = &self.filter {
            return EnvFilter::try_new(filter).map_err(|e| format!("RUST_LOG={filter:?}: {e}"));
        }
        let level = match self
            .level
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some(l @ ("error" | "warn" | "debug" | "trace")) => l.to_owned(),
            _ => "info".to_owned(),
        };
        EnvFilter::try_new(&level).map_err(|e| format!("LOG_LEVEL={level:?}: {e}"))
    }
}

/// What [`init`] installed. [`shutdown`](Self::shutdown) exports the spans still buffered.
#[derive(Debug, Default)]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    traces: Option<otel::Traces>,
}

impl Telemetry {
    /// Where spans are exported (the OTLP/HTTP traces URL), when they are.
    pub fn traces_endpoint(&self) -> Option<&str> {
        #[cfg(feature = "otel")]
        return self.traces.as_ref().map(otel::Traces::endpoint);
        #[cfg(not(feature = "otel"))]
        None
    }

    /// Exports the spans still buffered and stops the exporter (waits up to its timeout).
    /// Blocks: call it outside the runtime's worker threads (the export runs on them), e.g.
    /// after `block_on` returned, while the runtime is still alive.
    pub fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(traces) = self.traces {
            traces.shutdown();
        }
    }
}

/// Installs the global `tracing` subscriber: log lines as `options` say, and, with the `otel`
/// feature and the OTLP variables set (read through `env`), the trace exporter, whose HTTP
/// requests run on `runtime`. Fails on an invalid filter or trace setting, naming the
/// variable.
pub fn init(
    options: &LogOptions,
    env: &dyn Fn(&str) -> Option<String>,
    runtime: &tokio::runtime::Handle,
) -> Result<Telemetry, String> {
    let filter = options.env_filter()?;
    let logs = match options.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(logs.with_filter(filter));
    #[cfg(feature = "otel")]
    {
        let setup = otel::Setup::from_env(env)?;
        let traces = match &setup.endpoint {
            Some(endpoint) => Some(otel::Traces::start(endpoint, env, runtime)?),
            None => None,
        };
        let layer = traces.as_ref().map(|t| {
            tracing_opentelemetry::layer()
                .with_tracer(t.tracer())
                .with_location(false)
                .with_target(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(EnvFilter::new(TRACE_FILTER))
        });
        registry
            .with(layer)
            .try_init()
            .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
        for warning in &setup.warnings {
            tracing::warn!("{warning}");
        }
        if let Some(traces) = &traces {
            otel::activate();
            tracing::info!(
                endpoint = traces.endpoint(),
                "exporting traces over OTLP/HTTP"
            );
        }
        Ok(Telemetry { traces })
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = runtime;
        registry
            .try_init()
            .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
        if env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        {
            tracing::warn!(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set, but this build has no `otel` feature: no traces"
            );
        }
        Ok(Telemetry::default())
    }
}

/// The span of one `tools/call` of `tool` by `client` (level debug, a root span: its parent
/// is only ever the caller's trace context, see [`set_remote_parent`]). Its fields are the
/// OpenTelemetry attributes: `mcp.method.name`, `gen_ai.tool.name`, `gen_ai.operation.name`
/// (`execute_tool`), `mcp.session.id` and `mcp.protocol.version` (from the request headers),
/// `jsonrpc.request.id`, `client.address`, `network.transport` (`tcp`),
/// `network.protocol.name` (`http`); [`record_result`] adds `palisade.outcome`, and
/// `error.type` and the error status on failure.
pub fn tool_call_span(tool: &str, context: &RequestContext<RoleServer>, client: &Caller) -> Span {
    let header = |name: &str| {
        context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.headers.get(name))
            .and_then(|v| v.to_str().ok())
    };
    tracing::debug_span!(
        parent: None,
        "tools/call",
        otel.name = %format_args!("tools/call {tool}"),
        otel.kind = "server",
        mcp.method.name = "tools/call",
        gen_ai.tool.name = tool,
        gen_ai.operation.name = "execute_tool",
        mcp.session.id = header("mcp-session-id"),
        mcp.protocol.version = header("mcp-protocol-version"),
        jsonrpc.request.id = %context.id,
        client.address = %client.address,
        network.transport = "tcp",
        network.protocol.name = "http",
        palisade.outcome = tracing::field::Empty,
        error.type = tracing::field::Empty,
        rpc.response.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

/// Sets `span`'s parent to the caller's W3C trace context: `params._meta.traceparent` (the
/// MCP convention) when the call carries one, else the `traceparent` header of the `/mcp`
/// request. Does nothing without an exporter, or before `span` is entered.
pub fn set_remote_parent(
    span: &Span,
    meta: Option<&JsonObject>,
    context: &RequestContext<RoleServer>,
) {
    #[cfg(feature = "otel")]
    otel::set_remote_parent(span, meta, context);
    #[cfg(not(feature = "otel"))]
    let _ = (span, meta, context);
}

/// The outcome of a tool call as the client sees it: an answer (`ok`), a tool error
/// (`structuredContent.error`, or `tool_error`), or a JSON-RPC error (`protocol_error`).
fn outcome(result: &Result<CallToolResult, rmcp::ErrorData>) -> &str {
    match result {
        Ok(r) if r.is_error != Some(true) => "ok",
        Ok(r) => r
            .structured_content
            .as_ref()
            .and_then(|s| s.get("error"))
            .and_then(|e| e.as_str())
            .unwrap_or("tool_error"),
        Err(_) => "protocol_error",
    }
}

/// Records how a tool call ended on its span: `palisade.outcome` ([`outcome`]); on failure
/// `error.type` (`tool_error` for a tool error, as the MCP conventions say, or the JSON-RPC
/// error code, also in `rpc.response.status_code`) and the error status with the message.
pub fn record_result(span: &Span, result: &Result<CallToolResult, rmcp::ErrorData>) {
    if span.is_disabled() {
        return;
    }
    span.record("palisade.outcome", outcome(result));
    match result {
        Ok(r) if r.is_error == Some(true) => {
            span.record("error.type", "tool_error");
            let message = r
                .content
                .first()
                .and_then(|c| c.as_text())
                .map_or("tool error", |t| t.text.as_str());
            span.record("otel.status_description", message);
        }
        Ok(_) => {}
        Err(e) => {
            let code = e.code.0.to_string();
            span.record("error.type", code.as_str());
            span.record("rpc.response.status_code", code.as_str());
            span.record("otel.status_description", e.message.as_ref());
        }
    }
}

/// The W3C trace context of the current span (`traceparent`, and `tracestate` when there is
/// one), as `(header, value)` pairs for an outgoing request; none without an exporter.
pub fn outgoing() -> Vec<(String, String)> {
    #[cfg(feature = "otel")]
    return otel::outgoing();
    #[cfg(not(feature = "otel"))]
    Vec::new()
}

/// The current span's `traceparent`, when traces are exported.
pub fn current_traceparent() -> Option<String> {
    outgoing()
        .into_iter()
        .find(|(k, _)| k == TRACEPARENT)
        .map(|(_, v)| v)
}

/// Puts the current span's W3C trace context into an MCP request's `_meta` (unprefixed
/// `traceparent` / `tracestate`, as the MCP semantic conventions say).
pub fn inject_meta(meta: &mut JsonObject) {
    for (key, value) in outgoing() {
        meta.insert(key, serde_json::Value::String(value));
    }
}

/// Links `span` to the span a `traceparent` names (a dead-lettered call's replay to the
/// call that failed).
pub fn link(span: &Span, traceparent: &str) {
    #[cfg(feature = "otel")]
    otel::link(span, traceparent);
    #[cfg(not(feature = "otel"))]
    let _ = (span, traceparent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_filters_parse_and_bad_ones_are_named() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!(" text ".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().unwrap_err().contains("xml"));
        let options = |filter: Option<&str>, level: Option<&str>| LogOptions {
            format: LogFormat::Text,
            filter: filter.map(str::to_owned),
            level: level.map(str::to_owned),
        };
        assert_eq!(
            options(None, None).env_filter().unwrap().to_string(),
            "info"
        );
        assert_eq!(
            options(None, Some("DEBUG"))
                .env_filter()
                .unwrap()
                .to_string(),
            "debug"
        );
        assert_eq!(
            options(None, Some("loud"))
                .env_filter()
                .unwrap()
                .to_string(),
            "info"
        );
        // RUST_LOG wins over LOG_LEVEL.
        let filter = options(Some("warn,palisade::fleet=debug"), Some("trace"));
        let shown = filter.env_filter().unwrap().to_string();
        assert!(
            shown.contains("palisade::fleet=debug") && shown.contains("warn"),
            "{shown}"
        );
        assert!(!shown.contains("trace"), "{shown}");
        let err = options(Some("palisade=loudest"), None)
            .env_filter()
            .unwrap_err();
        assert!(err.starts_with("RUST_LOG="), "{err}");
        EnvFilter::try_new(TRACE_FILTER).unwrap();
    }

    #[test]
    fn outcomes_name_what_the_client_saw() {
        use rmcp::model::ContentBlock;
        let ok: Result<CallToolResult, rmcp::ErrorData> =
            Ok(CallToolResult::success(vec![ContentBlock::text("x")]));
        assert_eq!(outcome(&ok), "ok");
        let refused = Ok(palisade::mcp::tool_error(
            "no",
            serde_json::json!({"error": "breaker_open"}),
        ));
        assert_eq!(outcome(&refused), "breaker_open");
        let bare = Ok(CallToolResult::error(vec![ContentBlock::text("bad")]));
        assert_eq!(outcome(&bare), "tool_error");
        let protocol = Err(rmcp::ErrorData::invalid_params("unknown tool", None));
        assert_eq!(outcome(&protocol), "protocol_error");
    }
}
