#!/usr/bin/env bash
# A local MLflow tracking stack for litpipe: PostgreSQL (Debian's packages) as the backend
# store and `mlflow server` serving artifacts from a local directory, both on 127.0.0.1.
#
#   scripts/mlflow_server.sh start [DIR]   start (DIR default: .mlflow-server); prints the URI
#   scripts/mlflow_server.sh stop  [DIR]   stop both servers
#   scripts/mlflow_server.sh uri   [DIR]   print the tracking URI of a running stack
#
# Then:  export MLFLOW_TRACKING_URI=$(scripts/mlflow_server.sh uri)  and  dvc repro
# Needs: apt packages postgresql (installed here when missing and apt is available), and
# psycopg2-binary in litpipe's venv (`pip install -e '.[server]'`). PostgreSQL refuses to run
# as root, so when run as root the cluster belongs to the `postgres` user.
# Ports: PG_PORT and MLFLOW_PORT (default: free ports). Logs: DIR/mlflow.log and the
# cluster's postgres.log (its directory is in DIR/pg_dir).
set -euo pipefail

cmd="${1:-}"
dir="$(mkdir -p "${2:-.mlflow-server}" && cd "${2:-.mlflow-server}" && pwd)"
venv_bin="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin"
[[ -x "$venv_bin/mlflow" ]] || venv_bin="$(dirname "$(command -v mlflow)")"

free_port() { "$venv_bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pg_bin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [[ -z "$d" ]]; then
    if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
      d="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    else
      echo "mlflow_server.sh: PostgreSQL not found: apt-get install postgresql" >&2; exit 3
    fi
  fi
  echo "$d"
}

as_pg() {  # run a PostgreSQL command as a non-root user
  if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  local bin pg_port mlflow_port
  bin="$(pg_bin)"
  "$venv_bin/python" -c "import psycopg2" 2>/dev/null || {
    echo "mlflow_server.sh: psycopg2 missing: pip install -e '.[server]'" >&2; exit 3; }
  pg_port="${PG_PORT:-$(free_port)}"
  mlflow_port="${MLFLOW_PORT:-$(free_port)}"
  mkdir -p "$dir/artifacts"
  local pg="$dir/pg"
  if [[ "$(id -u)" == 0 ]] && ! runuser -u postgres -- test -x "$dir"; then
    # DIR is not reachable by the postgres user (e.g. under a 0700 temp dir): keep the
    # cluster in a directory of its own and remember where.
    pg="$(mktemp -d /tmp/litpipe-pg.XXXXXX)"
  fi
  echo "$pg" >"$dir/pg_dir"
  mkdir -p "$pg"
  [[ "$(id -u)" == 0 ]] && chown -R postgres:postgres "$pg"
  if [[ ! -f "$pg/PG_VERSION" ]]; then
    as_pg "$bin/initdb" -D "$pg" -U mlflow --auth=trust -E UTF8 >"$dir/initdb.log"
  fi
  as_pg "$bin/pg_ctl" -D "$pg" -l "$pg/postgres.log" -w -t 60 \
    -o "-p $pg_port -k $pg -c listen_addresses=127.0.0.1" start >/dev/null
  as_pg "$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U mlflow mlflow 2>/dev/null || true
  echo "$pg_port" >"$dir/pg_port"
  nohup "$venv_bin/mlflow" server \
    --backend-store-uri "postgresql+psycopg2://mlflow@127.0.0.1:$pg_port/mlflow" \
    --artifacts-destination "$dir/artifacts" --serve-artifacts \
    --host 127.0.0.1 --port "$mlflow_port" --workers 1 \
    >"$dir/mlflow.log" 2>&1 &
  echo $! >"$dir/mlflow.pid"
  echo "$mlflow_port" >"$dir/mlflow_port"
  for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$mlflow_port/health" >/dev/null 2>&1; then
      echo "MLFLOW_TRACKING_URI=http://127.0.0.1:$mlflow_port"
      return 0
    fi
    if ! kill -0 "$(cat "$dir/mlflow.pid")" 2>/dev/null; then break; fi
    sleep 0.5
  done
  echo "mlflow_server.sh: mlflow server did not come up; see $dir/mlflow.log:" >&2
  tail -n 20 "$dir/mlflow.log" >&2
  stop
  exit 1
}

stop() {
  if [[ -f "$dir/mlflow.pid" ]]; then
    local pid; pid="$(cat "$dir/mlflow.pid")"
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    rm -f "$dir/mlflow.pid"
  fi
  local pg
  pg="$(cat "$dir/pg_dir" 2>/dev/null || echo "$dir/pg")"
  if [[ -f "$pg/postmaster.pid" ]]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$pg" -m fast -w stop >/dev/null || true
  fi
  case "$pg" in /tmp/litpipe-pg.*) rm -rf "$pg" ;; esac
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  uri) echo "http://127.0.0.1:$(cat "$dir/mlflow_port")" ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
