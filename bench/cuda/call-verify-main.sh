#!/usr/bin/env bash
# One short device call: the checks of main's build (kernels_check, model, layer) and ours-only train steps,
# for a change made after the last timed call. Results in $OUT/all.tar.gz.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
kernels_stage
checks_stage 60
t bench; timeout 60 node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --out $OUT/main.jsonl > $OUT/main.log 2>&1; grep -A 4 "^config " $OUT/main.log
call_done
