//! Which bucket a request is counted in: key extractors.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, HeaderName};
use palisade_core::{ConfigError, Env};

use super::proxies::TrustedProxies;

/// Picks the rate-limit key of a request (a client IP, a tenant, a tool name).
///
/// Any `Fn(&Req) -> Option<K>` with `K: AsRef<str>` is one; `None` refuses the request with
/// [`MissingKey`] (a client error). [`ClientIp`] and [`GlobalKey`] are the built-in ones.
///
/// ```
/// use http::Request;
/// use palisade_tower::ratelimit::KeyExtractor;
///
/// let tenant = |req: &Request<()>| {
///     req.headers().get("x-tenant").and_then(|v| v.to_str().ok()).map(str::to_owned)
/// };
/// let req = Request::builder().header("x-tenant", "acme").body(()).unwrap();
/// assert_eq!(tenant.extract(&req).unwrap(), "acme");
/// assert!(tenant.extract(&Request::new(())).is_err());
/// ```
pub trait KeyExtractor<Req> {
    /// The key; borrowed as `&str` for the limiter's lookup.
    type Key: AsRef<str>;

    /// The key of `req`, or why there is none.
    fn extract(&self, req: &Req) -> Result<Self::Key, MissingKey>;
}

impl<F, Req, K> KeyExtractor<Req> for F
where
    F: Fn(&Req) -> Option<K>,
    K: AsRef<str>,
{
    type Key = K;

    #[inline]
    fn extract(&self, req: &Req) -> Result<K, MissingKey> {
        self(req).ok_or_else(|| MissingKey::in_request("the request carries no rate-limit key"))
    }
}

/// A request for which no rate-limit key could be found; it is refused rather than let through
/// unlimited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no rate-limit key for this request: {reason}")]
pub struct MissingKey {
    reason: Cow<'static, str>,
    server_fault: bool,
}

impl MissingKey {
    /// The request lacks what the key is made of (a client error, HTTP 400).
    pub fn in_request(reason: impl Into<Cow<'static, str>>) -> Self {
        MissingKey {
            reason: reason.into(),
            server_fault: false,
        }
    }

    /// The server is not set up to provide the key, such as a peer address (HTTP 500).
    pub fn misconfigured(reason: impl Into<Cow<'static, str>>) -> Self {
        MissingKey {
            reason: reason.into(),
            server_fault: true,
        }
    }

    /// Why there is no key.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether the server (not the request) is at fault.
    pub fn is_server_fault(&self) -> bool {
        self.server_fault
    }
}

/// One bucket for every request: the key is `"global"`.
///
/// ```
/// use palisade_tower::ratelimit::{GlobalKey, KeyExtractor};
/// assert_eq!(GlobalKey.extract(&()).unwrap(), "global");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GlobalKey;

impl<Req> KeyExtractor<Req> for GlobalKey {
    type Key = &'static str;

    #[inline]
    fn extract(&self, _req: &Req) -> Result<&'static str, MissingKey> {
        Ok("global")
    }
}

/// The address of the connection's peer, as a request extension.
///
/// Servers that do not use axum's `ConnectInfo` insert it themselves (a hyper `service_fn`
/// that knows the accepted socket's address, a test). [`ClientIp`] reads it first, then
/// (feature `axum`) `axum::extract::ConnectInfo<SocketAddr>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Keys requests by client IP address, without letting clients choose it.
///
/// The client is the connection's peer ([`PeerAddr`], or axum's `ConnectInfo<SocketAddr>`
/// with feature `axum`), unless the peer is one of the [`TrustedProxies`]. Only then is
/// `X-Forwarded-For` read, from the right (the entry the trusted proxy appended) to the left,
/// skipping trusted hops: the first address that is not a trusted proxy is the client. A
/// client that sends its own `X-Forwarded-For` only adds entries to the *left* of the one its
/// proxy appends, so it cannot pick another client's bucket; a client that connects directly
/// is keyed by its peer address whatever it sends.
///
/// If every entry is a trusted proxy, the left-most is the client; if an entry is not an
/// address (`unknown`, garbage), the walk stops there and the last trusted hop is used
/// (conservative: a proxy's clients then share its bucket). Entries may carry a port
/// (`203.0.113.9:4711`, `[2001:db8::1]:443`).
///
/// A request without a peer address is refused with [`MissingKey`] (a server error: serve the
/// router with `into_make_service_with_connect_info::<SocketAddr>()`, or insert
/// [`PeerAddr`]).
///
/// ```
/// use std::net::SocketAddr;
/// use http::Request;
/// use palisade_tower::ratelimit::{ClientIp, KeyExtractor, PeerAddr, TrustedProxies};
///
/// let client_ip = ClientIp::new(TrustedProxies::parse("10.0.0.0/8")?);
/// let request = |peer: &str, xff: &str| {
///     let mut req = Request::builder().header("x-forwarded-for", xff).body(()).unwrap();
///     req.extensions_mut().insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
///     req
/// };
/// // Through the trusted load balancer: the right-most untrusted address.
/// let via_proxy = request("10.0.0.2:5000", "198.51.100.1, 203.0.113.9, 10.0.0.3");
/// assert_eq!(client_ip.extract(&via_proxy)?.as_ref(), "203.0.113.9");
/// // Directly, with a forged header: its own address.
/// let forged = request("203.0.113.9:6000", "198.51.100.1");
/// assert_eq!(client_ip.extract(&forged)?.as_ref(), "203.0.113.9");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIp {
    trusted: TrustedProxies,
}

