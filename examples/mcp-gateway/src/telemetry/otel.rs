//! The OpenTelemetry side (feature `otel`): the OTLP/HTTP exporter from the standard `OTEL_*`
//! variables, an HTTP client for it over the workspace's reqwest on the gateway's runtime, and
//! W3C trace context in and out of calls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use palisade::core::async_trait;
use rmcp::RoleServer;
use rmcp::model::JsonObject;
use rmcp::service::RequestContext;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::TRACEPARENT;

/// Set once the trace layer is installed: before that (and without an exporter) trace context
/// is neither read from calls nor sent upstream.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// How long one export may take unless `OTEL_EXPORTER_OTLP_TIMEOUT` says otherwise (the
/// OTLP default).
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest collector answer read (an OTLP answer is a few bytes; the reqwest and hyper
/// clients of opentelemetry-http stop at the same size).
const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// Marks trace context propagation on (after the trace layer is installed).
pub(super) fn activate() {
    ACTIVE.store(true, Ordering::Release);
}

fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// What the `OTEL_*` variables ask for.
#[derive(Debug, Default)]
pub(super) struct Setup {
    /// The endpoint variable that is set (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`), when traces are wanted.
    pub(super) endpoint: Option<String>,
    /// What to warn about once logging works.
    pub(super) warnings: Vec<String>,
}

impl Setup {
    /// Reads the variables: traces are wanted when an endpoint is set, unless
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. An `https` endpoint is refused
    /// (this build speaks plain HTTP: export to a local collector).
    pub(super) fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Setup, String> {
        let mut setup = Setup::default();
        let set = |name: &str| {
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(setup);
        }
        match set("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(setup),
            Some(other) => setup.warnings.push(format!(
                "OTEL_TRACES_EXPORTER={other:?} is not supported; exporting over OTLP"
            )),
        }
        let (var, endpoint) = match (
            set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            set("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(e), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e),
            (None, Some(e)) => ("OTEL_EXPORTER_OTLP_ENDPOINT", e),
            (None, None) => return Ok(setup),
        };
        if !endpoint.starts_with("http://") {
            return Err(format!(
                "{var}={endpoint:?}: this build exports over plain http:// only (no TLS); \
                 point it at a local OpenTelemetry Collector, e.g. http://127.0.0.1:4318"
            ));
        }
        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(protocol) = set(var).filter(|p| p != "http/protobuf") {
                setup.warnings.push(format!(
                    "{var}={protocol:?} is not supported; exporting with http/protobuf \
                     (a collector's OTLP/HTTP port, usually 4318)"
                ));
            }
        }
        setup.endpoint = Some(endpoint);
        Ok(setup)
    }
}

/// The running exporter.
#[derive(Debug)]
pub(super) struct Traces {
    provider: SdkTracerProvider,
    endpoint: String,
}

impl Traces {
    /// Builds the exporter for `endpoint` (as the variables give it), its HTTP requests
    /// spawned on `runtime`, behind a batch span processor, with the resource of
    /// `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` (service name `mcp-gateway` unless they
    /// name one).
    pub(super) fn start(
        endpoint: &str,
        env: &dyn Fn(&str) -> Option<String>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Traces, String> {
        let timeout = [
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ]
        .into_iter()
        .find_map(|var| env(var)?.trim().parse::<u64>().ok())
        .map_or(DEFAULT_EXPORT_TIMEOUT, Duration::from_millis);
        let client = RuntimeClient {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .tcp_nodelay(true)
                .build()
                .map_err(|e| format!("cannot build the trace exporter's HTTP client: {e}"))?,
            runtime: runtime.clone(),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .build()
            .map_err(|e| format!("cannot build the OTLP trace exporter: {e}"))?;
        let mut resource = opentelemetry_sdk::Resource::builder();
        let named = env("OTEL_SERVICE_NAME").is_some_and(|n| !n.trim().is_empty())
            || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| {
                a.split(',')
                    .any(|kv| kv.trim_start().starts_with("service.name="))
            });
        if !named {
            resource = resource.with_service_name("mcp-gateway");
        }
        let resource = resource
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let traces_url = if env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() {
            endpoint.to_owned()
        } else {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        };
        Ok(Traces {
            provider,
            endpoint: traces_url,
        })
    }

    /// Where spans go.
    pub(super) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The tracer the `tracing` bridge writes to.
    pub(super) fn tracer(&self) -> Tracer {
        self.provider.tracer("mcp-gateway")
    }

    /// Exports what is buffered and stops (blocking).
    pub(super) fn shutdown(self) {
        ACTIVE.store(false, Ordering::Release);
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "the trace exporter did not shut down cleanly");
        }
    }
}

