#!/usr/bin/env bash
# One command from source to a running API:
#   1. check the tools (cargo, cargo-lambda with zig, terraform, AWS credentials);
#   2. build the four Lambda packages with `cargo lambda build --release --output-format zip`
#      for the architecture in terraform/deploy/terraform.tfvars, with config.yaml inside each,
#      each function with only the optional parts the deployment uses (Bedrock, MCP, the
#      protocol surfaces, the stores: see pick_features; it says which it picked and why), as
#      non-PIE executables;
#   3. terraform init and apply in terraform/deploy (which points at target/lambda/*/bootstrap.zip).
#
#   ./deploy.sh               build, then terraform apply
#   ./deploy.sh --build-only  build the packages only (no terraform, no AWS credentials needed)
#   ./deploy.sh --plan        build, then terraform plan (nothing is changed)
#   ./deploy.sh --x86_64      build for x86_64 instead of the tfvars architecture (also pass
#                             architecture = "x86_64" to terraform)
#   ./deploy.sh --destroy     terraform destroy
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

FUNCTIONS=(request-handler agent-runner response-handler authorizer)
DEPLOY_DIR=terraform/deploy
TFVARS="$DEPLOY_DIR/terraform.tfvars"

die() { echo "deploy.sh: $*" >&2; exit 1; }
step() { echo "==> $*" >&2; }

build_only=false plan=false destroy=false arch=""
for arg in "$@"; do
  case "$arg" in
    --build-only) build_only=true ;;
    --plan) plan=true ;;
    --destroy) destroy=true ;;
    --x86_64|--x86-64) arch=x86_64 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown option $arg (known: --build-only, --plan, --x86_64, --destroy)" ;;
  esac
done
if [ -z "$arch" ]; then
  arch=$(sed -n 's/^[[:space:]]*architecture[[:space:]]*=[[:space:]]*"\([a-z0-9_]*\)".*/\1/p' "$TFVARS" | head -n 1)
  arch=${arch:-arm64}
fi
case "$arch" in
  arm64) target_flag=--arm64 rust_target=aarch64-unknown-linux-gnu ;;
  x86_64) target_flag=--x86-64 rust_target=x86_64-unknown-linux-gnu ;;
  *) die "architecture \"$arch\" in $TFVARS: use arm64 or x86_64" ;;
esac

check_build_tools() {
  command -v cargo >/dev/null || die "cargo is missing: install Rust from https://rustup.rs"
  if ! cargo lambda --version >/dev/null 2>&1; then
    if [ -x .tools/venv/bin/cargo-lambda ]; then
      export PATH="$PWD/.tools/venv/bin:$PATH"
    else
      die "cargo-lambda is missing: pip install cargo-lambda (it brings zig), or run scripts/test.sh once"
    fi
  fi
  if ! command -v zig >/dev/null 2>&1 && ! command -v python-zig >/dev/null 2>&1 \
     && ! python3 -c 'import ziglang' >/dev/null 2>&1; then
    die "zig is missing (cargo-lambda cross-compiles with it): pip install ziglang"
  fi
}

check_deploy_tools() {
  command -v terraform >/dev/null || die "terraform is missing: install it from https://developer.hashicorp.com/terraform/install"
  if command -v aws >/dev/null 2>&1; then
    aws sts get-caller-identity >/dev/null 2>&1 \
      || die "no usable AWS credentials: run 'aws configure' (or set AWS_PROFILE / AWS_ACCESS_KEY_ID)"
  elif [ -z "${AWS_ACCESS_KEY_ID:-}" ] && [ -z "${AWS_PROFILE:-}" ] && [ ! -f "$HOME/.aws/credentials" ]; then
    die "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or install the AWS CLI and run 'aws configure')"
  fi
}

