#!/usr/bin/env bash
# End-to-end ingest benchmark on Apache Kafka (results in BENCHMARKS.md).
#
#   1. A fresh topic (unique name, 4 partitions) is filled with the standard
#      seeded workload: 20,000 sessions x ~50 events, 4,000 users, ~5% duplicates
#      (target/release/sessions-producer).
#   2. The floor: a bare rdkafka consumer (ingest/examples/bare_consumer.rs, fresh
#      group, the worker's fetch settings, no processing) drains the topic; time
#      from subscribe to the last message, and its CPU time. What the broker and
#      librdkafka deliver on this machine: the worker's throughput against it is
#      the worker's own cost.
#   3. target/release/sessions-ingest, fresh group, fresh ClickHouse database,
#      drains the same topic; time from process start until ClickHouse serves
#      every session with every event applied (the live rows' versions add up
#      to the worker's applied-event count). Peak RSS is VmHWM; rows written per
#      event come from the worker's /metrics; ClickHouse SELECT/INSERT queries
#      from the server's system.events (minus this script's own polls).
#   4. Freshness: a second worker runs on a second fresh topic and database; once
#      it consumes (one warm-up session), the same workload is produced live at
#      BENCH_LIVE_RATE messages/s (10000), and
#      the quantiles of ingest_freshness_seconds (Kafka timestamp to the flush
#      that made the event queryable) are computed from the worker's /metrics
#      buckets once every session is served, minus the warm-up's observations;
#      likewise ingest_receive_delay_seconds (Kafka timestamp to the worker's
#      receipt: the share before the worker).
#   5. Rebalance pause (ingest/examples/rebalance_pause.rs): for each group
#      protocol (eager, cooperative, consumer), the longest stop of a partition
#      that keeps its owner while a second member joins, under 2,000 msg/s.
#      BENCH_REBALANCE=0 skips it.
#
# Needs ClickHouse and the broker up (scripts/services.sh start clickhouse kafka).
# Builds the release binaries first unless BENCH_NO_BUILD=1. Measures and
# prints; asserts nothing about timing. Cleans up: stops the worker, drops the
# bench database; leaves the uniquely named topics (the test bed's broker keeps
# a day of data).
# Output: a human summary on stderr, one JSON line on stdout.
#
# Knobs (environment): BENCH_SESSIONS (20000), BENCH_EVENTS_PER_SESSION (50),
# BENCH_USERS (4000), BENCH_SEED (42), BENCH_METRICS_PORT (9191),
# BENCH_LIVE_RATE (10000; 0 skips step 4), BENCH_FRESHNESS_ONLY=1 (step 4 alone,
# its JSON on stdout), KAFKA_BROKERS,
# CLICKHOUSE_URL, CLICKHOUSE_CLUSTER (cluster mode: CLICKHOUSE_URL lists the
# nodes; the query counts are then the first node's), BENCH_KEEP_DATABASE=NAME
# (use that database name and keep it, for scripts/bench-cluster.sh),
# BENCH_BASELINE_BIN (another sessions-ingest build, e.g. from before a change:
# it drains the same topic after this build, its CPU and time reported beside),
# and the worker's own settings (FLUSH_MAX_SESSIONS, ...). On one server it also
# reports the session_events and sessions tables' size after merges (bytes per
# stored event).
set -euo pipefail

SCRIPT_NAME=bench-ingest.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

