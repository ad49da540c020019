#!/usr/bin/env bash
# One sample on the simulated analyzer, published to a throwaway MQTT broker (`make run`).
#
#   scripts/demo.sh [algocyte-agent demo options: --cells DIR --target N --seed S --json ...]
#
# If mosquitto is installed and nothing listens on localhost:1883, a private mosquitto
# is started there for the demo (anonymous, no persistence, logs in a temporary
# folder) and stopped afterwards; an existing broker is used as it is. Without
# mosquitto the demo runs without a broker and says so.
# ALGOCYTE_AGENT overrides the agent executable (default: .venv/bin/algocyte-agent).
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
agent=${ALGOCYTE_AGENT:-$root/.venv/bin/algocyte-agent}
host=127.0.0.1
port=1883
broker_pid=""
workdir=""

listening() {
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

cleanup() {
  if [ -n "$broker_pid" ]; then
    kill "$broker_pid" 2>/dev/null
    wait "$broker_pid" 2>/dev/null
  fi
  [ -n "$workdir" ] && rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mosquitto=$(command -v mosquitto || { [ -x /usr/sbin/mosquitto ] && echo /usr/sbin/mosquitto; } || true)
if ! listening && [ -n "$mosquitto" ]; then
  workdir=$(mktemp -d "${TMPDIR:-/tmp}/algocyte-demo-broker.XXXXXX")
  cat >"$workdir/mosquitto.conf" <<EOF
listener $port $host
allow_anonymous true
persistence false
log_dest file $workdir/mosquitto.log
user $(id -un)
EOF
  "$mosquitto" -c "$workdir/mosquitto.conf" &
  broker_pid=$!
  for _ in $(seq 50); do
    listening && break
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
  done
  if listening; then
    echo "demo.sh: started a throwaway mosquitto on $host:$port (stopped when the demo ends)" >&2
  else
    echo "demo.sh: could not start mosquitto on $host:$port (see $workdir/mosquitto.log)" >&2
  fi
fi

"$agent" demo "$@"
