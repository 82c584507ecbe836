#!/usr/bin/env bash
# A local MLflow tracking stack for litpipe, shaped like a team's server: PostgreSQL (Debian's
# packages) as the backend store, and `mlflow server --serve-artifacts` keeping artifacts in a
# local directory, or in an S3 bucket (MLFLOW_ARTIFACTS_S3, below), and serving them over HTTP.
# Logins are on: MLflow's auth app (`--app-name basic-auth`), its users and grants kept in a
# second database of the same PostgreSQL. Listens on 127.0.0.1 unless MLFLOW_HOST says
# otherwise.
#
#   scripts/mlflow_server.sh start  [DIR]  start the stack in DIR (default .mlflow-server); waits
#                                          until the server answers /health, then prints
#                                          MLFLOW_TRACKING_URI=http://HOST:PORT
#   scripts/mlflow_server.sh stop   [DIR]  stop the server (its whole process group) and PostgreSQL
#   scripts/mlflow_server.sh uri    [DIR]  print the tracking URI of the stack in DIR
#   scripts/mlflow_server.sh status [DIR]  exit 0 when the server in DIR answers /health
#   scripts/mlflow_server.sh add-user NAME --read|--edit|--gate [DIR]
#                                          create a login (its password: $MLFLOW_NEW_USER_PASSWORD,
#                                          else generated into DIR/users/NAME, mode 600) and grant it
#   scripts/mlflow_server.sh grant    NAME --read|--edit|--gate [DIR]
#                                          replace NAME's grants (on the running server)
#     --read  READ on the experiment and the registered model: the UI, `litpipe predict --model`,
#             `mlflow models serve`
#     --edit  EDIT on both: log runs and artifacts, register versions, move `candidate` (CI)
#     --gate  --edit, and may move `champion` (the identity `litpipe gate --promote` runs as)
#     The experiment ($EXPERIMENT, default litpipe) and the registered model ($REGISTERED_MODEL,
#     default litpipe-classifier) are created by the admin if missing, so no client owns them
#     (a resource's creator gets MANAGE, which may delete it). Nobody but an admin can delete
#     runs or the model; `default_permission` is NO_PERMISSIONS: a login without a grant sees
#     nothing, and a client without a login gets 401 for everything but /health.
#
# Then:  export MLFLOW_TRACKING_URI=$(scripts/mlflow_server.sh uri)
#        export MLFLOW_TRACKING_USERNAME=NAME MLFLOW_TRACKING_PASSWORD=...  and  dvc repro
#
# Needs the apt package postgresql (installed here when missing and we are root with apt-get)
# and psycopg2-binary and Flask-WTF (mlflow[auth]) in litpipe's venv (in requirements.lock:
# ./setup.sh installs them; or `pip install -e '.[server]'`). PostgreSQL refuses to
# run as root, so as root the cluster belongs to the `postgres` user (kept in a private
# /tmp/litpipe-pg.* directory, removed at stop, when that user cannot enter DIR; otherwise the
# cluster is DIR/pg and survives a stop/start). TCP logins need a password
# generated at first start (DIR/pg_password, mode 600); the socket stays inside the cluster dir.
#
# Secrets never go on a command line (`ps` shows it to every user) or into a log: they reach
# the server through its environment or files of mode 600 in DIR.
#
# Environment: PG_PORT, MLFLOW_PORT (default: free ports); START_TIMEOUT (seconds to wait for
# /health, default 120); OWNER_PID: stop the stack by itself when that process exits (tests pass
# their own pid, so a killed test run leaves no servers behind).
#   MLFLOW_HOST=ADDRESS  listen there (default 127.0.0.1). Only loopback without logins; a
#     team's server also needs MLFLOW_SERVER_ALLOWED_HOSTS=its.name and TLS in front
#     (docs/team.md): basic auth sends the password with every request.
#   MLFLOW_AUTH=off  no logins: anyone who reaches the port may do anything. Refused unless
#     MLFLOW_HOST is a loopback address.
#   MLFLOW_AUTH_ADMIN_USERNAME (default admin), MLFLOW_AUTH_ADMIN_PASSWORD: the admin login,
#     created at first start. Without the password in the environment one is generated into
#     DIR/admin_password (mode 600). MLflow ignores both once the admin exists.
#   MLFLOW_DISABLE_TELEMETRY, ORT_DISABLE_TELEMETRY: the server reports no usage to MLflow's
#     or ONNX Runtime's makers unless these are set to false / 0.
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
# mlflow_host, mlflow.pid (also the server's process group), watchdog.pid; with logins
# auth.ini (the auth app's settings, MLFLOW_AUTH_CONFIG_PATH), admin_username, admin_password,
# flask_secret (the auth app's CSRF key), alias_owners (who may move champion), users/.
# Exit codes: 0 ok, 1 the server did not come up (log tail printed), 2 usage, 3 missing tools.
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 2; }