SESSIONS=${BENCH_SESSIONS:-20000}
EVENTS_PER_SESSION=${BENCH_EVENTS_PER_SESSION:-50}
USERS=${BENCH_USERS:-4000}
SEED=${BENCH_SEED:-42}
METRICS_PORT=${BENCH_METRICS_PORT:-9191}
LIVE_RATE=${BENCH_LIVE_RATE:-10000}
export KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:9092}
export CLICKHOUSE_URL=${CLICKHOUSE_URL:-http://127.0.0.1:8123}
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
RUN_ID=$(date +%s)_$$
TOPIC=bench-ingest-$RUN_ID
DATABASE=${BENCH_KEEP_DATABASE:-bench_ingest_$RUN_ID}
ON_CLUSTER=${CLICKHOUSE_CLUSTER:+ ON CLUSTER $CLICKHOUSE_CLUSTER}
WORKER=bench-ingest-worker # name under $RUN_DIR (pid file), see lib.sh

CH_MAX_TIME=30 # seconds per ClickHouse request (ch, lib.sh)

# worker_metric NAME [LABELS]: a sample of the worker's /metrics (0 if absent).
worker_metric() { metric_sample "http://127.0.0.1:$METRICS_PORT/metrics" "$1${2:-}"; }
ch_events() { # ch_events: "SelectQuery InsertQuery" counters of the server
    ch "SELECT sumIf(value, event = 'SelectQuery'), sumIf(value, event = 'InsertQuery') FROM system.events FORMAT TSV" |
        tr '\t' ' '
}

cleanup() {
    terminate "$WORKER" 30 >/dev/null 2>&1 || true
    [[ -n ${BENCH_KEEP_DATABASE:-} ]] ||
        ch "DROP DATABASE IF EXISTS $DATABASE$ON_CLUSTER" >/dev/null 2>&1 || true
    ch "DROP DATABASE IF EXISTS ${DATABASE}_live$ON_CLUSTER" >/dev/null 2>&1 || true
}

# start_worker TOPIC DATABASE [BINARY]: the release worker (or BINARY), with a fresh
# group named after DATABASE, on TOPIC.
start_worker() {
    local binary=${3:-$BIN/sessions-ingest}
    launch "$WORKER" "$binary" "$REPO" env KAFKA_TOPIC="$1" \
        KAFKA_GROUP="$2" CLICKHOUSE_DATABASE="$2" \
        INGEST_METRICS_ADDR="127.0.0.1:$METRICS_PORT" RUST_LOG="${RUST_LOG:-warn}" \
        "$binary"
}

# worker_cpu_seconds PID: user + system CPU seconds so far (fields 14 and 15 of stat).
worker_cpu_seconds() {
    awk -v ticks="$(getconf CLK_TCK)" '{ print ($14 + $15) / ticks }' "/proc/$1/stat"
}

# wait_served DATABASE SESSIONS MESSAGES: waits (600 s at most) until the worker
# has consumed MESSAGES messages and DATABASE serves SESSIONS live sessions with
# every applied event; sets consumed_at, applied and polls (ClickHouse reads).
wait_served() {
    local database=$1 sessions=$2 messages=$3 deadline live_sessions live_events
    deadline=$(($(now_ms) + 600000))
    consumed_at=""
    polls=0
    while :; do
        # Asked twice: while `env` execs the worker, its command line reads empty.
        pid_of "$WORKER" >/dev/null || { sleep 0.5 && pid_of "$WORKER" >/dev/null; } ||
            { show_log "$LOG_DIR/$WORKER.log"; die "the worker exited"; }
        (($(now_ms) < deadline)) || die "not served within 600 s"
        if [[ -z $consumed_at ]]; then
            if (($(worker_metric ingest_messages_consumed_total) >= messages)); then
                consumed_at=$(now_ms)
            else
                sleep 0.1
                continue
            fi
        fi
        applied=$(worker_metric ingest_events_applied_total)
        polls=$((polls + 1))
        read -r live_sessions live_events < <(ch "
            SELECT count(), sum(intDiv(v - 1, 2)) FROM (
                SELECT session_id, argMax(version, version) AS v, argMax(deleted, version) AS d
                FROM $database.sessions GROUP BY session_id) WHERE d = 0 FORMAT TSV" | tr '\t' ' ')
        if ((live_sessions == sessions && live_events == applied)); then
            return 0
        fi
        sleep 0.1
    done
}

# histogram_buckets NAME: the worker's `le count` pairs of the histogram NAME.
histogram_buckets() { metric_histogram "http://127.0.0.1:$METRICS_PORT/metrics" "$1"; }
trap cleanup EXIT

ping_ok "${CLICKHOUSE_URL%%,*}/ping" || die "ClickHouse is not up at $CLICKHOUSE_URL (scripts/services.sh start clickhouse)"
port_open "${KAFKA_BROKERS##*:}" || die "no broker at $KAFKA_BROKERS (scripts/services.sh start kafka)"
port_open "$METRICS_PORT" && die "port $METRICS_PORT is taken; set BENCH_METRICS_PORT"

if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    say "building release binaries"
    cargo build --release --quiet --bins
    cargo build --release --quiet -p sessions-ingest --example bare_consumer --example rebalance_pause
fi
[[ -x $BIN/sessions-ingest && -x $BIN/sessions-producer ]] ||
    die "no release binaries in $BIN (build them, or set CARGO_TARGET_DIR to where they are)"

# measure_freshness: step 4; prints the freshness quantiles as JSON.
measure_freshness() {
    local warmup warmup_messages baseline live
    local live_topic=$TOPIC-live
    say "freshness: a worker on $live_topic, the workload produced live at $LIVE_RATE msg/s"
    warmup=$("$BIN/sessions-producer" --topic "$live_topic" --create-topic --partitions 4 \
        --sessions 1 --first-session-id 1 --seed "$SEED" 2>/dev/null)
    start_worker "$live_topic" "${DATABASE}_live"
    warmup_messages=$(json_get messages <<<"$warmup")
    wait_served "${DATABASE}_live" 1 "$warmup_messages"
    sleep 0.5 # the flush's observations follow its writes
    baseline=$(histogram_buckets ingest_freshness_seconds)
    baseline_receipt=$(histogram_buckets ingest_receive_delay_seconds)
    baseline_write=$(histogram_buckets ingest_clickhouse_insert_duration_seconds)
    live=$("$BIN/sessions-producer" --topic "$live_topic" --sessions "$SESSIONS" \
        --events-per-session "$EVENTS_PER_SESSION" --users "$USERS" --seed "$SEED" \
        --rate "$LIVE_RATE" 2>/dev/null)
    say "live producer: $live"
    wait_served "${DATABASE}_live" $((SESSIONS + 1)) \
        $(($(json_get messages <<<"$live") + warmup_messages))
    sleep 0.5
    local freshness receipt write
    freshness=$(python3 scripts/histogram_summary.py "$baseline" "$(histogram_buckets ingest_freshness_seconds)")
    # The share before the worker: from the message's timestamp to its receipt.
    receipt=$(python3 scripts/histogram_summary.py "$baseline_receipt" "$(histogram_buckets ingest_receive_delay_seconds)")
    # The flushes' writes (one observation per flush, not per message).
    write=$(python3 scripts/histogram_summary.py "$baseline_write" "$(histogram_buckets ingest_clickhouse_insert_duration_seconds)")
    python3 -c 'import json, sys; r = json.loads(sys.argv[1]); r["receiveDelay"] = json.loads(sys.argv[2]); r["flushWrite"] = json.loads(sys.argv[3]); print(json.dumps(r))' \
        "$freshness" "$receipt" "$write"
    terminate "$WORKER" 30 >/dev/null 2>&1
}

if [[ ${BENCH_FRESHNESS_ONLY:-0} == 1 ]]; then
    measure_freshness
    exit 0
fi

say "filling topic $TOPIC: $SESSIONS sessions x ~$EVENTS_PER_SESSION events, $USERS users"
produced=$("$BIN/sessions-producer" --topic "$TOPIC" --create-topic --partitions 4 \
    --sessions "$SESSIONS" --events-per-session "$EVENTS_PER_SESSION" --users "$USERS" \
    --seed "$SEED" 2>/dev/null)
MESSAGES=$(json_get messages <<<"$produced")
EVENTS=$(json_get events <<<"$produced")
BYTES=$(json_get bytes <<<"$produced")
say "producer: $produced"

say "floor: bare consumer draining $MESSAGES messages"
bare=$("$BIN/examples/bare_consumer" "$TOPIC" "$MESSAGES")
BARE_SECONDS=$(json_get secondsFromSubscribe <<<"$bare")
BARE_CPU=$(json_get cpuSeconds <<<"$bare")
say "bare consumer: $bare"

say "sessions-ingest draining the same topic into database $DATABASE"
read -r selects_before inserts_before < <(ch_events)
started=$(now_ms)
start_worker "$TOPIC" "$DATABASE"
pid=$(<"$RUN_DIR/$WORKER.pid")
wait_served "$DATABASE" "$SESSIONS" "$MESSAGES"
finished=$(now_ms)
read -r selects_after inserts_after < <(ch_events)
peak_rss_kib=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")
worker_cpu=$(worker_cpu_seconds "$pid")
rows_keys=$(worker_metric ingest_clickhouse_rows_written_total '{table="session_keys"}')
rows_sessions=$(worker_metric ingest_clickhouse_rows_written_total '{table="sessions"}')
rows_state=$(worker_metric ingest_clickhouse_rows_written_total '{table="project_session_state"}')
rows_rejected=$(worker_metric ingest_clickhouse_rows_written_total '{table="rejected_events"}')
flushes=$(worker_metric ingest_flushes_total)
duplicates=$(worker_metric ingest_events_duplicate_total)
consumed_events=$(worker_metric ingest_events_consumed_total)
events_stored=$(worker_metric ingest_events_stored_total)
terminate "$WORKER" 30 >/dev/null 2>&1

# The second read model's size: session_events merged (one server; on a cluster its
# parts are on the nodes, and this is skipped).
EVENTS_STORAGE=null
if [[ -z ${CLICKHOUSE_CLUSTER:-} ]]; then
    CH_MAX_TIME=600 ch "OPTIMIZE TABLE $DATABASE.session_events FINAL" >/dev/null
    CH_MAX_TIME=600 ch "OPTIMIZE TABLE $DATABASE.sessions FINAL" >/dev/null
    EVENTS_STORAGE=$(ch "SELECT concat('{', arrayStringConcat(groupArray(concat('\"', table, '\": {\"rows\": ', toString(rows),
        ', \"bytesOnDisk\": ', toString(bytes), ', \"uncompressedBytes\": ', toString(raw), '}')), ', '), '}') FROM (
        SELECT table, sum(rows) AS rows, sum(bytes_on_disk) AS bytes, sum(data_uncompressed_bytes) AS raw
        FROM system.parts WHERE database = '$DATABASE' AND active AND table IN ('sessions', 'session_events')
        GROUP BY table) FORMAT TSVRaw")
