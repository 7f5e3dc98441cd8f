#!/usr/bin/env bash
# One device call for CUDA graphs (native/layer/recurrence.cc, Backend::graph_*; RT_CUDA_GRAPH=1 on,
# default off): the kernel checks; the layer and model checks against the CPU; check-graph.mjs (the
# same steps with and without graphs, bit for bit, in two processes); the copy and char train steps with
# graphs and without, alternated twice; then, with graphs off, the window walk's untried cluster form
# (RT_CUDA_WINDOW_CLUSTER=1: check-window.mjs and one copy train step each for cluster, one-block walk, off).
# Prints as it goes (a cut-short call still reports).
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
kernels_stage
checks_stage 90
t graph; timeout 240 node bench/cuda/check-graph.mjs --out "$OUT/check-graph.jsonl" > "$OUT/check-graph.log" 2>&1; cut -c1-220 "$OUT/check-graph.log"
for i in 1 2; do
  for g in 1 0; do
    t "bench graph=$g"
    RT_CUDA_GRAPH=$g timeout 90 node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --out "$OUT/bench-graph$g.jsonl" > "$OUT/bench-graph$g-$i.log" 2>&1
    grep -A 3 "^config " "$OUT/bench-graph$g-$i.log" | tail -2
  done
done
t window-cluster; RT_CUDA_GRAPH=0 RT_CUDA_WINDOW_CLUSTER=1 timeout 60 node bench/cuda/check-window.mjs > "$OUT/check-window-cluster.log" 2>&1; grep -E "check-window" "$OUT/check-window-cluster.log" | cut -c1-220
for mode in cluster block off; do
  case $mode in cluster) env="RT_CUDA_WINDOW=1 RT_CUDA_WINDOW_CLUSTER=1" ;; block) env="RT_CUDA_WINDOW=1" ;; off) env="RT_CUDA_WINDOW=0" ;; esac
  env RT_CUDA_GRAPH=0 $env timeout 40 node bench/cuda/bench-model.mjs --configs copy --no-torch --precisions bf16 --out "$OUT/bench-walk-$mode.jsonl" > "$OUT/bench-walk-$mode.log" 2>&1
  echo "walk $mode: $(grep -A2 '^config' "$OUT/bench-walk-$mode.log" | tail -1)"
done
call_done