cmd="${1:-}"
user_name="" role=""
case "$cmd" in
  start | stop | uri | status) dir_arg="${2:-.mlflow-server}" ;;
  add-user | grant)
    user_name="${2:-}" role="${3:-}" dir_arg="${4:-.mlflow-server}"
    [[ "$user_name" =~ ^[A-Za-z0-9][A-Za-z0-9._@-]*$ ]] || {
      echo "mlflow_server.sh: $cmd needs a user name (letters, digits, . _ @ -)" >&2; exit 2; }
    case "$role" in --read | --edit | --gate) ;; *)
      echo "mlflow_server.sh: $cmd $user_name needs --read, --edit or --gate" >&2; exit 2 ;;
    esac ;;
  *) usage ;;
esac
host="${MLFLOW_HOST:-127.0.0.1}"
case "${MLFLOW_AUTH:-on}" in on | off) ;; *)
  echo "mlflow_server.sh: MLFLOW_AUTH must be on or off, got '$MLFLOW_AUTH'" >&2; exit 2 ;;
esac
auth_on() { [[ "${MLFLOW_AUTH:-on}" == on ]]; }
is_loopback() { [[ "$1" == localhost || "$1" == ::1 || "$1" =~ ^127\.[0-9.]+$ ]]; }
if [[ "$cmd" == start ]] && ! auth_on && ! is_loopback "$host"; then
  # Without logins anyone who reaches the port may delete the registry or move champion.
  echo "mlflow_server.sh: refusing to listen on $host with MLFLOW_AUTH=off: without logins" \
       "anyone who can reach it may change or delete every run and model; keep logins on" \
       "(the default) or listen on 127.0.0.1" >&2
  exit 2
fi
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

base_url() {  # base_url HOST PORT: where clients on this machine reach the server
  local h="$1"
  case "$h" in 0.0.0.0 | "" | "*") h=127.0.0.1 ;; :: ) h="[::1]" ;; *:*) h="[$h]" ;; esac
  echo "http://$h:$2"
}

stack_url() {  # the URL of the stack in DIR, from the files `start` wrote
  base_url "$(cat "$dir/mlflow_host" 2>/dev/null || echo 127.0.0.1)" \
    "$(cat "$dir/mlflow_port" 2>/dev/null || echo 0)"
}

