#!/usr/bin/env bash
# Session 20's last device call, one start for everything left, the most wanted first (the call may be cut short
# by the session's device time; the results are packed after each part): issue 5's table (our steps next to the
# PyTorch peer's modes, as call-peer.sh, without the checks: the build is the one call 1 checked), then the
# switches still off by default weighed again now that the optimizer step no longer drains the GPU (AB_SETS,
# AB_ROUNDS rounds alternated), then each kernel's own GPU time over a char step (Nsight Compute).
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
unpack_stage
t peer; TORCH_MODES=${TORCH_MODES:-fp32,bf16,bf16-sdpa} timeout 330 bash bench/cuda/run.sh --stages bench-model > "$OUT/run-bench.log" 2>&1
grep -A 14 "^config " "$OUT/bench-model.log"
t phases; timeout 60 node bench/cuda/step-phases.mjs --config char > "$OUT/phases-char.log" 2>&1; tail -1 "$OUT/phases-char.log"
call_done
sets=${AB_SETS:-"RT_X=0 RT_CUDA_FC_ACT=1,RT_CUDA_FC_DACT=1"}
for i in $(seq "${AB_ROUNDS:-4}"); do
  for set in $sets; do
    t "bench $set"
    env ${set//,/ } timeout 90 node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs char,copy --out "$OUT/bench-$set.jsonl" > "$OUT/bench-$set-$i.log" 2>&1
    grep -A 4 "^config " "$OUT/bench-$set-$i.log" | tail -n +3 | head -2
  done
done
call_done
ncu_durations_stage 22 char
call_done
