#!/usr/bin/env bash
# One device call (session 5, the last): checks of the final build (kernels_check with the activation
# epilogues, layer, model), the train-step table against every torch peer mode (eager fp32, bf16, bf16 +
# SDPA, torch.compile of the block) in one call, ours with RT_CUDA_WGMMA=0 for the A/B, a char profile,
# then the Fashion-MNIST rows with what is left of $1 seconds (default 555). Results in $OUT/all.tar.gz.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz
#          .device/data/fashion-mnist dist
source "$(dirname "$0")/call-lib.sh"
kernels_stage
tail -1 $OUT/kernels.log | tr ',' '\n' | grep -E "wgmma|mma128s2" | tr '\n' ' '; echo
grep -q "FAIL.*\(wgmma\|linear_act\|linear_backward_act\)" $OUT/kernels.log && { echo "wgmma failed its checks: RT_CUDA_WGMMA=0 from here"; export RT_CUDA_WGMMA=0; }
checks_stage
t bench; TORCH_MODES=fp32,bf16,bf16-sdpa,compile timeout 240 bash bench/cuda/run.sh --stages bench-model > $OUT/run-bench.log 2>&1; grep -A 14 "^config " $OUT/bench-model.log
t ab; RT_CUDA_WGMMA=0 timeout 60 node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --out $OUT/mma.jsonl > $OUT/mma.log 2>&1; grep -A 4 "^config " $OUT/mma.log
t profile; timeout 60 node bench/cuda/profile.mjs --configs char --out $OUT/profile.jsonl > $OUT/profile.log 2>&1; grep -v '^{' $OUT/profile.log | head -16
# What is left of the call's ${1:-555} seconds: fmnist-recurrent first (about 125 s for its 10,000 steps),
# then fmnist-plain-4 (about 290 s) when there is room for a useful part of it.
left=$(( ${1:-555} - ($(date +%s) - call_start) ))
t "fmnist, ${left} s"
if (( left > 150 )); then
  r=$(( left > 310 ? 150 : left - 10 ))
  runs=("fmnist-recurrent@$r"); (( left - r > 150 )) && runs+=("fmnist-plain-4@$(( left - r - 10 ))")
  bash bench/paper/run-gpu.sh fm "${runs[@]}" 2>&1 | grep -E "^==|^rc|summary" | cut -c1-300
fi
call_done
