#!/usr/bin/env bash
# Byte-for-byte check of two sessions-query builds (BENCHMARKS.md §6: a change to how
# pages are written must not change one byte): both serve bench_query (scripts/
# bench-query.sh's data, BENCH_KEEP_DATA=1) with the same CURSOR_SECRET; the same
# requests go to each (pages of several users and sizes, each followed through its
# `Link` up to BENCH_PAGES pages, with date bounds, a heavy user's windows, an unknown
# user, and refusals), and every answer's status line, headers (but `date`) and body
# are saved and compared.
#
#   scripts/compare-pages.sh BEFORE_BIN AFTER_BIN
#
# Knobs: BENCH_PAGES (3), BENCH_COMPARE_DIR (where the answers are kept; a temporary
# directory, removed, by default). Exits 1 on the first difference, listing it.
set -euo pipefail

SCRIPT_NAME=compare-pages.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

[[ $# == 2 ]] || die "usage: compare-pages.sh BEFORE_BIN AFTER_BIN"
PAGES=${BENCH_PAGES:-3}
CLICKHOUSE_URL=${CLICKHOUSE_URL:-http://127.0.0.1:8123}
PROJECT_KEY=$BENCH_QUERY_PROJECT_KEY
API_KEY=$(bench_query_api_key)
# One secret for both, so that their cursors can be the same bytes.
CURSOR_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export CURSOR_SECRET

out=${BENCH_COMPARE_DIR:-$(mktemp -d)}
mkdir -p "$out/before" "$out/after"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -n ${BENCH_COMPARE_DIR:-} ]] || rm -rf "$out"
}
trap cleanup EXIT

bins=("$1" "$2")
ports=(18193 18194)
for index in 0 1; do
    port_open "${ports[$index]}" && die "port ${ports[$index]} is taken"
    env QUERY_ADDR="127.0.0.1:${ports[$index]}" CLICKHOUSE_URL="$CLICKHOUSE_URL" \
        CLICKHOUSE_DATABASE=$BENCH_QUERY_DATABASE RUST_LOG=warn "${bins[$index]}" >/dev/null 2>&1 &
    pids+=($!)
done
api="/api/v1/$PROJECT_KEY/users"
for port in "${ports[@]}"; do
    for _ in $(seq 100); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: $API_KEY" \
            "http://127.0.0.1:$port$api/bench-10%40example.com/sessions" || true) == 200 ]] && break
        sleep 0.1
    done
done

# fetch N PATH [KEY]: PATH's answer from each build into answer N (status line and
# headers but `date`, then the body); prints the next page's path from `Link`.
fetch() {
    local number=$1 path=$2 key=${3:-$API_KEY} side port
    for side in before after; do
        [[ $side == before ]] && port=${ports[0]} || port=${ports[1]}
        curl -s -D "$out/$side/$number.head" -o "$out/$side/$number.body" \
            -H "Authorization: $key" "http://127.0.0.1:$port$path"
        grep -iv '^date:' "$out/$side/$number.head" >"$out/$side/$number.headers"
        rm "$out/$side/$number.head"
        echo "$path" >"$out/$side/$number.path"
    done
    sed -n 's/^link: <\([^>]*\)>.*/\1/Ip' "$out/before/$number.headers" | tr -d '\r'
}

answers=0
# walk PATH: PATH and up to PAGES - 1 pages after it.
walk() {
    local path=$1 page
    for ((page = 0; page < PAGES && ${#path} > 0; page++)); do
        answers=$((answers + 1))
        path=$(fetch "$answers" "$path")
    done
}
walk "$api/bench-100%40example.com/sessions"
walk "$api/bench-100%40example.com/sessions?limit=7"
walk "$api/bench-1000%40example.com/sessions?limit=1000"
walk "$api/bench-1000%40example.com/sessions?start_date=1700000020000&end_date=1700000100000&limit=13"
walk "$api/bench-10%40example.com/sessions"
walk "$api/bench-heavy%40example.com/sessions"
walk "$api/bench-heavy%40example.com/sessions?limit=200&start_date=1800030000000"
walk "$api/user-7%40example.com/sessions?limit=3"
walk "$api/nobody%40example.com/sessions"
walk "$api/bench-100%40example.com/sessions?cursor=not-a-cursor"
walk "$api/bench-100%40example.com/sessions?limit=0"
answers=$((answers + 1))
fetch "$answers" "$api/bench-100%40example.com/sessions" wrong-key >/dev/null

if ! diff -r "$out/before" "$out/after" >&2; then
    die "the builds answer differently (above)"
fi
bytes=$(cat "$out"/after/*.body | wc -c)
say "same bytes: $answers answers, $bytes body bytes, headers and bodies identical"
for number in $(seq "$answers"); do
    printf '%s %s %s\n' "$(head -1 "$out/after/$number.headers" | tr -d '\r')" \
        "$(wc -c <"$out/after/$number.body")" "$(<"$out/after/$number.path")"
done >&2
