#!/usr/bin/env bash
# The test command: installs what the tests need (Redis, moto, cargo-lambda), starts Redis and
# moto on free loopback ports, checks formatting and lints, runs every test against the real
# services, checks that each Lambda function packages, and stops exactly what it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/services.sh
source "$ROOT/scripts/services.sh"
trap stop_services EXIT

# Configuration from the caller's shell must not leak into the tests.
while IFS='=' read -r name _; do
  case "${name^^}" in AK_*) unset "$name" ;; esac
done < <(env)

start_services
export PATH="$VENV/bin:$PATH"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "build the function binaries (the smoke tests run them)"
cargo build --workspace --bins --locked

log "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

log "cargo lambda build (the four function packages)"
cargo lambda build --release --locked --output-format zip \
  --bin request-handler --bin agent-runner --bin response-handler --bin authorizer
for f in request-handler agent-runner response-handler authorizer; do
  zip="target/lambda/$f/bootstrap.zip"
  [ -s "$zip" ] || { log "missing $zip"; exit 1; }
  printf '    %-18s %s bytes\n' "$f" "$(stat -c %s "$zip")" >&2
done
log "all checks passed"
