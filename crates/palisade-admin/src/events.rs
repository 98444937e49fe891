//! `GET /admin/events` (the bus's recent events) and `GET /admin/events/stream` (server-sent
//! events from its broadcast channel).

use std::convert::Infallible;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use palisade_core::{ComponentKind, Event, EventFilter, EventKind};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};
use tokio_stream::{Stream, StreamExt};

use crate::auth::Access;
use crate::error::ApiError;
use crate::state::AppState;

/// Events returned by `GET /admin/events` when no `limit` is given.
pub const DEFAULT_EVENTS_LIMIT: usize = 100;

/// The `type` of an event as it appears in its JSON.
pub(crate) fn event_type(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::StateTransition { .. } => "state_transition",
        EventKind::ConfigChanged { .. } => "config_changed",
        EventKind::AdminAction { .. } => "admin_action",
        EventKind::Notice { .. } => "notice",
        EventKind::Audit { .. } => "audit",
    }
}

/// Query of both event routes. Empty values count as absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Component kind (`circuit_breaker`, `bulkhead`, ...).
    kind: Option<String>,
    /// Component name.
    component: Option<String>,
    /// Event type (`state_transition`, `audit`, ...).
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Only events after this sequence number (the stream replays them first).
    since_seq: Option<u64>,
    /// At most this many, the newest (recent events only).
    limit: Option<usize>,
}

/// The parsed filter.
#[derive(Debug, Clone)]
struct Selector {
    kind: Option<ComponentKind>,
    component: Option<String>,
    event_type: Option<String>,
}

impl Selector {
    fn matches(&self, e: &Event) -> bool {
        self.kind.is_none_or(|k| k == e.component_kind)
            && self.component.as_deref().is_none_or(|c| c == e.component)
            && self
                .event_type
                .as_deref()
                .is_none_or(|t| t == event_type(&e.kind))
    }

    fn filter(&self, since_seq: Option<u64>) -> EventFilter {
        EventFilter {
            kind: self.kind,
            component: self.component.clone(),
            since_seq,
            limit: None,
        }
    }
}

const EVENT_TYPES: [&str; 5] = [
    "state_transition",
    "config_changed",
    "admin_action",
    "notice",
    "audit",
];

fn selector(q: &EventsQuery) -> Result<Selector, ApiError> {
    let present = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
    let kind = match present(&q.kind) {
        None => None,
        Some(k) => Some(
            serde_json::from_value::<ComponentKind>(Value::String(k.clone())).map_err(|_| {
                let kinds: Vec<&str> = ComponentKind::ALL.iter().map(|k| k.as_str()).collect();
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_query",
                    format!(
                        "unknown component kind {k:?}; use one of {}",
                        kinds.join(", ")
                    ),
                )
            })?,
        ),
    };
    let event_type = present(&q.event_type);
    if let Some(t) = &event_type {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!(
                    "unknown event type {t:?}; use one of {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    Ok(Selector {
        kind,
        component: present(&q.component),
        event_type,
    })
}

/// `GET /admin/events?kind=&component=&type=&since_seq=&limit=`: kept events, oldest first.
pub(crate) async fn recent(
    access: Access,
    State(s): State<AppState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let sel = selector(&q)?;
    let bus = s.registry().events();
    let mut events = bus.recent(&sel.filter(q.since_seq));
    events.retain(|e| sel.matches(e));
    let limit = q.limit.unwrap_or(DEFAULT_EVENTS_LIMIT);
    let skip = events.len().saturating_sub(limit);
    events.drain(..skip);
    let last_seq = events.last().map(|e| e.seq).or(q.since_seq);
    let full = matches!(access, Access::Operator { .. });
    let events: Vec<Value> = events.iter().map(|e| event_json(e, full)).collect();
    Ok(Json(json!({
        "count": events.len(),
        "published": bus.published(),
        "last_seq": last_seq,
        "events": events,
    })))
}

/// Fields of an event that may carry data (notice details, audit snapshots): shown to the
/// operator token only.
const DETAIL_FIELDS: [&str; 3] = ["details", "before", "after"];

/// An event as JSON; without `full`, its detail fields are redacted.
fn event_json(e: &Event, full: bool) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if !full && let Some(fields) = v.as_object_mut() {
        for key in DETAIL_FIELDS {
            if let Some(value) = fields.get_mut(key)
                && !value.is_null()
            {
                *value = Value::from("redacted: the operator token shows it");
            }
        }
    }
    v
}

fn sse_event(e: &Event, full: bool) -> SseEvent {
    SseEvent::default()
        .id(e.seq.to_string())
        .data(event_json(e, full).to_string())
}

/// `GET /admin/events/stream?kind=&component=&type=&since_seq=`: live events as server-sent
/// events (`id` = sequence number, `data` = the event's JSON), with keep-alive comments. A
/// reconnecting client's `Last-Event-ID` (or `since_seq`) first replays the kept events it
/// missed (all kept events when the number is ahead of the bus: the process restarted). A client too slow for the broadcast channel gets an `event: lagged` with the count
/// it missed, then newer events.
pub(crate) async fn stream(
    access: Access,
    State(s): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(q) = query?;
    let sel = selector(&q)?;
    let bus = s.registry().events();
    // Subscribe before reading the ring, so nothing published in between is missed.
    let live = BroadcastStream::new(bus.subscribe());
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(q.since_seq)
        // A sequence number this bus never reached comes from before a restart (numbering
        // starts again at 1): everything kept is news to that client.
        .map(|seq| if seq > bus.published() { 0 } else { seq });
    let replay: Vec<Event> = match resume {
        Some(seq) => {
            let mut kept = bus.recent(&sel.filter(Some(seq)));
            kept.retain(|e| sel.matches(e));
            kept
        }
        None => Vec::new(),
    };
    // Events up to here are replayed (or were seen before the reconnection): skip them live.
    let floor = replay.last().map(|e| e.seq).or(resume).unwrap_or(0);
    let full = matches!(access, Access::Operator { .. });
    let replay = tokio_stream::iter(
        replay
            .into_iter()
            .map(move |e| Some(Ok(sse_event(&e, full)))),
    );
    let live = live.filter_map(move |item| match item {
        Ok(e) if e.seq > floor && sel.matches(&e) => Some(Some(Ok(sse_event(&e, full)))),
        Ok(_) => None,
        Err(BroadcastStreamRecvError::Lagged(missed)) => Some(Some(Ok(SseEvent::default()
            .event("lagged")
            .data(json!({ "missed": missed }).to_string())))),
    });
    // `None` marks shutdown: the stream ends, so a graceful stop is not held up by it.
    let stop =
        WatchStream::new(s.inner.shutdown.subscribe()).filter_map(|stop| stop.then_some(None));
    let events = replay
        .chain(live)
        .merge(stop)
        .take_while(Option::is_some)
        .filter_map(|item| item);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(s.inner.keep_alive)))
}
