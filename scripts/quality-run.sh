#!/usr/bin/env bash
# The quality run recorded in docs/quality.md: the demo's whole pipeline on
# the simulator at 9 genres × 60 tracks (demo defaults otherwise: 30-second
# previews, the `default` CNN, `genre` objective; 12 epochs at most), which
# prints the CNN's holdout tables beside the static-timbre baseline; then a
# label-free `contrastive` model trained on the same windows, which prints
# same-track recall@1 and @10 on the same holdout.
#
#   scripts/quality-run.sh [OUT_DIR]     (default target/quality)
#
# CONTRASTIVE_EPOCHS (default 6) bounds the second training.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck disable=SC1091
source scripts/env.sh
out="${1:-target/quality}"
cargo build --release --bin deepcuts >&2
rm -rf "$out/data"
mkdir -p "$out"
target/release/deepcuts demo --tracks 540 --epochs 12 --no-serve --data-dir "$out/data" | tee "$out/genre.txt"
target/release/deepcuts train --job demo-2017-9x540-default-genre --objective contrastive \
  --epochs "${CONTRASTIVE_EPOCHS:-6}" --store "$out/data" | tee "$out/contrastive.txt"
