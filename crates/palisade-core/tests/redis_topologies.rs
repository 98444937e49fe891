//! `RedisConnection` against real servers: TLS (CA, untrusted certificates, mutual TLS), a
//! Sentinel group failing over, and a Redis Cluster through slot moves (`ASK`, then `MOVED`).
//! Every server is a `redis-server` process on a spare loopback port (palisade-testkit).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use palisade_core::redis::{ConnectionOptions, RedisConfig, RedisConnection, TlsOptions};
use palisade_testkit::{RedisCluster, SentinelGroup, TlsRedis, shared_cluster, unique};
use redis::RedisResult;

fn open(config: &RedisConfig) -> RedisConnection {
    RedisConnection::open(config, ConnectionOptions::default()).unwrap()
}

async fn ping(conn: &RedisConnection) -> RedisResult<String> {
    let mut conn = conn.clone();
    redis::cmd("PING").query_async(&mut conn).await
}

async fn set(conn: &RedisConnection, key: &str, value: &str) -> RedisResult<()> {
    let mut conn = conn.clone();
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut conn)
        .await
}

async fn get(conn: &RedisConnection, key: &str) -> RedisResult<Option<String>> {
    let mut conn = conn.clone();
    redis::cmd("GET").arg(key).query_async(&mut conn).await
}

