#!/usr/bin/env bash
# A shared MLflow tracking server as a team runs it: PostgreSQL backend store, artifacts served (uploaded and
# downloaded) through the server. See docs/tracking_server.md.
#
#   scripts/tracking_server.sh start          install PostgreSQL if missing, init/start the cluster, start mlflow
#   scripts/tracking_server.sh stop           stop mlflow and PostgreSQL (the data stays in $TRACKING_DIR)
#   scripts/tracking_server.sh status         what runs, on which ports; exit 1 when the server is not up
#   scripts/tracking_server.sh uri            print the tracking URI of the running server
#   scripts/tracking_server.sh backup DIR     pg_dump of the store and a copy of the artifacts into DIR (server up)
#
# Settings (environment):
#   TRACKING_DIR    state folder (default: <repo>/.tracking): postgres/ (cluster), artifacts/, logs/, state.env
#   MLFLOW_HOST     interface mlflow listens on (default 127.0.0.1; 0.0.0.0 for a team on the network)
#   MLFLOW_PORT     mlflow port (default: the last one used, else a free port)
#   PG_PORT         PostgreSQL port (default: the last one used, else a free port); PostgreSQL listens on 127.0.0.1
#   MLFLOW_WORKERS  mlflow server worker processes (default 2)
#   MLFLOW_BIN      the mlflow executable (default <repo>/.venv/bin/mlflow, else mlflow on PATH)
#   PG_BINDIR       PostgreSQL's bin folder (default: initdb on PATH, else the newest /usr/lib/postgresql/*/bin)
#   PG_OS_USER      when run as root (PostgreSQL refuses to): the OS user that owns and runs the cluster
#                   (default postgres, created with useradd when missing)
#   START_TIMEOUT   seconds to wait for mlflow to answer /health (default 180)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TRACKING_DIR="$(mkdir -p "${TRACKING_DIR:-$REPO/.tracking}" && cd "${TRACKING_DIR:-$REPO/.tracking}" && pwd)"
PG_HOME="$TRACKING_DIR/postgres"        # owned by the user PostgreSQL runs as (0700)
PGDATA="$PG_HOME/data"
PG_LOG="$PG_HOME/postgres.log"
ARTIFACTS="$TRACKING_DIR/artifacts"
LOGS="$TRACKING_DIR/logs"
STATE="$TRACKING_DIR/state.env"
PASSWORD_FILE="$TRACKING_DIR/pg.password"
DB_NAME=mlflow
DB_USER=mlflow
MLFLOW_HOST="${MLFLOW_HOST:-127.0.0.1}"
MLFLOW_WORKERS="${MLFLOW_WORKERS:-2}"
START_TIMEOUT="${START_TIMEOUT:-180}"

say() { echo "tracking_server: $*" >&2; }
die() { echo "tracking_server: error: $*" >&2; exit 1; }

# --------------------------------------------------------------------------------------------- state (ports, pid)
load_state() { if [[ -f "$STATE" ]]; then # shellcheck disable=SC1090
  source "$STATE"; fi; }
save_state() {
  umask 077
  printf 'SAVED_PG_PORT=%s\nSAVED_MLFLOW_PORT=%s\nSAVED_MLFLOW_HOST=%s\nMLFLOW_PID=%s\n' \
    "$PG_PORT" "$MLFLOW_PORT" "$MLFLOW_HOST" "${MLFLOW_PID:-}" > "$STATE"
}

