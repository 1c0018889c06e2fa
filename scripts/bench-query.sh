#!/usr/bin/env bash
# Query benchmark (results in BENCHMARKS.md).
#
#   1. A fresh database (bench_query) gets the schema (sessions-admin migrate), an
#      organization, an API key and a project, then 10,000,000 live session rows
#      (version 1, deleted 0) over 200,000 users, written straight into ClickHouse
#      with INSERT ... SELECT ... FROM numbers(): three marked users hold exactly
#      10, 100 and 1,500 sessions (bench-10@, bench-100@, bench-1000@example.com),
#      199,997 others ~50 each; then 1,000,000 more rows for one heavy user
#      (bench-heavy@example.com, a session every 31 ms over ~8.6 hours). Then
#      OPTIMIZE ... FINAL, so no background merge runs while we measure.
#   2. target/release/sessions-query serves that database on a spare port.
#   3. wrk (loopback, --latency, ~10 s per run) at 1, 16 and 64 connections, for
#      the 10-, 100- and 1,500-session users with the default page (limit 50), and
#      for the 1,500-session user with limit=1000: BENCH_ROUNDS (5) alternating runs
#      of the service and of the statement it sends for that page, straight to
#      ClickHouse's HTTP interface (GET /?query=..., query/examples/statement_sql.rs prints
#      it with its values inlined: the whole-range SQL under the service's bound),
#      summarised by medians. The heavy user: the service only (its page is read
#      through windows, not one statement), at most 16 connections.
#   4. The heavy user: following `next` through its first 100 pages
#      (total time, against 100 x the first page's p50 at c=1), a page deep in its
#      history (a cursor past its 900,000th session, reached with limit=1000
#      pages, then the default page) and a page with start_date near its end, each
#      by wrk at c=1; all beside the 100-session user's first page in the same run.
#   5. User statistics: the heavy user's and the 100-session user's, at
#      c=1, service and the same SQL straight to ClickHouse; the time of each user's
#      first request (the heavy user's fold reads all its rows then).
#
# Needs ClickHouse up (scripts/services.sh start clickhouse) and wrk (apt-get
# install wrk). Builds the release binaries first unless BENCH_NO_BUILD=1.
# Measures and prints; asserts nothing about timing. Cleans up: stops the
# service and drops the database (BENCH_KEEP_DATA=1 keeps it, and a later run
# with BENCH_KEEP_DATA=1 reuses it if it holds the 10 M rows).
#
# Knobs (environment): BENCH_DURATION (10s), BENCH_CONNECTIONS ("1 16 64"),
# BENCH_QUERY_PORT (18080), BENCH_ROWS (10000000), BENCH_ROUNDS (5), CLICKHOUSE_URL;
# BENCH_BASELINE_BIN: another sessions-query binary (an older build) served on the
# next port and measured in the same rounds, for a before/after table from one run.
# Output: a table on stderr, one JSON line per run on stdout.
set -euo pipefail

SCRIPT_NAME=bench-query.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
ensure_cursor_secret # sessions-query requires one

DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-5}
CONNECTIONS=${BENCH_CONNECTIONS:-1 16 64}
QUERY_PORT=${BENCH_QUERY_PORT:-18080}
ROWS=${BENCH_ROWS:-10000000}
OTHER_USERS=199997
HEAVY_ROWS=${BENCH_HEAVY_ROWS:-1000000}
HEAVY_USER=bench-heavy@example.com
HEAVY_FIRST_TS=1800000000000
export CLICKHOUSE_URL=${CLICKHOUSE_URL:-http://127.0.0.1:8123}
export CLICKHOUSE_DATABASE=$BENCH_QUERY_DATABASE
PROJECT_KEY=$BENCH_QUERY_PROJECT_KEY
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
SERVICE=bench-query-service # name under $RUN_DIR (pid file), see lib.sh
BASELINE=bench-query-baseline

# Loading and optimizing 10 M rows takes minutes.
CH_MAX_TIME=600 # seconds per ClickHouse request (ch, lib.sh)

cleanup() {
    terminate "$SERVICE" 10 >/dev/null 2>&1 || true
    terminate "$BASELINE" 10 >/dev/null 2>&1 || true
    if [[ ${BENCH_KEEP_DATA:-0} != 1 ]]; then
        ch "DROP DATABASE IF EXISTS $CLICKHOUSE_DATABASE" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

command -v wrk >/dev/null || die "wrk not found (apt-get install wrk)"
ping_ok "$CLICKHOUSE_URL/ping" || die "ClickHouse is not up at $CLICKHOUSE_URL (scripts/services.sh start clickhouse)"
port_open "$QUERY_PORT" && die "port $QUERY_PORT is taken; set BENCH_QUERY_PORT"

if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    say "building release binaries"
    cargo build --release --quiet --bins
    cargo build --release --quiet -p sessions-query --example statement_sql
fi

existing=$(ch "SELECT count() FROM system.tables WHERE database = '$CLICKHOUSE_DATABASE' AND name = 'sessions'")
if [[ ${BENCH_KEEP_DATA:-0} == 1 && $existing == 1 &&
    $(ch "SELECT count() FROM $CLICKHOUSE_DATABASE.sessions") == "$((ROWS + HEAVY_ROWS))" ]]; then
    say "reusing $CLICKHOUSE_DATABASE ($ROWS rows)"
    API_KEY=$(<"$BENCH_QUERY_KEY_FILE")
    PROJECT_ID=$("$BIN/sessions-admin" project list | python3 -c '
import json, sys
print(next(p["projectId"] for p in json.load(sys.stdin) if p["projectKey"] == sys.argv[1]))' "$PROJECT_KEY")
else
    ch "DROP DATABASE IF EXISTS $CLICKHOUSE_DATABASE" >/dev/null
    ch "CREATE DATABASE $CLICKHOUSE_DATABASE" >/dev/null
    RUST_LOG=warn "$BIN/sessions-admin" migrate >/dev/null
    org=$("$BIN/sessions-admin" org create --name bench)
    API_KEY=$(json_get apiKey <<<"$org")
    PROJECT_ID=$("$BIN/sessions-admin" project create --org "$(json_get orgId <<<"$org")" \
        --name bench --key "$PROJECT_KEY" | json_get projectId)
    (umask 077 && echo "$API_KEY" >"$BENCH_QUERY_KEY_FILE")
    say "loading $ROWS session rows over $((OTHER_USERS + 3)) users into $CLICKHOUSE_DATABASE.sessions"
    t0=$EPOCHREALTIME
    # Columns in the table's order (schemas/002_sessions.sql). Rows 0-9 belong to
    # bench-10@, 10-109 to bench-100@, 110-1609 to bench-1000@ (1,500 sessions);
    # every other row to one of 199,997 users, ~50 each, spread over ~11 days.
    ch "INSERT INTO $CLICKHOUSE_DATABASE.sessions
        SELECT
            toUInt32($PROJECT_ID),
            multiIf(number < 10, 'bench-10@example.com',
                    number < 110, 'bench-100@example.com',
                    number < 1610, 'bench-1000@example.com',
                    concat('user-', toString(number % $OTHER_USERS), '@example.com')),
            toInt64(1700000000000 + number * 97),
            toUInt64(4000000000000000 + number),
            toUInt64(1),
            toUInt8(0),
            lower(concat(hex(toUInt32(intHash32(number))), '-aedf-4544-8ae6-',
                         hex(toUInt32(intHash32(number + 1))), hex(toUInt16(number % 65536)))),
            arrayElement(['Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.77 Safari/537.36',
                          'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:89.0) Gecko/20100101 Firefox/89.0',
                          'Mozilla/5.0 (iPhone; CPU iPhone OS 14_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/14.1.1 Mobile/15E148 Safari/604.1',
                          'Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:89.0) Gecko/20100101 Firefox/89.0'], number % 4 + 1),
            arrayElement(['Mac OS X', 'Windows', 'iOS', 'Ubuntu'], number % 4 + 1),
            arrayElement(['Chrome', 'Firefox', 'Mobile Safari', 'Firefox'], number % 4 + 1),
            arrayElement(['', '', 'iPhone', ''], number % 4 + 1),
            arrayElement(['IN', 'FR', 'US', 'DE', 'BR', 'JP'], number % 6 + 1),
            toUInt64(intHash32(number) % 3600000),
            toUInt32(number % 97),
            toUInt32(number % 31),
            toUInt32(number % 5),
            toUInt8(1),
            now()
        FROM numbers($ROWS)" >/dev/null
    # The heavy user: one session every 31 ms, the same columns otherwise.
    ch "$(one_user_sessions_sql "$CLICKHOUSE_DATABASE" "$PROJECT_ID" "$HEAVY_USER" \
        "$HEAVY_ROWS" "$HEAVY_FIRST_TS" 5000000000000000)" >/dev/null
    load_seconds=$(python3 -c "print(round($EPOCHREALTIME - $t0, 1))")
    say "loaded in ${load_seconds}s; OPTIMIZE TABLE ... FINAL (one part, no merges while measuring)"
    t0=$EPOCHREALTIME
    # OPTIMIZE returns at once, doing nothing, while a background merge holds the
    # parts: repeat until one part is left.
    for ((i = 0; i < 30; i++)); do
        ch "OPTIMIZE TABLE $CLICKHOUSE_DATABASE.sessions FINAL" >/dev/null
        [[ $(ch "SELECT count() FROM system.parts WHERE database = '$CLICKHOUSE_DATABASE' AND table = 'sessions' AND active") == 1 ]] && break
        sleep 2
    done
    say "optimized in $(python3 -c "print(round($EPOCHREALTIME - $t0, 1))")s"
fi
say "$(ch "SELECT count(), uniqExact(user_id) FROM $CLICKHOUSE_DATABASE.sessions FORMAT TSV" |
    awk '{ print $1 " rows, " $2 " users" }') in $CLICKHOUSE_DATABASE.sessions, active parts: $(ch "SELECT count() FROM system.parts WHERE database = '$CLICKHOUSE_DATABASE' AND table = 'sessions' AND active")"

# wait_ready NAME API: until the service answers 200 (503 until its first snapshot of
# keys and projects is loaded).
wait_ready() {
    local name=$1 api=$2 code i
    for ((i = 0; ; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: $API_KEY" \
            "$api/bench-10%40example.com/sessions" || true)
        [[ $code == 200 ]] && return
        pid_of "$name" >/dev/null || { show_log "$LOG_DIR/$name.log"; die "$name exited"; }
        ((i < 100)) || die "$name answers $code, not 200, after 10 s"
        sleep 0.1
    done
}
launch "$SERVICE" "$BIN/sessions-query" "$REPO" env QUERY_ADDR="127.0.0.1:$QUERY_PORT" \
    CLICKHOUSE_DATABASE="$CLICKHOUSE_DATABASE" RUST_LOG=warn "$BIN/sessions-query"
API="http://127.0.0.1:$QUERY_PORT/api/v1/$PROJECT_KEY/users"
wait_ready "$SERVICE" "$API"
# An older build of the service (BENCH_BASELINE_BIN), for before/after in one run.
BASELINE_API=
if [[ -n ${BENCH_BASELINE_BIN:-} ]]; then
    port_open "$((QUERY_PORT + 1))" && die "port $((QUERY_PORT + 1)) is taken; set BENCH_QUERY_PORT"
    launch "$BASELINE" "$BENCH_BASELINE_BIN" "$REPO" env QUERY_ADDR="127.0.0.1:$((QUERY_PORT + 1))" \
        CLICKHOUSE_DATABASE="$CLICKHOUSE_DATABASE" RUST_LOG=warn "$BENCH_BASELINE_BIN"
    BASELINE_API="http://127.0.0.1:$((QUERY_PORT + 1))/api/v1/$PROJECT_KEY/users"
    wait_ready "$BASELINE" "$BASELINE_API"
fi


# wrk_run LABEL TARGET CONNECTIONS URL [HEADER]: one run; prints a JSON line
# (scripts/wrk_summary.py).
wrk_run() {
    local label=$1 target=$2 connections=$3 url=$4 header=${5:-}
    local threads=$((connections < 2 ? connections : 2))
    local -a header_args=()
    [[ -n $header ]] && header_args=(-H "$header")
    wrk -t "$threads" -c "$connections" -d "$DURATION" --timeout 10s --latency "${header_args[@]}" "$url" |
        python3 scripts/wrk_summary.py "$label" "$target" "$connections"
}

# measure_services LABEL CONNECTIONS SERVICE_URL DIRECT_URL: one wrk run of the
# service, then of DIRECT_URL (if any), then of the baseline build (if any), each
# appended to results.
measure_services() {
    local label=$1 connections=$2 service_url=$3 direct_url=$4
    results+=("$(wrk_run "$label" service "$connections" "$service_url" "Authorization: $API_KEY")")
    say "${results[-1]}"
    if [[ -n $direct_url ]]; then
        results+=("$(wrk_run "$label" clickhouse "$connections" "$direct_url")")
        say "${results[-1]}"
    fi
    if [[ -n $BASELINE_API ]]; then
        results+=("$(wrk_run "$label" baseline "$connections" "${service_url/$API/$BASELINE_API}" "Authorization: $API_KEY")")
        say "${results[-1]}"
    fi
}

results=()
# case: label user limit. Small users: ROUNDS alternating runs of the service and of
# the statement it sends (statement_sql page: the whole-range SQL under the service's bound),
# summarised by their medians. The heavy user: one run of the service; beside it the
# unbounded whole-range SQL (the query before windows) at c=1 only, five requests.
for case in "10 bench-10@example.com 50" "100 bench-100@example.com 50" \
    "1000 bench-1000@example.com 50" "1000-limit1000 bench-1000@example.com 1000" \
    "heavy $HEAVY_USER 50"; do
    read -r label user limit <<<"$case"
    sql=$("$BIN/examples/statement_sql" page "$PROJECT_ID" "$user" "$limit")
    service_url="$API/$(urlencode "$user")/sessions"
    [[ $limit != 50 ]] && service_url="$service_url?limit=$limit"
    direct_url="$CLICKHOUSE_URL/?database=$CLICKHOUSE_DATABASE&default_format=RowBinary&query=$(urlencode "$sql")"
    if [[ $label == heavy ]]; then
        # First request: the service learns that this user needs windows.
        served=$(curl -sf -H "Authorization: $API_KEY" "$service_url" | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["data"]))')
        say "user $user, limit $limit: service returns $served sessions"
        for connections in $CONNECTIONS; do
            ((connections > 16)) && continue # see the whole-range side in step 4
            measure_services "$label" "$connections" "$service_url" ""
        done
        continue
    fi
    # Both sides return the same page: count the rows once.
    served=$(curl -sf -H "Authorization: $API_KEY" "$service_url" | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["data"]))')
    direct=$(curl -sfS "$CLICKHOUSE_URL/?database=$CLICKHOUSE_DATABASE" --data-binary "$sql FORMAT TSV" | wc -l)
    say "user $user, limit $limit: service returns $served sessions, ClickHouse $direct rows (page + 1 when more exist)"
    for connections in $CONNECTIONS; do
        for ((round = 1; round <= ROUNDS; round++)); do
            measure_services "$label" "$connections" "$service_url" "$direct_url"
        done
    done
done
printf '%s\n' "${results[@]}"

SUMMARY='
import json, statistics, sys
runs = [json.loads(line) for line in sys.stdin if line.strip()]
by = {}
for r in runs:
    by.setdefault((r["case"], r["connections"], r["target"]), []).append(r)
def median(case, c, target, field):
    return statistics.median(r[field] for r in by[(case, c, target)])
names = {"10": "10 (limit 50)", "100": "100 (limit 50)", "1000": "1500 (limit 50)",
         "1000-limit1000": "1500 (limit 1000)", "heavy": "1M (limit 50)"}
print("medians of %s alternating runs each" % max(len(v) for v in by.values()), file=sys.stderr)
print("%-18s %3s | %-21s %7s | %-21s %7s | %9s %9s" % ("sessions", "c", "service p50/p99 ms",
      "req/s", "same SQL p50/p99 ms", "req/s", "p99 ratio", "rps ratio"), file=sys.stderr)
for (case, c, target) in by:
    if target != "service":
        continue
    s = {f: median(case, c, "service", f) for f in ("p50_ms", "p99_ms", "requests_per_second")}
    if (case, c, "clickhouse") not in by:
        print("%-18s %3d | %9.2f / %9.2f %7.0f | (windows: no single statement to compare)" % (
            names[case], c, s["p50_ms"], s["p99_ms"], s["requests_per_second"]), file=sys.stderr)
        continue
    d = {f: median(case, c, "clickhouse", f) for f in ("p50_ms", "p99_ms", "requests_per_second")}
    print("%-18s %3d | %9.2f / %9.2f %7.0f | %9.2f / %9.2f %7.0f | %8.2fx %8.2fx" % (
        names[case], c, s["p50_ms"], s["p99_ms"], s["requests_per_second"], d["p50_ms"],
        d["p99_ms"], d["requests_per_second"], s["p99_ms"] / d["p99_ms"],
        s["requests_per_second"] / d["requests_per_second"]), file=sys.stderr)
for (case, c, target) in by:
    if target == "baseline":
        b = {f: median(case, c, "baseline", f) for f in ("p50_ms", "p99_ms", "requests_per_second")}
        print("%-18s %3d | baseline build: %9.2f / %9.2f ms %7.0f req/s" % (
            names[case], c, b["p50_ms"], b["p99_ms"], b["requests_per_second"]), file=sys.stderr)
'
printf '%s\n' "${results[@]}" | python3 -c "$SUMMARY"

# 4. The heavy user: 100 pages, a deep page, a late start_date.
# The heavy user's whole-range SQL that wrk left in flight (a second or more each)
# keeps ClickHouse busy after wrk stops: let it finish first.
until [[ $(ch "SELECT count() FROM system.processes WHERE query NOT LIKE '%system.processes%'") == 0 ]]; do
    sleep 1
done
heavy_url="$API/$(urlencode "$HEAVY_USER")/sessions"
deep_url=$(python3 - "$heavy_url" "$API_KEY" <<'EOF'
import sys, urllib.request
url, key = sys.argv[1], sys.argv[2]
base, seen, next_url = url.split("/api/")[0], 0, url + "?limit=1000"
while seen < 900_000:
    request = urllib.request.Request(next_url, headers={"Authorization": key})
    with urllib.request.urlopen(request) as response:
        seen += response.read().count(b'"sessionId"')
        link = response.headers["Link"]
    next_url = base + link[1:link.index(">")]
print(next_url.replace("limit=1000", "limit=50"))
EOF
)
say "deep page: ${deep_url%%cursor=*}cursor=…"
late_url="$heavy_url?start_date=$((HEAVY_FIRST_TS + 990000 * 31))"
heavy_runs=()
# The heavy user's whole-range SQL (the query before windows): too slow for wrk's
# runs; five requests one after another, the median.
heavy_sql=$("$BIN/examples/statement_sql" page --unbounded "$PROJECT_ID" "$HEAVY_USER" 50)
whole_ms=$(for _ in 1 2 3 4 5; do
    curl -sfS -o /dev/null -w '%{time_total}\n' "$CLICKHOUSE_URL/?database=$CLICKHOUSE_DATABASE" \
        --data-binary "$heavy_sql FORMAT RowBinary"
done | sort -n | sed -n 3p)
heavy_runs+=("{\"case\": \"heavy-whole-range-sql\", \"p50_ms\": $(python3 -c "print(round($whole_ms * 1000, 2))")}")
heavy_runs+=("$(wrk_run heavy-deep service 1 "$deep_url" "Authorization: $API_KEY")")
heavy_runs+=("$(wrk_run heavy-late service 1 "$late_url" "Authorization: $API_KEY")")
# One keep-alive connection, ids found by a regex: the client's own cost per page
# (a new connection and a JSON parse in Python added ~1.4 ms to each) stays small
# beside the service's.
walk=$(python3 - "$heavy_url" "$API_KEY" <<'EOF'
import http.client, json, re, sys, time, urllib.parse
url, key = sys.argv[1], sys.argv[2]
parts = urllib.parse.urlsplit(url)
connection = http.client.HTTPConnection(parts.hostname, parts.port)
session_id = re.compile(rb'"sessionId":"([0-9]+)"')
path, seen = parts.path, set()
started = time.perf_counter()
for page in range(100):
    connection.request("GET", path, headers={"Authorization": key})
    response = connection.getresponse()
    ids = session_id.findall(response.read())
    link = response.getheader("Link")
    assert response.status == 200 and len(ids) == 50 and not seen.intersection(ids), page
    seen.update(ids)
    path = link[1:link.index(">")]
print(json.dumps({"case": "heavy-100-pages", "seconds": round(time.perf_counter() - started, 3),
                  "sessions": len(seen)}))
EOF
)
printf '%s\n' "${heavy_runs[@]}" "$walk"
HEAVY_SUMMARY='
import json, sys
import statistics
runs = [json.loads(line) for line in sys.stdin if line.strip()]
by = {(r["case"], r.get("connections"), r.get("target")): r for r in runs}
small = statistics.median(r["p50_ms"] for r in runs
                          if (r["case"], r.get("connections"), r.get("target")) == ("100", 1, "service"))
first = by[("heavy", 1, "service")]["p50_ms"]
walk = by[("heavy-100-pages", None, None)]["seconds"] * 1000
deep = by[("heavy-deep", 1, "service")]["p50_ms"]
whole = by[("heavy-whole-range-sql", None, None)]["p50_ms"]
late = by[("heavy-late", 1, "service")]["p50_ms"]
print(f"""
heavy user (1M sessions), service at c=1, beside the 100-session user first page p50 {small:.2f} ms (median of its runs):
  first page p50       {first:8.2f} ms  {first / small:5.2f}x  (goal <= 2x)
  100 pages via next   {walk:8.0f} ms  {walk / (100 * first):5.2f}x 100 x its first page p50 (goal <= 2x)
  deep page p50        {deep:8.2f} ms  {deep / small:5.2f}x  (cursor past its 900,000th; goal <= 2x)
  late start_date p50  {late:8.2f} ms  {late / small:5.2f}x  (goal <= 2x)
  before (whole-range SQL straight to ClickHouse, median of 5): {whole:.1f} ms""", file=sys.stderr)
'
printf '%s\n' "${results[@]}" "${heavy_runs[@]}" "$walk" | python3 -c "$HEAVY_SUMMARY"

# 5. User statistics: GET /users/:userId of the heavy user beside the
# 100-session user's, service and the same SQL straight to ClickHouse, c=1.
stats_runs=()
for case in "stats-100 bench-100@example.com" "stats-heavy $HEAVY_USER"; do
    read -r label user <<<"$case"
    stats_sql=$("$BIN/examples/statement_sql" user-stats "$PROJECT_ID" "$user")
    # The first request of a heavy user reads all its rows into the replica's fold
    # (query/src/users/warm.rs); wrk's runs then measure the folds kept warm.
    first=$(curl -sf -o /dev/null -w '%{time_total}' -H "Authorization: $API_KEY" "$API/$(urlencode "$user")")
    say "$label: $(curl -sf -H "Authorization: $API_KEY" "$API/$(urlencode "$user")") (first request: ${first} s)"
    stats_runs+=("$(wrk_run "$label" service 1 "$API/$(urlencode "$user")" "Authorization: $API_KEY")")
    stats_runs+=("$(wrk_run "$label" clickhouse 1 "$CLICKHOUSE_URL/?database=$CLICKHOUSE_DATABASE&default_format=RowBinary&query=$(urlencode "$stats_sql")")")
done
printf '%s\n' "${stats_runs[@]}"
printf '%s\n' "${stats_runs[@]}" | python3 -c '
import json, sys
by = {(r["case"], r["target"]): r for r in map(json.loads, filter(str.strip, sys.stdin))}
small, heavy = by[("stats-100", "service")]["p50_ms"], by[("stats-heavy", "service")]["p50_ms"]
print(f"""
user stats at c=1, p50: 100-session user {small:.2f} ms (ClickHouse alone {by[("stats-100", "clickhouse")]["p50_ms"]:.2f} ms),
  1M-session user {heavy:.2f} ms (ClickHouse alone {by[("stats-heavy", "clickhouse")]["p50_ms"]:.2f} ms): {heavy / small:.1f}x (goal <= 2x)""", file=sys.stderr)
'
