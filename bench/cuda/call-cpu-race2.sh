#!/usr/bin/env bash
# One device call: the CPU determinism probe (cpu-race.mjs) at 16 threads with the GEMM split as built
# (rows or columns, by shape) and with row splits only (RT_GEMM_SPLIT=rows), both variants.
#   carry: .device/node.xz .device/rt.node.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
unpack_stage
race() { t "race $RACE_ARGS $*"; env "$@" timeout 90 node bench/cuda/cpu-race.mjs --reps 300 $RACE_ARGS > "$OUT/race.log" 2>&1; echo "  rc $? $(tail -1 "$OUT/race.log" | grep -o '"runs_differing":[0-9]*')"; }
for v in accumulate forget; do
  RACE_ARGS="--variant $v"
  race RT_NUM_THREADS=16
  race RT_NUM_THREADS=16 RT_GEMM_SPLIT=rows
  race RT_NUM_THREADS=16
  race RT_NUM_THREADS=16 RT_GEMM_SPLIT=rows
done
call_done
