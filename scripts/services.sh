#!/usr/bin/env bash
# Local backing services for development and tests, on loopback only:
#
#   clickhouse  ClickHouse 18.16 (Debian package)   http://127.0.0.1:$CLICKHOUSE_HTTP_PORT (8123)
#                                                    native TCP 127.0.0.1:$CLICKHOUSE_TCP_PORT (19000)
#   kafka       Apache Kafka 4.x, one KRaft node     127.0.0.1:$KAFKA_PORT (9092)
#                                                    (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT, 9093)
#   chdb        current ClickHouse engine (chDB) behind scripts/chdb_server.py
#                                                    http://127.0.0.1:$CHDB_PORT (8124)
#
# the three-broker Kafka cluster (`kafka-cluster` names all three):
#
#   kafka-b1 kafka-b2 kafka-b3
#               Apache Kafka 4.x, three KRaft nodes (each broker and controller),
#               replication factor 3, min.insync.replicas 2: 127.0.0.1:9201..9203,
#               controllers 9301..9303 ($KAFKA_CLUSTER_BASE, $KAFKA_CLUSTER_CONTROLLER_BASE)
#
# and the local ClickHouse cluster (`cluster` names all five, started in order):
#
#   zookeeper   ZooKeeper 3.8 (Debian package)       127.0.0.1:$ZOOKEEPER_PORT (12181)
#   ch-s1-r1 ch-s1-r2 ch-s2-r1 ch-s2-r2
#               ClickHouse 18.16, the nodes of deploy/clickhouse-cluster/topology
#               (2 shards x 2 replicas), cluster $CLUSTER_NAME (sessions_cluster):
#               node N serves HTTP 127.0.0.1:813N, native TCP 1910N, interserver
#               1920N ($CLUSTER_HTTP_BASE etc.)
#
# Usage: scripts/services.sh start|stop|restart|status|kill9 [SERVICE ...]
#        scripts/services.sh reset      stop what we started, delete .local/ state
#        scripts/services.sh cluster-nodes   the ClickHouse cluster's nodes, in order
#        scripts/services.sh cluster-urls    their HTTP URLs, comma-separated
#
# With no service named, clickhouse, kafka and chdb. State (data, logs, pid files) lives under
# $SESSIONS_STATE_DIR (default: <repo>/.local). `start` is idempotent; if a
# port is already served by something answering like the service, that server
# is used as is and never stopped by this script. `stop` and `kill9` signal
# only PIDs this script recorded. `status` exits non-zero if a named service
# is down.
set -euo pipefail

