#!/usr/bin/env bash
# On the GPU machine: builds the CUDA addon there with cmake (its toolkit has cuBLAS, which this repo's
# CI toolkit lacks), optionally with -DRT_CUBLAS=ON, into /tmp/rt-build-<tag>/Release/rt.node.
# Needs carried: .device (node), node_modules/node-addon-api, node_modules/node-api-headers.
#   bash bench/cuda/build-device.sh [cublas|own]    prints the path of the built addon last
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG="${1:-cublas}"
[[ -x /tmp/node ]] || { xz -dc .device/node.xz > /tmp/node && chmod +x /tmp/node; }
export PATH=/tmp:$PATH
B=/tmp/rt-build-$TAG
CUBLAS=OFF; [[ "$TAG" == cublas ]] && CUBLAS=ON
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRT_CUDA=ON -DRT_CUBLAS=$CUBLAS \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_JS_INC="$PWD/node_modules/node-api-headers/include" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$B/Release" > "$B.log" 2>&1 || { tail -30 "$B.log"; exit 1; }
cmake --build "$B" -j 16 >> "$B.log" 2>&1 || { grep -E "error|Error" "$B.log" | head -30; exit 1; }
find "$B" -name rt.node | head -1
