#!/usr/bin/env bash
# The benchmark command: builds the release Lambda packages and tools, starts Redis and moto on
# loopback, and measures the performance budget (package size, cold start and memory, each also
# as a ratio to a hello-world lambda_runtime function built alike (benches/hello-world), chat
# overhead, what tracing adds, rest_sync latency, pipeline throughput). Prints a table; JSON in
# target/bench/.
#   scripts/bench.sh [--runs N] [--only functions|tracing|streaming|eventlog|redis|soak]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/services.sh
source "$ROOT/scripts/services.sh"
trap stop_services EXIT

start_services

log "building the release packages (cargo lambda build) and the bench tools"
# As deploy.sh builds them: each package on its own (-p), so features are not unified with the
# workspace's other members, and non-PIE (the yardstick too, so the ratios compare like with
# like). Everything (Bedrock, MCP, both stores), and lean: what deploy.sh builds for a deployment
# on Redis that uses neither Bedrock nor MCP.
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C relocation-model=static"
cargo lambda build --release --locked --output-format zip -p request-handler -p agent-runner
cargo lambda build --release --locked --output-format zip -p response-handler -p authorizer -p hello-world
cargo lambda build --release --locked --output-format zip --lambda-dir target/lambda-lean \
  --no-default-features --features request-handler/redis,agent-runner/redis,response-handler/redis \
  -p request-handler -p agent-runner -p response-handler
lean=(request-handler agent-runner response-handler)
for f in "${lean[@]}"; do
  rm -rf "target/lambda/$f-lean" && cp -r "target/lambda-lean/$f" "target/lambda/$f-lean"
done
for f in request-handler agent-runner response-handler authorizer hello-world "${lean[@]/%/-lean}"; do
  (cd "target/lambda/$f" && rm -f bootstrap && python3 -m zipfile -e bootstrap.zip . && chmod +x bootstrap)
done
cargo build --release --locked -p ak-local -p ak-tests --bin ak-local --bin ak-bench

log "measuring"
target/release/ak-bench --lambda-dir target/lambda --out target/bench/results.json "$@"
