//! The fallback component: answers by kind, errors let through, runtime switch through the
//! registry, build errors.
#![allow(clippy::unwrap_used)]

use palisade_core::{BuildError, ComponentKind, EventFilter, EventKind, Registry};
use palisade_toolbox::{FailureKind, Fallback};
use serde_json::json;

#[derive(Debug, Clone, PartialEq)]
enum Upstream {
    Refused,
    Timeout(u32),
    Status(u16),
}

fn kind(e: &Upstream) -> FailureKind {
    match e {
        Upstream::Refused => FailureKind::Refused,
        Upstream::Timeout(_) => FailureKind::Timeout,
        Upstream::Status(429) => FailureKind::RateLimited,
        Upstream::Status(s) if *s >= 500 => FailureKind::ServerError,
        Upstream::Status(_) => FailureKind::ClientError,
    }
}

fn fallback(registry: &Registry) -> Fallback<String, Upstream> {
    Fallback::builder("forecast")
        .classify(kind)
        .value(FailureKind::Refused, "cached".to_owned())
        .with(FailureKind::Timeout, |e| match e {
            Upstream::Timeout(ms) if ms < 1000 => Ok(format!("retry later ({ms} ms)")),
            other => Err(other),
        })
        .registry(registry)
        .build()
        .unwrap()
}

#[tokio::test]
async fn each_kind_gets_its_answer_and_the_others_pass_through() {
    let registry = Registry::new();
    let f = fallback(&registry);
    assert_eq!(
        f.call(async { Ok("live".to_owned()) }).await.unwrap(),
        "live"
    );
    assert_eq!(f.apply(Err(Upstream::Refused)).unwrap(), "cached");
    assert_eq!(
        f.apply(Err(Upstream::Timeout(200))).unwrap(),
        "retry later (200 ms)"
    );
    // A function may decline (its answer is an error).
    assert_eq!(
        f.apply(Err(Upstream::Timeout(5000))).unwrap_err(),
        Upstream::Timeout(5000)
    );
    // Kinds without an answer pass through unchanged.
    assert_eq!(
        f.apply(Err(Upstream::Status(400))).unwrap_err(),
        Upstream::Status(400)
    );
    let snap = f.snapshot();
    assert_eq!(snap.kinds, [FailureKind::Refused, FailureKind::Timeout]);
    assert_eq!(snap.used_total, 3);
    assert_eq!(snap.used_by_kind[&FailureKind::Timeout], 2);
    assert_eq!(snap.passed_total, 1);
    let json = registry
        .snapshot(ComponentKind::Fallback, "forecast")
        .unwrap();
    assert_eq!(json["used_by_kind"]["refused"], 1);
}

#[tokio::test]
async fn operators_switch_it_off_to_see_the_real_errors() {
    let registry = Registry::new();
    let f = fallback(&registry);
    let snap = registry
        .control(
            ComponentKind::Fallback,
            "forecast",
            json!({"action": "disable"}),
        )
        .await
        .unwrap();
    assert_eq!(snap["enabled"], false);
    assert_eq!(
        f.apply(Err(Upstream::Refused)).unwrap_err(),
        Upstream::Refused
    );
    registry
        .control(
            ComponentKind::Fallback,
            "forecast",
            json!({"action": "enable"}),
        )
        .await
        .unwrap();
    assert_eq!(f.apply(Err(Upstream::Refused)).unwrap(), "cached");
    let bad = registry
        .control(
            ComponentKind::Fallback,
            "forecast",
            json!({"action": "explode"}),
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("explode"), "{bad}");
    let changes: Vec<String> = registry
        .events()
        .recent(&EventFilter {
            kind: Some(ComponentKind::Fallback),
            ..Default::default()
        })
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ConfigChanged { change } => Some(change),
            _ => None,
        })
        .collect();
    assert_eq!(changes, ["enabled true -> false", "enabled false -> true"]);
}

#[test]
fn a_fallback_without_a_classifier_or_an_answer_is_refused_naming_what_is_missing() {
    let no_classifier = Fallback::<String, Upstream>::builder("x")
        .value(FailureKind::Refused, String::new())
        .build()
        .unwrap_err();
    assert!(matches!(&no_classifier, BuildError::InvalidConfig(e) if e.field == "classify"));
    let no_answer = Fallback::<String, Upstream>::builder("x")
        .classify(kind)
        .build()
        .unwrap_err();
    assert!(matches!(&no_answer, BuildError::InvalidConfig(e) if e.field == "kinds"));
    let bad_name = Fallback::<String, Upstream>::builder("a b")
        .classify(kind)
        .value(FailureKind::Other, String::new())
        .build();
    assert!(bad_name.is_err());
}
