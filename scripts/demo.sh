#!/usr/bin/env bash
# Quick start: the whole system on loopback, with demo traffic.
#
#   scripts/demo.sh          install what is missing, build release binaries,
#                            start ClickHouse and Apache Kafka (unless already up),
#                            sessions-ingest and sessions-query, create a demo
#                            organization and project, send demo traffic, wait
#                            until the API serves it, and print a curl with its
#                            output
#   scripts/demo.sh stop     stop what `scripts/demo.sh` started (services that
#                            were already running are left alone)
#   scripts/demo.sh status
#
# Idempotent: a second run reuses what runs, the org and project, and the API
# key kept in .local/demo.env; it re-sends the same demo events, which the
# worker recognises as duplicates (the data does not change).
#
# State, logs and pid files are under .local/ (SESSIONS_STATE_DIR).
set -euo pipefail

# ---------------------------------------------------------------- knobs
DEMO_ORG_NAME=${DEMO_ORG_NAME:-demo}
DEMO_PROJECT_NAME=${DEMO_PROJECT_NAME:-demo}
DEMO_PROJECT_KEY=${DEMO_PROJECT_KEY:-3sWXSsqHgSKnE87YkNJK}
# sessions-producer names its users user-<n>@example.com, n in 0..--users.
DEMO_USER_ID=${DEMO_USER_ID:-user-1@example.com}
DEMO_SESSIONS=${DEMO_SESSIONS:-300}
DEMO_EVENTS_PER_SESSION=${DEMO_EVENTS_PER_SESSION:-20}
DEMO_USERS=${DEMO_USERS:-30}
DEMO_SEED=${DEMO_SEED:-42}
KAFKA_TOPIC=${KAFKA_TOPIC:-tracker-events}
TOPIC_PARTITIONS=${TOPIC_PARTITIONS:-4}
QUERY_PORT=${QUERY_PORT:-8080}
INGEST_METRICS_PORT=${INGEST_METRICS_PORT:-9091}
DATA_TIMEOUT=${DEMO_DATA_TIMEOUT:-120}
# ---------------------------------------------------------------------------

SCRIPT_NAME=demo.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

SERVICES_SH=$REPO/scripts/services.sh
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
DEMO_ENV=$STATE_DIR/demo.env
# Backing services this script started (and so may stop), one name a line.
DEMO_STARTED=$RUN_DIR/demo.started
CLICKHOUSE_HTTP_PORT=${CLICKHOUSE_HTTP_PORT:-8123}
KAFKA_PORT=${KAFKA_PORT:-9092}
export CLICKHOUSE_HTTP_PORT KAFKA_PORT
export CLICKHOUSE_URL="http://127.0.0.1:$CLICKHOUSE_HTTP_PORT"
export KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export KAFKA_TOPIC
export QUERY_ADDR="127.0.0.1:$QUERY_PORT"
export INGEST_METRICS_ADDR="127.0.0.1:$INGEST_METRICS_PORT"
export RUST_LOG=${RUST_LOG:-info}
# The query service's cursor key: made once, kept under .local/ (mode 0600).
ensure_cursor_secret "$STATE_DIR/demo-cursor-secret"

seconds_since() { python3 -c 'import sys; print(f"{(int(sys.argv[2]) - int(sys.argv[1])) / 1000:.1f}")' "$1" "$(now_ms)"; }

# ---------------------------------------------------------------- stop/status

