#!/usr/bin/env bash
# Instructions per request under callgrind (BENCHMARKS.md §6): deterministic, unlike
# the CPU time the wall-clock rounds of bench-floor.sh read from /proc. For one page
# (BENCH_USER, BENCH_LIMIT), each target runs alone under
# `valgrind --tool=callgrind`:
#   floor     query/examples/stack_floor.rs: warp + the clickhouse client answering
#             with the page statement's RowBinary (the service's stack, none of its code),
#   service   target/release/sessions-query, the same page through the API,
#   baseline  BENCH_BASELINE_BIN, another sessions-query build (optional).
# Each is warmed up (BENCH_WARMUP requests: connections made, pools and caches
# filled), then its counters are zeroed (`callgrind_control -z`), BENCH_REQUESTS
# requests are sent one after another on one keep-alive connection (curl), and the
# counters are dumped (`callgrind_control -d`); the startup is never counted. Then
# the same again with no request for as long as the requests took (the background
# tasks' share: the service reloads its API keys every AUTH_REFRESH_MS), and
#   instructions per request = (requests' dump - idle dump) / BENCH_REQUESTS.
# Every answer must be 200 with the same bytes as the first.
#
# Needs valgrind, ClickHouse up with scripts/bench-query.sh's data kept
# (BENCH_KEEP_DATA=1) and the release builds: cargo build --release -p sessions-query
# --bins --example statement_sql --example stack_floor
# Knobs: BENCH_USER (bench-100@example.com), BENCH_LIMIT (50), BENCH_REQUESTS (100),
# BENCH_WARMUP (5), BENCH_BASELINE_BIN, BENCH_COMPRESSION (lz4: CLICKHOUSE_COMPRESSION
# of every target), BENCH_CALLGRIND_DIR (where the dumps are kept; a temporary
# directory, removed, by default).
# Output: a table on stderr, one JSON line per target on stdout.
set -euo pipefail

SCRIPT_NAME=bench-instructions.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
ensure_cursor_secret # sessions-query requires one

