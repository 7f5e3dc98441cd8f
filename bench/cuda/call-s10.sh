#!/usr/bin/env bash
# One device call (session 10): kernels_check of the new build, then the train steps of the new build (rt)
# against the session-9 build (rt-s9) alternated, with the SM clock and power sampled during the char runs,
# then where a char step's time goes: each kernel's GPU time (ncu) and, if nsys is there, the GPU's idle
# time between kernels in a real (graph) run.
#   carry: .device/node.xz .device/rt.node.xz .device/rt-s9.node.xz .device/kernels_check.xz .device/nm.tar.xz dist
source "$(dirname "$0")/call-lib.sh"
kernels_stage
if [[ "${S10_CHECKS:-0}" == 1 ]]; then checks_stage 90; fi
xz -dc .device/rt-s9.node.xz > /tmp/rt-s9.node
nvidia-smi --query-gpu=clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv -lms 100 > "$OUT/clocks.csv" 2>&1 &
smi=$!
for i in 1 2; do
  for b in rt rt-s9; do
    t "bench $b $i"
    RT_CUDA_ADDON=/tmp/$b.node timeout 90 node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs "${S10_CONFIGS:-char,copy}" --out "$OUT/bench-$b.jsonl" > "$OUT/bench-$b-$i.log" 2>&1
    grep -A 4 "^config " "$OUT/bench-$b-$i.log" | tail -n +3
  done
done
kill $smi 2>/dev/null
python3 - "$OUT/clocks.csv" <<'PY'
import sys
rows=[l.strip().split(', ') for l in open(sys.argv[1]) if l[0].isdigit()]
if rows:
  clk=sorted(float(r[0].split()[0]) for r in rows); pw=sorted(float(r[2].split()[0]) for r in rows)
  print(f"sm clock MHz: min {clk[0]:.0f} median {clk[len(clk)//2]:.0f} max {clk[-1]:.0f} (max allowed {rows[0][1]}); power W median {pw[len(pw)//2]:.0f} max {pw[-1]:.0f}; {len(rows)} samples")
PY
if command -v nsys >/dev/null; then
  t nsys
  RT_CUDA_GRAPH=${S10_GRAPH:-1} timeout 120 nsys profile -t cuda --cuda-graph-trace=node -o /tmp/char -f true node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs char --reps 3 --out /tmp/bm.jsonl > "$OUT/nsys.log" 2>&1
  nsys stats -r cuda_gpu_trace -f csv -o /tmp/trace /tmp/char.nsys-rep > /dev/null 2>&1
  ls /tmp/trace* 2>/dev/null; cp /tmp/trace*.csv "$OUT/" 2>/dev/null
  python3 bench/cuda/gaps.py /tmp/trace*cuda_gpu_trace*.csv 2>&1 | head -20
else
  echo "no nsys on this machine"
fi
t ncu; RT_CUDA_GRAPH=0 timeout 150 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv --page raw \
  node bench/cuda/bench-model.mjs --no-torch --precisions bf16 --configs char --reps 1 --out /tmp/bm.jsonl > "$OUT/ncu-dur.csv" 2> "$OUT/ncu-dur.err"
python3 bench/cuda/ncu-summary.py "$OUT/ncu-dur.csv" 3 | tee "$OUT/ncu-dur.txt" | head -12
call_done
