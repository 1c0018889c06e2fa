#!/usr/bin/env bash
# What a rebalance costs the worker, per group protocol (results in BENCHMARKS.md
# §3, "Rebalance pause").
#
# For each protocol of KAFKA_GROUP_PROTOCOL (eager, cooperative, consumer), on a
# fresh 4-partition topic and a fresh database:
#   1. worker A (target/release/sessions-ingest) runs alone while
#      sessions-producer sends the seeded workload live at BENCH_REBALANCE_RATE
#      messages/s (2,000) for about BENCH_REBALANCE_SECONDS (40);
#   2. after a third of that time worker B joins the group;
#   3. once the producer is done and every session is served, the script reports
#      from A's /metrics what the join cost A: partitions revoked from it,
#      sessions it reloaded from ClickHouse, the messages read twice by A and B
#      together (replayed from a last commit after a revocation: consumed minus
#      produced, the workload having no duplicate messages), A's refused offset
#      commits (a rebalance refuses the generation it interrupts), and A's freshness
#      (Kafka timestamp to queryable) from B's start on, beside its freshness
#      before B.
# A partition that keeps its owner keeps its sessions in memory and is never
# replayed under an incremental protocol; under eager every partition is.
#
# Needs ClickHouse and Kafka up (scripts/services.sh start clickhouse kafka) and
# the release binaries (`cargo build --release --bins`). Measures and prints:
# a human summary on stderr, one JSON line per protocol on stdout. Cleans up:
# stops its workers, drops its databases; leaves the topics.
set -euo pipefail

SCRIPT_NAME=bench-rebalance.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

RATE=${BENCH_REBALANCE_RATE:-2000}
SECONDS_LIVE=${BENCH_REBALANCE_SECONDS:-40}
PROTOCOLS=${BENCH_REBALANCE_PROTOCOLS:-eager cooperative consumer}
PORT_A=${BENCH_METRICS_PORT:-9191}
PORT_B=$((PORT_A + 1))
export KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:9092}
export CLICKHOUSE_URL=${CLICKHOUSE_URL:-http://127.0.0.1:8123}
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
RUN_ID=$(date +%s)_$$
CH_MAX_TIME=30
# Sessions of ~50 events in ~33 messages: enough for the live period.
SESSIONS=$((RATE * SECONDS_LIVE / 33))

databases=()
cleanup() {
    terminate bench-rebalance-a 30 >/dev/null 2>&1 || true
    terminate bench-rebalance-b 30 >/dev/null 2>&1 || true
    local database
    for database in "${databases[@]}"; do
        ch "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT

ping_ok "$CLICKHOUSE_URL/ping" || die "ClickHouse is not up at $CLICKHOUSE_URL"
port_open "${KAFKA_BROKERS##*:}" || die "no broker at $KAFKA_BROKERS (scripts/services.sh start kafka)"
[[ -x $BIN/sessions-ingest && -x $BIN/sessions-producer ]] ||
    die "no release binaries in $BIN (cargo build --release --bins)"

# start_worker NAME PORT TOPIC DATABASE PROTOCOL
start_worker() {
    launch "$1" "$BIN/sessions-ingest" "$REPO" env KAFKA_TOPIC="$3" KAFKA_GROUP="$3" \
        KAFKA_GROUP_PROTOCOL="$5" CLICKHOUSE_DATABASE="$4" \
        INGEST_METRICS_ADDR="127.0.0.1:$2" RUST_LOG="${RUST_LOG:-warn}" "$BIN/sessions-ingest"
    local i
    for ((i = 0; i < 300; i++)); do
        http_ok "http://127.0.0.1:$2/readyz" && return 0
        sleep 0.1
    done
    die "worker $1 not ready"
}

# metric PORT SERIES
metric() { metric_sample "http://127.0.0.1:$1/metrics" "$2"; }

# database_of PROTOCOL: the database of one protocol's run.
database_of() { echo "bench_rebalance_${RUN_ID}_$1"; }

measure() {
    local protocol=$1 topic=bench-rebalance-$RUN_ID-$1 database
    local producer_pid before_b revoked_before loaded_before i messages
    local produced=$STATE_DIR/bench-rebalance-producer.json
    database=$(database_of "$protocol")
    "$BIN/sessions-producer" --topic "$topic" --create-topic --partitions 4 --sessions 0 >/dev/null
    start_worker bench-rebalance-a "$PORT_A" "$topic" "$database" "$protocol"
    # No duplicate messages in the workload: a message read twice is a replay.
    "$BIN/sessions-producer" --topic "$topic" --sessions "$SESSIONS" --events-per-session 50 \
        --users 1000 --seed 7 --duplicate-rate 0 --rate "$RATE" >"$produced" 2>/dev/null &
    producer_pid=$!
    sleep $((SECONDS_LIVE / 3))
    before_b=$(metric_histogram "http://127.0.0.1:$PORT_A/metrics" ingest_freshness_seconds)
    revoked_before=$(metric "$PORT_A" ingest_partitions_revoked_total)
    loaded_before=$(metric "$PORT_A" ingest_sessions_loaded_total)
    say "$protocol: worker B joins"
    start_worker bench-rebalance-b "$PORT_B" "$topic" "$database" "$protocol"
    wait "$producer_pid"
    messages=$(json_get messages <"$produced")
    # Every message read by one of them (replays count twice), then a last flush.
    for ((i = 0; i < 600; i++)); do
        (($(metric "$PORT_A" ingest_messages_consumed_total) + $(metric "$PORT_B" ingest_messages_consumed_total) >= messages)) && break
        sleep 0.1
    done
    sleep 2
    python3 - "$protocol" \
        "$(python3 scripts/histogram_summary.py "" "$before_b")" \
        "$(python3 scripts/histogram_summary.py "$before_b" "$(metric_histogram "http://127.0.0.1:$PORT_A/metrics" ingest_freshness_seconds)")" \
        "$(($(metric "$PORT_A" ingest_partitions_revoked_total) - revoked_before))" \
        "$(metric "$PORT_A" ingest_partitions_assigned)" \
        "$(($(metric "$PORT_A" ingest_sessions_loaded_total) - loaded_before))" \
        "$(($(metric "$PORT_A" ingest_messages_consumed_total) + $(metric "$PORT_B" ingest_messages_consumed_total) - messages))" \
        "$(metric "$PORT_A" ingest_kafka_commit_failures_total)" <<'EOF'
import json, sys
protocol, before, after = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
revoked, kept, reloaded, read_twice, commit_failures = (int(x) for x in sys.argv[4:9])
print(json.dumps({"protocol": protocol, "partitionsRevokedFromA": revoked,
    "partitionsAKept": kept, "sessionsReloadedByA": reloaded,
    "messagesReadTwice": read_twice, "commitFailuresOfA": commit_failures, "freshnessOfABeforeB": before,
    "freshnessOfAFromBOn": after}))
EOF
    terminate bench-rebalance-b 30 >/dev/null 2>&1
    terminate bench-rebalance-a 30 >/dev/null 2>&1
}

for protocol in $PROTOCOLS; do
    # Named here: measure runs in a subshell, whose changes never reach cleanup.
    databases+=("$(database_of "$protocol")")
    result=$(measure "$protocol")
    echo "$result"
    say "$result"
done
