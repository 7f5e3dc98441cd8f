# The instructions of an `ncu --page source --csv --print-source sass` export that hold the most warp-stall
# samples, with each one's share and its stall reasons; then the samples summed by opcode.
#   python3 bench/cuda/source-top.py FILE.csv [ROWS]
import csv, sys, collections
rows = list(csv.reader(open(sys.argv[1], errors="replace")))
top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
head = next((i for i, r in enumerate(rows) if any("Source" == c or "Address" in c for c in r)), None)
if head is None:
    print("no header found; first lines:"); [print(r[:8]) for r in rows[:5]]; sys.exit(0)
h = rows[head]
def col(*names):
    for n in names:
        for i, c in enumerate(h):
            if c.strip() == n: return i
    for n in names:
        for i, c in enumerate(h):
            if n.lower() in c.lower(): return i
    return None
src = col("Source")
samp = col("Warp Stall Sampling (All Samples)", "Warp Stall Sampling (All")
nsamp = col("Warp Stall Sampling (Not-issued Samples)", "Not-issued")
addr = col("Address")
reason_cols = [i for i, c in enumerate(h) if c.startswith("stall_") or "smsp__pcsamp_warps_issue_stalled" in c]
def num(s):
    try: return float(s.replace(",", ""))
    except (ValueError, AttributeError): return 0.0
body = [r for r in rows[head + 1:] if len(r) > max(x for x in (src, samp) if x is not None)]
total = sum(num(r[samp]) for r in body) or 1.0
print(f"{len(body)} instructions, {total:.0f} samples; columns: source={src} samples={samp} reasons={len(reason_cols)}")
by_op = collections.Counter()
for r in body: by_op[r[src].split()[0] if r[src].split() else "?"] += num(r[samp])
order = sorted(range(len(body)), key=lambda i: -num(body[i][samp]))
for i in order[:top]:
    r = body[i]
    rs = sorted(((num(r[j]), h[j]) for j in reason_cols if num(r[j]) > 0), reverse=True)[:3]
    why = ", ".join(f"{n.replace('smsp__pcsamp_warps_issue_stalled_', '')}={v:.0f}" for v, n in rs)
    print(f"{i:5d} {100 * num(r[samp]) / total:5.1f}%  {r[src][:60]:60s} {why}")
print("by opcode:", ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in by_op.most_common(14)))
