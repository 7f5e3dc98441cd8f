#!/usr/bin/env bash
# On the GPU machine (see prepare.sh): the kernel check, the CUDA layer against the CPU layer, then the
# timing against the PyTorch peer, with logs and JSON lines under $OUT. The table comes last.
#   bash bench/cuda/run.sh [--sanitize]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/rt-cuda-out}"
mkdir -p "$OUT"
xz -dc .device/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
xz -dc .device/rt.node.xz > /tmp/rt.node && export RT_CUDA_ADDON=/tmp/rt.node
xz -dc .device/kernels_check.xz > /tmp/kernels_check && chmod +x /tmp/kernels_check
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' | tee -a "$OUT/gpu.txt"
status=0
echo "== kernels_check"
/tmp/kernels_check 2>&1 | tee "$OUT/kernels.log" || status=1
echo "== layer check (cuda vs cpu)"
node bench/cuda/check.mjs --out "$OUT/check.jsonl" 2>&1 | tee "$OUT/check.log" || status=1
echo "== timing (ours, then the torch peer)"
node bench/cuda/bench.mjs --out "$OUT/bench.jsonl" 2>&1 | tee "$OUT/bench.log" || status=1
if [[ "${1:-}" == "--sanitize" ]]; then
  echo "== compute-sanitizer memcheck (kernel checks only)"
  timeout 150 compute-sanitizer --tool memcheck --print-limit 20 /tmp/kernels_check --no-bench > "$OUT/memcheck.log" 2>&1
  tail -5 "$OUT/memcheck.log"
fi
echo "== summary"
grep -h -E "^kernels_check:|^check:" "$OUT/kernels.log" "$OUT/check.log"
grep -A 20 "^config " "$OUT/bench.log"
exit $status
