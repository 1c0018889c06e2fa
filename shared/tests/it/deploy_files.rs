//! The deployment files that cannot run on the development machines (no Docker):
//! `docker-compose.yml`, `docker-compose.cluster.yml` and the configs they mount.
//! Checked as far as this machine allows: they parse, every mounted file exists,
//! every dependency is a service, the services get the settings the binaries need
//! (a required `CURSOR_SECRET`, the cluster's), and Prometheus scrapes the services
//! by their names on the compose network.

use sessions_testkit::serial;
use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Runs a Python check (python3 is a dependency of the test bed: the chDB server).
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

/// The checks every compose file passes: dependencies and mounted files exist (XML
/// and YAML ones parse), and the query service refuses to start without a secret.
const COMMON_CHECKS: &str = r#"
import os, re, sys, json
import xml.dom.minidom as minidom
try:
    import yaml
except ImportError:
    print("PyYAML missing: cannot parse the compose file"); sys.exit(1)
def load(path):
    compose = yaml.safe_load(open(path))
    services = compose["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, (path, name, dependency)
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert os.path.exists(source), (path, name, source)
                if source.endswith(".xml"):
                    minidom.parse(source)
                if source.endswith(".yml"):
                    yaml.safe_load(open(source))
    secret = services["query"]["environment"]["CURSOR_SECRET"]
    assert secret.startswith("${CURSOR_SECRET:?"), (path, secret)
    return services
"#;

#[test]
fn the_compose_file_provisions_prometheus_and_grafana() {
    let _turn = serial::shared();
    python(&format!(
        "{COMMON_CHECKS}{}",
        r#"
services = load("docker-compose.yml")
kafka_version = re.search(r"<kafka.version>(.*?)</kafka.version>", open("scripts/kafka/pom.xml").read()).group(1)
# The compose files run the Kafka release the scripts and tests run.
assert services["kafka"]["image"] == f"apache/kafka:{kafka_version}", services["kafka"]["image"]
assert services["kafka-init"]["image"] == services["kafka"]["image"]
prometheus = yaml.safe_load(open("deploy/prometheus/prometheus.docker.yml"))
targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in prometheus["scrape_configs"]}
assert targets == {"sessions-ingest": ["ingest:9091"], "sessions-query": ["query:8080"]}, targets
assert services["ingest"]["environment"]["INGEST_METRICS_ADDR"] == "0.0.0.0:9091"
assert services["query"]["environment"]["QUERY_ADDR"] == "0.0.0.0:8080"
assert prometheus["rule_files"] == ["alerts.rules.yml"]
mounted = [v.split(":")[1] for v in services["prometheus"]["volumes"]]
assert "/etc/prometheus/alerts.rules.yml" in mounted, mounted
datasource = yaml.safe_load(open("deploy/grafana/provisioning/datasources/prometheus.yml"))
assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
dashboards = yaml.safe_load(open("deploy/grafana/provisioning/dashboards/sessions.yml"))
path = dashboards["providers"][0]["options"]["path"]
assert any(v.split(":")[1].startswith(path) for v in services["grafana"]["volumes"]), path
json.load(open("deploy/grafana/sessions.json"))
"#
    ));
}

#[test]
fn the_cluster_compose_file_and_its_configs_hang_together() {
    let _turn = serial::shared();
    python(&format!(
        "{COMMON_CHECKS}{}",
        r#"
services = load("docker-compose.cluster.yml")
kafka_version = re.search(r"<kafka.version>(.*?)</kafka.version>", open("scripts/kafka/pom.xml").read()).group(1)
assert services["kafka"]["image"] == f"apache/kafka:{kafka_version}", services["kafka"]["image"]
nodes = ["ch-s1-r1", "ch-s1-r2", "ch-s2-r1", "ch-s2-r2"]
assert set(nodes) | {"keeper", "kafka", "migrate", "ingest", "query"} <= set(services), sorted(services)
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
"#
    ));
}
