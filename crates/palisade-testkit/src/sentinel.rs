//! Redis Sentinel for the tests: [`SentinelGroup`], a primary, one replica and three sentinels
//! watching them, all private `redis-server` processes on spare loopback ports, for tests of
//! sentinel-discovered primaries and of failover.

use std::collections::HashMap;
use std::time::Duration;

use crate::process::{ServerProcess, TempDir, info_field, poll, query, role, spare_ports};

/// The name the sentinels monitor the primary under.
pub const MASTER_NAME: &str = "mymaster";

/// `down-after-milliseconds` of the sentinels: a killed primary is failed over about 3-5 s after
/// it dies. Not less: on a loaded 2-core CI machine a sentinel whose pings are answered late
/// would declare a healthy primary down and fail over again.
pub const DOWN_AFTER_MS: u64 = 2000;

/// How long starting or reconfiguring the group may take before the fixture gives up.
const SETTLE: Duration = Duration::from_secs(30);

/// A primary, a replica of it (`--replicaof`) and three sentinels monitoring it as
/// [`MASTER_NAME`] with quorum 2, `down-after-milliseconds` [`DOWN_AFTER_MS`],
/// `failover-timeout` 5000 and `parallel-syncs` 1. The data nodes have no persistence and no
/// password. Every process is killed (SIGKILL) and reaped, and the temporary directory with the
/// sentinels' configuration files and the logs removed, on drop.
#[derive(Debug)]
pub struct SentinelGroup {
    /// The initial primary, then the initial replica. Declared before `dir`, so the processes
    /// are killed before their directory is removed.
    nodes: Vec<ServerProcess>,
    sentinels: Vec<ServerProcess>,
    password: Option<String>,
    dir: TempDir,
}

impl SentinelGroup {
    /// Starts the group and waits (up to 30 s) until the replica is in sync and every sentinel
    /// knows the primary, the replica and the two other sentinels. Panics when it does not come
    /// up.
    pub fn start() -> Self {
        Self::start_inner(None, 1)
    }

    /// [`Self::start`] with `replicas` replicas (1 to 4): after a failover the new primary
    /// still has replicas, without restarting the old one.
    pub fn start_with_replicas(replicas: usize) -> Self {
        assert!((1..=4).contains(&replicas), "1 to 4 replicas");
        Self::start_inner(None, replicas)
    }

    /// [`Self::start`], with the sentinels requiring `password` (`requirepass`; they use it
    /// with each other too, `sentinel sentinel-pass`). The data nodes still need none.
    pub fn start_with_sentinel_password(password: &str) -> Self {
        assert!(
            !password.is_empty() && !password.contains(char::is_whitespace),
            "the sentinel password must be non-empty and without whitespace"
        );
        Self::start_inner(Some(password.to_owned()), 1)
    }