fi

# The same drain by another build (BENCH_BASELINE_BIN, e.g. one from before a change),
# into a database of its own: its CPU and time beside this build's.
BASELINE=null
if [[ -n ${BENCH_BASELINE_BIN:-} ]]; then
    say "baseline $BENCH_BASELINE_BIN draining the same topic into ${DATABASE}_base"
    # wait_served sets these globals: this build's values are the ones reported.
    kept=("$consumed_at" "$applied" "$polls")
    base_started=$(now_ms)
    start_worker "$TOPIC" "${DATABASE}_base" "$BENCH_BASELINE_BIN"
    base_pid=$(<"$RUN_DIR/$WORKER.pid")
    wait_served "${DATABASE}_base" "$SESSIONS" "$MESSAGES"
    base_finished=$(now_ms)
    base_cpu=$(worker_cpu_seconds "$base_pid")
    terminate "$WORKER" 30 >/dev/null 2>&1
    ch "DROP DATABASE IF EXISTS ${DATABASE}_base$ON_CLUSTER" >/dev/null
    consumed_at=${kept[0]} applied=${kept[1]} polls=${kept[2]}
    BASELINE=$(python3 -c 'import json, sys; cpu, events, ms = map(float, sys.argv[1:4]); print(json.dumps({"workerCpuSecondsPerMillionEvents": round(cpu / events * 1e6, 2), "workerSeconds": round(ms / 1000, 2), "workerEventsPerSecond": round(events / (ms / 1000))}))' \
        "$base_cpu" "$EVENTS" "$((base_finished - base_started))")
