//! The built-in checks against real sockets, the shared Redis and real breakers.
#![allow(clippy::unwrap_used)]
// Raw listeners stand in for the checked services; no responses are timed here.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;

use palisade_health::checks::{HttpCheck, TcpCheck};
use palisade_health::{HealthCheck, Status};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[cfg(any(feature = "redis", feature = "breaker"))]
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A loopback port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_connects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let check = TcpCheck::new(addr.clone());
    let result = check.check().await;
    assert_eq!(result.status, Status::Healthy, "{result:?}");
    assert!(
        result
            .message
            .starts_with(&format!("connected to {addr} in ")),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_on_a_closed_port_is_unhealthy() {
    let addr = format!("127.0.0.1:{}", closed_port().await);
    let result = TcpCheck::new(addr.as_str()).check().await;
    assert_eq!(result.status, Status::Unhealthy, "{result:?}");
    assert!(
        result
            .message
            .starts_with(&format!("connect to {addr} failed: ")),
        "{result:?}"
    );
}

/// A tiny HTTP server: answers each connection with the next canned response (raw bytes) and
/// keeps the requests it received.
async fn serve(responses: Vec<&'static str>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        for response in responses {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            seen.lock().push(String::from_utf8(request).unwrap());
            socket.write_all(response.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
        }
    });
    (port, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_reads_the_status() {
    let (port, requests) = serve(vec![
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\n\r\n",
        "HTTP/1.0 200 OK\r\n\r\n",
    ])
    .await;
    let url = format!("http://127.0.0.1:{port}/healthz?deep=1");
    let check = HttpCheck::new(&url).unwrap();
    assert_eq!(check.url(), url);

    let up = check.check().await;
    assert_eq!(up.status, Status::Healthy, "{up:?}");
    assert!(
        up.message.starts_with(&format!("GET {url}: 200 in ")),
        "{up:?}"
    );

    let down = check.check().await;
    assert_eq!(down.status, Status::Unhealthy, "{down:?}");
    assert_eq!(
        down.message,
        format!("GET {url} returned 503 Service Unavailable")
    );

    let redirect = check.check().await;
    assert_eq!(
        redirect.status,
        Status::Healthy,
        "3xx is healthy: {redirect:?}"
    );

    let strict = check.clone().expect_status(204).check().await;
    assert_eq!(strict.status, Status::Unhealthy, "{strict:?}");
    assert_eq!(
        strict.message,
        format!("GET {url} returned 200 OK, expected 204")
    );

    let request = requests.lock()[0].clone();
    assert_eq!(
        request,
        format!(
            "GET /healthz?deep=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nUser-Agent: palisade-health\r\n\r\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_names_a_malformed_response() {
    let (port, _) = serve(vec![
        "SSH-2.0-OpenSSH_9.6\r\n",
        "HTTP/1.1 abc Nope\r\n\r\n",
        "",
    ])
    .await;
    let check = HttpCheck::new(&format!("http://127.0.0.1:{port}")).unwrap();
    assert_eq!(check.url(), format!("http://127.0.0.1:{port}/"));

    let garbage = check.check().await;
    assert_eq!(garbage.status, Status::Unhealthy, "{garbage:?}");
    assert!(
        garbage.message.contains("malformed response"),
        "{garbage:?}"
    );
    assert!(garbage.message.contains("SSH-2.0"), "{garbage:?}");

    let bad_code = check.check().await;
    assert_eq!(bad_code.status, Status::Unhealthy, "{bad_code:?}");
    assert!(
        bad_code.message.contains("malformed response"),
        "{bad_code:?}"
    );

    let empty = check.check().await;
    assert_eq!(empty.status, Status::Unhealthy, "{empty:?}");
    assert!(
        empty
            .message
            .contains("closed the connection without a response"),
        "{empty:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_on_a_closed_port_is_unhealthy() {
    let port = closed_port().await;
    let result = HttpCheck::new(&format!("http://127.0.0.1:{port}/"))
        .unwrap()
        .check()
        .await;
    assert_eq!(result.status, Status::Unhealthy, "{result:?}");
    assert!(
        result
            .message
            .contains(&format!("connect to 127.0.0.1:{port} failed")),
        "{result:?}"
    );
}

#[test]
fn http_check_refuses_what_it_cannot_do() {
    let https = HttpCheck::new("https://example.com/health").unwrap_err();
    assert_eq!(https.field, "url");
    assert_eq!(
        https.reason,
        "https is not supported by the built-in check; wrap your HTTP client in check_fn"
    );
    for url in [
        "example.com/health",
        "ftp://example.com/",
        "http://",
        "http://:80/",
        "http://host:99999/",
        "http://host:x/",
        "http://user:secret@host/",
        "http://host/a b",
        "http://[::1/",
    ] {
        let err = HttpCheck::new(url).unwrap_err();
        assert_eq!(err.field, "url", "{url}");
    }
    let v6 = HttpCheck::new("http://[::1]:8080/x").unwrap();
    assert_eq!(v6.url(), "http://[::1]:8080/x");
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use palisade_health::checks::RedisCheck;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_check_pings_the_shared_redis() {
        let (url, _conn) = palisade_testkit::shared_redis().await;
        let check = RedisCheck::new(&url).unwrap();
        for _ in 0..2 {
            let result = tokio::time::timeout(DEADLINE, check.check()).await.unwrap();
            assert_eq!(result.status, Status::Healthy, "{result:?}");
            assert!(
                result.message.starts_with("PING answered in "),
                "{result:?}"
            );
            // The shared Redis is a primary without replicas.
            assert!(
                result
                    .message
                    .ends_with("; primary, 0 of 0 replicas online"),
                "{result:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_check_reports_the_cluster_state() {
        let config =
            palisade_core::redis::RedisConfig::cluster(palisade_testkit::shared_cluster()).unwrap();
        let check = RedisCheck::new(&config).unwrap();
        let result = tokio::time::timeout(DEADLINE, check.check()).await.unwrap();
        assert_eq!(result.status, Status::Healthy, "{result:?}");
        assert!(
            result
                .message
                .contains("; cluster ok: 16384 slots ok, 0 failing, 3 primaries, 3 nodes; primary"),
            "{result:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_check_on_a_replica_is_degraded_and_says_why() {
        // No diskless-sync delay: the replica syncs at once, not after 5 s.
        let primary = palisade_testkit::RedisServer::start_with(&[
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
        ]);
        let port = primary.port.to_string();
        let replica = palisade_testkit::RedisServer::start_with(&[
            "--save",
            "",
            "--appendonly",
            "no",
            "--replicaof",
            "127.0.0.1",
            &port,
        ]);
        let check = RedisCheck::new(replica.url()).unwrap();
        palisade_testkit::eventually("the replica's link is up", DEADLINE, || async {
            check
                .check()
                .await
                .message
                .ends_with("; replica, link to its primary up")
        })
        .await;
        let result = check.check().await;
        assert_eq!(result.status, Status::Degraded, "{result:?}");
        // And its primary reports it.
        let result = RedisCheck::new(primary.url()).unwrap().check().await;
        assert_eq!(result.status, Status::Healthy, "{result:?}");
        assert!(
            result
                .message
                .ends_with("; primary, 1 of 1 replicas online"),
            "{result:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_check_on_a_closed_port_is_unhealthy_and_never_shows_the_password() {
        let port = closed_port().await;
        let check = RedisCheck::new(format!("redis://:hunter2@127.0.0.1:{port}/0")).unwrap();
        assert!(!format!("{check:?}").contains("hunter2"));
        let result = tokio::time::timeout(DEADLINE, check.check()).await.unwrap();
        assert_eq!(result.status, Status::Unhealthy, "{result:?}");
        assert!(
            result.message.starts_with("Redis unreachable: "),
            "{result:?}"
        );
        assert!(!result.message.contains("hunter2"), "{result:?}");
    }

    #[test]
    fn redis_check_refuses_a_bad_url_or_no_runtime() {
        let no_runtime = RedisCheck::new("redis://127.0.0.1:6379").unwrap_err();
        assert_eq!(no_runtime.field, "url");
        assert!(no_runtime.reason.contains("tokio runtime"), "{no_runtime}");

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let bad = RedisCheck::new("nope://:hunter2@host").unwrap_err();
        assert_eq!(bad.field, "url");
        assert!(!bad.to_string().contains("hunter2"), "{bad}");
    }
}

#[cfg(feature = "breaker")]
mod breaker {
    use super::*;
    use palisade_breaker::{CircuitBreaker, State};
    use palisade_health::checks::BreakerCheck;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_breaker_is_degraded_never_unhealthy() {
        let breaker = CircuitBreaker::builder("payments").build().unwrap();
        let check = BreakerCheck::new(breaker.clone());
        let closed = check.check().await;
        assert_eq!(closed.status, Status::Healthy, "{closed:?}");

        breaker.force_open();
        let forced = check.check().await;
        assert_eq!(forced.status, Status::Degraded, "{forced:?}");
        assert!(
            forced
                .message
                .starts_with("circuit 'payments' is open: dependency outage"),
            "{forced:?}"
        );

        breaker.disable();
        assert_eq!(check.check().await.status, Status::Healthy);
        breaker.metrics_only();
        assert_eq!(check.check().await.status, Status::Healthy);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tripped_breaker_says_when_it_retries_then_recovers() {
        let breaker = CircuitBreaker::builder("search")
            .consecutive_failures(1)
            .wait_duration(Duration::from_millis(300))
            .jitter(0.0)
            .build()
            .unwrap();
        let check = BreakerCheck::new(breaker.clone());
        let _ = breaker.call(async { Err::<(), _>("boom") }).await;
        assert_eq!(breaker.state(), State::Open);

        let open = check.check().await;
        assert_eq!(open.status, Status::Degraded, "{open:?}");
        assert!(
            open.message
                .starts_with("circuit 'search' is open: dependency outage; retry in "),
            "{open:?}"
        );
        assert!(open.message.ends_with(" ms"), "{open:?}");

        // Poll until the wait has elapsed and the breaker admits trials.
        let deadline = std::time::Instant::now() + DEADLINE;
        let half_open = loop {
            let result = check.check().await;
            assert_ne!(result.status, Status::Unhealthy, "{result:?}");
            if result.message.contains("half-open") {
                break result;
            }
            assert!(std::time::Instant::now() < deadline, "never half-open");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(half_open.status, Status::Degraded);
        assert_eq!(
            half_open.message,
            "circuit 'search' is half-open: recovering"
        );
    }
}
