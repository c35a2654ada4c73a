#!/usr/bin/env bash
# Validates the deployment files (deploy/, k8s/) without a container engine or
# a cluster: every YAML parses; every Deployment (as kustomize renders base and
# each overlay) has liveness/readiness probes on /health/livez and
# /health/readyz, a `metrics` port, requests and limits, and a grace period
# longer than its drain; every DEEPCUTS__ variable names a known config
# section and key; every kustomization's resources and patches exist; the
# compose file runs binaries the image ships. Exits non-zero on any problem.
#
#   tests/deploy/validate.sh              # check the files
#   tests/deploy/validate.sh --self-test  # also prove planted faults are caught
#
# Needs the repo venv's python with PyYAML, and kubectl (for `kubectl kustomize`).
set -euo pipefail

root="$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"
python="${root}/.venv/bin/python"

if [[ ! -x "${python}" ]]; then
  echo "validate: no python at .venv/bin/python (run scripts/setup.sh)" >&2
  exit 2
fi
if ! "${python}" -c 'import yaml' 2>/dev/null; then
  echo "validate: PyYAML is missing from the repo venv (.venv/bin/pip install pyyaml)" >&2
  exit 2
fi
if ! command -v kubectl >/dev/null; then
  echo "validate: kubectl is needed to render the kustomizations (kubectl kustomize)" >&2
  exit 2
fi

"${python}" "${root}/tests/deploy/validate_manifests.py" --root "${root}"
if [[ "${1:-}" == "--self-test" ]]; then
  "${python}" "${root}/tests/deploy/validate_manifests.py" --root "${root}" --self-test
fi
