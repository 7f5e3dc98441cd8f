#!/usr/bin/env bash
# `npm run test:asan`: builds the addon with AddressSanitizer and UndefinedBehaviorSanitizer into
# build-asan/rt.node (same sources, defines and include directories as binding.gyp, -O1 -g), then runs the
# native-facing tests against it. Node itself is not instrumented, so the ASan runtime is preloaded
# (LD_PRELOAD) and leak checking is off (V8 leaks by design); src/native.ts loads the build named by
# RT_ADDON_PATH. Exits non-zero when the build fails, a test fails, or any sanitizer report appears.
#
#   scripts/test-asan.sh                 build (incrementally) and run the default test files
#   scripts/test-asan.sh test/x.test.ts  build and run only these files (extra arguments go to vitest)
#   RT_NO_OPENBLAS=1 scripts/test-asan.sh  use (and sanitize) the built-in GEMM instead of OpenBLAS
#   RT_ASAN_BUILD_ONLY=1 scripts/test-asan.sh  only build
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

OUT="${RT_ASAN_DIR:-build-asan}"
CXX="${CXX:-g++}"
JOBS="${RT_ASAN_JOBS:-$(nproc 2>/dev/null || echo 2)}"
LOG="$OUT/test-asan.log"

say() { printf '== test-asan: %s\n' "$*"; }

command -v "$CXX" >/dev/null || { echo "test-asan: $CXX not found"; exit 1; }
LIBASAN="$("$CXX" -print-file-name=libasan.so)"
if [ ! -f "$LIBASAN" ]; then
  echo "test-asan: $CXX has no libasan.so (Debian: apt-get install libgcc-12-dev / the compiler's sanitizer runtime)"
  exit 1
fi

# ---- build ---------------------------------------------------------------------------------------------
mapfile -t SOURCES < <(node scripts/list-sources.cjs)
NAPI_INC="$(node -p "require('node-addon-api').include_dir")"
# Node-API headers: the node-api-headers package (cmake-js brings it), else the headers installed with node.
NODE_API_INC="$(node -p "require('node-api-headers').include_dir" 2>/dev/null || echo "$(dirname "$(dirname "$(command -v node)")")/include/node")"
BLAS_LIB="$(node scripts/detect-openblas.cjs lib)"
BLAS_INC="$(node scripts/detect-openblas.cjs include)"

