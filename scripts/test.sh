#!/usr/bin/env bash
# The whole test suite: installs what is missing, starts the local services
# that are not already up (ClickHouse 18.16, Apache Kafka, chDB (scripts/chdb_server.py), the
# three-broker Kafka cluster, the ClickHouse cluster on ZooKeeper), runs
# `cargo test --workspace --no-fail-fast` against them (every test binary runs,
# even after one fails), and on exit stops exactly the
# services it started. Extra arguments go to `cargo test`, e.g.
#   scripts/test.sh -p sessions-ingest -- --nocapture
# Exit code: cargo's.
set -euo pipefail

SCRIPT_NAME=test.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

SERVICES_SH=$REPO/scripts/services.sh
CLICKHOUSE_HTTP_PORT=${CLICKHOUSE_HTTP_PORT:-8123}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CLUSTER_BASE=${KAFKA_CLUSTER_BASE:-9200}
CHDB_PORT=${CHDB_PORT:-8124}
export CLICKHOUSE_HTTP_PORT KAFKA_PORT KAFKA_CLUSTER_BASE CHDB_PORT

bash scripts/install-deps.sh

# The build needs ~4 GB under the target directory and the services' data a
# few more; a disk that fills up mid-link shows only as `ld ... Bus error`.
# Say so before that happens (a warning: the build may still fit).
MIN_FREE_GB=${MIN_FREE_GB:-8}
target_dir=${CARGO_TARGET_DIR:-$REPO/target}
mkdir -p "$target_dir"
free_gb=$(df -P -BG "$target_dir" | awk 'NR == 2 { sub(/G$/, "", $4); print $4 }')
if [[ -n $free_gb && $free_gb -lt $MIN_FREE_GB ]]; then
    say "WARNING: ${free_gb} GB free under $target_dir, the build and the services need ~${MIN_FREE_GB} GB; a full disk fails the link step with a Bus error"
fi

started=()
cleanup() {
    local index
    # In reverse: the cluster's nodes before its ZooKeeper.
    for ((index = ${#started[@]} - 1; index >= 0; index--)); do
        bash "$SERVICES_SH" stop "${started[index]}" || true
    done
}
cargo_pid=
# On INT/TERM: stop cargo and the test binaries (their own process group),
# then the EXIT trap stops the services.
on_signal() {
    if [[ -n $cargo_pid ]]; then
        kill -TERM -- "-$cargo_pid" 2>/dev/null || true
        wait "$cargo_pid" 2>/dev/null || true
    fi
    exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# The single server, the broker, the current engine, the three-broker Kafka
# cluster (its nodes launched together: they elect a controller among themselves),
# and the local ClickHouse cluster (ZooKeeper first, then its four nodes).
cluster_nodes=$(bash "$SERVICES_SH" cluster-nodes)
# shellcheck disable=SC2086 # the nodes' names, one group each
for group in clickhouse kafka chdb "kafka-b1 kafka-b2 kafka-b3" zookeeper $cluster_nodes; do
    for svc in $group; do
        if ! bash "$SERVICES_SH" status "$svc" >/dev/null 2>&1; then
            started+=("$svc")
        fi
    done
    # shellcheck disable=SC2086 # a group is several names
    bash "$SERVICES_SH" start $group
done

export CLICKHOUSE_URL="http://127.0.0.1:$CLICKHOUSE_HTTP_PORT"
export CLICKHOUSE_MODERN_URL="http://127.0.0.1:$CHDB_PORT"
export KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
# The three-broker cluster, for the broker-loss tests.
export KAFKA_CLUSTER_BROKERS="127.0.0.1:$((KAFKA_CLUSTER_BASE + 1)),127.0.0.1:$((KAFKA_CLUSTER_BASE + 2)),127.0.0.1:$((KAFKA_CLUSTER_BASE + 3))"
export SESSIONS_SERVICES_SCRIPT=$SERVICES_SH
# The whole suite runs everything: a test whose service is missing fails, even if
# the caller's shell opted out of a service for a partial run (testkit/src/require.rs).
unset SESSIONS_TESTS_ALLOW_MISSING
# The tests' name for it: not CLICKHOUSE_CLUSTER, which every binary a test starts
# would inherit and take for its own setting.
export CLICKHOUSE_CLUSTER_NAME=${CLUSTER_NAME:-sessions_cluster}
CLICKHOUSE_CLUSTER_URL=$(bash "$SERVICES_SH" cluster-urls)
export CLICKHOUSE_CLUSTER_URL

say "cargo test --workspace --no-fail-fast $*"
rc=0
# In the background and in its own session so that a signal to this script
# is handled at once (bash defers traps while a foreground child runs).
setsid cargo test --workspace --no-fail-fast "$@" </dev/null &
cargo_pid=$!
wait "$cargo_pid" || rc=$?
cargo_pid=
say "cargo test exited with $rc"
exit "$rc"