    fn start_inner(password: Option<String>, replicas: usize) -> Self {
        let dir = TempDir::new("palisade-sentinel");
        let ports = spare_ports(4 + replicas);
        let data = 1 + replicas;
        let nodes: Vec<ServerProcess> = ports[..data]
            .iter()
            .map(|&port| {
                let args = [
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    &dir.path().to_string_lossy(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    // A replica syncs at once, not after the default 5 s wait for more replicas.
                    "--repl-diskless-sync-delay",
                    "0",
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
                ServerProcess::new(
                    "Redis (sentinel group data node)".into(),
                    port,
                    args,
                    dir.path().join(format!("node-{port}.log")),
                )
            })
            .collect();
        let sentinels: Vec<ServerProcess> = ports[data..]
            .iter()
            .map(|&port| {
                let conf = dir.path().join(format!("sentinel-{port}.conf"));
                let mut text = format!(
                    "port {port}\n\
                     bind 127.0.0.1\n\
                     dir {dir}\n\
                     sentinel resolve-hostnames no\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    dir = dir.path().display(),
                    primary = ports[0],
                );
                if let Some(pw) = &password {
                    text.push_str(&format!("requirepass {pw}\nsentinel sentinel-pass {pw}\n"));
                }
                std::fs::write(&conf, text).unwrap_or_else(|e| {
                    panic!(
                        "cannot write the sentinel configuration {}: {e}",
                        conf.display()
                    )
                });
                ServerProcess::new(
                    "Redis Sentinel".into(),
                    port,
                    vec![conf.to_string_lossy().into_owned(), "--sentinel".into()],
                    dir.path().join(format!("sentinel-{port}.log")),
                )
            })
            .collect();
        let mut group = SentinelGroup {
            nodes,
            sentinels,
            password,
            dir,
        };

        let primary = ports[0];
        group.nodes[0].spawn();
        group.nodes[0].wait_ready(Duration::from_secs(10));
        for node in &mut group.nodes[1..] {
            node.spawn_with(&[
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.to_string(),
            ]);
            node.wait_ready(Duration::from_secs(10));
            wait_for_link(node.port);
        }

        for sentinel in &mut group.sentinels {
            sentinel.spawn();
        }
        for sentinel in &mut group.sentinels {
            sentinel.wait_ready(Duration::from_secs(10));
        }
        group.wait_until_sentinels_agree(primary, &ports[1..data]);
        group
    }

    /// [`MASTER_NAME`].
    pub fn master_name(&self) -> &str {
        MASTER_NAME
    }

    /// The sentinels' addresses, `127.0.0.1:<port>`.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The sentinels' URLs, `redis://127.0.0.1:<port>` (without the password, if they have
    /// one: see [`Self::sentinel_password`]).
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}", s.port))
            .collect()
    }

