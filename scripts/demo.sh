#!/usr/bin/env bash
# Quick start: the whole system on loopback, with demo traffic.
#
#   scripts/demo.sh          install what is missing, build, start ClickHouse,
#                            tansu, sessions-ingest and sessions-query, create a
#                            demo organization and project, send demo traffic,
#                            and print a curl that returns sessions
#   scripts/demo.sh stop     stop what the demo started
#   scripts/demo.sh status
#
# State, logs and pid files are under .local/; the demo org's API key is kept
# in .local/demo.env so a second run reuses the same org and project.
set -euo pipefail

# ---------------------------------------------------------------- knobs
DEMO_ORG_NAME=${DEMO_ORG_NAME:-demo}
DEMO_PROJECT_NAME=${DEMO_PROJECT_NAME:-demo}
DEMO_PROJECT_KEY=${DEMO_PROJECT_KEY:-3sWXSsqHgSKnE87YkNJK}
# A user the producer is known to generate (keep in step with sessions-producer).
DEMO_USER_ID=${DEMO_USER_ID:-demo-user-1@example.com}
DEMO_SESSIONS=${DEMO_SESSIONS:-200}
DEMO_SEED=${DEMO_SEED:-42}
# The producer's flags after --project-id N (keep in step with sessions-producer --help).
DEMO_PRODUCER_FLAGS=(--sessions "$DEMO_SESSIONS" --seed "$DEMO_SEED")
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
BIN=$REPO/target/release
DEMO_ENV=$STATE_DIR/demo.env
CLICKHOUSE_HTTP_PORT=${CLICKHOUSE_HTTP_PORT:-8123}
TANSU_PORT=${TANSU_PORT:-9092}
export CLICKHOUSE_HTTP_PORT TANSU_PORT
export CLICKHOUSE_URL="http://127.0.0.1:$CLICKHOUSE_HTTP_PORT"
export KAFKA_BROKERS="127.0.0.1:$TANSU_PORT"
export KAFKA_TOPIC
export QUERY_ADDR="127.0.0.1:$QUERY_PORT"
export INGEST_METRICS_ADDR="127.0.0.1:$INGEST_METRICS_PORT"
export RUST_LOG=${RUST_LOG:-info}

json_get() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
urlencode() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

tansu_bin() { command -v tansu || echo "$HOME/.cargo/bin/tansu"; }

stop_demo() {
    terminate query 30
    terminate ingest 30
    bash "$SERVICES_SH" stop clickhouse tansu
}

status_demo() {
    local name pid
    bash "$SERVICES_SH" status clickhouse tansu || true
    for name in ingest query; do
        if pid=$(pid_of "$name"); then echo "$name: up (pid $pid)"; else echo "$name: down"; fi
    done
}

# start_app NAME BINARY READY_URL: start a binary of ours unless running.
start_app() {
    local name=$1 bin=$2 url=$3 pid i
    if pid=$(pid_of "$name"); then
        say "$name already running (pid $pid)"
    else
        launch "$name" "$bin" "$REPO" "$bin"
        say "$name starting (pid $(<"$RUN_DIR/$name.pid"), log $LOG_DIR/$name.log)"
    fi
    for ((i = 0; i < 300; i++)); do
        http_ok "$url" && return 0
        if ! pid_of "$name" >/dev/null; then
            show_log "$LOG_DIR/$name.log"
            die "$name exited during start-up"
        fi
        sleep 0.1
    done
    show_log "$LOG_DIR/$name.log"
    die "$name not ready at $url after 30 s"
}

ensure_topic() {
    local tansu
    tansu=$(tansu_bin)
    if "$tansu" topic list --broker "tcp://$KAFKA_BROKERS" 2>/dev/null |
        grep -qF -- "\"name\":\"$KAFKA_TOPIC\""; then
        return 0
    fi
    say "creating topic $KAFKA_TOPIC ($TOPIC_PARTITIONS partitions)"
    "$tansu" topic create "$KAFKA_TOPIC" --partitions "$TOPIC_PARTITIONS" \
        --broker "tcp://$KAFKA_BROKERS" >/dev/null
}

# Sets DEMO_ORG_ID, DEMO_API_KEY, DEMO_PROJECT_ID; reuses .local/demo.env.
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
            say "reusing demo org $DEMO_ORG_ID and project $DEMO_PROJECT_ID ($DEMO_ENV)"
            return 0
        fi
    fi
    if [[ -n $DEMO_PROJECT_ID ]]; then
        # The project exists but its org's key is lost: issue a new key.
        DEMO_ORG_ID=$(project_field orgId)
        DEMO_API_KEY=$("$admin" key create --org "$DEMO_ORG_ID" | json_get apiKey)
        say "new API key for existing demo org $DEMO_ORG_ID"
    else
        local org
        org=$("$admin" org create --name "$DEMO_ORG_NAME")
        DEMO_ORG_ID=$(json_get orgId <<<"$org")
        DEMO_API_KEY=$(json_get apiKey <<<"$org")
        DEMO_PROJECT_ID=$("$admin" project create --org "$DEMO_ORG_ID" \
            --name "$DEMO_PROJECT_NAME" --key "$DEMO_PROJECT_KEY" | json_get projectId)
        say "created demo org $DEMO_ORG_ID and project $DEMO_PROJECT_ID"
    fi
    (
        umask 077
        printf 'DEMO_ORG_ID=%q\nDEMO_API_KEY=%q\nDEMO_PROJECT_ID=%q\nDEMO_PROJECT_KEY=%q\n' \
            "$DEMO_ORG_ID" "$DEMO_API_KEY" "$DEMO_PROJECT_ID" "$DEMO_PROJECT_KEY" >"$DEMO_ENV"
    )
}

up() {
    bash scripts/install-deps.sh
    say "cargo build --release --bins"
    cargo build --release --bins
    bash "$SERVICES_SH" start clickhouse tansu

    "$BIN/sessions-admin" migrate >/dev/null
    ensure_topic
    ensure_org_and_project

    start_app ingest "$BIN/sessions-ingest" "http://$INGEST_METRICS_ADDR/healthz"
    start_app query "$BIN/sessions-query" "http://$QUERY_ADDR/readyz"

    say "sending demo traffic: $DEMO_SESSIONS sessions"
    "$BIN/sessions-producer" --project-id "$DEMO_PROJECT_ID" "${DEMO_PRODUCER_FLAGS[@]}"

    local url i body=""
    url="http://$QUERY_ADDR/api/v1/$DEMO_PROJECT_KEY/users/$(urlencode "$DEMO_USER_ID")/sessions"
    say "waiting for sessions of $DEMO_USER_ID"
    for ((i = 0; i < DATA_TIMEOUT; i++)); do
        body=$(curl -sf --max-time 5 -H "Authorization: $DEMO_API_KEY" "$url" || true)
        [[ $body == *'"sessionId"'* ]] && break
        sleep 1
    done
    [[ $body == *'"sessionId"'* ]] ||
        say "warning: no session for $DEMO_USER_ID after ${DATA_TIMEOUT}s (see $LOG_DIR/ingest.log)"

    cat <<EOF

The system is up (logs in $LOG_DIR). Sessions of a demo user:

  curl -s -H 'Authorization: $DEMO_API_KEY' \\
    '$url'

Metrics: http://$QUERY_ADDR/metrics and http://$INGEST_METRICS_ADDR/metrics
Stop everything: scripts/demo.sh stop
EOF
}

case ${1:-up} in
up | start) up ;;
stop) stop_demo ;;
status) status_demo ;;
*) echo "usage: scripts/demo.sh [up|stop|status]" >&2; exit 2 ;;
esac
