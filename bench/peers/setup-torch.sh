#!/usr/bin/env bash
# Sets up the PyTorch peer used by bench/layer.mjs. Idempotent; safe to run again.
#
#  1. Installs Debian's python3-torch (torch 1.13) when `/usr/bin/python3 -c 'import torch'` fails.
#  2. Unpacks Debian's libopenblas0-openmp (without installing it system-wide) into
#     bench/peers/.openblas-openmp, so that the peer process alone can load the OpenMP OpenBLAS
#     through LD_LIBRARY_PATH. Debian's torch otherwise runs on the reference BLAS (~4 GFLOP/s),
#     and the pthread OpenBLAS fights torch's OpenMP threads.
#  3. Prints, as its last line of stdout, the directory to put on LD_LIBRARY_PATH for the peer.
#
# Needs root (apt-get) the first time only. Debian's torch lives in /usr/lib/python3/dist-packages,
# so the peer must run under /usr/bin/python3 (a pyenv/venv python3 earlier on PATH will not see it).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="$here/.openblas-openmp"
py=/usr/bin/python3

log() { echo "setup-torch: $*" >&2; }

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    apt-get update >&2
    apt_updated=1
  fi
}

if [ -x "$py" ] && "$py" -c 'import torch' >/dev/null 2>&1; then
  log "python3-torch present ($("$py" -c 'import torch; print(torch.__version__)'))"
else
  log "installing python3-torch (takes minutes)"
  apt_update_once
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-torch >&2
fi

find_lib() { find "$dest" -name 'libblas.so.3' -path '*openblas-openmp*' 2>/dev/null | head -n1; }

lib="$(find_lib || true)"
if [ -z "$lib" ]; then
  log "unpacking libopenblas0-openmp into $dest"
  tmp="$(mktemp -d)"
  chmod 755 "$tmp"  # lets apt's _apt user write the download
  trap 'rm -rf "$tmp"' EXIT
  apt_update_once
  (cd "$tmp" && apt-get download libopenblas0-openmp >&2)
  deb="$(ls "$tmp"/libopenblas0-openmp_*.deb | head -n1)"
  rm -rf "$dest"
  mkdir -p "$dest"
  dpkg-deb -x "$deb" "$dest"
  lib="$(find_lib || true)"
  if [ -z "$lib" ]; then
    log "error: no openblas-openmp/libblas.so.3 inside $deb"
    exit 1
  fi
fi

libdir="$(dirname "$lib")"
# torch links libblas.so.3 and liblapack.so.3; both live in this directory, and libopenblas's
# own libgomp dependency comes from the system (torch already loads libgomp).
log "peer LD_LIBRARY_PATH directory:"
echo "$libdir"
