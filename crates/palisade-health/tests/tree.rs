//! A supervised child's whole process tree stops with it, on real processes: wrappers that do
//! not forward signals (`sh -c 'server & wait'`), a graceful `SIGTERM` first, and a
//! supervising process killed with `SIGKILL`.
#![allow(clippy::unwrap_used)]
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use palisade_health::{ProcessSupervisor, Restartable};

const DEADLINE: Duration = Duration::from_secs(10);
/// Set in the environment of `supervising_parent`: the file its child writes its pids to.
const PARENT_PIDFILE: &str = "PALISADE_TREE_PIDFILE";

use palisade_testkit::running;

fn pidfile(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("palisade-tree-{tag}-{}", std::process::id()))
}

/// The pids a wrapper script wrote (`$$` and its background server's `$!`).
async fn pids(path: &Path) -> Vec<u32> {
    let mut found = Vec::new();
    palisade_testkit::eventually("the wrapper wrote its pids", DEADLINE, || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        found = text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        std::future::ready(found.len() == 2 && text.ends_with('\n'))
    })
    .await;
    found
}

async fn gone(what: &str, pids: &[u32]) {
    palisade_testkit::eventually(what, DEADLINE, || {
        std::future::ready(pids.iter().all(|&p| !running(p)))
    })
    .await;
}

/// A wrapper that starts a server in the background and waits, forwarding no signal: the
/// shape of `sh -c 'server & wait'`, `npx` and friends.
fn wrapper(name: &str, file: &Path, trap: &str) -> ProcessSupervisor {
    let script = format!(r#"{trap} sleep 1000 & echo "$$ $!" > "$0"; wait"#);
    ProcessSupervisor::builder(name, "sh")
        .args(["-c", &script])
        .arg(file)
        .stop_grace(Duration::from_millis(500))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_reaches_the_wrappers_children_and_a_restart_leaves_no_orphan() {
    let file = pidfile("restart");
    let sup = wrapper("wrapped", &file, "");
    sup.start().await.unwrap();
    let first = pids(&file).await;
    assert!(first.iter().all(|&p| running(p)), "{first:?}");

    std::fs::remove_file(&file).unwrap();
    sup.restart().await.unwrap();
    gone("the first wrapper and its server", &first).await;
    let second = pids(&file).await;
    assert!(second.iter().all(|&p| running(p)), "{second:?}");

    sup.stop().await;
    gone("the second wrapper and its server", &second).await;
    assert_eq!(
        sup.last_exit().as_deref(),
        Some("stopped by the supervisor")
    );
    let _ = std::fs::remove_file(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_asks_with_sigterm_first() {
    let file = pidfile("term");
    let said = pidfile("term-said");
    // The wrapper says goodbye on SIGTERM, then exits.
    let trap = format!(r#"trap 'echo bye > "{}"; exit 0' TERM;"#, said.display());
    let sup = wrapper("polite", &file, &trap);
    sup.start().await.unwrap();
    let pids = pids(&file).await;
    sup.stop().await;
    gone("the wrapper and its server", &pids).await;
    assert_eq!(std::fs::read_to_string(&said).unwrap().trim(), "bye");
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&said);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_ignores_sigterm_is_killed_after_the_grace() {
    let file = pidfile("stubborn");
    // Ignored signals are inherited: neither the wrapper nor its server exits on SIGTERM.
    let sup = wrapper("stubborn", &file, r#"trap "" TERM;"#);
    sup.start().await.unwrap();
    let pids = pids(&file).await;
    sup.stop().await;
    gone("the wrapper and its server", &pids).await;
    let _ = std::fs::remove_file(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_child_exits_its_leftover_children_are_killed() {
    let file = pidfile("crash");
    // The wrapper exits at once (a crash), leaving its server behind.
    let script = r#"sleep 1000 & echo "$$ $!" > "$0"; exit 3"#;
    let sup = ProcessSupervisor::builder("crashing", "sh")
        .args(["-c", script])
        .arg(&file)
        .build();
    sup.start().await.unwrap();
    let pids = pids(&file).await;
    gone("the crashed wrapper's server", &pids).await;
    palisade_testkit::eventually("the exit is recorded", DEADLINE, || {
        std::future::ready(sup.last_exit().as_deref() == Some("exited with status 3"))
    })
    .await;
    let _ = std::fs::remove_file(&file);
}

/// The supervising process of `killing_the_supervising_process_kills_the_whole_tree`, started
/// by it (`--ignored --exact supervising_parent`): supervises a wrapper, then waits forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by killing_the_supervising_process_kills_the_whole_tree"]
async fn supervising_parent() {
    let Some(file) = std::env::var_os(PARENT_PIDFILE) else {
        return; // run by hand: nothing to do
    };
    let sup = wrapper("orphaned", Path::new(&file), "");
    sup.start().await.unwrap();
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_supervising_process_kills_the_whole_tree() {
    let file = pidfile("parent");
    let mut parent = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "supervising_parent", "--ignored", "--nocapture"])
        .env(PARENT_PIDFILE, &file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pids = pids(&file).await;
    assert!(pids.iter().all(|&p| running(p)), "{pids:?}");
    parent.kill().unwrap(); // SIGKILL: no destructor, no handler runs in the parent
    parent.wait().unwrap();
    gone(
        "the wrapper (parent-death signal) and its server (the group's guard)",
        &pids,
    )
    .await;
    let _ = std::fs::remove_file(&file);
}
