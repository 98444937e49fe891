//! `Host` and `Origin` checks: the admin API answers only to the names it is reached by, so a
//! web page the operator visits cannot read or drive it through DNS rebinding (the browser
//! sends the attacker's name as `Host`) or a cross-site request (a foreign `Origin`).

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The names the admin API answers to by default: the loopback names. [`serve`] adds the
/// address it listens on.
///
/// [`serve`]: crate::AdminRouterBuilder::serve
pub const DEFAULT_ALLOWED_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Which `Host` (and browser `Origin`) names are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPolicy {
    /// Any name (the application in front checks it).
    Any,
    /// These names, lower-case, without port or brackets.
    Only(Vec<String>),
}

impl HostPolicy {
    fn allows(&self, host: &str) -> bool {
        match self {
            HostPolicy::Any => true,
            HostPolicy::Only(names) => names.iter().any(|n| n.eq_ignore_ascii_case(host)),
        }
    }

    /// Adds `name` (normalized) to an explicit list.
    pub(crate) fn add(&mut self, name: &str) {
        if let HostPolicy::Only(names) = self {
            let name = normalize(name);
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            HostPolicy::Any => "any".to_owned(),
            HostPolicy::Only(names) => names.join(", "),
        }
    }
}

/// `host[:port]`, `[v6]:port` or a bare name, as the lower-case name alone.
pub(crate) fn normalize(authority: &str) -> String {
    let a = authority.trim();
    let name = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else if a.matches(':').count() > 1 {
        a // a bare IPv6 address
    } else {
        a.split(':').next().unwrap_or_default()
    };
    name.to_ascii_lowercase()
}

/// The name in an `Origin` (`scheme://host[:port]`); `None` for `null` or garbage.
fn origin_host(origin: &str) -> Option<String> {
    let (_, rest) = origin.trim().split_once("://")?;
    let authority = rest.split('/').next()?;
    let name = normalize(authority);
    (!name.is_empty()).then_some(name)
}

/// Middleware: refuses a request whose `Host` is not an allowed name, or that carries an
/// `Origin` (a browser's cross-site request) naming another host. A request without `Host`
/// (HTTP/1.0, in-process calls) is let through: browsers always send one.
pub(crate) async fn check_host(
    State(policy): State<std::sync::Arc<HostPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if let Some(host) = headers.get(header::HOST) {
        let name = host.to_str().map(normalize).unwrap_or_default();
        if !policy.allows(&name) {
            return refuse(&policy, "Host", &name);
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let name = origin.to_str().ok().and_then(origin_host);
        match name {
            Some(name) if policy.allows(&name) => {}
            other => return refuse(&policy, "Origin", other.as_deref().unwrap_or("null")),
        }
    }
    next.run(request).await
}

fn refuse(policy: &HostPolicy, what: &str, name: &str) -> Response {
    tracing::warn!(target: "palisade::admin", header = what, name, "admin request refused: unknown host");
    ApiError::new(
        StatusCode::FORBIDDEN,
        "host_not_allowed",
        format!(
            "{what} {name:?} is not allowed: the admin API answers only to {} \
             (AdminRouterBuilder::allowed_hosts)",
            policy.describe()
        ),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_from_authorities() {
        assert_eq!(normalize("LocalHost:9090"), "localhost");
        assert_eq!(normalize("127.0.0.1"), "127.0.0.1");
        assert_eq!(normalize("[::1]:9090"), "::1");
        assert_eq!(normalize("::1"), "::1");
        assert_eq!(normalize("[::1"), "::1");
        assert_eq!(normalize(""), "");
        assert_eq!(
            origin_host("http://127.0.0.1:9090").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            origin_host("https://evil.example/x").as_deref(),
            Some("evil.example")
        );
        assert_eq!(origin_host("null"), None);
        let mut p = HostPolicy::Only(vec!["localhost".into()]);
        p.add("Admin.Internal:9090");
        assert!(p.allows("admin.internal") && p.allows("LOCALHOST") && !p.allows("evil.example"));
        assert!(HostPolicy::Any.allows("anything"));
    }
}
