#!/usr/bin/env bash
# The main command (README): installs what is missing, builds in release
# mode, and runs the pipeline on embedded defaults (a file store under
# ./deepcuts-data and the in-process queue; no servers to install).
# Extra arguments go to the command it runs.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/setup.sh
# shellcheck disable=SC1091
source scripts/env.sh
echo "[demo] set-up done after ${SECONDS} s" >&2
cargo build --release --bin deepcuts
echo "[demo] build done after ${SECONDS} s" >&2
exec target/release/deepcuts demo "$@"
