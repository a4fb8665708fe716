#!/usr/bin/env bash
# What shared state and a second replica do to a tools/call: the core
# benchmark's echo call (stateless 2026-07-28, an API key on every call)
# against three deployments of the same release build, alternating every run,
# for N rounds:
#
#   sqlite  one replica on its embedded SQLite file (the default deployment);
#   pg      one replica on PostgreSQL + Redis;
#   two     two replicas on the same PostgreSQL + Redis behind HAProxy
#           (round-robin, keep-alive to both; HAProxy from Debian's packages,
#           installed when missing). `pg` is one of the two.
#
#   bash bench/replicas.sh [--rounds 3] [--duration 10s] [--out FILE]
#                          [--bin-dir DIR] [--pg URL] [--redis URL]
#
# --pg is a PostgreSQL server URL whose role may CREATE DATABASE (default
# postgres://postgres@127.0.0.1:5432/postgres); the benchmark creates a fresh
# database and drops it at the end. --redis defaults to redis://127.0.0.1:6379.
#
# Reports per deployment median throughput and p99 at concurrency 32 and 1,
# and the per-round ratios pg/sqlite and two/pg. Every process shares the
# same cores here, so two/pg is reported, not targeted.

set -euo pipefail

ROUNDS=3
BIN=
DURATION=10s
PG=postgres://postgres@127.0.0.1:5432/postgres
REDIS=redis://127.0.0.1:6379
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/results/replicas-latest.md
while (($#)); do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --bin-dir) BIN=$(cd "$2" && pwd); shift 2 ;;
        --pg) PG=$2; shift 2 ;;
        --redis) REDIS=$2; shift 2 ;;
        -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "replicas.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "replicas.sh: --rounds wants a positive integer" >&2; exit 2; }
cd "$ROOT"
log() { printf '[replicas.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
while read -r var; do unset "$var"; done < <(compgen -e | grep '^META_MCP_' || true)
SUDO=; ((EUID == 0)) || SUDO=sudo
for pkg in wrk haproxy; do
    command -v "$pkg" >/dev/null && continue
    log "installing $pkg from the distribution's packages"
    $SUDO apt-get install -y "$pkg" >/dev/null 2>&1 ||
        { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y "$pkg" >/dev/null; } ||
        die "cannot install $pkg"
done
command -v psql >/dev/null || die "psql is required"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/metamcp/target}
if [[ -z ${BIN:-} ]]; then
    BIN=$CARGO_TARGET_DIR/release
    log "building this checkout (release)"
    cargo build --release --bins --quiet
fi

TMP=$(mktemp -d -t metamcp-replicas.XXXXXX)
DB=metamcp_bench_$RANDOM$RANDOM
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql "$PG" -qc "drop database if exists $DB" >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_live() { # port log
    for _ in $(seq 3000); do curl -fs "http://127.0.0.1:$1/api/v1/health/live" >/dev/null && return; sleep 0.02; done
    tail -5 "$2" >&2
    die "port $1 not live"
}

psql "$PG" -qc "create database $DB" >/dev/null || die "cannot create database $DB on $PG"
PG_DB_URL=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$PG" "$DB")

"$BIN/metamcp-fixture" --http 127.0.0.1:0 --threads 1 >"$TMP/fx.out" 2>/dev/null &
PIDS+=($!)
for _ in $(seq 500); do FX_URL=$(sed -n 's/^listening on \(http:[^ ]*\)$/\1/p' "$TMP/fx.out"); [[ -n $FX_URL ]] && break; sleep 0.01; done
[[ -n $FX_URL ]] || die "fixture did not start"
echo "{\"mcpServers\": {\"fx\": {\"url\": \"$FX_URL\"}}, \"prefix_mode\": \"never\"}" >"$TMP/gw.json"

