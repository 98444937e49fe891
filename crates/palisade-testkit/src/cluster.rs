//! Redis Cluster for the tests: [`shared_cluster`], the 3-primary cluster `scripts/test` starts
//! once for every test process, and [`RedisCluster`], a private cluster of `redis-server`
//! processes for tests that kill nodes, fail over or move slots.
//!
//! Nodes are plain `redis-server --cluster-enabled yes` processes on spare loopback ports,
//! without persistence; a node's `nodes.conf` lives in its own directory, so a restarted node
//! rejoins with its identity. [`key_slot`] and [`key_in_slot`] compute slots locally (CRC16 with
//! hash tags, as the server does).

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::Duration;

use crate::process::{ServerProcess, TempDir, info_field, poll, query, role, spare_ports};

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// `cluster-node-timeout` of a [`RedisCluster`] (ms): small, so a killed primary is failed over
/// (by one of its replicas) about two seconds after it dies.
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// How long starting, restarting or reconfiguring a cluster may take before the fixture gives up.
const SETTLE: Duration = Duration::from_secs(30);

/// The seed URLs (`redis://127.0.0.1:<port>`, one per primary) of the shared 3-primary cluster
/// that `scripts/test` starts and exports as `PALISADE_TEST_CLUSTER` (comma-separated).
///
/// Panics, loudly, when the variable is unset or a seed does not answer with
/// `cluster_state:ok`: these tests never skip. Tests on the shared cluster must leave it as they
/// found it (no killed nodes, no moved slots: use a [`RedisCluster`] for that) and use
/// [`crate::unique`] keys.
pub fn shared_cluster() -> Vec<String> {
    let var = std::env::var("PALISADE_TEST_CLUSTER").unwrap_or_default();
    let seeds: Vec<String> = var
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(
        !seeds.is_empty(),
        "PALISADE_TEST_CLUSTER is not set: run the tests with scripts/test, which starts the \
         shared Redis Cluster and exports PALISADE_TEST_CLUSTER=redis://127.0.0.1:p1,..."
    );
    for seed in &seeds {
        let info: redis::RedisResult<String> = redis::Client::open(seed.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query(&mut c));
        match info {
            Ok(info) if info_field(&info, "cluster_state") == Some("ok") => {}
            Ok(info) => panic!(
                "the shared Redis Cluster node {seed} (PALISADE_TEST_CLUSTER) is not healthy:\n{info}"
            ),
            Err(e) => panic!(
                "the shared Redis Cluster node {seed} (PALISADE_TEST_CLUSTER) does not answer \
                 ({e}); run the tests with scripts/test, which starts the shared cluster"
            ),
        }
    }
    seeds
}

/// The hash slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag (the text between the
/// first `{` and the next `}`, when not empty), modulo 16384; what `CLUSTER KEYSLOT` answers.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            match rest.iter().position(|&b| b == b'}') {
                Some(len) if len > 0 => Some(&rest[..len]),
                _ => None,
            }
        })
        .unwrap_or(bytes);
    crc16(hashed) % SLOTS
}

/// A key in hash slot `slot`: `{<tag>}<name>`, with the first tag `t0`, `t1`, ... that hashes to
/// `slot`. Keys made with the same `slot` share the tag, so they can go into one multi-key
/// command.
pub fn key_in_slot(slot: u16, name: &str) -> String {
    assert!(slot < SLOTS, "slot {slot} is not a hash slot (0..16384)");
    (0..10_000_000u32)
        .map(|i| format!("t{i}"))
        .find(|tag| crc16(tag.as_bytes()) % SLOTS == slot)
        .map(|tag| format!("{{{tag}}}{name}"))
        .unwrap_or_else(|| panic!("no hash tag found for slot {slot}"))
}

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), Redis Cluster's key hash.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Which node (id) serves each slot range, as one node sees the cluster.
type SlotOwners = BTreeMap<(u16, u16), String>;

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    port: u16,
    flags: Vec<String>,
    /// The primary's id, for a replica.
    primary: Option<String>,
    /// Slot ranges (inclusive) it serves; migrating/importing markers are left out.
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    fn is_primary(&self) -> bool {
        self.has_flag("master")
    }

    fn is_failing(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?")
    }
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            // 127.0.0.1:30001@40001[,hostname]
            let addr = fields[1].split(['@', ',']).next()?;
            let port = addr.rsplit_once(':')?.1.parse().ok()?;
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => {
                        let n = s.parse().ok()?;
                        Some((n, n))
                    }
                })
                .collect();
            Some(NodeLine {
                id: fields[0].to_owned(),
                port,
                flags: fields[2].split(',').map(str::to_owned).collect(),
                primary: (fields[3] != "-").then(|| fields[3].to_owned()),
                slots,
            })
        })
        .collect()
}

