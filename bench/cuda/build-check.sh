#!/usr/bin/env bash
# Builds native/cuda/test/kernels_check (CUDA kernels against the CPU kernels) into $1 (default
# build-cuda/kernels_check): the CPU kernels with g++ and the addon's flags, the CUDA files with nvcc for
# sm_90 (the H200; add -gencode for other GPUs), linked with the static cudart. Runs on a machine without
# a GPU; the binary runs where one is.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-build-cuda/kernels_check}"
OBJ="$(dirname "$OUT")/kcheck-obj"
mkdir -p "$OBJ"
ARCH="${RT_CUDA_ARCH:--gencode=arch=compute_90,code=sm_90}"
CPU=(native/core/thread_pool.cc native/cpu/matmul.cc native/cpu/layernorm.cc native/cpu/attention.cc
     native/cpu/activation.cc native/cpu/dropout.cc native/cpu/decode.cc native/cpu/softmax_xent.cc
     native/cpu/linear_rows.cc native/cpu/embedding.cc)
pids=()
for f in "${CPU[@]}"; do
  g++ -O3 -std=c++17 -march=x86-64-v3 -pthread -Inative -c "$f" -o "$OBJ/$(basename "$f" .cc).o" & pids+=($!)
done
for f in native/cuda/*.cu native/cuda/test/kernels_check.cu; do
  # the Hopper kernels (*_sm90.cu) are built for sm_90a alone, as in CMakeLists.txt
  arch=$ARCH; [[ $f == *_sm90.cu ]] && arch="-gencode=arch=compute_90a,code=sm_90a"
  # the fused chains as sm_90a too (their weight multicast), as in CMakeLists.txt
  [[ $f == */block_fused.cu && $ARCH == *compute_90,* ]] && arch="-gencode=arch=compute_90a,code=sm_90a -DRT_SM90A"
  # RT_GEMM_DIAG: the Hopper products' diagnostic variants (kernels_check --gemm-diag); the addon has none
  nvcc -O3 -std=c++17 $arch -Inative -DRT_GEMM_DIAG -c "$f" -o "$OBJ/cu_$(basename "$f" .cu).o" & pids+=($!)
  # two compilers at a time is what a 2-core machine can take
  if (( ${#pids[@]} >= 4 )); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
nvcc $ARCH "$OBJ"/*.o -o "$OUT" -Xcompiler -pthread
echo "built $OUT"
