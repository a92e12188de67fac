#!/usr/bin/env bash
# The HTTP contract check: runs schemathesis (pinned, from PyPI) with docs/openapi.yaml against
# ak-local in direct mode and in rest_async mode (in-memory queues and store, the offline model).
# It fails on any 5xx, on a status, header or content type the document does not list, on a
# response that does not match its schema, and on a schema-violating request that is accepted.
# Prints one line per run with the number of generated test cases.
#
# Needs target/debug/ak-local (scripts/test.sh builds it first). Environment:
#   SCHEMATHESIS_MAX_EXAMPLES  examples per operation and phase (default 100)
#   SCHEMATHESIS_SEED          the generator's seed (default 1; fixed so CI is repeatable)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/services.sh
source "$ROOT/scripts/services.sh"

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-100}
SEED=${SCHEMATHESIS_SEED:-1}
BIN="$ROOT/target/debug/ak-local"
[ -x "$BIN" ] || { log "schemathesis.sh: $BIN is missing; run cargo build --bins first"; exit 1; }

install_schemathesis() {
  local venv="$TOOLS/schemathesis" stamp="$TOOLS/schemathesis/.version"
  if [ -x "$venv/bin/schemathesis" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$SCHEMATHESIS_VERSION" ]; then
    return 0
  fi
  log "installing schemathesis $SCHEMATHESIS_VERSION into .tools/schemathesis"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  echo "$SCHEMATHESIS_VERSION" >"$stamp"
}

# The servers started here are stopped, and the run directory removed, by services.sh's
# stop_services.
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ak-schemathesis.XXXXXX")
trap stop_services EXIT

# Starts ak-local with the given AK_ settings (NAME=VALUE ...) on a free port; sets PORT.
start_ak_local() {
  local name=$1; shift
  PORT=$(free_port)
  env -u OPENAI_API_KEY "$@" "$BIN" serve --addr "127.0.0.1:$PORT" >"$RUN_DIR/$name.log" 2>&1 &
  STARTED_PIDS+=($!)
  wait_for_port "$PORT" "$name" $!
}

# Runs schemathesis; $1 names the run, the rest are extra schemathesis arguments.
run_schemathesis() {
  local label=$1; shift
  local out="$RUN_DIR/$label.txt" status=0
  # The working directory holds schemathesis's cache, so it is the run directory, not the repo.
  (cd "$RUN_DIR" && "$TOOLS/schemathesis/bin/schemathesis" \
    --config-file "$ROOT/tests/schemathesis/schemathesis.toml" \
    run "$ROOT/docs/openapi.yaml" --url "http://127.0.0.1:$PORT" --checks all \
    --max-examples "$MAX_EXAMPLES" --seed "$SEED" --workers 1 --request-timeout 30 \
    --no-color "$@") >"$out" 2>&1 || status=$?
  local cases tested
  cases=$(grep -Eo '^ *[0-9]+ generated' "$out" | grep -Eo '[0-9]+' | tail -1 || true)
  tested=$(grep -Eo '^ *Tested: [0-9]+' "$out" | grep -Eo '[0-9]+' | tail -1 || true)
  if [ "$status" -ne 0 ]; then
    log "schemathesis $label: FAILED (${cases:-?} generated test cases); its report:"
    cat "$out" >&2
    return 1
  fi
  log "schemathesis $label: ${cases:-?} generated test cases over ${tested:-?} operations, all passed"
}

install_schemathesis
# Every AK_ variable of the caller's shell is dropped so the runs see the embedded defaults.
while IFS='=' read -r name _; do
  case "${name^^}" in AK_*) unset "$name" ;; esac
done < <(env)

failed=0
for mode in direct rest_async; do
  if [ "$mode" = direct ]; then
    start_ak_local "$mode" AK_EXECUTION__MODE=direct
  else
    start_ak_local "$mode" AK_EXECUTION__MODE=rest_async \
      AK_EXECUTION__QUEUES__INPUT__URL=memory://input AK_EXECUTION__QUEUES__OUTPUT__URL=memory://output \
      AK_EXECUTION__RESPONSE_STORE__TYPE=memory AK_SESSION__TYPE=in_memory
  fi
  # The chat API, streams and example routes; MCP separately, with the Accept header its
  # transport requires (as a header on every request it would turn chat answers into streams).
  run_schemathesis "$mode (HTTP API)" --exclude-path-regex '/mcp$' || failed=1
  run_schemathesis "$mode (MCP)" --include-path-regex '/mcp$' \
    -H 'Accept: application/json, text/event-stream' --phases examples,coverage,fuzzing || failed=1
done
exit "$failed"
