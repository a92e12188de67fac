#!/usr/bin/env bash
# The test command: installs what the tests need (Redis, moto, cargo-lambda, Chromium and
# chromedriver, shellcheck, checkov, schemathesis), starts Redis and moto on free loopback ports, checks formatting
# and lints, runs every test against the real services, holds ak-local to docs/openapi.yaml
# (scripts/schemathesis.sh), checks the feature combinations deploy.sh can build, checks the
# scripts and the Terraform module offline,
# builds the four Lambda packages with deploy.sh, and stops exactly what it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/services.sh
source "$ROOT/scripts/services.sh"
trap stop_services EXIT

start_services
install_chromium

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "the functions as deploy.sh builds them for the shipped settings (dynamodb, no aws-config), for tests/suites/deployed.rs"
# In one build cargo unifies the workspace's features, so the suite's own binaries have every
# feature; these are built first and set apart (the next build puts the full ones back).
cargo build --locked -p request-handler -p agent-runner -p response-handler --no-default-features \
  --features request-handler/dynamodb,agent-runner/dynamodb,response-handler/dynamodb
mkdir -p target/deployed
cp target/debug/request-handler target/debug/agent-runner target/debug/response-handler target/deployed/
export TEST_DEPLOYED_BINARIES="$ROOT/target/deployed"

log "build the function binaries (the smoke tests run them)"
cargo build --workspace --bins --locked

log "tests (the playground's screenshot goes to target/playground.png)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

log "the HTTP contract: schemathesis with docs/openapi.yaml against ak-local (direct, rest_async)"
"$ROOT/scripts/schemathesis.sh"

log "feature combinations deploy.sh builds besides the default (see pick_features there): clippy, and the unit tests of the crates they change"
for combo in "redis" "dynamodb openai agui" "bedrock mcp redis" "mcp-endpoint ai-sdk a2a dynamodb"; do
  handler=() others=() crates=()
  for f in $combo; do
    case "$f" in
      bedrock|mcp) handler+=("request-handler/$f") others+=("agent-runner/$f") crates+=("ak-agents/$f") ;;
      mcp-endpoint) handler+=("request-handler/$f") crates+=(ak-http/mcp) ;;
      openai|agui|ai-sdk|a2a) handler+=("request-handler/$f") crates+=("ak-http/$f") ;;
      redis|dynamodb)
        handler+=("request-handler/$f") others+=("agent-runner/$f" "response-handler/$f")
        crates+=("ak-adapters/$f") ;;
    esac
  done
  log "  features: $combo"
  # The request handler on its own: in one build cargo would unify the agent runner's features
  # into the crates they share.
  cargo clippy --locked -p request-handler --no-default-features \
    --features "$(IFS=,; echo "${handler[*]}")" -- -D warnings
  cargo clippy --locked -p agent-runner -p response-handler --no-default-features \
    --features "$(IFS=,; echo "${others[*]}")" -- -D warnings
  cargo test --locked -q -p ak-agents -p ak-http -p ak-adapters --no-default-features \
    --features "$(IFS=,; echo "${crates[*]}")" --lib
done
log "  ak-core without the otel feature (tracing compiled out)"
cargo clippy --locked -p ak-core --no-default-features -- -D warnings
cargo test --locked -q -p ak-core --no-default-features --lib

log "what deploy.sh builds each function with, for settings written every way Terraform reads them"
python3 tests/deploy/test_pick_features.py

log "shell scripts: bash -n and shellcheck"
install_shellcheck
for script in scripts/*.sh deploy.sh .ci/run; do bash -n "$script"; done
shellcheck -x scripts/*.sh deploy.sh .ci/run

log "terraform: fmt, the module's decisions (terraform test, no provider needed), checkov"
if command -v terraform >/dev/null 2>&1; then
  terraform fmt -check -recursive terraform
  (
    cd terraform/modules/decisions
    export TF_DATA_DIR="$RUN_DIR/tf-decisions"
    terraform init -backend=false -input=false >/dev/null
    terraform test -no-color
  )
else
  log "terraform is not installed here: skipping terraform fmt and terraform test"
fi
install_checkov
"$TOOLS/checkov/bin/checkov" -d terraform --quiet --compact --skip-download --framework terraform

disk_report() { log "disk: target/ holds $(du -sh target 2>/dev/null | cut -f1), $(df -h . | awk 'NR==2 {print $4}') free"; }
disk_report
log "deploy.sh --build-only (the four packages, as deployed)"
# The default architecture is arm64; without its Rust target (it is a download) build x86_64.
if rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$'; then
  ./deploy.sh --build-only
else
  log "the aarch64 Rust target is not installed: packaging for x86_64 instead"
  ./deploy.sh --build-only --x86_64
fi
disk_report
log "all checks passed"