# The optional parts each function is built with: only those this deployment uses (FEATURES,
# with the reason for each in FEATURES_WHY):
#   bedrock       Bedrock as the model provider (model.provider in config.yaml, or model_provider
#                 in terraform.tfvars): the agent runner, and the request handler in direct mode
#   mcp           tools from MCP servers (mcp.servers in config.yaml): likewise
#   mcp-endpoint  the agents as an MCP server (mcp_endpoint in terraform.tfvars): request handler
#   openai agui ai-sdk a2a
#                 the protocol surfaces routed (protocol_endpoints in terraform.tfvars): request
#                 handler
#   redis dynamodb
#                 the stores (the type of response_store and session_store in terraform.tfvars,
#                 which the module sets on the functions; dynamodb when unset, as in the module)
# AK_FEATURES="bedrock mcp redis ..." (or "") overrides the choice; naming no store means both.
pick_features() {
  if [ -n "${AK_FEATURES+x}" ]; then
    FEATURES=$AK_FEATURES
    FEATURES_WHY="AK_FEATURES"
    return
  fi
  local picked
  picked=$(python3 - config.yaml "$TFVARS" <<'PY'
import re, sys

def lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except OSError:
        return []

why = {}
def need(feature, reason):
    why.setdefault(feature, []).append(reason)

section, servers_at = None, None
for raw in lines(sys.argv[1]):
    line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
    if not line.strip():
        continue
    indent = len(line) - len(line.lstrip())
    text = line.strip()
    if indent == 0:
        section, servers_at = text.split(":", 1)[0].strip(), None
        continue
    if section == "model" and re.fullmatch(r"provider:\s*[\"']?bedrock[\"']?", text):
        need("bedrock", "model.provider in config.yaml")
    if section == "mcp":
        listed = re.fullmatch(r"servers:\s*(.*)", text)
        if listed:
            servers_at = indent
            if listed.group(1).strip() not in ("", "[]"):
                need("mcp", "mcp.servers in config.yaml")
        elif servers_at is not None and indent >= servers_at and text.startswith("- "):
            need("mcp", "mcp.servers in config.yaml")
tfvars = "\n".join(re.sub(r"#.*$", "", raw) for raw in lines(sys.argv[2]))
if re.search(r'(?m)^\s*model_provider\s*=\s*"bedrock"', tfvars):
    need("bedrock", "model_provider in terraform.tfvars")
if re.search(r"(?m)^\s*mcp_endpoint\s*=\s*true", tfvars):
    need("mcp-endpoint", "mcp_endpoint in terraform.tfvars")
surfaces = re.search(r"(?ms)^\s*protocol_endpoints\s*=\s*\[(.*?)\]", tfvars)
for surface in re.findall(r'"([a-z0-9-]+)"', surfaces.group(1) if surfaces else ""):
    need(surface, "protocol_endpoints in terraform.tfvars")

def block(name):
    """The body of `name = { ... }` in terraform.tfvars ("" when absent)."""
    found = re.search(r"(?m)^\s*" + name + r"\s*=\s*\{", tfvars)
    if not found:
        return ""
    depth, at = 1, found.end()
    while at < len(tfvars) and depth:
        depth += {"{": 1, "}": -1}.get(tfvars[at], 0)
        at += 1
    return tfvars[found.end():at]

def field(body, key, default):
    found = re.search(r"\b" + key + r"\s*=\s*\"?([A-Za-z_]+)", body)
    return found.group(1) if found else default

mode = re.search(r'(?m)^\s*execution_mode\s*=\s*"(\w+)"', tfvars)
direct = (mode.group(1) if mode else "rest_sync") == "direct"
response = block("response_store")
if not direct or field(response, "in_direct_mode", "true") != "false":
    need(field(response, "type", "dynamodb"), "response_store in terraform.tfvars")
need(field(block("session_store"), "type", "dynamodb"), "session_store in terraform.tfvars")
order = ["bedrock", "mcp", "mcp-endpoint", "openai", "agui", "ai-sdk", "a2a", "redis", "dynamodb"]
print(" ".join(f for f in order if f in why) + (" direct" if direct else ""))
print("; ".join(f"{f}: {', '.join(dict.fromkeys(why[f]))}" for f in order if f in why))
PY
) || die "cannot read config.yaml and $TFVARS to pick the features"
  FEATURES=$(sed -n 1p <<<"$picked")
  FEATURES_WHY=$(sed -n 2p <<<"$picked")
}

