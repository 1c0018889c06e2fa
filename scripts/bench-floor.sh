#!/usr/bin/env bash
# What bounds the service's overhead (BENCHMARKS.md §6): one page's
# statement sent by wrk, in alternating rounds, to
#   clickhouse  ClickHouse itself (the statement in the URL),
#   relay       query/examples/tcp_relay.rs: one more hop, bytes copied, nothing parsed,
#   floor       query/examples/stack_floor.rs: warp + the clickhouse client answering
#               with the statement's RowBinary bytes (the service's stack, none of its code),
#   service     target/release/sessions-query, the same page through the API,
#   baseline    BENCH_BASELINE_BIN, another sessions-query build (optional),
# each round at every BENCH_CONNECTIONS, each round in an order rotated by one;
# medians of p50, p99, requests/s, and the CPU time per request of each process in
# between and of ClickHouse's server (from /proc/<pid>/stat; ClickHouse's pid from
# BENCH_CLICKHOUSE_PID or the one scripts/services.sh started, when it is local).
# Then, unless BENCH_CALLGRIND=0, the instructions per request of the floor, the
# service and the baseline for the same page under callgrind (scripts/
# bench-instructions.sh, BENCH_REQUESTS requests each: deterministic where the clock
# and /proc are not), after the timed rounds, so that valgrind never runs beside them.
#
# Needs ClickHouse up with scripts/bench-query.sh's data kept (BENCH_KEEP_DATA=1),
# valgrind for the callgrind step, and the release builds: cargo build --release
#   -p sessions-query --bins --example statement_sql --example tcp_relay --example stack_floor
# Knobs: BENCH_USER (bench-100@example.com), BENCH_LIMIT (50), BENCH_ROUNDS (5),
# BENCH_DURATION (5s), BENCH_CONNECTIONS ("1 16"), BENCH_BASELINE_BIN,
# BENCH_COMPRESSION (lz4): CLICKHOUSE_COMPRESSION of the floor and of the services,
# BENCH_BASELINE_COMPRESSION (BENCH_COMPRESSION): the baseline's; BENCH_CALLGRIND (1),
# BENCH_REQUESTS (100): the callgrind step and its requests per target.
# Output: the table on stderr, one JSON line per run on stdout.
set -euo pipefail

SCRIPT_NAME=bench-floor.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
ensure_cursor_secret # sessions-query requires one

USER_ID=${BENCH_USER:-bench-100@example.com}
LIMIT=${BENCH_LIMIT:-50}
ROUNDS=${BENCH_ROUNDS:-5}
DURATION=${BENCH_DURATION:-5s}
CONNECTIONS=${BENCH_CONNECTIONS:-1 16}
CLICKHOUSE_URL=${CLICKHOUSE_URL:-http://127.0.0.1:8123}
export CLICKHOUSE_COMPRESSION=${BENCH_COMPRESSION:-lz4}
DATABASE=$BENCH_QUERY_DATABASE
PROJECT_KEY=$BENCH_QUERY_PROJECT_KEY
PROJECT_ID=1
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release

command -v wrk >/dev/null || die "wrk not found (apt-get install wrk)"
ping_ok "$CLICKHOUSE_URL/ping" || die "ClickHouse is not up at $CLICKHOUSE_URL"
for binary in sessions-query examples/statement_sql examples/tcp_relay examples/stack_floor; do
    [[ -x $BIN/$binary ]] || die "$BIN/$binary is missing (cargo build --release, see the header)"
done
for port in 18080 18081 18123 18124; do
    port_open "$port" && die "port $port is taken"
done
API_KEY=$(bench_query_api_key)
clickhouse_pid=${BENCH_CLICKHOUSE_PID:-$(cat "$REPO/.local/run/clickhouse.pid" 2>/dev/null || true)}
[[ -n $clickhouse_pid && -r /proc/$clickhouse_pid/stat ]] || clickhouse_pid=""

clickhouse_addr=${CLICKHOUSE_URL#http://}

sql=$("$BIN/examples/statement_sql" page "$PROJECT_ID" "$USER_ID" "$LIMIT")
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
start() { "$@" >/dev/null 2>&1 & pids+=($!); }
start "$BIN/examples/tcp_relay" 127.0.0.1:18123 "$clickhouse_addr"
relay_pid=$!
start "$BIN/examples/stack_floor" 127.0.0.1:18124 "$CLICKHOUSE_URL" "$DATABASE" "$sql"
floor_pid=$!
start env QUERY_ADDR=127.0.0.1:18080 CLICKHOUSE_URL="$CLICKHOUSE_URL" CLICKHOUSE_DATABASE=$DATABASE \
    RUST_LOG=warn "$BIN/sessions-query"
service_pid=$!
targets="clickhouse relay floor service"
if [[ -n ${BENCH_BASELINE_BIN:-} ]]; then
    start env QUERY_ADDR=127.0.0.1:18081 CLICKHOUSE_URL="$CLICKHOUSE_URL" CLICKHOUSE_DATABASE=$DATABASE \
        CLICKHOUSE_COMPRESSION="${BENCH_BASELINE_COMPRESSION:-$CLICKHOUSE_COMPRESSION}" \
        RUST_LOG=warn "$BENCH_BASELINE_BIN"
    baseline_pid=$!
    targets="$targets baseline"
fi
for port in 18080 18123 18124 ${BENCH_BASELINE_BIN:+18081}; do
    for _ in $(seq 100); do port_open "$port" && break; sleep 0.1; done
    port_open "$port" || die "nothing listens on $port"
done

query="?database=$DATABASE&default_format=RowBinary&query=$(urlencode "$sql")"
page="/api/v1/$PROJECT_KEY/users/$(urlencode "$USER_ID")/sessions?limit=$LIMIT"
url_of() {
    case $1 in
    clickhouse) echo "$CLICKHOUSE_URL/$query" ;;
    relay) echo "http://127.0.0.1:18123/$query" ;;
    floor) echo "http://127.0.0.1:18124/" ;;
    service) echo "http://127.0.0.1:18080$page" ;;
    baseline) echo "http://127.0.0.1:18081$page" ;;
    esac
}
pid_of() {
    case $1 in
    relay) echo "$relay_pid" ;; floor) echo "$floor_pid" ;;
    service) echo "$service_pid" ;; baseline) echo "$baseline_pid" ;; *) echo "" ;;
    esac
}
# The API key for the service's builds only (ClickHouse would take it for a login).
auth_of() { case $1 in service | baseline) echo "Authorization: $API_KEY" ;; *) echo "X-Bench: 1" ;; esac; }
cpu_ticks() { [[ -n $1 ]] && awk '{ print $14 + $15 }' "/proc/$1/stat" || echo 0; }
for target in $targets; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$(auth_of "$target")" "$(url_of "$target")")
    [[ $code == 200 ]] || die "$target answers $code"