PW=bench-admin-password-0123
# start_replica NAME [NAME=VALUE...]: a metamcp process with its own data dir.
declare -A PORT
start_replica() {
    local name=$1 port
    shift
    port=$(free_port)
    mkdir "$TMP/$name"
    env "$@" META_MCP_PORT="$port" META_MCP_DATA_DIR="$TMP/$name" META_MCP_ADMIN_PASSWORD=$PW \
        META_MCP_SECRET_KEY=bench-secret-key-shared-by-the-replicas-0123 \
        META_MCP_ENCRYPTION_KEY=bench-encryption-key-shared-by-the-replicas-01 \
        META_MCP_ACCESS_TOKEN_EXPIRE_MINUTES=1440 META_MCP_LOGGING_LEVEL=warn \
        "$BIN/metamcp" serve --config "$TMP/gw.json" 2>"$TMP/$name.log" &
    PIDS+=($!)
    PORT[$name]=$port
    wait_live "$port" "$TMP/$name.log"
}
api_key() { # port -> a fresh API key of the admin
    local jwt
    jwt=$(curl -fsS -X POST "http://127.0.0.1:$1/api/v1/auth/login" -H 'Content-Type: application/json' \
        --data-binary "{\"username\":\"admin\",\"password\":\"$PW\"}" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
    [[ -n $jwt ]] || die "login on port $1 failed"
    curl -fsS -X POST "http://127.0.0.1:$1/api/v1/auth/keys" -H "Authorization: Bearer $jwt" \
        -H 'Content-Type: application/json' --data-binary '{"name":"bench"}' | sed -n 's/.*"key":"\([^"]*\)".*/\1/p'
}

log "starting sqlite, pg-1 and pg-2 (database $DB)"
start_replica sqlite
start_replica pg1 META_MCP_DATABASE_URL="$PG_DB_URL" META_MCP_REDIS_URL="$REDIS"
start_replica pg2 META_MCP_DATABASE_URL="$PG_DB_URL" META_MCP_REDIS_URL="$REDIS"
SQLITE_KEY=$(api_key "${PORT[sqlite]}")
PG_KEY=$(api_key "${PORT[pg1]}")
[[ -n $SQLITE_KEY && -n $PG_KEY ]] || die "no API keys"

HA_PORT=$(free_port)
cat >"$TMP/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend mcp
    bind 127.0.0.1:$HA_PORT
    default_backend replicas
backend replicas
    balance roundrobin
    server pg1 127.0.0.1:${PORT[pg1]}
    server pg2 127.0.0.1:${PORT[pg2]}
EOF
haproxy -W -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 500); do curl -fs "http://127.0.0.1:$HA_PORT/api/v1/health/live" >/dev/null && break; sleep 0.02; done

