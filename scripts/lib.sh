# shellcheck shell=bash
# Helpers shared by the scripts (services.sh, test.sh, demo.sh, the benches).
# Source it; it defines functions and variables only.
#
# Every process these scripts start is recorded in $RUN_DIR/<name>.pid, with
# the pattern its command line must contain in $RUN_DIR/<name>.match. Stopping
# only ever signals a PID read from such a file, and only while that PID's
# command line still matches (so a recycled PID is never hit).

REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
STATE_DIR=${SESSIONS_STATE_DIR:-$REPO/.local}
RUN_DIR=$STATE_DIR/run
LOG_DIR=$STATE_DIR/log

say() { echo "${SCRIPT_NAME:-scripts}: $*" >&2; }
die() { say "error: $*"; exit 1; }

# The query benchmarks' data: scripts/bench-query.sh loads it and, with
# BENCH_KEEP_DATA=1, keeps it (and its project's API key in BENCH_QUERY_KEY_FILE) for
# bench-floor.sh, bench-instructions.sh and compare-pages.sh.
BENCH_QUERY_DATABASE=bench_query
BENCH_QUERY_PROJECT_KEY=benchQueryProject001
BENCH_QUERY_KEY_FILE=$STATE_DIR/bench-query.key

# bench_query_api_key: the kept data's API key; dies if bench-query.sh kept none.
bench_query_api_key() {
    [[ -f $BENCH_QUERY_KEY_FILE ]] ||
        die "no $BENCH_QUERY_KEY_FILE: run scripts/bench-query.sh with BENCH_KEEP_DATA=1 first"
    cat "$BENCH_QUERY_KEY_FILE"
}

# pid_of NAME: prints the recorded PID if that process is alive and still the
# one we started; returns 1 otherwise.
pid_of() {
    local name=$1 pid match cmdline
    [[ -f $RUN_DIR/$name.pid ]] || return 1
    pid=$(<"$RUN_DIR/$name.pid")
    [[ $pid =~ ^[1-9][0-9]*$ && $pid -gt 1 && $pid != "$$" ]] || return 1
    # Without its match file, or if the command line differs, the PID is not
    # (or no longer) ours: never signal it.
    [[ -s $RUN_DIR/$name.match ]] || return 1
    match=$(<"$RUN_DIR/$name.match")
    kill -0 "$pid" 2>/dev/null || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ -n $match && $cmdline == *"$match"* ]] || return 1
    echo "$pid"
}

