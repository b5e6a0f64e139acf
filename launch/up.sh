#!/usr/bin/env bash
# Usage: launch/up.sh [CLUSTER_YAML] [extra `ray up` args, e.g. --no-config-cache]
#
# Creates (or updates) the Ray cluster described by CLUSTER_YAML (default: cluster.yaml at the
# repo root) and prints the next steps. Needs locally: ray[default]==2.60.*, boto3 and AWS
# credentials for the AWS provider (`pip install boto3`, `aws configure`).
#
# Runs from the repo root because cluster.yaml's file_mounts sync "." to ~/lt-ray on every node.
# Running it again on a live cluster re-syncs the code and re-runs the setup and start commands.
# It refuses CLUSTER_YAML's placeholders (ImageId ami-REPLACE-..., the account id REPLACE-... in
# the workers' IamInstanceProfile Arn), which would otherwise fail only inside the AWS calls.
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
# Same for the workers' instance profile (S3 access): a placeholder would only fail later, in
# the autoscaler on the head, when it launches the first worker.
if grep -Eq '^[^#]*Arn: *arn:aws:iam::REPLACE' "$config"; then
  echo "error: put your AWS account id in the IamInstanceProfile Arn of $config (or, with" \
    "EFS/NFS storage instead of S3, delete the IamInstanceProfile lines; see its comments)" >&2
  exit 2
fi
# The workers' instance profile, for the reminder at the end (the last Arn: worker types come
# after the head in cluster.yaml).
worker_profile="$(sed -n 's|^[^#]*Arn: *arn:aws:iam::[0-9]*:instance-profile/\([^ ]*\).*|\1|p' "$config" \
  | tail -n1)"

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
  2. Submit a sweep; the study goes to storage that every node shares (S3 by default):
       LT_RAY_STORAGE=s3://BUCKET/lt-ray launch/submit.sh SPACE.yaml [--smoke]
     or, with the EFS/NFS mount of $config instead:
       LT_RAY_STORAGE=/home/ubuntu/results launch/submit.sh SPACE.yaml [--smoke]
  3. Watch nodes and autoscaling:
       ray exec $config 'ray status'
  4. Results: s3://BUCKET/lt-ray/STUDY/{trials,epochs,per_class}.parquet, read in place with
       python -c "from lt_ray.results import read_study; print(read_study('s3://BUCKET/lt-ray/STUDY').trials)"
     or copied with 'aws s3 sync' (EFS/NFS: ray rsync-down $config /home/ubuntu/results ./results)
  5. Tear down (stops billing):
       ray down -y $config
EOF
if [[ -n "$worker_profile" ]]; then
  cat <<EOF
GPU workers start with the instance profile "$worker_profile": the head's role needs
iam:PassRole on its role, or the autoscaler cannot launch them (launch/README.md, "S3").
EOF
fi
