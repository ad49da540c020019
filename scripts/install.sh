#!/usr/bin/env bash
# Install algocyte-agent as a systemd service on a Raspberry Pi OS (Bookworm) board.
#
#   sudo scripts/install.sh [--prefix /opt/algocyte] [--with-pi-camera] [--no-start]
#
# Creates the 'algocyte' system user (groups dialout, video), a virtual environment
# under PREFIX with the agent installed from this checkout, /etc/algocyte/agent.yaml
# from the example (kept if it exists), and the systemd unit; then enables the unit.
# Run it again to upgrade: the config and the state directory are kept.
set -euo pipefail

prefix=/opt/algocyte
with_pi=0
start=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --with-pi-camera) with_pi=1; shift ;;
    --no-start) start=0; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo)" >&2
  exit 1
fi

src=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "install.sh: Python >= 3.11 is needed" >&2; exit 1; }

echo "== system packages"
apt-get update -qq
pkgs="python3-venv"
# picamera2 and libcamera come from Raspberry Pi OS's apt, not PyPI.
[ "$with_pi" = 1 ] && pkgs="$pkgs python3-picamera2 python3-libcamera"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs

echo "== user algocyte"
if ! id algocyte >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/algocyte --no-create-home --shell /usr/sbin/nologin algocyte
fi
usermod -a -G dialout,video algocyte

echo "== virtual environment in $prefix/venv"
mkdir -p "$prefix"
venv_flags=""
# The Pi camera's Python bindings are system packages: let the venv see them.
[ "$with_pi" = 1 ] && venv_flags="--system-site-packages"
[ -x "$prefix/venv/bin/python" ] || "$python" -m venv $venv_flags "$prefix/venv"
"$prefix/venv/bin/pip" install --quiet --upgrade pip
"$prefix/venv/bin/pip" install --quiet "$src"

echo "== configuration"
install -d -m 0755 /etc/algocyte
install -d -m 0750 -g algocyte /etc/algocyte/credentials
if [ ! -e /etc/algocyte/agent.yaml ]; then
  install -m 0640 -g algocyte "$src/agent/config/agent.example.yaml" /etc/algocyte/agent.yaml
  echo "   wrote /etc/algocyte/agent.yaml from the example: edit device_id, stage.port and mqtt"
else
  echo "   keeping existing /etc/algocyte/agent.yaml"
fi
"$prefix/venv/bin/algocyte-agent" validate-config /etc/algocyte/agent.yaml \
  || echo "   fix the errors above, then: systemctl restart algocyte-agent"

echo "== systemd unit"
sed "s#/opt/algocyte#$prefix#g" "$src/systemd/algocyte-agent.service" \
  > /etc/systemd/system/algocyte-agent.service
systemctl daemon-reload
systemctl enable algocyte-agent.service
if [ "$start" = 1 ]; then
  systemctl restart algocyte-agent.service
  echo "   started: journalctl -u algocyte-agent -f"
fi
