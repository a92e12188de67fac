#!/usr/bin/env bash
# The run command: the system on this machine with the embedded defaults — in-memory queues and
# stores, and the offline model when OPENAI_API_KEY is not set. Any AK_ variable you export
# yourself wins over these defaults.
#
# For now the local server is not built yet: this prints the configuration it will run with.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export AK_EXECUTION__QUEUES__INPUT__URL="${AK_EXECUTION__QUEUES__INPUT__URL:-memory://input}"
export AK_EXECUTION__QUEUES__OUTPUT__URL="${AK_EXECUTION__QUEUES__OUTPUT__URL:-memory://output}"
export AK_EXECUTION__RESPONSE_STORE__TYPE="${AK_EXECUTION__RESPONSE_STORE__TYPE:-memory}"
export AK_SESSION__TYPE="${AK_SESSION__TYPE:-in_memory}"

command -v cargo >/dev/null || { echo "dev.sh: cargo is missing; install Rust from rustup.rs" >&2; exit 1; }
cargo build --quiet -p ak-local
echo "==> effective local configuration (ak-local config):" >&2
target/debug/ak-local config
echo "==> the local server (ak-local serve) is not implemented yet; the configuration above is what it will use." >&2
