#!/usr/bin/env bash
# Installs everything litpipe needs on a fresh machine: the Debian Fashion-MNIST package
# (offline data; when apt is available; with --dev also postgresql, chromium, chromium-driver), a virtual environment in .venv, and litpipe with
# its dependencies. Idempotent: rerunning it only installs what is missing.
#   ./setup.sh         runtime dependencies
#   ./setup.sh --dev   plus the test and lint tools (pytest, ruff)
set -euo pipefail
cd "$(dirname "$0")"

extras=""
apt_pkgs=(dataset-fashion-mnist)
if [[ "${1:-}" == "--dev" ]]; then
  extras="[dev]"
  # Test-only system packages: a PostgreSQL-backed MLflow server, and a browser for the UI
  # check. Tests that need them skip, saying why, where they are missing.
  apt_pkgs+=(postgresql chromium chromium-driver)
fi

if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [[ "$(id -u)" != 0 ]] && command -v sudo >/dev/null 2>&1 && sudo="sudo"
  missing=()
  for p in "${apt_pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if (( ${#missing[@]} )); then
    echo "==> apt: ${missing[*]}"
    $sudo apt-get update -q || true
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" \
      || echo "warning: could not install ${missing[*]} (without dataset-fashion-mnist the" \
              "download uses the HTTP mirror)"
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
