# shellcheck shell=bash disable=SC2034,SC2154
# (SC2034: $ray is used by the scripts that source this file; SC2154: they set $root.)
# Sourced by the launch scripts (not run on its own): find_ray sets $ray to the Ray CLI.
# Order: $RAY_BIN, then `ray` on PATH, then the repo's .venv. Needs $root (the repo root).
find_ray() {
  if [[ -n "${RAY_BIN:-}" ]]; then
    ray="$RAY_BIN"
  elif command -v ray >/dev/null 2>&1; then
    ray="$(command -v ray)"
  elif [[ -x "$root/.venv/bin/ray" ]]; then
    ray="$root/.venv/bin/ray"
  else
    echo "error: no 'ray' executable (install ray[default]==2.60.*, activate the lt-ray" \
      "environment, or set RAY_BIN)" >&2
    exit 1
  fi
}
