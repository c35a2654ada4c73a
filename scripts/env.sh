# Sourced by the project's scripts: puts the venv's tools on PATH and lets
# tch find and load the libtorch inside the venv's torch package.
# Usage: source scripts/env.sh
_deepcuts_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DEEPCUTS_VENV="${DEEPCUTS_VENV:-$_deepcuts_repo/.venv}"
export PATH="$DEEPCUTS_VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
if _deepcuts_torch_lib="$("$DEEPCUTS_VENV/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)"; then
  export LD_LIBRARY_PATH="$_deepcuts_torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
unset _deepcuts_repo _deepcuts_torch_lib
