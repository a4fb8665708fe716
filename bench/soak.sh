#!/usr/bin/env bash
# Soak benchmark of metamcp: a crashing upstream under load.
#
#   bash bench/soak.sh [--duration SECONDS] [--kill-every SECONDS]
#                      [--sample-every SECONDS] [--out FILE] [--no-build]
#
# Runs metamcp (release build, fresh data dir, defaults) with two stdio
# upstreams, both metamcp-fixture: `healthy`, never touched, and `victim`,
# SIGKILLed every --kill-every seconds (default 30) by its pid, found afresh
# each time by a unique `--name` marker in /proc/*/cmdline. For --duration
# seconds (default 600) two wrk processes keep 32 connections busy:
#   * 16 connections of a healthy mix: stateless 2026-07-28 `tools/call` of
#     healthy__echo and healthy__count_calls on /mcp, and now and then
#     (1 request in 20) REST `GET /api/v1/tools`;
#   * 16 connections of `tools/call` victim__echo.
# The wrk script checks every response: HTTP status, JSON-RPC error, tool
# error (isError), expected content; it counts them per target and per
# 30-second window. Errors on the victim are expected; on the healthy
# upstream the target is 0. metamcp's VmRSS is sampled before the load,
# every --sample-every seconds (default 30) and after the load; the target
# is no growth beyond 10 % from start to end.
#
# Results go to stdout and, as Markdown, to --out (default
# bench/results/soak-latest.md); beside it go the kills, the samples and
# metamcp's log lines about the victim, the breaker and the supervisor
# (soak-latest.gateway.log). KEEP_TMP=1 keeps the temporary directory with
# metamcp's whole log (about 0.4 GiB for 10 minutes at the default level).
# See BENCHMARKS.md.

set -euo pipefail

DURATION=600
KILL_EVERY=30
SAMPLE_EVERY=30
BUILD=1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/results/soak-latest.md
HEALTHY_CONNS=16
VICTIM_CONNS=16
REST_EVERY=20 # one REST listing per this many requests of the healthy mix
WRK_TIMEOUT=10s

usage() {
    sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "soak.sh: $1 wants a positive integer (seconds)" >&2; exit 2; }; }
while (($#)); do
    case $1 in
        --duration) posint "$1" "${2:-}"; DURATION=$2; shift 2 ;;
        --kill-every) posint "$1" "${2:-}"; KILL_EVERY=$2; shift 2 ;;
        --sample-every) posint "$1" "${2:-}"; SAMPLE_EVERY=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage 0 ;;
        *) echo "soak.sh: unknown argument $1" >&2; usage 2 ;;
    esac
done

cd "$ROOT"
log() { printf '[soak.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The gateway runs with its defaults plus what this script sets, not
# whatever META_MCP_* the caller's shell happens to carry.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^META_MCP_' || true)
unset RUST_LOG

# ---------------------------------------------------------------- tools ---
apt_install() {
    local SUDO=
    ((EUID == 0)) || SUDO=sudo
    log "$1 not found; installing it from the distribution's packages"
    $SUDO apt-get install -y "$1" >/dev/null 2>&1 ||
        { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y "$1" >/dev/null; } ||
        die "cannot install $1 (apt-get install $1)"
}
for tool in curl awk sort grep sed; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
command -v wrk >/dev/null || apt_install wrk
command -v jq >/dev/null || apt_install jq

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/metamcp/target}
BIN=$CARGO_TARGET_DIR/release
if ((BUILD)); then
    log "building release binaries (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    cargo build --release --bins --quiet
fi
for b in metamcp metamcp-fixture; do
    [[ -x $BIN/$b ]] || die "$BIN/$b missing (build with cargo build --release --bins)"
done