SCRIPT_NAME=services.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLICKHOUSE_HTTP_PORT=${CLICKHOUSE_HTTP_PORT:-8123}
CLICKHOUSE_TCP_PORT=${CLICKHOUSE_TCP_PORT:-19000}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_CLUSTER_BASE=${KAFKA_CLUSTER_BASE:-9200}
KAFKA_CLUSTER_CONTROLLER_BASE=${KAFKA_CLUSTER_CONTROLLER_BASE:-9300}
# The broker's JVM heap: fixed, small enough beside ClickHouse and the cluster.
KAFKA_HEAP=${KAFKA_HEAP:-1g}
KAFKA_CLUSTER_HEAP=${KAFKA_CLUSTER_HEAP:-512m}
CHDB_PORT=${CHDB_PORT:-8124}
CHDB_SERVER=$REPO/scripts/chdb_server.py
START_TIMEOUT=${SERVICES_START_TIMEOUT:-30}
ZOOKEEPER_PORT=${ZOOKEEPER_PORT:-12181}
CLUSTER_NAME=${CLUSTER_NAME:-sessions_cluster}
CLUSTER_HTTP_BASE=${CLUSTER_HTTP_BASE:-8130}
CLUSTER_TCP_BASE=${CLUSTER_TCP_BASE:-19100}
CLUSTER_INTERSERVER_BASE=${CLUSTER_INTERSERVER_BASE:-19200}
ALL_SERVICES=(clickhouse kafka chdb)
KAFKA_CLUSTER_NODES=(kafka-b1 kafka-b2 kafka-b3)
# The ClickHouse cluster: its nodes and their shards, from the one definition.
TOPOLOGY=$REPO/deploy/clickhouse-cluster/topology
CLUSTER_NODES=()
CLUSTER_SHARDS=()
while read -r name shard; do
    [[ -n $name && $name != \#* ]] || continue
    CLUSTER_NODES+=("$name")
    CLUSTER_SHARDS+=("$shard")
done <"$TOPOLOGY"
CLUSTER_SERVICES=(zookeeper "${CLUSTER_NODES[@]}")

# A cluster node's number, 1 for the topology's first.
node_number() {
    local i
    for i in "${!CLUSTER_NODES[@]}"; do
        [[ ${CLUSTER_NODES[i]} != "$1" ]] || { echo $((i + 1)); return; }
    done
    return 1
}

is_cluster_node() { node_number "$1" >/dev/null; }

# The <shard> elements of remote_servers: each shard's nodes, by native TCP port.
remote_shards() {
    local i shard=
    for i in "${!CLUSTER_NODES[@]}"; do
        if [[ ${CLUSTER_SHARDS[i]} != "$shard" ]]; then
            [[ -z $shard ]] || echo "            </shard>"
            shard=${CLUSTER_SHARDS[i]}
            echo "            <shard>"
            echo "                <internal_replication>true</internal_replication>"
        fi
        echo "                <replica><host>127.0.0.1</host><port>$((CLUSTER_TCP_BASE + i + 1))</port></replica>"
    done
    [[ -z $shard ]] || echo "            </shard>"
}

# ---------------------------------------------------------------- binaries

clickhouse_cmd() {
    if [[ -n ${CLICKHOUSE_SERVER_BIN:-} ]]; then
        echo "$CLICKHOUSE_SERVER_BIN"
    elif command -v clickhouse-server >/dev/null; then
        command -v clickhouse-server
    elif [[ -x /usr/sbin/clickhouse-server ]]; then
        echo /usr/sbin/clickhouse-server
    elif [[ -x /usr/bin/clickhouse ]]; then
        echo "/usr/bin/clickhouse server"
    else
        return 1
    fi
}

# The interpreter that has chdb: $CHDB_PYTHON, else the venv install-deps.sh
# may have made, else python3.
chdb_python() {
    if [[ -n ${CHDB_PYTHON:-} ]]; then
        echo "$CHDB_PYTHON"
    elif [[ -x $STATE_DIR/venv/bin/python3 ]]; then
        echo "$STATE_DIR/venv/bin/python3"
    else
        command -v python3
    fi
}

# ---------------------------------------------------------------- readiness

ready() {
    case $1 in
    clickhouse) ping_ok "http://127.0.0.1:$CLICKHOUSE_HTTP_PORT/ping" ;;
    ch-s*) ping_ok "http://127.0.0.1:$(port_of "$1")/ping" ;;
    zookeeper)
        # `ruok` answers imok while the server still loads its data and refuses
        # sessions; `stat` says "Mode: standalone" only once it serves them.
        local answer
        port_open "$ZOOKEEPER_PORT" || return 1
        answer=$(exec 3<>"/dev/tcp/127.0.0.1/$ZOOKEEPER_PORT" && echo stat >&3 &&
            timeout 2 cat <&3) 2>/dev/null || return 1
        [[ $answer == *"Mode: "* ]]
        ;;
    chdb) ping_ok "http://127.0.0.1:$CHDB_PORT/ping" ;;
    kafka | kafka-b?)
        # A broker opens its client port once it serves: one Metadata request.
        port_open "$(port_of "$1")" || return 1
        python3 "$REPO/scripts/kafka/broker_ready.py" "$(port_of "$1")" >/dev/null
        ;;
    esac
}

port_of() {
    case $1 in
    clickhouse) echo "$CLICKHOUSE_HTTP_PORT" ;;
    ch-s*) echo $((CLUSTER_HTTP_BASE + $(node_number "$1"))) ;;
    zookeeper) echo "$ZOOKEEPER_PORT" ;;
    kafka) echo "$KAFKA_PORT" ;;
    kafka-b?) echo $((KAFKA_CLUSTER_BASE + ${1:7:1})) ;;
    chdb) echo "$CHDB_PORT" ;;
    esac
}

# ---------------------------------------------------------------- launching

launch_clickhouse() {
    local cmd dir=$STATE_DIR/clickhouse
    cmd=$(clickhouse_cmd) || die "clickhouse-server not found (run scripts/install-deps.sh)"
    mkdir -p "$dir"/{data,tmp,user_files,format_schemas,log}
    sed -e "s#@STATE@#$dir#g" \
        -e "s#@HTTP_PORT@#$CLICKHOUSE_HTTP_PORT#g" \
        -e "s#@TCP_PORT@#$CLICKHOUSE_TCP_PORT#g" \
        "$REPO/scripts/clickhouse/config.xml.in" >"$dir/config.xml"
    cp "$REPO/scripts/clickhouse/users.xml" "$dir/users.xml"
    # shellcheck disable=SC2086 # $cmd may be "clickhouse server"
    launch clickhouse "$dir/config.xml" "$dir" $cmd --config-file="$dir/config.xml"
}