free_port() {  # a port nothing listens on now (the kernel's pick)
  local py; py="$(python_bin)"
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_free() { "$(python_bin)" -c "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', int('$1')))" 2>/dev/null; }

pick_port() {  # NAME EXPLICIT SAVED: the port asked for (must be free), else the last one used if free, else any
  if [[ -n "$2" ]]; then port_free "$2" || die "$1=$2 is taken (or not a port): choose another"; echo "$2"
  elif [[ -n "$3" ]] && port_free "$3"; then echo "$3"
  else free_port; fi
}

python_bin() { if [[ -x "$REPO/.venv/bin/python" ]]; then echo "$REPO/.venv/bin/python"; else command -v python3; fi; }

mlflow_bin() {
  if [[ -n "${MLFLOW_BIN:-}" ]]; then [[ -x "$MLFLOW_BIN" ]] || die "MLFLOW_BIN=$MLFLOW_BIN is not an executable"
    echo "$MLFLOW_BIN"
  elif [[ -x "$REPO/.venv/bin/mlflow" ]]; then echo "$REPO/.venv/bin/mlflow"
  elif command -v mlflow >/dev/null; then command -v mlflow
  else die "mlflow not found: run 'make install' (it installs mlflow into .venv) or set MLFLOW_BIN"; fi
}

check_driver() {  # mlflow's interpreter (its shebang) must import psycopg, SQLAlchemy's postgresql:// driver
  local py; py="$(sed -n '1s/^#!//p' "$1")"; py="${py%% *}"
  if [[ -x "$py" ]] && ! "$py" -c "import psycopg" 2>/dev/null; then
    die "the PostgreSQL driver psycopg is missing beside mlflow ($py): run 'make install' (requirements/lock.txt has it) or pip install 'psycopg[binary]'"
  fi
}

tracking_uri() { local host="$MLFLOW_HOST"; [[ "$host" == 0.0.0.0 ]] && host=127.0.0.1; echo "http://$host:$MLFLOW_PORT"; }

healthy() { "$(python_bin)" - "$1" <<'EOF'
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1] + "/health", timeout=3).status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

# ------------------------------------------------------------------------------------------------------ PostgreSQL
find_pg_bindir() {  # prints nothing when PostgreSQL is not installed
  if [[ -n "${PG_BINDIR:-}" ]]; then echo "$PG_BINDIR"; return; fi
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then dirname "$(readlink -f "$(command -v initdb)")"; return; fi
  local d; d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [[ -n "$d" && -x "$d/initdb" ]] && echo "$d"
}

install_postgres() {  # Debian's package: needs apt-get and root (or password-less sudo)
  command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is missing: install PostgreSQL (initdb, pg_ctl, psql) and set PG_BINDIR"
  local sudo=()
  if [[ $EUID -ne 0 ]]; then
    sudo -n true 2>/dev/null || die "PostgreSQL is not installed and installing it needs root: run 'sudo apt-get install -y postgresql' (or run this script as root)"
    sudo=(sudo -n)
  fi
  say "PostgreSQL not found: installing Debian's postgresql package (apt-get)"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 \
    || die "apt-get update failed (no network or no package mirror?): install postgresql by hand"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2 \
    || die "apt-get install postgresql failed: install it by hand (initdb, pg_ctl, psql) and set PG_BINDIR"
}

# Run a PostgreSQL server-side command as the cluster's owner: ourselves, or PG_OS_USER when we are root.
as_pg() { if [[ $EUID -eq 0 ]]; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi; }

prepare_pg_user() {
  [[ $EUID -eq 0 ]] || return 0
  PG_OS_USER="${PG_OS_USER:-postgres}"
  if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
    say "running as root, which PostgreSQL refuses: creating the system user $PG_OS_USER to run the cluster"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER" \
      || die "cannot create the user $PG_OS_USER (useradd): set PG_OS_USER to an existing non-root user"
  fi
  runuser -u "$PG_OS_USER" -- test -x "$TRACKING_DIR" \
    || die "running as root, PostgreSQL runs as $PG_OS_USER, who cannot reach $TRACKING_DIR (a parent folder is private): set TRACKING_DIR to a folder under a world-readable path (e.g. /srv/omics-risk-tracking), or run as a normal user"
}

