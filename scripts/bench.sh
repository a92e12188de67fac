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
# As deploy.sh builds them: non-PIE (the yardstick too, so the ratios compare like with like),
# one build per set of features (cargo unifies features within a build). Everything (the
# default: Bedrock, MCP both ways, every protocol surface, both stores); "-both", what deploy.sh
# builds for a deployment on Redis with Bedrock and MCP tools in direct mode (the agents run in
# the request handler); and "-lean", for a deployment on Redis using neither.
# (Set for cargo lambda only: it passes --target, so build scripts and proc macros stay PIC.)
build() {
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C relocation-model=static" \
    cargo lambda build --release --locked --output-format zip "$@"
}
build -p request-handler -p agent-runner
build -p response-handler -p authorizer -p hello-world
build --lambda-dir target/lambda-both --no-default-features \
  --features request-handler/bedrock,request-handler/mcp,request-handler/redis,agent-runner/bedrock,agent-runner/mcp,agent-runner/redis \
  -p request-handler -p agent-runner
build --lambda-dir target/lambda-lean --no-default-features \
  --features request-handler/redis,agent-runner/redis,response-handler/redis \
  -p request-handler -p agent-runner -p response-handler
variants=()
for variant in both:request-handler both:agent-runner lean:request-handler lean:agent-runner lean:response-handler; do
  f=${variant#*:} kind=${variant%%:*}
  rm -rf "target/lambda/$f-$kind" && cp -r "target/lambda-$kind/$f" "target/lambda/$f-$kind"
  variants+=("$f-$kind")
done
for f in request-handler agent-runner response-handler authorizer hello-world "${variants[@]}"; do
  (cd "target/lambda/$f" && rm -f bootstrap && python3 -m zipfile -e bootstrap.zip . && chmod +x bootstrap)
done
cargo build --release --locked -p ak-local -p ak-tests --bin ak-local --bin ak-bench

log "measuring"
target/release/ak-bench --lambda-dir target/lambda --out target/bench/results.json "$@"
