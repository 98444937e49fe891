//! A supervised child and everything it starts live and die together.
//!
//! - The child runs in a process group of its own, so a stop reaches wrappers' children too
//!   (`sh -c`, `npx`, `uvx` start the real server as a grandchild).
//! - On Linux it gets `SIGKILL` when its parent dies (`PR_SET_PDEATHSIG`), even by `kill -9`.
//! - Grandchildren are not told of a parent's death, so a *guard* joins the group: a `/bin/sh`
//!   that sleeps, gets `SIGUSR1` when the supervising process dies, and then kills the whole
//!   group. It also holds the group's id while the supervisor cleans up, so a reused id can
//!   never make the supervisor signal an unrelated group.

use tokio::process::{Child, Command};

/// A signal sent to a child's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Asks the processes to exit.
    Term,
    /// Kills them.
    Kill,
}

/// The guard's script: `$1` is the group. It waits forever; on `SIGUSR1` (its parent died) it
/// kills the group, itself included.
#[cfg(target_os = "linux")]
const GUARD_SCRIPT: &str = r#"trap 'kill -s KILL -- -"$1" 2>/dev/null; exit 0' USR1
while :; do sleep 86400 & wait $!; done"#;

/// Makes `cmd` start a process group of its own and, on Linux, die with this process.
pub(crate) fn prepare(cmd: &mut Command) {
    #[cfg(unix)]
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    die_with_parent(cmd, libc::SIGKILL);
}

/// Starts the guard of the group `pgid` (the child's pid). `None` (with a warning) when it
/// cannot start: the child itself still dies with its parent, only its own children might not.
pub(crate) fn spawn_guard(name: &str, pgid: u32) -> Option<Child> {
    #[cfg(target_os = "linux")]
    {
        let Ok(group) = i32::try_from(pgid) else {
            return None;
        };
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", GUARD_SCRIPT, "palisade-guard", &pgid.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(group)
            .kill_on_drop(true);
        die_with_parent(&mut cmd, libc::SIGUSR1);
        match cmd.spawn() {
            Ok(guard) => Some(guard),
            Err(e) => {
                tracing::warn!(target: "palisade::health", process = name, error = %e, "cannot start the guard that kills the process group if this process dies; grandchildren may outlive it");
                None
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (name, pgid);
        None
    }
}

/// Sends `signal` to every process of the group `pgid`. Errors (the group is gone) are
/// ignored. Never call it once the group's last member may have been reaped: the id could
/// belong to someone else by then (the guard, reaped last, prevents that).
pub(crate) fn signal_group(pgid: u32, signal: Signal) {
    #[cfg(unix)]
    {
        let Ok(group) = i32::try_from(pgid) else {
            return;
        };
        if group <= 1 {
            return; // 0 and 1 would mean our own group, or every process
        }
        let sig = match signal {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        };
        // SAFETY: killpg has no memory-safety preconditions; a wrong id is an error return.
        #[allow(unsafe_code)]
        unsafe {
            libc::killpg(group, sig);
        }
    }
    #[cfg(not(unix))]
    let _ = (pgid, signal);
}

/// Asks the kernel to send `signal` to the process `cmd` starts when this process dies, and
/// makes the child exit at once if this process died before that request took effect.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command, signal: i32) {
    let parent = std::process::id();
    let hook = move || {
        // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid are async-signal-safe system calls that
        // touch no memory of the (forked, single-threaded) child.
        #[allow(unsafe_code)]
        let (set, ppid) = unsafe {
            (
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::c_ulong::try_from(signal).unwrap_or(9),
                ),
                libc::getppid(),
            )
        };
        if set != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if u32::try_from(ppid).ok() != Some(parent) {
            // The parent died between fork and prctl: nobody would signal this child. (No
            // allocation here: another thread may have held the allocator's lock at fork.)
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: the hook runs between fork and exec and only makes async-signal-safe system
    // calls; it does not allocate.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(hook);
    }
}
