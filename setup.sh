#!/usr/bin/env bash
# Installs everything litpipe needs on a fresh machine: the Debian Fashion-MNIST package
# (offline data; when apt is available), a virtual environment in .venv, and litpipe with
# its dependencies. Idempotent: rerunning it only installs what is missing.
#   ./setup.sh         runtime dependencies
#   ./setup.sh --dev   plus the test and lint tools (pytest, ruff)
set -euo pipefail
cd "$(dirname "$0")"

extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"

if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [[ "$(id -u)" != 0 ]] && command -v sudo >/dev/null 2>&1 && sudo="sudo"
  if [[ ! -d /usr/share/datasets/fashion-mnist ]]; then
    echo "==> apt: dataset-fashion-mnist (offline Fashion-MNIST files)"
    $sudo apt-get update -q || true
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist \
      || echo "warning: dataset-fashion-mnist not installed; download will use the HTTP mirror"
  fi
fi

python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if [[ ! -x .venv/bin/python ]]; then
  echo "==> venv: .venv ($("$python" --version))"
  "$python" -m venv .venv
fi
echo "==> pip: litpipe${extras} and dependencies (torch is large: first run takes minutes)"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
echo "==> ready: . .venv/bin/activate"
