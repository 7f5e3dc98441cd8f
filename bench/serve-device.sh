#!/usr/bin/env bash
# npm run bench:serve on a bare Linux x86-64 machine (no network, no npm; made for the 16-core host of the
# device tool), from a copy of the working tree plus what bench/serve-device-prepare.sh packed here:
#   carry [".device/node.xz", ".device/serve-rt.node.xz", ".device/serve-nm.tar.xz", "dist"]
#   command: bash bench/serve-device.sh
# node and the CPU addon go to /tmp/rt-serve (the addon loaded through RT_ADDON_PATH), node_modules is
# unpacked in the tree. Then, with the server's defaults for this machine (threads = its CPUs):
#   1. node bench/serve.mjs --rounds 2 --out $OUT/serve-16core.jsonl   (batching on and off, 1/8/64 clients)
#   2. variants, batching on, 1 and 64 clients, one round each, to $OUT/serve-16core-variants.jsonl:
#      --threads 2 (the 2-core settings: 3 steps in flight of >= 16 rows, the addon's pool of 2),
#      --pipeline-min-rows 16 (all threads, batches of 16 as on 2 cores), --threads 8
# and prints a table of both files. ~5 minutes; --quick: 2 s levels, one round, 1 and 64 clients (~1 min).
# Every run stays under its own time limit, so a stuck one costs its share and the table still prints.
#   bash bench/serve-device.sh [--quick]      (OUT: where results go, default /tmp/rt-serve/out)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
quick=0
[[ "${1:-}" == --quick ]] && quick=1
stage=/tmp/rt-serve
OUT=${OUT:-$stage/out}
mkdir -p "$stage" "$OUT"
start=$(date +%s)
t() { echo "[$(( $(date +%s) - start )) s] $*"; }

for f in .device/node.xz .device/serve-rt.node.xz .device/serve-nm.tar.xz dist/cli/rt.cjs; do
  [[ -e $f ]] || { echo "serve-device: $f is missing (run bash bench/serve-device-prepare.sh, carry .device/node.xz, .device/serve-rt.node.xz, .device/serve-nm.tar.xz and dist)" >&2; exit 2; }
done
[[ -x $stage/node ]] || { xz -dc .device/node.xz > "$stage/node.tmp" && chmod +x "$stage/node.tmp" && mv "$stage/node.tmp" "$stage/node"; }
xz -dc .device/serve-rt.node.xz > "$stage/rt.node"
mkdir -p node_modules && tar -xJf .device/serve-nm.tar.xz -C node_modules
export PATH=$stage:$PATH RT_ADDON_PATH=$stage/rt.node
unset RT_DEVICE RT_NUM_THREADS UV_THREADPOOL_SIZE
t "node $(node --version) at $(command -v node); $(nproc) CPUs; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
# A CPU quota (cgroup v2 cpu.max "QUOTA PERIOD") below the CPU count would make the default threads too many.
[[ -r /sys/fs/cgroup/cpu.max ]] && t "cgroup cpu.max: $(cat /sys/fs/cgroup/cpu.max)"
node -e "import('./dist/index.js').then((m) => console.log('addon', JSON.stringify(m.nativeInfo()), process.env.RT_ADDON_PATH))" || exit 1

if (( quick )); then
  main=(--duration 2 --ttft-duration 1 --clients 1,64 --rounds 1)
  var=(--duration 2 --ttft-duration 1 --clients 1,64)
  main_limit=120 var_limit=40
else
  main=(--rounds 2)
  var=(--clients 1,64)
  main_limit=300 var_limit=70
fi
t "serve.mjs ${main[*]}"
timeout -k 10 "$main_limit" node bench/serve.mjs "${main[@]}" --out "$OUT/serve-16core.jsonl" 2> "$OUT/serve-16core.log" | grep -E '"ratio"' || echo "(no ratio line: see serve-16core.log)"
for args in '--threads 2' '--pipeline-min-rows 16' '--threads 8'; do
  t "serve.mjs --batching on ${var[*]} --server-args=\"$args\""
  timeout -k 10 "$var_limit" node bench/serve.mjs --batching on "${var[@]}" --server-args="$args" --out "$OUT/serve-16core-variants.jsonl" 2>> "$OUT/serve-16core-variants.log" | grep -E '"ratio"' || echo "(no ratio line: see serve-16core-variants.log)"
done
t "table"
node - "$OUT/serve-16core.jsonl" "$OUT/serve-16core-variants.jsonl" <<'EOF'
const fs = require('node:fs');
const rows = process.argv.slice(2).filter((f) => fs.existsSync(f)).flatMap((f) => fs.readFileSync(f, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)));
const m = rows.find((r) => r.machine)?.machine;
if (m) console.log(`${m.cpu_model}, ${m.cores} CPUs, node ${m.node}`);
const key = (r) => `${r.batching ? 'on' : 'off'}|${r.server_args ?? ''}`;
const groups = new Map();
for (const r of rows) if (r.clients !== undefined) (groups.get(key(r)) ?? groups.set(key(r), []).get(key(r))).push(r);
const fmt = (v) => (v === undefined ? '-' : Math.round(v).toLocaleString('en-US'));
console.log('| batching | server args | threads | in flight | min rows | 1 client | 8 clients | 64 clients | 64 / 1 | steps in flight at 64 (avg) | p50 ms at 64 |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const [k, rs] of groups) {
  const at = (c) => rs.find((r) => r.clients === c);
  const s = rs[0].server ?? {};
  const lo = at(1), hi = at(64);
  const ratio = lo && hi ? (hi.tokens_per_s / lo.tokens_per_s).toFixed(2) : '-';
  const [b, a] = k.split('|');
  console.log(`| ${b} | ${a || '(defaults)'} | ${s.threads ?? '-'} | ${s.max_in_flight ?? '-'} | ${s.pipeline_min_rows ?? '-'} | ${fmt(lo?.tokens_per_s)} | ${fmt(at(8)?.tokens_per_s)} | ${fmt(hi?.tokens_per_s)} | ${ratio} | ${hi?.steps_in_flight_avg ?? '-'} | ${hi?.p50_ms ?? '-'} |`);
}
EOF
t "done; files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
