# shellcheck shell=bash
# The project environment, sourced by every script: the repo venv's tools on
# PATH, and what tch needs to build and run against the libtorch that ships
# inside the venv's torch (deepcuts-trainer, deepcuts-embedder).
#
#   source scripts/env.sh
#
# DEEPCUTS_VENV overrides the venv location (default: <repo root>/.venv).
# torch-sys runs `python` when VIRTUAL_ENV is set (else `python3`) to find
# libtorch, so the venv's interpreter must come first on PATH.

_deepcuts_root="$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel 2>/dev/null \
    || (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd))"
_deepcuts_venv="${DEEPCUTS_VENV:-${_deepcuts_root}/.venv}"

if [ ! -x "${_deepcuts_venv}/bin/python" ]; then
    echo "env.sh: no python in ${_deepcuts_venv} (run the setup script or set DEEPCUTS_VENV)" >&2
    return 1 2>/dev/null || exit 1
fi

_deepcuts_torch_lib="$("${_deepcuts_venv}/bin/python" -c \
    'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)"
if [ -z "${_deepcuts_torch_lib}" ] || [ ! -d "${_deepcuts_torch_lib}" ]; then
    echo "env.sh: torch is not importable from ${_deepcuts_venv}" >&2
    return 1 2>/dev/null || exit 1
fi

export VIRTUAL_ENV="${_deepcuts_venv}"
export PATH="${_deepcuts_venv}/bin:${PATH}"
export LIBTORCH_USE_PYTORCH=1
export LD_LIBRARY_PATH="${_deepcuts_torch_lib}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"

unset _deepcuts_root _deepcuts_venv _deepcuts_torch_lib
