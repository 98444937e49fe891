//! The multi-process fixtures work, checked with the `redis` crate (plain connections to single
//! nodes), `redis-cli` and `openssl`: the shared cluster answers, a private cluster serves every
//! slot, redirects, moves a slot and fails over, a sentinel group fails over after its primary
//! is killed, and Redis over TLS takes only clients that trust its CA (and, with mutual TLS,
//! only clients with a certificate from it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use palisade_testkit::cluster::{SLOTS, key_in_slot, key_slot};
use palisade_testkit::{RedisCluster, SentinelGroup, TlsRedis, shared_cluster, unique};

fn conn(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"))
}

fn info_has(port: u16, section: &[&str], line: &str) -> bool {
    let mut cmd = redis::cmd(section[0]);
    cmd.arg(&section[1..]);
    let info: String = cmd.query(&mut conn(port)).unwrap();
    info.lines().any(|l| l.trim() == line)
}

fn role(port: u16) -> String {
    let reply: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn(port)).unwrap();
    match &reply[0] {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("unexpected ROLE reply {other:?}"),
    }
}

/// GET `key` on `port`: the value, or the error code and the node it redirects to.
fn get(port: u16, key: &str) -> Result<Option<String>, (String, Option<u16>)> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut conn(port))
        .map_err(|e: redis::RedisError| {
            (
                e.code().unwrap_or("?").to_owned(),
                // (`127.0.0.1:<port>`, slot)
                e.redirect_node()
                    .map(|(addr, _)| addr.rsplit_once(':').unwrap().1.parse().unwrap()),
            )
        })
}

fn set(port: u16, key: &str, value: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut conn(port))
        .unwrap_or_else(|e| panic!("SET {key} on {port}: {e}"));
}

#[test]
fn shared_cluster_serves_every_slot() {
    let seeds = shared_cluster();
    assert_eq!(seeds.len(), 3, "{seeds:?}");
    let ports: Vec<u16> = seeds
        .iter()
        .map(|s| s.rsplit_once(':').unwrap().1.parse().unwrap())
        .collect();
    for &port in &ports {
        assert!(info_has(port, &["CLUSTER", "INFO"], "cluster_state:ok"));
        assert!(info_has(
            port,
            &["CLUSTER", "INFO"],
            "cluster_slots_assigned:16384"
        ));
    }
    // A key is served by exactly one seed; the others redirect to it.
    let key = unique("shared-cluster");
    let owner = ports
        .iter()
        .copied()
        .find(|&p| get(p, &key).is_ok())
        .expect("no seed serves the key");
    for &port in ports.iter().filter(|&&p| p != owner) {
        assert_eq!(get(port, &key), Err(("MOVED".into(), Some(owner))));
    }
    set(owner, &key, "v");
    let _: () = redis::cmd("DEL").arg(&key).query(&mut conn(owner)).unwrap();
}

