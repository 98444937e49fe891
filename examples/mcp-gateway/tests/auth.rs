//! Bearer JWTs on the MCP endpoint, against a real JWKS server on loopback and keys made by
//! `openssl` for this run: every kind of bad token is a 401 with a challenge, a missing scope
//! a 403, a key rotation is picked up without a restart, and no input makes the check panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::serve::Listener;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use support::{Gateway, SERVER, Upstream, call, error_code, eventually, http_connector, unique};

const ISSUER: &str = "https://issuer.test";
const RESOURCE: &str = "https://tools.test/mcp";

/// An Ed25519 key made by openssl: its PEM (to sign) and its public JWK `x`.
struct Key {
    pem: Vec<u8>,
    x: String,
}

fn key(dir: &Path, name: &str) -> Key {
    let path = dir.join(format!("{name}.pem"));
    let made = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&path)
        .status()
        .expect("openssl on the PATH");
    assert!(made.success());
    let der = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&path)
        .output()
        .unwrap()
        .stdout;
    // The SubjectPublicKeyInfo of an Ed25519 key ends with the 32 raw bytes.
    let x = URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
    Key {
        pem: std::fs::read(&path).unwrap(),
        x,
    }
}

fn jwk(kid: &str, k: &Key) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": k.x, "kid": kid, "alg": "EdDSA", "use": "sig"})
}

/// A JWKS server whose key set the test changes.
async fn jwks_server(keys: Arc<Mutex<Value>>) -> String {
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let keys = keys.clone();
            async move { axum::Json(keys.lock().clone()) }
        }),
    );
    let listener = palisade::admin::bind_nodelay(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/jwks")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(overrides: Value) -> Value {
    let mut c = json!({
        "iss": ISSUER, "aud": RESOURCE, "sub": "agent-7", "scope": "tools read",
        "iat": now(), "exp": now() + 600,
    });
    for (k, v) in overrides.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn sign(kid: &str, k: &Key, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_pem(&k.pem).unwrap()).unwrap()
}

