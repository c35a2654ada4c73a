#!/usr/bin/env bash
# The test command (README, and .ci/run): installs what is missing, builds,
# starts real RabbitMQ and SeaweedFS on loopback, runs formatting and lint
# checks and the whole test suite, and stops the servers whatever happens.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

scripts/setup.sh
echo "[test] set-up done after ${SECONDS} s" >&2
# shellcheck disable=SC1091
source scripts/env.sh

echo "[test] cargo fmt --check" >&2
cargo fmt --all -- --check
echo "[test] cargo clippy (-D warnings)" >&2
cargo clippy --workspace --all-targets -- -D warnings
echo "[test] deployment manifests" >&2
tests/deploy/validate.sh
echo "[test] building tests" >&2
cargo test --workspace --no-run
echo "[test] build done after ${SECONDS} s" >&2

export DEEPCUTS_TEST_STATE_DIR="$repo/target/test-servers"
trap 'scripts/test-servers.sh stop || true' EXIT
eval "$(scripts/test-servers.sh start)"

# Test binaries run one after another (cargo test's default), so the
# broker-restart test never shares the broker with another test.
cargo test --workspace -- --test-threads="${DEEPCUTS_TEST_THREADS:-2}"

echo "[test] listening page in headless Chromium" >&2
(cd tests/browser && npm test)
echo "[test] all passed after ${SECONDS} s" >&2