#[test]
fn cluster_serves_every_slot_redirects_and_moves_a_slot() {
    let started = Instant::now();
    let cluster = RedisCluster::start(3, 0);
    eprintln!("RedisCluster::start(3, 0) took {:?}", started.elapsed());
    let ports = cluster.ports();
    assert_eq!(ports.len(), 3);
    assert_eq!(cluster.seeds().len(), 3);
    assert_eq!(cluster.primary_ports().len(), 3);
    assert!(cluster.replica_ports().is_empty());
    for &port in &ports {
        assert!(info_has(port, &["CLUSTER", "INFO"], "cluster_state:ok"));
        assert!(info_has(
            port,
            &["CLUSTER", "INFO"],
            "cluster_known_nodes:3"
        ));
    }
    for key in ["foo", "{user1000}.following", "a{}b", &unique("k")] {
        let server: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn(ports[0]))
            .unwrap();
        assert_eq!(RedisCluster::key_slot(key), server, "{key}");
    }
    assert_eq!(cluster.primary_for_slot(0), cluster.primary_ports()[0]);
    assert_eq!(
        cluster.primary_for_slot(SLOTS - 1),
        cluster.primary_ports()[2]
    );

    let key = unique("cluster-key");
    let slot = key_slot(&key);
    let from = cluster.primary_for_slot(slot);
    let to = *ports.iter().find(|&&p| p != from).unwrap();
    set(from, &key, "before");
    assert_eq!(get(to, &key), Err(("MOVED".into(), Some(from))));

    // Mid-migration: the source serves what it still holds and sends the rest to the target
    // with ASK; the target serves the slot only after ASKING.
    cluster.begin_migration(slot, from, to);
    let absent = format!("{{{key}}}:absent");
    assert_eq!(key_slot(&absent), slot);
    assert_eq!(get(from, &key), Ok(Some("before".into())));
    assert_eq!(get(from, &absent), Err(("ASK".into(), Some(to))));
    assert_eq!(get(to, &absent), Err(("MOVED".into(), Some(from))));
    let mut target = conn(to);
    let (_, value): ((), Option<String>) = redis::pipe()
        .cmd("ASKING")
        .cmd("GET")
        .arg(&absent)
        .query(&mut target)
        .unwrap();
    assert_eq!(value, None);
    cluster.migrate_keys(slot, from, to);
    assert_eq!(get(from, &key), Err(("ASK".into(), Some(to))));
    cluster.finish_migration(slot, from, to);
    assert_eq!(cluster.primary_for_slot(slot), to);
    assert_eq!(get(to, &key), Ok(Some("before".into())));
    for &port in ports.iter().filter(|&&p| p != to) {
        assert_eq!(get(port, &key), Err(("MOVED".into(), Some(to))));
    }

    // And back in one step, with many keys (more than one MIGRATE batch).
    for i in 0..250 {
        set(to, &format!("{{{key}}}:{i}"), &i.to_string());
    }
    let started = Instant::now();
    cluster.migrate_slot(slot, to, from);
    eprintln!("migrate_slot of 251 keys took {:?}", started.elapsed());
    assert_eq!(cluster.primary_for_slot(slot), from);
    assert_eq!(get(from, &key), Ok(Some("before".into())));
    assert_eq!(get(from, &format!("{{{key}}}:249")), Ok(Some("249".into())));
    let count: u64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut conn(from))
        .unwrap();
    assert_eq!(count, 251);
    assert_eq!(get(to, &key), Err(("MOVED".into(), Some(from))));

    // key_in_slot makes keys for a chosen slot.
    let in_slot = key_in_slot(slot, "x");
    set(from, &in_slot, "y");
    assert_eq!(get(from, &in_slot), Ok(Some("y".into())));
}

#[test]
fn cluster_replicas_fail_over_and_killed_nodes_rejoin() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start(3, 1);
    eprintln!("RedisCluster::start(3, 1) took {:?}", started.elapsed());
    assert_eq!(cluster.ports().len(), 6);
    let replicas = cluster.replica_ports();
    assert_eq!(replicas.len(), 3);
    let replica = replicas[0];
    let primary = cluster.primary_of(replica);
    assert_eq!(role(replica), "slave");

    // The slots start split evenly: 0-5460, 5461-10922, 10923-16383.
    let slot = [0, 5461, 10923]
        .into_iter()
        .find(|&s| cluster.primary_for_slot(s) == primary)
        .unwrap();
    let key = key_in_slot(slot, &unique(":k"));
    set(primary, &key, "v");
    let acked: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut conn(primary))
        .unwrap();
    assert_eq!(acked, 1);

    // A manual failover swaps the roles.
    let started = Instant::now();
    cluster.failover(replica);
    eprintln!("failover took {:?}", started.elapsed());
    assert_eq!(cluster.primary_for_slot(slot), replica);
    assert_eq!(role(replica), "master");
    assert_eq!(role(primary), "slave");
    assert_eq!(get(replica, &key), Ok(Some("v".into())));

    // Killing the new primary makes the old one take over again on its own.
    cluster.kill(replica);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    while cluster.primary_for_slot(slot) != primary || role(primary) != "master" {
        assert!(Instant::now() < deadline, "no failover after a kill");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "automatic failover after a kill took {:?}",
        started.elapsed()
    );
    assert_eq!(get(primary, &key), Ok(Some("v".into())));

    // The killed node comes back as a replica of its successor.
    let started = Instant::now();
    cluster.restart(replica);
    eprintln!("restart took {:?}", started.elapsed());
    assert_eq!(role(replica), "slave");
    assert_eq!(cluster.primary_of(replica), primary);
}