declare -A URL=([sqlite]=http://127.0.0.1:${PORT[sqlite]}/mcp [pg]=http://127.0.0.1:${PORT[pg1]}/mcp [two]=http://127.0.0.1:$HA_PORT/mcp)
declare -A AUTHZ=([sqlite]="Bearer $SQLITE_KEY" [pg]="Bearer $PG_KEY" [two]="Bearer $PG_KEY")
# Every deployment answers the echo (and both replicas behind HAProxy do: the
# upstream connects on each replica by itself).
for p in sqlite pg two two; do
    for _ in $(seq 500); do
        reply=$(curl -sS -X POST "${URL[$p]}" -H "Authorization: ${AUTHZ[$p]}" -H 'Content-Type: application/json' \
            -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2026-07-28' \
            -H 'Mcp-Method: tools/call' -H 'Mcp-Name: echo' \
            --data-binary '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}' || true)
        [[ $reply == *'"text":"hello"'* ]] && break
        sleep 0.02
    done
    [[ $reply == *'"text":"hello"'* ]] || die "$p does not answer the echo: $reply"
done

RESULTS=$TMP/results.tsv
: >"$RESULTS"
run() { # round conc path record duration
    local line rps bad
    WRK_AUTH=${AUTHZ[$3]} wrk -t"$(($2 == 1 ? 1 : 2))" -c"$2" -d"$5" -s bench/echo.lua "${URL[$3]}" >"$TMP/wrk.out" 2>&1
    (($4)) || return 0
    line=$(sed -n 's/^WRK_RESULT //p' "$TMP/wrk.out")
    [[ -n $line ]] || { cat "$TMP/wrk.out" >&2; die "wrk printed no result"; }
    get() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" <<<"$line"; }
    bad=$(($(get non200) + $(get bad_body) + $(get timeouts)))
    ((bad == 0)) || die "$3: $bad failed requests: $line"
    rps=$(awk -v r="$(get requests)" -v d="$(get duration_us)" 'BEGIN {printf "%.1f", r / (d / 1e6)}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$rps" "$(get p50_us)" "$(get p99_us)" >>"$RESULTS"
    log "round $1 c=$2 $3: $rps req/s, p50 $(get p50_us) us, p99 $(get p99_us) us"
}
PATHS=(sqlite pg two)
log "warm-up"
for p in "${PATHS[@]}"; do run 0 32 "$p" 0 2s; done
for round in $(seq "$ROUNDS"); do
    for conc in 32 1; do
        for i in 0 1 2; do
            run "$round" "$conc" "${PATHS[$(((i + round) % 3))]}" 1 "$DURATION"
        done
    done
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
cell() { # conc path column(4=rps 5=p50 6=p99)
    awk -F'\t' -v c="$1" -v p="$2" -v k="$3" '$2 == c && $3 == p {print $k}' "$RESULTS" | median
}
ratio() { # conc a b column -> median over rounds of a/b
    awk -F'\t' -v c="$1" -v a="$2" -v b="$3" -v k="$4" '$2 == c {v[$1, $3] = $k; r[$1] = 1} END {for (x in r) print v[x, a] / v[x, b]}' "$RESULTS" | median
}
f() { awk -v x="$1" -v fmt="$2" 'BEGIN {printf fmt, x}'; }
ms() { awk -v x="$1" 'BEGIN {printf "%.3f", x / 1000}'; }
{
    echo "### metamcp replicas — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "$(nproc) × $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo). metamcp $(git rev-parse --short HEAD), binaries from $BIN;"
    echo "$(psql "$PG" -Atc 'show server_version' 2>/dev/null | sed 's/^/PostgreSQL /'), $(haproxy -v 2>/dev/null | head -1 | awk '{print $1, $2, $3}');"
    echo "$ROUNDS rounds of $DURATION per deployment, order rotating; medians of runs and of per-round ratios."
    echo
    echo "| concurrency | deployment | throughput (req/s) | p50 (ms) | p99 (ms) |"
    echo "|---:|---|---:|---:|---:|"
    for conc in 32 1; do
        for p in "${PATHS[@]}"; do
            echo "| $conc | $p | $(f "$(cell "$conc" "$p" 4)" %.0f) | $(ms "$(cell "$conc" "$p" 5)") | $(ms "$(cell "$conc" "$p" 6)") |"
        done
    done
    echo
    echo "| concurrency | pg/sqlite throughput | pg/sqlite p99 | two/pg throughput | two/pg p99 |"
    echo "|---:|---:|---:|---:|---:|"
    for conc in 32 1; do
        echo "| $conc | $(f "$(ratio "$conc" pg sqlite 4)" %.3f) | $(f "$(ratio "$conc" pg sqlite 6)" %.3f) | $(f "$(ratio "$conc" two pg 4)" %.3f) | $(f "$(ratio "$conc" two pg 6)" %.3f) |"
    done
    echo
    echo "<details><summary>Per-run results (req/s, p50 µs, p99 µs)</summary>"
    echo
    echo "| round | concurrency | deployment | req/s | p50 (µs) | p99 (µs) |"
    echo "|---:|---:|---|---:|---:|---:|"
    awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6}' "$RESULTS"
    echo
    echo "</details>"
} >"$TMP/report.md"
mkdir -p "$(dirname "$OUT")"
cp "$TMP/report.md" "$OUT"
cat "$TMP/report.md"
