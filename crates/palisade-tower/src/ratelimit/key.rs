//! Which bucket a request is counted in: key extractors.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// The environment variable [`ClientIp::from_env`] reads for the IPv6 prefix length.
pub const CLIENT_IPV6_PREFIX: &str = "CLIENT_IPV6_PREFIX";
/// The environment variable [`ClientIp::from_env`] reads for the IPv4 prefix length.
pub const CLIENT_IPV4_PREFIX: &str = "CLIENT_IPV4_PREFIX";
/// The default IPv6 prefix length of a client's key: one bucket per /64, the block one
/// subscriber (a home, a VM, a container host) is usually given and can rotate addresses in.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;
/// The default IPv4 prefix length of a client's key: one bucket per address.
pub const DEFAULT_IPV4_PREFIX: u8 = 32;

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
/// **Keys are networks, not addresses, for IPv6.** One subscriber usually holds a whole /64
/// and can pick a new address in it for every request, so an IPv6 client is keyed by its /64
/// (`2001:db8:1:2::/64`) by default; an IPv4 client by its address (`203.0.113.9`). Both
/// lengths are settable ([`ClientIp::with_ipv6_prefix`], [`ClientIp::with_ipv4_prefix`], or
/// `CLIENT_IPV6_PREFIX` / `CLIENT_IPV4_PREFIX` for [`ClientIp::from_env`]); at full length
/// (128, 32) the key is the bare address. IPv4-mapped IPv6 addresses (`::ffff:203.0.113.9`)
/// are IPv4 addresses. Only the key is shortened: [`ClientIp::client_ip`] and
/// [`ClientIp::resolve`] return the full address (for logs), [`ClientIp::key_of`] and
/// [`ClientIp::resolve_key`] the key.
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
/// // An IPv6 client is keyed by its /64: rotating addresses in it does not escape the limit.
/// let v6 = request("[2001:db8:1:2:a::1]:6000", "");
/// assert_eq!(client_ip.extract(&v6)?.as_ref(), "2001:db8:1:2::/64");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIp {
    trusted: TrustedProxies,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
}

impl Default for ClientIp {
    /// No trusted proxy; IPv6 clients keyed by /64, IPv4 clients by address.
    fn default() -> Self {
        ClientIp {
            trusted: TrustedProxies::none(),
            ipv4_prefix: DEFAULT_IPV4_PREFIX,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }
}

impl ClientIp {
    /// Keys by client IP, believing `X-Forwarded-For` from `trusted` peers only. IPv6 clients
    /// are keyed by their /64, IPv4 clients by their address.
    pub fn new(trusted: TrustedProxies) -> Self {
        ClientIp {
            trusted,
            ..Self::default()
        }
    }

    /// Keys by the peer address alone: no proxy is trusted.
    pub fn peer_only() -> Self {
        Self::default()
    }

    /// The same, with IPv6 clients keyed by their first `prefix` bits (1 to 128; default 64,
    /// 128 keys each address apart). The error's field is `ipv6_prefix`.
    ///
    /// ```
    /// use palisade_tower::ratelimit::ClientIp;
    ///
    /// let per_48 = ClientIp::peer_only().with_ipv6_prefix(48)?;
    /// assert_eq!(per_48.key_of("2001:db8:1:2::7".parse()?).as_ref(), "2001:db8:1::/48");
    /// assert_eq!(ClientIp::peer_only().with_ipv6_prefix(0).unwrap_err().field, "ipv6_prefix");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_ipv6_prefix(mut self, prefix: u8) -> Result<Self, ConfigError> {
        self.ipv6_prefix = check_prefix("ipv6_prefix", prefix, 128)?;
        Ok(self)
    }

    /// The same, with IPv4 clients keyed by their first `prefix` bits (1 to 32; default 32:
    /// each address apart). The error's field is `ipv4_prefix`.
    pub fn with_ipv4_prefix(mut self, prefix: u8) -> Result<Self, ConfigError> {
        self.ipv4_prefix = check_prefix("ipv4_prefix", prefix, 32)?;
        Ok(self)
    }