launch_zookeeper() {
    local dir=$STATE_DIR/zookeeper server=/usr/share/zookeeper/bin/zkServer.sh
    [[ -x $server ]] || die "ZooKeeper not found at $server (apt-get install zookeeper)"
    mkdir -p "$dir"/{data,log}
    sed -e "s#@STATE@#$dir#g" -e "s#@PORT@#$ZOOKEEPER_PORT#g" \
        "$REPO/scripts/zookeeper/zoo.cfg.in" >"$dir/zoo.cfg"
    launch zookeeper "$dir/zoo.cfg" "$dir" env ZOO_LOG_DIR="$dir/log" \
        "$server" start-foreground "$dir/zoo.cfg"
}

# One node of the cluster (ZooKeeper must answer first: a node that starts before
# it may fail its first ON CLUSTER query).
launch_cluster_node() {
    local node=$1 cmd number dir=$STATE_DIR/$1
    cmd=$(clickhouse_cmd) || die "clickhouse-server not found (run scripts/install-deps.sh)"
    ready zookeeper || die "start zookeeper before $node"
    number=$(node_number "$node")
    mkdir -p "$dir"/{data,tmp,user_files,format_schemas,log}
    remote_shards >"$dir/remote_shards.xml"
    sed -e "s#@STATE@#$dir#g" \
        -e "s#@HTTP_PORT@#$((CLUSTER_HTTP_BASE + number))#g" \
        -e "s#@TCP_PORT@#$((CLUSTER_TCP_BASE + number))#g" \
        -e "s#@INTERSERVER_PORT@#$((CLUSTER_INTERSERVER_BASE + number))#g" \
        -e "s#@SHARD@#${CLUSTER_SHARDS[number - 1]}#g" -e "s#@REPLICA@#$node#g" \
        -e "s#@ZOOKEEPER_PORT@#$ZOOKEEPER_PORT#g" -e "s#@CLUSTER@#$CLUSTER_NAME#g" \
        -e "/@REMOTE_SHARDS@/{r $dir/remote_shards.xml" -e "d}" \
        "$REPO/scripts/clickhouse/cluster-node.xml.in" >"$dir/config.xml"
    cp "$REPO/scripts/clickhouse/users.xml" "$dir/users.xml"
    # shellcheck disable=SC2086 # $cmd may be "clickhouse server"
    launch "$node" "$dir/config.xml" "$dir" $cmd --config-file="$dir/config.xml"
}

# kafka_lib: the folder of the broker's jars (scripts/install-deps.sh fetches them).
kafka_lib() {
    local lib=${KAFKA_LIB:-$STATE_DIR/kafka/lib}
    compgen -G "$lib/kafka_2.13-*.jar" >/dev/null ||
        die "Apache Kafka not found in $lib (run scripts/install-deps.sh)"
    echo "$lib"
}

# launch_kafka_node NAME NODE_ID PORT CONTROLLER_PORT VOTERS REPLICATION MIN_ISR HEAP
# CLUSTER_ID_FILE: one KRaft node (broker and controller); formats its storage on
# the first start with the cluster id in CLUSTER_ID_FILE (made once, shared by the
# nodes of one cluster).
launch_kafka_node() {
    local name=$1 node_id=$2 port=$3 controller_port=$4 voters=$5 replication=$6
    local min_isr=$7 heap=$8 id_file=$9 lib dir=$STATE_DIR/$1 cluster_id
    lib=$(kafka_lib)
    command -v java >/dev/null || die "java not found (run scripts/install-deps.sh)"
    mkdir -p "$dir/data"
    sed -e "s#@STATE@#$dir#g" -e "s#@NODE_ID@#$node_id#g" -e "s#@PORT@#$port#g" \
        -e "s#@CONTROLLER_PORT@#$controller_port#g" -e "s#@VOTERS@#$voters#g" \
        -e "s#@REPLICATION@#$replication#g" -e "s#@MIN_ISR@#$min_isr#g" \
        "$REPO/scripts/kafka/server.properties.in" >"$dir/server.properties"
    if [[ ! -f $dir/data/meta.properties ]]; then
        if [[ ! -s $id_file ]]; then
            java -cp "$lib/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 >"$id_file"
        fi
        cluster_id=$(<"$id_file")
        say "formatting $name's storage (cluster $cluster_id)"
        java -cp "$lib/*" -Dlog4j2.configurationFile="$REPO/scripts/kafka/log4j2.yaml" \
            kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
            >>"$LOG_DIR/$name.log" 2>&1 || die "cannot format $name's storage (see $LOG_DIR/$name.log)"
    fi
    launch "$name" "kafka.Kafka $dir/server.properties" "$dir" \
        java "-Xms$heap" "-Xmx$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$REPO/scripts/kafka/log4j2.yaml" \
        -cp "$lib/*" kafka.Kafka "$dir/server.properties"
}

