#!/usr/bin/env bash
# One device call: where the warps of a kernel wait, instruction by instruction. Nsight Compute's warp-stall
# sampling (SourceCounters) of one launch of each kernel in SOURCE (space-separated CONFIG:REGEX:SKIP items,
# default the copy step's two big chain kernels), exported as SASS with samples per instruction, and the
# instructions that hold the most samples printed (bench/cuda/source-top.py).
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
unpack_stage
source_stage "${SOURCE:-copy:out_forward:20 copy:out_backward:20}"
call_done
