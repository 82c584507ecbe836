#!/usr/bin/env bash
# A local MLflow tracking stack for litpipe, shaped like a team's server: PostgreSQL (Debian's
# packages) as the backend store, and `mlflow server --serve-artifacts` keeping artifacts in a
# local directory, or in an S3 bucket (MLFLOW_ARTIFACTS_S3, below), and serving them over HTTP.
# Everything listens on 127.0.0.1 only.
#
#   scripts/mlflow_server.sh start  [DIR]  start the stack in DIR (default .mlflow-server); waits
#                                          until the server answers /health, then prints
#                                          MLFLOW_TRACKING_URI=http://127.0.0.1:PORT
#   scripts/mlflow_server.sh stop   [DIR]  stop the server (its whole process group) and PostgreSQL
#   scripts/mlflow_server.sh uri    [DIR]  print the tracking URI of the stack in DIR
#   scripts/mlflow_server.sh status [DIR]  exit 0 when the server in DIR answers /health
#
# Then:  export MLFLOW_TRACKING_URI=$(scripts/mlflow_server.sh uri)  and  dvc repro
#
# Needs the apt package postgresql (installed here when missing and we are root with apt-get)
# and psycopg2-binary in litpipe's venv (in requirements.lock: ./setup.sh installs it; or
# `pip install -e '.[server]'`). PostgreSQL refuses to
# run as root, so as root the cluster belongs to the `postgres` user (kept in a private
# /tmp/litpipe-pg.* directory, removed at stop, when that user cannot enter DIR; otherwise the
# cluster is DIR/pg and survives a stop/start). TCP logins need a password
# generated at first start (DIR/pg_password, mode 600); the socket stays inside the cluster dir.
#
# Environment: PG_PORT, MLFLOW_PORT (default: free ports); START_TIMEOUT (seconds to wait for
# /health, default 120); OWNER_PID: stop the stack by itself when that process exits (tests pass
# their own pid, so a killed test run leaves no servers behind).
#   MLFLOW_ARTIFACTS_S3=s3://bucket/path  keep artifacts in that S3 bucket instead of DIR/artifacts
#     (`--artifacts-destination`). The server still proxies every artifact upload, download and
#     listing (`--serve-artifacts`, artifact URIs `mlflow-artifacts:/…`), so clients need only
#     MLFLOW_TRACKING_URI and no S3 credentials; the server needs them, from its environment:
#     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an ~/.aws profile), and for MinIO-style
#     servers MLFLOW_S3_ENDPOINT_URL=http://host:port (AWS S3: leave it unset). Needs boto3 in
#     the venv (in requirements.lock). A stack keeps the destination it was first started with
#     (DIR/artifacts_destination): existing runs' artifacts live there.
# Files in DIR: mlflow.log, artifacts/ (without MLFLOW_ARTIFACTS_S3), artifacts_destination,
# pg_dir (where the cluster lives; postgres.log inside), pg_port, pg_password, mlflow_port,
# mlflow.pid (also the server's process group), watchdog.pid.
# Exit codes: 0 ok, 1 the server did not come up (log tail printed), 2 usage, 3 missing tools.
set -euo pipefail

cmd="${1:-}"
dir_arg="${2:-.mlflow-server}"
case "$cmd" in
  start | stop | uri | status) ;;
  *) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 2 ;;
esac
[[ "$cmd" == start ]] && mkdir -p "$dir_arg"
[[ -d "$dir_arg" ]] || { echo "mlflow_server.sh: no stack in $dir_arg" >&2; exit 2; }
dir="$(cd "$dir_arg" && pwd)"
script="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
venv_bin="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin"
if [[ ! -x "$venv_bin/mlflow" ]]; then
  command -v mlflow >/dev/null || { echo "mlflow_server.sh: mlflow not found" >&2; exit 3; }
  venv_bin="$(dirname "$(command -v mlflow)")"
fi
py="$venv_bin/python"
[[ -x "$py" ]] || py="$(command -v python3)"

is_root() { [[ "$(id -u)" == 0 ]]; }