done

# A run's JSON line (stdin, wrk_summary.py's) with its round, its process's CPU time per
# request (none for ClickHouse itself) and ClickHouse's (none when its pid is unknown).
ADD_CPU='
import json, sys
run = json.loads(sys.stdin.read())
round_, ticks, clickhouse_ticks, hz = (int(arg) for arg in sys.argv[1:5])
per_request = lambda t: t * 1000.0 / hz / max(run["requests"], 1)
run["round"] = round_
run["cpu_ms_per_request"] = None if run["target"] == "clickhouse" else per_request(ticks)
run["clickhouse_cpu_ms_per_request"] = per_request(clickhouse_ticks) if sys.argv[5] else None
print(json.dumps(run))
'
# The runs (stdin) into the table of medians, ratios against ClickHouse's.
SUMMARIZE='
import json, statistics, sys
runs = [json.loads(line) for line in sys.stdin]
def median_of(chosen, key):
    values = [run[key] for run in chosen if run.get(key) is not None]
    return statistics.median(values) if values else None
text = lambda value: "" if value is None else f"{value:.3f}"
print("| c | target | p50 ms | p99 ms | req/s | CPU ms/request | ClickHouse CPU ms/request | p99 ratio | req/s ratio |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for c in sorted({run["connections"] for run in runs}):
    rows = {}
    for target in dict.fromkeys(run["target"] for run in runs):
        chosen = [run for run in runs if run["connections"] == c and run["target"] == target]
        rows[target] = [median_of(chosen, key) for key in
                        ("p50_ms", "p99_ms", "requests_per_second", "cpu_ms_per_request",
                         "clickhouse_cpu_ms_per_request")]
    base = rows["clickhouse"]
    for target, (p50, p99, rps, cpu, clickhouse_cpu) in rows.items():
        print(f"| {c} | {target} | {p50:.2f} | {p99:.2f} | {rps:.0f} | {text(cpu)} | {text(clickhouse_cpu)} | "
              f"{p99 / base[1]:.2f}x | {rps / base[2]:.2f}x |")
'
runs_file=$(mktemp)
trap 'cleanup; rm -f "$runs_file"' EXIT
ticks_per_second=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
    for connections in $CONNECTIONS; do
        # Each round starts one target later, so that no target always runs right
        # after the same other one.
        read -ra order <<<"$targets"
        for ((index = 0; index < ${#order[@]}; index++)); do
            target=${order[(index + round) % ${#order[@]}]}
            pid=$(pid_of "$target")
            before=$(cpu_ticks "$pid") clickhouse_before=$(cpu_ticks "$clickhouse_pid")
            run=$(wrk -t 1 -c "$connections" -d "$DURATION" --timeout 10s --latency \
                -H "$(auth_of "$target")" "$(url_of "$target")" |
                python3 scripts/wrk_summary.py "$USER_ID limit=$LIMIT" "$target" "$connections")
            after=$(cpu_ticks "$pid") clickhouse_after=$(cpu_ticks "$clickhouse_pid")
            python3 -c "$ADD_CPU" "$round" "$((after - before))" \
                "$((clickhouse_after - clickhouse_before))" "$ticks_per_second" "$clickhouse_pid" <<<"$run"
        done
    done
done | tee "$runs_file"
python3 -c "$SUMMARIZE" <"$runs_file" >&2
if [[ ${BENCH_CALLGRIND:-1} != 0 ]]; then
    cleanup # the timed targets stop before valgrind starts
    pids=()
    BENCH_USER=$USER_ID BENCH_LIMIT=$LIMIT BENCH_COMPRESSION=$CLICKHOUSE_COMPRESSION \
        bash "$REPO/scripts/bench-instructions.sh"
fi
