# Sums ncu's per-kernel durations (--csv --page raw --metrics gpu__time_duration.sum) by kernel name:
# the GPU time of each kernel without launch gaps, to set against the event-timed profile (profile.mjs).
#   python3 bench/cuda/ncu-summary.py FILE.csv [STEPS]
import csv, sys, collections
path = sys.argv[1]
steps = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
rows = [l for l in open(path, errors="replace") if l.startswith('"')]
tot, cnt = collections.defaultdict(float), collections.Counter()
for r in csv.DictReader(rows):
    v = r.get("gpu__time_duration.sum", "")
    try:
        us = float(v.replace(",", "")) / 1000.0  # ncu reports ns
    except ValueError:
        continue
    name = r.get("Kernel Name", "?").split("(")[0].split("<")[0].strip()
    tot[name] += us
    cnt[name] += 1
all_us = sum(tot.values())
print(f"{'kernel':40s} {'ms/step':>8s} {'share':>6s} {'calls/step':>10s} {'us/call':>8s}")
for k, v in sorted(tot.items(), key=lambda kv: -kv[1]):
    print(f"{k[:40]:40s} {v/steps/1000:8.3f} {100*v/all_us:5.1f}% {cnt[k]/steps:10.1f} {v/cnt[k]:8.2f}")
print(f"{'total':40s} {all_us/steps/1000:8.3f}  kernels {sum(cnt.values())/steps:.0f}/step")