# The defines of binding.gyp (every "defines" list in it; RT_OPENBLAS follows the detection below), so that
# this build stays the addon npm users get.
mapfile -t DEFINES < <(node -e '
  const text = require("fs").readFileSync("binding.gyp", "utf8").replace(/^\s*#.*$/gm, "");
  const out = new Set();
  const walk = (o) => {
    if (Array.isArray(o)) o.forEach(walk);
    else if (o && typeof o === "object") for (const [k, v] of Object.entries(o)) k === "defines" ? v.forEach((d) => out.add(d)) : walk(v);
  };
  try { walk(new Function("return (" + text + ")")().targets); } catch { ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"].forEach((d) => out.add(d)); }
  out.delete("RT_OPENBLAS");
  for (const d of out) console.log("-D" + d);
')
FLAGS=(-std=c++17 -fexceptions -fPIC -pthread -fvisibility=hidden -march=x86-64-v3
       -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined,float-cast-overflow
       "${DEFINES[@]}" -DBUILDING_NODE_EXTENSION
       -I"$NAPI_INC" -I"$NODE_API_INC" -Inative)
LIBS=()
if [ -n "$BLAS_LIB" ]; then
  FLAGS+=(-DRT_OPENBLAS -I"$BLAS_INC")
  LIBS+=("$BLAS_LIB" -lpthread -lm -Wl,--exclude-libs,ALL)
  gemm=openblas
else
  gemm=builtin
fi
# A change of flags (OpenBLAS on/off) rebuilds everything.
stamp="$OUT/flags"
mkdir -p "$OUT/obj"
# Outside build/ (node-gyp rebuild wipes that); git ignores it through its own .gitignore.
[ -f "$OUT/.gitignore" ] || printf '*\n' > "$OUT/.gitignore"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${FLAGS[*]}" ]; then
  rm -f "$OUT"/obj/*.o "$OUT/rt.node"
  printf '%s' "${FLAGS[*]}" > "$stamp"
fi

# A header newer than the last link recompiles every source (simple and safe).
headers_changed=""
if [ ! -f "$OUT/rt.node" ] || [ -n "$(find native -name '*.h' -newer "$OUT/rt.node" -print -quit)" ]; then
  headers_changed=1
fi

say "building $OUT/rt.node (${#SOURCES[@]} sources, GEMM: $gemm, $JOBS jobs)"
objs=()
todo=()
for src in "${SOURCES[@]}"; do
  obj="$OUT/obj/$(echo "${src%.cc}" | tr '/' '_').o"
  objs+=("$obj")
  if [ -n "$headers_changed" ] || [ ! -f "$obj" ] || [ "$src" -nt "$obj" ]; then todo+=("$src|$obj"); fi
done
if [ ${#todo[@]} -gt 0 ]; then
  printf '%s\n' "${todo[@]}" | xargs -P "$JOBS" -I{} bash -c '
    src="${1%%|*}"; obj="${1##*|}"; shift
    echo "  c++ $src"
    "$@" -c "$src" -o "$obj.tmp" && mv "$obj.tmp" "$obj"' _ {} "$CXX" "${FLAGS[@]}"
fi
"$CXX" -shared -fsanitize=address,undefined,float-cast-overflow -pthread -Wl,-z,now -o "$OUT/rt.node.tmp" "${objs[@]}" "${LIBS[@]}"
mv "$OUT/rt.node.tmp" "$OUT/rt.node"
say "built $(ls -l "$OUT/rt.node" | awk '{print $5}') bytes"

if [ -n "${RT_ASAN_BUILD_ONLY:-}" ]; then exit 0; fi

# ---- run -------------------------------------------------------------------------------------------------
if [ $# -gt 0 ]; then
  TESTS=("$@")
else
  TESTS=(test/layer.test.ts test/errors.test.ts test/tensor.test.ts test/model.test.ts test/decode.test.ts)
  for f in test/fuzz-*.test.ts; do [ -f "$f" ] && TESTS+=("$f"); done
fi

VITEST="$(node -p "require('path').join(require('path').dirname(require.resolve('vitest/package.json')), 'vitest.mjs')")"
export RT_ADDON_PATH="$PWD/$OUT/rt.node"
# allocator_may_return_null: a huge allocation fails as it would without ASan (the addon turns it into an
# Error) instead of ASan aborting the process.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allow_user_segv_handler=1:allocator_may_return_null=1:print_summary=1:${ASAN_OPTIONS_EXTRA:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS_EXTRA:-}"
# A sanitizer build under a preloaded runtime is slow: two threads, and one vitest worker at a time.
export RT_NUM_THREADS="${RT_NUM_THREADS:-2}"

say "running ${#TESTS[@]} test file(s) under ASan+UBSan: ${TESTS[*]}"
set +e
LD_PRELOAD="$LIBASAN" node "$VITEST" run --no-file-parallelism --reporter=default "${TESTS[@]}" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e

# A report can come from a child process vitest survives, or be printed before a clean exit: look for them.
# (The patterns need the report's own prefix, so a test that merely mentions them does not count.)
REPORT='==[0-9]+==ERROR: (Address|Leak)Sanitizer|[0-9]+:[0-9]+: runtime error:|SUMMARY: (Address|UndefinedBehavior)Sanitizer'
if grep -qE "$REPORT" "$LOG"; then
  echo
  say "SANITIZER REPORT(S) found (full log: $LOG):"
  grep -nE -A3 "$REPORT" "$LOG" | head -60
  exit 1
fi
if [ "$status" -ne 0 ]; then
  say "vitest failed under the sanitizers (exit $status); log: $LOG"
  exit "$status"
fi
say "no sanitizer reports; all tests passed"
