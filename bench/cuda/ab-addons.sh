#!/usr/bin/env bash
# On the GPU machine: our train-step timing (no peer) for each addon build given as NAME=FILE.xz, one after
# the other in this call, so builds that differ in one compile-time choice compare under the same load.
#   bash bench/cuda/ab-addons.sh tm32=.device/rt.node.xz tm16=.device/rt16.node.xz [-- bench-model args]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/rt-cuda-out}"
mkdir -p "$OUT"
[[ -x /tmp/node ]] || { xz -dc .device/node.xz > /tmp/node; chmod +x /tmp/node; }
export PATH=/tmp:$PATH
builds=()
while [[ $# -gt 0 && "$1" != "--" ]]; do builds+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
for b in "${builds[@]}"; do
  name="${b%%=*}"; file="${b#*=}"
  xz -dc "$file" > "/tmp/rt-$name.node"
  echo "== $name ($file)"
  RT_CUDA_ADDON="/tmp/rt-$name.node" node bench/cuda/bench-model.mjs --no-torch "$@" --out "$OUT/ab-$name.jsonl" 2>&1 | tee "$OUT/ab-$name.log" | grep -A 8 "^config "
done
