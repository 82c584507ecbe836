#!/usr/bin/env bash
# Installs everything litpipe needs on a fresh machine: the Debian Fashion-MNIST package
# (offline data; when apt is available; with --dev also postgresql, chromium, chromium-driver),
# a virtual environment in .venv, and exactly the Python packages pinned in requirements.lock
# (versions and sha256 hashes; refresh it as the README says), then litpipe itself.
# Idempotent: rerunning it only installs what is missing or differs from the lock.
#   ./setup.sh         system data package, .venv, the locked packages, litpipe
#   ./setup.sh --dev   plus the system packages the tests need (PostgreSQL, Chromium)
# The lock holds the test and lint tools too (one lock, so every machine, CI included, runs
# the same versions of everything; they are small next to torch).
# With CI=true a system package that cannot be installed is an error (exit 1): the tests that
# need it would otherwise only be skipped and CI would pass without running them.
set -euo pipefail
cd "$(dirname "$0")"

lock=requirements.lock
apt_pkgs=(dataset-fashion-mnist)
if [[ "${1:-}" == "--dev" ]]; then
  # Test-only system packages: a PostgreSQL-backed MLflow server, and a browser for the UI
  # check. Outside CI, the tests that need them skip, saying why, where they are missing.
  apt_pkgs+=(postgresql chromium chromium-driver)
fi

missing_pkgs() {  # prints the packages of apt_pkgs that dpkg does not know as installed
  local p
  for p in "${apt_pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || echo "$p"
  done
}

if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [[ "$(id -u)" != 0 ]] && command -v sudo >/dev/null 2>&1 && sudo="sudo"
  mapfile -t missing < <(missing_pkgs)
  if (( ${#missing[@]} )); then
    echo "==> apt: ${missing[*]}"
    $sudo apt-get update -q || echo "warning: apt-get update failed"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" || true
    mapfile -t missing < <(missing_pkgs)
  fi
else
  missing=("${apt_pkgs[@]}")  # no apt: nothing to check with, so treat all as missing
  command -v dpkg >/dev/null 2>&1 && mapfile -t missing < <(missing_pkgs)
fi
if (( ${#missing[@]} )); then
  if [[ "${CI:-}" == true ]]; then
    echo "error: could not install the system package(s) ${missing[*]}, which the tests" \
         "need (CI=true: failing rather than skipping those tests)" >&2
    exit 1
  fi
  echo "warning: could not install ${missing[*]} (without dataset-fashion-mnist the download" \
       "uses the HTTP mirror; tests that need the others are skipped)"
fi

python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if [[ ! -x .venv/bin/python ]]; then
  echo "==> venv: .venv ($("$python" --version))"
  "$python" -m venv .venv
fi
echo "==> pip: $lock (torch is large: the first run takes minutes)"
# --require-hashes: every package must be in the lock, at its pinned version, and the file pip
# gets must have one of the lock's sha256 hashes; anything else is an error, not an install.
.venv/bin/python -m pip install -q --require-hashes -r "$lock"
# litpipe itself: its dependencies are the lock's (--no-deps), and it is built with the
# lock's setuptools instead of a fresh unpinned download (--no-build-isolation).
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
echo "==> ready: . .venv/bin/activate"
