#!/usr/bin/env bash
# Installs what a Debian 12 machine with Rust lacks to run the local stack and
# the tests, and nothing that is already there:
#
#   clickhouse-server, clickhouse-client  (apt; ClickHouse 18.16 in Debian 12)
#   Apache Kafka 4.x                      (Maven Central: the jars pinned in
#                                          scripts/kafka/pom.xml, into .local/kafka/lib;
#                                          ~45 MB, seconds; java and mvn from apt
#                                          if missing)
#   chdb + lz4 Python packages            (pip, ~180 MB; for scripts/chdb_server.py)
#   schemathesis                          (pip, in .local/schemathesis; the
#                                          API contract fuzzer of the tests)
#   prometheus, promtool                  (apt; Prometheus 2.42 in Debian 12,
#                                          for the alert and dashboard tests)
#   zookeeper                             (apt; ZooKeeper 3.8 and a JRE, for the
#                                          local ClickHouse cluster)
#   python3-yaml                          (apt, if python3 lacks PyYAML)
#   curl, a C toolchain                   (apt, only if missing)
#
# The ClickHouse and Prometheus packages' install scripts would start system
# servers (8123/9000, 9090); a policy-rc.d refuses that during our install. No
# service is started by this script. Reports what it does on stderr. Idempotent.
set -euo pipefail

SCRIPT_NAME=install-deps.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Pinned: the fuzzer's CLI flags and its data generation change between
# versions, and a seeded run reproduces only on the same version.
SCHEMATHESIS_VERSION=${SCHEMATHESIS_VERSION:-4.32.5}

SUDO=()
if [[ $(id -u) != 0 ]]; then
    if command -v sudo >/dev/null; then
        SUDO=(sudo)
    fi
fi

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found; install by hand: $*"
    if [[ $APT_UPDATED == 0 ]]; then
        say "apt-get update"
        "${SUDO[@]}" apt-get update -qq >&2
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >&2
}

clickhouse_installed() {
    command -v clickhouse-server >/dev/null || [[ -x /usr/sbin/clickhouse-server ]] ||
        [[ -x /usr/bin/clickhouse ]]
}

# systemd_active UNIT: systemd runs UNIT.
systemd_active() {
    command -v systemctl >/dev/null && [[ -d /run/systemd/system ]] &&
        systemctl is-active --quiet "$1" 2>/dev/null
}

# systemd_enabled UNIT: systemd starts UNIT at boot.
systemd_enabled() {
    command -v systemctl >/dev/null && [[ -d /run/systemd/system ]] &&
        systemctl is-enabled --quiet "$1" 2>/dev/null
}

# apt_install_no_start UNIT PACKAGE...: installs the packages while refusing
# service starts from their maintainer scripts (invoke-rc.d and
# deb-systemd-invoke both honour policy-rc.d, unless a policy exists), stops
# and disables UNIT if systemd started it anyway, and disables it at boot if
# the install enabled it.
apt_install_no_start() {
    local unit=$1 policy=/usr/sbin/policy-rc.d made_policy=0 was_active=0 was_enabled=0
    shift
    systemd_active "$unit" && was_active=1
    systemd_enabled "$unit" && was_enabled=1
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# temporary, from scripts/install-deps.sh\nexit 101\n' |
            "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        made_policy=1
        trap '"${SUDO[@]}" rm -f '"$policy" EXIT
    fi
    apt_install "$@"
    if [[ $made_policy == 1 ]]; then
        "${SUDO[@]}" rm -f "$policy"
        trap - EXIT
    fi
    # Don't leave a system server behind that this install started.
    if [[ $was_active == 0 ]] && systemd_active "$unit"; then
        say "the package started a system $unit; stopping and disabling it"
        "${SUDO[@]}" systemctl stop "$unit" || true
        "${SUDO[@]}" systemctl disable "$unit" >/dev/null 2>&1 || true
    elif [[ $was_enabled == 0 ]] && systemd_enabled "$unit"; then
        say "the package enabled a system $unit at boot; disabling it"
        "${SUDO[@]}" systemctl disable "$unit" >/dev/null 2>&1 || true
    fi
}

install_clickhouse() {
    if clickhouse_installed && command -v clickhouse-client >/dev/null; then
        return 0
    fi
    apt_install_no_start clickhouse-server clickhouse-server clickhouse-client
    if port_open 9000 || port_open 8123; then
        say "note: something listens on 127.0.0.1:8123 or :9000 (not started by this script)"
    fi
}

# Prometheus and promtool: the tests check deploy/prometheus/ with promtool
# and run a real Prometheus on a free loopback port of their own.
install_prometheus() {
    if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
        return 0
    fi
    apt_install_no_start prometheus prometheus
}

