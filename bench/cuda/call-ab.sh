#!/usr/bin/env bash
# One device call for switches of the CUDA build: the kernel checks, the layer and model checks against the
# CPU and check-graph with the defaults, then the train steps (AB_CONFIGS, default copy,char) under each
# set of environment variables in AB_SETS (space-separated sets, each VAR=V,VAR=V), the sets alternated
# AB_ROUNDS times (default 2; AB_HOPPER_SETS="VAR=V,VAR=V ..." first times the Hopper products again under each set), then each kernel's own GPU time over one copy step by Nsight Compute
# (AB_NCU=0 skips it; AB_NCU_CHAR=1 adds the char config's). AB_MEMCHECK=1 runs compute-sanitizer on small steps after the A/B. AB_QUICK=1 skips the checks;
# AB_PEER=1 then times issue 5's table against the PyTorch peer (call-peer.sh's bench stage; AB_PEER=force even where
# kernels_check failed), cut short where the call
# nears CALL_LIMIT (call-lib.sh's budget);
# AB_SASS="REGEX ..." dumps those kernels' SASS (sass_stage). AB_GEMM_DIAG=1 adds, after the kernel checks, kernels_check --gemm-diag (what each part of a char window's products costs). AB_PHASES=1 adds step-phases.mjs (wall time per native
# call) for each config, with the defaults. Builds to compare against, .device/rt-NAME.node.xz (carried
# too; rt-base, say), are unpacked to /tmp/rt-NAME.node: AB_SETS="RT_CUDA_ADDON=/tmp/rt.node RT_CUDA_ADDON=/tmp/rt-base.node"
# alternates the two.
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
for f in .device/rt-*.node.xz; do [[ -f "$f" ]] && xz -dc "$f" > "/tmp/$(basename "$f" .xz)"; done
sets=${AB_SETS:-"RT_CUDA_STAGE=1,RT_CUDA_ATTN_MMA=1 RT_CUDA_STAGE=0,RT_CUDA_ATTN_MMA=0"}
if [[ "${AB_QUICK:-0}" == 1 ]]; then unpack_stage; else
  kernels_stage; grep '"hopper_gemm"' "$OUT/kernels.log" | cut -c1-900
  [[ "${AB_GEMM_DIAG:-0}" == 1 ]] && gemm_diag_stage
  for set in ${AB_HOPPER_SETS:-}; do  # the Hopper products' timing again under other environments
    t "hopper gemm $set"; env ${set//,/ } timeout 120 /tmp/kernels_check --hopper-gemm | tee -a "$OUT/hopper-gemm.log" | grep hopper_gemm | cut -c1-900
  done
  checks_stage 90
  graph_stage
fi
ab_stage "$sets" "${AB_ROUNDS:-2}" "${AB_CONFIGS:-copy,char}"
if [[ "${AB_PHASES:-0}" == 1 ]]; then
  configs=${AB_CONFIGS:-copy,char}
  for c in ${configs//,/ }; do
    t "phases $c"; timeout 60 node bench/cuda/step-phases.mjs --config "$c" > "$OUT/phases-$c.log" 2>&1; tail -8 "$OUT/phases-$c.log"
  done
fi
[[ "${AB_MEMCHECK:-0}" == 1 ]] && memcheck_stage
# issue 5's table with the default build, as call-peer.sh times it; AB_PEER=force (or AB_QUICK=1, no kernels_check
# run) times it even where kernels_check failed, so that a call testing a new kernel still brings the table back
peer=${AB_PEER:-0}; [[ "$peer" == 1 && "${AB_QUICK:-0}" == 1 ]] && peer=force
if [[ "$peer" == 1 ]]; then peer_stage; elif [[ "$peer" == force ]]; then peer_stage force; fi
if [[ -n "${AB_SASS:-}" ]]; then  # the SASS of kernels by regexes of their mangled names (sass_stage)
  sass_stage "$AB_SASS"
fi
if [[ "${AB_NCU:-1}" == 1 ]]; then
  ncu_durations_stage 16
fi
if [[ "${AB_NCU_CHAR:-0}" == 1 ]]; then
  ncu_durations_stage 24 char
fi
call_done
