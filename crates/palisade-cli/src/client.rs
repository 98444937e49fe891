//! A small client of one admin API: JSON requests with the bearer token and the actor header,
//! and every failure sorted into refused, unreachable or auth.

use std::fmt;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde_json::Value;

use crate::error::CliError;

/// The admin API's address when neither `--url` nor `PALISADE_ADMIN_URL` says otherwise (the
/// gateway's default `admin_addr`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:9090";

/// The header that names the operator in the audit trail.
pub const ACTOR_HEADER: &str = "x-palisade-actor";

/// How long to wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of the admin API at one base URL.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    has_token: bool,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token.
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &if self.has_token { "set" } else { "none" })
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Checks an admin URL: `http://host[:port][/prefix]`.
pub fn parse_base(url: &str) -> Result<Url, CliError> {
    let base = Url::parse(url.trim()).map_err(|e| {
        CliError::usage(format!(
            "invalid admin URL {url:?}: {e}; expected something like {DEFAULT_URL}"
        ))
    })?;
    match base.scheme() {
        "http" => {}
        "https" => {
            return Err(CliError::usage(format!(
                "invalid admin URL {url:?}: palisade speaks plain HTTP only, as the admin API \
                 listens on loopback; reach a remote one through `ssh -L` or \
                 `kubectl port-forward` and use http://127.0.0.1:<port>"
            )));
        }
        other => {
            return Err(CliError::usage(format!(
                "invalid admin URL {url:?}: the scheme {other:?} is not http; expected \
                 something like {DEFAULT_URL}"
            )));
        }
    }
    if base.host_str().is_none_or(str::is_empty) || base.cannot_be_a_base() {
        return Err(CliError::usage(format!(
            "invalid admin URL {url:?}: it names no host; expected something like {DEFAULT_URL}"
        )));
    }
    Ok(base)
}

/// A header value from operator input: bytes a header cannot carry become `_`.
fn header_value(text: &str) -> Option<HeaderValue> {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim();
    if clean.is_empty() {
        return None;
    }
    HeaderValue::from_str(clean).ok()
}

