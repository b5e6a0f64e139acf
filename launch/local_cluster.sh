#!/usr/bin/env bash
# Usage: launch/local_cluster.sh start [N_WORKERS]   # head + N_WORKERS worker nodes (default 2)
#        launch/local_cluster.sh status
#        launch/local_cluster.sh stop
#
# A multi-node Ray cluster on ONE machine, to try the cluster code path (`lt-ray sweep --address`,
# `ray job submit`, trials spread over several raylets) without a cloud account. Every node is a
# separate `ray start`; Ray 2.60 allows several nodes on one host. The head uses LT_RAY_LOCAL_TMP,
# worker i uses LT_RAY_LOCAL_TMP/w<i>. Linux only (setsid, /proc).
#
# Layout (mirrors cluster.yaml): the head advertises 0 CPUs and 0 GPUs, so trials run only on the
# workers; each worker advertises LT_RAY_WORKER_CPUS CPUs and LT_RAY_WORKER_GPUS GPUs.
#
# What binds where (Ray 2.60: ray/scripts/scripts.py, ray/_private/services.py; listening sockets
# checked with `ss -ltnp` on a cluster started by this script):
#   * Every node is started with --node-ip-address=127.0.0.1, but `ray start` passes the value
#     through services.resolve_ip_for_localhost(), which replaces localhost/127.0.0.1/::1 by the
#     machine's routable IP whenever multi-node clusters are enabled (always on Linux; disabling
#     them with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 also forbids worker nodes). So the nodes
#     register, and reach each other, on the routable IP; Ray 2.60 offers no loopback-only cluster.
#   * 127.0.0.1 only: the dashboard and job API (LT_RAY_LOCAL_DASHBOARD, --dashboard-host).
#   * routable IP (+ 127.0.0.1): the dashboard agents' HTTP ports (LT_RAY_LOCAL_AGENT_PORT + i),
#     the Ray client server (10001) and the runtime-env agents (random ports).
#   * all interfaces: the GCS (LT_RAY_LOCAL_PORT), each raylet's node-manager and object-manager
#     ports, the agents' gRPC and metrics ports, the autoscaler's metrics port and the workers'
#     gRPC ports (random ports).
#   On a shared network, firewall these ports or turn on token auth (RAY_AUTH_MODE below).
#
# Process sessions: `start` runs each `ray start` (head and every worker) as the leader of a new
# process session (setsid) and records the session id (= that leader's pid) in
# LT_RAY_LOCAL_TMP/sessions, with the pid and start time of the processes the node has when its
# `ray start` returns (gcs_server, raylet, dashboard, agents, ...). Every process Ray starts for a
# node (raylet, workers, trial actors) inherits the node's session. `stop` reads the file, lists
# the live processes of each recorded session from /proc/<pid>/stat (6th field), SIGTERMs them
# (the workers' sessions first, the head's last; within a session the raylet first and the GCS
# last, like `ray stop`), waits up to 10 s per step, SIGKILLs what is left and removes the file.
# Which processes are ended is decided by session alone, never by name or command-line pattern,
# so other Ray instances on the machine are left alone (`ray stop` would end all of them).
# A recorded session counts as this cluster's only while one of its recorded processes is alive
# with the recorded start time (the kernel never reuses a session id while a member lives), and
# only in the same boot; otherwise it is reported and left alone, so a stale file never makes
# `stop` kill an unrelated session that got the same id later.
# One exception, by Ray's design: a job's entrypoint (`ray job submit -- lt-ray sweep ...`) runs in
# a session of its own (Ray's job supervisor starts it with start_new_session=True); Ray SIGKILLs
# its process group about 1 s after the supervisor actor, which lives in the head's session, ends.
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
sessions="$tmp/sessions"

usage() { sed -n '2,4p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# shellcheck source=launch/find_ray.sh
source "$root/launch/find_ray.sh"

# ---- processes, by session --------------------------------------------------------------------

# One line "pid sid starttime comm" for every live (not zombie) process owned by this user, read
# from /proc/<pid>/stat. Fields are counted after the last ')', because the command name in
# parentheses (field 2) may contain spaces and ')': the state is field 3, the session id field 6,
# the start time (clock ticks since boot) field 22. Uses only bash builtins (no fork per process).
proc_table() {
  local f line rest comm
  local -a x
  for f in /proc/[0-9]*/stat; do
    { read -r line < "$f"; } 2>/dev/null || continue
    rest="${line##*) }"
    read -r -a x <<< "$rest"
    [[ "${x[0]}" != Z && -O "${f%/stat}" ]] || continue
    comm="${line#*(}"
    echo "${line%% *} ${x[3]} ${x[19]} ${comm%)*}"
  done
}

# The pids in table $1 (proc_table's output) whose session is one of $2 (ids separated by
# spaces), limited by $3 to one step of the shutdown order: "raylet" (the raylets), "rest"
# (everything but the GCS) or "all".
members_of() {
  local pid sid start comm
  while read -r pid sid start comm; do
    [[ " $2 " == *" $sid "* ]] || continue
    case "$3:$comm" in
      raylet:raylet | rest:* | all:*) ;;
      *) continue ;;
    esac
    if [[ "$3" == rest && "$comm" == gcs_server ]]; then continue; fi
    echo "$pid"
  done <<< "$1"
}

