#!/usr/bin/env bash
# The local cluster beside the single server, same workload, same run
# (results in BENCHMARKS.md):
#
#   1. scripts/bench-ingest.sh against the single ClickHouse 18.16 server, then
#      against the local cluster (2 shards x 2 replicas, CLICKHOUSE_CLUSTER): the
#      same seeded topic content, drained by a fresh worker into a fresh database;
#      each keeps its database.
#   2. sessions-query on each database: the first page (limit 50) of random users
#      of the workload, at 1 and at 8 concurrent clients (a Python client, the same
#      for both), p50 and p99.
#
# Needs ClickHouse, Kafka and the cluster up (scripts/services.sh start
# clickhouse kafka cluster). Measures and prints; asserts nothing about timing.
# Drops both databases at the end. Knobs: BENCH_SESSIONS (20000),
# BENCH_EVENTS_PER_SESSION (50), BENCH_USERS (4000), BENCH_REQUESTS (400 per
# concurrency), BENCH_QUERY_PORT (18090).
set -euo pipefail

SCRIPT_NAME=bench-cluster.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
ensure_cursor_secret # sessions-query requires one

SINGLE_URL=${CLICKHOUSE_URL:-http://127.0.0.1:8123}
CLUSTER_NAME=${CLICKHOUSE_CLUSTER:-sessions_cluster}
CLUSTER_URL=${CLICKHOUSE_CLUSTER_URL:-$(bash "$REPO/scripts/services.sh" cluster-urls)}
REQUESTS=${BENCH_REQUESTS:-400}
QUERY_PORT=${BENCH_QUERY_PORT:-18090}
USERS=${BENCH_USERS:-4000}
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
RUN_ID=$(date +%s)_$$
SINGLE_DB=bench_single_$RUN_ID
CLUSTER_DB=bench_cluster_$RUN_ID
QUERY=bench-cluster-query

cleanup() {
    terminate "$QUERY" 10 >/dev/null 2>&1 || true
    CLICKHOUSE_URL=$SINGLE_URL ch "DROP DATABASE IF EXISTS $SINGLE_DB" >/dev/null 2>&1 || true
    CLICKHOUSE_URL=$CLUSTER_URL CH_MAX_TIME=90 \
        ch "DROP DATABASE IF EXISTS $CLUSTER_DB ON CLUSTER $CLUSTER_NAME" >/dev/null 2>&1 || true
}
trap cleanup EXIT

ping_ok "$SINGLE_URL/ping" || die "ClickHouse is not up at $SINGLE_URL"
ping_ok "${CLUSTER_URL%%,*}/ping" || die "the cluster is not up (scripts/services.sh start cluster)"

if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    say "building release binaries"
    cargo build --release --quiet --bins
    cargo build --release --quiet -p sessions-ingest --example bare_consumer
fi

say "ingest into the single server"
single_ingest=$(BENCH_NO_BUILD=1 BENCH_KEEP_DATABASE=$SINGLE_DB CLICKHOUSE_URL=$SINGLE_URL \
    bash scripts/bench-ingest.sh)
say "ingest into the cluster"
cluster_ingest=$(BENCH_NO_BUILD=1 BENCH_KEEP_DATABASE=$CLUSTER_DB CLICKHOUSE_URL=$CLUSTER_URL \
    CLICKHOUSE_CLUSTER=$CLUSTER_NAME bash scripts/bench-ingest.sh)

# query_latency URL DATABASE [CLUSTER]: one JSON object of p50/p99 at c=1 and c=8.
query_latency() {
    local url=$1 database=$2 cluster=${3:-} org api_key
    local -a env=(CLICKHOUSE_URL="$url" CLICKHOUSE_DATABASE="$database" CLICKHOUSE_CLUSTER="$cluster")
    org=$(env "${env[@]}" "$BIN/sessions-admin" org create --name bench)
    api_key=$(json_get apiKey <<<"$org")
    env "${env[@]}" "$BIN/sessions-admin" project create --org "$(json_get orgId <<<"$org")" \
        --name bench --key 3sWXSsqHgSKnE87YkNJK >/dev/null
    launch "$QUERY" "$BIN/sessions-query" "$REPO" env "${env[@]}" \
        QUERY_ADDR="127.0.0.1:$QUERY_PORT" RUST_LOG=warn "$BIN/sessions-query"
    local i
    for ((i = 0; i < 300; i++)); do
        http_ok "http://127.0.0.1:$QUERY_PORT/readyz" && break
        sleep 0.1
    done
    http_ok "http://127.0.0.1:$QUERY_PORT/readyz" || die "sessions-query did not get ready"
    python3 - "http://127.0.0.1:$QUERY_PORT" "$api_key" "$USERS" "$REQUESTS" <<'EOF'
import json, random, sys, threading, time, urllib.request
base, key, users, requests = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(7)
paths = [f"/api/v1/3sWXSsqHgSKnE87YkNJK/users/user-{rng.randrange(users)}%40example.com/sessions?limit=50"
         for _ in range(requests)]
def get(path):
    request = urllib.request.Request(base + path, headers={"Authorization": key})
    started = time.perf_counter()
    with urllib.request.urlopen(request) as response:
        body = response.read()
        assert response.status == 200 and b'"data"' in body, response.status
    return time.perf_counter() - started
result = {}
for clients in (1, 8):
    latencies, lock = [], threading.Lock()
    chunks = [paths[i::clients] for i in range(clients)]
    def run(chunk):
        for path in chunk:
            elapsed = get(path)
            with lock:
                latencies.append(elapsed)
    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(chunk,)) for chunk in chunks]
    [t.start() for t in threads]
    [t.join() for t in threads]
    wall = time.perf_counter() - started
    latencies.sort()
    result[f"c{clients}"] = {"p50Ms": round(latencies[len(latencies) // 2] * 1000, 2),
                            "p99Ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
                            "requestsPerSecond": round(len(latencies) / wall)}
print(json.dumps(result))
EOF
    terminate "$QUERY" 10 >/dev/null
}

say "query latency on the single server"
single_query=$(query_latency "$SINGLE_URL" "$SINGLE_DB")
say "query latency on the cluster"
cluster_query=$(query_latency "$CLUSTER_URL" "$CLUSTER_DB" "$CLUSTER_NAME")

python3 - "$single_ingest" "$cluster_ingest" "$single_query" "$cluster_query" <<'EOF'
import json, sys
si, ci, sq, cq = (json.loads(x) for x in sys.argv[1:5])
print(json.dumps({"single": {"ingest": si, "query": sq}, "cluster": {"ingest": ci, "query": cq}}))
print(f"""
                         single server    cluster (2x2)    ratio
ingest events/s          {si['workerEventsPerSecond']:>13,}    {ci['workerEventsPerSecond']:>13,}    {ci['workerEventsPerSecond'] / si['workerEventsPerSecond']:.2f}
worker CPU s / M events  {si['workerCpuSecondsPerMillionEvents']:>13}    {ci['workerCpuSecondsPerMillionEvents']:>13}
flushes                  {si['flushes']:>13}    {ci['flushes']:>13}
page p50 c=1 (ms)        {sq['c1']['p50Ms']:>13}    {cq['c1']['p50Ms']:>13}    {cq['c1']['p50Ms'] / sq['c1']['p50Ms']:.2f}
page p99 c=1 (ms)        {sq['c1']['p99Ms']:>13}    {cq['c1']['p99Ms']:>13}    {cq['c1']['p99Ms'] / sq['c1']['p99Ms']:.2f}
page p50 c=8 (ms)        {sq['c8']['p50Ms']:>13}    {cq['c8']['p50Ms']:>13}    {cq['c8']['p50Ms'] / sq['c8']['p50Ms']:.2f}
page p99 c=8 (ms)        {sq['c8']['p99Ms']:>13}    {cq['c8']['p99Ms']:>13}    {cq['c8']['p99Ms'] / sq['c8']['p99Ms']:.2f}
pages/s c=8              {sq['c8']['requestsPerSecond']:>13}    {cq['c8']['requestsPerSecond']:>13}""", file=sys.stderr)
EOF
