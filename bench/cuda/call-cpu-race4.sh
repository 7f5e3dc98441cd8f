#!/usr/bin/env bash
# One device call: the CPU determinism probe (cpu-race.mjs) at 16 threads after the thread-pool fix, with
# the CUDA build's CPU backend and the CPU-only addon, then the layer check (CUDA against CPU) three times.
#   carry: .device/node.xz .device/rt.node.xz .device/cpu-blas.node.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
unpack_stage
xz -dc .device/cpu-blas.node.xz > /tmp/cpu-blas.node
race() { t "race $RACE_ARGS $*"; env "$@" timeout 60 node bench/cuda/cpu-race.mjs --reps 500 $RACE_ARGS > "$OUT/race.log" 2>&1; echo "  rc $? $(tail -1 "$OUT/race.log" | grep -o '"runs_differing":[0-9]*')"; }
for v in accumulate forget; do
  RACE_ARGS="--variant $v"
  race RT_NUM_THREADS=16
  race RT_NUM_THREADS=16 RT_DEVICE=cpu RT_ADDON_PATH=/tmp/cpu-blas.node
done
for i in 1 2 3; do t "check $i"; timeout 60 node bench/cuda/check.mjs > "$OUT/check-$i.log" 2>&1; grep -E "^FAIL|^check:" "$OUT/check-$i.log" | cut -c1-120; done
call_done
