#!/usr/bin/env bash
# One device call: the kernel, model, layer and graph checks of the build, then Nsight Compute's warp-stall
# breakdown, memory throughput and occupancy of one launch of each kernel named in STALLS (space-separated
# CONFIG:REGEX items; default the copy step's per-window kernels and the char step's biggest ones), graphs off.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
if [[ "${STALLS_CHECKS:-1}" == 1 ]]; then
  kernels_stage; checks_stage 90
  t graph; timeout 150 node bench/cuda/check-graph.mjs --out "$OUT/check-graph.jsonl" > "$OUT/check-graph.log" 2>&1; tail -1 "$OUT/check-graph.log" | cut -c1-200
else unpack_stage; fi
items=${STALLS:-"copy:out_forward|in_forward|attention_forward_mma|axpy2d_batch copy:out_backward|in_backward|attention_backward_mma char:attention_forward_mma|layernorm_forward|gemm_wgmma_kernel|map1 char:attention_backward_mma|layernorm_backward_dx|weight_grad_kernel|map2_kernel"}
n=0
for item in $items; do
  n=$((n + 1))
  config=${item%%:*}; regex=${item#*:}
  t "ncu-stalls $config"
  RT_CUDA_GRAPH=0 timeout 240 ncu --clock-control none --cache-control none \
    --kernel-name regex:"$regex" --launch-skip "${STALL_SKIP:-40}" --launch-count "${STALL_COUNT:-12}" \
    --metrics regex:"smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio",gpu__time_duration.sum,smsp__inst_executed.sum,sm__warps_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed,l1tex__throughput.avg.pct_of_peak_sustained_active,lts__throughput.avg.pct_of_peak_sustained_elapsed,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,smsp__issue_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,launch__grid_size,launch__block_size,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,dram__bytes.sum \
    node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs "$config" --reps 1 --out /tmp/bm.jsonl > "$OUT/ncu-stalls-$config-$n.txt" 2>&1
  python3 - "$OUT/ncu-stalls-$config-$n.txt" <<'PY'
import re, sys
seen = {}
cur = None
for line in open(sys.argv[1], errors="replace"):
    if "Context" in line and "Device" in line:
        name = re.sub(r"\(.*", "", line.strip()); name = re.sub(r"^(void )?(\(anonymous namespace\)|unnamed>)?::", "", name).strip()
        name = name.split("<")[0][-40:]
        cur = None if name in seen and seen[name] >= 1 else name
        if cur: seen[name] = 1; print("==", cur)
        continue
    if cur is None: continue
    f = line.split()
    if len(f) >= 2:
        try: v = float(f[-1].replace(",", ""))
        except ValueError: continue
        n = f[0].replace("smsp__average_warps_issue_stalled_", "stall_").replace("_per_issue_active.ratio", "")
        if not n.startswith("stall_") or v >= 0.25: print(f"   {n:55s} {v:14.2f}")
PY
done
call_done
