#!/usr/bin/env bash
# Usage: launch/local_cluster.sh start [N_WORKERS]   # head + N_WORKERS worker nodes (default 2)
#        launch/local_cluster.sh status
#        launch/local_cluster.sh stop
#
# A multi-node Ray cluster on ONE machine, to try the cluster code path (`lt-ray sweep --address`,
# `ray job submit`, trials spread over several raylets) without a cloud account. Every node is a
# separate `ray start`; Ray 2.60 allows several nodes on one host. The head uses LT_RAY_LOCAL_TMP,
# worker i uses LT_RAY_LOCAL_TMP/w<i>.
#
# Layout (mirrors cluster.yaml): the head advertises 0 CPUs and 0 GPUs, so trials run only on the
# workers; each worker advertises LT_RAY_WORKER_CPUS CPUs and LT_RAY_WORKER_GPUS GPUs. The
# dashboard and job API bind to 127.0.0.1. The GCS port listens on all interfaces and Ray 2.60
# maps 127.0.0.1 to the machine's routable IP for node addresses (ray/_private/services.py,
# resolve_ip_for_localhost), so on a shared network firewall the ports or use token auth.
#
# Environment (all optional):
#   LT_RAY_LOCAL_PORT        GCS port of the head                        (default 6390)
#   LT_RAY_LOCAL_DASHBOARD   dashboard / job API port                    (default 8266)
#   LT_RAY_LOCAL_TMP         Ray temp dir shared by the nodes            (default /tmp/ltray_<port>;
#                            keep it short: Ray's Unix socket paths live under it)
#   LT_RAY_HEAD_CPUS         CPUs the head advertises                    (default 0)
#   LT_RAY_WORKER_CPUS       CPUs each worker advertises                 (default 1)
#   LT_RAY_WORKER_GPUS       GPUs each worker advertises                 (default 0; on a machine with
#                            GPUs, give each worker a share that sums to the real count)
#   LT_RAY_LOCAL_AGENT_PORT  dashboard-agent HTTP port of the head; worker i uses this + i
#                            (default 52400, away from Ray's default 52365 used by other instances)
#   RAY_BIN                  the `ray` executable (default: `ray` on PATH, else <repo>/.venv/bin/ray)
#                            It must belong to the environment where lt-ray is installed: the
#                            nodes run trials with that Python.
#   RAY_AUTH_MODE            token auth. Ray 2.60's `ray start --head` turns token auth on by
#                            itself when a token exists (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
#                            ~/.ray/auth_token) and RAY_AUTH_MODE is unset, but worker nodes and
#                            clients given an explicit address do not. This script therefore sets
#                            RAY_AUTH_MODE=token for every node when a token exists, creates one
#                            (`ray get-auth-token --generate`) when RAY_AUTH_MODE=token and none
#                            exists, and tells you what clients need.
#
# `stop` ends only this cluster's processes (those whose command line names LT_RAY_LOCAL_TMP or the
# head address, plus their children); unlike `ray stop` it leaves other Ray instances alone.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

port="${LT_RAY_LOCAL_PORT:-6390}"
dash_port="${LT_RAY_LOCAL_DASHBOARD:-8266}"
tmp="${LT_RAY_LOCAL_TMP:-/tmp/ltray_${port}}"
head_cpus="${LT_RAY_HEAD_CPUS:-0}"
worker_cpus="${LT_RAY_WORKER_CPUS:-1}"
worker_gpus="${LT_RAY_WORKER_GPUS:-0}"
agent_port="${LT_RAY_LOCAL_AGENT_PORT:-52400}"
address="127.0.0.1:${port}"

