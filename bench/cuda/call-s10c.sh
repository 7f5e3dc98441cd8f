#!/usr/bin/env bash
# One device call (session 10): all checks of the build, then the train steps alternated under the new
# switches (RT_CUDA_WGMMA_WIDE=0: the 128x128 Hopper GEMM only; RT_CUDA_DW_TILE=old: the previous
# weight-gradient kernel for the char tiles), and each kernel's GPU time over a char step.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
kernels_stage
grep -E "^weight_grad char|gemm_wgmma|FAIL" "$OUT/kernels.log" | cut -c1-200 | head -12
grep -o '"char_[a-z0-9_]*_auto":[0-9.]*\|"big_4096_auto":[0-9.]*' "$OUT/kernels.log" | tr '\n' ' '; echo
checks_stage 90
t graph; timeout 150 node bench/cuda/check-graph.mjs --out "$OUT/check-graph.jsonl" > "$OUT/check-graph.log" 2>&1; tail -1 "$OUT/check-graph.log" | cut -c1-200
sets=${S10_SETS:-"new RT_CUDA_WGMMA_WIDE=0 RT_CUDA_DW_TILE=old"}
for i in 1 2; do
  for set in $sets; do
    envs=""; [[ $set == *=* ]] && envs=${set//,/ }
    t "bench $set $i"
    env $envs timeout 90 node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs copy,char --out "$OUT/bench-$set.jsonl" > "$OUT/bench-$set-$i.log" 2>&1
    grep -A 4 "^config " "$OUT/bench-$set-$i.log" | tail -n +3 | head -2
  done
done
t "ncu char"; RT_CUDA_GRAPH=0 timeout 150 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv --page raw \
  node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs char --reps 1 --out /tmp/bm.jsonl > "$OUT/ncu-char.csv" 2> "$OUT/ncu-char.err"
python3 bench/cuda/ncu-summary.py "$OUT/ncu-char.csv" 3 | tee "$OUT/ncu-char.txt" | head -10
call_done
