#!/usr/bin/env bash
# A standalone Flink session cluster for flowrec, run from the Flink
# distribution inside the apache-flink pip package (no separate download):
# one JobManager and one TaskManager (or more), sized for a small machine.
#
#   deploy/cluster.sh start     start it (idempotent; restarts missing TaskManagers)
#   deploy/cluster.sh stop      stop it (idempotent)
#   deploy/cluster.sh restart   stop, then start with the same settings (after a code
#                               upgrade: thread mode caches the job's Python modules
#                               inside the TaskManager for its whole life)
#   deploy/cluster.sh status    print the REST overview; exit 1 when not running
#   deploy/cluster.sh env       print FLINK_HOME, FLINK_CONF_DIR, FLOWREC_CLUSTER_DIR and
#                               FLOWREC_FLINK_REST_URL (shell syntax, for `eval`), e.g. to
#                               run the distribution's bin/flink against this cluster
#
# Settings (environment; defaults in brackets):
#   FLOWREC_CLUSTER_DIR        run directory: rendered conf, jar links, logs, pids,
#                              checkpoints, savepoints [<repo>/.flowrec/cluster]
#   FLOWREC_PYTHON             the venv's interpreter [<repo>/.venv/bin/python]
#   FLOWREC_FLINK_REST_PORT    REST API and web UI port [8081]
#   FLOWREC_FLINK_RPC_PORT     JobManager RPC port [6123]
#   FLOWREC_FLINK_BIND_HOST    address every endpoint binds to [localhost]
#   FLOWREC_FLINK_SLOTS        slots per TaskManager [2]
#   FLOWREC_FLINK_TASKMANAGERS TaskManagers on this host [1].  In thread mode all Python
#                              of one TaskManager shares one interpreter (one core):
#                              more slots add no Python cores, more TaskManagers do, so
#                              on a multi-core box prefer N TaskManagers with 1 slot each
#                              (a job's parallelism is at most TASKMANAGERS x SLOTS)
#   FLOWREC_FLINK_TM_MEMORY    TaskManager process size [1536m]
#   FLOWREC_FLINK_JM_MEMORY    JobManager process size [1024m]
#   FLOWREC_FLINK_START_TIMEOUT seconds to wait for the TaskManager to register [90]
#   FLOWREC_NATIVE_ALLOCATOR   auto | jemalloc | glibc | system [auto: jemalloc when
#                              installed, else glibc's malloc tuned; see pipelines/flink_env.py]
#
# The effective settings of a started cluster are kept in <run dir>/cluster.env,
# so `status` and `stop` (and `flowrec submit`) find it without repeating them.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEMPLATE="$REPO/deploy/flink-conf/config.yaml"
RUN_DIR=${FLOWREC_CLUSTER_DIR:-$REPO/.flowrec/cluster}
CONF_DIR="$RUN_DIR/conf"
STATE_FILE="$RUN_DIR/cluster.env"

die() { echo "cluster: $*" >&2; exit 1; }
say() { echo "cluster: $*" >&2; }

# A started cluster's settings win over the environment for status/stop, so
# those commands address the cluster that is actually running.
load_settings() {
  local from_state=${1:-no}
  if [ "$from_state" = yes ] && [ -f "$STATE_FILE" ]; then
    # shellcheck disable=SC1090
    . "$STATE_FILE"
  fi
  PYTHON=${PYTHON:-${FLOWREC_PYTHON:-$REPO/.venv/bin/python}}
  REST_PORT=${REST_PORT:-${FLOWREC_FLINK_REST_PORT:-8081}}
  RPC_PORT=${RPC_PORT:-${FLOWREC_FLINK_RPC_PORT:-6123}}
  BIND_HOST=${BIND_HOST:-${FLOWREC_FLINK_BIND_HOST:-localhost}}
  SLOTS=${SLOTS:-${FLOWREC_FLINK_SLOTS:-2}}
  TASKMANAGERS=${TASKMANAGERS:-${FLOWREC_FLINK_TASKMANAGERS:-1}}
  TM_MEMORY=${TM_MEMORY:-${FLOWREC_FLINK_TM_MEMORY:-1536m}}
  JM_MEMORY=${JM_MEMORY:-${FLOWREC_FLINK_JM_MEMORY:-1024m}}
  [ -x "$PYTHON" ] || die "no Python interpreter at $PYTHON (create the venv with 'make setup' or set FLOWREC_PYTHON)"
  for n in "$REST_PORT" "$RPC_PORT" "$SLOTS" "$TASKMANAGERS"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "ports, slots and TaskManagers must be numbers (got '$n')"
  done
  (( TASKMANAGERS >= 1 && SLOTS >= 1 )) || die "FLOWREC_FLINK_TASKMANAGERS and FLOWREC_FLINK_SLOTS must be at least 1"
  FLINK_HOME=$("$PYTHON" -c 'import os, pyflink; print(os.path.dirname(os.path.abspath(pyflink.__file__)))') \
    || die "pyflink is not installed in $PYTHON's environment"
  [ -x "$FLINK_HOME/bin/start-cluster.sh" ] || die "$FLINK_HOME has no bin/start-cluster.sh"
}

