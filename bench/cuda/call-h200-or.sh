#!/usr/bin/env bash
# One device call whose work depends on the card that came: on an H200, issue 5's table (call-table.sh); on
# anything else, `kernels_check --gemm-diag` (the char window's products part by part), which any Hopper card
# answers as well as the H200 does. For sessions whose calls for the H200 kind get H100s.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  exec bash "$(dirname "$0")/call-table.sh"
fi
source "$(dirname "$0")/call-lib.sh"
unpack_stage
nvidia-smi --query-gpu=name,clocks.current.sm --format=csv > "$OUT/gpu.txt"
gemm_diag_stage 200
call_done
