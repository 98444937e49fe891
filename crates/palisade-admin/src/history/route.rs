//! `GET /admin/history?kind=&name=&seconds=&since=`: the history's points as JSON.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use palisade_core::ComponentKind;
use palisade_core::registry::{NAME_RULE, is_valid_name};

use super::{Filter, Selection};
use crate::auth::Reader;
use crate::components::KIND_PATHS;
use crate::error::ApiError;
use crate::state::AppState;

/// The query parameters the route reads.
const PARAMS: &str = "kind, name, seconds, since";

fn bad_query(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_query", message)
}

/// `kind` as a kind name (`circuit_breaker`) or its admin path (`circuit-breakers`).
fn parse_kind(text: &str) -> Option<ComponentKind> {
    ComponentKind::ALL.into_iter().find(|k| {
        k.as_str() == text
            || KIND_PATHS
                .iter()
                .any(|(kind, path)| kind == k && path.strip_prefix("/admin/") == Some(text))
    })
}

/// The filter of a query string; every mistake is a 400 that says what is accepted.
pub(crate) fn parse(pairs: Vec<(String, String)>, window_s: u64) -> Result<Filter, ApiError> {
    let mut filter = Filter::default();
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in &pairs {
        if seen.contains(&key.as_str()) {
            return Err(bad_query(format!("`{key}` is given twice; give it once")));
        }
        seen.push(key);
        let value = value.trim();
        if value.is_empty() {
            continue; // an empty value counts as absent, as on the other routes
        }
        match key.as_str() {
            "kind" => {
                let kind = parse_kind(value).ok_or_else(|| {
                    let kinds: Vec<&str> = ComponentKind::ALL.iter().map(|k| k.as_str()).collect();
                    bad_query(format!(
                        "unknown kind `{value}`; use one of {} (or its admin path, such as \
                         circuit-breakers)",
                        kinds.join(", ")
                    ))
                })?;
                filter.kind = Some(kind);
            }
            "name" => {
                if !is_valid_name(value) {
                    return Err(bad_query(format!(
                        "`{value}` is not a component name; {NAME_RULE}"
                    )));
                }
                filter.name = Some(value.to_owned());
            }
            "seconds" => {
                let seconds = value
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (1..=window_s).contains(s))
                    .ok_or_else(|| {
                        bad_query(format!(
                            "seconds must be a whole number from 1 to {window_s} (the history \
                             keeps {window_s} s), not `{value}`"
                        ))
                    })?;
                filter.seconds = Some(seconds);
            }
            "since" => {
                let since = value.parse::<u64>().map_err(|_| {
                    bad_query(format!(
                        "since must be a time in milliseconds since the Unix epoch (a point's \
                         `t`), not `{value}`"
                    ))
                })?;
                filter.since_ms = Some(since);
            }
            other => {
                return Err(bad_query(format!(
                    "unknown query parameter `{other}`; use {PARAMS}"
                )));
            }
        }
    }
    Ok(filter)
}

/// `GET /admin/history`: `{"interval_ms", "capacity", "now_ms", "tracked", "dropped",
/// "components": [{"kind", "name", "points": [{"t", ...}]}]}`. A named component that is
/// neither tracked nor registered is a 404.
pub(crate) async fn get_history(
    _: Reader,
    State(s): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Selection>, ApiError> {
    let Query(pairs) = query?;
    let history = s.history();
    let window_s = (history.window_ms() / 1000).max(1);
    let filter = parse(pairs, window_s)?;
    let selection = history.select(&filter);
    if let (Some(name), true) = (&filter.name, selection.is_empty()) {
        let registered = match filter.kind {
            Some(kind) => history.registry().get(kind, name).is_some(),
            None => ComponentKind::ALL
                .into_iter()
                .any(|kind| history.registry().get(kind, name).is_some()),
        };
        if !registered {
            let what = filter.kind.map_or("component", ComponentKind::as_str);
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no {what} named '{name}' is registered or in the history"),
            )
            .with("name", name.as_str()));
        }
    }
    Ok(Json(selection))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<Filter, String> {
        parse(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            900,
        )
        .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn reads_every_parameter() {
        let f = q(&[
            ("kind", "circuit-breakers"),
            ("name", "slack"),
            ("seconds", "60"),
            ("since", "1700000000000"),
        ])
        .unwrap();
        assert_eq!(f.kind, Some(ComponentKind::CircuitBreaker));
        assert_eq!(f.name.as_deref(), Some("slack"));
        assert_eq!((f.seconds, f.since_ms), (Some(60), Some(1_700_000_000_000)));
        assert_eq!(
            q(&[("kind", "dead_letter_queue")]).unwrap().kind,
            Some(ComponentKind::DeadLetterQueue)
        );
        assert_eq!(
            q(&[("kind", "dlq")]).unwrap().kind,
            Some(ComponentKind::DeadLetterQueue)
        );
        assert_eq!(
            q(&[("kind", "health/components")]).unwrap().kind,
            Some(ComponentKind::Health)
        );
        assert!(q(&[("kind", ""), ("seconds", " ")]).unwrap().kind.is_none());
    }

    #[test]
    fn refuses_what_it_cannot_read_and_says_why() {
        for (pairs, needle) in [
            (
                vec![("kind", "breaker")],
                "unknown kind `breaker`; use one of circuit_breaker",
            ),
            (vec![("seconds", "0")], "from 1 to 900"),
            (vec![("seconds", "901")], "from 1 to 900"),
            (vec![("seconds", "1.5")], "whole number"),
            (vec![("seconds", "-3")], "whole number"),
            (
                vec![("since", "yesterday")],
                "milliseconds since the Unix epoch",
            ),
            (vec![("name", "a b")], "not a component name"),
            (
                vec![("limit", "3")],
                "unknown query parameter `limit`; use kind, name",
            ),
            (
                vec![("kind", "timeout"), ("kind", "bulkhead")],
                "given twice",
            ),
        ] {
            let err = q(&pairs).unwrap_err();
            assert!(err.contains(needle), "{pairs:?}: {err}");
            assert!(err.contains("bad_query"), "{err}");
        }
    }
}
