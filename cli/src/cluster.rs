//! The local Redis Clusters of `shoplog up --cluster`: one per service database (a service owns
//! its database, clustered or not: a hot stock cannot starve orders of Redis CPU, and one
//! cluster's failover touches one service), each of `shards` primaries with one replica apiece.
//!
//! The nodes are ordinary components (pid files, logs, AOF in their directories); this module
//! makes them a cluster once they run, and reads each node's role and slots for `status`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::layout::{StackSettings, CLUSTER_BASE_PORTS};

/// What a cluster node runs with besides the stack's usual Redis flags: cluster mode, its node
/// table in its own directory, a 3 s node timeout, after which a dead primary's replica is
/// promoted (within a few seconds), and writes refused by a primary whose replica has not been
/// heard from for 10 s (`min-replicas-to-write`): with the services' `WAIT 1` (`REPLICA_ACKS=1`),
/// nothing is acknowledged that only a primary holds. A primary sends a replica that asks for a
/// full resynchronisation its data at once (`repl-diskless-sync-delay 0`, not 5 s): with one
/// replica there is nobody else to wait for, and until it is in sync (a promoted replica's old
/// primary rejoining) `min-replicas-to-write` refuses every write.
pub const NODE_ARGS: [&str; 12] = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "3000",
    "--min-replicas-to-write",
    "1",
    "--min-replicas-max-lag",
    "10",
    "--repl-diskless-sync-delay",
    "0",
];

fn cli(redis_cli: &Path, port: u16, args: &[&str]) -> String {
    Command::new(redis_cli)
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default()
}

fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// Makes each service database's nodes one cluster (`redis-cli --cluster create`, replicas 1),
/// unless they already are (a restart: the nodes read their `nodes.conf`), then waits until
/// every node says the cluster is ok.
pub fn form_all(s: &StackSettings, redis_cli: &Path, timeout: Duration) -> anyhow::Result<()> {
    for (db, _) in CLUSTER_BASE_PORTS {
        let ports = s.cluster_ports(db);
        let Some(first) = ports.first() else {
            continue;
        };
        let info = cli(redis_cli, *first, &["CLUSTER", "INFO"]);
        let assigned = info_field(&info, "cluster_slots_assigned").unwrap_or_default();
        if assigned == "0" {
            let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
            let out = Command::new(redis_cli)
                .args(["--cluster", "create"])
                .args(&nodes)
                .args(["--cluster-replicas", "1", "--cluster-yes"])
                .output()
                .context("cannot run redis-cli --cluster create")?;
            if !out.status.success() {
                anyhow::bail!(
                    "could not make {db}-db's nodes a cluster: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            eprintln!(
                "  {db}-db      cluster of {} primaries formed",
                ports.len() / 2
            );
        }
        let started = Instant::now();
        loop {
            let ok = ports.iter().all(|p| {
                let info = cli(redis_cli, *p, &["CLUSTER", "INFO"]);
                info_field(&info, "cluster_state").as_deref() == Some("ok")
            });
            if ok {
                break;
            }
            if started.elapsed() >= timeout {
                anyhow::bail!(
                    "{db}-db's cluster is not ok after {} s; see `redis-cli -p {first} CLUSTER NODES`",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// A cluster node's role and the slots it serves, as `CLUSTER NODES` says of itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeRole {
    /// `primary` or `replica`.
    pub role: String,
    /// Its slot ranges (`0-5460`), empty for a replica.
    pub slots: Vec<String>,
}

/// What the node on `port` says of itself, if it answers.
pub fn role(redis_cli: &Path, port: u16) -> Option<NodeRole> {
    let nodes = cli(redis_cli, port, &["CLUSTER", "NODES"]);
    parse_myself(&nodes)
}

/// The `myself` line of a `CLUSTER NODES` answer, as a role and slot ranges.
pub fn parse_myself(nodes: &str) -> Option<NodeRole> {
    let line = nodes.lines().find(|l| {
        l.split_whitespace()
            .nth(2)
            .is_some_and(|f| f.split(',').any(|f| f == "myself"))
    })?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let flags = fields.get(2)?;
    let role = if flags.split(',').any(|f| f == "master") {
        "primary"
    } else {
        "replica"
    };
    Some(NodeRole {
        role: role.to_string(),
        slots: fields.iter().skip(8).map(|s| s.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_reads_its_own_role_and_slots() {
        let nodes = "\
07c3 127.0.0.1:6501@16501 master - 0 1 2 connected 5461-10922
e1f2 127.0.0.1:6500@16500 myself,master - 0 0 1 connected 0-5460
9a9a 127.0.0.1:6503@16503 slave e1f2 0 1 4 connected
";
        assert_eq!(
            parse_myself(nodes),
            Some(NodeRole {
                role: "primary".into(),
                slots: vec!["0-5460".into()]
            })
        );
        let replica = "9a9a 127.0.0.1:6503@16503 myself,slave e1f2 0 1 4 connected\n";
        assert_eq!(
            parse_myself(replica).map(|r| r.role),
            Some("replica".into())
        );
    }
}
