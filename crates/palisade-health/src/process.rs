//! Supervision of one child process: spawn, notice the exit, keep the end of its stderr, restart.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

use crate::check::{CheckResult, HealthCheck, Restartable};
use crate::tree;

/// Default number of stderr lines kept.
const DEFAULT_TAIL_LINES: usize = 50;
/// Longest stderr line kept, in bytes; the rest of a longer line is dropped.
const MAX_LINE_BYTES: usize = 1024;
/// How long, after the child exits, the supervisor waits for the rest of its stderr before it
/// records the exit (a grandchild may hold the pipe open forever).
const STDERR_DRAIN: Duration = Duration::from_millis(250);
/// Default time a stopped child's process group has between `SIGTERM` and `SIGKILL`.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);

type OnSpawn = Arc<dyn Fn(&mut Child) + Send + Sync + 'static>;

/// Runs one child process (a stdio MCP server, a sidecar, a worker), notices when it exits, and
/// starts it again on demand.
///
/// The supervisor does not decide *when* to restart: it is a [`HealthCheck`] (unhealthy as soon
/// as the child has exited, and it wakes the monitor through [`changes`](HealthCheck::changes)
/// at that instant) and a [`Restartable`] (stop, then start), so the health monitor's backoff and
/// crash-loop protection apply to it like to any component.
///
/// - The last [`stderr_tail_lines`](ProcessBuilder::stderr_tail_lines) lines of the child's
///   stderr are kept (each cut to 1 KiB) and the last one is quoted in the unhealthy message.
/// - Nothing is left behind. The child runs in a process group of its own, and everything it
///   starts (the real server behind `sh -c`, `npx` or `uvx`) is in that group: a
///   [`stop`](ProcessSupervisor::stop) sends `SIGTERM` to the group, waits up to
///   [`stop_grace`](ProcessBuilder::stop_grace), then sends `SIGKILL`; when the child exits by
///   itself, what is left of its group is killed. Dropping the last clone of the supervisor
///   kills the group at once. On Linux the group also dies with the supervising process, even
///   when that is killed with `SIGKILL`: the child gets `SIGKILL` from the kernel
///   (`PR_SET_PDEATHSIG`), and a small guard process (`/bin/sh`, in the group) kills the rest.
/// - Cheap to clone: clones share the same child.
///
/// ```no_run
/// use palisade_health::{HealthCheck, ProcessSupervisor, Status};
///
/// # async fn demo() -> Result<(), String> {
/// let server = ProcessSupervisor::builder("github-mcp", "github-mcp-server")
///     .arg("stdio")
///     .env("GITHUB_TOKEN", "…")
///     .stdin_piped(true)
///     .stdout_piped(true)
///     .on_spawn(|child| {
///         // Take the pipes to speak MCP over stdio.
///         let _stdin = child.stdin.take();
///         let _stdout = child.stdout.take();
///     })
///     .build();
/// server.start().await?;
/// assert_eq!(server.check().await.status, Status::Healthy);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ProcessSupervisor {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    spec: Spec,
    /// Serializes start, stop and restart.
    lifecycle: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    changes: Arc<Notify>,
    starts: AtomicU64,
    exits: AtomicU64,
}

#[derive(Clone)]
struct Spec {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    current_dir: Option<PathBuf>,
    tail_lines: usize,
    stdin_piped: bool,
    stdout_piped: bool,
    on_spawn: Option<OnSpawn>,
    stop_grace: Duration,
}

#[derive(Default)]
struct State {
    /// Incremented at each spawn; the tasks of an older run leave the state alone.
    generation: u64,
    running: Option<Running>,
    last_exit: Option<String>,
    /// Why the last `start` failed, cleared by a successful one.
    spawn_error: Option<String>,
    tail: VecDeque<String>,
}

struct Running {
    pid: Option<u32>,
    started_at: Instant,
    /// Sending (or dropping, when the supervisor is dropped) kills the child.
    kill: Option<oneshot::Sender<()>>,
    /// Turns `true` once the exit is recorded (closed without it if the recording task died).
    exited: watch::Receiver<bool>,
}

impl fmt::Debug for ProcessSupervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessSupervisor")
            .field("name", &self.inner.name)
            .field("program", &self.inner.spec.program)
            .field("pid", &self.pid())
            .field("starts", &self.starts())
            .field("exits", &self.exits())
            .finish_non_exhaustive()
    }
}

