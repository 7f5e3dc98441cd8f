#!/usr/bin/env bash
# On the build machine (nvcc, no GPU needed): everything bench/cuda/run.sh needs on the GPU machine, in
# .device/ (git-ignored), compressed: this machine's node, the CUDA build of the addon, the kernel check,
# the run-time node_modules.
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
# The run-time dependencies (npm ls --omit=dev), for dist/ to import there: node_modules does not travel,
# and compressed (2 MB against 24 MB) so that they fit the device tool's carry limit.
nm=$(mktemp -d)
for p in $(npm ls --omit=dev --parseable --all 2>/dev/null | grep /node_modules/ | grep -v node-addon-api); do cp -r "$p" "$nm/"; done
tar -C "$nm" -cf - . | xz -T2 -6 > .device/nm.tar.xz
rm -rf "$nm"
du -sh .device/* dist