/// `CLUSTER NODES` of the node on `port`.
fn cluster_nodes(port: u16) -> redis::RedisResult<Vec<NodeLine>> {
    let text: String = query(port, None, redis::cmd("CLUSTER").arg("NODES"))?;
    Ok(parse_nodes(&text))
}

/// A private Redis Cluster: `redis-server` processes on spare loopback ports, joined with
/// `redis-cli --cluster create`. Every node is killed (SIGKILL) and reaped, and the temporary
/// directory with the nodes' `nodes.conf` files removed, on drop.
///
/// Nodes have `cluster-node-timeout` [`NODE_TIMEOUT_MS`] and no persistence: a killed primary
/// with a replica is failed over by it; one without loses its data and its slots stay
/// unavailable (`CLUSTERDOWN`) until it is restarted.
#[derive(Debug)]
pub struct RedisCluster {
    /// Every node, in the order of [`Self::ports`]. Declared before `dir`, so the processes are
    /// killed before their directory is removed.
    nodes: Vec<ServerProcess>,
    /// The nodes that were primaries when the cluster was created.
    seeds: Vec<u16>,
    /// Node ids by port (a restarted node keeps its id: it is in its `nodes.conf`).
    ids: HashMap<u16, String>,
    /// How many of the nodes are replicas (failovers swap roles; the count stays).
    replicas: usize,
    dir: TempDir,
}

impl RedisCluster {
    /// Starts `primaries * (1 + replicas_per_primary)` nodes, creates the cluster with
    /// `redis-cli --cluster create ... --cluster-replicas <replicas_per_primary>` (the slots
    /// split evenly across the primaries) and waits, up to 30 s, until it is stable (see
    /// [`Self::wait_until_stable`]). Panics when `primaries < 3` (the least `redis-cli` accepts)
    /// or the cluster does not come up.
    pub fn start(primaries: usize, replicas_per_primary: usize) -> Self {
        assert!(
            primaries >= 3,
            "a Redis Cluster needs at least 3 primaries (redis-cli --cluster create refuses fewer), not {primaries}"
        );
        let count = primaries * (1 + replicas_per_primary);
        let dir = TempDir::new("palisade-cluster");
        // A client port and a cluster-bus port (--cluster-port) for every node.
        let ports = spare_ports(2 * count);
        let mut nodes: Vec<ServerProcess> = ports[..count]
            .iter()
            .zip(&ports[count..])
            .map(|(&port, &bus)| {
                let node_dir = dir.path().join(format!("node-{port}"));
                std::fs::create_dir_all(&node_dir).unwrap();
                let args: Vec<String> = [
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    &node_dir.to_string_lossy(),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &node_dir
                        .join(format!("nodes-{port}.conf"))
                        .to_string_lossy(),
                    "--cluster-port",
                    &bus.to_string(),
                    "--cluster-node-timeout",
                    &NODE_TIMEOUT_MS.to_string(),
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
                    "Redis Cluster node".into(),
                    port,
                    args,
                    node_dir.join("redis.log"),
                )
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_ready(Duration::from_secs(10));
        }

        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(ports[..count].iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", &replicas_per_primary.to_string()])
            .arg("--cluster-yes")
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-cli ({e}); it must be installed (scripts/test installs redis-server, which brings it)")
            });
        let out = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && !out.contains("[ERR]"),
            "redis-cli --cluster create failed ({}):\n{out}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );

        let ids = nodes
            .iter()
            .map(|n| {
                let id: String = query(n.port, None, redis::cmd("CLUSTER").arg("MYID"))
                    .unwrap_or_else(|e| panic!("CLUSTER MYID on node {} failed: {e}", n.port));
                (n.port, id)
            })
            .collect();
        let mut cluster = RedisCluster {
            nodes,
            seeds: Vec::new(),
            ids,
            replicas: primaries * replicas_per_primary,
            dir,
        };
        cluster.wait_until_stable();
        cluster.seeds = cluster.primary_ports();
        assert_eq!(
            cluster.seeds.len(),
            primaries,
            "the new cluster has {} primaries, not {primaries}",
            cluster.seeds.len()
        );
        cluster
    }

