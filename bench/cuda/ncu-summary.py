# Sums ncu's per-kernel durations (--csv --page raw --metrics gpu__time_duration.sum) by kernel name:
# the GPU time of each kernel without launch gaps, to set against the event-timed profile (profile.mjs). With
# dram__bytes_read.sum and dram__bytes_write.sum among the metrics (call-lib.sh's NCU_BYTES=1; --print-units base),
# also each kernel's DRAM bytes a call and its rate (GB/s): how near a memory-bound kernel is to the HBM's.
# A second table splits the largest kernels by launch grid (ncu's "Grid Size" column), since the same kernel
# runs once a window and once a step on other shapes (ln_f over the whole batch, say), and a mean over both
# hides which launches are slow.
#   python3 bench/cuda/ncu-summary.py FILE.csv [STEPS]
import csv, sys, collections, statistics
path = sys.argv[1]
steps = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
rows = [l for l in open(path, errors="replace") if l.startswith('"')]
tot, cnt, byt = collections.defaultdict(float), collections.Counter(), collections.defaultdict(float)
by_grid = collections.defaultdict(list)  # (name, grid) -> [(us, bytes)]
has_bytes = False
def num(v):
    return float(v.replace(",", ""))
for r in csv.DictReader(rows):
    v = r.get("gpu__time_duration.sum", "")
    try:
        us = num(v) / 1000.0  # ncu reports ns
    except ValueError:
        continue
    name = r.get("Kernel Name", "?").split("(")[0].split("<")[0].strip()
    tot[name] += us
    cnt[name] += 1
    b = 0.0
    try:
        b = num(r["dram__bytes_read.sum"]) + num(r["dram__bytes_write.sum"])
        byt[name] += b
        has_bytes = True
    except (KeyError, ValueError):
        pass
    by_grid[(name, r.get("Grid Size", "?"))].append((us, b))
all_us = sum(tot.values())
extra = f" {'MB/call':>8s} {'GB/s':>6s}" if has_bytes else ""
print(f"{'kernel':40s} {'ms/step':>8s} {'share':>6s} {'calls/step':>10s} {'us/call':>8s}{extra}")
for k, v in sorted(tot.items(), key=lambda kv: -kv[1]):
    extra = f" {byt[k]/cnt[k]/1e6:8.2f} {byt[k]/(v*1e-6)/1e9:6.0f}" if has_bytes else ""
    print(f"{k[:40]:40s} {v/steps/1000:8.3f} {100*v/all_us:5.1f}% {cnt[k]/steps:10.1f} {v/cnt[k]:8.2f}{extra}")
print(f"{'total':40s} {all_us/steps/1000:8.3f}  kernels {sum(cnt.values())/steps:.0f}/step")
top = [k for k, _ in sorted(tot.items(), key=lambda kv: -kv[1])[:int(sys.argv[3]) if len(sys.argv) > 3 else 12]]
print(f"\n{'kernel by grid':40s} {'grid':>16s} {'calls/step':>10s} {'med us':>8s} {'max us':>8s}" + (f" {'MB/call':>8s} {'GB/s':>6s}" if has_bytes else ""))
for k in top:
    for (name, grid), v in sorted(by_grid.items(), key=lambda kv: -sum(u for u, _ in kv[1])):
        if name != k: continue
        us = [u for u, _ in v]
        extra = ""
        if has_bytes:
            mb = sum(b for _, b in v) / len(v) / 1e6
            extra = f" {mb:8.2f} {sum(b for _, b in v) / (sum(us) * 1e-6) / 1e9:6.0f}"
        print(f"{name[:40]:40s} {grid[:16]:>16s} {len(v)/steps:10.1f} {statistics.median(us):8.2f} {max(us):8.2f}{extra}")
