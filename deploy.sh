#!/usr/bin/env bash
# One command from source to a running API:
#   1. check the tools (cargo, cargo-lambda with zig, terraform, AWS credentials);
#   2. build the four Lambda packages with `cargo lambda build --release --output-format zip`
#      for the architecture the Terraform variables set (TF_VAR_architecture, terraform.tfvars,
#      *.auto.tfvars; arm64 by default), with config.yaml inside each,
#      each function with only the optional parts the deployment uses (Bedrock, MCP, the
#      protocol surfaces, the stores: see pick_features; it says which it picked and why), as
#      non-PIE executables;
#   3. terraform init and apply in terraform/deploy (which points at target/lambda/*/bootstrap.zip).
#
#   ./deploy.sh               build, then terraform apply
#   ./deploy.sh --build-only  build the packages only (no terraform, no AWS credentials needed)
#   ./deploy.sh --plan        build, then terraform plan (nothing is changed)
#   ./deploy.sh --x86_64      build for x86_64 instead of the variables' architecture (also pass
#                             architecture = "x86_64" to terraform)
#   ./deploy.sh --destroy     terraform destroy
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

FUNCTIONS=(request-handler agent-runner response-handler authorizer)
DEPLOY_DIR=terraform/deploy

die() { echo "deploy.sh: $*" >&2; exit 1; }
step() { echo "==> $*" >&2; }

build_only=false plan=false destroy=false arch=""
for arg in "$@"; do
  case "$arg" in
    --build-only) build_only=true ;;
    --plan) plan=true ;;
    --destroy) destroy=true ;;
    --x86_64|--x86-64) arch=x86_64 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown option $arg (known: --build-only, --plan, --x86_64, --destroy)" ;;
  esac
done
arch_source="--x86_64"
if [ -z "$arch" ]; then
  command -v python3 >/dev/null || die "python3 is missing (deploy.sh reads the settings with it)"
  # As Terraform reads it: TF_VAR_architecture, terraform.tfvars(.json), *.auto.tfvars(.json).
  arch_and_source=$(python3 scripts/pick_features.py --architecture "$DEPLOY_DIR") \
    || die "cannot read the architecture from the Terraform variables in $DEPLOY_DIR (see above; --x86_64 builds for x86_64 without reading it)"
  { IFS= read -r arch; IFS= read -r arch_source; } <<<"$arch_and_source"
fi
case "$arch" in
  arm64) target_flag=--arm64 rust_target=aarch64-unknown-linux-gnu ;;
  x86_64) target_flag=--x86-64 rust_target=x86_64-unknown-linux-gnu ;;
  *) die "architecture \"$arch\" (from $arch_source in $DEPLOY_DIR): use arm64 or x86_64" ;;
esac

check_build_tools() {
  command -v cargo >/dev/null || die "cargo is missing: install Rust from https://rustup.rs"
  command -v python3 >/dev/null || die "python3 is missing (deploy.sh reads the settings with it)"
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

# The optional parts each function is built with: only those this deployment uses, as
# scripts/pick_features.py reads them from the Terraform variables (TF_VAR_*, terraform.tfvars,
# *.auto.tfvars) and config.yaml — bedrock and mcp (MCP tools) in the agent runner and, in direct
# mode, the request handler; mcp-endpoint and the protocol surfaces (openai, agui, ai-sdk, a2a)
# in the request handler; the stores (redis, dynamodb) in all three. It says which and why.
# AK_FEATURES="bedrock mcp dynamodb ..." (or "") replaces the choice for every function; naming
# no store means both, and a feature the settings need but AK_FEATURES leaves out is warned of.
build() {
  check_build_tools
  local picked
  picked=$(python3 scripts/pick_features.py config.yaml "$DEPLOY_DIR" ${AK_FEATURES+"$AK_FEATURES"}) \
    || die "cannot pick the features from config.yaml and the Terraform variables (see above)"
  local handler runner responses why
  handler=$(sed -n 's/^request-handler: //p' <<<"$picked")
  runner=$(sed -n 's/^agent-runner: //p' <<<"$picked")
  responses=$(sed -n 's/^response-handler: //p' <<<"$picked")
  why=$(sed -n 's/^why: //p' <<<"$picked")
  step "features: $why"
  step "  request handler: ${handler:-none}; agent runner: ${runner:-none}; response handler: ${responses:-none}"
  step "building ${FUNCTIONS[*]} for $arch (from $arch_source; config.yaml included)"
  # Non-PIE executables (relocation-model=static): the loader has no relocations to apply at
  # cold start (~27,000 in the request handler), so it starts sooner and with ~0.9 MiB less
  # resident (docs/performance.md#lean-functions). Only the target's code gets it (cargo lambda
  # passes --target), not build scripts and proc macros, which must stay position-independent.
  # A value of your own for the variable is used as it is (empty: position-independent).
  local rustflags set_here=false
  rustflags="CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$rust_target")_RUSTFLAGS"
  if [ -z "${!rustflags+x}" ]; then
    export "$rustflags=-C relocation-model=static"
    set_here=true
  else
    step "$rustflags is set: building with \"${!rustflags}\""
  fi
  # One package per build where features differ: cargo unifies a shared crate's features
  # across the packages of one build.
  # The zips go to target/lambda, where terraform/deploy looks for them, even when cargo's
  # target directory is elsewhere (CARGO_TARGET_DIR, build.target-dir); old ones are removed
  # first, so a build that fails cannot leave a stale package to be deployed.
  local f
  for f in "${FUNCTIONS[@]}"; do rm -f "target/lambda/$f/bootstrap.zip"; done
  local args=(--release --output-format zip "$target_flag" --include config.yaml --no-default-features
    --lambda-dir target/lambda)
  features() { local f out=(); for f in $2; do out+=("$1/$f"); done; (IFS=,; echo "${out[*]}"); }
  cargo lambda build "${args[@]}" --features "$(features request-handler "$handler")" -p request-handler
  cargo lambda build "${args[@]}" --features "$(features agent-runner "$runner")" -p agent-runner
  cargo lambda build "${args[@]}" --features "$(features response-handler "$responses")" \
    -p response-handler -p authorizer
  if $set_here; then unset "$rustflags"; fi
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