/// Builds a [`ProcessSupervisor`]; see [`ProcessSupervisor::builder`].
#[must_use]
#[derive(Clone)]
pub struct ProcessBuilder {
    name: String,
    spec: Spec,
}

impl fmt::Debug for ProcessBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Environment values often carry tokens: print the variable names only.
        let env: Vec<&OsStr> = self.spec.env.iter().map(|(k, _)| k.as_os_str()).collect();
        f.debug_struct("ProcessBuilder")
            .field("name", &self.name)
            .field("program", &self.spec.program)
            .field("args", &self.spec.args)
            .field("env", &env)
            .field("current_dir", &self.spec.current_dir)
            .field("stderr_tail_lines", &self.spec.tail_lines)
            .field("stdin_piped", &self.spec.stdin_piped)
            .field("stdout_piped", &self.spec.stdout_piped)
            .field("on_spawn", &self.spec.on_spawn.is_some())
            .field("stop_grace", &self.spec.stop_grace)
            .finish()
    }
}

impl ProcessBuilder {
    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.spec.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spec
            .args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable of the child (on top of the inherited environment). Values
    /// are never printed by `Debug`.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.spec
            .env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The child's working directory. Default: the current one.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.spec.current_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// How many of the last lines of the child's stderr to keep, each cut to 1 KiB. Default 50.
    /// With 0 none is kept and the child's stderr is discarded.
    pub fn stderr_tail_lines(mut self, n: usize) -> Self {
        self.spec.tail_lines = n;
        self
    }

    /// Gives the child a stdin pipe (take it in [`on_spawn`](Self::on_spawn)). Default: no
    /// stdin (`/dev/null`).
    pub fn stdin_piped(mut self, piped: bool) -> Self {
        self.spec.stdin_piped = piped;
        self
    }

    /// Gives the child a stdout pipe (take it in [`on_spawn`](Self::on_spawn)). Default: stdout
    /// is discarded (`/dev/null`).
    pub fn stdout_piped(mut self, piped: bool) -> Self {
        self.spec.stdout_piped = piped;
        self
    }

    /// Called after each successful spawn, before `start` returns, so the owner can
    /// [`take`](Option::take) the child's stdin and stdout pipes (for example to speak MCP over
    /// stdio) each time the process is (re)started. The child's stderr is already taken by the
    /// supervisor. Do not wait for or kill the child here: the supervisor does.
    pub fn on_spawn<F>(mut self, f: F) -> Self
    where
        F: Fn(&mut Child) + Send + Sync + 'static,
    {
        self.spec.on_spawn = Some(Arc::new(f));
        self
    }

    /// How long a [`stop`](ProcessSupervisor::stop) lets the child's process group exit after
    /// `SIGTERM` before it sends `SIGKILL`. Default 5 s; zero kills at once.
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.spec.stop_grace = grace;
        self
    }

    /// The supervisor. Nothing is spawned until [`start`](ProcessSupervisor::start).
    pub fn build(self) -> ProcessSupervisor {
        ProcessSupervisor {
            inner: Arc::new(Inner {
                name: self.name,
                spec: self.spec,
                lifecycle: tokio::sync::Mutex::new(()),
                state: Mutex::new(State::default()),
                changes: Arc::new(Notify::new()),
                starts: AtomicU64::new(0),
                exits: AtomicU64::new(0),
            }),
        }
    }
}

impl ProcessSupervisor {
    /// A builder for a supervisor named `name` (used in logs and messages) that runs `program`
    /// (a path, or a name looked up in `PATH`).
    pub fn builder(name: impl Into<String>, program: impl AsRef<OsStr>) -> ProcessBuilder {
        ProcessBuilder {
            name: name.into(),
            spec: Spec {
                program: program.as_ref().to_owned(),
                args: Vec::new(),
                env: Vec::new(),
                current_dir: None,
                tail_lines: DEFAULT_TAIL_LINES,
                stdin_piped: false,
                stdout_piped: false,
                on_spawn: None,
                stop_grace: DEFAULT_STOP_GRACE,
            },
        }
    }

