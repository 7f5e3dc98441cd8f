#!/usr/bin/env bash
# One device call: does V8's external-memory accounting of GPU tensors cost the train step? The step split
# by native call (step-phases.mjs) under node --trace-gc, and the train steps, with GPU tensors reported to
# V8 (RT_ACCOUNT_DEVICE_MEMORY=1, the default) and not (=0), alternated.
#   carry: .device/node.xz .device/rt.node.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
unpack_stage
for acc in 1 0; do
  for cfg in copy char; do
    t "phases $cfg account=$acc"
    RT_ACCOUNT_DEVICE_MEMORY=$acc timeout 60 node --trace-gc bench/cuda/step-phases.mjs --config $cfg > "$OUT/gc-$cfg-$acc.log" 2>&1
    echo "  gc lines: $(grep -c -E 'Mark-Compact|Scavenge|Mark-sweep' "$OUT/gc-$cfg-$acc.log"), mark-compact: $(grep -c -E 'Mark-Compact|Mark-sweep' "$OUT/gc-$cfg-$acc.log")"
    grep '^{' "$OUT/gc-$cfg-$acc.log" | grep -E 'embeddingForward|headXent|layer|"ms_step"' | cut -c1-150
  done
done
grep -E "Mark-Compact|Mark-sweep" "$OUT/gc-copy-1.log" | tail -3 | cut -c1-200
for i in 1 2; do
  for acc in 1 0; do
    t "bench account=$acc $i"
    RT_ACCOUNT_DEVICE_MEMORY=$acc timeout 90 node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs copy,char --out "$OUT/bench-acc$acc.jsonl" > "$OUT/bench-acc$acc-$i.log" 2>&1
    grep -A 4 "^config " "$OUT/bench-acc$acc-$i.log" | tail -n +3 | head -2
  done
done
call_done