stop_demo() {
    local svc
    terminate query 30
    terminate ingest 30
    if [[ -f $DEMO_STARTED ]]; then
        while read -r svc; do
            [[ -n $svc ]] && bash "$SERVICES_SH" stop "$svc"
        done < <(sort -u "$DEMO_STARTED")
        rm -f "$DEMO_STARTED"
    fi
    local others=()
    for svc in clickhouse kafka; do
        bash "$SERVICES_SH" status "$svc" >/dev/null 2>&1 && others+=("$svc")
    done
    if [[ ${#others[@]} -gt 0 ]]; then
        say "left running (not started by demo.sh): ${others[*]}"
    fi
    say "demo stopped"
}

status_demo() {
    local name pid
    bash "$SERVICES_SH" status clickhouse kafka || true
    for name in ingest query; do
        if pid=$(pid_of "$name"); then echo "$name: up (pid $pid)"; else echo "$name: down"; fi
    done
}

# ---------------------------------------------------------------- start

# start_services: start ClickHouse and Kafka unless up; remember which we started.
start_services() {
    local svc
    mkdir -p "$RUN_DIR"
    for svc in clickhouse kafka; do
        if ! bash "$SERVICES_SH" status "$svc" >/dev/null 2>&1; then
            bash "$SERVICES_SH" start "$svc"
            echo "$svc" >>"$DEMO_STARTED"
        else
            bash "$SERVICES_SH" start "$svc" # reports who runs it
        fi
    done
}

# start_app NAME BINARY PORT: start a binary of ours unless it already runs,
# then wait for its /readyz.
start_app() {
    local name=$1 bin=$2 port=$3 pid i url
    url="http://127.0.0.1:$port/readyz"
    if pid=$(pid_of "$name"); then
        say "$name already running (pid $pid)"
    else
        port_open "$port" &&
            die "port 127.0.0.1:$port is taken by a process demo.sh did not start; stop it or set ${4:-the port}"
        launch "$name" "$bin" "$REPO" "$bin"
        say "$name starting (pid $(<"$RUN_DIR/$name.pid"), log $LOG_DIR/$name.log)"
    fi
    for ((i = 0; i < 600; i++)); do
        http_ok "$url" && return 0
        if ! pid_of "$name" >/dev/null; then
            show_log "$LOG_DIR/$name.log"
            die "$name exited during start-up"
        fi
        sleep 0.1
    done
    show_log "$LOG_DIR/$name.log"
    die "$name not ready at $url after 60 s"
}

# ensure_topic: the demo topic, created if missing (the broker does not create
# topics on first use).
ensure_topic() {
    "$BIN/sessions-producer" --create-topic --partitions "$TOPIC_PARTITIONS" --sessions 0 >/dev/null ||
        die "cannot create topic $KAFKA_TOPIC on $KAFKA_BROKERS"
}

# Sets DEMO_ORG_ID, DEMO_API_KEY, DEMO_PROJECT_ID, DEMO_START_TS; reuses .local/demo.env.
ensure_org_and_project() {
    local admin=$BIN/sessions-admin projects
    projects=$("$admin" project list)
    project_field() { # project_field FIELD: FIELD of the project with our key
        python3 -c '
import json, sys
for p in json.loads(sys.argv[1]):
    if p.get("projectKey") == sys.argv[2]:
        print(p[sys.argv[3]]); break' "$projects" "$DEMO_PROJECT_KEY" "$1"
    }
    DEMO_PROJECT_ID=$(project_field projectId)
    if [[ -n $DEMO_PROJECT_ID && -f $DEMO_ENV ]]; then
        # shellcheck source=/dev/null
        source "$DEMO_ENV"
        if [[ ${DEMO_ORG_ID:-} == "$(project_field orgId)" && -n ${DEMO_API_KEY:-} ]]; then
            say "reusing demo org $DEMO_ORG_ID, project $DEMO_PROJECT_ID and API key ($DEMO_ENV)"
            DEMO_START_TS=${DEMO_START_TS:-$(($(now_ms) - 3600000))}
            write_demo_env
            return 0
        fi
    fi
    if [[ -n $DEMO_PROJECT_ID ]]; then
        # The project exists but its org's key is not in .local/demo.env: issue a new key.
        DEMO_ORG_ID=$(project_field orgId)
        DEMO_API_KEY=$("$admin" key create --org "$DEMO_ORG_ID" | json_get apiKey)
        say "project $DEMO_PROJECT_KEY exists (org $DEMO_ORG_ID, project $DEMO_PROJECT_ID); created a new API key for it"
    else
        local org
        org=$("$admin" org create --name "$DEMO_ORG_NAME")
        DEMO_ORG_ID=$(json_get orgId <<<"$org")
        DEMO_API_KEY=$(json_get apiKey <<<"$org")
        DEMO_PROJECT_ID=$("$admin" project create --org "$DEMO_ORG_ID" \
            --name "$DEMO_PROJECT_NAME" --key "$DEMO_PROJECT_KEY" | json_get projectId)
        say "created demo org $DEMO_ORG_ID and project $DEMO_PROJECT_ID (key $DEMO_PROJECT_KEY)"
    fi
    # Event time of the first demo session; kept so that re-runs send the same events.
    DEMO_START_TS=$(($(now_ms) - 3600000))
    write_demo_env
}

write_demo_env() {
    (
        umask 077
        printf 'DEMO_ORG_ID=%q\nDEMO_API_KEY=%q\nDEMO_PROJECT_ID=%q\nDEMO_PROJECT_KEY=%q\nDEMO_START_TS=%q\n' \
            "$DEMO_ORG_ID" "$DEMO_API_KEY" "$DEMO_PROJECT_ID" "$DEMO_PROJECT_KEY" "$DEMO_START_TS" >"$DEMO_ENV"
    )
}

# ingest_counter NAME: a counter of the worker's /metrics (0 if absent).
ingest_counter() { metric_sample "http://$INGEST_METRICS_ADDR/metrics" "$1"; }

up() {
    local t0 t_build t_start
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
    command -v python3 >/dev/null || die "python3 not found"
    INSTALL_DEPS_FOR=demo bash scripts/install-deps.sh

    t0=$(now_ms)
    say "cargo build --release --bins (several minutes the first time)"
    cargo build --release --bins
    t_build=$(seconds_since "$t0")

    t0=$(now_ms)
    start_services
    # Quiet unless it fails (its log lines name each migration applied).
    RUST_LOG=warn "$BIN/sessions-admin" migrate >/dev/null
    ensure_topic
    ensure_org_and_project
    start_app ingest "$BIN/sessions-ingest" "$INGEST_METRICS_PORT" INGEST_METRICS_PORT
    start_app query "$BIN/sessions-query" "$QUERY_PORT" QUERY_PORT
    t_start=$(seconds_since "$t0")

    local consumed_before summary events
    consumed_before=$(ingest_counter ingest_events_consumed_total)
    say "sending demo traffic: $DEMO_SESSIONS sessions, ~$DEMO_EVENTS_PER_SESSION events each, $DEMO_USERS users (project $DEMO_PROJECT_ID)"
    summary=$("$BIN/sessions-producer" --project-id "$DEMO_PROJECT_ID" \
        --sessions "$DEMO_SESSIONS" --events-per-session "$DEMO_EVENTS_PER_SESSION" \
        --users "$DEMO_USERS" --seed "$DEMO_SEED" --start-ts "$DEMO_START_TS")
    say "producer: $summary"
    events=$(json_get events <<<"$summary")

    # Ready when the worker has read every event just sent and the user's page
    # no longer changes (the worker flushes every 500 ms by default).
    local url i consumed body="" previous=""
    url="http://$QUERY_ADDR/api/v1/$DEMO_PROJECT_KEY/users/$DEMO_USER_ID/sessions"
    say "waiting until the worker has read them and the API serves $DEMO_USER_ID"
    for ((i = 0; i < DATA_TIMEOUT; i++)); do
        consumed=$(ingest_counter ingest_events_consumed_total)
        body=$(curl -sf --max-time 5 -H "Authorization: $DEMO_API_KEY" "$url" || true)
        if [[ $body == *'"sessionId"'* && $body == "$previous" ]] &&
            python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) - float(sys.argv[2]) >= float(sys.argv[3]) else 1)' \
                "$consumed" "$consumed_before" "$events"; then
            break
        fi
        previous=$body
        sleep 1
    done
    [[ $body == *'"sessionId"'* ]] ||
        die "no session for $DEMO_USER_ID after ${DATA_TIMEOUT}s (see $LOG_DIR/ingest.log and $LOG_DIR/query.log)"

    cat <<EOF

The system is up: build ${t_build} s, start ${t_start} s. Logs: $LOG_DIR
API key of the demo organization: $DEMO_ENV

Sessions of $DEMO_USER_ID:

curl -s -H 'Authorization: $DEMO_API_KEY' \\
  '$url' | python3 -m json.tool

EOF
    python3 -m json.tool <<<"$body"
    # One session's events: the first session of that page, its first 3 events.
    local session_id events_url events_body
    session_id=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["data"][0]["sessionId"])' <<<"$body")
    events_url="http://$QUERY_ADDR/api/v1/$DEMO_PROJECT_KEY/sessions/$session_id/events?limit=3"
    events_body=$(curl -sf --max-time 5 -H "Authorization: $DEMO_API_KEY" "$events_url" || true)
    cat <<EOF

Events of session $session_id (its first 3; without limit, all of them):

curl -s -H 'Authorization: $DEMO_API_KEY' \\
  '$events_url' | python3 -m json.tool

EOF
    python3 -m json.tool <<<"$events_body" || echo "$events_body"
    cat <<EOF

Other users: user-0@example.com … user-$((DEMO_USERS - 1))@example.com. Pages: add ?limit=2 and follow the Link header (curl -i).
Metrics: http://$QUERY_ADDR/metrics and http://$INGEST_METRICS_ADDR/metrics
Stop:    scripts/demo.sh stop
EOF
}

case ${1:-up} in
up | start) up ;;
stop) stop_demo ;;
status) status_demo ;;
-h | --help | help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' ;;
*) echo "usage: scripts/demo.sh [up|stop|status]" >&2; exit 2 ;;
esac
