#!/usr/bin/env bash
# One device call (session 6): programmatic dependent launch (a record: the PDL code it measured was removed
# afterwards, so RT_CUDA_PDL no longer does anything). Checks of the build with PDL on (kernels_check,
# model, layer), then ours with and without it (RT_CUDA_PDL=0), alternated twice, then two paper runs side by
# side with what is left of $1 seconds (default 560): fmnist-plain-4 and the no-position Shakespeare model
# with the unit recurrence (w = 1) in the author's recipe for it. A failed check turns PDL off for the runs.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz .device/data dist
source "$(dirname "$0")/call-lib.sh"
kernels_stage
grep -q "FAIL" $OUT/kernels.log && { echo "kernels_check failed: RT_CUDA_PDL=0 from here"; export RT_CUDA_PDL=0; }
checks_stage
grep -q "^FAIL" $OUT/check.log && { echo "layer check failed: RT_CUDA_PDL=0 from here"; export RT_CUDA_PDL=0; }
for round in 1 2; do
  for pdl in 1 0; do
    t "bench round $round pdl $pdl"
    RT_CUDA_PDL=$pdl timeout 90 node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --out $OUT/pdl$pdl-r$round.jsonl > $OUT/pdl$pdl-r$round.log 2>&1
    grep -A 3 "^config " $OUT/pdl$pdl-r$round.log
  done
done
left=$(( ${1:-560} - ($(date +%s) - call_start) - 25 ))
t "paper runs, ${left} s"
if (( left > 120 )); then
  RT_PARALLEL=1 bash bench/paper/run-gpu.sh p6 "fmnist-plain-4@$left" \
    "shakespeare-recurrent-nopos@$left:--window 1 --batch 128 --steps 10000 --eval-every 250 --eval-batches 80" 2>&1 |
    grep -E "^==|rc [0-9]|summary" | cut -c1-400
fi
call_done
