#!/usr/bin/env bash
# The run command: the whole system on this machine with the embedded defaults — in-memory
# queues (rest_sync) and stores, and the offline model when OPENAI_API_KEY is not set. Any AK_
# variable you export yourself wins over these defaults, e.g. AK_EXECUTION__MODE=rest_async or
# AK_EXECUTION__MODE=direct. Extra arguments go to `ak-local serve` (e.g. --addr 127.0.0.1:9100).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "dev.sh: cargo is missing; install Rust from https://rustup.rs" >&2; exit 1; }

export AK_EXECUTION__QUEUES__INPUT__URL="${AK_EXECUTION__QUEUES__INPUT__URL:-memory://input}"
export AK_EXECUTION__QUEUES__OUTPUT__URL="${AK_EXECUTION__QUEUES__OUTPUT__URL:-memory://output}"
export AK_EXECUTION__RESPONSE_STORE__TYPE="${AK_EXECUTION__RESPONSE_STORE__TYPE:-memory}"
export AK_SESSION__TYPE="${AK_SESSION__TYPE:-in_memory}"

cargo build --quiet --release -p ak-local
exec target/release/ak-local serve "$@"