# Variables every Flink script reads: our conf, our lib dir, our logs and pids,
# and the interpreter path the embedded (thread-mode) Python needs.
export_flink_env() {
  export FLINK_CONF_DIR="$CONF_DIR"
  export FLINK_LIB_DIR="$RUN_DIR/lib"
  export FLINK_LOG_DIR="$RUN_DIR/log"
  export FLINK_PID_DIR="$RUN_DIR/pid"
  export FLINK_IDENT_STRING=flowrec
  local site
  site=$("$PYTHON" -c 'import os, site; print(os.pathsep.join(p for p in site.getsitepackages() if os.path.isdir(p)))')
  export PYTHONPATH="$REPO:$site${PYTHONPATH:+:$PYTHONPATH}"
  # The JobManager's and TaskManagers' native allocator: jemalloc when installed (pipelines/flink_env.py, allocator_env).
  local allocator
  allocator=$("$PYTHON" -m pipelines.flink_env allocator-env) || die "cannot set up the native allocator (above)"
  eval "$allocator"
}

rest_url() { echo "http://$BIND_HOST:$REST_PORT"; }

# GET a REST path; prints the body, fails when the server does not answer 200.
rest_get() {
  "$PYTHON" - "$(rest_url)$1" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as response:
        sys.stdout.write(response.read().decode())
except Exception as exc:  # any failure means "not answering"
    sys.stderr.write(f"{sys.argv[1]}: {exc}\n")
    sys.exit(1)
PY
}

# Pids from a daemon's pid file that are alive and are that daemon with our conf dir.
live_pids() {
  local kind=$1 class file pid args
  case "$kind" in
    standalonesession) class=StandaloneSessionClusterEntrypoint ;;
    taskexecutor) class=TaskManagerRunner ;;
  esac
  file="$RUN_DIR/pid/flink-flowrec-$kind.pid"
  [ -f "$file" ] || return 0
  while read -r pid; do
    [ -n "$pid" ] || continue
    args=$(ps -p "$pid" -o args= 2>/dev/null || true)
    if [[ "$args" == *"$class"* && "$args" == *"$CONF_DIR"* ]]; then echo "$pid"; fi
  done < "$file"
}

# Rewrite a pid file with only its live pids (Flink's scripts stop the last line).
prune_pid_file() {
  local kind=$1 file="$RUN_DIR/pid/flink-flowrec-$1.pid" pids
  [ -f "$file" ] || return 0
  pids=$(live_pids "$kind")
  if [ -n "$pids" ]; then echo "$pids" > "$file"; else rm -f "$file"; fi
}

port_free() {
  "$PYTHON" - "$BIND_HOST" "$1" <<'PY'
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((sys.argv[1], int(sys.argv[2])))
    except OSError:
        sys.exit(1)
PY
}

