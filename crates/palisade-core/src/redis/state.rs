//! What a Redis node says about its role, replication and cluster: parsed from `INFO
//! replication` and `CLUSTER INFO` text (pure, tested without a server).

use serde::Serialize;

/// Role and replication state of the node a connection talks to (the primary, or a node of
/// the cluster), with the cluster's state on a cluster. Shown by health checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServerState {
    /// `single`, `sentinel` or `cluster`: how Palisade reaches Redis.
    pub topology: &'static str,
    /// `master` or `slave`, as Redis says it (`role:`).
    pub role: String,
    /// Replicas connected to this primary (`connected_slaves:`).
    pub connected_replicas: u32,
    /// Replicas whose link is `online` (from the `slaveN:` lines).
    pub online_replicas: u32,
    /// On a replica: whether its link to the primary is up (`master_link_status:up`).
    pub primary_link_up: Option<bool>,
    /// On a cluster: the cluster's state.
    pub cluster: Option<ClusterState>,
}

/// A cluster's state from `CLUSTER INFO`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ClusterState {
    /// `cluster_state:ok`.
    pub ok: bool,
    /// Slots served (`cluster_slots_ok`), of 16384.
    pub slots_ok: u32,
    /// Slots in `PFAIL` or `FAIL` state.
    pub slots_failing: u32,
    /// Nodes known (`cluster_known_nodes`).
    pub known_nodes: u32,
    /// Primaries serving slots (`cluster_size`).
    pub size: u32,
}

fn fields(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
}

impl ServerState {
    /// Parses `INFO replication`; unknown or missing fields stay at their defaults.
    pub fn from_info_replication(text: &str) -> ServerState {
        let mut s = ServerState::default();
        for (k, v) in fields(text) {
            match k {
                "role" => s.role = v.to_owned(),
                "connected_slaves" => s.connected_replicas = v.parse().unwrap_or(0),
                "master_link_status" => s.primary_link_up = Some(v == "up"),
                k if k.starts_with("slave")
                    && k[5..].bytes().all(|b| b.is_ascii_digit())
                    && v.split(',').any(|f| f == "state=online") =>
                {
                    s.online_replicas += 1;
                }
                _ => {}
            }
        }
        s
    }

    /// The nodes of a cluster as one: `master` when every one is a primary, replicas summed,
    /// the primary link down when any node's is.
    pub fn combine(nodes: &[ServerState]) -> ServerState {
        let mut s = ServerState {
            role: if !nodes.is_empty() && nodes.iter().all(|n| n.role == "master") {
                "master".to_owned()
            } else {
                nodes
                    .iter()
                    .map(|n| n.role.as_str())
                    .find(|r| *r != "master")
                    .unwrap_or_default()
                    .to_owned()
            },
            ..ServerState::default()
        };
        for n in nodes {
            s.connected_replicas += n.connected_replicas;
            s.online_replicas += n.online_replicas;
            if let Some(up) = n.primary_link_up {
                s.primary_link_up = Some(s.primary_link_up.unwrap_or(true) && up);
            }
        }
        s
    }

    /// Whether Palisade can write through this connection: the node is a primary (every
    /// node, on a cluster) and, on a cluster, the cluster's state is `ok`. A replica answers
    /// reads but refuses writes (`READONLY`).
    pub fn is_ok(&self) -> bool {
        self.role == "master" && self.cluster.as_ref().is_none_or(|c| c.ok)
    }

    /// One line for a health check: `primary, 1 of 1 replicas online` or `cluster ok: 16384
    /// slots, 3 primaries, 6 nodes; primary, 1 replica online`.
    pub fn summary(&self) -> String {
        let role = match self.role.as_str() {
            "master" => format!(
                "primary, {} of {} replicas online",
                self.online_replicas, self.connected_replicas
            ),
            "slave" => match self.primary_link_up {
                Some(true) => "replica, link to its primary up".to_owned(),
                _ => "replica, link to its primary DOWN".to_owned(),
            },
            "" => "role unknown".to_owned(),
            other => format!("role {other}"),
        };
        match &self.cluster {
            Some(c) => format!(
                "cluster {}: {} slots ok, {} failing, {} primaries, {} nodes; {role}",
                if c.ok { "ok" } else { "FAIL" },
                c.slots_ok,
                c.slots_failing,
                c.size,
                c.known_nodes
            ),
            None => role,
        }
    }
}

impl ClusterState {
    /// Parses `CLUSTER INFO`.
    pub fn from_cluster_info(text: &str) -> ClusterState {
        let mut c = ClusterState::default();
        let mut pfail = 0;
        let mut fail = 0;
        for (k, v) in fields(text) {
            let n = v.parse().unwrap_or(0);
            match k {
                "cluster_state" => c.ok = v == "ok",
                "cluster_slots_ok" => c.slots_ok = n,
                "cluster_slots_pfail" => pfail = n,
                "cluster_slots_fail" => fail = n,
                "cluster_known_nodes" => c.known_nodes = n,
                "cluster_size" => c.size = n,
                _ => {}
            }
        }
        c.slots_failing = pfail + fail;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_with_replicas() {
        let s = ServerState::from_info_replication(
            "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
             slave0:ip=127.0.0.1,port=7001,state=online,offset=1,lag=0\r\n\
             slave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=0\r\n\
             master_failover_state:no-failover\r\n",
        );
        assert_eq!(s.role, "master");
        assert_eq!((s.connected_replicas, s.online_replicas), (2, 1));
        assert!(s.is_ok());
        assert_eq!(s.summary(), "primary, 1 of 2 replicas online");
    }

    #[test]
    fn replica_and_cluster() {
        let mut s = ServerState::from_info_replication(
            "role:slave\nmaster_host:127.0.0.1\nmaster_link_status:down\n",
        );
        assert!(!s.is_ok());
        assert_eq!(s.summary(), "replica, link to its primary DOWN");
        s = ServerState::from_info_replication("role:master\nconnected_slaves:0\n");
        s.cluster = Some(ClusterState::from_cluster_info(
            "cluster_state:fail\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:10923\r\n\
             cluster_slots_pfail:0\r\ncluster_slots_fail:5461\r\ncluster_known_nodes:3\r\n\
             cluster_size:3\r\n",
        ));
        assert!(!s.is_ok());
        assert_eq!(
            s.summary(),
            "cluster FAIL: 10923 slots ok, 5461 failing, 3 primaries, 3 nodes; primary, 0 of 0 replicas online"
        );
        assert_eq!(
            ServerState::from_info_replication("garbage").summary(),
            "role unknown"
        );
    }
}
