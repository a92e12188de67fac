# shellcheck shell=bash
# Shared by scripts/test.sh and scripts/bench.sh (sourced, not run): installs the local stand-ins
# for AWS and starts them on free loopback ports, remembering each PID so that exactly what was
# started gets stopped.
#
# After `start_services`: TEST_REDIS_URL, AWS_ENDPOINT_URL (moto: SQS and DynamoDB), TEST_MCP_URL
# (an MCP server of the Python SDK), TEST_PYTHON (the venv's python) and dummy AWS credentials
# are exported, the venv's tools (cargo-lambda, zig) are on PATH, and no AK_
# variable of the caller's shell is left to leak into what runs. `stop_services` (run from an
# EXIT trap) stops them.

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
RUN_DIR=""
STARTED_PIDS=()

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_redis() {
  command -v redis-server >/dev/null 2>&1 && return 0
  log "installing redis-server (Debian)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends redis-server >/dev/null
}

# Headless Chromium and its WebDriver for the playground's browser test (Debian's packages).
install_chromium() {
  command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 && return 0
  log "installing chromium and chromium-driver (Debian)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver fonts-dejavu-core >/dev/null
}

# The venv is rebuilt only when scripts/requirements-test.txt changes.
install_python_tools() {
  local req="$ROOT/scripts/requirements-test.txt" stamp="$VENV/.requirements"
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
    return 0
  fi
  log "installing Python test tools into .tools/venv (moto, cargo-lambda)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for_port() {
  local port=$1 name=$2 pid=$3 _
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited during start-up; its log:"; cat "$RUN_DIR/$name.log" >&2 || true
      return 1
    fi
    sleep 0.1
  done
  log "$name did not listen on 127.0.0.1:$port within 15 s"; return 1
}

start_services() {
  install_redis
  install_python_tools
  export PATH="$VENV/bin:$PATH"
  local name
  while IFS='=' read -r name _; do
    case "${name^^}" in AK_*) unset "$name" ;; esac
  done < <(env)
  RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ak-services.XXXXXX")

  local redis_port moto_port
  redis_port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --daemonize no --logfile "$RUN_DIR/redis.log" --dir "$RUN_DIR" &
  STARTED_PIDS+=($!)
  wait_for_port "$redis_port" redis $!

  moto_port=$(free_port)
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$RUN_DIR/moto.log" 2>&1 &
  STARTED_PIDS+=($!)
  wait_for_port "$moto_port" moto $!

  # An MCP server written with the Python MCP SDK (tests/mcp/tools_server.py): two tools.
  local mcp_port
  mcp_port=$(free_port)
  "$VENV/bin/python" "$ROOT/tests/mcp/tools_server.py" "$mcp_port" >"$RUN_DIR/mcp.log" 2>&1 &
  STARTED_PIDS+=($!)
  wait_for_port "$mcp_port" mcp $!

  export TEST_MCP_URL="http://127.0.0.1:$mcp_port/mcp"
  export TEST_PYTHON="$VENV/bin/python"
  export TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
  export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
  export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  unset AWS_PROFILE AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE
  export AWS_EC2_METADATA_DISABLED=true
  log "redis on $TEST_REDIS_URL, moto (SQS, DynamoDB) on $AWS_ENDPOINT_URL, MCP tools on $TEST_MCP_URL"
}

stop_services() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  STARTED_PIDS=()
  [ -n "$RUN_DIR" ] && rm -rf "$RUN_DIR"
  RUN_DIR=""
}

# Tools for the infrastructure checks: shellcheck (Debian) and checkov (PyPI, own venv, pinned).
CHECKOV_VERSION=3.3.30
install_shellcheck() {
  command -v shellcheck >/dev/null 2>&1 && return 0
  log "installing shellcheck (Debian)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
}

install_checkov() {
  local venv="$TOOLS/checkov" stamp="$TOOLS/checkov/.version"
  if [ -x "$venv/bin/checkov" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$CHECKOV_VERSION" ]; then
    return 0
  fi
  log "installing checkov $CHECKOV_VERSION into .tools/checkov"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
  echo "$CHECKOV_VERSION" >"$stamp"
}
