#!/usr/bin/env bash
# A heavy user on the local cluster (the rule: cost bounded for a user with
# millions of sessions; BENCHMARKS.md §5 and §7): a fresh database on the cluster
# gets a 100-session user and one user of BENCH_HEAVY_ROWS (1,000,000) sessions,
# written through the Distributed table; then sessions-query on the cluster answers
# both users, at c=1:
#   - GET /users/:userId: the heavy user's first request (its fold reads all its
#     rows on one replica), then p50 of BENCH_REQUESTS (200) requests of each user,
#     and p50 of the statistics statement (10 runs) sent straight to a node;
#   - GET /users/:userId/sessions: p50 of BENCH_REQUESTS first pages (limit 50) of
#     each user.
# Needs the cluster up (scripts/services.sh start cluster) and the release builds
# (cargo build --release -p sessions-query -p sessions-control --bins, and
# --example statement_sql). Measures and
# prints one JSON line; asserts nothing about timing. Drops the database at the end.
# Knobs: BENCH_HEAVY_ROWS, BENCH_REQUESTS, BENCH_QUERY_PORT (18091), BENCH_QUERY_BIN
# (another sessions-query build, e.g. one from before a change).
set -euo pipefail

SCRIPT_NAME=bench-cluster-stats.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
ensure_cursor_secret # sessions-query requires one

HEAVY_ROWS=${BENCH_HEAVY_ROWS:-1000000}
REQUESTS=${BENCH_REQUESTS:-200}
PORT=${BENCH_QUERY_PORT:-18091}
export CLICKHOUSE_CLUSTER=${CLICKHOUSE_CLUSTER:-sessions_cluster}
export CLICKHOUSE_URL=${CLICKHOUSE_CLUSTER_URL:-$(bash "$REPO/scripts/services.sh" cluster-urls)}
export CLICKHOUSE_DATABASE=bench_cluster_stats
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
QUERY=bench-cluster-stats-query
QUERY_BIN=${BENCH_QUERY_BIN:-$BIN/sessions-query}

ping_ok "${CLICKHOUSE_URL%%,*}/ping" || die "the cluster is not up (scripts/services.sh start cluster)"
for binary in "$QUERY_BIN" "$BIN/sessions-admin" "$BIN/examples/statement_sql"; do
    [[ -x $binary ]] || die "$binary is missing (cargo build --release)"
done
port_open "$PORT" && die "port $PORT is taken"
cleanup() {
    terminate "$QUERY" 10 >/dev/null 2>&1 || true
    CH_MAX_TIME=90 ch "DROP DATABASE IF EXISTS $CLICKHOUSE_DATABASE ON CLUSTER $CLICKHOUSE_CLUSTER" >/dev/null || true
}
trap cleanup EXIT

RUST_LOG=warn "$BIN/sessions-admin" migrate >/dev/null
org=$("$BIN/sessions-admin" org create --name bench)
api_key=$(json_get apiKey <<<"$org")
project_key=benchClusterStats001
project_id=$("$BIN/sessions-admin" project create --org "$(json_get orgId <<<"$org")" \
    --name bench --key "$project_key" | json_get projectId)

say "writing 100 + $HEAVY_ROWS sessions through the Distributed table"
insert_user() { # USER ROWS FIRST_SESSION_ID
    CH_MAX_TIME=600 ch "$(one_user_sessions_sql "$CLICKHOUSE_DATABASE" "$project_id" "$1" "$2" \
        1700000000000 "$3") SETTINGS insert_distributed_sync = 1" >/dev/null
}
insert_user bench-100@example.com 100 6000000000000000
insert_user bench-heavy@example.com "$HEAVY_ROWS" 6100000000000000

launch "$QUERY" "$QUERY_BIN" "$REPO" env QUERY_ADDR="127.0.0.1:$PORT" RUST_LOG=warn "$QUERY_BIN"
for _ in $(seq 300); do
    http_ok "http://127.0.0.1:$PORT/readyz" && break
    sleep 0.1
done
http_ok "http://127.0.0.1:$PORT/readyz" || die "sessions-query did not get ready"

statement=$("$BIN/examples/statement_sql" user-stats "$project_id" bench-heavy@example.com)
python3 - "http://127.0.0.1:$PORT/api/v1/$project_key/users" "$api_key" "$REQUESTS" \
    "${CLICKHOUSE_URL%%,*}" "$CLICKHOUSE_DATABASE" "$statement" "$HEAVY_ROWS" <<'PY'
import http.client, json, statistics, sys, time, urllib.parse
base, key, requests, node, database, statement, heavy_rows = sys.argv[1:8]
service = urllib.parse.urlsplit(base)
connection = http.client.HTTPConnection(service.netloc)
def get(user, tail=""):
    """GET the user's resource (+ tail): its time in seconds and its data."""
    started = time.perf_counter()
    connection.request("GET", f"{service.path}/{urllib.parse.quote(user, safe='')}{tail}",
                       headers={"Authorization": key})
    response = connection.getresponse()
    body = json.loads(response.read())
    assert response.status == 200, body
    return time.perf_counter() - started, body["data"]
heavy_first, heavy_data = get("bench-heavy@example.com")
assert heavy_data["sessionCount"] == int(heavy_rows), heavy_data
users = ("bench-100@example.com", "bench-heavy@example.com")
runs = {user: [get(user)[0] for _ in range(int(requests))] for user in users}
def first_page(user):
    seconds, sessions = get(user, "/sessions?limit=50")
    assert len(sessions) == 50, len(sessions)
    return seconds
pages = {user: statistics.median(first_page(user) for _ in range(int(requests))) * 1000
         for user in users}
clickhouse = http.client.HTTPConnection(urllib.parse.urlsplit(node).netloc)
def statement_time():
    started = time.perf_counter()
    clickhouse.request("POST", f"/?database={database}", body=statement)
    response = clickhouse.getresponse()
    response.read()
    assert response.status == 200
    return time.perf_counter() - started
whole = statistics.median(statement_time() for _ in range(10))
small = statistics.median(runs["bench-100@example.com"]) * 1000
heavy = statistics.median(runs["bench-heavy@example.com"]) * 1000
small_page, heavy_page = (pages[user] for user in users)
print(json.dumps({"heavyRows": int(heavy_rows),
                  "stats": {"heavyFirstRequestMs": round(heavy_first * 1000, 1),
                            "smallP50Ms": round(small, 2), "heavyP50Ms": round(heavy, 2),
                            "ratio": round(heavy / small, 2),
                            "heavyStatementP50Ms": round(whole * 1000, 1)},
                  "firstPage": {"smallP50Ms": round(small_page, 2), "heavyP50Ms": round(heavy_page, 2),
                                "ratio": round(heavy_page / small_page, 2)}}))
PY