/// The exporter's HTTP client: the workspace's reqwest, each request spawned on the gateway's
/// runtime, because the batch span processor exports from a thread of its own that runs no
/// runtime (reqwest needs one); the processor's thread just waits for the task.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let mut response = client.execute(request).await?;
            let mut answer = Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = std::mem::take(response.headers_mut());
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_RESPONSE {
                    return Err(HttpError::from(format!(
                        "the collector's answer is larger than {MAX_RESPONSE} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(answer.body(Bytes::from(body))?)
        });
        task.await?
    }
}

/// A JSON object (`params._meta`) read as a carrier of trace context.
struct MetaCarrier<'a>(&'a JsonObject);

impl Extractor for MetaCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(serde_json::Value::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// HTTP request headers read as a carrier of trace context.
struct HeaderCarrier<'a>(&'a axum::http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

/// Collects what a propagator injects (an empty `tracestate` is left out).
struct Pairs(Vec<(String, String)>);

impl Injector for Pairs {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.push((key.to_owned(), value));
        }
    }
}

pub(super) fn set_remote_parent(
    span: &Span,
    meta: Option<&JsonObject>,
    context: &RequestContext<RoleServer>,
) {
    if !active() || span.is_disabled() {
        return;
    }
    let propagator = TraceContextPropagator::new();
    // rmcp hands `_meta` over in the request or moves it into the context.
    let meta = meta
        .filter(|m| m.contains_key(TRACEPARENT))
        .or_else(|| Some(&context.meta.0.0).filter(|m| m.contains_key(TRACEPARENT)));
    let parent = match meta {
        Some(meta) => propagator.extract(&MetaCarrier(meta)),
        None => match context
            .extensions
            .get::<axum::http::request::Parts>()
            .filter(|p| p.headers.contains_key(TRACEPARENT))
        {
            Some(parts) => propagator.extract(&HeaderCarrier(&parts.headers)),
            None => return,
        },
    };
    if parent.span().span_context().is_valid() {
        // Fails only once the span has started, which it has not: nothing to do then.
        let _ = span.set_parent(parent);
    }
}

pub(super) fn outgoing() -> Vec<(String, String)> {
    if !active() {
        return Vec::new();
    }
    let context = Span::current().context();
    if !context.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut pairs = Pairs(Vec::with_capacity(2));
    TraceContextPropagator::new().inject_context(&context, &mut pairs);
    pairs.0
}

pub(super) fn link(span: &Span, traceparent: &str) {
    if !active() || span.is_disabled() {
        return;
    }
    let mut carrier = JsonObject::new();
    carrier.insert(TRACEPARENT.to_owned(), traceparent.into());
    let linked = TraceContextPropagator::new().extract(&MetaCarrier(&carrier));
    span.add_link(linked.span().span_context().clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(vars: &[(&str, &str)]) -> Result<Setup, String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Setup::from_env(&|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn traces_are_opt_in_through_the_standard_variables() {
        assert_eq!(setup(&[]).unwrap().endpoint, None);
        let on = setup(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]).unwrap();
        assert_eq!(on.endpoint.as_deref(), Some("http://127.0.0.1:4318"));
        assert!(on.warnings.is_empty());
        let traces = setup(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://b:4318/v1/traces",
            ),
        ])
        .unwrap();
        assert_eq!(traces.endpoint.as_deref(), Some("http://b:4318/v1/traces"));
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            let s = setup(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"), off]).unwrap();
            assert_eq!(s.endpoint, None, "{off:?}");
        }
        let grpc = setup(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .unwrap();
        assert!(
            grpc.warnings[0].contains("http/protobuf"),
            "{:?}",
            grpc.warnings
        );
        let tls = setup(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")]);
        assert!(tls.unwrap_err().contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
    }

    #[test]
    fn trace_context_is_read_from_meta_and_headers() {
        let propagator = TraceContextPropagator::new();
        let mut meta = JsonObject::new();
        meta.insert(
            TRACEPARENT.to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        );
        let cx = propagator.extract(&MetaCarrier(&meta));
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            axum::http::HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        );
        let cx = propagator.extract(&HeaderCarrier(&headers));
        assert_eq!(
            cx.span().span_context().span_id().to_string(),
            "b7ad6b7169203331"
        );
        let mut pairs = Pairs(Vec::new());
        propagator.inject_context(&cx, &mut pairs);
        assert_eq!(
            pairs.0,
            [(
                TRACEPARENT.to_owned(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()
            )]
        );
    }
}