#[test]
fn sentinels_fail_over_after_the_primary_is_killed() {
    let started = Instant::now();
    let mut group = SentinelGroup::start();
    eprintln!("SentinelGroup::start took {:?}", started.elapsed());
    assert_eq!(group.master_name(), "mymaster");
    assert_eq!(group.sentinel_addrs().len(), 3);
    assert!(group.sentinel_addrs()[0].starts_with("127.0.0.1:"));
    assert!(group.sentinel_urls()[0].starts_with("redis://127.0.0.1:"));
    assert_eq!(group.sentinel_password(), None);
    let [first, second] = group.node_ports()[..] else {
        panic!("two data nodes")
    };
    assert_eq!(group.primary_port(), first);
    assert_eq!(role(first), "master");
    assert_eq!(role(second), "slave");
    for url in group.sentinel_urls() {
        let mut sentinel = redis::Client::open(url).unwrap().get_connection().unwrap();
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("mymaster")
            .query(&mut sentinel)
            .unwrap();
        assert_eq!(port, first);
    }

    set(first, "fixture-key", "v");
    let acked: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut conn(first))
        .unwrap();
    assert_eq!(acked, 1);

    let killed = group.kill_primary();
    assert_eq!(killed, first);
    let started = Instant::now();
    let new = group.wait_for_failover(killed, Duration::from_secs(30));
    eprintln!("sentinel failover took {:?}", started.elapsed());
    assert_eq!(new, second);
    assert_eq!(group.primary_port(), second);
    assert_eq!(role(second), "master");
    assert_eq!(get(second, "fixture-key"), Ok(Some("v".into())));

    let started = Instant::now();
    group.restart(killed);
    eprintln!("restarting the old primary took {:?}", started.elapsed());
    assert_eq!(role(killed), "slave");
    assert_eq!(get(killed, "fixture-key"), Ok(Some("v".into())));

    // The other sentinels still answer when one is gone.
    group.kill_sentinel(group.sentinel_ports()[0]);
    assert_eq!(group.primary_port(), second);
}

