//! Built-in checks: TCP connect, HTTP GET, Redis `PING` (feature `redis`) and circuit breaker
//! state (feature `breaker`).
//!
//! None of them has its own timeout: the monitor cancels a check after the component's
//! `timeout` and counts it as unhealthy.

use std::time::Instant;

use async_trait::async_trait;
use palisade_core::ConfigError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::check::{CheckResult, HealthCheck, format_latency};

/// Healthy when a TCP connection to `host:port` can be opened.
///
/// ```
/// use palisade_health::checks::TcpCheck;
///
/// let postgres = TcpCheck::new("127.0.0.1:5432");
/// assert_eq!(postgres.addr(), "127.0.0.1:5432");
/// ```
#[derive(Debug, Clone)]
pub struct TcpCheck {
    addr: String,
}

impl TcpCheck {
    /// A check that connects to `addr` (`"host:port"`; the host is resolved at each check).
    pub fn new(addr: impl Into<String>) -> Self {
        TcpCheck { addr: addr.into() }
    }

    /// The address connected to.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

#[async_trait]
impl HealthCheck for TcpCheck {
    /// `"connected to host:port in 0.31 ms"`, or unhealthy `"connect to host:port failed: …"`.
    async fn check(&self) -> CheckResult {
        let started = Instant::now();
        match TcpStream::connect(self.addr.as_str()).await {
            Ok(_) => CheckResult::healthy(format!(
                "connected to {} in {}",
                self.addr,
                format_latency(started.elapsed())
            )),
            Err(e) => CheckResult::unhealthy(format!("connect to {} failed: {e}", self.addr)),
        }
    }
}

/// Longest response head read by [`HttpCheck`] before it gives up finding the status line.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Healthy when `GET url` answers 2xx or 3xx (or exactly the [expected
/// status](Self::expect_status)).
///
/// A minimal HTTP/1.1 client for plain `http://host[:port]/path` URLs, with no dependency: it
/// sends one request with `Connection: close` and reads only the status line. For HTTPS,
/// redirects or headers, wrap your HTTP client in [`check_fn`](crate::check_fn).
///
/// ```
/// use palisade_health::checks::HttpCheck;
///
/// let api = HttpCheck::new("http://127.0.0.1:8080/healthz").unwrap().expect_status(204);
/// # let _ = api;
/// let err = HttpCheck::new("https://example.com/").unwrap_err();
/// assert_eq!(err.field, "url");
/// ```
#[derive(Debug, Clone)]
pub struct HttpCheck {
    url: String,
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header.
    host: String,
    /// Path and query.
    path: String,
    expect: Option<u16>,
}

impl HttpCheck {
    /// A check of `url` (`http://host[:port][/path][?query]`; the port defaults to 80). Refused,
    /// naming the field `url`: other schemes (`https` included), credentials in the URL, a
    /// missing host or a bad port.
    pub fn new(url: &str) -> Result<HttpCheck, ConfigError> {
        let url = url.trim();
        let bad = |reason: String| ConfigError::new("url", reason);
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad(format!(
                "expected http://host[:port]/path, got {url:?} (no scheme)"
            )));
        };
        if scheme.eq_ignore_ascii_case("https") {
            return Err(bad(
                "https is not supported by the built-in check; wrap your HTTP client in check_fn"
                    .into(),
            ));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad(format!(
                "scheme {scheme:?} is not supported: expected http://host[:port]/path"
            )));
        }
        // Drop a fragment: it is never sent.
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(bad(
                "credentials in the URL are not supported by the built-in check; wrap your HTTP client in check_fn"
                    .into(),
            ));
        }
        let (host, port) = split_host_port(authority).map_err(bad)?;
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        if path
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            return Err(bad(format!(
                "the path {path:?} contains whitespace or control characters; percent-encode them"
            )));
        }
        let port = port.unwrap_or(80);
        Ok(HttpCheck {
            url: format!("http://{authority}{path}"),
            addr: format!("{host}:{port}"),
            host: authority.to_owned(),
            path,
            expect: None,
        })
    }

    /// Healthy only on exactly this status (instead of any 2xx or 3xx).
    #[must_use]
    pub fn expect_status(mut self, status: u16) -> Self {
        self.expect = Some(status);
        self
    }

    /// The URL checked.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn get(&self) -> Result<(u16, String), String> {
        let mut stream = TcpStream::connect(self.addr.as_str())
            .await
            .map_err(|e| format!("connect to {} failed: {e}", self.addr))?;
        // One write per request, but no reason to let Nagle hold it back.
        let _ = stream.set_nodelay(true);
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: palisade-health\r\n\r\n",
            self.path, self.host
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("sending the request failed: {e}"))?;
        let mut head = Vec::with_capacity(512);
        let mut chunk = [0u8; 4096];
        let line_end = loop {
            if let Some(i) = head.iter().position(|&b| b == b'\n') {
                break i;
            }
            if head.len() >= MAX_RESPONSE_BYTES {
                return Err(format!(
                    "malformed response: no status line in the first {} KiB",
                    MAX_RESPONSE_BYTES / 1024
                ));
            }
            let room = (MAX_RESPONSE_BYTES - head.len()).min(chunk.len());
            let n = stream
                .read(&mut chunk[..room])
                .await
                .map_err(|e| format!("reading the response failed: {e}"))?;
            if n == 0 {
                if head.is_empty() {
                    return Err("the server closed the connection without a response".into());
                }
                break head.len();
            }
            head.extend_from_slice(&chunk[..n]);
        };
        parse_status_line(&head[..line_end])
    }
}