free_port() {
  "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

healthy() {  # healthy PORT: the server answers /health within 2 s
  "$py" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
}

newest_pg() {  # the newest /usr/lib/postgresql/<version>/bin, or nothing
  local dirs=(/usr/lib/postgresql/*/bin)
  [[ -d "${dirs[0]}" ]] && printf '%s\n' "${dirs[@]}" | sort -V | tail -n 1
  return 0
}

pg_bin() {  # directory of the newest installed PostgreSQL's binaries; installs it if we may
  local d
  d="$(newest_pg)"
  if [[ -z "$d" ]]; then
    if command -v apt-get >/dev/null && is_root; then
      echo "mlflow_server.sh: installing postgresql (apt)" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -q postgresql >&2 || { apt-get update -q >&2 &&
        apt-get install -y -q postgresql >&2; }
      d="$(newest_pg)"
    else
      echo "mlflow_server.sh: PostgreSQL not found: apt-get install postgresql" >&2
      exit 3
    fi
  fi
  echo "$d"
}

as_pg() {  # run a PostgreSQL command as a non-root user
  if is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_dir() { cat "$dir/pg_dir" 2>/dev/null || echo "$dir/pg"; }

group_alive() {  # group_alive PGID: a live (not zombie) process is left in that group
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ {found = 1} END {exit !found}'
}

alive() { [[ -f "$dir/mlflow.pid" ]] && kill -0 "$(cat "$dir/mlflow.pid")" 2>/dev/null; }

start() {
  if alive; then
    echo "mlflow_server.sh: already running in $dir" >&2
    echo "MLFLOW_TRACKING_URI=http://127.0.0.1:$(cat "$dir/mlflow_port")"
    return 0
  fi
  local bin pg pg_port mlflow_port password destination
  # Where artifacts go: a directory in DIR, or the S3 bucket named by MLFLOW_ARTIFACTS_S3.
  destination="${MLFLOW_ARTIFACTS_S3:-$dir/artifacts}"
  if [[ -n "${MLFLOW_ARTIFACTS_S3:-}" && "$MLFLOW_ARTIFACTS_S3" != s3://?* ]]; then
    echo "mlflow_server.sh: MLFLOW_ARTIFACTS_S3 must be s3://bucket[/path], got" \
         "'$MLFLOW_ARTIFACTS_S3'" >&2
    exit 2
  fi
  if [[ -f "$dir/artifacts_destination" &&
        "$(cat "$dir/artifacts_destination")" != "$destination" ]]; then
    echo "mlflow_server.sh: the stack in $dir keeps its artifacts in" \
         "$(cat "$dir/artifacts_destination"), not $destination (its runs' artifacts are" \
         "there); use another DIR for another destination" >&2
    exit 2
  fi
  bin="$(pg_bin)"
  "$py" -c "import psycopg2" 2>/dev/null || {
    echo "mlflow_server.sh: psycopg2 missing in $venv_bin: ./setup.sh, or" \
         "pip install -e '.[server]'" >&2
    exit 3; }
  if [[ -n "${MLFLOW_ARTIFACTS_S3:-}" ]]; then
    "$py" -c "import boto3" 2>/dev/null || {
      echo "mlflow_server.sh: boto3 missing in $venv_bin (needed for MLFLOW_ARTIFACTS_S3):" \
           "./setup.sh, or pip install -e '.[server]'" >&2
      exit 3; }
  else
    mkdir -p "$dir/artifacts"
  fi
  echo "$destination" >"$dir/artifacts_destination"
  pg_port="${PG_PORT:-$(free_port)}"
  mlflow_port="${MLFLOW_PORT:-$(free_port)}"

  pg="$dir/pg"
  if [[ -f "$dir/pg_dir" && -f "$(cat "$dir/pg_dir")/PG_VERSION" ]]; then
    pg="$(cat "$dir/pg_dir")"  # restart of an existing cluster
  elif is_root && ! runuser -u postgres -- test -x "$dir"; then
    # DIR is not enterable by the postgres user (e.g. under a 0700 temp dir).
    pg="$(mktemp -d /tmp/litpipe-pg.XXXXXX)"
  fi
  echo "$pg" >"$dir/pg_dir"
  mkdir -p "$pg"
  if is_root; then chown postgres:postgres "$pg"; fi
  if [[ ! -f "$pg/PG_VERSION" ]]; then
    (umask 077 && "$py" -c 'import secrets; print(secrets.token_hex(16))' >"$dir/pg_password")
    local pwfile="$pg.pw"
    (umask 077 && cp "$dir/pg_password" "$pwfile")
    if is_root; then chown postgres "$pwfile"; fi
    # Socket logins (only the cluster's owner can reach the socket) are trusted; TCP logins
    # need the password.
    as_pg "$bin/initdb" -D "$pg" -U mlflow --pwfile="$pwfile" --auth-local=trust \
      --auth-host=scram-sha-256 -E UTF8 >"$dir/initdb.log" 2>&1 || {
      rm -f "$pwfile"; echo "mlflow_server.sh: initdb failed:" >&2; cat "$dir/initdb.log" >&2
      exit 1; }
    rm -f "$pwfile"
  fi
  password="$(cat "$dir/pg_password")"
  if ! as_pg "$bin/pg_ctl" -D "$pg" -l "$pg/postgres.log" -w -t 60 \
    -o "-p $pg_port -k $pg -c listen_addresses=127.0.0.1" start >/dev/null; then
    echo "mlflow_server.sh: PostgreSQL did not start; last lines of $pg/postgres.log:" >&2
    tail -n 20 "$pg/postgres.log" >&2
    stop
    exit 1
  fi
  echo "$pg_port" >"$dir/pg_port"
  as_pg "$bin/psql" -h "$pg" -p "$pg_port" -U mlflow -d postgres -tAq \
    -c "SELECT 1 FROM pg_database WHERE datname = 'mlflow'" | grep -q 1 ||
    as_pg "$bin/createdb" -h "$pg" -p "$pg_port" -U mlflow mlflow

  # The store URI goes through the environment, not argv: `ps` would show the password (the
  # S3 credentials, MLFLOW_S3_ENDPOINT_URL included, reach the server the same way).
  # setsid: the server, its uvicorn worker and job runners share one process group, which
  # `stop` ends as a whole.
  MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://mlflow:$password@127.0.0.1:$pg_port/mlflow" \
    setsid "$venv_bin/mlflow" server \
    --artifacts-destination "$destination" --serve-artifacts \
    --host 127.0.0.1 --port "$mlflow_port" --workers 1 \
    </dev/null >"$dir/mlflow.log" 2>&1 &
  echo $! >"$dir/mlflow.pid"
  echo "$mlflow_port" >"$dir/mlflow_port"

  if [[ -n "${OWNER_PID:-}" ]]; then
    # Watchdog: stops the stack when the owner goes away without calling `stop`.
    # shellcheck disable=SC2016  # $1..$3 are the inner script's arguments
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && [[ -f "$3/mlflow.pid" ]]; do sleep 1; done
                    [[ -f "$3/mlflow.pid" ]] && "$2" stop "$3"' \
      watchdog "$OWNER_PID" "$script" "$dir" </dev/null >/dev/null 2>&1 &
    echo $! >"$dir/watchdog.pid"
  fi

  local deadline=$((SECONDS + ${START_TIMEOUT:-120}))
  while ((SECONDS < deadline)); do
    if healthy "$mlflow_port"; then
      echo "MLFLOW_TRACKING_URI=http://127.0.0.1:$mlflow_port"
      return 0
    fi
    alive || break
    sleep 0.5
  done
  echo "mlflow_server.sh: mlflow server did not answer /health; last lines of $dir/mlflow.log:" >&2
  tail -n 20 "$dir/mlflow.log" >&2
  stop
  exit 1
}

stop() {
  if [[ -f "$dir/mlflow.pid" ]]; then
    local pid
    pid="$(cat "$dir/mlflow.pid")"
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do  # up to 10 s, then force
      group_alive "$pid" || break
      sleep 0.25
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$dir/mlflow.pid"
  fi
  local pg
  pg="$(pg_dir)"
  if [[ -f "$pg/postmaster.pid" ]]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$pg" -m fast -w -t 30 stop >/dev/null || true
  fi
  case "$pg" in /tmp/litpipe-pg.*) rm -rf "$pg"; rm -f "$dir/pg_dir" ;; esac
  if [[ -f "$dir/watchdog.pid" ]]; then
    local wd
    wd="$(cat "$dir/watchdog.pid")"
    rm -f "$dir/watchdog.pid"
    # Not when the watchdog itself called us: it ends on its own right after.
    if [[ "$wd" != "$PPID" ]]; then kill -TERM "$wd" 2>/dev/null || true; fi
  fi
  return 0
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  uri) echo "http://127.0.0.1:$(cat "$dir/mlflow_port")" ;;
  status) healthy "$(cat "$dir/mlflow_port" 2>/dev/null || echo 0)" ;;
esac
