//! The monitor supervising real child processes.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_core::{EventFilter, EventKind, Registry};
use palisade_health::{
    CRASH_LOOP_MESSAGE, CheckConfig, HealthMonitor, ProcessSupervisor, RestartPolicy, Status,
};

fn config(initial_backoff: Duration, max_restarts: u32) -> CheckConfig {
    CheckConfig {
        // Exits are noticed at once (the supervisor wakes the monitor); the interval is only
        // for processes that hang.
        interval: Duration::from_secs(30),
        failure_threshold: 1,
        restart: RestartPolicy {
            initial_backoff,
            factor: 2.0,
            max_backoff: Duration::from_secs(10),
            jitter: 0.0,
            max_restarts,
            window: Duration::from_secs(60),
            ..RestartPolicy::default()
        },
        ..CheckConfig::default()
    }
}

async fn until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    palisade_testkit::eventually(what, deadline, || std::future::ready(cond())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_exits_at_once_ends_in_crash_loop_protection() {
    let registry = Registry::new();
    let monitor = HealthMonitor::builder()
        .registry(&registry)
        .build()
        .unwrap();
    let proc = ProcessSupervisor::builder("flaky-mcp", "sh")
        .args(["-c", "echo 'config file missing' >&2; exit 2"])
        .build();
    proc.start().await.unwrap();
    let c = monitor
        .add("flaky-mcp", proc.clone())
        .config(config(Duration::from_millis(20), 3))
        .restartable(Arc::new(proc.clone()))
        .start()
        .unwrap();
    until("crash-loop protection", Duration::from_secs(20), || {
        c.snapshot().crash_loop
    })
    .await;
    let s = c.snapshot();
    assert_eq!(s.restart_count, 3);
    assert_eq!(s.status, Some(Status::Unhealthy));
    assert!(s.message.contains("exited with status 2"), "{}", s.message);
    assert!(s.message.contains("config file missing"), "{}", s.message);
    // The first start plus three restarts, and no more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(proc.starts(), 4);
    let events = monitor.events().recent(&EventFilter::default());
    assert!(events.iter().any(|e| matches!(&e.kind,
        EventKind::StateTransition { reason, .. } if reason.contains(CRASH_LOOP_MESSAGE))));
    monitor.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_from_outside_is_back_within_the_backoff() {
    let monitor = HealthMonitor::builder().build().unwrap();
    let proc = ProcessSupervisor::builder("mcp-files", "sleep")
        .arg("1000")
        .build();
    proc.start().await.unwrap();
    let c = monitor
        .add("mcp-files", proc.clone())
        .config(config(Duration::from_secs(2), 5))
        .restartable(Arc::new(proc.clone()))
        .start()
        .unwrap();
    let report = monitor.check_all().await;
    assert_eq!(report.components["mcp-files"].status, Some(Status::Healthy));
    let pid = proc.pid().unwrap();

    let killed = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    until("a new process", Duration::from_secs(10), || {
        proc.pid().is_some_and(|p| p != pid)
    })
    .await;
    // The first restart does not wait: it is back well within the 2 s initial backoff.
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "took {:?}",
        killed.elapsed()
    );
    let s = c.check_now().await;
    assert_eq!(s.status, Some(Status::Healthy), "{}", s.message);
    assert_eq!(s.restart_count, 1);
    assert_eq!(proc.starts(), 2);
    monitor.shutdown();
    proc.stop().await;
}
