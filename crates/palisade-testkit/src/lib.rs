//! # palisade-testkit
//!
//! Redis for the tests: the shared loopback Redis the test command starts, and private
//! `redis-server` processes on spare ports for tests that stop or restart Redis; the shared
//! Redis Cluster and private clusters ([`cluster`]), a primary with a replica and sentinels
//! ([`sentinel`]), and Redis over TLS with throwaway certificates ([`tls`]).
// Test support: a failure here is a broken test environment, and panicking says so loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The shared Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`). Panics, loudly, when it
/// does not answer: these tests never skip.
pub async fn shared_redis() -> (String, redis::aio::MultiplexedConnection) {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let conn = connect(&url).await.unwrap_or_else(|e| {
        panic!("Redis is not reachable at {url} ({e}); run the tests with scripts/test, which starts one")
    });
    (url, conn)
}

/// A multiplexed connection to `url`.
pub async fn connect(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

/// Whether process `pid` runs (exists and is not a zombie waiting to be reaped): how tests
/// check that a child, or a grandchild, is gone.
pub fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A name no other test run uses, so tests on the shared Redis never see each other's keys.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Redis server time in microseconds.
pub async fn redis_time_us(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    s * 1_000_000 + us
}

/// A private `redis-server` on a spare loopback port, without persistence; killed on drop.
pub struct RedisServer {
    /// The server's port.
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a spare port and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// Starts a server with these persistence arguments instead of none (for example
    /// `["--appendonly", "yes", "--appendfsync", "always", "--dir", "/tmp/x"]`); restarts keep
    /// them, so an AOF is replayed.
    pub fn start_with(args: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            port,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port: a fresh server with an empty script cache (and, without
    /// persistence, no data).
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let mut buf = [0u8; 7];
                // Anything but +PONG (-LOADING while an AOF is replayed) means "not yet".
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): it accepts nothing and answers nothing, like a stall.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let status = Command::new("kill")
            .args([if frozen { "-STOP" } else { "-CONT" }, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.stop();
    }
}

pub mod alloc;
pub mod cluster;
mod process;
pub mod sentinel;
pub mod tls;

pub use cluster::{RedisCluster, shared_cluster};
pub use sentinel::SentinelGroup;
pub use tls::TlsRedis;

/// Polls `cond` (every 10 ms of real time) until it holds, failing the test with `what` after
/// `deadline`: for waits on real processes, real Redis and real sockets, never for logic that a
/// paused clock can drive.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while !cond().await {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks that `source` compiles as Lua 5.1, the Lua of Redis's scripts, with `luac -p`
/// (`luac5.1` or `luac` on the PATH: `apt-get install -y lua5.1`, which scripts/test runs).
/// Panics naming `name` and luac's message when it does not, and when no compiler is
/// installed, so that a machine without one never passes silently.
pub fn assert_lua_compiles(name: &str, source: &str) {
    let luac = ["luac5.1", "luac"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("-v")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .unwrap_or_else(|| {
            panic!(
                "no Lua compiler: the syntax check of Redis scripts needs luac5.1 (or luac) on \
                 the PATH; install it with `apt-get install -y lua5.1` (scripts/test does)"
            )
        });
    let path = std::env::temp_dir().join(format!(
        "{}.lua",
        unique(&format!("palisade-luac-{}", name.replace('/', "_")))
    ));
    std::fs::write(&path, source).unwrap();
    let out = Command::new(luac)
        .args(["-p", "-o", "/dev/null"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{name} does not compile as Lua 5.1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
