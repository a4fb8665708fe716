#!/usr/bin/env bash
# What identity costs on a tools/call: the core benchmark's echo call, at
# concurrency 32 (and 1), directly against the upstream and through one
# gateway in three ways, alternating every run, for N rounds:
#
#   off  no credentials: the gateway runs with the test setting
#        META_MCP_ANONYMOUS_LOOPBACK_ROLE=user, so a loopback request without
#        credentials acts as an anonymous user (nothing is verified);
#   jwt  an access token (JWT) verified on every call;
#   key  an API key verified on every call.
#
#   bash bench/auth.sh [--rounds 5] [--duration 10s] [--out FILE] [--bin-dir DIR]
#
# --bin-dir measures the metamcp and metamcp-fixture binaries in DIR instead
# of building them (identity does not depend on the `semantic` feature, so a
# `cargo build --release --bins --no-default-features` build will do).
#
# Reports per mode the median throughput ratio through/direct and how much
# lower it is than with auth off (target: no more than 10% lower).

set -euo pipefail

ROUNDS=5
BIN=
DURATION=10s
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/results/auth-latest.md
while (($#)); do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --bin-dir) BIN=$(cd "$2" && pwd); shift 2 ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "auth.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
cd "$ROOT"
log() { printf '[auth.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
while read -r var; do unset "$var"; done < <(compgen -e | grep '^META_MCP_' || true)
command -v wrk >/dev/null || die "wrk is required (apt-get install wrk)"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/metamcp/target}
if [[ -z ${BIN:-} ]]; then
    BIN=$CARGO_TARGET_DIR/release
    log "building this checkout (release)"
    cargo build --release --bins --quiet
fi

TMP=$(mktemp -d -t metamcp-auth.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_live() { for _ in $(seq 1000); do curl -fs "http://127.0.0.1:$1/api/v1/health/live" >/dev/null && return; sleep 0.02; done; die "port $1 not live"; }

"$BIN/metamcp-fixture" --http 127.0.0.1:0 --threads 1 >"$TMP/fx.out" 2>/dev/null &
PIDS+=($!)
for _ in $(seq 500); do FX_URL=$(sed -n 's/^listening on \(http:[^ ]*\)$/\1/p' "$TMP/fx.out"); [[ -n $FX_URL ]] && break; sleep 0.01; done
[[ -n $FX_URL ]] || die "fixture did not start"
echo "{\"mcpServers\": {\"fx\": {\"url\": \"$FX_URL\"}}, \"prefix_mode\": \"never\"}" >"$TMP/gw.json"

ON_PORT=$(free_port)
mkdir "$TMP/on"
PW=bench-admin-password-0123
META_MCP_PORT=$ON_PORT META_MCP_DATA_DIR=$TMP/on META_MCP_ADMIN_PASSWORD=$PW META_MCP_ACCESS_TOKEN_EXPIRE_MINUTES=1440 \
    META_MCP_ANONYMOUS_LOOPBACK_ROLE=user \
    "$BIN/metamcp" serve --config "$TMP/gw.json" 2>"$TMP/on.log" &
ON_PID=$!; PIDS+=($ON_PID)
wait_live "$ON_PORT"
JWT=$(curl -fsS -X POST "http://127.0.0.1:$ON_PORT/api/v1/auth/login" -H 'Content-Type: application/json' \
    --data-binary "{\"username\":\"admin\",\"password\":\"$PW\"}" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
KEY=$(curl -fsS -X POST "http://127.0.0.1:$ON_PORT/api/v1/auth/keys" -H "Authorization: Bearer $JWT" \
    -H 'Content-Type: application/json' --data-binary '{"name":"bench"}' | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')
[[ -n $JWT && -n $KEY ]] || die "no credentials"
sleep 2 # upstream connections

# target URL and Authorization header of each path
declare -A URL=([direct]=$FX_URL [off]=http://127.0.0.1:$ON_PORT/mcp [jwt]=http://127.0.0.1:$ON_PORT/mcp [key]=http://127.0.0.1:$ON_PORT/mcp)
declare -A AUTHZ=([direct]= [off]= [jwt]="Bearer $JWT" [key]="Bearer $KEY")
RESULTS=$TMP/results.tsv
: >"$RESULTS"
run() { # round conc path record duration
    local line rps bad
    WRK_AUTH=${AUTHZ[$3]} wrk -t"$(( $2 == 1 ? 1 : 2 ))" -c"$2" -d"$5" -s bench/echo.lua "${URL[$3]}" >"$TMP/wrk.out" 2>&1
    (($4)) || return 0
    line=$(sed -n 's/^WRK_RESULT //p' "$TMP/wrk.out")
    [[ -n $line ]] || { cat "$TMP/wrk.out" >&2; die "wrk printed no result"; }
    get() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" <<<"$line"; }
    bad=$(( $(get non200) + $(get bad_body) + $(get timeouts) ))
    ((bad == 0)) || die "$3: $bad failed requests: $line"
    rps=$(awk -v r="$(get requests)" -v d="$(get duration_us)" 'BEGIN {printf "%.1f", r / (d / 1e6)}')
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$rps" "$(get p50_us)" >>"$RESULTS"
    log "round $1 c=$2 $3: $rps req/s, p50 $(get p50_us) us"
}
for p in direct off jwt key; do run 0 32 "$p" 0 2s; done
PATHS=(direct off jwt key)
for round in $(seq "$ROUNDS"); do
    for conc in 32 1; do
        # rotate the order every round so drift favours no path
        for i in 0 1 2 3; do
            run "$round" "$conc" "${PATHS[$(( (i + round) % 4 ))]}" 1 "$DURATION"
        done
    done
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
ratio() { # conc path -> median over rounds of path/direct
    awk -F'\t' -v c="$1" -v p="$2" '$2 == c {v[$1, $3] = $4; r[$1] = 1} END {for (k in r) print v[k, p] / v[k, "direct"]}' "$RESULTS" | median
}
{
    echo "### metamcp auth overhead — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "$(nproc) × $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo). metamcp $(git rev-parse --short HEAD), release build, one gateway process for the three paths;"
    echo "$ROUNDS rounds of $DURATION per path, paths rotating; medians of the per-round ratios."
    echo
    echo "| concurrency | path | throughput through/direct | change vs auth off |"
    echo "|---:|---|---:|---:|"
    for conc in 32 1; do
        off=$(ratio "$conc" off)
        for p in off jwt key; do
            r=$(ratio "$conc" "$p")
            echo "| $conc | $p | $(awk -v r="$r" 'BEGIN {printf "%.3f", r}') | $(awk -v r="$r" -v o="$off" 'BEGIN {printf "%+.1f%%", (r / o - 1) * 100}') |"
        done
    done
    echo
    echo "<details><summary>Per-run results (req/s, p50 µs)</summary>"
    echo
    echo "| round | concurrency | path | req/s | p50 (µs) |"
    echo "|---:|---:|---|---:|---:|"
    awk -F'\t' '{printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5}' "$RESULTS"
    echo
    echo "</details>"
} >"$TMP/report.md"
mkdir -p "$(dirname "$OUT")"
cp "$TMP/report.md" "$OUT"
cat "$TMP/report.md"