fn tls(
    ca: Option<std::path::PathBuf>,
    client: Option<(std::path::PathBuf, std::path::PathBuf)>,
) -> TlsOptions {
    let mut t = TlsOptions::default();
    t.ca_file = ca;
    if let Some((cert, key)) = client {
        t.cert_file = Some(cert);
        t.key_file = Some(key);
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_ca_connects_and_an_untrusted_certificate_is_refused_by_name() {
    let server = TlsRedis::start(false);
    let trusted = RedisConfig::from_url(&server.url())
        .unwrap()
        .tls(tls(Some(server.ca_file()), None));
    let conn = open(&trusted);
    assert_eq!(ping(&conn).await.unwrap(), "PONG");
    assert_eq!(conn.server_state().await.unwrap().role, "master");
    // By host name too: the certificate names localhost and 127.0.0.1.
    let by_name = RedisConfig::from_url(&server.url_localhost())
        .unwrap()
        .tls(tls(Some(server.ca_file()), None));
    assert_eq!(ping(&open(&by_name)).await.unwrap(), "PONG");

    // Another CA, or the system's roots: the handshake fails and the error says why.
    for config in [
        RedisConfig::from_url(&server.url())
            .unwrap()
            .tls(tls(Some(server.untrusted_ca_file()), None)),
        RedisConfig::from_url(&server.url()).unwrap(),
    ] {
        let err = ping(&open(&config)).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("certificate") || text.contains("UnknownIssuer"),
            "{text}"
        );
    }

    // The explicit insecure switch (tests only) skips verification.
    let mut insecure = TlsOptions::default();
    insecure.insecure = true;
    let config = RedisConfig::from_url(&server.url()).unwrap().tls(insecure);
    assert_eq!(ping(&open(&config)).await.unwrap(), "PONG");

    // Files that are missing or not PEM are refused when the connection is opened.
    let missing = RedisConfig::from_url(&server.url())
        .unwrap()
        .tls(tls(Some("/nonexistent/ca.pem".into()), None));
    let err = RedisConnection::open(&missing, ConnectionOptions::default()).unwrap_err();
    assert_eq!(err.field, "tls.ca_file");
    assert!(err.reason.contains("/nonexistent/ca.pem"), "{err}");
    let not_pem = RedisConfig::from_url(&server.url())
        .unwrap()
        .tls(tls(Some("/etc/hostname".into()), None));
    let err = RedisConnection::open(&not_pem, ConnectionOptions::default()).unwrap_err();
    assert!(err.reason.contains("not a PEM file"), "{err}");
    // TLS options on a plain URL are a config error, not a silent plain-text connection.
    let plain = RedisConfig::from_url("redis://127.0.0.1:1")
        .unwrap()
        .tls(tls(Some(server.ca_file()), None));
    let err = RedisConnection::open(&plain, ConnectionOptions::default()).unwrap_err();
    assert!(err.reason.contains("not rediss"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_a_client_certificate_from_the_trusted_ca() {
    let server = TlsRedis::start(true);
    let with_cert = RedisConfig::from_url(&server.url()).unwrap().tls(tls(
        Some(server.ca_file()),
        Some((server.client_cert_file(), server.client_key_file())),
    ));
    let conn = open(&with_cert);
    let key = unique("mtls");
    set(&conn, &key, "v").await.unwrap();
    assert_eq!(get(&conn, &key).await.unwrap().as_deref(), Some("v"));

    let without = RedisConfig::from_url(&server.url())
        .unwrap()
        .tls(tls(Some(server.ca_file()), None));
    assert!(ping(&open(&without)).await.is_err());
    let untrusted = RedisConfig::from_url(&server.url()).unwrap().tls(tls(
        Some(server.ca_file()),
        Some((
            server.untrusted_client_cert_file(),
            server.untrusted_client_key_file(),
        )),
    ));
    assert!(ping(&open(&untrusted)).await.is_err());
}

/// Writes `key` = `n` until one succeeds after `deadline`-bounded retries; returns the number
/// of failed attempts.
async fn write_until_ok(conn: &RedisConnection, key: &str, value: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failures = 0;
    loop {
        match set(conn, key, value).await {
            Ok(()) => return failures,
            Err(e) => {
                failures += 1;
                assert!(Instant::now() < deadline, "no write succeeded: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_follows_the_primary_through_a_failover() {
    let mut group = SentinelGroup::start_with_sentinel_password("sentinel-secret");
    let url = format!(
        "redis+sentinel://{}/{}",
        group.sentinel_addrs().join(","),
        group.master_name()
    );
    // Without the sentinels' password nothing is found, and the error says so.
    let no_auth = open(&RedisConfig::from_url(&url).unwrap());
    assert!(ping(&no_auth).await.is_err());

    let config = RedisConfig::from_url(&url)
        .unwrap()
        .sentinel_auth(None, "sentinel-secret");
    let conn = open(&config);
    assert_eq!(conn.topology_name(), "sentinel");
    let key = unique("sentinel");
    set(&conn, &key, "before").await.unwrap();
    // The replica acknowledges it: WAIT reports one replica.
    assert_eq!(
        conn.wait_for_replicas(&key, 1, Duration::from_secs(5))
            .await
            .unwrap(),
        1
    );
    let state = conn.server_state().await.unwrap();
    assert_eq!((state.role.as_str(), state.online_replicas), ("master", 1));

    let old = group.kill_primary();
    let new = group.wait_for_failover(old, Duration::from_secs(30));
    assert_ne!(old, new);
    // The same connection, without a restart, writes to the new primary.
    write_until_ok(&conn, &key, "after").await;
    assert_eq!(get(&conn, &key).await.unwrap().as_deref(), Some("after"));
    let mut direct = palisade_testkit::connect(&format!("redis://127.0.0.1:{new}"))
        .await
        .unwrap();
    let on_new: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(on_new.as_deref(), Some("after"));
    assert_eq!(conn.server_state().await.unwrap().role, "master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keys_spread_over_the_primaries_and_scripts_route_by_their_key() {
    let seeds = shared_cluster();
    let config = RedisConfig::cluster(&seeds).unwrap();
    let conn = open(&config);
    assert_eq!(conn.topology_name(), "cluster");
    let base = unique("spread");
    for i in 0..50 {
        set(&conn, &format!("{base}:{{{i}}}"), &i.to_string())
            .await
            .unwrap();
    }
    for i in 0..50 {
        assert_eq!(
            get(&conn, &format!("{base}:{{{i}}}")).await.unwrap(),
            Some(i.to_string())
        );
    }
    let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    let key = format!("{base}:{{script}}");
    let mut c = conn.clone();
    let n: i64 = script.key(&key).arg(5).invoke_async(&mut c).await.unwrap();
    assert_eq!(n, 5);
    let state = conn.server_state().await.unwrap();
    let cluster = state.cluster.expect("a cluster reports its state");
    assert!(
        cluster.ok && cluster.slots_ok == 16384 && cluster.size == 3,
        "{cluster:?}"
    );
    // WAIT goes to the key's primary (no replicas in the shared cluster: 0 acknowledge).
    assert_eq!(
        conn.wait_for_replicas(&key, 0, Duration::from_millis(100))
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_commands_follow_a_slot_through_ask_and_moved() {
    let cluster = RedisCluster::start(3, 0);
    let config = RedisConfig::cluster(cluster.seeds()).unwrap();
    let conn = open(&config);
    let key = "{moving}:k";
    set(&conn, key, "1").await.unwrap();
    let slot = RedisCluster::key_slot(key);
    let from = cluster.primary_for_slot(slot);
    let to = *cluster
        .primary_ports()
        .iter()
        .find(|&&p| p != from)
        .unwrap();

    // Half way: the key is still on the source, new keys of the slot go to the target (ASK).
    cluster.begin_migration(slot, from, to);
    assert_eq!(get(&conn, key).await.unwrap().as_deref(), Some("1"));
    set(&conn, "{moving}:new", "2").await.unwrap();
    assert_eq!(
        get(&conn, "{moving}:new").await.unwrap().as_deref(),
        Some("2")
    );
    cluster.migrate_keys(slot, from, to);
    cluster.finish_migration(slot, from, to);
    // Done: the slot map the connection holds is stale; MOVED sends it to the new owner.
    set(&conn, key, "3").await.unwrap();
    assert_eq!(get(&conn, key).await.unwrap().as_deref(), Some("3"));
    let mut direct = palisade_testkit::connect(&format!("redis://127.0.0.1:{to}"))
        .await
        .unwrap();
    let v: Option<String> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("3"));
}
