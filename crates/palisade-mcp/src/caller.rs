//! Who made a tool call: the address and the key its rate limits are counted under.

use std::net::{IpAddr, Ipv6Addr};

use rmcp::RoleServer;
use rmcp::service::RequestContext;

/// IPv6 clients are keyed by their /64 network: one host usually holds a whole /64, so keying
/// by address would let it take 2^64 quotas.
pub const IPV6_PREFIX: u8 = 64;

/// Who made a call.
///
/// [`Guarded`](crate::Guarded) finds it with [`Caller::from_context`] unless told otherwise
/// ([`Guarded::caller`](crate::Guarded::caller)); request parsing beyond that (trusted proxies
/// and `X-Forwarded-For`, bearer tokens) is the application's: its middleware puts a
/// [`Caller`] or an [`Identity`] into the HTTP request's extensions.
///
/// ```
/// use palisade_mcp::Caller;
///
/// let anonymous = Caller::from_ip("2001:db8:1:2:3:4:5:6".parse().unwrap());
/// assert_eq!(anonymous.address, "2001:db8:1:2:3:4:5:6");
/// assert_eq!(anonymous.ip_key, "2001:db8:1:2::/64");
/// assert_eq!(anonymous.key, anonymous.ip_key);
///
/// let alice = Caller::from_ip("203.0.113.9".parse().unwrap()).with_identity("sub:alice");
/// assert_eq!((alice.ip_key.as_str(), alice.key.as_str()), ("203.0.113.9", "sub:alice"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The client's address (kept in dead-letter entries), or `unknown`.
    pub address: String,
    /// Its address's rate-limit key (IPv6: its /64 network), whatever its identity.
    pub ip_key: String,
    /// Its rate-limit key: its authenticated identity (`sub:<subject>` of its bearer token, an
    /// API key's name) when it has one, so clients behind one address have their own quotas
    /// and one client across addresses shares one; else [`ip_key`](Self::ip_key).
    pub key: String,
}

/// An authenticated client identity, as the key its rate limits are counted under
/// (`sub:alice`). Authentication middleware inserts it into the HTTP request's extensions;
/// [`Caller::from_context`] reads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity(pub String);

impl Caller {
    /// A caller whose keys are `address` as given.
    pub fn new(address: impl Into<String>) -> Caller {
        let address = address.into();
        Caller {
            key: address.clone(),
            ip_key: address.clone(),
            address,
        }
    }

    /// The caller of a request whose address nobody knows (no HTTP request, no peer address):
    /// every such caller shares one rate-limit bucket, `unknown`.
    pub fn unknown() -> Caller {
        Caller::new("unknown")
    }

    /// A caller at `ip`, keyed by its address, or for IPv6 its /64 network ([`IPV6_PREFIX`]).
    /// IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
    pub fn from_ip(ip: IpAddr) -> Caller {
        let ip = ip.to_canonical();
        let ip_key = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let mask = u128::MAX << (128 - u32::from(IPV6_PREFIX));
                format!("{}/{IPV6_PREFIX}", Ipv6Addr::from(u128::from(v6) & mask))
            }
        };
        Caller {
            address: ip.to_string(),
            key: ip_key.clone(),
            ip_key,
        }
    }

    /// The same caller, with rate limits counted under `identity` (`sub:alice`) instead of its
    /// address.
    pub fn with_identity(mut self, identity: impl Into<String>) -> Caller {
        self.key = identity.into();
        self
    }

    /// The caller of an HTTP request: a [`Caller`] in its extensions when middleware put one
    /// there; else its peer address (axum's `ConnectInfo<SocketAddr>`, with the `axum`
    /// feature) with the [`Identity`] in its extensions, if any; else [`Caller::unknown`].
    pub fn from_http(parts: &http::request::Parts) -> Caller {
        let ext = &parts.extensions;
        if let Some(caller) = ext.get::<Caller>() {
            return caller.clone();
        }
        let caller = match peer_ip(ext) {
            Some(ip) => Caller::from_ip(ip),
            None => Caller::unknown(),
        };
        match ext.get::<Identity>() {
            Some(Identity(id)) => caller.with_identity(id.clone()),
            None => caller,
        }
    }

    /// The caller of an rmcp request: a [`Caller`] in the request context's extensions, else
    /// [`Caller::from_http`] of the HTTP request rmcp's streamable HTTP server put there, else
    /// [`Caller::unknown`] (stdio and other transports).
    pub fn from_context(context: &RequestContext<RoleServer>) -> Caller {
        if let Some(caller) = context.extensions.get::<Caller>() {
            return caller.clone();
        }
        match context.extensions.get::<http::request::Parts>() {
            Some(parts) => Caller::from_http(parts),
            None => Caller::unknown(),
        }
    }
}

#[cfg(feature = "axum")]
fn peer_ip(ext: &http::Extensions) -> Option<IpAddr> {
    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|axum::extract::ConnectInfo(addr)| addr.ip())
}

#[cfg(not(feature = "axum"))]
fn peer_ip(_ext: &http::Extensions) -> Option<IpAddr> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> http::request::Parts {
        http::Request::new(()).into_parts().0
    }

    #[test]
    fn addresses_and_networks() {
        let c = Caller::from_ip("::ffff:203.0.113.9".parse().unwrap());
        assert_eq!(
            (c.address.as_str(), c.ip_key.as_str()),
            ("203.0.113.9", "203.0.113.9")
        );
        let c = Caller::from_ip("::1".parse().unwrap());
        assert_eq!(c.ip_key, "::/64");
        assert_eq!(Caller::new("x"), Caller::new("x".to_owned()));
        assert_eq!(Caller::unknown().key, "unknown");
    }

    #[test]
    fn http_requests_give_the_callers_their_middleware_chose() {
        assert_eq!(Caller::from_http(&parts()), Caller::unknown());

        let mut p = parts();
        p.extensions.insert(Identity("sub:bob".into()));
        let c = Caller::from_http(&p);
        assert_eq!((c.address.as_str(), c.key.as_str()), ("unknown", "sub:bob"));

        let mut p = parts();
        p.extensions
            .insert(Caller::new("10.1.2.3").with_identity("key:ci"));
        p.extensions.insert(Identity("ignored".into()));
        assert_eq!(Caller::from_http(&p).key, "key:ci");
    }

    #[cfg(feature = "axum")]
    #[test]
    fn the_peer_address_comes_from_connect_info() {
        let mut p = parts();
        p.extensions
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                [192, 0, 2, 7],
                4711,
            ))));
        p.extensions.insert(Identity("sub:alice".into()));
        let c = Caller::from_http(&p);
        assert_eq!(c.address, "192.0.2.7");
        assert_eq!(c.ip_key, "192.0.2.7");
        assert_eq!(c.key, "sub:alice");
    }
}
