#!/usr/bin/env bash
# One device call for the fused window walk (native/cuda/window_fused.cu, off by default) and for the default
# build it ships in: the kernel checks; the model and layer checks against the CPU and the copy and char train
# steps, all with the walk off (the default); then the walk: check-window.mjs (the walk against the
# per-application path, both precisions), the copy train step with the walk (bf16) and without, alternated
# twice; the fp32 copy model case three times with the walk (its gradients varied from run to run in the
# session-7 calls); racecheck and memcheck over two small walks.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
#   bash bench/cuda/call-window.sh
source "$(dirname "$0")/call-lib.sh"
kernels_stage
checks_stage 90
t bench; timeout 60 node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --out "$OUT/main.jsonl" > "$OUT/main.log" 2>&1; grep -A 4 "^config " "$OUT/main.log"
t window; timeout 120 node bench/cuda/check-window.mjs > "$OUT/check-window.log" 2>&1; cut -c1-160 "$OUT/check-window.log"
for i in 1 2; do
  for walk in 1 0; do
    t "bench walk=$walk"
    RT_CUDA_WINDOW=$walk timeout 60 node bench/cuda/bench-model.mjs --configs copy --no-torch --precisions bf16 --out "$OUT/bench-walk$walk.jsonl" > "$OUT/bench-walk$walk-$i.log" 2>&1
    grep -A 2 "^config " "$OUT/bench-walk$walk-$i.log" | tail -1
  done
done
for i in 1 2 3; do
  t "model fp32 copy, walk on"
  RT_CUDA_WINDOW=all timeout 60 node bench/cuda/check-model.mjs --precision fp32 --cases "copy accumulate relu" 2>&1 | grep -E "^(ok|FAIL)"
done
for tool in racecheck memcheck; do
  t $tool; timeout 90 compute-sanitizer --tool $tool --print-limit 10 node bench/cuda/check-window.mjs --quick > "$OUT/$tool-window.log" 2>&1
  grep -E "check-window:|ERROR SUMMARY|RACECHECK SUMMARY|Race reported" "$OUT/$tool-window.log" | cut -c1-200
done
call_done