    /// The supervisor's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Spawns the child; does nothing if it is already running. Must be called inside a tokio
    /// runtime. The error names the program and the OS error (`"cannot start 'x': failed to
    /// spawn `foo`: No such file or directory (os error 2)"`).
    pub async fn start(&self) -> Result<(), String> {
        let _guard = self.inner.lifecycle.lock().await;
        self.start_locked()
    }

    /// Stops the child and its process group (`SIGTERM`, then `SIGKILL` after
    /// [`stop_grace`](ProcessBuilder::stop_grace)) and waits until the child is gone; does
    /// nothing if it is not running. The exit counts in [`exits`](Self::exits) and is recorded
    /// as `"stopped by the supervisor"`.
    pub async fn stop(&self) {
        let _guard = self.inner.lifecycle.lock().await;
        self.stop_locked().await;
    }

    /// The running child's process id.
    pub fn pid(&self) -> Option<u32> {
        self.inner.state.lock().running.as_ref().and_then(|r| r.pid)
    }

    /// Whether the child is running (spawned and not yet seen to exit).
    pub fn is_running(&self) -> bool {
        self.inner.state.lock().running.is_some()
    }

    /// The last lines the child (the running one, or the last one) wrote to stderr, oldest first.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.inner.state.lock().tail.iter().cloned().collect()
    }

    /// How many times a child exited, including kills by [`stop`](Self::stop).
    pub fn exits(&self) -> u64 {
        self.inner.exits.load(Ordering::Relaxed)
    }

    /// How many times a child was spawned.
    pub fn starts(&self) -> u64 {
        self.inner.starts.load(Ordering::Relaxed)
    }

    /// How the last child ended (`"exited with status 3"`, `"killed by signal 9"`, `"stopped by
    /// the supervisor"`); `None` if none has ended yet.
    pub fn last_exit(&self) -> Option<String> {
        self.inner.state.lock().last_exit.clone()
    }

    /// When the running child was spawned.
    pub fn started_at(&self) -> Option<Instant> {
        self.inner
            .state
            .lock()
            .running
            .as_ref()
            .map(|r| r.started_at)
    }

    /// How long the running child has been running.
    pub fn uptime(&self) -> Option<Duration> {
        self.started_at().map(|t| t.elapsed())
    }

    fn start_locked(&self) -> Result<(), String> {
        let inner = &self.inner;
        if inner.state.lock().running.is_some() {
            return Ok(());
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(format!(
                "cannot start '{}': start() must run inside a tokio runtime",
                inner.name
            ));
        }
        let spec = &inner.spec;
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(piped_or_null(spec.stdin_piped))
            .stdout(piped_or_null(spec.stdout_piped))
            .stderr(piped_or_null(spec.tail_lines > 0))
            .kill_on_drop(true);
        tree::prepare(&mut cmd);
        if let Some(dir) = &spec.current_dir {
            cmd.current_dir(dir);
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let message = format!(
                    "cannot start '{}': failed to spawn `{}`: {e}",
                    inner.name,
                    spec.program.to_string_lossy()
                );
                tracing::warn!(target: "palisade::health", process = %inner.name, error = %e, "{message}");
                inner.state.lock().spawn_error = Some(message.clone());
                return Err(message);
            }
        };
        let pid = child.id();
        let guard = pid.and_then(|pid| tree::spawn_guard(&inner.name, pid));
        let stderr = child.stderr.take();
        if let Some(on_spawn) = &spec.on_spawn {
            on_spawn(&mut child);
        }
        inner.starts.fetch_add(1, Ordering::Relaxed);
        let (kill_tx, kill_rx) = oneshot::channel();
        let (exited_tx, exited_rx) = watch::channel(false);
        // Recorded as running before the tasks exist, so an instant exit is never overwritten.
        let generation = {
            let mut state = inner.state.lock();
            state.generation += 1;
            state.spawn_error = None;
            state.tail.clear();
            state.running = Some(Running {
                pid,
                started_at: Instant::now(),
                kill: Some(kill_tx),
                exited: exited_rx,
            });
            state.generation
        };
        let weak = Arc::downgrade(inner);
        let reader = stderr.map(|stderr| {
            tokio::spawn(read_stderr(
                weak.clone(),
                generation,
                stderr,
                spec.tail_lines,
            ))
        });
        let run = Run {
            child,
            guard,
            grace: spec.stop_grace,
        };
        tokio::spawn(supervise(weak, generation, run, kill_rx, exited_tx, reader));
        tracing::info!(target: "palisade::health", process = %inner.name, pid, "process started");
        Ok(())
    }

    async fn stop_locked(&self) {
        let (generation, kill, mut exited) = {
            let mut state = self.inner.state.lock();
            let generation = state.generation;
            match state.running.as_mut() {
                Some(running) => (generation, running.kill.take(), running.exited.clone()),
                None => return,
            }
        };
        if let Some(kill) = kill {
            // The task may have seen the exit already: then nobody listens, which is fine.
            let _ = kill.send(());
        }
        // `Err` only if the recording task died without recording; repaired below. (`kill` is
        // `None` after a cancelled `stop`: the kill was sent then, and this waits for it.)
        let _ = exited.wait_for(|&done| done).await;
        // If the exit could not be recorded by the task, record it here.
        let cleared = {
            let mut state = self.inner.state.lock();
            if state.generation == generation && state.running.is_some() {
                state.running = None;
                state.last_exit = Some(STOPPED.to_owned());
                true
            } else {
                false
            }
        };
        if cleared {
            self.inner.exits.fetch_add(1, Ordering::Relaxed);
            self.inner.changes.notify_one();
        }
    }
}