launch_kafka() {
    mkdir -p "$STATE_DIR/kafka"
    launch_kafka_node kafka 1 "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" \
        "1@127.0.0.1:$KAFKA_CONTROLLER_PORT" 1 1 "$KAFKA_HEAP" "$STATE_DIR/kafka/cluster.id"
}

# One node of the three-broker cluster. Its controllers need a majority (2 of 3)
# to elect a leader, so `start kafka-cluster` launches all three before waiting.
launch_kafka_cluster_node() {
    local name=$1 number=${1:7:1} voters="" i
    for i in 1 2 3; do
        voters+="$i@127.0.0.1:$((KAFKA_CLUSTER_CONTROLLER_BASE + i)),"
    done
    mkdir -p "$STATE_DIR/kafka"
    launch_kafka_node "$name" "$number" "$((KAFKA_CLUSTER_BASE + number))" \
        "$((KAFKA_CLUSTER_CONTROLLER_BASE + number))" "${voters%,}" 3 2 \
        "$KAFKA_CLUSTER_HEAP" "$STATE_DIR/kafka/cluster-3.id"
}

launch_chdb() {
    local py dir=$STATE_DIR/chdb
    py=$(chdb_python) || die "python3 not found"
    mkdir -p "$dir"
    launch chdb "chdb_server.py" "$dir" "$py" "$CHDB_SERVER" "$CHDB_PORT" "$dir/data"
}

# ---------------------------------------------------------------- commands

# launch_service SVC: starts SVC, which is down, without waiting for it.
launch_service() {
    local svc=$1 port
    port=$(port_of "$svc")
    if port_open "$port"; then
        die "port 127.0.0.1:$port is taken by something that does not answer like $svc; set another port (see scripts/services.sh)"
    fi
    case $svc in
    ch-s*) launch_cluster_node "$svc" ;;
    kafka-b?) launch_kafka_cluster_node "$svc" ;;
    *) "launch_$svc" ;;
    esac
    say "$svc starting (pid $(<"$RUN_DIR/$svc.pid"), port $port, log $LOG_DIR/$svc.log)"
}

# launch_if_down SVC: launches SVC unless a process of ours runs it, or its port
# already answers like it (a server not started here: used as is, never stopped by
# this script). Does not wait for it.
launch_if_down() {
    local svc=$1
    pid_of "$svc" >/dev/null && return 0
    rm -f "$RUN_DIR/$svc.pid" "$RUN_DIR/$svc.match"
    if ready "$svc"; then
        say "note: $svc port $(port_of "$svc") is already served by a process not started by this script; using it (it will not be stopped by this script)"
        return 0
    fi
    launch_service "$svc"
}

start_one() {
    local svc=$1 pid port t0 i
    port=$(port_of "$svc")
    if pid=$(pid_of "$svc") && ready "$svc"; then
        say "$svc already running (pid $pid, port $port)"
        return 0
    fi
    launch_if_down "$svc"
    # No pid file: a server not started here serves the port.
    [[ -f $RUN_DIR/$svc.pid ]] || return 0
    pid=$(<"$RUN_DIR/$svc.pid")
    t0=${EPOCHREALTIME/./}
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        if ready "$svc"; then
            t0=$(((${EPOCHREALTIME/./} - t0) / 1000))
            say "$svc ready on 127.0.0.1:$port after ${t0} ms"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            say "$svc (pid $pid) exited during start-up"
            show_log "$LOG_DIR/$svc.log"
            [[ -f $STATE_DIR/$svc/log/clickhouse-server.err.log ]] && show_log "$STATE_DIR/$svc/log/clickhouse-server.err.log"
            rm -f "$RUN_DIR/$svc.pid" "$RUN_DIR/$svc.match"
            exit 1
        fi
        sleep 0.1
    done
    say "$svc not ready after ${START_TIMEOUT}s; stopping it"
    show_log "$LOG_DIR/$svc.log"
    [[ -f $STATE_DIR/$svc/log/clickhouse-server.err.log ]] && show_log "$STATE_DIR/$svc/log/clickhouse-server.err.log"
    terminate "$svc" 5
    exit 1
}

