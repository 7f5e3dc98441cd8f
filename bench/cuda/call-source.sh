#!/usr/bin/env bash
# One device call: where the warps of a kernel wait, instruction by instruction. Nsight Compute's warp-stall
# sampling (SourceCounters) of one launch of each kernel in SOURCE (space-separated CONFIG:REGEX:SKIP items,
# default the copy step's two big chain kernels), exported as SASS with samples per instruction, and the
# instructions that hold the most samples printed (bench/cuda/source-top.py).
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
unpack_stage
items=${SOURCE:-"copy:out_forward:20 copy:out_backward:20"}
for item in $items; do
  IFS=: read -r config regex skip <<< "$item"
  t "source $config $regex"
  RT_CUDA_GRAPH=0 timeout 200 ncu --clock-control none --cache-control none --section SourceCounters --section WarpStateStats \
    --kernel-name regex:"$regex" --launch-skip "$skip" --launch-count 1 -f -o "/tmp/src-$regex" \
    node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs "$config" --reps 1 --out /tmp/bm.jsonl > "$OUT/src-$regex.log" 2>&1
  ncu -i "/tmp/src-$regex.ncu-rep" --page source --csv --print-source sass > "$OUT/src-$regex.csv" 2>> "$OUT/src-$regex.log"
  python3 bench/cuda/source-top.py "$OUT/src-$regex.csv" 45
done
call_done
