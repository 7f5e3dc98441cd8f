#!/usr/bin/env bash
# One device call for issue 5's table when device time is short: kernels_check, then the peer table at once
# (call-peer.sh's bench stage, TORCH_MODES), then the model, layer and graph checks and memcheck while
# CALL_LIMIT allows (each stage cut by call-lib's budget), so the table comes back before the slower checks.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
kernels_stage
peer_stage force
checks_stage "$(budget 90)"
graph_stage 100
memcheck_stage 120
call_done