const STOPPED: &str = "stopped by the supervisor";

fn piped_or_null(piped: bool) -> Stdio {
    if piped { Stdio::piped() } else { Stdio::null() }
}

/// One spawned child: the process, the guard of its group, and its stop grace.
struct Run {
    child: Child,
    guard: Option<Child>,
    grace: Duration,
}

impl Run {
    /// The child's process group (its pid), while it has one.
    fn group(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the group: `SIGTERM`, up to `grace` for the child to exit, then `SIGKILL`.
    async fn stop(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        if let Some(group) = self.group() {
            if !grace.is_zero() {
                tree::signal_group(group, tree::Signal::Term);
                if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
                    return status;
                }
            }
            tree::signal_group(group, tree::Signal::Kill);
        }
        let _ = self.child.start_kill();
        self.child.wait().await
    }

    /// After the child exited: kills what is left of its group (grandchildren, the guard) and
    /// reaps the guard. The guard, a member until reaped, keeps the group id from being reused.
    async fn clean_up(&mut self, group: Option<u32>) {
        if let Some(mut guard) = self.guard.take() {
            if let Some(group) = group {
                tree::signal_group(group, tree::Signal::Kill);
            }
            let _ = guard.start_kill();
            let _ = guard.wait().await;
        }
    }
}

/// Waits for the child to exit (or for a stop request, or for the supervisor to be dropped),
/// then cleans up its group and records the exit.
async fn supervise(
    weak: Weak<Inner>,
    generation: u64,
    mut run: Run,
    mut kill_rx: oneshot::Receiver<()>,
    exited: watch::Sender<bool>,
    reader: Option<JoinHandle<()>>,
) {
    let group = run.group();
    let (how, stopped) = tokio::select! {
        status = run.child.wait() => (describe(status), false),
        request = &mut kill_rx => {
            // A stop (`Ok`) is graceful; when every supervisor handle was dropped (`Err`) the
            // group is killed at once: the child never outlives its supervisor.
            let grace = if request.is_ok() { run.grace } else { Duration::ZERO };
            let _ = run.stop(grace).await;
            if request.is_err() {
                run.clean_up(group).await;
                if let Some(reader) = reader {
                    reader.abort();
                }
                return;
            }
            (STOPPED.to_owned(), true)
        }
    };
    run.clean_up(group).await;
    // Let the reader take in the child's last words before the exit is recorded.
    if let Some(mut reader) = reader {
        if tokio::time::timeout(STDERR_DRAIN, &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
    }
    let Some(inner) = weak.upgrade() else {
        return;
    };
    let (pid, last_line) = {
        let mut state = inner.state.lock();
        if state.generation != generation {
            return;
        }
        let Some(running) = state.running.take() else {
            return;
        };
        state.last_exit = Some(how.clone());
        (running.pid, state.tail.back().cloned())
    };
    inner.exits.fetch_add(1, Ordering::Relaxed);
    if stopped {
        tracing::info!(target: "palisade::health", process = %inner.name, pid, "process stopped by the supervisor");
    } else {
        tracing::warn!(target: "palisade::health",
            process = %inner.name,
            pid,
            last_stderr = last_line.as_deref().unwrap_or(""),
            "process {how}"
        );
    }
    // `notify_one` stores a permit when the monitor is not waiting at this instant.
    inner.changes.notify_one();
    exited.send_replace(true);
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    let status = match status {
        Ok(status) => status,
        Err(e) => return format!("lost track of the process: waiting for it failed: {e}"),
    };
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let core = if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            };
            return format!("killed by signal {signal}{core}");
        }
    }
    format!("exited: {status}")
}

