#!/usr/bin/env bash
# Usage: launch/submit.sh SPACE.yaml [extra `lt-ray sweep` args, e.g. --smoke --resume]
#
# Runs `lt-ray sweep SPACE.yaml` on the cluster as a Ray job. Before, in another terminal:
#   ray dashboard cluster.yaml      # keeps an SSH tunnel: local 8265 -> head's 127.0.0.1:8265
#
# Steps:
#   1. cd to the repo root and check that SPACE.yaml lies inside it: `--working-dir .` uploads
#      the repo (minus .gitignore'd files and .git) and the job runs from that copy, so the
#      space file must be in it and is passed by its path relative to the root.
#   2. `ray job submit` sends the job to the job API behind the tunnel, streams its logs and
#      exits with the job's status. Ctrl-C stops following, not the job
#      (`ray job stop ID --address ...` does, `ray job logs -f ID --address ...` follows again).
#   3. On the head, the entrypoint `lt-ray sweep ... --address auto` attaches the Tune driver
#      to the running cluster; the autoscaler adds GPU workers for pending trials.
#
# Environment:
#   LT_RAY_STORAGE      required: where the study goes (`lt-ray sweep --storage`), one place that
#                       every node reads and writes:
#                         s3://BUCKET/lt-ray   the default story (cluster.yaml gives every node
#                                              S3 credentials through an instance profile); any
#                                              pyarrow URI works (gs://..., s3://...?region=...);
#                                              an S3-compatible store such as MinIO is chosen with
#                                              AWS_ENDPOINT_URL set on the nodes, not here
#                         /home/ubuntu/results an absolute path where EFS/NFS is mounted on
#                                              every node (cluster.yaml's alternative)
#                       There is no default: a bucket name is yours to choose, and a path only
#                       works where the shared file system is mounted.
# Optional:
#   LT_RAY_JOB_ADDRESS  job API (default http://127.0.0.1:8265, the `ray dashboard` tunnel;
#                       launch/local_cluster.sh prints the one of the local cluster)
#   LT_RAY_JOB_ARGS     extra `ray job submit` flags, word-split, e.g. "--no-wait" or
#                       "--submission-id cifar10-lt-ce-1"
#   RAY_BIN             the `ray` executable (default: `ray` on PATH, else <repo>/.venv/bin/ray)
#   RAY_AUTH_MODE=token needed when the cluster uses token authentication: `ray job submit` then
#                       sends the token from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token
#                       (Ray >= 2.52). The job itself inherits the cluster's setting.
set -euo pipefail

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2p' "${BASH_SOURCE[0]}" | sed 's/^# //' >&2
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
space="$1"
shift

# Step 1: the space file, as a path relative to the repo root.
if [[ "$space" == "$root"/* ]]; then
  space="${space#"$root"/}"
elif [[ "$space" != /* && "$PWD" != "$root" ]]; then
  # A relative path given from a subdirectory of the repo.
  case "$PWD/" in
    "$root"/*) space="${PWD#"$root"/}/$space" ;;
  esac
fi
cd "$root"
if [[ "$space" == /* || "$space" == ../* || "$space" == */../* ]]; then
  echo "error: $space is outside the repo ($root); copy it into the repo (e.g. search_spaces/)" >&2
  exit 2
fi
if [[ ! -f "$space" ]]; then
  echo "error: no file $root/$space" >&2
  exit 2
fi

# Step 1b: the storage, checked before anything is sent.
storage="${LT_RAY_STORAGE:-}"
storage_help="  Set it to storage that every node of the cluster shares: an S3 URI, s3://BUCKET/lt-ray
  with BUCKET your bucket (cluster.yaml's default; nodes get S3 access from their instance
  profile), or the absolute path of an EFS/NFS mount present on every node, e.g.
  /home/ubuntu/results (cluster.yaml's alternative)."
if [[ -z "$storage" ]]; then
  printf 'error: LT_RAY_STORAGE is not set.\n%s\n' "$storage_help" >&2
  exit 2
fi
uri='^[A-Za-z][A-Za-z0-9+.-]*://'            # scheme://, as lt-ray's storage module reads it
if [[ "$storage" =~ $uri ]]; then
  # A URI (s3://, gs://, file:///, ...): lt-ray hands it to pyarrow.fs. Catch the docs'
  # placeholder and a bucket URI without a bucket (file:/// has no host, by design).
  if [[ "$storage" != file://* && "$storage" =~ ${uri}(BUCKET)?([/?]|$) ]]; then
    printf 'error: LT_RAY_STORAGE=%s names no bucket.\n%s\n' "$storage" "$storage_help" >&2
    exit 2
  fi
elif [[ "$storage" != /* ]]; then
  # A relative path would land in the job's temporary copy of the repo and vanish with it.
  printf 'error: LT_RAY_STORAGE=%s is neither a URI nor an absolute path.\n%s\n' "$storage" \
    "$storage_help" >&2
  exit 2
fi

# shellcheck source=launch/find_ray.sh
source "$root/launch/find_ray.sh"
find_ray

job_address="${LT_RAY_JOB_ADDRESS:-http://127.0.0.1:8265}"

# Word-split on purpose: LT_RAY_JOB_ARGS holds several flags. (The ${a[@]+...} form below keeps
# an empty array legal under `set -u` in the bash 3.2 of macOS.)
job_args=()
read -r -a job_args <<< "${LT_RAY_JOB_ARGS:-}" || true

echo "Submitting 'lt-ray sweep $space' to $job_address (storage: $storage)"
# Step 2 + 3. --runtime-env-json keeps .git out of the upload (.gitignore'd files are already
# skipped); --working-dir . overrides any working_dir in it.
exec "$ray" job submit \
  --address "$job_address" \
  --working-dir . \
  --runtime-env-json '{"excludes": [".git"]}' \
  ${job_args[@]+"${job_args[@]}"} \
  -- lt-ray sweep "$space" --address auto --storage "$storage" "$@"
