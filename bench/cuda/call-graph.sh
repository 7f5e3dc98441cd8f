#!/usr/bin/env bash
# One device call for CUDA graphs (native/layer/recurrence.cc, Backend::graph_*; on by default,
# RT_CUDA_GRAPH=0 off): the kernel checks; the layer and model checks against the CPU; check-graph.mjs (the
# same steps with and without graphs, bit for bit, in two processes); the copy and char train steps with
# graphs and without, alternated (GRAPH_ROUNDS times, default 2). Prints as it goes (a cut-short call still
# reports). GRAPH_QUICK=1: only check-graph and the timings, for a second call on the same build. (The first
# call, 18:14 UTC, also timed the window walk's cluster form: bench/results/cuda-graph-2026-12-03a.log.)
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
if [[ "${GRAPH_QUICK:-0}" == 1 ]]; then unpack_stage; else kernels_stage; checks_stage 90; fi
t graph; timeout 240 node bench/cuda/check-graph.mjs --out "$OUT/check-graph.jsonl" > "$OUT/check-graph.log" 2>&1; cut -c1-220 "$OUT/check-graph.log"
for i in $(seq "${GRAPH_ROUNDS:-2}"); do
  for g in 1 0; do
    t "bench graph=$g"
    RT_CUDA_GRAPH=$g timeout 90 node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --out "$OUT/bench-graph$g.jsonl" > "$OUT/bench-graph$g-$i.log" 2>&1
    grep -A 3 "^config " "$OUT/bench-graph$g-$i.log" | tail -2
  done
done
call_done