# Apache Kafka: the broker's jars and their dependencies, resolved by Maven from
# scripts/kafka/pom.xml into .local/kafka/lib. A stamp (the POM's checksum) makes a
# second run a no-op, and a changed POM fetch again.
install_kafka() {
    local lib=$STATE_DIR/kafka/lib stamp want
    command -v java >/dev/null || apt_install default-jre-headless
    want=$(sha256sum "$REPO/scripts/kafka/pom.xml" | cut -d' ' -f1)
    stamp=$lib/.pom.sha256
    if [[ -f $stamp && $(<"$stamp") == "$want" ]] && compgen -G "$lib/kafka_2.13-*.jar" >/dev/null; then
        return 0
    fi
    command -v mvn >/dev/null || apt_install maven
    say "mvn dependency:copy-dependencies (Apache Kafka, scripts/kafka/pom.xml) into $lib"
    rm -rf "$lib"
    mkdir -p "$lib"
    mvn -q -B -f "$REPO/scripts/kafka/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$lib" >&2 ||
        die "cannot fetch Apache Kafka with Maven"
    echo "$want" >"$stamp"
}

# pip into the current python3 unless it is Debian's externally managed one;
# then into a virtualenv at .local/venv, which scripts/services.sh picks up.
install_chdb() {
    local py
    if [[ -x $STATE_DIR/venv/bin/python3 ]] &&
        "$STATE_DIR/venv/bin/python3" -c 'import chdb, lz4' 2>/dev/null; then
        return 0
    fi
    if command -v python3 >/dev/null && python3 -c 'import chdb, lz4' 2>/dev/null; then
        return 0
    fi
    command -v python3 >/dev/null || apt_install python3
    if python3 -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
        if [[ ! -x $STATE_DIR/venv/bin/python3 ]]; then
            ensure_venv_support
            say "python3 -m venv $STATE_DIR/venv"
            mkdir -p "$STATE_DIR"
            python3 -m venv "$STATE_DIR/venv"
        fi
        py=$STATE_DIR/venv/bin/python3
    else
        python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
        py=python3
    fi
    say "$py -m pip install chdb lz4 (about 180 MB)"
    "$py" -m pip install --quiet chdb lz4 >&2
}

# python3 -m venv works: Debian's python3 needs python3-venv for it.
ensure_venv_support() {
    command -v python3 >/dev/null || apt_install python3
    python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
}

# schemathesis, always in a virtualenv of its own ($STATE_DIR/schemathesis,
# whatever the system Python), so its pinned dependencies never meet chDB's and
# the tests find `st` at one path (SCHEMATHESIS_BIN overrides it there).
install_schemathesis() {
    local venv=$STATE_DIR/schemathesis
    if [[ -x $venv/bin/st ]] && "$venv/bin/python3" -c \
        'import importlib.metadata as m, sys; sys.exit(m.version("schemathesis") != sys.argv[1])' \
        "$SCHEMATHESIS_VERSION" 2>/dev/null; then
        return 0
    fi
    if [[ ! -x $venv/bin/python3 ]]; then
        ensure_venv_support
        say "python3 -m venv $venv"
        mkdir -p "$STATE_DIR"
        python3 -m venv "$venv"
    fi
    say "$venv/bin/pip install schemathesis==$SCHEMATHESIS_VERSION"
    "$venv/bin/python3" -m pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION" >&2
}

# The Debian package `zookeeper` ships the server without starting any (that
# would be `zookeeperd`); scripts/services.sh runs it in the foreground.
install_zookeeper() {
    [[ -x /usr/share/zookeeper/bin/zkServer.sh ]] && command -v java >/dev/null && return 0
    apt_install zookeeper
}

# PyYAML, for the test that parses docker-compose.cluster.yml.
install_pyyaml() {
    python3 -c 'import yaml' 2>/dev/null && return 0
    apt_install python3-yaml
}

missing=()
command -v curl >/dev/null || missing+=(curl)
command -v flock >/dev/null || missing+=(util-linux)
# rdkafka builds its librdkafka from source.
command -v cc >/dev/null || missing+=(build-essential)
command -v pkg-config >/dev/null || missing+=(pkg-config)
[[ ${#missing[@]} == 0 ]] || apt_install "${missing[@]}"

# What the demo runs (INSTALL_DEPS_FOR=demo): ClickHouse and the broker. The rest
# only the tests use.
install_clickhouse
install_kafka
if [[ ${INSTALL_DEPS_FOR:-tests} == tests ]]; then
    install_prometheus
    install_chdb
    install_schemathesis
    install_zookeeper
    install_pyyaml
fi
say "dependencies present"
