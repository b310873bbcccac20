#!/bin/sh
# The accelerator check on a machine with no network whose python3 already holds JAX for its accelerator (the GPU
# machines lent to this project): install the wheels `make device-wheels` put in .whl/ into $DEVICE_SITE with pip
# --no-index, then run benchmarks.gpu_check with that python3. Needs neither make nor a venv.
#
#   sh benchmarks/gpu_check_device.sh [gpu_check arguments, e.g. --out /path/gpu_check.json]
#   (make gpu-check-device ARGS="..." runs the same; DEVICE_PY and DEVICE_SITE override python3 and the folder)
set -e
cd "$(dirname "$0")/.."
PY=${DEVICE_PY:-python3}
SITE=${DEVICE_SITE:-/tmp/crobust-site}
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
fi
PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m benchmarks.gpu_check "$@"
