#!/usr/bin/env bash
# Usage: launch/up.sh [CLUSTER_YAML] [extra `ray up` args, e.g. --no-config-cache]
#
# Creates (or updates) the Ray cluster described by CLUSTER_YAML (default: cluster.yaml at the
# repo root) and prints the next steps. Needs locally: ray[default]==2.60.*, boto3 and AWS
# credentials for the AWS provider (`pip install boto3`, `aws configure`).
#
# Runs from the repo root because cluster.yaml's file_mounts sync "." to ~/lt-ray on every node.
# Running it again on a live cluster re-syncs the code and re-runs the setup and start commands.
#
# Token authentication: with RAY_AUTH_MODE=token in your shell, the script checks that a local
# token exists and that CLUSTER_YAML enables token auth on the nodes (see its comments).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

config="${1:-cluster.yaml}"
[[ $# -gt 0 ]] && shift
if [[ ! -f "$config" ]]; then
  echo "error: no cluster config $root/$config" >&2
  exit 2
fi

# shellcheck source=launch/find_ray.sh
source "$root/launch/find_ray.sh"
find_ray

# Fail early on the placeholder AMI instead of deep inside the EC2 API call.
if grep -Eq '^[^#]*ImageId: *ami-REPLACE' "$config"; then
  echo "error: set ImageId in $config to an AMI of your region (see the comment above it)" >&2
  exit 2
fi

# Token auth: the nodes need RAY_AUTH_MODE=token and the token file; the client needs both too.
cluster_token=false
grep -Eq '^[^#]*RAY_AUTH_MODE=token' "$config" && cluster_token=true
if [[ "${RAY_AUTH_MODE:-}" == "token" || "$cluster_token" == true ]]; then
  if ! "$ray" get-auth-token >/dev/null 2>&1; then
    echo "error: token auth requested but no token; create one with 'ray get-auth-token --generate'" >&2
    exit 2
  fi
  if [[ "$cluster_token" != true ]]; then
    echo "warning: RAY_AUTH_MODE=token here, but $config does not enable it on the nodes" >&2
    echo "         (uncomment its auth_token file mount and RAY_AUTH_MODE setup line)" >&2
  elif [[ "${RAY_AUTH_MODE:-}" != "token" ]]; then
    echo "note: $config enables token auth; run 'export RAY_AUTH_MODE=token' before submitting" >&2
  fi
fi

# -y: no confirmation prompt. Provisions the head, syncs file_mounts, runs setup_commands and
# head_start_ray_commands; the autoscaler on the head then adds GPU workers on demand.
"$ray" up -y "$config" "$@"

cat <<EOF

Cluster is up. Next steps (from $root):
  1. Dashboard and job API (keep this running in its own terminal):
       ray dashboard $config             # then open http://127.0.0.1:8265
  2. Submit a sweep (results need shared storage on a multi-node cluster):
       LT_RAY_STORAGE=s3://BUCKET/lt-ray launch/submit.sh SPACE.yaml [--smoke]
  3. Watch nodes and autoscaling:
       ray exec $config 'ray status'
  4. Copy results back when --storage is a path on the cluster:
       ray rsync-down $config /home/ubuntu/results ./results
  5. Tear down (stops billing):
       ray down -y $config
EOF
