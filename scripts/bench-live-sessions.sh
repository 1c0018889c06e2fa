#!/usr/bin/env bash
# Live sessions (GET /api/v1/:projectKey/assist/sessions, BENCHMARKS.md §8): the cost
# of a project's live list must follow its live sessions, not its history. A fresh
# database on CLICKHOUSE_URL (default the local 18.16) gets a `live_sessions` table
# (schemas/010) holding:
#   - project 1: 3.6 M rows written over the 36 hours before the window (a busy
#     project's day and a half of flushes, all the table ever keeps of a history) and
#     1,000 live sessions of 30 flushes each within the last 290 s;
#   - project 3: 2 M rows of another project over the same hours;
#   - project 2: the same 1,000 live sessions, and nothing else.
# Then the service's two statements (query/src/live.rs: the page and the total, as
# it sends them) run alternately for projects 1 and 2, BENCH_ROUNDS (15) times each;
# prints the medians. Asserts nothing about timing; drops the database at the end.
set -euo pipefail
CH=${CLICKHOUSE_URL:-http://127.0.0.1:8123}
DB=bench_live_sessions
ROUNDS=${BENCH_ROUNDS:-15}
q() { curl -sS --fail "$CH" --data-binary "$1"; }
q "DROP DATABASE IF EXISTS $DB"
q "CREATE DATABASE $DB"
q "CREATE TABLE $DB.live_sessions (project_id UInt32, user_id String, start_ts Int64, session_id UInt64, version UInt64, deleted UInt8, user_uuid String, user_agent String, user_os String, user_browser String, user_device String, user_country String, duration UInt64, events_count UInt32, pages_count UInt32, errors_count UInt32, ended UInt8, updated_at DateTime) ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMMDD(updated_at) ORDER BY (project_id, updated_at, session_id) SETTINGS index_granularity = 1024"
COLS="project_id, user_id, start_ts, session_id, version, deleted, user_uuid, user_agent, user_os, user_browser, user_device, user_country, duration, events_count, pages_count, errors_count, ended, updated_at"
row() { # project, session, version, ended, written at
  echo "SELECT $1, concat('user-', toString(intDiv($2, 7))), 1600000000000 + $2 * 1000, $2, $3, 0, 'uuid', 'Mozilla/5.0 (X11; Linux x86_64) Firefox/89.0', 'Linux', 'Firefox', '', 'IN', 1000, toUInt32($3), 1, 0, $4, $5"
}
q "INSERT INTO $DB.live_sessions ($COLS) $(row 1 'number' 'number % 3 + 1' 'number % 3 = 2' 'now() - 400 - intDiv(number, 28)') FROM numbers(3600000)"
q "INSERT INTO $DB.live_sessions ($COLS) $(row 3 'number' '1' '1' 'now() - 400 - intDiv(number, 16)') FROM numbers(2000000)"
for project in 1 2; do
  q "INSERT INTO $DB.live_sessions ($COLS) $(row $project '(50000000 + intDiv(number, 30))' '(number % 30 + 1)' '0' 'now() - 290 + (number % 30) * 9') FROM numbers(30000)"
done
q "SELECT project_id, count() AS rows FROM $DB.live_sessions GROUP BY project_id ORDER BY project_id FORMAT PrettyCompactMonoBlock"
CH="$CH" DB="$DB" ROUNDS="$ROUNDS" python3 - <<'PYTHON'
import os, statistics, time, urllib.request
CH, DB, ROUNDS = os.environ["CH"], os.environ["DB"], int(os.environ["ROUNDS"])
COLUMNS = ["project_id", "session_id", "user_uuid", "user_id", "user_agent", "user_os", "user_browser",
           "user_device", "user_country", "start_ts", "duration", "events_count", "pages_count", "errors_count"]
INNER = ", ".join(f"argMax({c}, version) AS s_{c}" for c in COLUMNS + ["ended", "deleted"] if c != "session_id")
OUTER = ", ".join(c if c == "session_id" else f"s_{c}" for c in COLUMNS)
def newest(project, since):
    return (f"SELECT session_id, {INNER}, count() AS s_rows FROM {DB}.live_sessions "
            f"WHERE project_id = {project} AND updated_at >= toDateTime({since}) GROUP BY session_id")
def timed(sql):
    started = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(CH, data=(sql + " FORMAT RowBinary").encode())) as answer:
        answer.read()
    return (time.perf_counter() - started) * 1000
def both(project):
    since = int(time.time()) - 300
    page = (f"SELECT {OUTER} FROM ({newest(project, since)}) WHERE s_ended = 0 AND s_deleted = 0 "
            "ORDER BY s_start_ts DESC, session_id LIMIT 51")
    total = (f"SELECT toUInt64(countIf(s_ended = 0 AND s_deleted = 0)) AS total, "
             f"toUInt64(sum(s_rows)) AS rows_read FROM ({newest(project, since)})")
    return timed(page), timed(total)
both(1); both(2)
runs = {1: [], 2: []}
for _ in range(ROUNDS):
    for project in (1, 2):
        runs[project].append(both(project))
for project, label in ((1, "history 3.6 M rows + 1,000 live"), (2, "1,000 live, nothing else")):
    pages = [page for page, _ in runs[project]]
    totals = [total for _, total in runs[project]]
    print(f"project {project} ({label}): page p50 {statistics.median(pages):.1f} ms "
          f"(min {min(pages):.1f}, max {max(pages):.1f}), total p50 {statistics.median(totals):.1f} ms")
PYTHON
q "DROP DATABASE $DB"
