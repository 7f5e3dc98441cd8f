#!/usr/bin/env bash
# One device call (session 10): all checks of the build, the train steps with and without the wide Hopper
# GEMM (now only N <= 384, K > 512), and the CPU determinism probe (call-cpu-race.sh's runs).
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
kernels_stage
grep -E "^weight_grad char total|FAIL" "$OUT/kernels.log" | cut -c1-200 | head -6
grep -o '"char_[a-z0-9_]*_auto":[0-9.]*\|"big_4096_auto":[0-9.]*' "$OUT/kernels.log" | tr '\n' ' '; echo
checks_stage 90
t graph; timeout 150 node bench/cuda/check-graph.mjs --out "$OUT/check-graph.jsonl" > "$OUT/check-graph.log" 2>&1; tail -1 "$OUT/check-graph.log" | cut -c1-200
for i in 1 2; do
  for set in new RT_CUDA_WGMMA_WIDE=0; do
    envs=""; [[ $set == *=* ]] && envs=$set
    t "bench $set $i"
    env $envs timeout 90 node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs copy,char --out "$OUT/bench-$set.jsonl" > "$OUT/bench-$set-$i.log" 2>&1
    grep -A 4 "^config " "$OUT/bench-$set-$i.log" | tail -n +3 | head -2
  done
done
lscpu | grep -E "Model name|^CPU\(s\)" | head -2
race() { t "race $*"; env "$@" timeout 90 node bench/cuda/cpu-race.mjs ${RACE_ARGS:-} > "$OUT/race.log" 2>&1; tail -1 "$OUT/race.log" | cut -c180-400; }
race RT_NUM_THREADS=16
race RT_NUM_THREADS=16 OPENBLAS_CORETYPE=Haswell
race RT_NUM_THREADS=1
race RT_NUM_THREADS=4
RACE_ARGS="--variant forget" race RT_NUM_THREADS=16
RACE_ARGS="--activation gelu" race RT_NUM_THREADS=16
call_done
