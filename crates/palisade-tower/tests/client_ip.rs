//! `ClientIp` cannot be spoofed: `X-Forwarded-For` is read only from trusted proxies, from the
//! right, skipping trusted hops; a client connecting directly is limited by its peer address
//! whatever it sends.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{Req, upstream};
use palisade_core::Env;
use palisade_ratelimit::{KeyedRateLimiter, Quota, RateLimited};
use palisade_tower::RateLimitLayer;
use palisade_tower::ratelimit::{ClientIp, MissingKey, PeerAddr, TrustedProxies};
use tower::{BoxError, Layer, ServiceExt};

/// `TRUSTED_PROXIES=10.0.0.0/8, 192.168.1.7` through an injected environment.
fn client_ip() -> ClientIp {
    let env = Env::from_fn(|k| (k == "TRUSTED_PROXIES").then(|| "10.0.0.0/8, 192.168.1.7".into()));
    ClientIp::from_env_with(&env).unwrap()
}

fn request(peer: &str, xff: &[&str]) -> Req {
    let mut builder = http::Request::builder();
    for line in xff {
        builder = builder.header("x-forwarded-for", *line);
    }
    let mut req = builder.body(String::new()).unwrap();
    req.extensions_mut()
        .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
    req
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One request per client per minute, keyed by `ClientIp`.
fn limited_service()
-> impl tower::Service<Req, Response = http::Response<String>, Error = BoxError, Future: Send> + Clone
{
    let limiter = KeyedRateLimiter::<String>::builder("per-client")
        .quota(Quota::per_minute(1))
        .build()
        .unwrap();
    RateLimitLayer::new(limiter, client_ip()).layer(upstream(|_| 200))
}

async fn admitted<S>(svc: &S, req: Req) -> bool
where
    S: tower::Service<Req, Error = BoxError> + Clone,
{
    match svc.clone().oneshot(req).await {
        Ok(_) => true,
        Err(e) if e.is::<RateLimited>() => false,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn a_direct_client_cannot_escape_its_bucket_with_forwarded_for() {
    let svc = limited_service();
    assert!(admitted(&svc, request("203.0.113.9:5000", &["198.51.100.1"])).await);
    // Same peer, another forged address: still its own (spent) bucket.
    assert!(!admitted(&svc, request("203.0.113.9:5001", &["198.51.100.2"])).await);
    assert!(!admitted(&svc, request("203.0.113.9:5002", &[])).await);
    // And it did not spend the forged address's bucket.
    assert!(admitted(&svc, request("10.0.0.2:443", &["198.51.100.1"])).await);
}

#[tokio::test]
async fn through_a_trusted_proxy_the_right_most_untrusted_address_is_the_client() {
    let c = client_ip();
    // The client sent a forged entry; its proxy chain appended its real address, then the
    // inner proxy's.
    let req = request("10.0.0.2:443", &["198.51.100.1, 203.0.113.50, 10.0.0.3"]);
    assert_eq!(c.client_ip(&req), Some(ip("203.0.113.50")));

    let svc = limited_service();
    assert!(admitted(&svc, req).await);
    // The same client through another trusted proxy shares the bucket...
    assert!(!admitted(&svc, request("192.168.1.7:443", &["203.0.113.50"])).await);
    // ...and the forged address kept its own.
    assert!(admitted(&svc, request("10.0.0.9:443", &["198.51.100.1"])).await);
}

#[tokio::test]
async fn several_header_lines_are_one_list() {
    let c = client_ip();
    let req = request(
        "10.0.0.2:443",
        &["198.51.100.1", "203.0.113.50, 10.0.0.3", "10.0.0.4"],
    );
    assert_eq!(c.client_ip(&req), Some(ip("203.0.113.50")));
}

#[tokio::test]
async fn edge_cases_stay_conservative() {
    let c = client_ip();
    // Every hop trusted: the left-most is the client.
    let all_trusted = request("10.0.0.2:443", &["10.1.1.1, 10.0.0.3"]);
    assert_eq!(c.client_ip(&all_trusted), Some(ip("10.1.1.1")));
    // Not an address: stop at the last trusted hop, believe nothing to its left.
    let garbage = request("10.0.0.2:443", &["203.0.113.50, unknown, 10.0.0.3"]);
    assert_eq!(c.client_ip(&garbage), Some(ip("10.0.0.3")));
    // Trusted peer, no header: the peer.
    assert_eq!(
        c.client_ip(&request("10.0.0.2:443", &[])),
        Some(ip("10.0.0.2"))
    );
    // Ports and brackets in entries.
    let ported = request("10.0.0.2:443", &["[2001:db8::7]:51000, 203.0.113.50:4711"]);
    assert_eq!(c.client_ip(&ported), Some(ip("203.0.113.50")));
    // An IPv4-mapped IPv6 peer (a dual-stack listener) is the IPv4 proxy.
    let mapped = request("[::ffff:10.0.0.2]:443", &["203.0.113.50"]);
    assert_eq!(c.client_ip(&mapped), Some(ip("203.0.113.50")));
    // ... and a mapped client address is keyed as IPv4.
    let mapped_client = request("[::ffff:203.0.113.50]:443", &["198.51.100.1"]);
    assert_eq!(c.client_ip(&mapped_client), Some(ip("203.0.113.50")));
    // No trusted proxies at all: always the peer.
    let peer_only = ClientIp::peer_only();
    let req = request("10.0.0.2:443", &["203.0.113.50"]);
    assert_eq!(peer_only.client_ip(&req), Some(ip("10.0.0.2")));
}

#[tokio::test]
async fn no_peer_address_is_a_server_error_not_a_free_pass() {
    let svc = limited_service();
    let err = svc
        .clone()
        .oneshot(http::Request::new(String::new()))
        .await
        .unwrap_err();
    let missing = err.downcast_ref::<MissingKey>().unwrap();
    assert!(missing.is_server_fault());
    assert!(
        missing
            .reason()
            .contains("into_make_service_with_connect_info")
    );
}

#[test]
fn bad_trusted_proxies_name_the_variable_and_the_entry() {
    let env = Env::from_fn(|k| (k == "TRUSTED_PROXIES").then(|| "10.0.0.0/8, 10.0.0.300".into()));
    let err = ClientIp::from_env_with(&env).unwrap_err();
    assert_eq!(err.field, "TRUSTED_PROXIES");
    assert_eq!(
        err.reason,
        "entry 2 of 2: '10.0.0.300' is not an IP address or CIDR range (expected e.g. 10.0.0.7, \
         10.0.0.0/8 or fd00::/8)"
    );
    let unset = Env::from_fn(|_| None);
    assert!(TrustedProxies::from_env_with(&unset).unwrap().is_empty());
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn the_peer_from_axum_connect_info() {
    use axum::extract::ConnectInfo;
    let c = client_ip();
    let mut req = http::Request::builder()
        .header("x-forwarded-for", "203.0.113.50")
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo("10.0.0.2:443".parse::<SocketAddr>().unwrap()));
    assert_eq!(c.client_ip(&req), Some(ip("203.0.113.50")));
    req.extensions_mut().insert(ConnectInfo(
        "203.0.113.9:443".parse::<SocketAddr>().unwrap(),
    ));
    assert_eq!(c.client_ip(&req), Some(ip("203.0.113.9")));
}

/// One request per client per minute, keyed by `client_ip`.
fn limited_by(
    client_ip: ClientIp,
) -> impl tower::Service<Req, Response = http::Response<String>, Error = BoxError, Future: Send> + Clone
{
    let limiter = KeyedRateLimiter::<String>::builder("per-client-net")
        .quota(Quota::per_minute(1))
        .build()
        .unwrap();
    RateLimitLayer::new(limiter, client_ip).layer(upstream(|_| 200))
}

fn key(c: &ClientIp, peer: &str, xff: &[&str]) -> String {
    use palisade_tower::ratelimit::KeyExtractor;
    c.extract(&request(peer, xff)).unwrap().as_ref().to_owned()
}

#[tokio::test]
async fn an_ipv6_client_cannot_rotate_addresses_in_its_slash_64_past_its_limit() {
    let svc = limited_by(client_ip());
    assert!(admitted(&svc, request("[2001:db8:1:2::1]:5000", &[])).await);
    // Another address of the same /64: the same (spent) bucket.
    assert!(
        !admitted(
            &svc,
            request("[2001:db8:1:2:ffff:ffff:ffff:fffe]:5000", &[])
        )
        .await
    );
    assert!(!admitted(&svc, request("[2001:db8:1:2:a:b:c:d]:5001", &[])).await);
    // The next /64 is another client.
    assert!(admitted(&svc, request("[2001:db8:1:3::1]:5000", &[])).await);
    // Through a trusted proxy too: the forwarded address is keyed by its /64.
    assert!(!admitted(&svc, request("10.0.0.2:443", &["2001:db8:1:2::77"])).await);
    assert!(admitted(&svc, request("10.0.0.2:443", &["[2001:db8:9::1]:443"])).await);
}

#[tokio::test]
async fn ipv4_clients_and_ipv4_mapped_addresses_are_keyed_by_address() {
    let c = client_ip();
    assert_eq!(c.ipv6_prefix(), 64);
    assert_eq!(c.ipv4_prefix(), 32);
    assert_eq!(key(&c, "203.0.113.9:1", &[]), "203.0.113.9");
    assert_eq!(
        key(&c, "[2001:db8:1:2:3:4:5:6]:1", &[]),
        "2001:db8:1:2::/64"
    );
    // A mapped address is its IPv4 address, not the /64 every mapped address shares.
    assert_eq!(key(&c, "[::ffff:203.0.113.9]:1", &[]), "203.0.113.9");
    assert_eq!(
        key(&c, "10.0.0.2:443", &["::ffff:203.0.113.10"]),
        "203.0.113.10"
    );

    let svc = limited_by(client_ip());
    assert!(admitted(&svc, request("203.0.113.9:5000", &[])).await);
    assert!(!admitted(&svc, request("[::ffff:203.0.113.9]:5000", &[])).await);
    // Neighbours in IPv4 are other clients.
    assert!(admitted(&svc, request("203.0.113.10:5000", &[])).await);
    assert!(admitted(&svc, request("[::ffff:203.0.113.11]:5000", &[])).await);

    // Only the key is shortened: the client's address stays whole (for logs).
    let req = request("[2001:db8:1:2:3:4:5:6]:1", &[]);
    assert_eq!(c.client_ip(&req), Some(ip("2001:db8:1:2:3:4:5:6")));
    let headers = http::HeaderMap::new();
    let peer = ip("2001:db8:1:2:3:4:5:6");
    assert_eq!(c.resolve(peer, &headers), peer);
    assert_eq!(c.resolve_key(peer, &headers).as_ref(), "2001:db8:1:2::/64");
}

#[test]
fn prefix_lengths_are_set_in_code_or_from_the_environment() {
    let c = ClientIp::peer_only()
        .with_ipv6_prefix(48)
        .unwrap()
        .with_ipv4_prefix(24)
        .unwrap();
    assert_eq!(key(&c, "[2001:db8:1:2::1]:1", &[]), "2001:db8:1::/48");
    assert_eq!(key(&c, "203.0.113.9:1", &[]), "203.0.113.0/24");
    let whole = ClientIp::peer_only().with_ipv6_prefix(128).unwrap();
    assert_eq!(key(&whole, "[2001:db8:1:2::1]:1", &[]), "2001:db8:1:2::1");
    assert_eq!(
        ClientIp::peer_only()
            .with_ipv4_prefix(33)
            .unwrap_err()
            .field,
        "ipv4_prefix"
    );

    let env = Env::from_fn(|k| match k {
        "TRUSTED_PROXIES" => Some("10.0.0.0/8".into()),
        "CLIENT_IPV6_PREFIX" => Some(" /56 ".into()),
        "CLIENT_IPV4_PREFIX" => Some("24".into()),
        _ => None,
    });
    let c = ClientIp::from_env_with(&env).unwrap();
    assert_eq!(
        key(&c, "10.0.0.2:443", &["2001:db8:1:2ff::1"]),
        "2001:db8:1:200::/56"
    );
    assert_eq!(key(&c, "10.0.0.2:443", &["203.0.113.9"]), "203.0.113.0/24");
    // A trusted peer with no header is the client, keyed like any other.
    assert_eq!(key(&c, "10.0.0.2:443", &[]), "10.0.0.0/24");

    let unset = ClientIp::from_env_with(&Env::from_fn(|_| None)).unwrap();
    assert_eq!(unset, ClientIp::peer_only());
    assert_eq!((unset.ipv6_prefix(), unset.ipv4_prefix()), (64, 32));
}

#[test]
fn bad_prefix_lengths_name_the_variable() {
    let err = |var: &'static str, value: &'static str| {
        ClientIp::from_env_with(&Env::from_fn(move |k| (k == var).then(|| value.into())))
            .unwrap_err()
    };
    let e = err("CLIENT_IPV6_PREFIX", "129");
    assert_eq!(e.field, "CLIENT_IPV6_PREFIX");
    assert!(
        e.reason
            .starts_with("'129' is not a prefix length; expected a number from 1 to 128"),
        "{}",
        e.reason
    );
    assert_eq!(err("CLIENT_IPV6_PREFIX", "0").field, "CLIENT_IPV6_PREFIX");
    assert_eq!(
        err("CLIENT_IPV6_PREFIX", "sixty-four").field,
        "CLIENT_IPV6_PREFIX"
    );
    let e = err("CLIENT_IPV4_PREFIX", "33");
    assert_eq!(e.field, "CLIENT_IPV4_PREFIX");
    assert!(e.reason.contains("from 1 to 32"), "{}", e.reason);
    assert_eq!(err("CLIENT_IPV4_PREFIX", "/x").field, "CLIENT_IPV4_PREFIX");
}
