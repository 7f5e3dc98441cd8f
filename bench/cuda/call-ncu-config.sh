#!/usr/bin/env bash
# One device call, no checks: each kernel's own GPU time (Nsight Compute, graphs off) over the train steps of
# one config (NCU_CONFIG, default char): 2 warm-up steps and 1 timed step, all launches, summed by kernel
# and divided by 3, so the numbers are per step including the warm-ups' one-off work.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
unpack_stage
t "ncu ${NCU_CONFIG:-char}"
RT_CUDA_GRAPH=0 timeout ${NCU_LIMIT:-240} ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv --page raw \
  node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs "${NCU_CONFIG:-char}" --reps 1 --out /tmp/bm.jsonl \
  > "$OUT/ncu-dur.csv" 2> "$OUT/ncu-dur.err"
python3 bench/cuda/ncu-summary.py "$OUT/ncu-dur.csv" 3 | tee "$OUT/ncu-dur.txt" | head -"${NCU_ROWS:-40}"
tail -2 "$OUT/ncu-dur.err"
t timing; RT_CUDA_GRAPH=1 node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs "${NCU_CONFIG:-char}" --out "$OUT/bench.jsonl" 2>&1 | grep -A 3 "^config"
call_done
