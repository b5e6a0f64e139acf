#!/usr/bin/env bash
# On the GPU machine: install the carried wheels (kornia, for PaCo) into a private folder, then
# run benchmarks/device_check.py within its fixed budget. Usage: bash benchmarks/device_check.sh OUT
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: device_check.sh OUT_DIR}
PACK=${PACK:-.devicepack}
if compgen -G "$PACK/wheels/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/lt-ray-site "$PACK"/wheels/*.whl
    export PYTHONPATH=/tmp/lt-ray-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 benchmarks/device_check.py run --pack "$PACK" --out "$OUT" 2>&1 | tee "$OUT/device_check.log"
