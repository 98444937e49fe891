//! `GET /metrics` with a Prometheus recorder that is never installed globally.
#![cfg(feature = "health")] // the fixture has a health monitor
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod common;

use common::*;
use metrics_exporter_prometheus::PrometheusBuilder;
use palisade_admin::AdminRouter;

#[tokio::test]
async fn metrics_render_every_component_from_a_private_recorder() {
    let f = fixture().await;
    let app = AdminRouter::builder(&f.registry)
        .token(TOKEN)
        .prometheus_recorder(PrometheusBuilder::new().build_recorder())
        .build();
    f.breaker.force_open();
    f.limiter.check_key("10.0.0.1").unwrap();

    let r = send(&app, get("/metrics")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.content_type(), palisade_admin::PROMETHEUS_TEXT);
    let text = &r.text;
    assert!(
        text.contains(r#"palisade_circuit_breaker_state{name="slack",state="forced_open"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"palisade_circuit_breaker_state{name="slack",state="closed"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"palisade_bulkhead_max_concurrent_calls{name="database"} 10"#),
        "{text}"
    );
    assert!(
        text.contains(r#"palisade_rate_limiter_permitted_total{name="per-client"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"palisade_dlq_entries{name="tool-calls",state="parked"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"palisade_health_status{name="upstream",status="healthy"} 1"#),
        "{text}"
    );

    // Each scrape exports afresh.
    f.breaker.reset();
    let text = send(&app, get("/metrics")).await.text;
    assert!(
        text.contains(r#"palisade_circuit_breaker_state{name="slack",state="closed"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_handle_renders_what_its_recorder_holds() {
    let f = fixture().await;
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // What an installed recorder would have received from the components.
    metrics::with_local_recorder(&recorder, || f.registry.export_metrics());
    let app = AdminRouter::builder(&f.registry)
        .token(TOKEN)
        .prometheus(handle)
        .build();
    let r = send(&app, get("/metrics")).await;
    assert_eq!(r.status, 200);
    assert!(
        r.text.contains("palisade_circuit_breaker_state"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn without_an_exporter_metrics_are_404_with_how_to_enable_them() {
    let f = fixture().await;
    let r = send(&f.app(), get("/metrics")).await;
    r.assert_error(404, "metrics_disabled");
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("PrometheusBuilder"),
        "{}",
        r.text
    );
}