/// `host[:port]` or `[v6][:port]` → (host as connected to, port).
fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(format!("unclosed '[' in the host {authority:?}"));
        };
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(format!("unexpected {p:?} after the IPv6 address")),
            },
        };
        // Keep the brackets: `[::1]:80` is what the resolver understands.
        (&authority[..addr.len() + 2], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err("the URL has no host: expected http://host[:port]/path".into());
    }
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("bad port {p:?}: expected 1-65535"))?,
        ),
    };
    Ok((host, port))
}

/// `HTTP/1.1 503 Service Unavailable` → (503, "Service Unavailable").
fn parse_status_line(line: &[u8]) -> Result<(u16, String), String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = String::from_utf8_lossy(line);
    let malformed = || {
        let shown: String = text.chars().take(80).collect();
        format!("malformed response: expected an HTTP status line, got {shown:?}")
    };
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/") {
        return Err(malformed());
    }
    let code = parts.next().unwrap_or_default();
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let code: u16 = code.parse().map_err(|_| malformed())?;
    if !(100..=599).contains(&code) {
        return Err(malformed());
    }
    Ok((code, parts.next().unwrap_or_default().trim().to_owned()))
}

#[async_trait]
impl HealthCheck for HttpCheck {
    /// `"GET url: 200 in 1.2 ms"`, or unhealthy `"GET url returned 503 Service Unavailable"`,
    /// `"GET url failed: connect to host:port failed: …"`, `"GET url failed: malformed response: …"`.
    async fn check(&self) -> CheckResult {
        let started = Instant::now();
        let (status, reason) = match self.get().await {
            Ok(answer) => answer,
            Err(e) => return CheckResult::unhealthy(format!("GET {} failed: {e}", self.url)),
        };
        let elapsed = started.elapsed();
        let ok = match self.expect {
            Some(expected) => status == expected,
            None => (200..400).contains(&status),
        };
        if ok {
            return CheckResult::healthy(format!(
                "GET {}: {status} in {}",
                self.url,
                format_latency(elapsed)
            ));
        }
        let reason = if reason.is_empty() {
            String::new()
        } else {
            format!(" {reason}")
        };
        let expected = match self.expect {
            Some(e) => format!(", expected {e}"),
            None => String::new(),
        };
        CheckResult::unhealthy(format!(
            "GET {} returned {status}{reason}{expected}",
            self.url
        ))
    }
}

#[cfg(feature = "redis")]
pub use self::redis_check::RedisCheck;

#[cfg(feature = "redis")]
mod redis_check {
    use std::fmt;
    use std::time::Instant;

    use async_trait::async_trait;
    use palisade_core::ConfigError;
    use palisade_core::redis::{ConnectionOptions, IntoRedisConfig, RedisConnection};

    use crate::check::{CheckResult, HealthCheck, format_latency};

    /// Healthy when Redis answers `PING` and reports a usable role: a primary (with how many
    /// of its replicas are online), and on a cluster a cluster state of `ok`. Degraded when
    /// the node answers but is a replica or the cluster is failing (reads may work, writes
    /// will not); unhealthy when it does not answer.
    ///
    /// Works on every topology of [`RedisConfig`](palisade_core::redis::RedisConfig): one node,
    /// a Sentinel group (the check follows the primary through failovers) or a cluster. One
    /// lazily opened, auto-reconnecting connection is kept between checks. Credentials are
    /// never printed, by `Debug` or in messages.
    ///
    /// ```no_run
    /// use palisade_health::checks::RedisCheck;
    ///
    /// # async fn demo() -> Result<(), palisade_core::ConfigError> {
    /// let redis = RedisCheck::new("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster")?;
    /// # let _ = redis;
    /// # Ok(()) }
    /// ```
    #[derive(Clone)]
    pub struct RedisCheck {
        conn: RedisConnection,
    }

