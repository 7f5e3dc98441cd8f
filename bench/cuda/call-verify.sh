#!/usr/bin/env bash
# One device call (session 5): checks of the current build, the CPU-determinism question on the 16-core GPU
# host, then the train-step table against the torch peers (eager in bench-model, the compiled block apart
# so that a slow compile cannot take the eager rows with it). Results in $OUT/all.tar.gz.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
kernels_stage
t cpu-determinism; timeout 90 node bench/cuda/cpu-determinism.mjs 2>&1 | tee $OUT/cpu-determinism.log
t model; timeout 150 bash bench/cuda/run.sh --stages model > $OUT/run-model.log 2>&1; grep -E "^(ok|FAIL)|^check-model" $OUT/check-model.log
t bench; TORCH_MODES=fp32,bf16,bf16-sdpa timeout 200 bash bench/cuda/run.sh --stages bench-model > $OUT/run-bench.log 2>&1; grep -A 14 "^config " $OUT/bench-model.log
t compile; (cd bench/peers && timeout 150 python3 torch_model_cuda.py --modes compile --configs copy,char) 2>&1 | tail -4 | tee $OUT/compile.jsonl | cut -c1-300
t layer; timeout 100 bash bench/cuda/run.sh --stages layer > $OUT/run-layer.log 2>&1; tail -3 $OUT/check.log
call_done
