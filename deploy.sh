#!/usr/bin/env bash
# Builds the four Lambda packages and deploys them with Terraform.
#
#   ./deploy.sh --build-only   build target/lambda/<function>/bootstrap.zip for each function
#
# Only the build step exists so far; the Terraform module is not written yet.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

FUNCTIONS=(request-handler agent-runner response-handler authorizer)

die() { echo "deploy.sh: $*" >&2; exit 1; }

build() {
  command -v cargo >/dev/null || die "cargo is missing: install Rust from https://rustup.rs"
  cargo lambda --version >/dev/null 2>&1 || die "cargo-lambda is missing: pip install cargo-lambda (it brings zig)"
  local bins=()
  for f in "${FUNCTIONS[@]}"; do bins+=(--bin "$f"); done
  cargo lambda build --release --output-format zip "${bins[@]}"
  for f in "${FUNCTIONS[@]}"; do
    [ -s "target/lambda/$f/bootstrap.zip" ] || die "target/lambda/$f/bootstrap.zip was not built"
    echo "built target/lambda/$f/bootstrap.zip"
  done
}

case "${1:-}" in
  --build-only) build ;;
  "") build; die "the Terraform module is not written yet: nothing was deployed" ;;
  *) die "unknown option $1 (known: --build-only)" ;;
esac
