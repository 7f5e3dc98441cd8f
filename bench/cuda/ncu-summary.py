# Sums ncu's per-kernel durations (--csv --page raw --metrics gpu__time_duration.sum) by kernel name:
# the GPU time of each kernel without launch gaps, to set against the event-timed profile (profile.mjs). With
# dram__bytes_read.sum and dram__bytes_write.sum among the metrics (call-lib.sh's NCU_BYTES=1; --print-units base),
# also each kernel's DRAM bytes a call and its rate (GB/s): how near a memory-bound kernel is to the HBM's.
#   python3 bench/cuda/ncu-summary.py FILE.csv [STEPS]
import csv, sys, collections
path = sys.argv[1]
steps = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
rows = [l for l in open(path, errors="replace") if l.startswith('"')]
tot, cnt, byt = collections.defaultdict(float), collections.Counter(), collections.defaultdict(float)
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
    try:
        byt[name] += num(r["dram__bytes_read.sum"]) + num(r["dram__bytes_write.sum"])
        has_bytes = True
    except (KeyError, ValueError):
        pass
all_us = sum(tot.values())
extra = f" {'MB/call':>8s} {'GB/s':>6s}" if has_bytes else ""
print(f"{'kernel':40s} {'ms/step':>8s} {'share':>6s} {'calls/step':>10s} {'us/call':>8s}{extra}")
for k, v in sorted(tot.items(), key=lambda kv: -kv[1]):
    extra = f" {byt[k]/cnt[k]/1e6:8.2f} {byt[k]/(v*1e-6)/1e9:6.0f}" if has_bytes else ""
    print(f"{k[:40]:40s} {v/steps/1000:8.3f} {100*v/all_us:5.1f}% {cnt[k]/steps:10.1f} {v/cnt[k]:8.2f}{extra}")
print(f"{'total':40s} {all_us/steps/1000:8.3f}  kernels {sum(cnt.values())/steps:.0f}/step")
