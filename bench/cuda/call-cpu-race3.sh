#!/usr/bin/env bash
# One device call: the CPU determinism probe (cpu-race.mjs) at 16 threads with the CPU-only addon built with
# OpenBLAS and built with the package's own GEMM (RT_NO_OPENBLAS=1): is OpenBLAS part of it?
#   carry: .device/node.xz .device/cpu-blas.node.xz .device/cpu-builtin.node.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
[[ -x /tmp/node ]] || { xz -dc .device/node.xz > /tmp/node && chmod +x /tmp/node; }
export PATH=/tmp:$PATH
for b in blas builtin; do xz -dc .device/cpu-$b.node.xz > /tmp/cpu-$b.node; done
race() { t "race $*"; env RT_DEVICE=cpu "$@" timeout 60 node bench/cuda/cpu-race.mjs --reps 300 $RACE_ARGS > "$OUT/race.log" 2>&1; echo "  rc $? $(tail -1 "$OUT/race.log" | grep -o '"runs_differing":[0-9]*')"; }
for v in accumulate forget; do
  RACE_ARGS="--variant $v"
  for b in blas builtin blas builtin; do race RT_NUM_THREADS=16 RT_ADDON_PATH=/tmp/cpu-$b.node; done
done
call_done