build() {
  check_build_tools
  pick_features
  local direct=true handler=() runner=() stores=() f
  if [ "$FEATURES_WHY" != AK_FEATURES ]; then
    case " $FEATURES " in *" direct "*) ;; *) direct=false ;; esac
    FEATURES=${FEATURES% direct}
  fi
  case " $FEATURES " in
    *" redis "*|*" dynamodb "*) ;;
    *) FEATURES="${FEATURES:+$FEATURES }redis dynamodb" ;;
  esac
  for f in $FEATURES; do
    case "$f" in
      bedrock|mcp)
        runner+=("agent-runner/$f")
        # The request handler runs agents in direct mode only.
        if $direct; then handler+=("request-handler/$f"); fi ;;
      mcp-endpoint|openai|agui|ai-sdk|a2a) handler+=("request-handler/$f") ;;
      redis|dynamodb)
        stores+=("response-handler/$f")
        handler+=("request-handler/$f") runner+=("agent-runner/$f") ;;
      *) die "unknown feature $f (known: bedrock, mcp, mcp-endpoint, openai, agui, ai-sdk, a2a, redis, dynamodb)" ;;
    esac
  done
  step "features: $FEATURES ($FEATURES_WHY)"
  step "  request handler: ${handler[*]#*/}; agent runner: ${runner[*]#*/}; response handler: ${stores[*]#*/}"
  step "building ${FUNCTIONS[*]} for $arch (config.yaml included)"
  # Non-PIE executables (relocation-model=static): the loader has no relocations to apply at
  # cold start (~27,000 in the request handler), so it starts sooner and with ~0.9 MiB less
  # resident (docs/performance.md#lean-functions). Only the target's code gets it (--target).
  export "CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$rust_target")_RUSTFLAGS=-C relocation-model=static"
  # One package per build where features differ: cargo unifies a shared crate's features
  # across the packages of one build.
  local args=(--release --output-format zip "$target_flag" --include config.yaml --no-default-features)
  cargo lambda build "${args[@]}" --features "$(IFS=,; echo "${handler[*]}")" -p request-handler
  cargo lambda build "${args[@]}" --features "$(IFS=,; echo "${runner[*]}")" -p agent-runner
  cargo lambda build "${args[@]}" --features "$(IFS=,; echo "${stores[*]}")" -p response-handler -p authorizer
  for f in "${FUNCTIONS[@]}"; do
    local zip="target/lambda/$f/bootstrap.zip"
    [ -s "$zip" ] || die "$zip was not built"
    python3 -m zipfile -l "$zip" | grep -q 'config.yaml' || die "$zip does not contain config.yaml"
    step "built $zip ($(stat -c %s "$zip") bytes)"
  done
}

if $destroy; then
  check_deploy_tools
  terraform -chdir="$DEPLOY_DIR" init -input=false
  terraform -chdir="$DEPLOY_DIR" destroy
  exit 0
fi

build
$build_only && exit 0

check_deploy_tools
step "terraform init"
terraform -chdir="$DEPLOY_DIR" init -input=false
if $plan; then
  step "terraform plan"
  terraform -chdir="$DEPLOY_DIR" plan -var "architecture=$arch"
else
  step "terraform apply"
  terraform -chdir="$DEPLOY_DIR" apply -var "architecture=$arch"
  step "chat endpoint: $(terraform -chdir="$DEPLOY_DIR" output -raw agent_invoke_url)"
fi