    /// From the process environment: the trusted proxies of `TRUSTED_PROXIES` (none when
    /// unset), and the prefix lengths of `CLIENT_IPV6_PREFIX` (default 64) and
    /// `CLIENT_IPV4_PREFIX` (default 32). See [`ClientIp::from_env_with`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_with(&Env::process())
    }

    /// From `TRUSTED_PROXIES`, `CLIENT_IPV6_PREFIX` and `CLIENT_IPV4_PREFIX` in `env` (a
    /// prefix length is a number, optionally written `/64`); errors name the variable.
    ///
    /// ```
    /// use palisade_core::Env;
    /// use palisade_tower::ratelimit::ClientIp;
    ///
    /// let env = Env::from_fn(|k| match k {
    ///     "TRUSTED_PROXIES" => Some("10.0.0.0/8".into()),
    ///     "CLIENT_IPV6_PREFIX" => Some("56".into()),
    ///     _ => None,
    /// });
    /// let client_ip = ClientIp::from_env_with(&env)?;
    /// assert_eq!((client_ip.ipv6_prefix(), client_ip.ipv4_prefix()), (56, 32));
    ///
    /// let bad = Env::from_fn(|k| (k == "CLIENT_IPV6_PREFIX").then(|| "129".to_string()));
    /// assert_eq!(ClientIp::from_env_with(&bad).unwrap_err().field, "CLIENT_IPV6_PREFIX");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_env_with<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let mut client_ip = Self::new(TrustedProxies::from_env_with(env)?);
        if let Some(prefix) = env_prefix(env, CLIENT_IPV6_PREFIX, 128)? {
            client_ip.ipv6_prefix = prefix;
        }
        if let Some(prefix) = env_prefix(env, CLIENT_IPV4_PREFIX, 32)? {
            client_ip.ipv4_prefix = prefix;
        }
        Ok(client_ip)
    }

    /// The trusted proxies.
    pub fn trusted(&self) -> &TrustedProxies {
        &self.trusted
    }

    /// The prefix length IPv6 clients are keyed by.
    pub fn ipv6_prefix(&self) -> u8 {
        self.ipv6_prefix
    }

    /// The prefix length IPv4 clients are keyed by.
    pub fn ipv4_prefix(&self) -> u8 {
        self.ipv4_prefix
    }

    /// The rate-limit key of a client address: its network at the configured prefix length
    /// (`2001:db8:1:2::/64`), or the bare address at full length (`203.0.113.9`).
    /// IPv4-mapped IPv6 addresses are keyed as the IPv4 address they carry.
    #[inline]
    pub fn key_of(&self, ip: IpAddr) -> IpKey {
        let ip = ip.to_canonical();
        let prefix = match ip {
            IpAddr::V4(_) => self.ipv4_prefix,
            IpAddr::V6(_) => self.ipv6_prefix,
        };
        IpKey::network(ip, prefix)
    }

    /// The rate-limit key of a request's client, given the peer's address and the request
    /// headers: [`ClientIp::key_of`] the address [`ClientIp::resolve`] finds.
    #[inline]
    pub fn resolve_key(&self, peer: IpAddr, headers: &HeaderMap) -> IpKey {
        self.key_of(self.resolve(peer, headers))
    }

    /// The client address of a request, if its peer address is known: the full address (the
    /// key may be its network; see [`ClientIp::key_of`]).
    pub fn client_ip<B>(&self, req: &http::Request<B>) -> Option<IpAddr> {
        let peer = peer_addr(req.extensions())?;
        Some(self.resolve(peer.ip(), req.headers()))
    }

    /// The client address given the peer's and the request headers: the full address, as logs
    /// want it (the rate-limit key is [`ClientIp::resolve_key`]).
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
            Some(ip) => Ok(self.key_of(ip)),
            None => Err(MissingKey::misconfigured(
                "the peer address is unknown: serve with \
                 `into_make_service_with_connect_info::<SocketAddr>()` or insert a `PeerAddr` \
                 extension",
            )),
        }
    }
}