impl Client {
    /// A client of the admin API at `base`, sending `token` (if any) and naming `actor` (if
    /// any); requests other than streams give up after `timeout`.
    pub fn new(
        base: Url,
        token: Option<&str>,
        actor: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, CliError> {
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                CliError::usage(
                    "the admin token holds characters an HTTP header cannot carry \
                     (check PALISADE_ADMIN_TOKEN or the token file)",
                )
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        if let Some(actor) = actor.and_then(header_value) {
            headers.insert(ACTOR_HEADER, actor);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            // The admin API is on loopback or behind a tunnel: a proxy from the environment
            // would only get in the way (and fail its Host check).
            .no_proxy()
            .user_agent(concat!("palisade-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            has_token: token.is_some(),
            timeout,
        })
    }

    /// The base URL as text, without a trailing `/`.
    pub fn base_text(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of `segments` under the base (each segment percent-encoded), with `query`.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// `GET` of `segments` with `query`.
    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, CliError> {
        let url = self.url(segments, query);
        self.send(self.http.get(url.clone()).timeout(self.timeout), &url)
            .await
    }

    /// `POST` of `body` (JSON) to `segments`.
    pub async fn post(&self, segments: &[&str], body: &Value) -> Result<Value, CliError> {
        self.post_within(segments, body, self.timeout).await
    }

    /// `POST` of `body` to `segments`, waiting up to `timeout` for the answer.
    pub async fn post_within(
        &self,
        segments: &[&str],
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, CliError> {
        let url = self.url(segments, &[]);
        let request = self
            .http
            .request(Method::POST, url.clone())
            .header("content-type", "application/json")
            .body(body.to_string())
            .timeout(timeout.max(self.timeout));
        self.send(request, &url).await
    }

    /// `DELETE` of `segments`.
    pub async fn delete(&self, segments: &[&str]) -> Result<Value, CliError> {
        let url = self.url(segments, &[]);
        self.send(self.http.delete(url.clone()).timeout(self.timeout), &url)
            .await
    }

    /// `GET` of a stream (server-sent events): the response once its headers arrived with a
    /// success status; no overall timeout.
    pub async fn stream(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<reqwest::Response, CliError> {
        let url = self.url(segments, query);
        let response = self
            .http
            .get(url.clone())
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| self.transport(&e, &url))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(&e, &url))?;
        Err(self.refusal(status, &bytes, &url))
    }

    async fn send(&self, request: RequestBuilder, url: &Url) -> Result<Value, CliError> {
        let response = request.send().await.map_err(|e| self.transport(&e, url))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(&e, url))?;
        if !status.is_success() {
            return Err(self.refusal(status, &bytes, url));
        }
        serde_json::from_slice(&bytes).map_err(|_| CliError::Refused {
            message: format!(
                "{} answered {status} with a body that is not JSON ({}); is this a Palisade \
                 admin API?",
                url.path(),
                snippet(&bytes)
            ),
            body: None,
        })
    }

    /// A transport failure: unreachable, or a usage error for a URL the client cannot use.
    pub fn transport(&self, e: &reqwest::Error, url: &Url) -> CliError {
        if e.is_builder() {
            return CliError::usage(format!("cannot send a request to {url}: {}", root_cause(e)));
        }
        let what = if e.is_timeout() {
            "no answer in time from"
        } else if e.is_connect() {
            "cannot connect to"
        } else {
            "the connection failed with"
        };
        let cause = if e.is_timeout() {
            format!("waited {} s", self.timeout.as_secs_f64())
        } else {
            root_cause(e)
        };
        CliError::Unreachable(format!(
            "{what} the admin API at {} ({cause}); is the service running, and is --url (or \
             PALISADE_ADMIN_URL) right?",
            self.base_text()
        ))
    }

    /// An error status: the server's `message` (and code), sorted into auth or refused.
    fn refusal(&self, status: StatusCode, bytes: &[u8], url: &Url) -> CliError {
        let body: Option<Value> = serde_json::from_slice(bytes).ok().filter(Value::is_object);
        let code = body
            .as_ref()
            .and_then(|b| b.get("error"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let server_message = body
            .as_ref()
            .and_then(|b| b.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let tag = match &code {
            Some(code) => format!("{} {code}", status.as_u16()),
            None => status.to_string(),
        };
        let mut message = match server_message {
            Some(m) => format!("{m} [{tag}]"),
            None => format!("{} answered {tag}: {}", url.path(), snippet(bytes)),
        };
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                if status == StatusCode::UNAUTHORIZED {
                    message.push_str(if self.has_token {
                        "; the token was refused: check PALISADE_ADMIN_TOKEN or --token-file"
                    } else {
                        "; no token was given: set PALISADE_ADMIN_TOKEN or pass --token-file"
                    });
                }
                CliError::Auth { message, body }
            }
            _ => CliError::Refused { message, body },
        }
    }
}

/// What an error comes down to: its innermost source (`Connection refused (os error 111)`,
/// `failed to lookup address information: …`); reqwest's own text only repeats the URL.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// The start of a body, for a message: at most 200 characters, on one line.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 200 {
        format!("{}…", line.chars().take(200).collect::<String>())
    } else if line.is_empty() {
        "an empty body".to_owned()
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls_must_be_plain_http_with_a_host() {
        assert!(parse_base("http://127.0.0.1:9090").is_ok());
        assert!(parse_base(" http://localhost:9090/prefix/ ").is_ok());
        for bad in [
            "https://x",
            "ftp://x",
            "127.0.0.1:9090",
            "http://",
            "",
            "not a url",
        ] {
            let e = parse_base(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}: {e}");
        }
    }

    #[test]
    fn segments_are_encoded_under_the_base() {
        let base = parse_base("http://127.0.0.1:9090/gw/").unwrap();
        let c = Client::new(base, Some("t"), Some("alice\n"), Duration::from_secs(1)).unwrap();
        let url = c.url(
            &["admin", "circuit-breakers", "a/b ?"],
            &[("state", "parked".into())],
        );
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9090/gw/admin/circuit-breakers/a%2Fb%20%3F?state=parked"
        );
        assert!(!format!("{c:?}").contains("Bearer"));
    }

    #[test]
    fn header_values_are_cleaned() {
        assert_eq!(header_value("alice\r\nX: y").unwrap(), "alice__X: y");
        assert!(header_value("  ").is_none());
        assert_eq!(header_value("zoé").unwrap(), "zo_");
    }
}
