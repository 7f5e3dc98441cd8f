#!/usr/bin/env bash
# One device call for issue 5's table when device time is short: kernels_check, then the peer table at once
# (call-peer.sh's bench stage, TORCH_MODES), then the model, layer and graph checks and memcheck while
# CALL_LIMIT allows (each stage cut by call-lib's budget), so the table comes back before the slower checks.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
kernels_stage
peer_stage force
checks_stage "$(budget 90)"
t graph; timeout "$(budget 100)" node bench/cuda/check-graph.mjs --out "$OUT/check-graph.jsonl" > "$OUT/check-graph.log" 2>&1
tail -1 "$OUT/check-graph.log" | cut -c1-200
t memcheck; timeout "$(budget 120)" bash bench/cuda/run.sh --stages memcheck-model > "$OUT/run-memcheck.log" 2>&1
grep -E "ERROR SUMMARY" "$OUT/memcheck-model.log" | tail -3
call_done
