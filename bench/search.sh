#!/usr/bin/env bash
# Tool-search benchmark (quality on the MetaTool and LiveMCPBench dev splits,
# latency with 10,000 tools). Not part of `cargo test`: it takes minutes.
#
#   bash bench/search.sh [quality|latency|all]
#
# On a shared machine, QUIET_CMD and RESUME_CMD (shell commands) run around
# the latency timings, e.g. to pause other jobs while they run.
#
# Builds the release binary, starts a fresh gateway per part (temporary data
# directory, the model from META_MCP_MODEL_DIR or the test cache), and runs
# bench/search.py against it over the REST API. Needs the test tools:
# eval "$(bash scripts/install-test-deps.sh)" provides the model and httpx.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
what=${1:-all}
eval "$(bash scripts/install-test-deps.sh 2>/dev/null)"
MODEL_DIR=${META_MCP_MODEL_DIR:-$METAMCP_TEST_MODEL_DIR}
PY=$METAMCP_TEST_PYTHON
DATA=${TOOLSEARCH_DATA:-$(cd .. && pwd)/shared/toolsearch}
cargo build --release --bin metamcp >&2
BIN=${CARGO_TARGET_DIR:-target}/release/metamcp

# The gateway's first admin, for bench/search.py to log in with.
export META_MCP_ADMIN_PASSWORD=${META_MCP_ADMIN_PASSWORD:-bench-$(python3 -c 'import secrets; print(secrets.token_hex(12))')}

PID=""
TMP=""
stop() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""; fi
  if [ -n "$TMP" ]; then rm -rf "$TMP"; TMP=""; fi
}
trap stop EXIT

start() { # extra env assignments...
  TMP=$(mktemp -d)
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  env -i PATH="$PATH" HOME="$HOME" META_MCP_PORT="$PORT" META_MCP_DATA_DIR="$TMP" \
    META_MCP_ADMIN_PASSWORD="$META_MCP_ADMIN_PASSWORD" \
    META_MCP_MODEL_DIR="$MODEL_DIR" META_MCP_LOGGING_LEVEL=warning "$@" \
    "$BIN" serve >"$TMP/log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/api/v1/health/live" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$TMP/log" >&2
  exit 1
}

if [ "$what" = quality ] || [ "$what" = all ]; then
  echo "== quality: MetaTool dev ($DATA)"
  start
  "$PY" bench/search.py quality --url "http://127.0.0.1:$PORT" --data "$DATA" ${DUMP:+--dump "$DUMP"}
  stop
  echo "== quality: LiveMCPBench dev"
  start
  "$PY" bench/search.py quality --livemcpbench --url "http://127.0.0.1:$PORT" --data "$DATA"
  stop
fi
if [ "$what" = latency ] || [ "$what" = all ]; then
  echo "== latency: 10,000 tools"
  start
  "$PY" bench/search.py latency --url "http://127.0.0.1:$PORT" --data "$DATA" --pid "$PID" \
    ${QUIET_CMD:+--quiet-cmd "$QUIET_CMD"} ${RESUME_CMD:+--resume-cmd "$RESUME_CMD"}
  stop
  echo "== memory without the model (META_MCP_EMBEDDING_PROVIDER=off), 10,000 tools"
  start META_MCP_EMBEDDING_PROVIDER=off
  "$PY" bench/search.py latency --url "http://127.0.0.1:$PORT" --data "$DATA" --pid "$PID" --requests 100 \
    ${QUIET_CMD:+--quiet-cmd "$QUIET_CMD"} ${RESUME_CMD:+--resume-cmd "$RESUME_CMD"} | grep -E "RSS|keyword"
  stop
fi
