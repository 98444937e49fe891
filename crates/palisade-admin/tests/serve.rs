//! The router on its own loopback listener: real connections, peer addresses in the audit
//! trail, refusal of other addresses, and a shutdown that open event streams do not hold up.
#![cfg(feature = "health")] // the fixture has a health monitor
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use palisade_admin::{AdminRouter, ServeError};
use palisade_core::EventKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 exchange on a fresh connection; returns the raw response.
async fn http(addr: SocketAddr, request: String) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn serves_on_loopback_and_audits_the_peer_address() {
    let f = fixture().await;
    let server = AdminRouter::builder(&f.registry)
        .health(&f.monitor)
        .token(TOKEN)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);

    let reply = http(
        addr,
        "GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    let body = r#"{"action": "force_open"}"#;
    let reply = http(
        addr,
        format!(
            "POST /admin/circuit-breakers/slack HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {TOKEN}\r\nX-Palisade-Actor: alice\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let EventKind::Audit { actor, .. } = &f.audits()[0].kind else {
        unreachable!()
    };
    assert!(actor.starts_with("alice from 127.0.0.1:"), "{actor}");

    server.shutdown().await.unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_an_open_event_stream() {
    let f = fixture().await;
    let server = AdminRouter::builder(&f.registry)
        .token(TOKEN)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut conn = TcpStream::connect(server.local_addr()).await.unwrap();
    let request = format!(
        "GET /admin/events/stream HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));

    let started = tokio::time::Instant::now();
    server.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The stream ended and the connection closed.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn other_addresses_are_refused_unless_allowed() {
    let f = fixture().await;
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:0"] {
        let err = AdminRouter::builder(&f.registry)
            .serve(addr.parse().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, ServeError::NotLoopback { .. }), "{err}");
        assert!(err.to_string().contains("allow_non_loopback"), "{err}");
    }
    // IPv6 loopback is loopback.
    if let Ok(server) = AdminRouter::builder(&f.registry)
        .serve("[::1]:0".parse().unwrap())
        .await
    {
        server.shutdown().await.unwrap();
    }
    // Allowed explicitly: binds every interface (only loopback is used here).
    let server = AdminRouter::builder(&f.registry)
        .allow_non_loopback(true)
        .serve("0.0.0.0:0".parse().unwrap())
        .await
        .unwrap();
    let port = server.local_addr().port();
    let reply = http(
        SocketAddr::from(([127, 0, 0, 1], port)),
        "GET /livez HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    drop(server);
}

#[tokio::test]
async fn a_port_in_use_is_a_bind_error() {
    let f = fixture().await;
    let first = AdminRouter::builder(&f.registry)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let err = AdminRouter::builder(&f.registry)
        .serve(first.local_addr())
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::Bind { .. }), "{err}");
    first.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_probes_listener_serves_probes_and_metrics_and_nothing_else() {
    let f = fixture().await;
    let probes = AdminRouter::builder(&f.registry)
        .health(&f.monitor)
        .token(TOKEN)
        .prometheus_recorder(metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder())
        .serve_probes("127.0.0.1:0".parse().unwrap(), true)
        .await
        .unwrap();
    let addr = probes.local_addr();
    let get = |path: &str, host: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    // Any Host (a kubelet uses the pod IP), no token.
    for path in ["/livez", "/readyz", "/health", "/metrics"] {
        let reply = http(addr, get(path, "10.1.2.3:8081")).await;
        assert!(
            reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.1 503"),
            "{path}: {reply}"
        );
        assert!(!reply.contains("unauthorized"), "{path}: {reply}");
    }
    let metrics = http(addr, get("/metrics", "localhost")).await;
    assert!(metrics.contains("palisade_circuit_breaker"), "{metrics}");
    // Nothing else: no component details, no commands.
    for path in [
        "/admin",
        "/admin/resilience",
        "/admin/dlq/tool-calls/entries",
    ] {
        let reply = http(addr, get(path, "localhost")).await;
        assert!(reply.starts_with("HTTP/1.1 404"), "{path}: {reply}");
    }
    let post = format!(
        "POST /admin/circuit-breakers/slack HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 24\r\nConnection: close\r\n\r\n{{\"action\":\"force_open\"}}"
    );
    let reply = http(addr, post).await;
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    assert_eq!(f.breaker.state(), palisade_breaker::State::Closed);
    probes.shutdown().await.unwrap();
}
