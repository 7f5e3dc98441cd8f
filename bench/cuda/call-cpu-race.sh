#!/usr/bin/env bash
# One device call: is the CPU backend deterministic on the 16-core GPU host? bench/cuda/cpu-race.mjs (one
# layer config, the same inputs, forward + backward repeated, bits compared) under thread counts and
# OpenBLAS kernel sets.
#   carry: .device/node.xz .device/rt.node.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
unpack_stage
lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-120 | head -3
race() { t "$*"; env "$@" timeout 90 node bench/cuda/cpu-race.mjs ${RACE_ARGS:-} 2>&1 | tail -1 | cut -c1-400; }
race RT_NUM_THREADS=16
race RT_NUM_THREADS=16 OPENBLAS_CORETYPE=Haswell
race RT_NUM_THREADS=1
race RT_NUM_THREADS=4
RACE_ARGS="--variant forget" race RT_NUM_THREADS=16
RACE_ARGS="--activation gelu" race RT_NUM_THREADS=16
RACE_ARGS="--N 96" race RT_NUM_THREADS=16
call_done