/// Reads the child's stderr line by line into the tail ring, keeping at most `MAX_LINE_BYTES`
/// of each line, without ever buffering more than that of a line that never ends.
async fn read_stderr(weak: Weak<Inner>, generation: u64, stderr: ChildStderr, keep: usize) {
    let mut reader = BufReader::new(stderr);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let (consumed, complete) = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    append_capped(&mut line, &buf[..i]);
                    (i + 1, true)
                }
                None => {
                    append_capped(&mut line, buf);
                    (buf.len(), false)
                }
            },
        };
        reader.consume(consumed);
        if complete && !push_line(&weak, generation, &mut line, keep) {
            return;
        }
    }
    if !line.is_empty() {
        push_line(&weak, generation, &mut line, keep);
    }
}

fn append_capped(line: &mut Vec<u8>, bytes: &[u8]) {
    let room = MAX_LINE_BYTES.saturating_sub(line.len());
    line.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// Pushes a line into the tail; false when the supervisor is gone or has moved on to a new run.
fn push_line(weak: &Weak<Inner>, generation: u64, line: &mut Vec<u8>, keep: usize) -> bool {
    let text = decode_line(line);
    line.clear();
    let Some(inner) = weak.upgrade() else {
        return false;
    };
    let mut state = inner.state.lock();
    if state.generation != generation {
        return false;
    }
    while state.tail.len() >= keep.max(1) {
        state.tail.pop_front();
    }
    state.tail.push_back(text);
    true
}

/// UTF-8 (lossy) without the trailing `\r`; a character cut by the 1 KiB limit is dropped.
fn decode_line(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match std::str::from_utf8(line) {
        Ok(s) => s.to_owned(),
        Err(e) if e.error_len().is_none() && line.len() >= MAX_LINE_BYTES => {
            String::from_utf8_lossy(&line[..e.valid_up_to()]).into_owned()
        }
        Err(_) => String::from_utf8_lossy(line).into_owned(),
    }
}

fn format_uptime(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else if s < 2 * 3600 {
        format!("{} min", s / 60)
    } else if s < 2 * 86_400 {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    } else {
        format!("{} d {} h", s / 86_400, (s % 86_400) / 3600)
    }
}

#[async_trait]
impl HealthCheck for ProcessSupervisor {
    /// Healthy while the child runs (`"running (pid 4242) for 12 s"`); unhealthy once it has
    /// exited (`"exited with status 3; last stderr: boom"`) or before it was ever started
    /// (`"not started"`).
    async fn check(&self) -> CheckResult {
        let state = self.inner.state.lock();
        if let Some(running) = &state.running {
            let pid = running
                .pid
                .map_or_else(|| "pid unknown".to_owned(), |p| format!("pid {p}"));
            return CheckResult::healthy(format!(
                "running ({pid}) for {}",
                format_uptime(running.started_at.elapsed())
            ));
        }
        let mut message = state
            .last_exit
            .clone()
            .unwrap_or_else(|| "not started".to_owned());
        if let Some(error) = &state.spawn_error {
            message.push_str("; ");
            message.push_str(error);
        }
        if let Some(line) = state.tail.iter().rev().find(|l| !l.trim().is_empty()) {
            message.push_str("; last stderr: ");
            message.push_str(line);
        }
        CheckResult::unhealthy(message)
    }

    fn changes(&self) -> Option<Arc<Notify>> {
        Some(self.inner.changes.clone())
    }
}

#[async_trait]
impl Restartable for ProcessSupervisor {
    /// Stops the child if it runs, then starts a new one.
    async fn restart(&self) -> Result<(), String> {
        let _guard = self.inner.lifecycle.lock().await;
        self.stop_locked().await;
        self.start_locked()
    }
}
