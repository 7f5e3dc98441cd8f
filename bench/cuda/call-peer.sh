#!/usr/bin/env bash
# One device call: the checks of the build (kernels_check, layer and model against the CPU, check-graph),
# then, if kernels_check passed, issue 5's table: our copy and char train steps next to every PyTorch peer
# mode (eager fp32, bf16, bf16 + SDPA; TORCH_MODES adds compile) in the same call, then each kernel's own GPU time over
# a copy step (Nsight Compute).
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
kernels_stage; checks_stage 90
t graph; timeout 150 node bench/cuda/check-graph.mjs --out "$OUT/check-graph.jsonl" > "$OUT/check-graph.log" 2>&1; tail -1 "$OUT/check-graph.log" | cut -c1-200
peer_stage && ncu_durations_stage 14
call_done
