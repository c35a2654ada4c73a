#!/usr/bin/env bash
# Indexer benchmark: deepcuts' exact top-k table beside FAISS IndexFlatIP on
# the same clustered synthetic embeddings, in one run.
#
#   scripts/bench-indexer.sh [ROWS] [DIM] [K]      (defaults: 400000 128 10)
#
# BENCH_DIR keeps the data and outputs (default: a temporary directory);
# THREADS sets the threads of both sides (default 2).
set -euo pipefail

ROWS=${1:-400000}
DIM=${2:-128}
K=${3:-10}
THREADS=${THREADS:-2}
ROOT=$(git rev-parse --show-toplevel)
PYTHON="$ROOT/.venv/bin/python"
[[ -x "$PYTHON" ]] || { echo "missing $ROOT/.venv (run scripts/setup.sh)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "missing /usr/bin/time (apt-get install time)" >&2; exit 1; }
WORK=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$WORK"
export OMP_NUM_THREADS=$THREADS

cargo build --release -p deepcuts-indexer --manifest-path "$ROOT/Cargo.toml" >&2
INDEXER="$ROOT/target/release/deepcuts-indexer"

echo "== data: $ROWS x $DIM clustered unit vectors in $WORK" >&2
"$PYTHON" "$ROOT/scripts/bench_faiss.py" generate --out "$WORK/data.npy" --rows "$ROWS" --dim "$DIM" >&2


echo "== faiss IndexFlatIP, $THREADS threads" >&2
/usr/bin/time -v -o "$WORK/faiss.time" "$PYTHON" "$ROOT/scripts/bench_faiss.py" search \
  --data "$WORK/data.npy" -k "$K" --ids-out "$WORK/faiss_ids.npy" --scores-out "$WORK/faiss_scores.npy" \
  > "$WORK/faiss.json"
cat "$WORK/faiss.json" >&2

echo "== deepcuts-indexer, $THREADS threads" >&2
/usr/bin/time -v -o "$WORK/deepcuts.time" "$INDEXER" table --embeddings "$WORK/data.npy" -k "$K" \
  --threads "$THREADS" --ids-out "$WORK/deepcuts_ids.npy" --scores-out "$WORK/deepcuts_scores.npy" \
  > "$WORK/deepcuts.json"
cat "$WORK/deepcuts.json" >&2

echo "== agreement" >&2
"$PYTHON" "$ROOT/scripts/bench_faiss.py" compare --data "$WORK/data.npy" \
  --ours-ids "$WORK/deepcuts_ids.npy" --ours-scores "$WORK/deepcuts_scores.npy" \
  --faiss-ids "$WORK/faiss_ids.npy" > "$WORK/compare.json" || status=$?
cat "$WORK/compare.json"

"$PYTHON" - "$WORK" "$ROWS" "$DIM" <<'PY'
import json, re, sys
work, rows, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def peak_mib(name):
    text = open(f"{work}/{name}.time").read()
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 1024
embeddings_mib = rows * dim * 4 / 2**20
faiss, ours = json.load(open(f"{work}/faiss.json")), json.load(open(f"{work}/deepcuts.json"))
print(json.dumps({
    "faiss_search_s": faiss["search_s"], "deepcuts_search_s": ours["search_s"],
    "ratio": round(ours["search_s"] / faiss["search_s"], 3),
    "embeddings_mib": round(embeddings_mib, 1),
    "faiss_peak_rss_mib": round(peak_mib("faiss"), 1),
    "deepcuts_peak_rss_mib": round(peak_mib("deepcuts"), 1),
    "deepcuts_beyond_embeddings_mib": round(peak_mib("deepcuts") - embeddings_mib, 1),
}))
PY
exit "${status:-0}"