/// An `initialize` with `authorization` (if any): status, `WWW-Authenticate`, body.
async fn initialize(gw: &Gateway, authorization: Option<&str>) -> (u16, String, String) {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "auth-test", "version": "0"}},
    });
    let mut request = reqwest::Client::new()
        .post(&gw.mcp)
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, challenge, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_jwts_are_checked_against_the_issuers_keys() {
    let dir = std::env::temp_dir().join(unique("gateway-auth"));
    std::fs::create_dir_all(&dir).unwrap();
    let (k1, k2, other) = (key(&dir, "k1"), key(&dir, "k2"), key(&dir, "other"));
    let keys = Arc::new(Mutex::new(json!({"keys": [jwk("k1", &k1)]})));
    let jwks = jwks_server(keys.clone()).await;
    let upstream = Upstream::start(&[]).await;
    let config = format!(
        "{SERVER}{}[auth]\nmode = \"jwt\"\nissuer = \"{ISSUER}\"\njwks_url = \"{jwks}\"\nresource = \"{RESOURCE}\"\nrequired_scope = \"tools\"\nleeway = \"5s\"\n",
        http_connector("weather", &upstream.url, "")
    );
    let gw = Gateway::start(&config, &[]).await;

    // A valid token: a real MCP client calls a tool.
    let good = sign("k1", &k1, &claims(json!({})));
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(gw.mcp.clone()).auth_header(good.clone()),
    );
    let client = ().serve(transport).await.expect("handshake with a valid token");
    let r = call(&client, "weather_forecast", json!({"city": "Oslo"})).await;
    assert_eq!(error_code(&r), None, "{r:?}");
    drop(client);

    // Every bad token: 401, with a challenge naming the metadata.
    let header =
        |alg: &str| URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"k1"}}"#));
    let payload = URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());
    let mut hmac = Header::new(Algorithm::HS256);
    hmac.kid = Some("k1".into());
    let public_bytes = URL_SAFE_NO_PAD.decode(&k1.x).unwrap();
    let cases = [
        ("no token", None),
        (
            "expired",
            Some(sign("k1", &k1, &claims(json!({"exp": now() - 3600})))),
        ),
        (
            "not yet valid",
            Some(sign("k1", &k1, &claims(json!({"nbf": now() + 3600})))),
        ),
        (
            "wrong audience",
            Some(sign("k1", &k1, &claims(json!({"aud": "https://else/mcp"})))),
        ),
        (
            "wrong issuer",
            Some(sign("k1", &k1, &claims(json!({"iss": "https://evil"})))),
        ),
        (
            "bad signature",
            Some(sign("k1", &other, &claims(json!({})))),
        ),
        ("unknown kid", Some(sign("k2", &k2, &claims(json!({}))))),
        ("alg none", Some(format!("{}.{payload}.", header("none")))),
        (
            "HMAC with the public key",
            Some(
                jsonwebtoken::encode(
                    &hmac,
                    &claims(json!({})),
                    &EncodingKey::from_secret(&public_bytes),
                )
                .unwrap(),
            ),
        ),
        ("truncated", Some(good[..good.len() - 12].to_owned())),
        ("garbage", Some("not.a.jwt".to_owned())),
    ];
    for (what, token) in &cases {
        let auth = token.as_ref().map(|t| format!("Bearer {t}"));
        let (status, challenge, body) = initialize(&gw, auth.as_deref()).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            challenge.starts_with("Bearer")
                && challenge.contains(
                    "resource_metadata=\"https://tools.test/.well-known/oauth-protected-resource\""
                ),
            "{what}: {challenge}"
        );
        if let Some(t) = token {
            assert!(
                !body.contains(t.as_str()),
                "{what}: the token is not echoed"
            );
        }
    }

    // A valid token without the scope: 403 insufficient_scope.
    let scopeless = sign("k1", &k1, &claims(json!({"scope": "read"})));
    let (status, challenge, body) = initialize(&gw, Some(&format!("Bearer {scopeless}"))).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );

    // The metadata (RFC 9728), without a token.
    let meta: Value = reqwest::get(
        gw.mcp
            .replace("/mcp", "/.well-known/oauth-protected-resource"),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(meta["resource"], RESOURCE);
    assert_eq!(meta["authorization_servers"][0], ISSUER);

    // The issuer rotates to k2: picked up without a restart.
    keys.lock()["keys"]
        .as_array_mut()
        .unwrap()
        .push(jwk("k2", &k2));
    let rotated = format!("Bearer {}", sign("k2", &k2, &claims(json!({}))));
    eventually(
        "a token of the new key is accepted",
        Duration::from_secs(10),
        || async { initialize(&gw, Some(&rotated)).await.0 == 200 },
    )
    .await;
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

mod never_panics {
    use proptest::prelude::*;

    fn verifier() -> mcp_gateway::auth::JwtVerifier {
        mcp_gateway::auth::JwtVerifier::new(mcp_gateway::config::JwtConfig {
            issuer: "https://issuer.test".into(),
            // Nothing listens there: a well-formed token with an unknown key fails to fetch.
            jwks_url: "http://127.0.0.1:9/jwks".into(),
            resource: "https://tools.test/mcp".into(),
            required_scope: None,
            tool_scopes: Default::default(),
            api_keys: Vec::new(),
            leeway: std::time::Duration::from_secs(5),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random bytes and random JWT-shaped strings: always refused, never a panic.
        #[test]
        fn random_input_is_refused(
            raw in proptest::collection::vec(any::<u8>(), 0..200),
            a in "[A-Za-z0-9_-]{0,60}", b in "[A-Za-z0-9_-]{0,120}", c in "[A-Za-z0-9_-]{0,90}",
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let v = verifier();
            let text = String::from_utf8_lossy(&raw).into_owned();
            for token in [text, format!("{a}.{b}.{c}"), format!("eyJhbGciOiJFZERTQSJ9.{b}.{c}")] {
                let result = rt.block_on(v.verify(&token));
                prop_assert!(result.is_err(), "{token:?} accepted");
            }
        }
    }
}

async fn client_as(
    gw: &Gateway,
    token: &str,
    forwarded_for: Option<&str>,
) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    let mut headers = std::collections::HashMap::new();
    if let Some(ip) = forwarded_for {
        headers.insert(
            http::HeaderName::from_static("x-forwarded-for"),
            http::HeaderValue::from_str(ip).unwrap(),
        );
    }
    let config = StreamableHttpClientTransportConfig::with_uri(gw.mcp.clone())
        .auth_header(token.to_owned())
        .custom_headers(headers);
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_follow_the_identity_not_the_address() {
    let dir = std::env::temp_dir().join(unique("gateway-auth-quota"));
    std::fs::create_dir_all(&dir).unwrap();
    let k1 = key(&dir, "k1");
    let jwks = jwks_server(Arc::new(Mutex::new(json!({"keys": [jwk("k1", &k1)]})))).await;
    let upstream = Upstream::start(&[]).await;
    let config = format!(
        "{SERVER}[rate_limit]\nquota = {{ rate = 1, period = \"1h\", burst = 2 }}\n{}[auth]\nmode = \"jwt\"\nissuer = \"{ISSUER}\"\njwks_url = \"{jwks}\"\nresource = \"{RESOURCE}\"\n",
        http_connector("weather", &upstream.url, "")
    );
    let gw = Gateway::start(&config, &[("TRUSTED_PROXIES", "127.0.0.1")]).await;
    let token = |sub: &str| sign("k1", &k1, &claims(json!({"sub": sub})));
    let limited = Some("rate_limited".to_owned());
    async fn code(client: &rmcp::service::RunningService<rmcp::RoleClient, ()>) -> Option<String> {
        error_code(&call(client, "weather_forecast", json!({})).await)
    }
    // Two identities behind one address: a quota each.
    let alice = client_as(&gw, &token("alice"), None).await;
    let bob = client_as(&gw, &token("bob"), None).await;
    assert_eq!(code(&alice).await, None);
    assert_eq!(code(&alice).await, None);
    assert_eq!(code(&alice).await, limited, "alice's burst of 2 is spent");
    assert_eq!(code(&bob).await, None, "bob has his own quota");
    // One identity across two addresses: one quota.
    let alice_elsewhere = client_as(&gw, &token("alice"), Some("203.0.113.9")).await;
    assert_eq!(
        code(&alice_elsewhere).await,
        limited,
        "alice's quota follows her"
    );
    let carol_elsewhere = client_as(&gw, &token("carol"), Some("203.0.113.9")).await;
    assert_eq!(code(&carol_elsewhere).await, None);
    drop((alice, bob, alice_elsewhere, carol_elsewhere));
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_with_a_scope_are_hidden_and_refused_without_it() {
    let dir = std::env::temp_dir().join(unique("gateway-auth-scopes"));
    std::fs::create_dir_all(&dir).unwrap();
    let k1 = key(&dir, "k1");
    let jwks = jwks_server(Arc::new(Mutex::new(json!({"keys": [jwk("k1", &k1)]})))).await;
    let upstream = Upstream::start(&[]).await;
    let config = format!(
        r#"{SERVER}[[connectors]]
name = "weather"
kind = "http"
url = "{}"
tools = [{{ name = "forecast" }}, {{ name = "alerts" }}]
[auth]
mode = "jwt"
issuer = "{ISSUER}"
jwks_url = "{jwks}"
resource = "{RESOURCE}"
tool_scopes = {{ "weather_forecast" = "weather:read" }}
"#,
        upstream.url
    );
    let gw = Gateway::start(&config, &[]).await;
    let names = |tools: Vec<rmcp::model::Tool>| -> Vec<String> {
        tools.into_iter().map(|t| t.name.to_string()).collect()
    };
    let plain = client_as(
        &gw,
        &sign("k1", &k1, &claims(json!({"scope": "tools"}))),
        None,
    )
    .await;
    let listed = names(plain.list_all_tools().await.unwrap());
    assert_eq!(listed, ["weather_alerts"], "forecast is hidden");
    let refused = call(&plain, "weather_forecast", json!({})).await;
    assert_eq!(error_code(&refused).as_deref(), Some("insufficient_scope"));
    assert_eq!(
        error_code(&call(&plain, "weather_alerts", json!({})).await),
        None
    );
    assert_eq!(
        upstream.calls_ok().await,
        1,
        "the refused call never reached the upstream"
    );

    let reader = client_as(
        &gw,
        &sign("k1", &k1, &claims(json!({"scope": "tools weather:read"}))),
        None,
    )
    .await;
    let mut listed = names(reader.list_all_tools().await.unwrap());
    listed.sort();
    assert_eq!(listed, ["weather_alerts", "weather_forecast"]);
    assert_eq!(
        error_code(&call(&reader, "weather_forecast", json!({})).await),
        None
    );
    drop((plain, reader));
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_clients_use_api_keys_stored_as_hashes() {
    let upstream = Upstream::start(&[]).await;
    let secret = format!("sk-{}", unique("key"));
    let hash: String = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // The JWKS is never needed: keys are checked first.
    let config = format!(
        "{SERVER}{}[auth]\nmode = \"jwt\"\nissuer = \"{ISSUER}\"\njwks_url = \"http://127.0.0.1:9/jwks\"\nresource = \"{RESOURCE}\"\nrequired_scope = \"tools\"\n[[auth.api_keys]]\nname = \"ci-bot\"\nsha256 = \"{hash}\"\nscopes = [\"tools\"]\n[[auth.api_keys]]\nname = \"no-scope\"\nsha256 = \"{}\"\n",
        http_connector("weather", &upstream.url, ""),
        "0".repeat(64)
    );
    let gw = Gateway::start(&config, &[]).await;
    let client = client_as(&gw, &secret, None).await;
    assert_eq!(
        error_code(&call(&client, "weather_forecast", json!({})).await),
        None
    );
    drop(client);
    let (status, challenge, _) = initialize(&gw, Some(&format!("Bearer {secret}x"))).await;
    assert_eq!(status, 401);
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    gw.stop().await;
}