    /// `redis://127.0.0.1:<port>` of each node that was a primary when the cluster was created
    /// (ordered by the slots they were given): seeds for a cluster client, which discovers the
    /// rest of the cluster from any of them.
    pub fn seeds(&self) -> Vec<String> {
        self.seeds
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The ports of every node, primaries and replicas, killed or not.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The ports of the nodes that serve slots now, as a running node sees the cluster, ordered
    /// by their lowest slot (a killed primary that was not failed over is still one).
    pub fn primary_ports(&self) -> Vec<u16> {
        let mut primaries: Vec<(u16, u16)> = self
            .topology()
            .into_iter()
            .filter(|n| n.is_primary() && !n.slots.is_empty())
            .map(|n| (n.slots.iter().map(|r| r.0).min().unwrap_or(0), n.port))
            .collect();
        primaries.sort_unstable();
        primaries.into_iter().map(|(_, port)| port).collect()
    }

    /// The ports of the replicas now, as a running node sees the cluster, in ascending order.
    pub fn replica_ports(&self) -> Vec<u16> {
        let mut replicas: Vec<u16> = self
            .topology()
            .into_iter()
            .filter(|n| n.has_flag("slave"))
            .map(|n| n.port)
            .collect();
        replicas.sort_unstable();
        replicas
    }

    /// The port of the primary that the replica on `replica_port` replicates now. Panics when
    /// that node is not a replica.
    pub fn primary_of(&self, replica_port: u16) -> u16 {
        let topology = self.topology();
        let replica = topology
            .iter()
            .find(|n| n.port == replica_port)
            .unwrap_or_else(|| panic!("node {replica_port} is not in the cluster"));
        let primary = replica
            .primary
            .as_ref()
            .unwrap_or_else(|| panic!("node {replica_port} is not a replica"));
        topology
            .iter()
            .find(|n| &n.id == primary)
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("the primary of node {replica_port} is unknown"))
    }

    /// The port of the primary that serves `slot` now, as a running node sees the cluster
    /// (during a migration, the source until [`Self::finish_migration`]).
    pub fn primary_for_slot(&self, slot: u16) -> u16 {
        assert!(slot < SLOTS, "slot {slot} is not a hash slot (0..16384)");
        self.topology()
            .into_iter()
            .find(|n| n.is_primary() && n.slots.iter().any(|&(lo, hi)| (lo..=hi).contains(&slot)))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
    }

    /// The hash slot of `key` (see [`key_slot`]).
    pub fn key_slot(key: &str) -> u16 {
        key_slot(key)
    }

    /// Moves `slot` from the primary on `from` to the one on `to`, the way `redis-cli --cluster
    /// reshard` does: [`Self::begin_migration`], then [`Self::finish_migration`]. Afterwards
    /// every node answers `-MOVED <slot> 127.0.0.1:<to>` for the slot's keys, and the keys that
    /// were in the slot are on `to`.
    pub fn migrate_slot(&self, slot: u16, from: u16, to: u16) {
        self.begin_migration(slot, from, to);
        self.finish_migration(slot, from, to);
    }

    /// Starts moving `slot` from `from` to `to`: `CLUSTER SETSLOT <slot> IMPORTING` on `to`,
    /// then `MIGRATING` on `from`, and no keys moved. Until [`Self::finish_migration`], `from`
    /// serves the slot's keys it still holds and answers `-ASK <slot> 127.0.0.1:<to>` for the
    /// others (a new key, or one moved with [`Self::migrate_keys`]); `to` serves them only after
    /// `ASKING`. Panics when `from` does not serve the slot.
    pub fn begin_migration(&self, slot: u16, from: u16, to: u16) {
        let owner = self.primary_for_slot(slot);
        assert_eq!(
            owner, from,
            "slot {slot} is served by node {owner}, not by node {from}"
        );
        assert_ne!(
            from, to,
            "slot {slot} cannot move from node {from} to itself"
        );
        self.setslot(to, slot, "IMPORTING", from);
        self.setslot(from, slot, "MIGRATING", to);
    }

