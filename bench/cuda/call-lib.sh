# Sourced by the bench/cuda/call-*.sh scripts (one device call each): results go to /tmp/res and come back
# packed as $OUT/all.tar.gz (the device tool returns only a few files) via call_done; node_modules from
# .device/nm.tar.xz; `t LABEL` prints seconds since the start; `unpack_stage` puts node and the addon in
# /tmp and on PATH; `kernels_stage` does the same through run.sh and also runs kernels_check;
# `checks_stage [SECONDS]` runs the model and layer checks (each under that timeout, default 120) and prints
# their summary lines.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
RESULT_DIR=$OUT; export OUT=/tmp/res; mkdir -p "$OUT"
mkdir -p node_modules && tar -xJf .device/nm.tar.xz -C node_modules
call_start=$(date +%s)
# Each stage's start also packs what the stages before left (as call_done does at the end), so that a call the device
# tool cuts short at its limit still brings back the results it had (session 28's last call came back empty).
t() {
  tar -C /tmp -czf "$RESULT_DIR/.all.tar.gz" res 2>/dev/null && mv -f "$RESULT_DIR/.all.tar.gz" "$RESULT_DIR/all.tar.gz"
  echo "[$(( $(date +%s) - call_start )) s] $*" | tee -a "$OUT/progress.log"
}
# Seconds a stage may take: at most $1, and no later than CALL_LIMIT (default 580) seconds into the call, so that
# a late stage is cut by its own timeout and call_done still packs the results before the device tool's limit.
budget() { local left=$(( ${CALL_LIMIT:-580} - ($(date +%s) - call_start) )); (( left < $1 )) && echo $(( left > 10 ? left : 10 )) || echo "$1"; }
# node and the addon into /tmp, on PATH, without running kernels_check (as run.sh does before its stages).
unpack_stage() {
  [[ -x /tmp/node ]] || { xz -dc .device/node.xz > /tmp/node && chmod +x /tmp/node; }
  xz -dc .device/rt.node.xz > /tmp/rt.node
  export PATH=/tmp:$PATH RT_CUDA_ADDON=/tmp/rt.node
}
kernels_stage() {
  t kernels; bash bench/cuda/run.sh --stages kernels > "$OUT/run-kernels.log" 2>&1
  grep -E "FAIL|^kernels_check" "$OUT/kernels.log" | head -20
  export PATH=/tmp:$PATH RT_CUDA_ADDON=/tmp/rt.node
}
checks_stage() {
  local limit=${1:-120}
  t model; timeout "$limit" bash bench/cuda/run.sh --stages model > "$OUT/run-model.log" 2>&1
  grep -E "^FAIL|^check-model" "$OUT/check-model.log"
  t layer; timeout "$limit" bash bench/cuda/run.sh --stages layer > "$OUT/run-layer.log" 2>&1
  grep -E "^FAIL|^check:" "$OUT/check.log"
}
# check-graph.mjs (graphs recorded and replayed against the eager path), under at most $1 seconds (default 150).
graph_stage() {
  t graph; timeout "$(budget "${1:-150}")" node bench/cuda/check-graph.mjs --out "$OUT/check-graph.jsonl" > "$OUT/check-graph.log" 2>&1
  tail -1 "$OUT/check-graph.log" | cut -c1-200
}
# compute-sanitizer memcheck over small train steps (run.sh's memcheck-model stage), under at most $1 seconds.
memcheck_stage() {
  t memcheck; timeout "$(budget "${1:-150}")" bash bench/cuda/run.sh --stages memcheck-model > "$OUT/run-memcheck.log" 2>&1
  grep -E "ERROR SUMMARY|^(tiny|charsmall|copysmall) " "$OUT/memcheck-model.log" | tail -8
}
# kernels_check --gemm-diag: the char window's products part by part, under at most $1 seconds (default 120).
gemm_diag_stage() {
  [[ -x /tmp/kernels_check ]] || { xz -dc .device/kernels_check.xz > /tmp/kernels_check && chmod +x /tmp/kernels_check; }
  t gemm-diag; timeout "$(budget "${1:-120}")" /tmp/kernels_check --gemm-diag > "$OUT/gemm-diag.log" 2>&1
  grep -v '^{' "$OUT/gemm-diag.log"
}
# The A/B of switch sets: each set of $1 (space-separated, each VAR=V,VAR=V) times a bf16 train step of the configs in
# $3 (bench-model.mjs, no peer) into $OUT/bench-SET-ROUND.log, the sets alternated $2 rounds, each run under at most
# $4 seconds (default 90); stops where CALL_LIMIT leaves less than 40.
ab_stage() {
  local sets=$1 rounds=$2 configs=$3 limit=${4:-90} i set name
  for (( i = 1; i <= rounds; i++ )); do
    for set in $sets; do
      (( $(budget "$limit") < 40 )) && return 0
      t "bench $set"; name=${set//\//_}
      local smi=""  # AB_MEM=1: the GPU's memory in use sampled every 100 ms, its peak printed (MiB)
      if [[ "${AB_MEM:-0}" == 1 ]]; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$OUT/mem-$name-$i.txt" & smi=$!
      fi
      env ${set//,/ } timeout "$(budget "$limit")" node bench/cuda/bench-model.mjs --no-torch --precisions bf16 \
        --configs "$configs" --out "$OUT/bench-$name.jsonl" > "$OUT/bench-$name-$i.log" 2>&1
      grep -A 4 "^config " "$OUT/bench-$name-$i.log" | tail -n +3
      if [[ -n $smi ]]; then
        kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
        echo "peak GPU memory $(sort -n "$OUT/mem-$name-$i.txt" | tail -1) MiB ($set, all of $configs)"
      fi
    done
  done
}
# Each kernel's own GPU time per train step of config $2 (default copy), graphs off (Nsight Compute),
# summed by kernel into $OUT/ncu-dur[-CONFIG].txt (or ncu-dur-$3.txt where $3 names the run); $1 rows printed: the
# two warm-up steps and one step, divided by 3.
ncu_durations_stage() {
  local rows=${1:-16} config=${2:-copy} sfx="" reps=1 div=3
  [[ $config != copy ]] && sfx="-$config"
  [[ -n "${3:-}" ]] && sfx="-$3"
  t "ncu-durations $config"
  RT_CUDA_GRAPH=0 timeout 200 ncu --clock-control none --cache-control none --print-units base \
    --metrics gpu__time_duration.sum${NCU_BYTES:+,dram__bytes_read.sum,dram__bytes_write.sum} --csv --page raw \
    node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs "$config" --reps $reps --out /tmp/bm.jsonl \
    > "$OUT/ncu-dur$sfx.csv" 2> "$OUT/ncu-dur$sfx.err"
  python3 bench/cuda/ncu-summary.py "$OUT/ncu-dur$sfx.csv" $div | tee "$OUT/ncu-dur$sfx.txt" | head -"$rows"
}
# Issue 5's table (run.sh's bench-model stage: our steps next to the PyTorch peer modes in TORCH_MODES), if
# kernels_check passed in this call or `force` is given.
peer_stage() {
  if [[ "${1:-}" == force ]] || grep -q "^kernels_check: [0-9]* passed, 0 failed" "$OUT/kernels.log"; then
    t bench; TORCH_MODES=${TORCH_MODES:-fp32,bf16,bf16-sdpa,bf16-graph} timeout "$(budget 330)" bash bench/cuda/run.sh --stages bench-model > "$OUT/run-bench.log" 2>&1
    grep -A 14 "^config " "$OUT/bench-model.log"
    return 0
  fi
  echo "kernels_check failed: no timings"
  return 1
}
# The SASS of the addon's kernels whose mangled names match each of the regexes in $1 (space-separated), each into
# $OUT/sass-N.txt with its opcodes counted at the top: this build machine has no cuobjdump to read them itself.
sass_stage() {
  t sass; [[ -f /tmp/rt.node ]] || xz -dc .device/rt.node.xz > /tmp/rt.node
  cuobjdump -sass /tmp/rt.node > /tmp/all.sass 2> "$OUT/sass.err" || { echo "cuobjdump failed"; return 0; }
  python3 - /tmp/all.sass "$OUT" "$1" <<'PY'
import collections, re, sys
text, out, pats = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3].split()
funcs = re.split(r"\n\s*Function : ", text)[1:]
for n, pat in enumerate(pats):
    for f in funcs:
        name = f.split("\n", 1)[0].strip()
        if not re.search(pat, name): continue
        ops = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", f)
        count = collections.Counter(o.split(".")[0] for o in ops)
        with open(f"{out}/sass-{n}.txt", "w") as w:
            w.write(f"{name}\n{len(ops)} instructions: " + ", ".join(f"{o} {c}" for o, c in count.most_common()) + "\n\n" + f)
        print(f"sass-{n}: {len(ops)} instructions, {name[:140]}")
        break
PY
}
# Nsight Compute's warp-stall sampling (SourceCounters) of one launch of each kernel in $1 (space-separated
# CONFIG:REGEX:SKIP items), the instructions holding the most samples printed (source-top.py).
source_stage() {
  local items=$1 item config regex skip
  for item in $items; do
    IFS=: read -r config regex skip <<< "$item"
    t "source $config $regex"
    RT_CUDA_GRAPH=0 timeout 200 ncu --clock-control none --cache-control none --section SourceCounters --section WarpStateStats \
      --kernel-name regex:"$regex" --launch-skip "$skip" --launch-count 1 -f -o "/tmp/src-$regex" \
      node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs "$config" --reps 1 --out /tmp/bm.jsonl > "$OUT/src-$regex.log" 2>&1
    ncu -i "/tmp/src-$regex.ncu-rep" --page source --csv --print-source sass > "$OUT/src-$regex.csv" 2>> "$OUT/src-$regex.log"
    python3 bench/cuda/source-top.py "$OUT/src-$regex.csv" 45
  done
}
call_done() { t end; tar -C /tmp -czf "$RESULT_DIR/all.tar.gz" res; }