#[test]
fn sentinels_can_require_a_password() {
    let started = Instant::now();
    let group = SentinelGroup::start_with_sentinel_password("s3cret");
    eprintln!(
        "SentinelGroup::start_with_sentinel_password took {:?}",
        started.elapsed()
    );
    assert_eq!(group.sentinel_password(), Some("s3cret"));
    let port = group.sentinel_ports()[0];
    let mut anonymous = redis::Client::open(group.sentinel_urls()[0].as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let err = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg("mymaster")
        .query::<(String, u16)>(&mut anonymous)
        .unwrap_err();
    assert_eq!(err.code(), Some("NOAUTH"), "{err}");
    let mut authed = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{port}"))
        .unwrap()
        .get_connection()
        .unwrap();
    let others: Vec<redis::Value> = redis::cmd("SENTINEL")
        .arg("sentinels")
        .arg("mymaster")
        .query(&mut authed)
        .unwrap();
    assert_eq!(others.len(), 2);
    assert_eq!(group.primary_port(), group.node_ports()[0]);
}

/// `redis-cli --tls <args> -h 127.0.0.1 -p <port> PING`: whether it answered PONG, and what it
/// printed.
fn tls_ping(port: u16, args: &[&Path], flags: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("redis-cli");
    cmd.arg("--tls");
    for (flag, path) in flags.iter().zip(args) {
        cmd.arg(flag).arg(path);
    }
    let out = cmd
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "PING"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (stdout.trim() == "PONG", text)
}

/// `openssl verify -CAfile <ca> <extra> <cert>` succeeds.
fn verifies(ca: &Path, cert: &Path, extra: &[&str]) -> bool {
    Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .args(extra)
        .arg(cert)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn tls_redis_takes_clients_that_trust_its_ca() {
    let started = Instant::now();
    let tls = TlsRedis::start(false);
    eprintln!("TlsRedis::start(false) took {:?}", started.elapsed());
    let port = tls.port();
    assert_eq!(tls.url(), format!("rediss://127.0.0.1:{port}"));
    assert_eq!(tls.url_localhost(), format!("rediss://localhost:{port}"));
    assert!(!tls.requires_client_cert());
    for key in [
        tls.client_key_file(),
        tls.server_key_file(),
        tls.untrusted_client_key_file(),
    ] {
        let pem = std::fs::read_to_string(&key).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{key:?}");
    }
    let ca = tls.ca_file();

    // What rustls checks: the chain, the names, the purposes.
    let server = tls.server_cert_file();
    assert!(verifies(
        &ca,
        &server,
        &["-purpose", "sslserver", "-verify_ip", "127.0.0.1"]
    ));
    assert!(verifies(
        &ca,
        &server,
        &["-purpose", "sslserver", "-verify_hostname", "localhost"]
    ));
    assert!(!verifies(
        &ca,
        &server,
        &["-verify_hostname", "example.com"]
    ));
    assert!(!verifies(&tls.untrusted_ca_file(), &server, &[]));
    assert!(verifies(
        &ca,
        &tls.client_cert_file(),
        &["-purpose", "sslclient"]
    ));
    assert!(!verifies(
        &ca,
        &tls.client_cert_file(),
        &["-purpose", "sslserver"]
    ));
    assert!(verifies(
        &tls.untrusted_ca_file(),
        &tls.untrusted_client_cert_file(),
        &["-purpose", "sslclient"]
    ));
    assert!(!verifies(&ca, &tls.untrusted_client_cert_file(), &[]));

    let (ok, out) = tls_ping(port, &[&ca], &["--cacert"]);
    assert!(ok, "{out}");
    assert_eq!(
        String::from_utf8_lossy(&tls.cli(&["PING"]).stdout).trim(),
        "PONG"
    );
    // Without the CA (the system's CAs only), or with the wrong one, the handshake fails.
    let (ok, out) = tls_ping(port, &[], &[]);
    assert!(!ok, "{out}");
    let (ok, out) = tls_ping(port, &[&tls.untrusted_ca_file()], &["--cacert"]);
    assert!(!ok, "{out}");
    // Plain text gets nothing.
    let plain = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            redis::cmd("PING").query::<String>(&mut c)
        });
    assert!(plain.is_err(), "{plain:?}");
}

#[test]
fn tls_redis_with_client_certs_takes_only_its_clients() {
    let started = Instant::now();
    let tls = TlsRedis::start(true);
    eprintln!("TlsRedis::start(true) took {:?}", started.elapsed());
    assert!(tls.requires_client_cert());
    let port = tls.port();
    let ca = tls.ca_file();
    let flags = ["--cacert", "--cert", "--key"];

    let (ok, out) = tls_ping(
        port,
        &[&ca, &tls.client_cert_file(), &tls.client_key_file()],
        &flags,
    );
    assert!(ok, "{out}");
    let (ok, out) = tls_ping(port, &[&ca], &flags);
    assert!(!ok, "no client certificate: {out}");
    let (ok, out) = tls_ping(
        port,
        &[
            &ca,
            &tls.untrusted_client_cert_file(),
            &tls.untrusted_client_key_file(),
        ],
        &flags,
    );
    assert!(!ok, "a client certificate from another CA: {out}");
}
