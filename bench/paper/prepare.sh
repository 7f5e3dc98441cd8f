#!/usr/bin/env bash
# Here, before bench/paper/run-gpu.sh on the GPU machine: the CUDA build and node (bench/cuda/prepare.sh),
# plus the data the presets read, copied into .device/data/ (git-ignored, carried to the GPU machine only;
# never committed): tiny Shakespeare from ../shared/data and Fashion-MNIST from Debian's dataset-fashion-mnist.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash bench/cuda/prepare.sh
mkdir -p .device/data/fashion-mnist
cp ../shared/data/tinyshakespeare.txt .device/data/
if [[ "${1:-}" == "--fmnist" ]]; then
  cp /usr/share/datasets/fashion-mnist/*.gz .device/data/fashion-mnist/
else
  rm -f .device/data/fashion-mnist/*.gz
fi
du -sh .device
