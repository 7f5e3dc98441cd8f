#!/usr/bin/env bash
# One device call (session 10): all checks of the new build (kernels_check with the weight-gradient and glue
# cases, the layer and model against the CPU, check-graph), then the train steps alternated: the new build
# as it is, with each new switch off (RT_CUDA_TWIN=0: the bf16 twins; RT_CUDA_DW=0: the weight-gradient
# kernel), and the session-9 build; then the char step's wall time split by native call, and each kernel's
# GPU time over a char and a copy step (Nsight Compute).
#   carry: .device/node.xz .device/rt.node.xz .device/rt-s9.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
kernels_stage
grep -E "weight_grad|TOTAL|total" "$OUT/kernels.log" | cut -c1-220 | head -12
if [[ "${S10_CHECKS:-1}" == 1 ]]; then
  checks_stage 90
  t graph; timeout 150 node bench/cuda/check-graph.mjs --out "$OUT/check-graph.jsonl" > "$OUT/check-graph.log" 2>&1; tail -1 "$OUT/check-graph.log" | cut -c1-200
fi
xz -dc .device/rt-s9.node.xz > /tmp/rt-s9.node
sets=${S10_SETS:-"new RT_CUDA_TWIN=0 RT_CUDA_DW=0 s9"}
for i in $(seq "${S10_ROUNDS:-2}"); do
  for set in $sets; do
    addon=/tmp/rt.node; envs=""
    [[ $set == s9 ]] && addon=/tmp/rt-s9.node
    [[ $set == *=* ]] && envs=${set//,/ }
    t "bench $set $i"
    env $envs RT_CUDA_ADDON=$addon timeout 90 node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs "${S10_CONFIGS:-copy,char}" --out "$OUT/bench-$set.jsonl" > "$OUT/bench-$set-$i.log" 2>&1
    grep -A 4 "^config " "$OUT/bench-$set-$i.log" | tail -n +3 | head -2
  done
done
t phases; timeout 60 node bench/cuda/step-phases.mjs --config char > "$OUT/phases-char.jsonl" 2>&1; cat "$OUT/phases-char.jsonl" | cut -c1-160
timeout 60 node bench/cuda/step-phases.mjs --config copy > "$OUT/phases-copy.jsonl" 2>&1; tail -1 "$OUT/phases-copy.jsonl"
for cfg in char copy; do
  t "ncu $cfg"; RT_CUDA_GRAPH=0 timeout 150 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv --page raw \
    node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs $cfg --reps 1 --out /tmp/bm.jsonl > "$OUT/ncu-$cfg.csv" 2> "$OUT/ncu-$cfg.err"
  python3 bench/cuda/ncu-summary.py "$OUT/ncu-$cfg.csv" 3 | tee "$OUT/ncu-$cfg.txt" | head -${S10_NCU_ROWS:-14}
done
call_done
