#!/usr/bin/env bash
# Builds TensorRT plans on first start (they are specific to the GPU they run on),
# then starts the container's own Triton on the exported repository.
# TRUNKSERVE_ADMIN_KEY set (e.g. from a Kubernetes Secret): the repository API (load, unload,
# index) is restricted to callers sending it in the x-trunkserve-admin-key header; inference stays open.
set -euo pipefail
repo=${TRUNKSERVE_REPO:-/models}
if [ "${TRUNKSERVE_BACKEND:-onnxruntime}" = "tensorrt" ] && [ ! -f "$repo/trunk/1/model.plan" ]; then
  python3 -m trunkserve.export build-plans --repo "$repo"
fi
restricted=()
if [ -n "${TRUNKSERVE_ADMIN_KEY:-}" ]; then
  header=${TRUNKSERVE_ADMIN_HEADER:-x-trunkserve-admin-key}
  restricted=(--http-restricted-api="model-repository:${header}=${TRUNKSERVE_ADMIN_KEY}"
              --grpc-restricted-protocol="model-repository:${header}=${TRUNKSERVE_ADMIN_KEY}")
fi
exec /opt/tritonserver/bin/tritonserver --model-repository="$repo" "${restricted[@]}" "$@"
