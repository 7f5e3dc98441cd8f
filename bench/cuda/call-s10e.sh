#!/usr/bin/env bash
# One device call: kernels_check of the build (the float32 tile loader now shared by matmul.cu and
# weight_grad.cu), with its GEMM and weight-gradient timing lines, and one train step timing per config.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
kernels_stage
grep -E "^weight_grad (copy|char) total" "$OUT/kernels.log" | cut -c1-160
grep -o '"char_[a-z0-9_]*_auto":[0-9.]*\|"copy_[a-z0-9_]*_auto":[0-9.]*' "$OUT/kernels.log" | tr '\n' ' '; echo
t bench; timeout 60 node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs copy,char --out "$OUT/bench.jsonl" 2>&1 | grep -A 4 "^config" | tail -n +3 | head -2
call_done
