//! What the multi-process fixtures ([`crate::cluster`], [`crate::sentinel`], [`crate::tls`])
//! share: temporary directories, spare ports, `redis-server` children that are killed on drop,
//! short-lived connections to one node, and polling with a deadline that says what it last saw.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A directory under [`std::env::temp_dir`] with a name no other fixture uses; removed (with
/// everything in it) on drop.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/<prefix>-<pid>-<n>-<nanos>`.
    pub(crate) fn new(prefix: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("{}-{n}", crate::unique(prefix)));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| {
            panic!(
                "cannot create the fixture directory {}: {e}",
                path.display()
            )
        });
        TempDir(path)
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `n` distinct loopback ports that were free a moment ago (the listeners are held until all
/// are chosen, so they differ from each other).
pub(crate) fn spare_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("cannot bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// One `redis-server` child process with its arguments (kept for restarts) and its log file;
/// killed (SIGKILL, after SIGCONT) and reaped on drop.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    /// The port it is probed on (its plain-text port; 0 for a TLS-only server).
    pub(crate) port: u16,
    /// What it is, for panic messages ("cluster node", "sentinel", ...).
    pub(crate) what: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl ServerProcess {
    /// A process that runs `redis-server <args> --logfile <log>` once [`Self::spawn`]ed.
    pub(crate) fn new(what: String, port: u16, args: Vec<String>, log: PathBuf) -> Self {
        ServerProcess {
            port,
            what,
            args,
            log,
            child: None,
        }
    }

    /// Starts the process (killing a running one first) with its arguments plus `extra`.
    pub(crate) fn spawn_with(&mut self, extra: &[String]) {
        self.kill();
        let child = Command::new("redis-server")
            .args(&self.args)
            .args(extra)
            .arg("--logfile")
            .arg(&self.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}); it must be installed (scripts/test installs it)"
                )
            });
        self.child = Some(child);
    }

    /// Starts the process (killing a running one first).
    pub(crate) fn spawn(&mut self) {
        self.spawn_with(&[]);
    }

    /// Whether the process was spawned and has not been killed.
    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process (SIGKILL, as a crash would) and reaps it; nothing when not running.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen (SIGSTOPped) process dies of SIGKILL too; no SIGCONT needed.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Panics, with the end of its log, when the process has exited on its own.
    pub(crate) fn assert_alive(&mut self) {
        let exited = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            panic!(
                "{} on port {} exited ({status}); end of its log {}:\n{}",
                self.what,
                self.port,
                self.log.display(),
                log_tail(&self.log, 20)
            );
        }
    }

    /// Waits until the process answers `PING` with `+PONG` on its port (without a password),
    /// or with `-NOAUTH` when `auth_required`.
    pub(crate) fn wait_ready(&mut self, deadline: Duration) {
        let end = Instant::now() + deadline;
        loop {
            self.assert_alive();
            let reply = raw_ping(self.port);
            if reply.starts_with("+PONG") || reply.starts_with("-NOAUTH") {
                return;
            }
            assert!(
                Instant::now() < end,
                "{} did not start on port {} within {deadline:?} (last reply: {reply:?}); end of its log {}:\n{}",
                self.what,
                self.port,
                self.log.display(),
                log_tail(&self.log, 20)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The end of its log, for panic messages.
    pub(crate) fn log_tail(&self) -> String {
        format!("{}:\n{}", self.log.display(), log_tail(&self.log, 20))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of `path` (or why it cannot be read).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// The first line of the reply to an inline `PING` on `port`, or "" when nothing answers.
fn raw_ping(port: u16) -> String {
    use std::io::{BufRead, BufReader, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return String::new();
    }
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    line
}

/// A fresh synchronous connection to `redis://[:password@]127.0.0.1:<port>`, with short
/// connect and read timeouts so a dead or frozen node fails fast instead of hanging the test.
pub(crate) fn connection(
    port: u16,
    password: Option<&str>,
) -> redis::RedisResult<redis::Connection> {
    let url = match password {
        Some(pw) => format!("redis://:{pw}@127.0.0.1:{port}"),
        None => format!("redis://127.0.0.1:{port}"),
    };
    let conn = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(conn)
}

/// Runs `cmd` on a fresh connection to `port`.
pub(crate) fn query<T: redis::FromRedisValue>(
    port: u16,
    password: Option<&str>,
    cmd: &redis::Cmd,
) -> redis::RedisResult<T> {
    cmd.query(&mut connection(port, password)?)
}

/// The value of `field` in `INFO`-style `field:value` lines.
pub(crate) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// The first element of `ROLE` on `port` ("master", "slave" or "sentinel").
pub(crate) fn role(port: u16, password: Option<&str>) -> redis::RedisResult<String> {
    let reply: Vec<redis::Value> = query(port, password, &redis::cmd("ROLE"))?;
    match reply.first() {
        Some(redis::Value::BulkString(bytes)) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Some(redis::Value::SimpleString(s)) => Ok(s.clone()),
        other => Ok(format!("{other:?}")),
    }
}

/// Calls `check` every 20 ms until it returns `Ok`, panicking after `deadline` with `what` and
/// the last `Err` (a description of what it saw instead).
pub(crate) fn poll<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let end = Instant::now() + deadline;
    loop {
        match check() {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < end,
                "timed out after {deadline:?} waiting for {what}; last seen: {seen}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
