#!/usr/bin/env bash
# The events endpoint's cost against the session's size (the rule: a page costs
# O(page), BENCHMARKS.md §9): a fresh database on the single server gets one session
# of BENCH_HEAVY_EVENTS (1,000,000) events and one of 50, written straight into
# session_events (each with a state row, which is what makes a session the
# project's); then the release sessions-query answers, at c=1, BENCH_REQUESTS (200)
# requests of each, alternating:
#   - the 50-event session's page (limit=50: the whole session);
#   - the big session's first page (limit=50);
#   - a page of the big session from its middle (limit=50, from a cursor reached
#     by following Link with limit=10000 halfway);
# and prints the p50 of each and their ratios to the small session's, one JSON line.
# Asserts nothing about timing. Needs ClickHouse up (scripts/services.sh start
# clickhouse) and the release builds (cargo build --release -p sessions-query -p
# sessions-control --bins). Drops its database at the end.
# Knobs: BENCH_HEAVY_EVENTS, BENCH_REQUESTS, BENCH_QUERY_PORT (18092),
# BENCH_QUERY_BIN (another sessions-query build).
set -euo pipefail

SCRIPT_NAME=bench-events.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
ensure_cursor_secret # sessions-query requires one

HEAVY_EVENTS=${BENCH_HEAVY_EVENTS:-1000000}
REQUESTS=${BENCH_REQUESTS:-200}
PORT=${BENCH_QUERY_PORT:-18092}
export CLICKHOUSE_URL=${CLICKHOUSE_URL:-http://127.0.0.1:8123}
export CLICKHOUSE_DATABASE=bench_events
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
QUERY=bench-events-query
QUERY_BIN=${BENCH_QUERY_BIN:-$BIN/sessions-query}

ping_ok "${CLICKHOUSE_URL%%,*}/ping" || die "ClickHouse is not up (scripts/services.sh start clickhouse)"
for binary in "$QUERY_BIN" "$BIN/sessions-admin"; do
    [[ -x $binary ]] || die "$binary is missing (cargo build --release)"
done
port_open "$PORT" && die "port $PORT is taken"
cleanup() {
    terminate "$QUERY" 10 >/dev/null 2>&1 || true
    ch "DROP DATABASE IF EXISTS $CLICKHOUSE_DATABASE" >/dev/null || true
}
trap cleanup EXIT
ch "DROP DATABASE IF EXISTS $CLICKHOUSE_DATABASE" >/dev/null

RUST_LOG=warn "$BIN/sessions-admin" migrate >/dev/null
org=$("$BIN/sessions-admin" org create --name bench)
api_key=$(json_get apiKey <<<"$org")
project_key=benchEvents000000001
project_id=$("$BIN/sessions-admin" project create --org "$(json_get orgId <<<"$org")" \
    --name bench --key "$project_key" | json_get projectId)
SMALL=7000000000000001
HEAVY=7000000000000002

say "writing 50 + $HEAVY_EVENTS events into session_events"
insert_session() { # SESSION_ID EVENTS: a page, a click, an input, an error, a custom event in turn
    CH_MAX_TIME=600 ch "INSERT INTO $CLICKHOUSE_DATABASE.session_events
        SELECT $project_id, $1, 1700000000000 + number * 37, number,
               CAST(number % 5 + 1 AS Enum8('LOCATION' = 1, 'CLICK' = 2, 'INPUT' = 3, 'ERROR' = 4, 'CUSTOM' = 5)),
               if(number % 5 = 0, concat('https://shop.example.com/p/', toString(number % 500)), ''),
               if(number % 5 = 0, 'https://www.example.org/', ''),
               multiIf(number % 5 = 1, 'Add to cart', number % 5 = 2, 'search', ''),
               if(number % 5 = 1, '#product > div.actions > button.primary', ''),
               multiIf(number % 5 = 3, 'TypeError', number % 5 = 4, 'checkout_step', ''),
               if(number % 5 = 3, 'Cannot read properties of undefined (reading ''id'')', ''),
               if(number % 5 = 4, concat('{\"step\":', toString(number % 7), '}'), '')
        FROM numbers($2)" >/dev/null
    ch "INSERT INTO $CLICKHOUSE_DATABASE.project_session_state (project_id, session_id, version, state)
        VALUES ($project_id, $1, $2, '{}')" >/dev/null
}
insert_session "$SMALL" 50
insert_session "$HEAVY" "$HEAVY_EVENTS"

launch "$QUERY" "$QUERY_BIN" "$REPO" env QUERY_ADDR="127.0.0.1:$PORT" RUST_LOG=warn "$QUERY_BIN"
for _ in $(seq 300); do
    http_ok "http://127.0.0.1:$PORT/readyz" && break
    sleep 0.1
done
http_ok "http://127.0.0.1:$PORT/readyz" || die "sessions-query did not get ready"

python3 - "http://127.0.0.1:$PORT/api/v1/$project_key/sessions" "$api_key" "$REQUESTS" \
    "$SMALL" "$HEAVY" "$HEAVY_EVENTS" <<'PY'
import http.client, json, statistics, sys, time, urllib.parse
base, key, requests, small, heavy, heavy_events = sys.argv[1:7]
service = urllib.parse.urlsplit(base)
connection = http.client.HTTPConnection(service.netloc)
def get(target):
    """GET target: its time in seconds, its events and its next link target."""
    started = time.perf_counter()
    connection.request("GET", target, headers={"Authorization": key})
    response = connection.getresponse()
    body = json.loads(response.read())
    elapsed = time.perf_counter() - started
    assert response.status == 200, body
    link = response.getheader("link")
    return elapsed, body["data"], link and link[1:link.index(">")]
path = lambda session: f"{service.path}/{session}/events"
# Halfway through the big session by pages of 10,000, checking order and count.
target, walked, last = f"{path(heavy)}?limit=10000", 0, None
while walked < int(heavy_events) // 2:
    _, events, target = get(target)
    keys = [(e["timestamp"], e["messageId"]) for e in events]
    assert keys == sorted(keys) and (last is None or keys[0] > last), "order"
    last, walked = keys[-1], walked + len(events)
middle = target.replace("limit=10000", "limit=50")
cases = {"small": f"{path(small)}?limit=50", "heavyFirst": f"{path(heavy)}?limit=50",
         "heavyMiddle": middle}
times = {name: [] for name in cases}
for _ in range(int(requests)):
    for name, target in cases.items():
        seconds, events, _ = get(target)
        assert len(events) == 50, (name, len(events))
        times[name].append(seconds)
p50 = {name: statistics.median(values) * 1000 for name, values in times.items()}
print(json.dumps({"heavyEvents": int(heavy_events), "requests": int(requests),
                  "p50Ms": {name: round(value, 3) for name, value in p50.items()},
                  "ratioToSmall": {name: round(value / p50["small"], 2)
                                   for name, value in p50.items() if name != "small"},
                  "walkedPages": walked // 10000}))
PY
