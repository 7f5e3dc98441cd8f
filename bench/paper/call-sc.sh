#!/usr/bin/env bash
# One device call: a long selective-copy run (the preset, the author's settings) in pieces that each fit a
# call, the checkpoint carried between calls; and, beside the first piece, the CUDA checks of the build it
# runs on (kernels_check, the model and layer checks against the CPU), which share the GPU with it
# for their first minute or two.
#   [SC_FLAGS="--max-grad-norm 1"] bash bench/paper/call-sc.sh NAME SECONDS [RESUME_CHECKPOINT]
# SC_FLAGS: flags added to the preset's (give the same ones to every piece of a run).
#   carry: .device/node.xz .device/rt.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
#          (+ the checkpoint, e.g. .device/ckpt/ckpt-sc3.safetensors, when resuming)
source "$(dirname "$0")/../cuda/call-lib.sh"
name=$1 limit=$2 resume=${3:-}
unpack_stage
flags="${SC_FLAGS:-}"; [[ -n "$resume" ]] && flags="$flags --resume $PWD/$resume"
extra=""; [[ -n "$flags" ]] && extra=":$flags"
t "train $name ($limit s)"
RT_KEEP_CHECKPOINTS=1 bash bench/paper/run-gpu.sh "$name" "$name=paper-selective-copy@$limit$extra" > "$OUT/train-$name.log" 2>&1 &
train=$!
if [[ -z "$resume" && "${SC_CHECKS:-1}" == 1 ]]; then
  kernels_stage
  checks_stage 120
fi
wait $train
t trained; cat "$OUT/train-$name.log" | cut -c1-300 | tail -12
mv "$OUT"/ckpt-*.safetensors "$RESULT_DIR"/ 2>/dev/null
call_done