# ------------------------------------------------------------- plumbing ---
TMP=$(mktemp -d -t metamcp-soak.XXXXXX)
PIDS=()
GW_PID=
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    # metamcp stops its stdio children when it exits; anything left with our
    # markers (e.g. after a metamcp crash) is ours to remove.
    if [[ -n ${MARK:-} ]]; then
        for pid in $(pids_with "$MARK"); do kill -KILL "$pid" 2>/dev/null || true; done
    fi
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# sleep(1), not `read -t`: bash 5.2 has been seen to segfault in the EXIT
# trap when a TERM interrupted a `read -t`.
nap() { sleep "$1"; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
alive() { kill -0 "$1" 2>/dev/null; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
threads_of() { awk '/^Threads:/ {print $2}' "/proc/$1/status"; }
fds_of() { local f=(/proc/"$1"/fd/*); echo "${#f[@]}"; }

# Live (non-zombie) processes whose command line holds $1 (a marker of
# [a-z0-9-]; the bracket keeps grep from finding its own command line).
pids_with() {
    local f
    for f in $(grep -lsa -- "[${1:0:1}]${1:1}" /proc/[0-9]*/cmdline || true); do
        f=${f#/proc/}
        echo "${f%/cmdline}"
    done
}
# Zombie (state Z) children of $1.
zombies_of() {
    cat /proc/[0-9]*/stat 2>/dev/null |
        awk -v p="$1" '{s = $0; sub(/^.*\) /, "", s); split(s, a, " "); if (a[1] == "Z" && a[2] == p) n++} END {print n + 0}'
}

# A TCP port nothing listens on (best effort: free when checked).
free_port() {
    local port fd
    for _ in $(seq 100); do
        port=$(( 20000 + RANDOM % 40000 ))
        if ! { exec {fd}<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
            echo "$port"; return
        fi
        exec {fd}<&-
    done
    die "no free port found"
}

# ------------------------------------------------------------- machine ---
NPROC=$(nproc)
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
KERNEL=$(uname -r)
WRK_VERSION=$( (wrk -v 2>&1 || true) | awk 'NR == 1 {print $1, $2}')
if [[ -n ${METAMCP_REV:-} ]]; then
    GIT_REV=$METAMCP_REV
else
    GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || GIT_REV="$GIT_REV+changes"
fi
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: $NPROC CPUs, $CPU_MODEL, Linux $KERNEL; $WRK_VERSION; metamcp $GIT_REV; load average $LOADAVG"

# -------------------------------------------------------------- gateway ---
MARK=soak-$$-$RANDOM$RANDOM
HEALTHY_MARK=$MARK-healthy
VICTIM_MARK=$MARK-victim
GW_PORT=$(free_port)
API=http://127.0.0.1:$GW_PORT/api/v1
jq -n --arg bin "$BIN/metamcp-fixture" --arg h "$HEALTHY_MARK" --arg v "$VICTIM_MARK" '{
    mcpServers: {
        healthy: {command: $bin, args: ["--name", $h]},
        victim: {command: $bin, args: ["--name", $v]}
    }
}' >"$TMP/gateway.json"
mkdir "$TMP/data"
log "starting metamcp on port $GW_PORT (upstreams: healthy, victim)"
META_MCP_PORT=$GW_PORT META_MCP_DATA_DIR=$TMP/data \
    "$BIN/metamcp" serve --config "$TMP/gateway.json" 2>"$TMP/gateway.log" &
GW_PID=$!
PIDS+=("$GW_PID")

server_json() { curl -fsS --max-time 5 "$API/servers/$1" 2>/dev/null || echo '{}'; }
server_status() { server_json "$1" | jq -r '.status.status // "unknown"'; }

for name in healthy victim; do
    state=
    for _ in $(seq 1500); do
        alive "$GW_PID" || { cat "$TMP/gateway.log" >&2; die "metamcp exited"; }
        state=$(server_status "$name")
        [[ $state == ready ]] && break
        nap 0.02
    done
    [[ $state == ready ]] || { tail -20 "$TMP/gateway.log" >&2; die "upstream $name not ready (state: ${state:-none})"; }
done
HEALTHY_PID0=$(pids_with "$HEALTHY_MARK")
VICTIM_PID0=$(pids_with "$VICTIM_MARK")
[[ $HEALTHY_PID0 =~ ^[0-9]+$ && $VICTIM_PID0 =~ ^[0-9]+$ ]] ||
    die "expected one process per upstream (healthy: '$HEALTHY_PID0', victim: '$VICTIM_PID0')"
log "metamcp ready (pid $GW_PID); healthy fixture pid $HEALTHY_PID0, victim fixture pid $VICTIM_PID0"

# ---------------------------------------------------------------- check ---
mcp_body() { # mcp_body ID TOOL ARGS_JSON
    printf '{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"%s","arguments":%s,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}' "$1" "$2" "$3"
}
mcp_call() { # mcp_call ID TOOL ARGS_JSON -> body
    curl -sS --max-time 10 -X POST "http://127.0.0.1:$GW_PORT/mcp" \
        -H 'Content-Type: application/json' \
        -H 'Accept: application/json, text/event-stream' \
        -H 'MCP-Protocol-Version: 2026-07-28' \
        -H 'Mcp-Method: tools/call' \
        -H "Mcp-Name: $2" \
        --data-binary "$(mcp_body "$1" "$2" "$3")" 2>&1 || true
}
# The text of a tools/call result (JSON or one SSE event).
result_text() { sed -n 's/^data: //p; /^{/p' | jq -r 'select(.result) | .result.content[0].text // empty' 2>/dev/null | awk 'NR == 1'; }

reply=$(mcp_call 101 healthy__echo '{"message":"soak-healthy"}')
[[ $(result_text <<<"$reply") == soak-healthy ]] || die "healthy__echo did not answer: $reply"
reply=$(mcp_call 201 victim__echo '{"message":"soak-victim"}')
[[ $(result_text <<<"$reply") == soak-victim ]] || die "victim__echo did not answer: $reply"
reply=$(mcp_call 102 healthy__count_calls '{}')
[[ $(result_text <<<"$reply") =~ ^[0-9]+$ ]] || die "healthy__count_calls did not answer a number: $reply"
CHECK_CALLS=2 # healthy tool calls made outside wrk so far
tools=$(curl -fsS --max-time 5 "$API/tools" | jq -r '.tools[].name' | sort | tr '\n' ' ')
[[ " $tools" == *" healthy__echo "* && " $tools" == *" victim__echo "* ]] || die "GET /api/v1/tools lists: $tools"
log "healthy__echo, healthy__count_calls, victim__echo and GET /api/v1/tools answer"

# ------------------------------------------------------------- wrk script ---
# Two wrk processes share this script; `-- healthy|victim START_EPOCH WINDOW`
# selects the mix. Counters are per wrk thread (each has its own Lua state),
# in one flat table `c`, added up by done(). A response is attributed to its
# target by its JSON-RPC id (101 healthy__echo, 102 healthy__count_calls,
# 201 victim__echo), a REST listing by its body; anything else in the
# healthy process is "unattributed" (and still a healthy error).
cat >"$TMP/soak.lua" <<'LUA'
local mode, start, window
local seq, reqs, n = {}, {}, 0
local threads = {}
c = {}

local function inc(key, by)
  c[key] = (c[key] or 0) + (by or 1)
end

local function mcp(id, tool, args)
  local body = '{"jsonrpc":"2.0","id":' .. id .. ',"method":"tools/call","params":{"name":"'
    .. tool .. '","arguments":' .. args .. ',"_meta":{"io.modelcontextprotocol/protocolVersion":'
    .. '"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}'
  return wrk.format("POST", "/mcp", {
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json, text/event-stream",
    ["MCP-Protocol-Version"] = "2026-07-28",
    ["Mcp-Method"] = "tools/call",
    ["Mcp-Name"] = tool,
  }, body)
end

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  mode, start, window = args[1], tonumber(args[2]), tonumber(args[3])
  local rest_every = tonumber(args[4]) or 20
  if mode == "healthy" then
    reqs.h_echo = mcp(101, "healthy__echo", '{"message":"soak-healthy"}')
    reqs.h_count = mcp(102, "healthy__count_calls", '{}')
    reqs.rest = wrk.format("GET", "/api/v1/tools", {["Accept"] = "application/json"})
    -- per rest_every requests: one REST listing, count_calls every third,
    -- echo otherwise.
    for i = 1, rest_every do
      if i == rest_every then seq[i] = "rest"
      elseif i % 3 == 0 then seq[i] = "h_count"
      else seq[i] = "h_echo" end
    end
  else
    reqs.v_echo = mcp(201, "victim__echo", '{"message":"soak-victim"}')
    seq[1] = "v_echo"
  end
end

function request()
  n = n % #seq + 1
  local kind = seq[n]
  inc(kind .. ".sent")
  return reqs[kind]
end

local function has(body, s)
  return string.find(body, s, 1, true) ~= nil
end

function response(status, headers, body)
  body = body or ""
  local kind
  local id = string.match(body, '"id":%s*(%d+)')
  if id == "101" then kind = "h_echo"
  elseif id == "102" then kind = "h_count"
  elseif id == "201" then kind = "v_echo"
  elseif mode == "victim" then kind = "v_echo"
  elseif not has(body, '"jsonrpc"') and (has(body, '"tools":') or has(body, "urn:metamcp:problem:")) then
    kind = "rest"
  else kind = "unattributed" end

  local outcome
  if status ~= 200 then outcome = "http_error"
  elseif kind == "rest" then
    outcome = has(body, '"name":"healthy__echo"') and "ok" or "bad_body"
  elseif kind == "unattributed" then outcome = "bad_body"
  elseif has(body, '"error":') then outcome = "rpc_error"
  elseif has(body, '"isError":true') then outcome = "tool_error"
  elseif kind == "h_echo" then outcome = has(body, '"text":"soak-healthy"') and "ok" or "bad_body"
  elseif kind == "v_echo" then outcome = has(body, '"text":"soak-victim"') and "ok" or "bad_body"
  else outcome = string.find(body, '"text":"%d+"') and "ok" or "bad_body" end

  inc(kind .. ".got")
  inc(kind .. "." .. outcome)
  inc(kind .. ".status." .. status)
  local w = math.floor((os.time() - start) / window)
  if w < 0 then w = 0 end
  inc("w." .. w .. "." .. (kind == "v_echo" and "victim" or "healthy") .. "." .. (outcome == "ok" and "ok" or "err"))
  -- a sample of each kind of failure, to say what went wrong
  if outcome ~= "ok" and not c["sample." .. kind .. "." .. outcome] then
    c["sample." .. kind .. "." .. outcome] = status .. " " .. string.sub(string.gsub(body, "%s+", " "), 1, 400)
  end
end

function done(summary, latency, requests)
  local total, samples = {}, {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("c")) do
      if string.sub(k, 1, 7) == "sample." then samples[k] = samples[k] or v
      else total[k] = (total[k] or 0) + v end
    end
  end
  local keys = {}
  for k in pairs(total) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do io.write(string.format("SOAK_COUNT %s %d\n", k, total[k])) end
  for k, v in pairs(samples) do io.write(string.format("SOAK_SAMPLE %s %s\n", string.sub(k, 8), v)) end
  local e = summary.errors
  io.write(string.format("SOAK_WRK requests=%d duration_us=%d connect=%d read=%d write=%d timeout=%d status=%d "
    .. "p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
LUA

# ------------------------------------------------------------- sampling ---
TIMELINE=$TMP/timeline.tsv # t_s rss_kib fds threads victim_status victim_attempts kills zombies loadavg1
KILLS_LOG=$TMP/kills.tsv   # t_s pid victim_status_before attempts_before
: >"$KILLS_LOG"
KILLS=0
KILL_MISSES=0

sample() { # sample T_S|end
    local vj vs va
    vj=$(server_json victim)
    vs=$(jq -r '.status.status // "?"' <<<"$vj")
    va=$(jq -r '.status.attempts // "?"' <<<"$vj")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$(rss_kib "$GW_PID")" "$(fds_of "$GW_PID")" \
        "$(threads_of "$GW_PID")" "$vs" "$va" "$KILLS" "$(zombies_of "$GW_PID")" "$(cut -d' ' -f1 /proc/loadavg)" >>"$TIMELINE"
    local label=$1
    [[ $1 =~ ^[0-9]+$ ]] && label=${1}s
    log "t=$label RSS $(rss_kib "$GW_PID") KiB, fds $(fds_of "$GW_PID"), victim $vs (attempt $va), kills $KILLS"
}

kill_victim() { # kill_victim T_S
    local pids vj vs va pid
    vj=$(server_json victim)
    vs=$(jq -r '.status.status // "?"' <<<"$vj")
    va=$(jq -r '.status.attempts // "?"' <<<"$vj")
    pids=$(pids_with "$VICTIM_MARK")
    if [[ -z $pids ]]; then
        KILL_MISSES=$((KILL_MISSES + 1))
        printf '%s\t-\t%s\t%s\n' "$1" "$vs" "$va" >>"$KILLS_LOG"
        log "t=${1}s no victim process to kill (victim $vs, attempt $va)"
        return
    fi
    for pid in $pids; do
        kill -KILL "$pid" 2>/dev/null || continue
        KILLS=$((KILLS + 1))
        printf '%s\t%s\t%s\t%s\n' "$1" "$pid" "$vs" "$va" >>"$KILLS_LOG"
        log "t=${1}s SIGKILL victim pid $pid (was $vs, attempt $va); kills so far: $KILLS"
    done
}

nap 1
RSS_START=$(rss_kib "$GW_PID")
FDS_START=$(fds_of "$GW_PID")
THREADS_START=$(threads_of "$GW_PID")
: >"$TIMELINE"
sample 0

# ----------------------------------------------------------------- load ---
log "soak: ${DURATION}s, concurrency $((HEALTHY_CONNS + VICTIM_CONNS)) ($HEALTHY_CONNS healthy mix + $VICTIM_CONNS victim), SIGKILL of the victim every ${KILL_EVERY}s"
T0_MS=$(now_ms)
T0_S=$((T0_MS / 1000))
wrk -t1 -c"$HEALTHY_CONNS" -d"${DURATION}s" --timeout "$WRK_TIMEOUT" -s "$TMP/soak.lua" \
    "http://127.0.0.1:$GW_PORT/mcp" -- healthy "$T0_S" "$SAMPLE_EVERY" "$REST_EVERY" >"$TMP/wrk-healthy.out" 2>&1 &
WRK_H=$!
PIDS+=("$WRK_H")
wrk -t1 -c"$VICTIM_CONNS" -d"${DURATION}s" --timeout "$WRK_TIMEOUT" -s "$TMP/soak.lua" \
    "http://127.0.0.1:$GW_PORT/mcp" -- victim "$T0_S" "$SAMPLE_EVERY" >"$TMP/wrk-victim.out" 2>&1 &
WRK_V=$!
PIDS+=("$WRK_V")

next_kill=$KILL_EVERY
next_sample=$SAMPLE_EVERY
while alive "$WRK_H" || alive "$WRK_V"; do
    alive "$GW_PID" || { tail -40 "$TMP/gateway.log" >&2; KEEP_TMP=1; die "metamcp exited during the soak"; }
    elapsed_ms=$(( $(now_ms) - T0_MS ))
    if ((next_kill < DURATION && elapsed_ms >= next_kill * 1000)); then
        kill_victim "$next_kill"
        next_kill=$((next_kill + KILL_EVERY))
    fi
    if ((next_sample < DURATION && elapsed_ms >= next_sample * 1000)); then
        sample "$next_sample"
        next_sample=$((next_sample + SAMPLE_EVERY))
    fi
    nap 0.1
done
wait "$WRK_H" || die "wrk (healthy) failed: $(cat "$TMP/wrk-healthy.out")"
wait "$WRK_V" || die "wrk (victim) failed: $(cat "$TMP/wrk-victim.out")"
LOAD_S=$(( ($(now_ms) - T0_MS) / 1000 ))
RSS_LOADED=$(rss_kib "$GW_PID")
log "load finished after ${LOAD_S}s; RSS $RSS_LOADED KiB"

# After the load: let connections close and the victim settle, then sample
# the same quiet state as at the start.
nap 5
sample end
RSS_END=$(rss_kib "$GW_PID")
RSS_HWM=$(hwm_kib "$GW_PID")
FDS_END=$(fds_of "$GW_PID")
THREADS_END=$(threads_of "$GW_PID")
ZOMBIES_END=$(zombies_of "$GW_PID")

HEALTHY_PIDS_END=$(pids_with "$HEALTHY_MARK" | paste -sd' ')
VICTIM_PIDS_END=$(pids_with "$VICTIM_MARK" | paste -sd' ')
HEALTHY_JSON=$(server_json healthy)
VICTIM_JSON=$(server_json victim)
reply=$(mcp_call 102 healthy__count_calls '{}')
FIXTURE_CALLS=$(result_text <<<"$reply")
[[ $FIXTURE_CALLS =~ ^[0-9]+$ ]] || FIXTURE_CALLS="? ($reply)"

# --------------------------------------------------------------- results ---
cnt() { # cnt FILE KEY -> value (0 if absent)
    awk -v k="$2" '$1 == "SOAK_COUNT" && $2 == k {v = $3} END {print v + 0}' "$1"
}
wrkf() { # wrkf FILE FIELD
    sed -n 's/^SOAK_WRK //p' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}
for f in "$TMP/wrk-healthy.out" "$TMP/wrk-victim.out"; do
    grep -q '^SOAK_WRK ' "$f" || { cat "$f" >&2; die "wrk printed no result ($f)"; }
done
HO=$TMP/wrk-healthy.out
VO=$TMP/wrk-victim.out
OUTCOMES="ok http_error rpc_error tool_error bad_body"
declare -A R
for kind in h_echo h_count rest unattributed; do
    for o in sent got $OUTCOMES; do R[$kind,$o]=$(cnt "$HO" "$kind.$o"); done
done
for o in sent got $OUTCOMES; do R[v_echo,$o]=$(cnt "$VO" "v_echo.$o"); done
errs_of() { local k=$1; echo $(( R[$k,http_error] + R[$k,rpc_error] + R[$k,tool_error] + R[$k,bad_body] )); }
status_of() { # status_of FILE KIND -> "200: n, 503: m"
    awk -v k="$2." '$1 == "SOAK_COUNT" && index($2, k "status.") == 1 {
        s = substr($2, length(k "status.") + 1); out = out (out ? ", " : "") s ": " $3
    } END {print out ? out : "—"}' "$1"
}
SOCK_H=$(( $(wrkf "$HO" connect) + $(wrkf "$HO" read) + $(wrkf "$HO" write) + $(wrkf "$HO" timeout) ))
SOCK_V=$(( $(wrkf "$VO" connect) + $(wrkf "$VO" read) + $(wrkf "$VO" write) + $(wrkf "$VO" timeout) ))
H_GOT=$(( R[h_echo,got] + R[h_count,got] + R[rest,got] + R[unattributed,got] ))
H_OK=$(( R[h_echo,ok] + R[h_count,ok] + R[rest,ok] ))
H_ERR=$(( $(errs_of h_echo) + $(errs_of h_count) + $(errs_of rest) + $(errs_of unattributed) + SOCK_H ))
V_ERR=$(( $(errs_of v_echo) + SOCK_V ))
TOTAL_GOT=$(( H_GOT + R[v_echo,got] ))
H_TOOL_OK=$(( R[h_echo,ok] + R[h_count,ok] ))

pct() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print "n/a"; else printf "%.4f %%", 100 * a / b}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
growth() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.1f %%", 100 * (b - a) / a}'; }
ms() { awk -v u="$1" 'BEGIN {printf "%.1f", u / 1000}'; }
RSS_MAX=$(awk -F'\t' 'BEGIN {m = 0} $2 > m {m = $2} END {print m}' "$TIMELINE")
# The first sample under load (warm: buffers, pools and caches filled) and
# the last one under load, to tell a warm-up step from a steady climb.
RSS_WARM=$(awk -F'\t' '$1 ~ /^[0-9]+$/ && $1 > 0 {print $2; exit}' "$TIMELINE")
RSS_LAST_LOADED=$(awk -F'\t' '$1 ~ /^[0-9]+$/ {v = $2} END {print v}' "$TIMELINE")
RSS_WARM_OK=$(awk -v a="$RSS_WARM" -v b="$RSS_LAST_LOADED" 'BEGIN {print (b <= a * 1.10) ? 1 : 0}')
RSS_GROWTH_OK=$(awk -v a="$RSS_START" -v b="$RSS_END" 'BEGIN {print (b <= a * 1.10) ? 1 : 0}')
H_ERR_OK=$(( H_ERR == 0 ? 1 : 0 ))
verdict() { if (($1)); then echo met; else echo "**missed**"; fi; }

V_STATUS_END=$(jq -r '.status.status // "?"' <<<"$VICTIM_JSON")
V_ATTEMPTS_END=$(jq -r '.status.attempts // "?"' <<<"$VICTIM_JSON")
V_ERROR_END=$(jq -r '.status.last_error // "—"' <<<"$VICTIM_JSON")
V_BREAKER_END=$(jq -r '.breaker // "?"' <<<"$VICTIM_JSON")
H_STATUS_END=$(jq -r '.status.status // "?"' <<<"$HEALTHY_JSON")
H_ATTEMPTS_END=$(jq -r '.status.attempts // "?"' <<<"$HEALTHY_JSON")
H_BREAKER_END=$(jq -r '.breaker // "?"' <<<"$HEALTHY_JSON")

# The log's warnings and errors, without colour codes, counted by message.
sed 's/\x1b\[[0-9;]*m//g' "$TMP/gateway.log" | grep -E ' (WARN|ERROR) ' >"$TMP/gateway-warn.log" || true
LOG_SUMMARY=$(sed -E 's/^[^ ]+ +(WARN|ERROR) +//; s/ request_id=[0-9a-f-]+//g; s/[0-9]+(\.[0-9]+)?(ms|s|µs)/N\2/g;
        s/Number\([0-9.]+\)/Number(N)/g; s/(id|pgid|attempt|missed_probes)=[0-9]+/\1=N/g; s/after [0-9]+ failed/after N failed/' \
    "$TMP/gateway-warn.log" | sort | uniq -c | sort -rn | awk 'NR <= 15')
GAVE_UP=$(grep -m1 'gave up' "$TMP/gateway-warn.log" || true)
LOG_LINES=$(wc -l <"$TMP/gateway.log")
LOG_MIB=$(awk -v b="$(wc -c <"$TMP/gateway.log")" 'BEGIN {printf "%.1f", b / 1048576}')
LOG_WARN_LINES=$(wc -l <"$TMP/gateway-warn.log")

# Per window: healthy ok/err, victim ok/err, RSS and the machine's 1-minute
# load average at the window's end, kills within it.
windows_table() {
    local w from to
    for ((w = 0; w * SAMPLE_EVERY < DURATION; w++)); do
        from=$((w * SAMPLE_EVERY)); to=$(((w + 1) * SAMPLE_EVERY))
        ((to > DURATION)) && to=$DURATION
        printf '| %d–%d s | %d | %d | %d | %d | %s | %s | %s |\n' "$from" "$to" \
            "$(cnt "$HO" "w.$w.healthy.ok")" "$(cnt "$HO" "w.$w.healthy.err")" \
            "$(cnt "$VO" "w.$w.victim.ok")" "$(cnt "$VO" "w.$w.victim.err")" \
            "$(awk -F'\t' -v t="$to" -v d="$DURATION" '$1 == t || (t == d && $1 == "end") {r = sprintf("%.1f", $2 / 1024)} END {print r ? r : "—"}' "$TIMELINE")" \
            "$(awk -F'\t' -v t="$to" -v d="$DURATION" '$1 == t || (t == d && $1 == "end") {r = $9} END {print r ? r : "—"}' "$TIMELINE")" \
            "$(awk -F'\t' -v f="$from" -v t="$to" '$1 >= f && $1 < t {n++} END {print n + 0}' "$KILLS_LOG")"
    done
}

{
    echo "### Soak run — $DATE"
    echo
    echo "Command: \`bash bench/soak.sh --duration $DURATION --kill-every $KILL_EVERY\`."
    echo "Machine: $NPROC × $CPU_MODEL, Linux $KERNEL (load average at start: $LOADAVG). Load generator: $WRK_VERSION."
    echo "metamcp $GIT_REV, release build, default settings, fresh SQLite data dir. Upstreams: two stdio"
    echo "metamcp-fixture processes, \`healthy\` (never touched) and \`victim\` (SIGKILL every ${KILL_EVERY}s)."
    echo "Load: ${LOAD_S}s at concurrency $((HEALTHY_CONNS + VICTIM_CONNS)), closed loop: $HEALTHY_CONNS connections of a healthy mix"
    echo "(stateless 2026-07-28 \`tools/call\` of \`healthy__echo\` and \`healthy__count_calls\`, and 1 request in $REST_EVERY a REST"
    echo "\`GET /api/v1/tools\`), $VICTIM_CONNS connections of \`tools/call victim__echo\`; wrk timeout $WRK_TIMEOUT."
    echo
    echo "| target | responses | ok | HTTP error | JSON-RPC error | tool error (isError) | wrong body | HTTP statuses |"
    echo "|---|---:|---:|---:|---:|---:|---:|---|"
    # shellcheck disable=SC2016  # backquotes are Markdown here
    for kind in h_echo h_count rest unattributed v_echo; do
        case $kind in
            h_echo) label='`healthy__echo` (MCP)'; f=$HO ;;
            h_count) label='`healthy__count_calls` (MCP)'; f=$HO ;;
            rest) label='`GET /api/v1/tools` (REST)'; f=$HO ;;
            unattributed) label='healthy mix, unattributable'; f=$HO
                          ((R[$kind,got] > 0)) || continue ;;
            v_echo) label='`victim__echo` (MCP)'; f=$VO ;;
        esac
        echo "| $label | ${R[$kind,got]} | ${R[$kind,ok]} | ${R[$kind,http_error]} | ${R[$kind,rpc_error]} | ${R[$kind,tool_error]} | ${R[$kind,bad_body]} | $(status_of "$f" "$kind") |"
    done
    echo
    echo "| load generator | requests | req/s | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | socket errors (connect/read/write/timeout) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---|"
    for pair in "healthy mix:$HO" "victim:$VO"; do
        f=${pair#*:}
        echo "| ${pair%%:*} | $(wrkf "$f" requests) | $(awk -v r="$(wrkf "$f" requests)" -v d="$(wrkf "$f" duration_us)" 'BEGIN {printf "%.0f", r / (d / 1e6)}') | $(ms "$(wrkf "$f" p50_us)") | $(ms "$(wrkf "$f" p90_us)") | $(ms "$(wrkf "$f" p99_us)") | $(ms "$(wrkf "$f" max_us)") | $(wrkf "$f" connect)/$(wrkf "$f" read)/$(wrkf "$f" write)/$(wrkf "$f" timeout) |"
    done
    echo
    echo "| target | measured | verdict |"
    echo "|---|---:|---|"
    echo "| errors on the healthy upstream = 0 | $H_ERR of $H_GOT ($(pct "$H_ERR" "$H_GOT")) | $(verdict "$H_ERR_OK") |"
    echo "| RSS growth start → end ≤ 10 % | $(mib "$RSS_START") → $(mib "$RSS_END") MiB ($(growth "$RSS_START" "$RSS_END")) | $(verdict "$RSS_GROWTH_OK") |"
    echo "| (for reference) RSS under load, first → last sample | $(mib "$RSS_WARM") → $(mib "$RSS_LAST_LOADED") MiB ($(growth "$RSS_WARM" "$RSS_LAST_LOADED")) | $(verdict "$RSS_WARM_OK") (not a target) |"
    echo
    echo "- Requests served: $TOTAL_GOT in ${LOAD_S}s ($H_GOT healthy mix, ${R[v_echo,got]} victim), $H_OK healthy ok."
    echo "- Victim: $KILLS SIGKILLs at ${KILL_EVERY}s intervals, $KILL_MISSES times no victim process to kill;"
    echo "  error rate on the victim $(pct "$V_ERR" "${R[v_echo,got]}") (expected while it restarts)."
    echo "  At the end: status \`$V_STATUS_END\`, $V_ATTEMPTS_END connection attempts, breaker \`$V_BREAKER_END\`, last error: ${V_ERROR_END}."
    echo "- Healthy: status \`$H_STATUS_END\`, $H_ATTEMPTS_END connection attempt(s), breaker \`$H_BREAKER_END\`; fixture pid $HEALTHY_PID0 at start,"
    echo "  ${HEALTHY_PIDS_END:-none} at the end. The fixture counted $FIXTURE_CALLS tool calls; the gateway answered"
    echo "  $((H_TOOL_OK + CHECK_CALLS + 1)) successfully (wrk $H_TOOL_OK + $((CHECK_CALLS + 1)) checks); the difference is calls in flight when wrk stopped (≤ $HEALTHY_CONNS)."
    echo "- metamcp RSS (MiB): start $(mib "$RSS_START") (idle, upstreams connected, before load), first sample under load"
    echo "  $(mib "$RSS_WARM"), last under load $(mib "$RSS_LAST_LOADED") ($(growth "$RSS_WARM" "$RSS_LAST_LOADED") under load), right after the load $(mib "$RSS_LOADED"),"
    echo "  end $(mib "$RSS_END") (5 s after the load), max sampled $(mib "$RSS_MAX"), peak (VmHWM) $(mib "$RSS_HWM")."
    echo "- metamcp file descriptors $FDS_START → $FDS_END, threads $THREADS_START → $THREADS_END, zombie children at the end: $ZOMBIES_END;"
    echo "  victim processes alive at the end: ${VICTIM_PIDS_END:-none}."
    echo
    echo "Per window (RSS and load average sampled at the window's end; for the last window, 5 s after the load):"
    echo
    echo "| window | healthy ok | healthy errors | victim ok | victim errors | RSS at end (MiB) | load avg at end | kills |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    windows_table
    echo
    echo "metamcp's log (default level \`info\`): $LOG_LINES lines, $LOG_MIB MiB, of which $LOG_WARN_LINES WARN/ERROR."
    echo
    echo "<details><summary>metamcp warnings and errors, by message (numbers replaced by N)</summary>"
    echo
    echo '```'
    if [[ -n $LOG_SUMMARY ]]; then printf '%s\n' "$LOG_SUMMARY"; else echo "(none)"; fi
    echo '```'
    echo
    echo "</details>"
    if grep -q '^SOAK_SAMPLE ' "$HO" "$VO"; then
        echo
        echo "<details><summary>First response of each kind of failure</summary>"
        echo
        echo '```'
        cat "$HO" "$VO" | sed -n 's/^SOAK_SAMPLE //p' | sort | cut -c1-500
        echo '```'
        echo
        echo "</details>"
    fi
} >"$TMP/report.md"