fi

FRESHNESS=null
# In a subshell: the drain's numbers above (applied, polls, consumed_at) stay.
((LIVE_RATE > 0)) && FRESHNESS=$(measure_freshness)

REBALANCE=null
if [[ ${BENCH_REBALANCE:-1} != 0 ]]; then
    say "rebalance pause: a member joins under 2,000 msg/s, for each group protocol"
    REBALANCE=$("$BIN/examples/rebalance_pause" 2000 | python3 -c 'import json, sys; print(json.dumps([json.loads(l) for l in sys.stdin if l.strip()]))')
fi

python3 - "$MESSAGES" "$EVENTS" "$BYTES" "$BARE_SECONDS" "$started" "$consumed_at" "$finished" \
    "$peak_rss_kib" "$rows_sessions" "$rows_state" "$rows_rejected" "$flushes" "$applied" \
    "$duplicates" "$consumed_events" "$((selects_after - selects_before - polls - 2))" \
    "$((inserts_after - inserts_before))" "$TOPIC" "$BARE_CPU" "$worker_cpu" "$rows_keys" "$FRESHNESS" "$LIVE_RATE" \
    "$REBALANCE" "$events_stored" "$EVENTS_STORAGE" "$BASELINE" <<'EOF'
import json, sys
(messages, events, size, bare_s, started, consumed_at, finished, rss_kib, rows_sessions,
 rows_state, rows_rejected, flushes, applied, duplicates, consumed_events, selects,
 inserts) = [float(x) for x in sys.argv[1:18]]
