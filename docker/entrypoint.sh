#!/usr/bin/env bash
# Builds TensorRT plans on first start (they are specific to the GPU they run on),
# then starts the container's own Triton on the exported repository.
set -euo pipefail
repo=${TRUNKSERVE_REPO:-/models}
if [ "${TRUNKSERVE_BACKEND:-onnxruntime}" = "tensorrt" ] && [ ! -f "$repo/trunk/1/model.plan" ]; then
  python3 -m trunkserve.export build-plans --repo "$repo"
fi
exec /opt/tritonserver/bin/tritonserver --model-repository="$repo" "$@"