pg_running() { [[ -f "$PGDATA/postmaster.pid" ]] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

init_cluster() {
  [[ -f "$PGDATA/PG_VERSION" ]] && return 0
  say "initialising a PostgreSQL cluster in $PGDATA"
  mkdir -p "$PG_HOME"; chmod 700 "$PG_HOME"
  [[ $EUID -eq 0 ]] && chown "$PG_OS_USER" "$PG_HOME"
  umask 077
  [[ -s "$PASSWORD_FILE" ]] || "$(python_bin)" -c 'import secrets; print(secrets.token_hex(24))' > "$PASSWORD_FILE"
  local pw="$PG_HOME/.initdb.pw"
  cp "$PASSWORD_FILE" "$pw"; [[ $EUID -eq 0 ]] && chown "$PG_OS_USER" "$pw"
  if ! as_pg "$PG_BIN/initdb" -D "$PGDATA" -U "$DB_USER" --pwfile="$pw" --auth=scram-sha-256 \
      --encoding=UTF8 --no-locale > "$LOGS/initdb.log" 2>&1; then
    rm -f "$pw"; tail -n 20 "$LOGS/initdb.log" >&2; die "initdb failed (log: $LOGS/initdb.log)"
  fi
  rm -f "$pw"
}

start_pg() {
  if pg_running; then say "PostgreSQL already running (port $PG_PORT)"; return 0; fi
  rm -f "$PGDATA/postmaster.pid.stale"
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t 60 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='$PG_HOME'" start >&2 \
    || { tail -n 20 "$PG_LOG" >&2 2>/dev/null || true; die "PostgreSQL did not start (log: $PG_LOG)"; }
}

psql_() { PGPASSWORD="$(cat "$PASSWORD_FILE")" "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" -v ON_ERROR_STOP=1 -qtA "$@"; }

create_db() {
  [[ "$(psql_ -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" == 1 ]] && return 0
  say "creating the database $DB_NAME"
  psql_ -d postgres -c "CREATE DATABASE $DB_NAME" >/dev/null
}

backend_uri() { echo "postgresql://$DB_USER:$(cat "$PASSWORD_FILE")@127.0.0.1:$PG_PORT/$DB_NAME"; }

# ------------------------------------------------------------------------------------------------------ commands
cmd_start() {
  mkdir -p "$ARTIFACTS" "$LOGS"
  load_state
  if [[ -n "${MLFLOW_PID:-}" ]] && kill -0 "$MLFLOW_PID" 2>/dev/null; then
    MLFLOW_PORT="${SAVED_MLFLOW_PORT}"; MLFLOW_HOST="${SAVED_MLFLOW_HOST}"
    healthy "$(tracking_uri)" && { say "already running (pid $MLFLOW_PID)"; print_uri; return 0; }
    die "mlflow server (pid $MLFLOW_PID) runs but does not answer $(tracking_uri)/health: $0 stop, then start"
  fi
  # the cheap checks first: the mlflow executable and its port
  local mlflow; mlflow="$(mlflow_bin)"
  check_driver "$mlflow"
  MLFLOW_PORT="$(pick_port MLFLOW_PORT "${MLFLOW_PORT:-}" "${SAVED_MLFLOW_PORT:-}")"
  if [[ -n "${PG_BINDIR:-}" && ! -x "${PG_BINDIR}/initdb" ]]; then die "PG_BINDIR=$PG_BINDIR has no initdb"; fi
  PG_BIN="$(find_pg_bindir || true)"
  if [[ -z "$PG_BIN" ]]; then install_postgres; PG_BIN="$(find_pg_bindir || true)"; fi
  [[ -n "$PG_BIN" ]] || die "PostgreSQL binaries (initdb, pg_ctl) not found after installing: set PG_BINDIR"
  prepare_pg_user
  if pg_running; then PG_PORT="${SAVED_PG_PORT:?PostgreSQL runs in $PGDATA but $STATE has no port: stop it first}"
  else PG_PORT="$(pick_port PG_PORT "${PG_PORT:-}" "${SAVED_PG_PORT:-}")"; fi
  init_cluster
  start_pg
  create_db

  say "starting mlflow server on $MLFLOW_HOST:$MLFLOW_PORT (log: $LOGS/mlflow.log)"
  # The store URI (with the password) goes through the environment, not the command line that `ps` shows.
  # setsid: its own process group, so that stop ends the server and its workers, and nothing else.
  # MLflow's job runner (GenAI trace jobs, a dozen worker processes) is off unless asked for: nothing here uses it.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
  MLFLOW_BACKEND_STORE_URI="$(backend_uri)" setsid "$mlflow" server \
    --serve-artifacts --artifacts-destination "$ARTIFACTS" \
    --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS" \
    >> "$LOGS/mlflow.log" 2>&1 < /dev/null &
  MLFLOW_PID=$!
  save_state
  local waited=0
  until healthy "$(tracking_uri)"; do
    if ! kill -0 "$MLFLOW_PID" 2>/dev/null; then
      tail -n 30 "$LOGS/mlflow.log" >&2; stop_pg; die "mlflow server exited while starting (log: $LOGS/mlflow.log)"
    fi
    (( waited >= START_TIMEOUT )) && { tail -n 30 "$LOGS/mlflow.log" >&2; stop_mlflow; stop_pg
      die "mlflow server did not answer $(tracking_uri)/health within ${START_TIMEOUT}s (log: $LOGS/mlflow.log)"; }
    sleep 1; waited=$((waited + 1))
  done
  print_uri
}

print_uri() {
  local uri; uri="$(tracking_uri)"
  say "up: $uri (PostgreSQL on 127.0.0.1:${PG_PORT:-${SAVED_PG_PORT:-?}}, artifacts in $ARTIFACTS)"
  echo "tracking.uri=$uri"
  echo "MLFLOW_TRACKING_URI=$uri"
}

stop_mlflow() {
  if [[ -n "${MLFLOW_PID:-}" ]] && kill -0 "$MLFLOW_PID" 2>/dev/null; then
    say "stopping mlflow server (process group $MLFLOW_PID)"
    kill -TERM -- "-$MLFLOW_PID" 2>/dev/null || kill -TERM "$MLFLOW_PID" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$MLFLOW_PID" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$MLFLOW_PID" 2>/dev/null && kill -KILL -- "-$MLFLOW_PID" 2>/dev/null || true
  fi
}

stop_pg() {
  PG_BIN="$(find_pg_bindir || true)"
  if [[ -n "$PG_BIN" && -f "$PGDATA/postmaster.pid" ]]; then
    if [[ $EUID -eq 0 ]]; then PG_OS_USER="${PG_OS_USER:-$(stat -c %U "$PGDATA")}"; fi
    say "stopping PostgreSQL ($PGDATA)"
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >&2 || true
  fi
}

cmd_stop() {
  load_state
  stop_mlflow
  stop_pg
  if [[ -f "$STATE" ]]; then PG_PORT="${SAVED_PG_PORT:-}"; MLFLOW_PORT="${SAVED_MLFLOW_PORT:-}"
    MLFLOW_HOST="${SAVED_MLFLOW_HOST:-$MLFLOW_HOST}"; MLFLOW_PID=""; save_state; fi
  say "stopped (data kept in $TRACKING_DIR)"
}

cmd_status() {
  load_state
  [[ -n "${SAVED_MLFLOW_PORT:-}" ]] || { say "never started here ($TRACKING_DIR)"; return 1; }
  MLFLOW_PORT="$SAVED_MLFLOW_PORT"; MLFLOW_HOST="$SAVED_MLFLOW_HOST"; PG_PORT="$SAVED_PG_PORT"
  PG_BIN="$(find_pg_bindir || true)"
  [[ $EUID -eq 0 && -d "$PGDATA" ]] && PG_OS_USER="${PG_OS_USER:-$(stat -c %U "$PGDATA")}"
  if [[ -n "$PG_BIN" ]] && pg_running; then say "PostgreSQL: running on 127.0.0.1:$PG_PORT ($PGDATA)"
  else say "PostgreSQL: stopped"; fi
  if [[ -n "${MLFLOW_PID:-}" ]] && kill -0 "$MLFLOW_PID" 2>/dev/null && healthy "$(tracking_uri)"; then
    say "mlflow: running (pid $MLFLOW_PID)"; print_uri
  else say "mlflow: stopped"; return 1; fi
}

cmd_uri() { load_state; [[ -n "${MLFLOW_PID:-}" ]] && kill -0 "$MLFLOW_PID" 2>/dev/null || die "not running: start it with $0 start"
  MLFLOW_PORT="$SAVED_MLFLOW_PORT"; MLFLOW_HOST="$SAVED_MLFLOW_HOST"; tracking_uri; }

cmd_backup() {
  local dest="${1:?usage: $0 backup DIR}"
  load_state; PG_PORT="${SAVED_PG_PORT:?not started here}"; PG_BIN="$(find_pg_bindir)"
  mkdir -p "$dest"; dest="$(cd "$dest" && pwd)"
  local stamp; stamp="$(date +%Y%m%d-%H%M%S)"
  PGPASSWORD="$(cat "$PASSWORD_FILE")" "$PG_BIN/pg_dump" -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" -Fc \
    -f "$dest/mlflow-$stamp.dump" "$DB_NAME" || die "pg_dump failed: is the server up ($0 status)?"
  tar -C "$TRACKING_DIR" -czf "$dest/artifacts-$stamp.tar.gz" artifacts
  say "backup: $dest/mlflow-$stamp.dump (pg_restore) and $dest/artifacts-$stamp.tar.gz"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  uri) cmd_uri ;;
  backup) shift; cmd_backup "$@" ;;
  *) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