# "pid:starttime" of the processes in table $1 whose session is $2 (a node's anchors).
anchors_of() {
  local pid sid start comm
  while read -r pid sid start comm; do
    if [[ "$sid" == "$2" ]]; then printf '%s ' "$pid:$start"; fi
  done <<< "$1"
}

boot_id() { cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown; }

# The recorded sessions that are this cluster's and still have live processes, one line
# "role sid pid..." each, in file order (head first). Needs the table in $1. Sessions with live
# processes but no live anchor are reported on stderr and skipped.
live_sessions() {
  local table="$1" kind role sid anchor anchors_line pids ok
  local -a anchors
  [[ -f "$sessions" ]] || return 0
  while read -r kind role sid anchors_line; do
    case "$kind" in
      boot) if [[ "$role" != "$(boot_id)" ]]; then return 0; fi; continue ;;  # file of an earlier boot
      node) ;;
      *) continue ;;
    esac
    pids="$(members_of "$table" "$sid" all | tr '\n' ' ')"
    [[ -n "${pids// /}" ]] || continue
    ok=false
    read -r -a anchors <<< "$anchors_line"
    for anchor in ${anchors[@]+"${anchors[@]}"}; do
      if grep -q "^${anchor%%:*} $sid ${anchor#*:} " <<< "$table"; then ok=true; break; fi
    done
    if [[ "$ok" == true ]]; then
      echo "$role $sid $pids"
    else
      echo "warning: session $sid (recorded for $role) has processes $pids, but none of the" \
        "processes recorded at start is alive; leaving them alone" >&2
    fi
  done < "$sessions"
}

# Start one node: `ray start "$@"` as the leader of a new session; record the session and its
# processes under role $1. The record is written even when `ray start` fails, so that `stop`
# can end whatever it left running.
start_node() {
  local role="$1" sidfile="$tmp/.sid_$1" rc=0 sid
  shift
  rm -f "$sidfile"
  # setsid: the inner bash is the session leader, writes its pid (= the session id) and
  # becomes `ray start` (exec keeps the pid).
  # shellcheck disable=SC2016  # $$ and $@ are the inner shell's
  setsid --wait bash -c 'echo "$$" > "$0" && exec "$@"' "$sidfile" "$ray" start "$@" \
    >/dev/null || rc=$?
  if [[ ! -s "$sidfile" ]]; then
    echo "error: could not start a new session for $role (setsid failed, rc $rc)" >&2
    exit 1
  fi
  sid="$(<"$sidfile")"
  rm -f "$sidfile"
  echo "node $role $sid $(anchors_of "$(proc_table)" "$sid")" >> "$sessions"
  if [[ "$rc" -ne 0 ]]; then
    echo "error: 'ray start' for $role failed (exit $rc); '$0 stop' ends what it started" >&2
    exit "$rc"
  fi
}

# Send signal $1 to each pid in $3... that is still a live member of one of the sessions $2
# (ids separated by spaces): /proc/<pid>/stat is read again right before the kill.
signal_members() {
  local sig="$1" sids="$2" pid line
  local -a x
  shift 2
  for pid in "$@"; do
    { read -r line < "/proc/$pid/stat"; } 2>/dev/null || continue
    read -r -a x <<< "${line##*) }"
    if [[ "${x[0]}" != Z && " $sids " == *" ${x[3]} "* ]]; then kill "-$sig" "$pid" 2>/dev/null || true; fi
  done
}

