#!/usr/bin/env bash
# On the build machine (nvcc, no GPU needed): everything bench/cuda/run.sh needs on the GPU machine, in
# .device/ (git-ignored), compressed: this machine's node, the CUDA build of the addon, the kernel check.
# Then call the device tool with carry [".device", "dist"] and the command `bash bench/cuda/run.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
npx tsc -p tsconfig.json
npm run build:cuda
bench/cuda/build-check.sh build-cuda/kernels_check
mkdir -p .device
[[ -f .device/node.xz ]] || xz -T2 -6 -c "$(command -v node)" > .device/node.xz
xz -T2 -6 -c build-cuda/Release/rt.node > .device/rt.node.xz
xz -T2 -6 -c build-cuda/kernels_check > .device/kernels_check.xz
du -sh .device/* dist
