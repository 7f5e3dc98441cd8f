#!/usr/bin/env bash
# One device call: how often does a layer-check case fail, and on which side? bench/cuda/check.mjs repeated
# as built, the CPU layer against itself (RT_CHECK_DEVICE=cpu: the 16-core CPU backend twice), the
# session-9 build, and the separate (unfused) kernels.
#   carry: .device/node.xz .device/rt.node.xz .device/rt-s9.node.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
unpack_stage
xz -dc .device/rt-s9.node.xz > /tmp/rt-s9.node
run() { local tag=$1 n=$2; shift 2; local fails=0
  for i in $(seq "$n"); do env "$@" timeout 60 node bench/cuda/check.mjs > "$OUT/check-$tag-$i.log" 2>&1 || fails=$((fails+1)); done
  echo "$tag: $fails of $n runs failed"; grep -h "^FAIL" "$OUT"/check-$tag-*.log | cut -c1-150 | sort | uniq -c | head -6; }
t start
run new 6 RT_CUDA_ADDON=/tmp/rt.node
run cpu-vs-cpu 6 RT_CUDA_ADDON=/tmp/rt.node RT_CHECK_DEVICE=cpu
run s9 5 RT_CUDA_ADDON=/tmp/rt-s9.node
run unfused 5 RT_CUDA_ADDON=/tmp/rt.node RT_CUDA_FUSED=0
run cpu1thread 4 RT_CUDA_ADDON=/tmp/rt.node RT_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
t end
call_done
