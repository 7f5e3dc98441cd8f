#!/usr/bin/env bash
# One device call (session 5): the Hopper wgmma GEMM checked (kernels_check, layer and model checks) and
# timed (kernels_check's TFLOP/s; train steps with it and with RT_CUDA_WGMMA=0), the CPU-determinism
# question, a char profile, and the 6-layer plain Shakespeare row (bench/paper/run-gpu.sh, 330 s at most). Results in $OUT/all.tar.gz.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz
#          .device/data/tinyshakespeare.txt dist
source "$(dirname "$0")/call-lib.sh"
kernels_stage
tail -1 $OUT/kernels.log | tr ',' '\n' | grep -E "auto|wgmma|mma128s2" | tr '\n' ' '; echo
grep -q "wgmma.*FAIL\|FAIL.*wgmma" $OUT/kernels.log && { echo "wgmma failed its checks: RT_CUDA_WGMMA=0 from here"; export RT_CUDA_WGMMA=0; }
checks_stage
t bench; timeout 90 node bench/cuda/bench-model.mjs --no-torch --out $OUT/wgmma.jsonl > $OUT/wgmma.log 2>&1
RT_CUDA_WGMMA=0 timeout 90 node bench/cuda/bench-model.mjs --no-torch --out $OUT/mma.jsonl > $OUT/mma.log 2>&1
echo "-- default (wgmma unless turned off above)"; grep -A 6 "^config " $OUT/wgmma.log; echo "-- RT_CUDA_WGMMA=0"; grep -A 6 "^config " $OUT/mma.log
t "paper run"; bash bench/paper/run-gpu.sh plain6 shakespeare-plain-6@330 2>&1 | tail -8
t cpu-determinism; for i in 1 2; do timeout 60 node bench/cuda/cpu-determinism.mjs 2>&1 | tee -a $OUT/cpu-determinism.log; done
t profile; PROFILE_LABEL=wgmma timeout 60 node bench/cuda/profile.mjs --configs char --out $OUT/profile.jsonl > $OUT/profile.log 2>&1; head -24 $OUT/profile.log
call_done