render_conf() {
  mkdir -p "$CONF_DIR" "$RUN_DIR/log" "$RUN_DIR/pid" "$RUN_DIR/lib" "$RUN_DIR/checkpoints" "$RUN_DIR/savepoints"
  # Nothing in the run directory belongs in git (the pattern also hides this file).
  echo '*' > "$RUN_DIR/.gitignore"
  LOG_DIR="$RUN_DIR/log" PID_DIR="$RUN_DIR/pid" RUN_DIR="$RUN_DIR" PYTHON="$PYTHON" REST_PORT="$REST_PORT" \
  RPC_PORT="$RPC_PORT" BIND_HOST="$BIND_HOST" SLOTS="$SLOTS" TM_MEMORY="$TM_MEMORY" JM_MEMORY="$JM_MEMORY" \
    "$PYTHON" - "$TEMPLATE" "$CONF_DIR/config.yaml" <<'PY'
import os, re, sys
text = open(sys.argv[1], encoding="utf-8").read()
names = set(re.findall(r"\$\{([A-Z_]+)\}", text))
missing = sorted(n for n in names if not os.environ.get(n))
if missing:
    sys.exit(f"cluster: template placeholders without a value: {', '.join(missing)}")
with open(sys.argv[2], "w", encoding="utf-8") as out:
    out.write(re.sub(r"\$\{([A-Z_]+)\}", lambda m: os.environ[m.group(1)], text))
PY
  # Logging setups come from the distribution unchanged.
  cp "$FLINK_HOME"/conf/log4j*.properties "$FLINK_HOME"/conf/logback*.xml "$CONF_DIR"/
  # One line per TaskManager: start-cluster.sh starts one for each (their own ports are picked free).
  for ((i = 0; i < TASKMANAGERS; i++)); do echo "$BIND_HOST"; done > "$CONF_DIR/workers"
  echo "$BIND_HOST:$REST_PORT" > "$CONF_DIR/masters"
  # lib/ = the distribution's jars + flink-python: without the latter on the
  # cluster classpath only the first thread-mode Python job of a session works.
  rm -f "$RUN_DIR"/lib/*.jar
  ln -s "$FLINK_HOME"/lib/*.jar "$RUN_DIR/lib/"
  local python_jar
  python_jar=$(ls "$FLINK_HOME"/opt/flink-python-*.jar 2>/dev/null | head -1)
  [ -n "$python_jar" ] || die "no opt/flink-python-*.jar in $FLINK_HOME"
  ln -s "$python_jar" "$RUN_DIR/lib/"
  cat > "$STATE_FILE" <<EOF
PYTHON='$PYTHON'
REST_PORT='$REST_PORT'
RPC_PORT='$RPC_PORT'
BIND_HOST='$BIND_HOST'
SLOTS='$SLOTS'
TASKMANAGERS='$TASKMANAGERS'
TM_MEMORY='$TM_MEMORY'
JM_MEMORY='$JM_MEMORY'
EOF
}

# Wait until the REST API reports every TaskManager registered with all its slots.
wait_ready() {
  local timeout=${FLOWREC_FLINK_START_TIMEOUT:-90} started=$SECONDS overview
  while (( SECONDS - started < timeout )); do
    if overview=$(rest_get /overview 2>/dev/null) && \
       "$PYTHON" -c 'import json,sys; o=json.loads(sys.argv[1]); n=int(sys.argv[2]); sys.exit(0 if o["taskmanagers"] >= n and o["slots-total"] >= n * int(sys.argv[3]) else 1)' "$overview" "$TASKMANAGERS" "$SLOTS"; then
      return 0
    fi
    if [ -z "$(live_pids standalonesession)" ] || [ -z "$(live_pids taskexecutor)" ]; then
      say "a Flink process exited during start-up; last log lines:"
      tail -n 30 "$RUN_DIR"/log/*.log "$RUN_DIR"/log/*.out 2>/dev/null >&2 || true
      return 1
    fi
    sleep 0.5
  done
  say "the cluster did not become ready within ${timeout}s; logs are in $RUN_DIR/log"
  return 1
}

cmd_start() {
  load_settings yes
  export_flink_env
  mkdir -p "$RUN_DIR/pid"
  prune_pid_file standalonesession
  prune_pid_file taskexecutor
  local jm tm missing
  jm=$(live_pids standalonesession)
  tm=$(live_pids taskexecutor)
  missing=$(( TASKMANAGERS - $(echo -n "$tm" | grep -c '^' || true) ))
  if [ -n "$jm" ] && (( missing <= 0 )); then
    say "already running (JobManager pid $jm, TaskManager pid $(echo $tm)) at $(rest_url)"
    return 0
  fi
  if [ -n "$jm" ]; then
    say "JobManager running (pid $jm); starting the missing TaskManager$( (( missing > 1 )) && echo "s ($missing)")"
    for ((i = 0; i < missing; i++)); do "$FLINK_HOME/bin/taskmanager.sh" start >/dev/null; done
  else
    # A fresh start: the environment decides the settings, not an old cluster.env.
    rm -f "$STATE_FILE"
    unset PYTHON REST_PORT RPC_PORT BIND_HOST SLOTS TASKMANAGERS TM_MEMORY JM_MEMORY
    load_settings no
    export_flink_env
    if [ -n "$tm" ]; then
      say "stopping a TaskManager left without its JobManager (pid $tm)"
      "$FLINK_HOME/bin/taskmanager.sh" stop-all >/dev/null
    fi
    port_free "$REST_PORT" || die "REST port $REST_PORT on $BIND_HOST is in use (another Flink?); set FLOWREC_FLINK_REST_PORT"
    port_free "$RPC_PORT" || die "RPC port $RPC_PORT on $BIND_HOST is in use; set FLOWREC_FLINK_RPC_PORT"
    render_conf
    say "starting Flink from $FLINK_HOME (conf $CONF_DIR, $TASKMANAGERS TaskManager(s) x $SLOTS slots, REST $(rest_url))"
    "$FLINK_HOME/bin/start-cluster.sh" >/dev/null
  fi
  wait_ready || { cmd_stop >/dev/null 2>&1 || true; die "start failed"; }
  say "running at $(rest_url) (logs in $RUN_DIR/log)"
}

cmd_stop() {
  load_settings yes
  [ -d "$CONF_DIR" ] || { say "not running (no $CONF_DIR)"; return 0; }
  export_flink_env
  prune_pid_file standalonesession
  prune_pid_file taskexecutor
  if [ -z "$(live_pids standalonesession)$(live_pids taskexecutor)" ]; then
    say "not running"
    return 0
  fi
  "$FLINK_HOME/bin/taskmanager.sh" stop-all >/dev/null || true
  "$FLINK_HOME/bin/jobmanager.sh" stop-all >/dev/null || true
  local started=$SECONDS pids
  while pids=$(live_pids standalonesession; live_pids taskexecutor) && [ -n "$pids" ]; do
    if (( SECONDS - started > 20 )); then
      say "still running after 20s, killing $pids"
      # shellcheck disable=SC2086
      kill -9 $pids 2>/dev/null || true
    fi
    sleep 0.2
  done
  rm -f "$RUN_DIR"/pid/*.pid
  say "stopped"
}

cmd_restart() {
  load_settings yes
  export FLOWREC_PYTHON="$PYTHON" FLOWREC_FLINK_REST_PORT="$REST_PORT" FLOWREC_FLINK_RPC_PORT="$RPC_PORT" \
    FLOWREC_FLINK_BIND_HOST="$BIND_HOST" FLOWREC_FLINK_SLOTS="$SLOTS" FLOWREC_FLINK_TM_MEMORY="$TM_MEMORY" \
    FLOWREC_FLINK_JM_MEMORY="$JM_MEMORY" FLOWREC_FLINK_TASKMANAGERS="$TASKMANAGERS"
  cmd_stop
  cmd_start
}

cmd_status() {
  load_settings yes
  local jm tm overview
  jm=$(live_pids standalonesession)
  tm=$(live_pids taskexecutor)
  echo "run dir:     $RUN_DIR"
  echo "rest:        $(rest_url)"
  echo "jobmanager:  $([ -n "$jm" ] && echo "pid $jm" || echo "not running")"
  echo "taskmanager: $([ -n "$tm" ] && echo "pid $(echo $tm)" || echo "not running")"
  if overview=$(rest_get /overview 2>/dev/null); then
    echo "overview:    $overview"
    [ -n "$jm" ] && [ -n "$tm" ] && return 0
  else
    echo "overview:    REST API not answering"
  fi
  return 1
}

cmd_env() {
  load_settings yes
  cat <<EOF
FLINK_HOME='$FLINK_HOME'
FLINK_CONF_DIR='$CONF_DIR'
FLOWREC_CLUSTER_DIR='$RUN_DIR'
FLOWREC_FLINK_REST_URL='$(rest_url)'
EOF
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_restart ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 start|stop|restart|status|env" >&2; exit 2 ;;
esac
