#!/usr/bin/env bash
# Builds native/cpu/test/kernels_check.cc twice (built-in GEMM, then OpenBLAS statically linked) and runs
# both: correctness, determinism, thread-count independence, then timings. Exit status non-zero on any
# failure. Usage: scripts/check-kernels.sh [--no-bench]
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${TMPDIR:-/tmp}/rt-kernels-check"
mkdir -p "$OUT"
CXX="${CXX:-g++}"
FLAGS=(-O2 -std=c++17 -march=x86-64-v3 -Wall -Wextra -pthread -Inative)
SRCS=(native/cpu/test/kernels_check.cc native/core/thread_pool.cc native/cpu/matmul.cc native/cpu/layernorm.cc
      native/cpu/attention.cc native/cpu/activation.cc native/cpu/dropout.cc native/cpu/linear_rows.cc)
OPENBLAS_A=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a
OPENBLAS_INC=/usr/include/x86_64-linux-gnu/openblas-pthread

"$CXX" "${FLAGS[@]}" "${SRCS[@]}" -o "$OUT/kernels_check_builtin"
builds=(builtin)
if [[ -f "$OPENBLAS_A" ]]; then
  "$CXX" "${FLAGS[@]}" -DRT_OPENBLAS -I"$OPENBLAS_INC" "${SRCS[@]}" -o "$OUT/kernels_check_openblas" \
    "$OPENBLAS_A" -lm
  builds+=(openblas)
else
  echo "check-kernels: $OPENBLAS_A not found (apt-get install libopenblas-dev); skipping the OpenBLAS build" >&2
fi

status=0
for b in "${builds[@]}"; do
  echo "== $b =="
  "$OUT/kernels_check_$b" "$@" | tee "$OUT/$b.log" || status=1
done

# One JSON line with every timing, keyed by backend and thread count.
if [[ "${1:-}" != "--no-bench" ]]; then
  line="{"
  sep=""
  for b in "${builds[@]}"; do
    while IFS= read -r j; do
      t=$(sed -n 's/.*"threads":\([0-9]*\).*/\1/p' <<<"$j")
      line+="$sep\"${b}_t${t}\":$j"
      sep=","
    done < <(grep '^{"backend"' "$OUT/$b.log")
  done
  echo "${line}}"
fi
exit $status