usage() { sed -n '2,4p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# shellcheck source=launch/find_ray.sh
source "$root/launch/find_ray.sh"

# PIDs of this cluster's top-level processes. gcs_server, the raylets, the dashboard and the
# monitors name the temp dir in their command line; the Ray client proxy names the head address.
# A match must also be a Ray executable (gcs_server/raylet, a script inside the ray package, or
# `python -m ray.…`), so e.g. a `tail -f` on this cluster's logs is never touched.
own_pids() {
  local pid uid ray_proc
  ray_proc='^[^ ]*/(gcs_server|raylet) '                            # the C++ binaries
  ray_proc+='|^[^ ]*python[^ ]* (-[uB] )*[^ ]*/ray/[^ ]*\.py '       # scripts in the ray package
  ray_proc+='|^[^ ]*python[^ ]* (-[uB] )*-m ray\.'                   # python -m ray.…
  uid="$(id -u)"
  for pid in $(pgrep -u "$uid" -f -- "${tmp}( |/|\$)" 2>/dev/null || true) \
    $(pgrep -u "$uid" -f -- "ray\.util\.client\.server .*--address=[^ ]*:${port}( |\$)" \
      2>/dev/null || true); do
    if [[ "$pid" == "$$" ]]; then continue; fi
    if [[ "$(cmdline "$pid")" =~ $ray_proc ]]; then echo "$pid"; fi
  done | sort -u
}

# The command line of process $1, arguments separated by spaces ("" once it has exited).
cmdline() {
  tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null || ps -o args= -p "$1" 2>/dev/null || true
}

# $1 and all its descendants (workers, agents and trial actors are children of a raylet).
with_children() {
  local child
  echo "$1"
  for child in $(pgrep -P "$1" 2>/dev/null); do with_children "$child"; done
}

# Decide the auth mode once and export it, so the head, the workers and `ray status` agree.
setup_auth() {
  if [[ -z "${RAY_AUTH_MODE:-}" ]] && "$ray" get-auth-token >/dev/null 2>&1; then
    export RAY_AUTH_MODE=token
    echo "A Ray auth token exists: starting the cluster with RAY_AUTH_MODE=token."
  elif [[ "${RAY_AUTH_MODE:-}" == "token" ]] && ! "$ray" get-auth-token >/dev/null 2>&1; then
    echo "RAY_AUTH_MODE=token and no token yet: creating one with 'ray get-auth-token --generate'."
    "$ray" get-auth-token --generate >/dev/null
  fi
}

start() {
  local n="${1:-2}" i nodes
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "error: N_WORKERS must be a whole number, got '$n'" >&2; exit 2; }
  if [[ -n "$(own_pids)" ]]; then
    echo "error: a local cluster already runs (temp dir $tmp, port $port); run '$0 stop'" >&2
    exit 1
  fi
  find_ray
  setup_auth
  # The nodes pass PATH on to jobs and trials: put the environment of `ray` (and so of `lt-ray`,
  # which a job entrypoint calls by name) first, even when the venv is not activated.
  PATH="$(cd "$(dirname "$ray")" && pwd):$PATH"
  export PATH
  export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
  echo "Using $ray ($("$ray" --version 2>/dev/null | head -n1))"

  # Head: GCS on $port, dashboard + job API on 127.0.0.1:$dash_port, no CPU/GPU for trials.
  "$ray" start --head \
    --port="$port" \
    --dashboard-host=127.0.0.1 --dashboard-port="$dash_port" \
    --num-cpus="$head_cpus" --num-gpus=0 \
    --dashboard-agent-listen-port="$agent_port" \
    --temp-dir="$tmp" --disable-usage-stats >/dev/null

  # Workers. Each has its own temp dir under the head's: nodes sharing one temp dir also share
  # runtime_resources/, and a worker then deletes a job's working_dir (the job driver's current
  # directory on the head) once its trials are done. Each also gets its own dashboard-agent HTTP
  # port: with the default, every agent after the first fails to bind it.
  for ((i = 1; i <= n; i++)); do
    "$ray" start --address="$address" \
      --num-cpus="$worker_cpus" --num-gpus="$worker_gpus" \
      --dashboard-agent-listen-port=$((agent_port + i)) \
      --temp-dir="$tmp/w$i" --disable-usage-stats >/dev/null
  done

  # Wait (up to 30 s) until every node has registered, then show the cluster.
  for ((i = 0; i < 30; i++)); do
    nodes="$("$ray" status --address="$address" 2>/dev/null | grep -c ' node_' || true)"
    if [[ "$nodes" -ge $((n + 1)) ]]; then break; fi
    sleep 1
  done
  "$ray" status --address="$address" || true
  cat <<EOF

Local Ray cluster up: head + $n worker node(s), logs under $tmp/session_latest/logs
  sweep:      lt-ray sweep SPACE.yaml --address $address --storage /abs/path/results
  as a job:   LT_RAY_JOB_ADDRESS=http://127.0.0.1:$dash_port LT_RAY_STORAGE=/abs/path/results \\
                launch/submit.sh SPACE.yaml
  dashboard:  http://127.0.0.1:$dash_port
  status:     $0 status
  stop:       $0 stop
EOF
  if [[ "${RAY_AUTH_MODE:-}" == "token" ]]; then
    echo "Token auth is on: run clients with 'export RAY_AUTH_MODE=token' (the token is read"
    echo "from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token; 'ray get-auth-token'"
    echo "prints it)."
  fi
}

status() {
  find_ray
  setup_auth >/dev/null
  "$ray" status --address="$address"
}

# True while $1 runs (a zombie waiting to be reaped counts as gone).
alive() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || ps -o stat= -p "$1" 2>/dev/null || true)"
  [[ -n "$state" && "$state" != Z* ]]
}

# SIGTERM the given pids, wait up to 10 s, SIGKILL what is left.
terminate() {
  local pids="$*" i pid
  if [[ -z "${pids// /}" ]]; then return 0; fi
  kill -TERM $pids 2>/dev/null || true
  for ((i = 0; i < 20; i++)); do
    pids="$(for pid in $pids; do if alive "$pid"; then echo "$pid"; fi; done | tr '\n' ' ')"
    if [[ -z "${pids// /}" ]]; then return 0; fi
    sleep 0.5
  done
  echo "  still running after 10 s, sending SIGKILL: $pids"
  kill -KILL $pids 2>/dev/null || true
}

# Same order as `ray stop`: raylets (with their workers and agents) first, then the other
# processes, the GCS last, so no process loses the GCS while it is still shutting down.
stop() {
  local pid exe raylets="" others="" gcs=""
  for pid in $(own_pids); do
    exe="$(cmdline "$pid")"
    exe="${exe%% *}"
    case "$exe" in
      */raylet) raylets+=" $(with_children "$pid" | tr '\n' ' ')" ;;
      */gcs_server) gcs+=" $pid" ;;
      *) others+=" $(with_children "$pid" | tr '\n' ' ')" ;;
    esac
  done
  if [[ -z "${raylets// /}${others// /}${gcs// /}" ]]; then
    echo "No local cluster running with temp dir $tmp / port $port."
    return 0
  fi
  echo "Stopping the local cluster at $address"
  terminate $raylets
  terminate $others
  terminate $gcs
  echo "Stopped (logs kept under $tmp)."
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