impl ClientIp {
    /// Keys by client IP, believing `X-Forwarded-For` from `trusted` peers only.
    pub fn new(trusted: TrustedProxies) -> Self {
        ClientIp { trusted }
    }

    /// Keys by the peer address alone: no proxy is trusted.
    pub fn peer_only() -> Self {
        Self::default()
    }

    /// With the trusted proxies of the `TRUSTED_PROXIES` environment variable (none when unset).
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self::new(TrustedProxies::from_env()?))
    }

    /// With the trusted proxies of `TRUSTED_PROXIES` in `env`.
    pub fn from_env_with<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(Self::new(TrustedProxies::from_env_with(env)?))
    }

    /// The trusted proxies.
    pub fn trusted(&self) -> &TrustedProxies {
        &self.trusted
    }

    /// The client address of a request, if its peer address is known.
    pub fn client_ip<B>(&self, req: &http::Request<B>) -> Option<IpAddr> {
        let peer = peer_addr(req.extensions())?;
        Some(self.resolve(peer.ip(), req.headers()))
    }

    /// The client address given the peer's and the request headers.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.trusted.is_empty() || !self.trusted.contains(peer) {
            return peer;
        }
        let mut client = peer;
        // Several header lines are one list, in order: walk the lines and their entries from
        // the right.
        for line in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
            let Ok(line) = line.to_str() else {
                return client;
            };
            for entry in line.rsplit(',') {
                let entry = entry.trim();
                if entry.is_empty() {
                    continue;
                }
                let Some(ip) = parse_forwarded(entry) else {
                    return client;
                };
                if !self.trusted.contains(ip) {
                    return ip;
                }
                client = ip;
            }
        }
        client
    }
}

impl<B> KeyExtractor<http::Request<B>> for ClientIp {
    type Key = IpKey;

    #[inline]
    fn extract(&self, req: &http::Request<B>) -> Result<IpKey, MissingKey> {
        match self.client_ip(req) {
            Some(ip) => Ok(IpKey::new(ip)),
            None => Err(MissingKey::misconfigured(
                "the peer address is unknown: serve with \
                 `into_make_service_with_connect_info::<SocketAddr>()` or insert a `PeerAddr` \
                 extension",
            )),
        }
    }
}

/// The peer address from [`PeerAddr`] or, with feature `axum`, `ConnectInfo<SocketAddr>`.
fn peer_addr(ext: &http::Extensions) -> Option<SocketAddr> {
    if let Some(PeerAddr(addr)) = ext.get::<PeerAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(*addr);
    }
    None
}

/// An `X-Forwarded-For` entry: an address, possibly with a port, IPv6 possibly in brackets.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sock) = entry.parse::<SocketAddr>() {
        return Some(sock.ip().to_canonical());
    }
    let bracketed = entry.strip_prefix('[')?.strip_suffix(']')?;
    bracketed.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// Longest text form of an IP address (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
const MAX_IP_LEN: usize = 45;

/// An IP address as a rate-limit key, formatted on the stack (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IpKey {
    buf: [u8; MAX_IP_LEN],
    len: u8,
}

impl IpKey {
    /// The key of `ip`.
    #[inline]
    pub fn new(ip: IpAddr) -> Self {
        let mut buf = [0u8; MAX_IP_LEN];
        let rest = {
            let mut w: &mut [u8] = &mut buf;
            // Cannot fail: every address fits.
            let _ = write!(w, "{ip}");
            w.len()
        };
        IpKey {
            buf,
            len: u8::try_from(MAX_IP_LEN - rest).unwrap_or(0),
        }
    }
}

impl AsRef<str> for IpKey {
    #[inline]
    fn as_ref(&self) -> &str {
        // Always ASCII.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Display for IpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_ref())
    }
}

impl fmt::Debug for IpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpKey({})", self.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_keys_format_every_address() {
        for s in [
            "1.2.3.4",
            "255.255.255.255",
            "::1",
            "2001:db8::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(IpKey::new(ip).as_ref(), ip.to_string());
        }
        let longest: IpAddr = "::ffff:255.255.255.255".parse().unwrap();
        assert_eq!(IpKey::new(longest).as_ref(), longest.to_string());
    }

    #[test]
    fn forwarded_entries_may_carry_ports_and_brackets() {
        let v4: IpAddr = "203.0.113.9".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(parse_forwarded("203.0.113.9"), Some(v4));
        assert_eq!(parse_forwarded("203.0.113.9:4711"), Some(v4));
        assert_eq!(parse_forwarded("[2001:db8::1]:443"), Some(v6));
        assert_eq!(parse_forwarded("[2001:db8::1]"), Some(v6));
        assert_eq!(parse_forwarded("::ffff:203.0.113.9"), Some(v4));
        assert_eq!(parse_forwarded("unknown"), None);
        assert_eq!(parse_forwarded("_hidden"), None);
    }
}
