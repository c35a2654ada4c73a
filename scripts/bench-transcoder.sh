#!/usr/bin/env bash
# Transcoder benchmark: decode → windows (nothing written) against ffmpeg's
# plain decode and the 2017 project's sox spectrogram, on the same 2-minute
# 320 kbps stereo MP3, in one hyperfine run; then files/s over 200 previews
# on 2 cores, and peak RSS.
#
# usage: scripts/bench-transcoder.sh [input.mp3] [out-dir]
# With no input, a 2-minute 320 kbps stereo preview is fetched from the shop simulator.
set -euo pipefail
root="$(git rev-parse --show-toplevel)"
out="${2:-$root/target/bench-transcoder}"
mkdir -p "$out"
for tool in hyperfine ffmpeg sox curl python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

cargo build --release -p deepcuts-transcoder --manifest-path "$root/Cargo.toml" >&2
bin="$root/target/release/deepcuts-transcoder"

mp3="${1:-}"
if [[ -z "$mp3" ]]; then
  # The issue's input: a 2-minute 320 kbps stereo preview from the simulator.
  mp3="$out/sim-320k.mp3"
  if [[ ! -f "$mp3" ]]; then
    cargo build --release -q -p deepcuts-shopsim --manifest-path "$root/Cargo.toml" >&2
    port=18088
    "$root/target/release/deepcuts-shopsim" --port "$port" --tracks 60 --preview-seconds 120 >/dev/null 2>&1 &
    shop=$!
    trap 'kill $shop 2>/dev/null || true' EXIT
    for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/robots.txt" >/dev/null && break; sleep 0.2; done
    path=$(curl -sf "http://127.0.0.1:$port/__shopsim/truth" | python3 -c '
import json, sys
def tracks(o):
    if isinstance(o, dict):
        if "bitrate_kbps" in o:
            yield o
        for v in o.values():
            yield from tracks(v)
    elif isinstance(o, list):
        for v in o:
            yield from tracks(v)
print(next(t["preview_path"] for t in tracks(json.load(sys.stdin))
           if t["bitrate_kbps"] == 320 and not t.get("preview_fault")))')
    curl -sf -o "$mp3" "http://127.0.0.1:$port$path"
    kill $shop 2>/dev/null || true
  fi
fi
mp3="$(cd "$(dirname "$mp3")" && pwd)/$(basename "$mp3")"  # the 200 links below need an absolute target
echo "input: $mp3 ($(stat -c %s "$mp3") bytes)"

hyperfine -N --warmup 3 --runs 20 --export-markdown "$out/hyperfine.md" \
  -n "deepcuts decode→windows" "$bin windows $mp3" \
  -n "ffmpeg decode" "ffmpeg -v error -i $mp3 -f null -" \
  -n "sox spectrogram (2017)" "sox $mp3 -n remix 1,2 spectrogram -X 50 -Y 300 -m -r -o $out/sox.png"

# 200 previews, 2 cores: 200 copies of the same preview through one process
# (the worker's shape: rayon over both cores).
mkdir -p "$out/previews"
for i in $(seq -w 1 200); do ln -sf "$mp3" "$out/previews/p$i.mp3"; done
start=$(date +%s.%N)
/usr/bin/time -v -o "$out/time-200.txt" taskset -c 0,1 "$bin" windows "$out"/previews/*.mp3 >/dev/null
end=$(date +%s.%N)
secs=$(echo "$end - $start" | bc -l)
echo "200 previews: ${secs}s, $(echo "200 / $secs" | bc -l | cut -c1-6) files/s"
grep -E "Maximum resident set size" "$out/time-200.txt"
/usr/bin/time -v -o "$out/time-1.txt" "$bin" windows "$mp3" >/dev/null
echo "single file: $(grep -E 'Maximum resident set size' "$out/time-1.txt")"
