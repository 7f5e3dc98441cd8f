#!/usr/bin/env bash
# On the GPU machine: trains the given presets of `rt train --preset` (docs/RESULTS.md's rows) on CUDA, one
# after the other, each into /tmp/runs/<preset>/, then packs every run's log.jsonl (and the final summary
# line) into $OUT/runs-<tag>.tar.gz. Checkpoints stay behind (too large to come back).
#   bash bench/paper/run-gpu.sh TAG [NAME=]PRESET[@SECONDS][:EXTRA FLAGS] ...
# NAME= names the run's folder (default: the preset), so that one preset can run twice with different flags.
# A run given @SECONDS gets SIGTERM after that long: `rt train` then stops at the step in flight, writes its
# checkpoint and summary, and the run is reported as stopped early. RT_PARALLEL=1 starts all the runs at
# once (they share the GPU: each run's wall time is then longer than it would be alone; say so where it is
# reported).
# Needs carried: .device/node.xz, .device/rt.node.xz, .device/nm.tar.xz, the data it reads from .device/data/
# (tinyshakespeare.txt, fashion-mnist/*.gz: 31 MB, carry it only for the fmnist presets), all made by
# bench/paper/prepare.sh, and dist. RT_KEEP_CHECKPOINTS=1 also copies each run's checkpoint (a few MB for the
# copy models) to $OUT/ckpt-<name>.safetensors, so that a later call on a fresh machine can --resume it.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/rt-paper-out}"
mkdir -p "$OUT" /tmp/runs
TAG="$1"; shift
[[ -x /tmp/node ]] || { xz -dc .device/node.xz > /tmp/node && chmod +x /tmp/node; }
# Its own copy of the addon: other scripts of the same call rewrite /tmp/rt.node, and rewriting a loaded
# library under a running process kills it.
xz -dc .device/rt.node.xz > /tmp/rt-paper.node
export PATH=/tmp:$PATH RT_CUDA_ADDON=/tmp/rt-paper.node RT_DEVICE=cuda
# The package's run-time dependencies (node_modules does not travel; bench/paper/prepare.sh packs them).
[[ -d node_modules ]] || { mkdir node_modules && tar -xJf .device/nm.tar.xz -C node_modules; }
# The data where the presets look for it (../shared/data, like CI's checkout) and Fashion-MNIST.
mkdir -p ../shared/data
[[ -f .device/data/tinyshakespeare.txt ]] && cp .device/data/tinyshakespeare.txt ../shared/data/
FMNIST=.device/data/fashion-mnist
nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.used --format=csv,noheader | tee "$OUT/gpu-$TAG.txt"
run_one() {
  local spec="$1" head extra="" name preset limit=3600 dir data_flag="" start rc
  head="${spec%%:*}"; [[ "$spec" == *:* ]] && extra="${spec#*:}"
  preset="${head%%@*}"; [[ "$head" == *@* ]] && limit="${head#*@}"
  name="$preset"; [[ "$preset" == *=* ]] && { name="${preset%%=*}"; preset="${preset#*=}"; }
  dir=/tmp/runs/$name
  [[ "$preset" == fmnist-* ]] && data_flag="--data $FMNIST"
  echo "== $name: $preset $extra ($(date -u +%H:%M:%S))"
  start=$(date +%s)
  # shellcheck disable=SC2086
  timeout -s TERM -k 30 "$limit" node dist/cli/rt.js train --preset "$preset" --device cuda --out "$dir" --json $data_flag $extra > "$dir.stdout" 2> "$dir.stderr"
  rc=$?
  echo "$name: rc $rc, $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu-$TAG.txt"
  tail -2 "$dir.stdout" | cut -c1-400
  tail -3 "$dir.stderr"
  cp "$dir.stdout" "$dir/stdout.jsonl" 2>/dev/null; cp "$dir.stderr" "$dir/stderr.txt" 2>/dev/null
  [[ "${RT_KEEP_CHECKPOINTS:-0}" == 1 && -f "$dir/checkpoint.safetensors" ]] && cp "$dir/checkpoint.safetensors" "$OUT/ckpt-$name.safetensors"
  return 0
}
for spec in "$@"; do
  if [[ "${RT_PARALLEL:-0}" == 1 ]]; then run_one "$spec" & else run_one "$spec"; fi
done
wait
tar -C /tmp/runs -czf "$OUT/runs-$TAG.tar.gz" --exclude='*.safetensors' --exclude='*.tmp' .
ls -la "$OUT"
