//! The deployment files that cannot run on the development machines (no Docker):
//! `docker-compose.cluster.yml` and the ClickHouse configs it mounts. Checked as far as
//! this machine allows: they parse, every mounted file exists, every dependency is a
//! service, and the services get the cluster settings the binaries need.

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Runs a Python check (python3 is a dependency of the test bed: the chDB shim).
fn python(script: &str) {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .current_dir(repo())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_cluster_compose_file_and_its_configs_hang_together() {
    python(
        r#"
import os, sys, json
import xml.dom.minidom as minidom
try:
    import yaml
except ImportError:
    print("PyYAML missing: cannot parse the compose file"); sys.exit(1)
compose = yaml.safe_load(open("docker-compose.cluster.yml"))
services = compose["services"]
nodes = ["ch-s1-r1", "ch-s1-r2", "ch-s2-r1", "ch-s2-r2"]
assert set(nodes) | {"keeper", "kafka", "migrate", "ingest", "query"} <= set(services), sorted(services)
for name, service in services.items():
    for dependency in service.get("depends_on") or {}:
        assert dependency in services, (name, dependency)
    for volume in service.get("volumes") or []:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert os.path.exists(source), (name, source)
            if source.endswith(".xml"):
                minidom.parse(source)
for node in nodes:
    env = services[node]["environment"]
    assert env["CLICKHOUSE_REPLICA"] == node and env["CLICKHOUSE_SHARD"] == node[4], node
for binary in ["migrate", "ingest", "query"]:
    env = services[binary]["environment"]
    assert env["CLICKHOUSE_CLUSTER"] == "sessions_cluster", binary
    assert env["CLICKHOUSE_URL"].split(",") == [f"http://{n}:8123" for n in nodes], binary
# The cluster the services name is the one the nodes define, with every node in it.
config = minidom.parse("deploy/clickhouse-cluster/node.xml")
cluster = config.getElementsByTagName("sessions_cluster")
assert len(cluster) == 1
hosts = [h.firstChild.data for h in cluster[0].getElementsByTagName("host")]
assert hosts == nodes, hosts
"#,
    );
}