    /// The sentinels' ports.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// The password the sentinels require, if they require one.
    pub fn sentinel_password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The ports of the two data nodes (the initial primary first), killed or not.
    pub fn node_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The port of the current primary, as the first running sentinel that answers reports it
    /// (`SENTINEL get-master-addr-by-name`).
    pub fn primary_port(&self) -> u16 {
        let mut errors = Vec::new();
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            match self.reported_primary(sentinel.port) {
                Ok(port) => return port,
                Err(e) => errors.push(e),
            }
        }
        panic!("no sentinel reports the primary of {MASTER_NAME}: {errors:?}")
    }

    /// Kills the current primary ([`Self::primary_port`]) with SIGKILL, as a crash would, reaps
    /// it and returns its port.
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary_port();
        self.node_mut(port).kill();
        port
    }

    /// Polls the sentinels until every running one reports a primary other than `old_port`
    /// (the same one) and that node answers `ROLE` as `master`; returns its port. Panics after
    /// `deadline` (a failover takes about 2-6 s after the primary dies).
    pub fn wait_for_failover(&self, old_port: u16, deadline: Duration) -> u16 {
        poll(
            &format!("the sentinels to fail {MASTER_NAME} over from port {old_port}"),
            deadline,
            || {
                let mut reported = Vec::new();
                for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
                    reported.push(self.reported_primary(sentinel.port)?);
                }
                let new = *reported.first().ok_or("no sentinel runs")?;
                if new == old_port || reported.iter().any(|&p| p != new) {
                    return Err(format!("the sentinels report primaries {reported:?}"));
                }
                match role(new, None) {
                    Ok(r) if r == "master" => Ok(new),
                    Ok(r) => Err(format!("the new primary {new} answers ROLE {r}")),
                    Err(e) => Err(format!("the new primary {new} does not answer: {e}")),
                }
            },
        )
    }

    /// Starts the data node on `port` again (after a kill; a running node is killed first),
    /// empty. It comes back as a replica of the primary the sentinels report, as a node whose
    /// configuration a sentinel had rewritten would (or as the primary, if they still report
    /// it). Waits (up to 30 s) until its replication link is up and every sentinel sees it as a
    /// healthy replica.
    pub fn restart(&mut self, port: u16) {
        let primary = self.primary_port();
        let node = self.node_mut(port);
        if primary == port {
            node.spawn();
            node.wait_ready(Duration::from_secs(10));
            return;
        }
        node.spawn_with(&[
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.to_string(),
        ]);
        node.wait_ready(Duration::from_secs(10));
        wait_for_link(port);
        self.wait_until_sentinels_agree(primary, &[port]);
    }

    /// Kills the sentinel on `port` (SIGKILL) and reaps it: for tests of clients that move on
    /// to the next sentinel.
    pub fn kill_sentinel(&mut self, port: u16) {
        self.sentinels
            .iter_mut()
            .find(|s| s.port == port)
            .unwrap_or_else(|| panic!("no sentinel on port {port}"))
            .kill();
    }

    /// The primary that the sentinel on `sentinel_port` reports.
    fn reported_primary(&self, sentinel_port: u16) -> Result<u16, String> {
        let addr: Option<(String, u16)> = query(
            sentinel_port,
            self.password.as_deref(),
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER_NAME),
        )
        .map_err(|e| format!("sentinel {sentinel_port}: {e}"))?;
        addr.map(|(_, port)| port)
            .ok_or_else(|| format!("sentinel {sentinel_port} does not know {MASTER_NAME}"))
    }

    /// Waits until every running sentinel reports `primary`, sees it up, sees each of
    /// `replicas` as a healthy replica and knows every other running sentinel.
    fn wait_until_sentinels_agree(&self, primary: u16, replicas: &[u16]) {
        let running = self.sentinels.iter().filter(|s| s.is_running()).count();
        poll(
            &format!("the sentinels to agree on primary {primary} and replicas {replicas:?}"),
            SETTLE,
            || {
                for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
                    let port = sentinel.port;
                    let pw = self.password.as_deref();
                    let reported = self.reported_primary(port)?;
                    if reported != primary {
                        return Err(format!("sentinel {port} reports primary {reported}"));
                    }
                    let master: HashMap<String, String> = query(
                        port,
                        pw,
                        redis::cmd("SENTINEL").arg("master").arg(MASTER_NAME),
                    )
                    .map_err(|e| format!("sentinel {port}: {e}"))?;
                    let flags = master.get("flags").map(String::as_str);
                    if flags != Some("master") {
                        return Err(format!("sentinel {port} flags the primary {flags:?}"));
                    }
                    let known: Vec<HashMap<String, String>> = query(
                        port,
                        pw,
                        redis::cmd("SENTINEL").arg("replicas").arg(MASTER_NAME),
                    )
                    .map_err(|e| format!("sentinel {port}: {e}"))?;
                    for replica in replicas {
                        let flags = known
                            .iter()
                            .find(|r| r.get("port") == Some(&replica.to_string()))
                            .and_then(|r| r.get("flags"));
                        if flags.map(String::as_str) != Some("slave") {
                            return Err(format!(
                                "sentinel {port} flags replica {replica} {flags:?}"
                            ));
                        }
                    }
                    let others: Vec<HashMap<String, String>> = query(
                        port,
                        pw,
                        redis::cmd("SENTINEL").arg("sentinels").arg(MASTER_NAME),
                    )
                    .map_err(|e| format!("sentinel {port}: {e}"))?;
                    if others.len() + 1 < running {
                        return Err(format!(
                            "sentinel {port} knows {} other sentinels, not {}",
                            others.len(),
                            running - 1
                        ));
                    }
                }
                Ok(())
            },
        );
    }

    fn node_mut(&mut self, port: u16) -> &mut ServerProcess {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no data node on port {port}"))
    }

    /// The directory with the sentinels' configuration files and every process's log, for a
    /// look when a test fails.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// Waits (up to 30 s) until the replica on `port` reports `master_link_status:up`.
fn wait_for_link(port: u16) {
    poll(
        &format!("replica {port} to sync with its primary"),
        SETTLE,
        || {
            let info: String = query(port, None, redis::cmd("INFO").arg("replication"))
                .map_err(|e| e.to_string())?;
            match info_field(&info, "master_link_status") {
                Some("up") => Ok(()),
                other => Err(format!("master_link_status {other:?}")),
            }
        },
    );
}
