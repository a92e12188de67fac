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
  command -v redis-server >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1 && return 0
  log "installing redis-server and openssl (Debian)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends redis-server openssl >/dev/null
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

# The Node clients of the tests (tests/clients/js: the official SDKs of the protocols the API
# serves), exactly as its lockfile pins them; reinstalled only when the lockfile changes.
install_js_clients() {
  local dir="$ROOT/tests/clients/js" stamp="$ROOT/tests/clients/js/node_modules/.ak-lock"
  if [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1; then
    log "installing nodejs and npm (Debian)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  log "installing the Node test clients (npm ci in tests/clients/js)"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp "$dir/package-lock.json" "$stamp"
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
  install_js_clients
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

  # Redis as AWS runs it: over TLS only (certificates made here: a CA, a server certificate for
  # localhost and 127.0.0.1, and a second CA that must be refused), and in cluster mode, one
  # node owning every slot, without the commands ElastiCache Serverless refuses.
  make_test_certificates "$RUN_DIR/tls"
  local tls_port cluster_port
  tls_port=$(free_port)
  redis-server --bind 127.0.0.1 --port 0 --tls-port "$tls_port" \
    --tls-cert-file "$RUN_DIR/tls/server.crt" --tls-key-file "$RUN_DIR/tls/server.key" \
    --tls-ca-cert-file "$RUN_DIR/tls/ca.crt" --tls-auth-clients no \
    --save '' --appendonly no --daemonize no --logfile "$RUN_DIR/redis-tls.log" --dir "$RUN_DIR" &
  STARTED_PIDS+=($!)
  wait_for_port "$tls_port" redis-tls $!
  cluster_port=$(free_port)
  mkdir -p "$RUN_DIR/cluster"
  redis-server --bind 127.0.0.1 --port "$cluster_port" --cluster-enabled yes \
    --cluster-config-file "$RUN_DIR/cluster/nodes.conf" --cluster-port "$(free_port)" \
    --rename-command PSUBSCRIBE "" --rename-command PUNSUBSCRIBE "" \
    --rename-command CONFIG "" --rename-command KEYS "" \
    --save '' --appendonly no --daemonize no --logfile "$RUN_DIR/redis-cluster.log" \
    --dir "$RUN_DIR/cluster" &
  STARTED_PIDS+=($!)
  wait_for_port "$cluster_port" redis-cluster $!
  redis-cli -p "$cluster_port" cluster addslotsrange 0 16383 >/dev/null
  wait_for_cluster "$cluster_port"

  # Node-based cluster mode with several shards: three nodes, the slots split between them.
  local node nodes=()
  for node in 1 2 3; do
    local port
    port=$(free_port)
    mkdir -p "$RUN_DIR/cluster3/$port"
    redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
      --cluster-config-file "$RUN_DIR/cluster3/$port/nodes.conf" --cluster-port "$(free_port)" \
      --save '' --appendonly no --daemonize no --logfile "$RUN_DIR/cluster3/$port/redis.log" \
      --dir "$RUN_DIR/cluster3/$port" &
    STARTED_PIDS+=($!)
    wait_for_port "$port" "redis-cluster-node-$node" $!
    nodes+=("127.0.0.1:$port")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$RUN_DIR/cluster3/create.log" 2>&1
  wait_for_cluster "${nodes[0]#127.0.0.1:}"

  # An MCP server written with the Python MCP SDK (tests/mcp/tools_server.py): two tools.
  local mcp_port
  mcp_port=$(free_port)
  "$VENV/bin/python" "$ROOT/tests/mcp/tools_server.py" "$mcp_port" >"$RUN_DIR/mcp.log" 2>&1 &
  STARTED_PIDS+=($!)
  wait_for_port "$mcp_port" mcp $!

  export TEST_MCP_URL="http://127.0.0.1:$mcp_port/mcp"
  export TEST_PYTHON="$VENV/bin/python"
  export TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
  export TEST_REDIS_TLS_URL="rediss://localhost:$tls_port"
  export TEST_REDIS_TLS_CA="$RUN_DIR/tls/ca.crt"
  export TEST_REDIS_TLS_WRONG_CA="$RUN_DIR/tls/wrong-ca.crt"
  export TEST_REDIS_CLUSTER_URL="redis://127.0.0.1:$cluster_port"
  export TEST_REDIS_CLUSTER3_URL="redis://${nodes[0]}"
  export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
  export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  unset AWS_PROFILE AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE
  export AWS_EC2_METADATA_DISABLED=true
  log "redis on $TEST_REDIS_URL (TLS: $TEST_REDIS_TLS_URL, cluster mode: $TEST_REDIS_CLUSTER_URL), moto (SQS, DynamoDB) on $AWS_ENDPOINT_URL, MCP tools on $TEST_MCP_URL"
}

# A test CA, a server certificate it signed for localhost and 127.0.0.1, and a second CA that
# signed nothing (for the "wrong CA" test), in $1.
make_test_certificates() {
  local dir=$1
  mkdir -p "$dir"
  (
    cd "$dir" || exit 1
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
      -subj "/CN=ak test CA" 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -keyout wrong-ca.key -out wrong-ca.crt -days 30 \
      -subj "/CN=ak wrong CA" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
      -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out server.crt -days 30 -extfile server.ext 2>/dev/null
  )
}

# Waits until the cluster-mode node on port $1 says its slots are served.
wait_for_cluster() {
  local port=$1 _
  for _ in $(seq 1 100); do
    if redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then return 0; fi
    sleep 0.1
  done
  log "the cluster-mode redis-server on $port did not come up"; return 1
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