mkdir -p "$(dirname "$OUT")"
cp "$TMP/report.md" "$OUT"
LOG_COPY=${OUT%.md}.gateway.log
# The victim's lifecycle, breaker transitions and anything else not per
# request; of the per-request lines, only the first few.
{
    sed 's/\x1b\[[0-9;]*m//g' "$TMP/gateway.log" |
        grep -E 'server="?victim|transition|gave up|ERROR|hangs' |
        grep -v 'rmcp::service: response error' || true
    echo "--- first 5 of $(grep -c 'rmcp::service: response error' "$TMP/gateway-warn.log" || true) 'rmcp::service: response error' lines:"
    grep -m5 'rmcp::service: response error' "$TMP/gateway-warn.log" || true
} >"$LOG_COPY"
cp "$TMP/kills.tsv" "${OUT%.md}.kills.tsv"
cp "$TMP/timeline.tsv" "${OUT%.md}.timeline.tsv"

echo
echo "== soak summary =="
echo "requests served: $TOTAL_GOT (healthy mix $H_GOT, victim ${R[v_echo,got]}) in ${LOAD_S}s"
for kind in h_echo h_count rest unattributed v_echo; do
    echo "  $kind: responses ${R[$kind,got]}, ok ${R[$kind,ok]}, errors $(errs_of "$kind")"
done
echo "socket errors: healthy mix $SOCK_H, victim $SOCK_V"
echo "error rate on healthy: $H_ERR / $H_GOT = $(pct "$H_ERR" "$H_GOT") (target 0: $(verdict "$H_ERR_OK"))"
echo "victim: $KILLS kills, $KILL_MISSES misses, status at end $V_STATUS_END ($V_ERROR_END)"
[[ -n $GAVE_UP ]] && echo "victim supervisor gave up: $GAVE_UP"
echo "RSS: start $(mib "$RSS_START") MiB, end $(mib "$RSS_END") MiB, max $(mib "$RSS_MAX") MiB, growth $(growth "$RSS_START" "$RSS_END") (target ≤ 10 %: $(verdict "$RSS_GROWTH_OK"))"
echo
cat "$TMP/report.md"
echo
log "Markdown written to $OUT; excerpt of metamcp's log in $LOG_COPY"
((H_ERR_OK && RSS_GROWTH_OK)) || exit 1
