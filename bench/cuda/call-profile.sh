#!/usr/bin/env bash
# One device call: the checks of the current build (kernels_check, layer and model against the CPU,
# check-graph), then where the copy step's GPU time goes by Nsight Compute: every kernel's own duration over
# one train step (no launch gaps, caches left warm), and the launch, occupancy and warp-stall sections of the
# per-window kernels, forward and backward. PROFILE_QUICK=1 skips the checks.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
if [[ "${PROFILE_QUICK:-0}" == 1 ]]; then unpack_stage; else
  kernels_stage; checks_stage 90
  t graph; timeout 150 node bench/cuda/check-graph.mjs --out "$OUT/check-graph.jsonl" > "$OUT/check-graph.log" 2>&1; tail -3 "$OUT/check-graph.log" | cut -c1-200
fi
NCU="ncu --clock-control none --cache-control none"
BM="node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs ${PROFILE_CONFIG:-copy} --reps 1 --out /tmp/bm.jsonl"
# A copy step is ~1,750 kernels with the optimizer; the two warm-up steps are skipped.
t ncu-durations
RT_CUDA_GRAPH=0 timeout 150 $NCU --metrics gpu__time_duration.sum --csv --page raw --launch-skip ${SKIP:-3600} --launch-count ${COUNT:-1760} $BM > "$OUT/ncu-dur.csv" 2> "$OUT/ncu-dur.err"
python3 bench/cuda/ncu-summary.py "$OUT/ncu-dur.csv" 1 | tee "$OUT/ncu-dur.txt" | head -30
tail -3 "$OUT/ncu-dur.err"
SECTIONS="--section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis"
t ncu-forward
RT_CUDA_GRAPH=0 timeout 120 $NCU $SECTIONS --kernel-name regex:"in_forward|out_forward|attention_forward_fused|axpy2d_batch" --launch-skip 600 --launch-count 4 $BM > "$OUT/ncu-fwd.txt" 2>&1
grep -E "^  [a-z_]+.*\(|Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Stall|Issued Warp|No Eligible|Compute \(SM\) Thr|Memory Thr|L2 Hit|Block Limit" "$OUT/ncu-fwd.txt" | head -80
t ncu-backward
RT_CUDA_GRAPH=0 timeout 120 $NCU $SECTIONS --kernel-name regex:"in_backward|out_backward|attention_backward_fused|dot_partial" --launch-skip 100 --launch-count 4 $BM > "$OUT/ncu-bwd.txt" 2>&1
grep -E "^  [a-z_]+.*\(|Duration|Registers Per|Achieved Occupancy|Stall|Issued Warp|No Eligible|Compute \(SM\) Thr|Memory Thr" "$OUT/ncu-bwd.txt" | head -60
call_done
