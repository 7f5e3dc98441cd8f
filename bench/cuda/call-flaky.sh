#!/usr/bin/env bash
# One device call: the layer check (bench/cuda/check.mjs, fp32 and bf16 against the CPU) repeated, to tell a
# flaky case from a broken one: 3 runs as built, 1 with every allocation NaN-poisoned (RT_CUDA_POISON=1: a
# kernel reading memory nobody wrote shows as NaN), 1 with the session-9 build, 1 with GPU tensors reported
# to V8 again.
#   carry: .device/node.xz .device/rt.node.xz .device/rt-s9.node.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
unpack_stage
xz -dc .device/rt-s9.node.xz > /tmp/rt-s9.node
run() { local tag=$1; shift; t "check $tag"; env "$@" timeout 60 node bench/cuda/check.mjs > "$OUT/check-$tag.log" 2>&1; grep -E "^FAIL|^check:" "$OUT/check-$tag.log" | cut -c1-160; }
run a RT_CUDA_ADDON=/tmp/rt.node
run b RT_CUDA_ADDON=/tmp/rt.node
run poison RT_CUDA_ADDON=/tmp/rt.node RT_CUDA_POISON=1
run s9 RT_CUDA_ADDON=/tmp/rt-s9.node
run s9poison RT_CUDA_ADDON=/tmp/rt-s9.node RT_CUDA_POISON=1
run acc RT_CUDA_ADDON=/tmp/rt.node RT_ACCOUNT_DEVICE_MEMORY=1
run c RT_CUDA_ADDON=/tmp/rt.node
call_done
