#!/usr/bin/env bash
# On the GPU machine (see prepare.sh): the kernel check, the CUDA layer and the whole CUDA model against
# the CPU, then the timings against the PyTorch peers, with logs and JSON lines under $OUT; tables last.
#   bash bench/cuda/run.sh [--sanitize] [--stages kernels,layer,model,bench-layer,bench-model,ab-fused,profile,memcheck-model,sanitize-fp32]
# ab-fused: our train step with the fused block chains off (RT_CUDA_FUSED=0) and on, no peer.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/rt-cuda-out}"
mkdir -p "$OUT"
SANITIZE=0
STAGES="kernels,layer,model,bench-layer,bench-model"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --sanitize) SANITIZE=1 ;;
    --stages) STAGES="$2"; shift ;;
  esac
  shift
done
has() { [[ ",$STAGES," == *",$1,"* ]]; }
[[ -x /tmp/node ]] || xz -dc .device/node.xz > /tmp/node; chmod +x /tmp/node && export PATH=/tmp:$PATH
xz -dc .device/rt.node.xz > /tmp/rt.node
# RT_CUDA_ADDON set by the caller picks another build (bench/cuda/build-device.sh cublas).
export RT_CUDA_ADDON="${RT_CUDA_ADDON:-/tmp/rt.node}"
echo "addon: $RT_CUDA_ADDON"
xz -dc .device/kernels_check.xz > /tmp/kernels_check && chmod +x /tmp/kernels_check
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' | tee -a "$OUT/gpu.txt"
# The peer's eager steps are bound by the host's launch rate, so its processor is part of the record.
lscpu | grep -E "^Model name|^CPU\(s\)|MHz" | tee -a "$OUT/gpu.txt"
status=0
if has kernels; then
  echo "== kernels_check"
  # (a time limit: a kernel that hangs must not take the whole device call with it)
  timeout "${KERNELS_TIMEOUT:-300}" /tmp/kernels_check 2>&1 | tee "$OUT/kernels.log"
  rc=${PIPESTATUS[0]}
  [[ $rc == 0 ]] || status=1
  [[ $rc == 124 ]] && echo "kernels_check: timed out after ${KERNELS_TIMEOUT:-300} s" | tee -a "$OUT/kernels.log"
fi
if has layer; then
  echo "== layer check (cuda vs cpu)"
  node bench/cuda/check.mjs --out "$OUT/check.jsonl" 2>&1 | tee "$OUT/check.log" || status=1
fi
if has model; then
  echo "== model check (cuda vs cpu, allocator poisoned with NaN)"
  RT_CUDA_POISON=1 node bench/cuda/check-model.mjs --out "$OUT/check-model.jsonl" 2>&1 | tee "$OUT/check-model.log" || status=1
fi
if has bench-layer; then
  echo "== layer timing (ours, then the torch peer)"
  node bench/cuda/bench.mjs --out "$OUT/bench.jsonl" 2>&1 | tee "$OUT/bench.log" || status=1
fi
if has bench-model; then
  echo "== train-step timing (ours, then the torch peer)"
  node bench/cuda/bench-model.mjs --torch-modes "${TORCH_MODES:-fp32,bf16,bf16-sdpa,bf16-graph,compile}" --out "$OUT/bench-model.jsonl" 2>&1 | tee "$OUT/bench-model.log" || status=1
fi
if has ab-fused; then
  echo "== train step, fused block chains off then on (ours only)"
  RT_CUDA_FUSED=0 node bench/cuda/bench-model.mjs --no-torch --out "$OUT/ab-unfused.jsonl" 2>&1 | tee "$OUT/ab-unfused.log" || status=1
  node bench/cuda/bench-model.mjs --no-torch --out "$OUT/ab-fused.jsonl" 2>&1 | tee "$OUT/ab-fused.log" || status=1
fi
if has profile; then
  echo "== GPU time per operation of a train step (RT_CUDA_PROFILE=1)"
  node bench/cuda/profile.mjs --label "${PROFILE_LABEL:-}" --out "$OUT/profile.jsonl" 2>&1 | tee "$OUT/profile.log" || status=1
fi
if [[ $SANITIZE == 1 ]]; then
  echo "== compute-sanitizer memcheck (kernel checks, then a small train step)"
  timeout 150 compute-sanitizer --tool memcheck --print-limit 20 /tmp/kernels_check --no-bench > "$OUT/memcheck.log" 2>&1
  tail -3 "$OUT/memcheck.log"
  RT_BENCH_DEVICE=cuda timeout 200 compute-sanitizer --tool memcheck --print-limit 20 node bench/cuda/bench-model.mjs --configs tiny --no-torch --reps 2 > "$OUT/memcheck-model.log" 2>&1
  tail -3 "$OUT/memcheck-model.log"
fi
if has sanitize-fp32; then
  echo "== compute-sanitizer initcheck and racecheck, the fp32 model check's copy relu case"
  for tool in initcheck racecheck; do
    timeout 240 compute-sanitizer --tool $tool --print-limit 20 node bench/cuda/check-model.mjs --precision fp32 --cases "copy accumulate relu" > "$OUT/$tool-model.log" 2>&1
    grep -E "^(ok|FAIL)|ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/$tool-model.log"
  done
fi
if has memcheck-model; then
  echo "== compute-sanitizer memcheck, small train steps (tiny; the char and copy paths on few positions)"
  RT_BENCH_DEVICE=cuda timeout 240 compute-sanitizer --tool memcheck --print-limit 20 node bench/cuda/bench-model.mjs --configs tiny,charsmall,copysmall --no-torch --reps 2 > "$OUT/memcheck-model.log" 2>&1
  grep -E "ERROR SUMMARY|^(tiny|charsmall|copysmall) " "$OUT/memcheck-model.log" | tail -8
fi
echo "== summary"
grep -h -E "^kernels_check:|^check:|^check-model:" "$OUT"/*.log 2>/dev/null
[[ -f "$OUT/bench.log" ]] && grep -A 20 "^config " "$OUT/bench.log"
for f in bench-model ab-unfused ab-fused; do [[ -f "$OUT/$f.log" ]] && { echo "-- $f"; grep -A 20 "^config " "$OUT/$f.log"; }; done
exit $status
