#!/usr/bin/env bash
# Trainer benchmark: training steps/s of `deepcuts-trainer bench` beside the
# same step in plain PyTorch (scripts/bench_torch_train.py), on the seed
# network with synthetic 256×256 windows, both on the venv's libtorch.
#
#   scripts/bench-trainer.sh [BATCH] [STEPS] [THREADS]   (defaults: 32 20 2)
#
# ROUNDS: rust/python pairs, run alternately so both see the same machine
# state (default 2); WARMUP: untimed steps per run (default 3); MODEL: seed
# or default; DEVICE=cuda runs both on the GPU (default cpu); BENCH_DIR keeps
# the JSON results (default: a temporary directory); DEEPCUTS_TRAINER_BIN
# uses that binary instead of building the release one.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck disable=SC1091
source scripts/env.sh

BATCH=${1:-32}
STEPS=${2:-20}
THREADS=${3:-2}
ROUNDS=${ROUNDS:-2}
WARMUP=${WARMUP:-3}
MODEL=${MODEL:-seed}
DEVICE=${DEVICE:-cpu}
WORK=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$WORK"
# Pins the OpenMP pool too, not only libtorch's intra-op threads.
export OMP_NUM_THREADS=$THREADS

if [[ -n "${DEEPCUTS_TRAINER_BIN:-}" ]]; then
  trainer="$DEEPCUTS_TRAINER_BIN"
else
  cargo build --release -p deepcuts-trainer >&2
  trainer="$repo/target/release/deepcuts-trainer"
fi
[[ -x "$trainer" ]] || { echo "missing $trainer" >&2; exit 1; }

case "$DEVICE" in
  cpu) rust_device=(--cpu) ;;
  cuda) rust_device=() ;;  # the Rust side takes CUDA whenever it is present
  *) echo "DEVICE must be cpu or cuda, not $DEVICE" >&2; exit 1 ;;
esac
common=(--model "$MODEL" --batch-size "$BATCH" --warmup "$WARMUP" --steps "$STEPS" --threads "$THREADS")

echo "== $MODEL, batch $BATCH, $WARMUP+$STEPS steps, $THREADS threads, $DEVICE, $ROUNDS rounds; results in $WORK" >&2
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round: deepcuts" >&2
  "$trainer" bench "${common[@]}" "${rust_device[@]}" | tail -n 1 > "$WORK/deepcuts-$round.json"
  cat "$WORK/deepcuts-$round.json" >&2
  echo "== round $round: pytorch" >&2
  python scripts/bench_torch_train.py "${common[@]}" --device "$DEVICE" > "$WORK/pytorch-$round.json"
  cat "$WORK/pytorch-$round.json" >&2
done

python - "$WORK" "$ROUNDS" <<'PY'
import json, sys
work, rounds = sys.argv[1], int(sys.argv[2])
load = lambda name: json.load(open(f"{work}/{name}.json"))
rows = [(load(f"deepcuts-{r}"), load(f"pytorch-{r}")) for r in range(1, rounds + 1)]
first = rows[0][0]
print(f"{first['architecture']}, batch {first['batch_size']}, {first['steps']} steps, "
      f"{first['threads']} threads, {first['device']} (pytorch: {rows[0][1]['device']})\n")
print("| round | deepcuts windows/s | pytorch windows/s | deepcuts/pytorch |")
print("|---|---:|---:|---:|")
for r, (ours, theirs) in enumerate(rows, 1):
    a, b = ours["windows_per_second"], theirs["windows_per_second"]
    print(f"| {r} | {a:.1f} | {b:.1f} | {a / b:.3f} |")
# Best of the rounds: the run least disturbed by the rest of the machine.
a = max(o["windows_per_second"] for o, _ in rows)
b = max(t["windows_per_second"] for _, t in rows)
print(f"| best | {a:.1f} | {b:.1f} | {a / b:.3f} |")
PY