USER_ID=${BENCH_USER:-bench-100@example.com}
LIMIT=${BENCH_LIMIT:-50}
REQUESTS=${BENCH_REQUESTS:-100}
WARMUP=${BENCH_WARMUP:-5}
CLICKHOUSE_URL=${CLICKHOUSE_URL:-http://127.0.0.1:8123}
export CLICKHOUSE_COMPRESSION=${BENCH_COMPRESSION:-lz4}
DATABASE=$BENCH_QUERY_DATABASE
PROJECT_KEY=$BENCH_QUERY_PROJECT_KEY
PROJECT_ID=1
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
PORT=18190

command -v valgrind >/dev/null || die "valgrind not found (apt-get install valgrind)"
ping_ok "$CLICKHOUSE_URL/ping" || die "ClickHouse is not up at $CLICKHOUSE_URL"
for binary in sessions-query examples/statement_sql examples/stack_floor; do
    [[ -x $BIN/$binary ]] || die "$BIN/$binary is missing (cargo build --release, see the header)"
done
port_open "$PORT" && die "port $PORT is taken"
API_KEY=$(bench_query_api_key)
sql=$("$BIN/examples/statement_sql" page "$PROJECT_ID" "$USER_ID" "$LIMIT")
page="/api/v1/$PROJECT_KEY/users/$(urlencode "$USER_ID")/sessions?limit=$LIMIT"

dumps=${BENCH_CALLGRIND_DIR:-$(mktemp -d)}
mkdir -p "$dumps"
valgrind_pid=""
cleanup() {
    [[ -n $valgrind_pid ]] && kill "$valgrind_pid" 2>/dev/null || true
    [[ -n ${BENCH_CALLGRIND_DIR:-} ]] || rm -rf "$dumps"
}
trap cleanup EXIT

# total FILE: the instructions a callgrind dump counted.
total() { awk '/^summary:/ { print $2 }' "$1"; }

# measure TARGET [NAME=VALUE...] CMD...: the JSON line of one target (header), run
# with those variables set (valgrind itself runs CMD: it does not follow an exec).
measure() {
    local target=$1 url header i code
    shift
    local -a variables=()
    while [[ $1 == *=* ]]; do variables+=("$1"); shift; done
    case $target in
    floor) url="http://127.0.0.1:$PORT/" header="X-Bench: 1" ;;
    *) url="http://127.0.0.1:$PORT$page" header="Authorization: $API_KEY" ;;
    esac
    env "${variables[@]}" nice -n 10 valgrind --tool=callgrind --callgrind-out-file="$dumps/$target.%p" "$@" \
        >"$dumps/$target.log" 2>&1 &
    valgrind_pid=$!
    for ((i = 0; i < 600; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "$header" "$url" || true)
        [[ $code == 200 ]] && break
        kill -0 "$valgrind_pid" 2>/dev/null || { cat "$dumps/$target.log" >&2; die "$target exited"; }
        sleep 0.2
    done
    [[ $code == 200 ]] || die "$target answers $code"
    for ((i = 0; i < WARMUP; i++)); do
        curl -s -o "$dumps/$target.expected" -H "$header" "$url"
    done
    local -a args=()
    for ((i = 0; i < REQUESTS; i++)); do args+=(-o "$dumps/$target.$i.body" "$url"); done
    callgrind_control -z "$valgrind_pid" >/dev/null 2>&1
    local started=$EPOCHREALTIME
    curl -s -f -H "$header" "${args[@]}" || die "$target: a request failed"
    local took
    took=$(python3 -c "print($EPOCHREALTIME - $started)")
    callgrind_control -d "$valgrind_pid" >/dev/null 2>&1
    callgrind_control -z "$valgrind_pid" >/dev/null 2>&1
    sleep "$took"
    callgrind_control -d "$valgrind_pid" >/dev/null 2>&1
    kill "$valgrind_pid"
    wait "$valgrind_pid" 2>/dev/null || true
    valgrind_pid=""
    for ((i = 0; i < REQUESTS; i++)); do
        cmp -s "$dumps/$target.expected" "$dumps/$target.$i.body" || die "$target: answer $i differs"
    done
    rm -f "$dumps/$target".*.body
    local pid_dumps=("$dumps/$target".[0-9]*.[12])
    local requests_total idle_total
    requests_total=$(total "${pid_dumps[0]}")
    idle_total=$(total "${pid_dumps[1]}")
    python3 -c '
import json, sys
target, page, requests, busy, idle, seconds = sys.argv[1:7]
requests, busy, idle = int(requests), int(busy), int(idle)
print(json.dumps({"target": target, "page": page, "requests": requests,
                  "instructions": busy, "idle_instructions": idle, "seconds": float(seconds),
                  "instructions_per_request": round((busy - idle) / requests)}))
' "$target" "$USER_ID limit=$LIMIT" "$REQUESTS" "$requests_total" "$idle_total" "$took"
}

runs=$(
    measure floor "$BIN/examples/stack_floor" "127.0.0.1:$PORT" "$CLICKHOUSE_URL" "$DATABASE" "$sql"
    service_env=(QUERY_ADDR="127.0.0.1:$PORT" CLICKHOUSE_URL="$CLICKHOUSE_URL"
        CLICKHOUSE_DATABASE=$DATABASE RUST_LOG=warn AUTH_REFRESH_MS=4000 JOBS_POLL_MS=3600000)
    measure service "${service_env[@]}" "$BIN/sessions-query"
    if [[ -n ${BENCH_BASELINE_BIN:-} ]]; then
        measure baseline "${service_env[@]}" "$BENCH_BASELINE_BIN"
    fi
)
echo "$runs"
python3 -c '
import json, sys
runs = [json.loads(line) for line in sys.stdin]
print("| page | target | requests | instructions per request | idle share |")
print("| --- | --- | --- | --- | --- |")
for run in runs:
    idle = run["idle_instructions"] / max(run["instructions"], 1)
    print("| {page} | {target} | {requests} | {instructions_per_request:,} |".format(**run),
          f"{idle:.1%} |")
' <<<"$runs" >&2