healthy() {  # healthy URL: the server answers URL/health within 2 s (/health needs no login)
  "$py" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(f"{sys.argv[1]}/health", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
}

secret_file() {  # secret_file PATH: create PATH with a random secret (mode 600) if missing
  [[ -s "$1" ]] || (umask 077 && "$py" -c 'import secrets; print(secrets.token_urlsafe(24))' >"$1")
}

write_auth_ini() {  # DIR/auth.ini, MLflow's auth app settings (mode 600: the PG password)
  local admin_password_line=""
  if [[ -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]]; then
    admin_password_line="admin_password = $(cat "$dir/admin_password")"
  fi
  (umask 077 && cat >"$dir/auth.ini.tmp" <<EOF
# Written by scripts/mlflow_server.sh at each start and add-user/grant --gate; edit the script.
[mlflow]
# A login without a grant may do nothing; clients without a login get 401 anyway.
default_permission = NO_PERMISSIONS
database_uri = postgresql+psycopg2://mlflow:$(cat "$dir/pg_password")@127.0.0.1:$(cat "$dir/pg_port")/mlflow_auth
admin_username = $(cat "$dir/admin_username")
$admin_password_line
# MLflow's basic auth, plus: only alias_owners (and admins) move protected_aliases, and
# only admins rename a registered model (src/litpipe/tracking/server_auth.py).
authorization_function = litpipe.tracking.server_auth:authenticate_request

[litpipe]
protected_aliases = champion
alias_owners = $(paste -sd ' ' "$dir/alias_owners")
EOF
  ) && mv "$dir/auth.ini.tmp" "$dir/auth.ini"
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
    echo "MLFLOW_TRACKING_URI=$(stack_url)"
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
  if auth_on; then
    "$py" -c "import mlflow.server.auth" >/dev/null 2>&1 || {
      echo "mlflow_server.sh: MLflow's auth app cannot be imported in $venv_bin (Flask-WTF" \
           "missing?): ./setup.sh, or pip install -e '.[server]'" >&2
      exit 3; }
  fi
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
  local db
  for db in mlflow mlflow_auth; do  # runs and models; the auth app's users and grants
    as_pg "$bin/psql" -h "$pg" -p "$pg_port" -U mlflow -d postgres -tAq \
      -c "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 ||
      as_pg "$bin/createdb" -h "$pg" -p "$pg_port" -U mlflow "$db"
  done

  local -a auth_args=()
  local auth_env=()
  if auth_on; then
    # The admin login: from the environment, else a generated password kept in DIR (600).
    if [[ ! -s "$dir/admin_username" ]]; then
      echo "${MLFLOW_AUTH_ADMIN_USERNAME:-admin}" >"$dir/admin_username"
    fi
    [[ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]] || secret_file "$dir/admin_password"
    secret_file "$dir/flask_secret"  # the auth app's CSRF key: the same across restarts
    touch "$dir/alias_owners"
    write_auth_ini
    auth_args=(--app-name basic-auth)
    auth_env=(MLFLOW_AUTH_CONFIG_PATH="$dir/auth.ini"
              MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$dir/flask_secret")")
  fi

  # The store URI goes through the environment, not argv: `ps` would show the password (the
  # S3 credentials, MLFLOW_S3_ENDPOINT_URL included, reach the server the same way).
  # setsid: the server, its uvicorn worker and job runners share one process group, which
  # `stop` ends as a whole.
  env "${auth_env[@]}" \
    MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://mlflow:$password@127.0.0.1:$pg_port/mlflow" \
    MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}" \
    ORT_DISABLE_TELEMETRY="${ORT_DISABLE_TELEMETRY:-1}" \
    setsid "$venv_bin/mlflow" server "${auth_args[@]}" \
    --artifacts-destination "$destination" --serve-artifacts \
    --host "$host" --port "$mlflow_port" --workers 1 \
    </dev/null >"$dir/mlflow.log" 2>&1 &
  echo $! >"$dir/mlflow.pid"
  echo "$mlflow_port" >"$dir/mlflow_port"
  echo "$host" >"$dir/mlflow_host"

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
    if healthy "$(stack_url)"; then
      echo "MLFLOW_TRACKING_URI=$(stack_url)"
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

manage_user() {  # add-user / grant NAME ROLE on the running server, as its admin
  alive && healthy "$(stack_url)" || {
    echo "mlflow_server.sh: no server running in $dir: start it first" >&2; exit 2; }
  [[ -f "$dir/auth.ini" ]] || {
    echo "mlflow_server.sh: the stack in $dir runs without logins (MLFLOW_AUTH=off)" >&2; exit 2; }
  local admin_password="${MLFLOW_AUTH_ADMIN_PASSWORD:-}"
  [[ -n "$admin_password" ]] || admin_password="$(cat "$dir/admin_password" 2>/dev/null)" || {
    echo "mlflow_server.sh: the admin password is neither in MLFLOW_AUTH_ADMIN_PASSWORD nor" \
         "in $dir/admin_password" >&2; exit 2; }
  mkdir -p "$dir/users" && chmod 700 "$dir/users"
  # The admin login reaches the helper through its environment, as MLflow's client reads it.
  MLFLOW_TRACKING_USERNAME="$(cat "$dir/admin_username")" \
  MLFLOW_TRACKING_PASSWORD="$admin_password" \
  MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}" PYTHONWARNINGS=ignore \
    "$py" - "$cmd" "$user_name" "$role" "$(stack_url)" "$dir/users" \
    "${EXPERIMENT:-litpipe}" "${REGISTERED_MODEL:-litpipe-classifier}" <<'EOF' || exit $?
import os, secrets, sys
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.server.auth.client import AuthServiceClient
from mlflow.tracking import MlflowClient

action, name, role, uri, users_dir, experiment, model = sys.argv[1:8]
level = {"--read": "READ", "--edit": "EDIT", "--gate": "EDIT"}[role]
try:
    client, auth = MlflowClient(uri, registry_uri=uri), AuthServiceClient(uri)
    # Created by the admin, so that no client becomes their owner (MANAGE: may delete).
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    try:
        client.get_registered_model(model)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(model)
    if action == "add-user":
        password = os.environ.get("MLFLOW_NEW_USER_PASSWORD") or secrets.token_urlsafe(24)
        auth.create_user(name, password)
        if not os.environ.get("MLFLOW_NEW_USER_PASSWORD"):
            path = Path(users_dir) / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(password + "\n")
            print(f"mlflow_server.sh: user {name}: password in {path} (mode 600)")
    else:
        auth.get_user(name)  # an unknown user fails here, not after a revoke
    for kind, resource in (("experiment", exp_id), ("registered_model", model)):
        try:
            auth.revoke_user_permission(name, kind, resource)
        except MlflowException:
            pass  # there was no grant to replace
        auth.grant_user_permission(name, kind, resource, level)
    print(f"mlflow_server.sh: user {name}: {level} on experiment {experiment!r} and registered "
          f"model {model!r}" + ("; may move champion" if role == "--gate" else ""))
except MlflowException as exc:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(f"mlflow_server.sh: {action} {name}: {text[:300]}", file=sys.stderr)
    sys.exit(2)
EOF
  # Who may move champion: the [litpipe] section of auth.ini, read by the server per request.
  local others
  others="$(grep -vxF "$user_name" "$dir/alias_owners" || true)"
  { [[ -n "$others" ]] && echo "$others"; [[ "$role" == --gate ]] && echo "$user_name"; } \
    >"$dir/alias_owners.tmp" || true
  mv "$dir/alias_owners.tmp" "$dir/alias_owners"
  write_auth_ini
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  uri) stack_url ;;
  status) healthy "$(stack_url)" ;;
  add-user | grant) manage_user ;;
esac
