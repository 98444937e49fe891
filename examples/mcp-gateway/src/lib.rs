//! # mcp-gateway
//!
//! An MCP gateway built on Palisade: it serves, over streamable HTTP, the tools of *connectors*
//! (HTTP services, and stdio MCP servers it runs as child processes) and protects every call:
//!
//! - each MCP client (by IP address) has a rate limit, local or shared through Redis;
//! - each connector has a circuit breaker, and each partition of connectors a bulkhead;
//! - calls that fail in a way that may pass are kept in a dead-letter queue; each tool's replay
//!   policy (from config, else from its MCP annotations) says whether the retry worker replays
//!   them once the connector recovers, or keeps them parked for an operator; every attempt of
//!   one call carries the same idempotency key;
//! - a health monitor checks connectors (and Redis) and restarts crashed child servers, with
//!   backoff and crash-loop protection;
//! - refusals reach the client as tool errors with a retry time, never as a dropped session;
//! - MCP sessions are bounded: a cap on open sessions (`503` past it) and an idle timeout;
//! - the admin router (JSON, dashboard, Prometheus metrics, events) runs on a loopback port;
//! - logs are text or JSON lines under a `RUST_LOG`-style filter, and with the `otel` feature
//!   and `OTEL_EXPORTER_OTLP_ENDPOINT` set every tool call is an OpenTelemetry trace whose
//!   context reaches the upstreams ([`telemetry`]).
//!
//! ```text
//! cargo run -p mcp-gateway                      # the embedded demo (demo.toml)
//! cargo run -p mcp-gateway -- --config my.toml  # your connectors
//! ```
//!
//! See `docs/operations.md` for the admin requests that diagnose and fix each incident.

pub mod app;
pub mod auth;
pub mod config;
pub mod connector;
pub mod gateway;
pub mod names;
pub mod remote;
pub mod replay;
pub mod sessions;
pub mod telemetry;

pub use app::{DLQ, RATE_LIMITER, REDIS_COMPONENT, Running, StartError, StartOptions, start};
pub use config::{DEMO_CONFIG, GatewayConfig};
pub use gateway::{Caller, DeadCall, Gateway};
