# Source this (bash) to drive the project's OpenTofu, directly or through cdktf, with no registry:
#   bash tests/tools/install-tofu.sh && source tests/e2e/tofu_env.sh
#   cdktf deploy dev        # or: tofu -chdir=cdktf.out/stacks/dev plan
# It only exports variables; the binaries, the provider mirror and the CLI config come from
# tests/tools/install-tofu.sh (see docs/engine.md).

_tofu_env_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
_tofu_env_home="$_tofu_env_root/.tools/tofu"

if [[ ! -x "$_tofu_env_home/bin/tofu" || ! -x "$_tofu_env_home/bin/tofu-cdktf" || ! -f "$_tofu_env_home/tofurc" ]]; then
  echo "tofu_env.sh: OpenTofu is not installed; run tests/tools/install-tofu.sh first" >&2
  unset _tofu_env_root _tofu_env_home
  return 1 2>/dev/null || exit 1
fi

# The machine may export its own TF_CLI_CONFIG_FILE; the project's config is the one with the mirror.
export TF_CLI_CONFIG_FILE="$_tofu_env_home/tofurc"
# cdktf spawns this engine for init/plan/apply/destroy; the wrapper keeps `providers lock` offline.
export TERRAFORM_BINARY_NAME="$_tofu_env_home/bin/tofu-cdktf"
export CHECKPOINT_DISABLE=1
case ":$PATH:" in
  *":$_tofu_env_home/bin:"*) ;;
  *) export PATH="$_tofu_env_root/node_modules/.bin:$_tofu_env_home/bin:$PATH" ;;
esac

unset _tofu_env_root _tofu_env_home
