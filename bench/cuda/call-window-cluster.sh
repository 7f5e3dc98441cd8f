#!/usr/bin/env bash
# A short device call for the window walk's cluster form (two blocks of 256 per element on sm_90,
# RT_CUDA_WINDOW_CLUSTER=1): check-window.mjs with it (the walk against the per-application path), then the
# copy train step with the cluster walk, the one-block walk and no walk,
# alternated twice, then racecheck over two small walks. Prints as it goes (a cut-short call still reports).
#   carry: .device/node.xz .device/rt.node.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
unpack_stage
t window; RT_CUDA_WINDOW_CLUSTER=1 timeout 60 node bench/cuda/check-window.mjs > "$OUT/check-window.log" 2>&1; grep -E "FAIL|check-window" "$OUT/check-window.log" | cut -c1-220
for i in 1 2; do
  for mode in cluster block off; do
    case $mode in cluster) env="RT_CUDA_WINDOW=1 RT_CUDA_WINDOW_CLUSTER=1" ;; block) env="RT_CUDA_WINDOW=1" ;; off) env="RT_CUDA_WINDOW=0" ;; esac
    env $env timeout 40 node bench/cuda/bench-model.mjs --configs copy --no-torch --precisions bf16 --out "$OUT/bench-$mode.jsonl" > "$OUT/bench-$mode-$i.log" 2>&1
    echo "$mode: $(grep -A2 '^config' "$OUT/bench-$mode-$i.log" | tail -1)"
  done
done
t racecheck; RT_CUDA_WINDOW_CLUSTER=1 timeout 60 compute-sanitizer --tool racecheck --print-limit 5 node bench/cuda/check-window.mjs --quick > "$OUT/racecheck-window.log" 2>&1
grep -E "check-window:|RACECHECK SUMMARY|Race reported" "$OUT/racecheck-window.log" | cut -c1-200
call_done