# launch NAME MATCH WORKDIR CMD...: starts CMD in its own session, detached
# from our stdin/stdout/stderr (so a caller capturing our output never waits
# for it), output appended to $LOG_DIR/NAME.log, PID in $RUN_DIR/NAME.pid.
launch() {
    local name=$1 match=$2 workdir=$3
    shift 3
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    echo "=== $(date -u +%FT%TZ) start: $*" >>"$LOG_DIR/$name.log"
    # The subshell closes fd 9 (the services lock) and execs setsid, which
    # execs the command: $! is the service's own PID.
    (cd "$workdir" && exec setsid "$@" </dev/null >>"$LOG_DIR/$name.log" 2>&1 9>&-) &
    local pid=$! i
    echo "$pid" >"$RUN_DIR/$name.pid"
    echo "$match" >"$RUN_DIR/$name.match"
    # Until the subshell has exec'd the command, its command line is still ours and
    # pid_of would not recognise it: wait for the exec (2 s at most).
    for ((i = 0; i < 20; i++)); do
        [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == *"$match"* ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
}

# terminate NAME [GRACE_SECONDS]: SIGTERM the recorded process, SIGKILL after
# the grace period, remove the pid file. Returns 0 if nothing was running.
terminate() {
    local name=$1 grace=${2:-10} pid i
    if ! pid=$(pid_of "$name"); then
        rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.match"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) still running after ${grace}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.match"
    say "$name stopped (pid $pid)"
}

# kill9 NAME: SIGKILL the recorded process at once (for fault tests).
kill9() {
    local name=$1 pid i
    if pid=$(pid_of "$name"); then
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        say "$name killed with SIGKILL (pid $pid)"
    fi
    rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.match"
}

# one_user_sessions_sql DATABASE PROJECT_ID USER_ID ROWS FIRST_TS FIRST_SESSION_ID:
# an INSERT of ROWS sessions of one user into DATABASE.sessions, one every 31 ms
# from FIRST_TS, ids counting up from FIRST_SESSION_ID, the same other columns
# (in the table's order, schemas/002_sessions.sql).
one_user_sessions_sql() {
    echo "INSERT INTO $1.sessions
        SELECT toUInt32($2), '$3', toInt64($5 + number * 31),
            toUInt64($6 + number), toUInt64(1), toUInt8(0),
            lower(hex(toUInt64(intHash64(number)))), 'Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:89.0) Gecko/20100101 Firefox/89.0',
            'Ubuntu', 'Firefox', '', 'DE', toUInt64(intHash32(number) % 3600000),
            toUInt32(number % 97), toUInt32(number % 31), toUInt32(number % 5), toUInt8(1), now()
        FROM numbers($4)"
}

# urlencode TEXT: TEXT percent-encoded as one URL component.
urlencode() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

# metric_histogram URL NAME: the `le count` pairs of the histogram NAME on the
# Prometheus page at URL (for scripts/histogram_summary.py).
metric_histogram() {
    curl -sf --max-time 2 "$1" | sed -n "s/^$2_bucket{le=\"\([^\"]*\)\"} \([0-9]*\)\$/\1 \2/p"
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# http_ok URL: GET URL answers 2xx within 2 s.
http_ok() {
    curl -sf --max-time 2 -o /dev/null "$1"
}

# ping_ok URL: GET URL prints "Ok." (ClickHouse /ping).
ping_ok() {
    local out
    out=$(curl -sf --max-time 2 "$1" 2>/dev/null) || return 1
    [[ $out == Ok.* ]]
}

# metric_sample URL SERIES: the value of SERIES (`name` or `name{labels}`) on
# the Prometheus page at URL; 0 if the series or the page is absent.
metric_sample() {
    { curl -sf --max-time 2 "$1" || true; } |
        awk -v name="$2" '$1 == name { print $2; found = 1 } END { if (!found) print 0 }'
}

# ch SQL: runs SQL on ClickHouse's HTTP interface at $CLICKHOUSE_URL and prints
# the result; gives up after $CH_MAX_TIME seconds (default 30).
ch() {
    # The first node when CLICKHOUSE_URL lists several (cluster mode).
    curl -sfS --max-time "${CH_MAX_TIME:-30}" "${CLICKHOUSE_URL%%,*}/" --data-binary "$1"
}

# json_get FIELD: FIELD of the JSON object on stdin.
json_get() {
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# now_ms: the wall clock, epoch milliseconds.
now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }

# show_log FILE: the last lines of a log, on stderr.
show_log() {
    [[ -f $1 ]] || return 0
    echo "----- last lines of $1 -----" >&2
    tail -n 30 "$1" >&2 || true
    echo "-----" >&2
}

# ensure_cursor_secret [FILE]: exports CURSOR_SECRET (sessions-query requires one of
# at least 32 bytes): the caller's if set, else the one kept in FILE (made once, mode
# 0600, so cursors survive a restart), else a random one for this run.
ensure_cursor_secret() {
    local file=${1:-}
    if [[ -z ${CURSOR_SECRET:-} ]]; then
        if [[ -n $file && -s $file ]]; then
            CURSOR_SECRET=$(<"$file")
        else
            CURSOR_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
            if [[ -n $file ]]; then
                mkdir -p "$(dirname "$file")"
                (umask 077 && printf '%s' "$CURSOR_SECRET" >"$file")
            fi
        fi
    fi
    export CURSOR_SECRET
}