stop_one() {
    local svc=$1
    if pid_of "$svc" >/dev/null; then
        terminate "$svc" 10
    else
        rm -f "$RUN_DIR/$svc.pid" "$RUN_DIR/$svc.match"
        if ready "$svc"; then
            say "$svc: port $(port_of "$svc") is served by a process not started by this script; left alone"
        else
            say "$svc not running"
        fi
    fi
}

status_one() {
    local svc=$1 pid port
    port=$(port_of "$svc")
    if pid=$(pid_of "$svc"); then
        if ready "$svc"; then
            echo "$svc: up (pid $pid, 127.0.0.1:$port)"
        else
            echo "$svc: starting or unhealthy (pid $pid, 127.0.0.1:$port not answering)"
            return 1
        fi
    elif ready "$svc"; then
        echo "$svc: up (127.0.0.1:$port, not managed by services.sh)"
    else
        echo "$svc: down"
        return 1
    fi
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

main() {
    local cmd=${1:-}
    [[ -n $cmd ]] || usage
    shift
    case $cmd in
    cluster-nodes) echo "${CLUSTER_NODES[@]}"; return ;;
    cluster-urls)
        local urls=()
        for svc in "${CLUSTER_NODES[@]}"; do urls+=("http://127.0.0.1:$(port_of "$svc")"); done
        (IFS=,; echo "${urls[*]}")
        return
        ;;
    esac
    local services=() svc rc=0 i
    for svc in "$@"; do
        if [[ $svc == cluster ]]; then
            services+=("${CLUSTER_SERVICES[@]}")
        elif [[ $svc == kafka-cluster ]]; then
            services+=("${KAFKA_CLUSTER_NODES[@]}")
        else
            services+=("$svc")
        fi
    done
    [[ ${#services[@]} -gt 0 ]] || services=("${ALL_SERVICES[@]}")
    for svc in "${services[@]}"; do
        case $svc in
        clickhouse | kafka | chdb | zookeeper | kafka-b[123]) ;;
        *) is_cluster_node "$svc" || { say "unknown service: $svc"; usage; } ;;
        esac
    done

    mkdir -p "$RUN_DIR" "$LOG_DIR"
    # One services.sh at a time (launch closes fd 9 in the services it starts).
    exec 9>"$RUN_DIR/services.lock"
    flock -w 120 9 || die "another services.sh is still running"

    case $cmd in
    start)
        # The Kafka cluster's nodes all at once: a lone controller of three waits
        # for a majority for ever.
        for svc in "${services[@]}"; do
            [[ $svc != kafka-b? ]] || launch_if_down "$svc"
        done
        for svc in "${services[@]}"; do start_one "$svc"; done
        ;;
    # Stop in reverse: the cluster's nodes before its ZooKeeper.
    stop) for ((i = ${#services[@]} - 1; i >= 0; i--)); do stop_one "${services[i]}"; done ;;
    restart) for svc in "${services[@]}"; do stop_one "$svc"; start_one "$svc"; done ;;
    kill9) for svc in "${services[@]}"; do kill9 "$svc"; done ;;
    status) for svc in "${services[@]}"; do status_one "$svc" || rc=1; done ;;
    reset)
        for svc in "${ALL_SERVICES[@]}" "${KAFKA_CLUSTER_NODES[@]}" "${CLUSTER_NODES[@]}" zookeeper; do
            stop_one "$svc"
        done
        # Keep the downloads: the virtualenvs and the broker's jars.
        find "$STATE_DIR" -mindepth 1 -maxdepth 1 ! -name venv ! -name schemathesis \
            ! -name run ! -name kafka -exec rm -rf {} +
        find "$STATE_DIR/kafka" -mindepth 1 -maxdepth 1 ! -name lib -exec rm -rf {} + 2>/dev/null || true
        say "state under $STATE_DIR deleted"
        ;;
    -h | --help | help) usage 0 ;;
    *) say "unknown command: $cmd"; usage ;;
    esac
    return "$rc"
}

main "$@"