    impl fmt::Debug for RedisCheck {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RedisCheck")
                .field("topology", &self.conn.topology_name())
                .finish_non_exhaustive()
        }
    }

    impl RedisCheck {
        /// A check of the Redis `redis` points at: a URL (`redis://`, `rediss://`,
        /// `redis+sentinel://…/<master>`, `redis+cluster://…`) or a
        /// [`RedisConfig`](palisade_core::redis::RedisConfig). Nothing is connected until the
        /// first check, which fails fast (2 s for a reply, one reconnection attempt). Must be
        /// called inside a tokio runtime; refused, naming the field, outside one, when the URL
        /// does not parse or TLS files cannot be read.
        pub fn new(redis: impl IntoRedisConfig) -> Result<RedisCheck, ConfigError> {
            let rename = |e: ConfigError| ConfigError {
                field: if e.field == "redis_url" {
                    "url".into()
                } else {
                    e.field
                },
                ..e
            };
            let config = redis.into_redis_config().map_err(rename)?;
            let conn =
                RedisConnection::open(&config, ConnectionOptions::fail_fast()).map_err(rename)?;
            Ok(RedisCheck { conn })
        }
    }

    #[async_trait]
    impl HealthCheck for RedisCheck {
        /// `"PING answered in 0.41 ms; primary, 1 of 1 replicas online"`, degraded `"…;
        /// replica, link to its primary up"` or `"…; cluster FAIL: …"`, or unhealthy
        /// `"Redis unreachable: …"`.
        async fn check(&self) -> CheckResult {
            let started = Instant::now();
            let mut conn = self.conn.clone();
            if let Err(e) = redis::cmd("PING").query_async::<String>(&mut conn).await {
                return CheckResult::unhealthy(format!("Redis unreachable: {e}"));
            }
            let latency = format_latency(started.elapsed());
            match self.conn.server_state().await {
                Ok(state) if state.is_ok() => {
                    CheckResult::healthy(format!("PING answered in {latency}; {}", state.summary()))
                }
                Ok(state) => CheckResult::degraded(format!(
                    "PING answered in {latency}; {}",
                    state.summary()
                )),
                // Managed Redis may refuse INFO or CLUSTER INFO; PING is the verdict then.
                Err(e) => {
                    CheckResult::healthy(format!("PING answered in {latency}; role unknown ({e})"))
                }
            }
        }
    }
}

#[cfg(feature = "breaker")]
pub use self::breaker_check::BreakerCheck;

#[cfg(feature = "breaker")]
mod breaker_check {
    use async_trait::async_trait;
    use palisade_breaker::{CircuitBreaker, State};

    use crate::check::{CheckResult, HealthCheck};

    /// Reports a circuit breaker's state. An open circuit means a *dependency* is out, not that
    /// this process is sick: it is degraded (ready, alive, never restarted), never unhealthy.
    ///
    /// | state | result |
    /// |---|---|
    /// | open, forced open | degraded `"circuit 'x' is open: dependency outage; retry in 850 ms"` |
    /// | half-open | degraded `"circuit 'x' is half-open: recovering"` |
    /// | closed, disabled, metrics only | healthy |
    ///
    /// ```
    /// use palisade_breaker::CircuitBreaker;
    /// use palisade_health::{HealthCheck, Status, checks::BreakerCheck};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let breaker = CircuitBreaker::builder("payments").build().unwrap();
    /// let check = BreakerCheck::new(breaker.clone());
    /// breaker.force_open();
    /// assert_eq!(check.check().await.status, Status::Degraded);
    /// # });
    /// ```
    #[derive(Debug, Clone)]
    pub struct BreakerCheck {
        breaker: CircuitBreaker,
    }

    impl BreakerCheck {
        /// A check of `breaker` (a clone: it shares the breaker's state).
        pub fn new(breaker: CircuitBreaker) -> Self {
            BreakerCheck { breaker }
        }

        /// The breaker checked.
        pub fn breaker(&self) -> &CircuitBreaker {
            &self.breaker
        }
    }

    #[async_trait]
    impl HealthCheck for BreakerCheck {
        async fn check(&self) -> CheckResult {
            let name = self.breaker.name();
            match self.breaker.state() {
                State::Open => {
                    let retry = match self.breaker.retry_after() {
                        Some(d) => format!("retry in {} ms", d.as_millis()),
                        // The wait elapsed between the two reads: trials are admitted now.
                        None => "retrying now".to_owned(),
                    };
                    CheckResult::degraded(format!(
                        "circuit '{name}' is open: dependency outage; {retry}"
                    ))
                }
                State::ForcedOpen => CheckResult::degraded(format!(
                    "circuit '{name}' is open: dependency outage; forced open by an operator until reset"
                )),
                State::HalfOpen => {
                    CheckResult::degraded(format!("circuit '{name}' is half-open: recovering"))
                }
                state @ (State::Closed | State::Disabled | State::MetricsOnly) => {
                    CheckResult::healthy(format!("circuit '{name}' is {state}"))
                }
            }
        }
    }
}
