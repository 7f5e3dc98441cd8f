# The GPU's busy and idle time in an nsys cuda_gpu_trace export (csv): over the last train steps of the
# trace, kernels' own time against the wall span from the first kernel to the last, and the largest idle gaps.
#   python3 bench/cuda/gaps.py TRACE.csv [LAST_MS]
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], errors="replace")))
last_ms = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
def num(r, *keys):
    for k in keys:
        if k in r and r[k] not in ("", None):
            return float(r[k].replace(",", ""))
    return None
ev = []
for r in rows:
    s, d = num(r, "Start (ns)", "Start"), num(r, "Duration (ns)", "Duration")
    if s is None or d is None: continue
    ev.append((s, s + d, r.get("Name", "?")))
ev.sort()
end = ev[-1][1]
ev = [e for e in ev if e[0] >= end - last_ms * 1e6]
busy, gaps, t = 0.0, [], ev[0][0]
for s, e, n in ev:
    if s > t: gaps.append((s - t, n))
    busy += e - max(s, t) if e > t else 0
    t = max(t, e)
span = t - ev[0][0]
print(f"last {last_ms:.0f} ms of the trace: span {span/1e6:.2f} ms, GPU busy {busy/1e6:.2f} ms, idle {(span-busy)/1e6:.2f} ms in {len(gaps)} gaps, {len(ev)} activities")
big = sorted(gaps, reverse=True)[:8]
for g, n in big: print(f"  idle {g/1e3:8.1f} us before {n[:70]}")
small = [g for g, _ in gaps if g < 20e3]
print(f"  gaps under 20 us: {len(small)}, total {sum(small)/1e6:.2f} ms")