/// `prefix` if it is a prefix length from 1 to `max`; an error naming `field` otherwise.
fn check_prefix(field: &str, prefix: u8, max: u8) -> Result<u8, ConfigError> {
    if (1..=max).contains(&prefix) {
        Ok(prefix)
    } else {
        Err(ConfigError::new(
            field,
            prefix_reason(&prefix.to_string(), max),
        ))
    }
}

fn prefix_reason(value: &str, max: u8) -> String {
    format!(
        "'{value}' is not a prefix length; expected a number from 1 to {max} (clients whose \
         addresses share that many leading bits share one rate-limit bucket; {max} keys each \
         address apart)"
    )
}

/// The prefix length in `var` (`64` or `/64`), if set; an error naming `var` otherwise.
fn env_prefix<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    var: &str,
    max: u8,
) -> Result<Option<u8>, ConfigError> {
    let Some(raw) = env.get(var) else {
        return Ok(None);
    };
    let value = raw.trim();
    match value.strip_prefix('/').unwrap_or(value).parse::<u8>() {
        Ok(prefix) if (1..=max).contains(&prefix) => Ok(Some(prefix)),
        _ => Err(ConfigError::new(var, prefix_reason(value, max))),
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

/// Longest text form of a key: an address
/// (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`) and a prefix length (`/127`).
const MAX_KEY_LEN: usize = 45 + 4;

/// An IP address or network as a rate-limit key, formatted on the stack (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IpKey {
    buf: [u8; MAX_KEY_LEN],
    len: u8,
}

impl IpKey {
    /// The key of `ip`: the address itself.
    #[inline]
    pub fn new(ip: IpAddr) -> Self {
        Self::format(format_args!("{ip}"))
    }

    /// The key of the network of `ip`'s first `prefix` bits: `network/prefix`
    /// (`2001:db8:1:2::/64`), or the bare address when `prefix` is the full length (or more).
    /// A prefix of 0 is every address of the family (`::/0`).
    #[inline]
    pub fn network(ip: IpAddr, prefix: u8) -> Self {
        match ip {
            IpAddr::V4(a) if prefix < 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                let net = Ipv4Addr::from(u32::from(a) & mask);
                Self::format(format_args!("{net}/{prefix}"))
            }
            IpAddr::V6(a) if prefix < 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                let net = Ipv6Addr::from(u128::from(a) & mask);
                Self::format(format_args!("{net}/{prefix}"))
            }
            _ => Self::new(ip),
        }
    }

    #[inline]
    fn format(args: fmt::Arguments<'_>) -> Self {
        let mut buf = [0u8; MAX_KEY_LEN];
        let rest = {
            let mut w: &mut [u8] = &mut buf;
            // Cannot fail: every address and prefix fits.
            let _ = w.write_fmt(args);
            w.len()
        };
        IpKey {
            buf,
            len: u8::try_from(MAX_KEY_LEN - rest).unwrap_or(0),
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
    fn network_keys_clear_the_host_bits() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let key = |s: &str, p: u8| IpKey::network(ip(s), p).as_ref().to_owned();
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 64), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 48), "2001:db8:1::/48");
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 127), "2001:db8:1:2:3:4:5:6/127");
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 128), "2001:db8:1:2:3:4:5:6");
        assert_eq!(key("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0), "::/0");
        assert_eq!(key("203.0.113.9", 24), "203.0.113.0/24");
        assert_eq!(key("203.0.113.9", 32), "203.0.113.9");
        assert_eq!(key("203.0.113.9", 0), "0.0.0.0/0");
        let longest = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe";
        assert_eq!(key(longest, 127), format!("{longest}/127"));
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