    /// Moves every key of `slot` from `from` to `to` (`CLUSTER GETKEYSINSLOT`, then `MIGRATE`
    /// in batches of 100), leaving the slot in its migrating state: part of
    /// [`Self::finish_migration`], and a way to make `from` answer `-ASK` for keys it held.
    pub fn migrate_keys(&self, slot: u16, from: u16, to: u16) {
        loop {
            let keys: Vec<String> = query(
                from,
                None,
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(100),
            )
            .unwrap_or_else(|e| panic!("CLUSTER GETKEYSINSLOT {slot} on node {from} failed: {e}"));
            if keys.is_empty() {
                return;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("REPLACE")
                .arg("KEYS")
                .arg(&keys);
            let _: redis::Value = query(from, None, &migrate).unwrap_or_else(|e| {
                panic!(
                    "MIGRATE of {} keys of slot {slot} from node {from} to node {to} failed: {e}",
                    keys.len()
                )
            });
        }
    }

    /// Completes a migration that [`Self::begin_migration`] started: moves the keys still on
    /// `from` ([`Self::migrate_keys`]), then `CLUSTER SETSLOT <slot> NODE <to>` on `to`, `from`
    /// and every other primary, and waits (up to 30 s) until every running node sees `to` as
    /// the slot's owner.
    pub fn finish_migration(&self, slot: u16, from: u16, to: u16) {
        self.migrate_keys(slot, from, to);
        let to_id = self.id(to).to_owned();
        self.setslot(to, slot, "NODE", to);
        self.setslot(from, slot, "NODE", to);
        for primary in self.primary_ports() {
            if primary != to && primary != from && self.is_running(primary) {
                self.setslot(primary, slot, "NODE", to);
            }
        }
        poll(
            &format!("every node to see slot {slot} on node {to}"),
            SETTLE,
            || {
                for node in self.nodes.iter().filter(|n| n.is_running()) {
                    let view =
                        cluster_nodes(node.port).map_err(|e| format!("node {}: {e}", node.port))?;
                    let owner = view.iter().find(|n| {
                        n.is_primary() && n.slots.iter().any(|&(lo, hi)| (lo..=hi).contains(&slot))
                    });
                    if owner.map(|n| n.id.as_str()) != Some(to_id.as_str()) {
                        return Err(format!(
                            "node {} sees the slot on {:?}",
                            node.port,
                            owner.map(|n| n.port)
                        ));
                    }
                }
                Ok(())
            },
        );
    }

    /// Kills the node on `port` (SIGKILL, as a crash would) and reaps it. A primary's replica
    /// takes over about 2 s later; the other nodes flag the node `fail`.
    pub fn kill(&mut self, port: u16) {
        self.node_mut(port).kill();
    }

    /// Starts the node on `port` again (after [`Self::kill`]; a running node is killed first),
    /// with its `nodes.conf`, so it rejoins with its id but no data. Waits until it answers
    /// and, when every node runs, until the cluster is stable again ([`Self::wait_until_stable`]):
    /// a primary that was failed over rejoins as a replica of its successor.
    pub fn restart(&mut self, port: u16) {
        let node = self.node_mut(port);
        node.spawn();
        node.wait_ready(Duration::from_secs(10));
        if self.nodes.iter().all(ServerProcess::is_running) {
            self.wait_until_stable();
        }
    }

    /// A manual failover: `CLUSTER FAILOVER` on the replica on `replica_port`, which swaps
    /// roles with its primary without losing writes. Waits until it serves its primary's slots
    /// and the cluster is stable again.
    pub fn failover(&self, replica_port: u16) {
        let primary = self.primary_of(replica_port);
        let _: () = query(replica_port, None, redis::cmd("CLUSTER").arg("FAILOVER"))
            .unwrap_or_else(|e| panic!("CLUSTER FAILOVER on node {replica_port} failed: {e}"));
        poll(
            &format!("replica {replica_port} to take over from primary {primary}"),
            SETTLE,
            || match role(replica_port, None) {
                Ok(r) if r == "master" => Ok(()),
                Ok(r) => Err(format!("ROLE {r}")),
                Err(e) => Err(e.to_string()),
            },
        );
        self.wait_until_stable();
    }

    /// Waits (up to 30 s) until every running node reports `cluster_state:ok`, knows every
    /// node, sees no node failing, sees every replica as one, and agrees with the others on
    /// which node serves each of the 16384 slots, and every replica's link to its primary is
    /// up. Meant for when every node
    /// runs: with a killed node it times out.
    pub fn wait_until_stable(&self) {
        let count = self.nodes.len();
        poll("the Redis Cluster to be stable", SETTLE, || {
            let mut agreed: Option<(u16, SlotOwners)> = None;
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                let port = node.port;
                let info: String = query(port, None, redis::cmd("CLUSTER").arg("INFO"))
                    .map_err(|e| format!("CLUSTER INFO on node {port}: {e}"))?;
                let state = info_field(&info, "cluster_state");
                let known = info_field(&info, "cluster_known_nodes");
                if state != Some("ok") || known != Some(count.to_string().as_str()) {
                    return Err(format!(
                        "node {port}: cluster_state {state:?}, cluster_known_nodes {known:?} (of {count})"
                    ));
                }
                let view = cluster_nodes(port)
                    .map_err(|e| format!("CLUSTER NODES on node {port}: {e}"))?;
                if let Some(failing) = view.iter().find(|n| n.is_failing()) {
                    return Err(format!("node {port} sees node {} failing", failing.port));
                }
                let slots: SlotOwners = view
                    .iter()
                    .filter(|n| n.is_primary())
                    .flat_map(|n| n.slots.iter().map(|&r| (r, n.id.clone())))
                    .collect();
                let covered: u32 = slots.keys().map(|&(lo, hi)| u32::from(hi - lo) + 1).sum();
                if covered != u32::from(SLOTS) {
                    return Err(format!("node {port} sees {covered} slots served"));
                }
                match &agreed {
                    Some((first, theirs)) if theirs != &slots => {
                        return Err(format!(
                            "nodes {first} and {port} disagree on the slots' owners"
                        ));
                    }
                    Some(_) => {}
                    None => agreed = Some((port, slots)),
                }
                // `--cluster create` makes the replicas with CLUSTER REPLICATE, which spreads
                // by gossip: until every node sees them all, they may look like empty primaries.
                let replicas = view.iter().filter(|n| n.has_flag("slave")).count();
                if replicas != self.replicas {
                    return Err(format!(
                        "node {port} sees {replicas} replicas (of {})",
                        self.replicas
                    ));
                }
                if view.iter().any(|n| n.port == port && n.has_flag("slave")) {
                    let replication: String =
                        query(port, None, redis::cmd("INFO").arg("replication"))
                            .map_err(|e| format!("INFO replication on node {port}: {e}"))?;
                    let link = info_field(&replication, "master_link_status");
                    if link != Some("up") {
                        return Err(format!("replica {port}: master_link_status {link:?}"));
                    }
                }
            }
            Ok(())
        });
    }

