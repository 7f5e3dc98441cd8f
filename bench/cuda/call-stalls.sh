#!/usr/bin/env bash
# One device call: why the fused chain kernels of the copy step wait. Nsight Compute's warp-stall breakdown
# (cycles per issued instruction by reason) and the instruction mix of one launch of each per-window kernel
# (STALL_KERNELS, a regex), graphs off.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
unpack_stage
BM="node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs copy --reps 1 --out /tmp/bm.jsonl"
t ncu-stalls
RT_CUDA_GRAPH=0 timeout 200 ncu --clock-control none --cache-control none \
  --kernel-name regex:"${STALL_KERNELS:-out_forward|out_backward|in_forward|in_backward|attention_backward_mma}" --launch-skip 300 --launch-count 5 \
  --metrics regex:"smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio",gpu__time_duration.sum,smsp__inst_executed.sum,sm__warps_active.avg.pct_of_peak_sustained_active,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,smsp__inst_executed_op_shared_ld.sum,smsp__inst_executed_op_global_st.sum,smsp__inst_executed_op_global_ld.sum \
  $BM > "$OUT/ncu-stalls.txt" 2>&1
python3 - "$OUT/ncu-stalls.txt" <<'PY'
import re, sys
cur = None
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"\s+(?:void )?(?:\(anonymous namespace\)|unnamed>)?::?(\w+)", line)
    if "Context" in line and "Device" in line:
        cur = line.split("(")[0].strip()[-40:]; print("==", cur); continue
    f = line.split()
    if len(f) >= 2 and (f[0].startswith("smsp__average_warps_issue_stalled") or f[0].startswith(("gpu__time", "smsp__inst", "sm__warps", "l1tex__data"))):
        try: v = float(f[-1].replace(",", ""))
        except ValueError: continue
        name = f[0].replace("smsp__average_warps_issue_stalled_", "stall_").replace("_per_issue_active.ratio", "")
        if not name.startswith("stall_") or v >= 0.3: print(f"   {name:50s} {v:12.2f}")
PY
call_done