topic = sys.argv[18]
bare_cpu, worker_cpu, rows_keys = (float(x) for x in sys.argv[19:22])
freshness, live_rate = json.loads(sys.argv[22]), int(sys.argv[23])
rebalance = json.loads(sys.argv[24])
events_stored, storage, baseline = float(sys.argv[25]), json.loads(sys.argv[26]), json.loads(sys.argv[27])
if storage and "session_events" in storage:
    stored = storage["session_events"]
    storage["bytesPerStoredEvent"] = round(stored["bytesOnDisk"] / max(stored["rows"], 1), 1)
    if "sessions" in storage:
        storage["bytesPerSession"] = round(storage["sessions"]["bytesOnDisk"] / max(storage["sessions"]["rows"], 1), 1)
worker_s = (finished - started) / 1000
result = {
    "topic": topic,
    "messages": int(messages), "events": int(events), "bytes": int(size),
    "bareConsumerSeconds": round(bare_s, 2),
    "bareConsumerMessagesPerSecond": round(messages / bare_s),
    "bareConsumerEventsPerSecond": round(events / bare_s),
    "workerSeconds": round(worker_s, 2),
    "workerSecondsUntilConsumed": round((consumed_at - started) / 1000, 2),
    "workerMessagesPerSecond": round(messages / worker_s),
    "workerEventsPerSecond": round(events / worker_s),
    "workerToBareThroughput": round(bare_s / worker_s, 3),
    "peakRssMiB": round(rss_kib / 1024, 1),
    "eventsConsumed": int(consumed_events), "eventsApplied": int(applied),
    "eventsDuplicate": int(duplicates),
    "rowsWritten": {"sessions": int(rows_sessions), "session_state": int(rows_state),
                    "session_keys": int(rows_keys), "rejected_events": int(rows_rejected)},
    "rowsWrittenPerEvent": round((rows_sessions + rows_state + rows_keys + rows_rejected) / events, 4),
    "workerCpuSecondsPerMillionEvents": round(worker_cpu / events * 1e6, 2),
    "bareConsumerCpuSecondsPerMillionEvents": round(bare_cpu / events * 1e6, 2),
    "flushes": int(flushes),
    "clickhouseSelects": int(selects), "clickhouseInserts": int(inserts),
    "freshnessAtLiveRate": freshness, "liveRateMessagesPerSecond": live_rate,
    "rebalancePause": rebalance,
    "eventsStored": int(events_stored), "storage": storage,
    "baseline": baseline,
}
print(json.dumps(result))
print(f"""
bare consumer : {messages:,.0f} messages in {bare_s:.2f} s = {messages / bare_s:,.0f} msg/s ({events / bare_s:,.0f} events/s)
sessions-ingest: {messages:,.0f} messages in {worker_s:.2f} s = {messages / worker_s:,.0f} msg/s ({events / worker_s:,.0f} events/s), all consumed at {(consumed_at - started) / 1000:.2f} s
worker / bare consumer throughput: {bare_s / worker_s:.1%}   peak RSS {rss_kib / 1024:.0f} MiB
CPU seconds per million events: worker {worker_cpu / events * 1e6:.2f}, bare consumer {bare_cpu / events * 1e6:.2f}
rows written per event: {(rows_sessions + rows_state + rows_rejected) / events:.4f} (sessions {rows_sessions:.0f}, session_state {rows_state:.0f}, rejected {rows_rejected:.0f}; {flushes:.0f} flushes)
ClickHouse queries by the worker: {selects:.0f} SELECT (incl. migrations, loads), {inserts:.0f} INSERT
freshness at {live_rate:,} msg/s live: {freshness}
rebalance pause of unmoved partitions: {rebalance}
events stored: {events_stored:,.0f}; storage after merges: {storage}
baseline build (BENCH_BASELINE_BIN): {baseline}""", file=sys.stderr)
EOF
