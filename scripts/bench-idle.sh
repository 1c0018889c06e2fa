#!/usr/bin/env bash
# What an idle worker costs (the rule: at most 2 ms of CPU per second, BENCHMARKS.md
# §3): the release sessions-ingest (or BENCH_WORKER_BIN, another build, e.g. one from
# before a change) consumes a fresh empty 4-partition topic into a fresh database;
# after BENCH_WARMUP (15) seconds its threads' CPU (utime + stime, /proc/PID/task/*/stat)
# is sampled, again BENCH_SECONDS (60) seconds later, and the CPU per second of each
# thread name and of the process is printed as one JSON line (with a few messages
# sent first when BENCH_FORWARD=1, so that the forwarding producer has been used).
# Asserts nothing. Needs ClickHouse and Kafka up; drops its database at the end.
set -euo pipefail

SCRIPT_NAME=bench-idle.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

WARMUP=${BENCH_WARMUP:-15}
SECONDS_MEASURED=${BENCH_SECONDS:-60}
export KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:9092}
export CLICKHOUSE_URL=${CLICKHOUSE_URL:-http://127.0.0.1:8123}
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
WORKER_BIN=${BENCH_WORKER_BIN:-$BIN/sessions-ingest}
RUN_ID=$(date +%s)_$$
TOPIC=bench-idle-$RUN_ID
DATABASE=bench_idle_$RUN_ID
WORKER=bench-idle-worker

[[ -x $WORKER_BIN ]] || die "$WORKER_BIN is missing (cargo build --release)"
ping_ok "${CLICKHOUSE_URL%%,*}/ping" || die "ClickHouse is not up (scripts/services.sh start clickhouse)"
cleanup() {
    terminate "$WORKER" 30 >/dev/null 2>&1 || true
    ch "DROP DATABASE IF EXISTS $DATABASE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

if [[ ${BENCH_FORWARD:-0} == 1 ]]; then
    # Partitioned at random, not by session: most events arrive away from their home
    # partition and are forwarded, so the forwarding producer has been used.
    "$BIN/sessions-producer" --topic "$TOPIC" --create-topic --partitions 4 --sessions 20 \
        --events-per-session 10 --users 5 --partitioner random >/dev/null
else
    "$BIN/sessions-producer" --topic "$TOPIC" --create-topic --partitions 4 --sessions 0 >/dev/null
fi
launch "$WORKER" "$WORKER_BIN" "$REPO" env KAFKA_TOPIC="$TOPIC" KAFKA_GROUP="$TOPIC" \
    CLICKHOUSE_DATABASE="$DATABASE" INGEST_METRICS_ADDR=127.0.0.1:0 RUST_LOG=warn "$WORKER_BIN"
pid=$(<"$RUN_DIR/$WORKER.pid")
sleep "$WARMUP"

# sample: "name ticks" per thread (comm may hold spaces: take what is inside the
# parentheses, the fields after the closing one).
sample() {
    local task
    for task in /proc/"$pid"/task/*; do
        python3 - "$task/stat" <<'PY' || true
import sys
text = open(sys.argv[1]).read()
name = text[text.index("(") + 1:text.rindex(")")].replace(" ", "_")
fields = text[text.rindex(")") + 2:].split()
print(name, int(fields[11]) + int(fields[12]))
PY
    done
}
before=$(sample)
sleep "$SECONDS_MEASURED"
after=$(sample)
kill -0 "$pid" || die "the worker exited (see $LOG_DIR/$WORKER.log)"

python3 - "$SECONDS_MEASURED" "$(getconf CLK_TCK)" "$WORKER_BIN" <<PY
import collections, json, sys
seconds, ticks, binary = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
def parse(text):
    totals = collections.Counter()
    for line in text.strip().splitlines():
        name, value = line.rsplit(" ", 1)
        totals[name] += int(value)
    return totals
before, after = parse("""$before"""), parse("""$after""")
per_thread = {name: round((after[name] - before.get(name, 0)) / ticks / seconds * 1000, 3)
              for name in after}
print(json.dumps({"binary": binary, "seconds": seconds,
                  "cpuMsPerSecond": round(sum(per_thread.values()), 3),
                  "perThreadName": dict(sorted(per_thread.items(), key=lambda kv: -kv[1]))}))
PY
