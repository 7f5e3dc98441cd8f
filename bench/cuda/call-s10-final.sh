#!/usr/bin/env bash
# The session's last device call: every check of the build, issue 5's table (ours against PyTorch eager
# fp32, bf16 and bf16 + SDPA on the same GPU, in this call), each kernel's GPU time over a copy step, then
# the CPU determinism probe at 16 threads with and without one OpenBLAS call at a time (RT_GEMM_LOCK=1).
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
kernels_stage; checks_stage 90
t graph; timeout 150 node bench/cuda/check-graph.mjs --out "$OUT/check-graph.jsonl" > "$OUT/check-graph.log" 2>&1; tail -1 "$OUT/check-graph.log" | cut -c1-200
if grep -q "^kernels_check: [0-9]* passed, 0 failed" "$OUT/kernels.log"; then
  t bench; TORCH_MODES=${TORCH_MODES:-fp32,bf16,bf16-sdpa} timeout 330 bash bench/cuda/run.sh --stages bench-model > "$OUT/run-bench.log" 2>&1
  grep -A 14 "^config " "$OUT/bench-model.log"
  ncu_durations_stage 12
fi
race() { t "race $RACE_ARGS $*"; env "$@" timeout 60 node bench/cuda/cpu-race.mjs --reps 300 $RACE_ARGS > "$OUT/race.log" 2>&1; echo "  rc $? $(tail -1 "$OUT/race.log" | grep -o '"runs_differing":[0-9]*')"; }
for v in accumulate forget; do
  RACE_ARGS="--variant $v"
  race RT_NUM_THREADS=16 RT_GEMM_LOCK=1
  race RT_NUM_THREADS=16
  race RT_NUM_THREADS=16 RT_GEMM_LOCK=1
done
call_done
