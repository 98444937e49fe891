//! `ProcessSupervisor` against real child processes.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use palisade_health::{HealthCheck, ProcessSupervisor, Restartable, Status};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;

const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `cond` until it holds, failing the test after `DEADLINE`.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    palisade_testkit::eventually(what, DEADLINE, || std::future::ready(cond())).await;
}

/// Waits for the supervisor's change signal, failing the test after `DEADLINE`.
async fn wait_changed(sup: &ProcessSupervisor) {
    let changes = sup.changes().expect("a supervisor signals its exits");
    tokio::time::timeout(DEADLINE, changes.notified())
        .await
        .expect("changes() was not notified");
}

fn sleeper(name: &str) -> ProcessSupervisor {
    ProcessSupervisor::builder(name, "sleep")
        .arg("1000")
        .build()
}

/// Whether a process with this pid exists (`kill -0`).
fn alive(pid: u32) -> bool {
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_with_status_is_unhealthy_and_quotes_stderr() {
    let sup = ProcessSupervisor::builder("crashy", "sh")
        .args(["-c", "echo starting >&2; echo boom >&2; exit 3"])
        .build();
    sup.start().await.unwrap();
    assert_eq!(sup.starts(), 1);
    wait_changed(&sup).await;

    let result = sup.check().await;
    assert_eq!(result.status, Status::Unhealthy, "{result:?}");
    assert!(
        result.message.contains("exited with status 3"),
        "{result:?}"
    );
    assert!(result.message.contains("last stderr: boom"), "{result:?}");
    assert_eq!(sup.stderr_tail(), vec!["starting", "boom"]);
    assert_eq!(sup.last_exit().as_deref(), Some("exited with status 3"));
    assert_eq!(sup.exits(), 1);
    assert!(!sup.is_running());
    assert_eq!(sup.pid(), None);
    assert_eq!(sup.started_at(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_started_is_unhealthy() {
    let sup = sleeper("idle");
    let result = sup.check().await;
    assert_eq!(result.status, Status::Unhealthy);
    assert_eq!(result.message, "not started");
    assert_eq!((sup.starts(), sup.exits()), (0, 0));
    assert_eq!(sup.name(), "idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_is_healthy_with_its_pid() {
    let sup = sleeper("sleeper");
    sup.start().await.unwrap();
    let pid = sup.pid().unwrap();
    assert!(sup.is_running());
    assert!(sup.uptime().unwrap() < DEADLINE);

    let result = sup.check().await;
    assert_eq!(result.status, Status::Healthy, "{result:?}");
    assert!(
        result
            .message
            .starts_with(&format!("running (pid {pid}) for ")),
        "{result:?}"
    );

    // Starting a running supervisor changes nothing.
    sup.start().await.unwrap();
    assert_eq!(sup.pid(), Some(pid));
    assert_eq!(sup.starts(), 1);
    sup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_externally_is_unhealthy_with_the_signal() {
    let sup = sleeper("victim");
    sup.start().await.unwrap();
    let pid = sup.pid().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_changed(&sup).await;

    let result = sup.check().await;
    assert_eq!(result.status, Status::Unhealthy, "{result:?}");
    assert!(result.message.contains("killed by signal 9"), "{result:?}");
    assert_eq!(sup.exits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_gives_a_new_pid() {
    let sup = sleeper("restarted");
    sup.start().await.unwrap();
    let first = sup.pid().unwrap();

    sup.restart().await.unwrap();
    let second = sup.pid().unwrap();
    assert_ne!(first, second);
    assert_eq!(sup.check().await.status, Status::Healthy);
    assert_eq!((sup.starts(), sup.exits()), (2, 1));
    assert_eq!(
        sup.last_exit().as_deref(),
        Some("stopped by the supervisor")
    );
    wait_until("the first child to be gone", || !alive(first)).await;

    // Restarting an exited process starts it.
    sup.stop().await;
    sup.restart().await.unwrap();
    assert!(sup.is_running());
    assert_eq!((sup.starts(), sup.exits()), (3, 2));
    sup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_is_recorded_as_stopped_by_the_supervisor() {
    let sup = sleeper("stopped");
    sup.start().await.unwrap();
    let pid = sup.pid().unwrap();
    sup.stop().await;

    assert!(!sup.is_running());
    assert!(!alive(pid), "stop() returns once the child is gone");
    let result = sup.check().await;
    assert_eq!(result.status, Status::Unhealthy);
    assert!(
        result.message.contains("stopped by the supervisor"),
        "{result:?}"
    );
    assert_eq!(sup.exits(), 1);

    // Stopping a stopped supervisor does nothing.
    sup.stop().await;
    assert_eq!(sup.exits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_is_an_error_naming_it() {
    let sup = ProcessSupervisor::builder("ghost", "/nonexistent/palisade-no-such-program").build();
    let err = sup.start().await.unwrap_err();
    assert!(
        err.contains("/nonexistent/palisade-no-such-program"),
        "{err}"
    );
    assert!(err.contains("'ghost'"), "{err}");
    assert_eq!(sup.starts(), 0);
    assert!(!sup.is_running());

    let result = sup.check().await;
    assert_eq!(result.status, Status::Unhealthy);
    assert!(
        result
            .message
            .starts_with("not started; cannot start 'ghost'"),
        "{result:?}"
    );
    assert!(sup.restart().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_spawn_can_take_stdout() {
    let stdout = Arc::new(Mutex::new(None));
    let slot = stdout.clone();
    let sup = ProcessSupervisor::builder("echo", "echo")
        .arg("hi")
        .stdout_piped(true)
        .on_spawn(move |child| *slot.lock() = child.stdout.take())
        .build();
    sup.start().await.unwrap();

    let mut pipe = stdout.lock().take().expect("on_spawn took stdout");
    let mut text = String::new();
    tokio::time::timeout(DEADLINE, pipe.read_to_string(&mut text))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text, "hi\n");
    wait_changed(&sup).await;
    assert_eq!(sup.last_exit().as_deref(), Some("exited with status 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_supervisor_kills_the_child() {
    let sup = sleeper("dropped");
    let clone = sup.clone();
    sup.start().await.unwrap();
    let pid = sup.pid().unwrap();
    assert!(alive(pid));

    drop(sup);
    assert!(alive(pid), "a clone still holds the child");
    drop(clone);
    wait_until("the child to be killed", || !alive(pid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stderr_tail_is_bounded() {
    let sup = ProcessSupervisor::builder("chatty", "sh")
        .args([
            "-c",
            "for i in 1 2 3 4 5; do echo line$i >&2; done; head -c 3000 /dev/zero | tr '\\0' x >&2; exit 1",
        ])
        .stderr_tail_lines(3)
        .build();
    sup.start().await.unwrap();
    wait_changed(&sup).await;

    let tail = sup.stderr_tail();
    assert_eq!(tail.len(), 3, "{tail:?}");
    assert_eq!(tail[..2], ["line4", "line5"]);
    assert_eq!(tail[2], "x".repeat(1024), "a long line is cut to 1 KiB");
    assert_eq!(sup.last_exit().as_deref(), Some("exited with status 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_and_current_dir_reach_the_child() {
    let builder = ProcessSupervisor::builder("env", "sh")
        .args(["-c", "echo \"$PALISADE_TEST_VAR $(pwd)\" >&2; exit 0"])
        .env("PALISADE_TEST_VAR", "hello")
        .current_dir("/");
    let debug = format!("{builder:?}");
    assert!(debug.contains("PALISADE_TEST_VAR"), "{debug}");
    assert!(
        !debug.contains("hello"),
        "Debug never shows environment values: {debug}"
    );
    let sup = builder.build();
    sup.start().await.unwrap();
    wait_changed(&sup).await;
    assert_eq!(sup.stderr_tail(), vec!["hello /"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_stop_is_finished_by_the_next_one() {
    let sup = sleeper("impatient");
    sup.start().await.unwrap();
    let pid = sup.pid().unwrap();
    // Polled once (the kill is sent), then cancelled.
    let _ = tokio::time::timeout(Duration::ZERO, sup.stop()).await;
    sup.stop().await;
    assert!(!sup.is_running());
    assert!(!alive(pid));
    assert_eq!(sup.exits(), 1, "one exit, counted once");
    assert_eq!(
        sup.last_exit().as_deref(),
        Some("stopped by the supervisor")
    );
}
