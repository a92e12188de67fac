#!/usr/bin/env bash
# One command from source to a running API:
#   1. check the tools (cargo, cargo-lambda with zig, terraform, AWS credentials);
#   2. build the four Lambda packages with `cargo lambda build --release --output-format zip`
#      for the architecture in terraform/deploy/terraform.tfvars, with config.yaml inside each;
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
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown option $arg (known: --build-only, --plan, --x86_64, --destroy)" ;;
  esac
done
if [ -z "$arch" ]; then
  arch=$(sed -n 's/^[[:space:]]*architecture[[:space:]]*=[[:space:]]*"\([a-z0-9_]*\)".*/\1/p' "$TFVARS" | head -n 1)
  arch=${arch:-arm64}
fi
case "$arch" in
  arm64) target_flag=--arm64 ;;
  x86_64) target_flag=--x86-64 ;;
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

build() {
  check_build_tools
  step "building ${FUNCTIONS[*]} for $arch (config.yaml included)"
  local bins=()
  for f in "${FUNCTIONS[@]}"; do bins+=(--bin "$f"); done
  cargo lambda build --release --output-format zip "$target_flag" --include config.yaml "${bins[@]}"
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
