#!/usr/bin/env bash
# One device call: each kernel's own GPU time over a step of NCU_CONFIG (default char; Nsight Compute, graphs
# off, DRAM bytes with NCU_BYTES=1) with the defaults, then under each set of NCU_SETS (space-separated sets,
# each VAR=V,VAR=V), into $OUT/ncu-dur-<set>.txt and .csv; then, where SOURCE is given, the warp-stall sampling of its
# kernels (source_stage, as call-source.sh). What a switch changes in its own kernels, without the step's noise.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
unpack_stage
config=${NCU_CONFIG:-char}
for set in defaults ${NCU_SETS:-}; do
  env_set=""; [[ $set != defaults ]] && env_set=${set//,/ }
  ([[ -n $env_set ]] && export $env_set; ncu_durations_stage "${NCU_ROWS:-30}" "$config" "${set//[\/=,]/_}")
done
[[ -n "${SOURCE:-}" ]] && source_stage "$SOURCE"
call_done