# End the processes of the sessions $1 (ids separated by spaces) in the order of `ray stop`:
# the raylets first (their workers, agents and trial actors end with them), then everything
# else but the GCS, the GCS last; otherwise the GCS and the raylets wait on each other's
# shutdown. Each step SIGTERMs its processes (and those that appear meanwhile), waits up to
# $2 seconds, and SIGKILLs what is left. The process name only orders the steps; which
# processes are ended is decided by the session alone.
terminate_sessions() {
  local sids="$1" grace="$2" step i pid table rc=0
  local -a pids
  local -A seen=()
  for step in raylet rest all; do
    for ((i = 0; ; i++)); do
      table="$(proc_table)"
      read -r -a pids <<< "$(members_of "$table" "$sids" "$step" | tr '\n' ' ')"
      if [[ ${#pids[@]} -eq 0 ]]; then break; fi
      if ((i < grace * 4)); then
        for pid in "${pids[@]}"; do
          if [[ -z "${seen[$pid]:-}" ]]; then seen[$pid]=1; signal_members TERM "$sids" "$pid"; fi
        done
      elif ((i < grace * 4 + 8)); then
        if ((i == grace * 4)); then echo "  still running after ${grace} s, sending SIGKILL: ${pids[*]}"; fi
        signal_members KILL "$sids" "${pids[@]}"
      else
        echo "  warning: still alive after SIGKILL: ${pids[*]}" >&2
        rc=1
        break
      fi
      sleep 0.25
    done
  done
  return "$rc"
}

# ---- commands ---------------------------------------------------------------------------------

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
  command -v setsid >/dev/null || { echo "error: needs setsid (util-linux)" >&2; exit 1; }
  if [[ -n "$(live_sessions "$(proc_table)")" ]]; then
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

  mkdir -p "$tmp"
  # A file left by a cluster that is gone (processes ended, or an earlier boot) is replaced.
  echo "boot $(boot_id)" > "$sessions"

  # Head: GCS on $port, dashboard + job API on 127.0.0.1:$dash_port, no CPU/GPU for trials.
  start_node head --head \
    --node-ip-address=127.0.0.1 \
    --port="$port" \
    --dashboard-host=127.0.0.1 --dashboard-port="$dash_port" \
    --num-cpus="$head_cpus" --num-gpus=0 \
    --dashboard-agent-listen-port="$agent_port" \
    --temp-dir="$tmp" --disable-usage-stats

  # Workers. Each has its own temp dir under the head's: nodes sharing one temp dir also share
  # runtime_resources/, and a worker then deletes a job's working_dir (the job driver's current
  # directory on the head) once its trials are done. Each also gets its own dashboard-agent HTTP
  # port: with the default, every agent after the first fails to bind it.
  for ((i = 1; i <= n; i++)); do
    start_node "w$i" --address="$address" \
      --node-ip-address=127.0.0.1 \
      --num-cpus="$worker_cpus" --num-gpus="$worker_gpus" \
      --dashboard-agent-listen-port=$((agent_port + i)) \
      --temp-dir="$tmp/w$i" --disable-usage-stats
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
  process sessions (head first): $(awk '$1 == "node" {printf "%s=%s ", $2, $3}' "$sessions")(in $sessions)
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
  local live role sid pids
  live="$(live_sessions "$(proc_table)")"
  if [[ -z "$live" ]]; then
    echo "No local cluster running (no live session recorded in $sessions)."
    return 1
  fi
  echo "Local cluster at $address, temp dir $tmp; process sessions:"
  while read -r role sid pids; do
    read -r -a pids <<< "$pids"
    echo "  $role: session $sid, ${#pids[@]} process(es)"
  done <<< "$live"
  find_ray
  setup_auth >/dev/null
  "$ray" status --address="$address"
}

stop() {
  local live role sid pids workers=() head=() rc=0
  if [[ ! -f "$sessions" ]]; then
    echo "No local cluster recorded in $sessions (temp dir $tmp, port $port)."
    return 0
  fi
  live="$(live_sessions "$(proc_table)")"
  if [[ -n "$live" ]]; then
    while read -r role sid pids; do
      if [[ "$role" == head ]]; then head+=("$sid"); else workers+=("$sid"); fi
    done <<< "$live"
    echo "Stopping the local cluster at $address (sessions: ${workers[*]:-} ${head[*]:-})"
    # Workers first (their raylets, workers and trial actors), the head (GCS, dashboard, job
    # supervisors) last, so no node loses the GCS while it is still shutting down.
    if [[ ${#workers[@]} -gt 0 ]]; then terminate_sessions "${workers[*]}" 10 || rc=1; fi
    if [[ ${#head[@]} -gt 0 ]]; then terminate_sessions "${head[*]}" 10 || rc=1; fi
  else
    echo "No process of this cluster is alive (sessions recorded in $sessions)."
  fi
  if [[ "$rc" -eq 0 ]]; then
    rm -f "$sessions"
    echo "Stopped (logs kept under $tmp)."
  else
    echo "Some processes did not end; $sessions is kept." >&2
  fi
  return "$rc"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