    /// The cluster as the first running node that answers sees it.
    fn topology(&self) -> Vec<NodeLine> {
        let mut errors = Vec::new();
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            match cluster_nodes(node.port) {
                Ok(view) => return view,
                Err(e) => errors.push(format!("node {}: {e}", node.port)),
            }
        }
        panic!("no Redis Cluster node answers CLUSTER NODES: {errors:?}")
    }

    fn setslot(&self, on: u16, slot: u16, subcommand: &str, node: u16) {
        let _: () = query(
            on,
            None,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(subcommand)
                .arg(self.id(node)),
        )
        .unwrap_or_else(|e| {
            panic!("CLUSTER SETSLOT {slot} {subcommand} <node {node}> on node {on} failed: {e}")
        });
    }

    fn id(&self, port: u16) -> &str {
        self.ids
            .get(&port)
            .unwrap_or_else(|| panic!("node {port} is not in the cluster"))
    }

    fn is_running(&self, port: u16) -> bool {
        self.nodes.iter().any(|n| n.port == port && n.is_running())
    }

    fn node_mut(&mut self, port: u16) -> &mut ServerProcess {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("node {port} is not in the cluster"))
    }

    /// The directory with the nodes' directories (`node-<port>/`: `nodes-<port>.conf`,
    /// `redis.log`), for a look at the logs when a test fails.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_the_redis_cluster_spec() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("bar"), 5061);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(key_slot("foo{{bar}}zap"), crc16(b"{bar") % SLOTS);
        assert_eq!(key_slot("foo{bar}{zap}"), key_slot("bar"));
    }

    #[test]
    fn keys_in_a_slot_hash_to_it() {
        for slot in [0, 1, 5460, 5461, 12182, SLOTS - 1] {
            let key = key_in_slot(slot, "name");
            assert_eq!(key_slot(&key), slot, "{key}");
            assert!(key.ends_with("}name"));
        }
    }

    #[test]
    fn cluster_nodes_lines_parse() {
        let text = "07c3 127.0.0.1:30004@31004 slave e7d1 0 1426238317239 4 connected\n\
                    e7d1 127.0.0.1:30001@31001,host myself,master - 0 0 1 connected 0-5460 7000 [5461->-abc]\n\
                    292f 127.0.0.1:30002@31002 master,fail? - 0 0 2 disconnected\n";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].port, 30004);
        assert_eq!(nodes[0].primary.as_deref(), Some("e7d1"));
        assert!(!nodes[0].is_primary());
        assert_eq!(nodes[1].port, 30001);
        assert_eq!(nodes[1].slots, vec![(0, 5460), (7000, 7000)]);
        assert!(nodes[1].is_primary() && !nodes[1].is_failing());
        assert!(nodes[2].is_failing() && nodes[2].slots.is_empty());
    }
}
