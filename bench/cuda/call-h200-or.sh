#!/usr/bin/env bash
# One device call whose work depends on the card that came, for sessions whose calls for the H200 kind mostly get
# H100s. On an H200: issue 5's table first (the peer's modes in TORCH_MODES, timed before anything else so that a
# short budget still brings it back), then kernels_check, the A/B of AB_SETS on the char step if CALL_LIMIT leaves
# time, then the slower checks. On anything else: the table too where TABLE_ANY=1, then kernels_check unless
# NO_KERNELS=1, the A/B, and `kernels_check --gemm-diag` (the char window's products part by part), which any Hopper
# card answers as the H200 does. AB_SETS: space-separated sets of VAR=V,VAR=V (default "RT_X=0": the defaults
# alone), alternated AB_ROUNDS times (default 3, 0 for none) on AB_CONFIGS (default char). MEMCHECK_ANY=1: compute-sanitizer
# on small train steps off the H200 too, before --gemm-diag.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
h200=0; nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 && h200=1
nvidia-smi --query-gpu=name,clocks.current.sm --format=csv > "$OUT/gpu.txt"
[[ $h200 == 1 || "${TABLE_ANY:-0}" == 1 ]] && peer_stage force
if [[ $h200 == 1 || "${NO_KERNELS:-0}" != 1 ]]; then kernels_stage; else unpack_stage; fi
ab_stage "${AB_SETS:-RT_X=0}" "${AB_ROUNDS:-3}" "${AB_CONFIGS:-char}" 60
if [[ $h200 == 1 ]]; then
  checks_stage "$(budget 90)"
  graph_stage 100
  memcheck_stage 120
else
  [[ "${MEMCHECK_ANY:-0}" == 1 ]] && memcheck_stage 150
  gemm_diag_stage 200
fi
call_done
