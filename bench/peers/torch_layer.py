#!/usr/bin/env python3
"""PyTorch peer of recurrent-transformer's RecurrentLayer (a stack of L recurrent layers).

Written from /work/shared/DESIGN.md section 1 (the normative maths), nanoGPT conventions:

  T(x):  x = x + Attn(LN1(x));  x = x + MLP(LN2(x))
         LayerNorm eps 1e-5, weight, bias only when bias=True.
         Attn: c_attn d->3d (q, k, v in that order, heads contiguous), scale 1/sqrt(d/heads),
               causal within the sequence T is applied to, c_proj d->d.
         MLP:  c_fc d->4d, gelu (exact, erf) or relu, c_proj 4d->d.
         Dropout is not modelled (the benchmark and the numerical check run with p = 0).

  Recurrence over windows X_0..X_{m-1} of width w (m = ceil(N/w), last of length r):
    w = 0       plain T over the whole sequence.
    m = 1       T(T(X_0)).
    forget      S_0 = T(X_0); Z = T([S_{k-1}, X_k]); Y_{k-1} = Z[:, :w]; S_k = Z[:, w:];
                Y_{m-1} = T(S_{m-1}).
    accumulate  alpha = clamp(a, 0, 1); P_0 = X_0; S_0 = T(X_0);
                A = alpha P_{k-1}; Z = T([A + S_{k-1}, A[:, :|X_k|] + X_k]);
                Y_{k-1} = Z[:, :w]; S_k = Z[:, w:]; P_k = Y_{k-1}; Y_{m-1} = T(S_{m-1}).
  Each of L layers applies the recurrence to the whole output of the layer below, own weights.

Modes
  timing (default): prints one JSON line
      {"impl":"torch","N":..,"ms_fwd_bwd":median,"gflops":..,"tokens_per_s":..,...}
    timing forward + backward of loss = (y * R).sum() (R fixed random, input X requires grad),
    median over --reps after one warm-up repetition. FLOPs as in bench/lib/flops.mjs.

  --check IN.json [--out OUT.json]: float64 forward + backward on given weights and input; see
    read_check_input() for the file format. Writes {"y", "grads": {name: ...}, "dx"} as JSON.

Run with Debian's /usr/bin/python3 (python3-torch 1.13) and LD_LIBRARY_PATH pointing at the
openmp OpenBLAS directory printed by bench/peers/setup-torch.sh, for this process only.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- the layer


class Block(torch.nn.Module):
    """One pre-LN nanoGPT transformer layer T. Parameter names follow nanoGPT."""

    def __init__(self, d, heads, bias, activation):
        super().__init__()
        if d % heads != 0:
            raise ValueError(f"d ({d}) must be a multiple of heads ({heads})")
        if activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be 'gelu' or 'relu', got {activation!r}")
        self.d, self.heads, self.activation = d, heads, activation
        P = torch.nn.Parameter
        self.ln_1 = torch.nn.Module()
        self.ln_1.weight = P(torch.ones(d))
        self.ln_1.bias = P(torch.zeros(d)) if bias else None
        self.attn = torch.nn.Module()
        self.attn.c_attn = torch.nn.Linear(d, 3 * d, bias=bias)
        self.attn.c_proj = torch.nn.Linear(d, d, bias=bias)
        self.ln_2 = torch.nn.Module()
        self.ln_2.weight = P(torch.ones(d))
        self.ln_2.bias = P(torch.zeros(d)) if bias else None
        self.mlp = torch.nn.Module()
        self.mlp.c_fc = torch.nn.Linear(d, 4 * d, bias=bias)
        self.mlp.c_proj = torch.nn.Linear(4 * d, d, bias=bias)

    def attention(self, x):
        B, n, d = x.shape
        H = self.heads
        hd = d // H
        qkv = F.linear(x, self.attn.c_attn.weight, self.attn.c_attn.bias)
        q, k, v = qkv.split(d, dim=2)
        q = q.view(B, n, H, hd).transpose(1, 2)  # (B, H, n, hd)
        k = k.view(B, n, H, hd).transpose(1, 2)
        v = v.view(B, n, H, hd).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        future = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        att = att.masked_fill(future, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, n, d)
        return F.linear(y, self.attn.c_proj.weight, self.attn.c_proj.bias)

    def mlp_forward(self, x):
        h = F.linear(x, self.mlp.c_fc.weight, self.mlp.c_fc.bias)
        h = F.gelu(h) if self.activation == "gelu" else F.relu(h)
        return F.linear(h, self.mlp.c_proj.weight, self.mlp.c_proj.bias)

    def forward(self, x):
        eps = 1e-5
        x = x + self.attention(F.layer_norm(x, (self.d,), self.ln_1.weight, self.ln_1.bias, eps))
        x = x + self.mlp_forward(F.layer_norm(x, (self.d,), self.ln_2.weight, self.ln_2.bias, eps))
        return x


class RecurrentLayer(torch.nn.Module):
    """One block T applied by the sliding-window recurrence (DESIGN.md section 1)."""

    def __init__(self, d, heads, window, variant, activation, bias, alpha_init=0.5, learn_alpha=True):
        super().__init__()
        if variant not in ("forget", "accumulate"):
            raise ValueError(f"variant must be 'forget' or 'accumulate', got {variant!r}")
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        self.block = Block(d, heads, bias, activation)
        self.window, self.variant = window, variant
        a = torch.tensor(float(alpha_init))
        if variant == "accumulate" and learn_alpha:
            self.alpha = torch.nn.Parameter(a)
        else:
            self.register_buffer("alpha", a)

    def forward(self, x):
        T = self.block
        N = x.shape[1]
        w = self.window
        if w == 0:
            return T(x)
        m = -(-N // w)
        if m == 1:
            return T(T(x))
        # split (not per-window slicing): one backward node that concatenates the window gradients,
        # where m slices would each zero-fill a full (B, N, d) gradient, O(N^2) in total.
        xs = list(x.split(w, dim=1))
        ys = []
        S = T(xs[0])
        if self.variant == "forget":
            for k in range(1, m):
                Z = T(torch.cat([S, xs[k]], dim=1))
                Y, S = Z.split([w, Z.shape[1] - w], dim=1)
                ys.append(Y)
        else:
            alpha = torch.clamp(self.alpha, 0.0, 1.0)
            P = xs[0]
            for k in range(1, m):
                A = alpha * P
                nk = xs[k].shape[1]
                Z = T(torch.cat([A + S, A[:, :nk] + xs[k]], dim=1))
                Y, S = Z.split([w, Z.shape[1] - w], dim=1)
                ys.append(Y)
                P = Y
        ys.append(T(S))
        return torch.cat(ys, dim=1)


class Stack(torch.nn.Module):
    """L recurrent layers; parameters named transformer.h.{i}.* like nanoGPT."""

    def __init__(self, layers, **kw):
        super().__init__()
        self.h = torch.nn.ModuleList([RecurrentLayer(**kw) for _ in range(layers)])

    def forward(self, x):
        for layer in self.h:
            x = layer(x)
        return x

    def named_tensors(self):
        """(DESIGN.md name, tensor) for every parameter (and a fixed alpha as a buffer)."""
        out = []
        for i, layer in enumerate(self.h):
            b = layer.block
            p = f"transformer.h.{i}."
            pairs = [
                ("ln_1.weight", b.ln_1.weight), ("ln_1.bias", b.ln_1.bias),
                ("attn.c_attn.weight", b.attn.c_attn.weight), ("attn.c_attn.bias", b.attn.c_attn.bias),
                ("attn.c_proj.weight", b.attn.c_proj.weight), ("attn.c_proj.bias", b.attn.c_proj.bias),
                ("ln_2.weight", b.ln_2.weight), ("ln_2.bias", b.ln_2.bias),
                ("mlp.c_fc.weight", b.mlp.c_fc.weight), ("mlp.c_fc.bias", b.mlp.c_fc.bias),
                ("mlp.c_proj.weight", b.mlp.c_proj.weight), ("mlp.c_proj.bias", b.mlp.c_proj.bias),
                ("alpha", layer.alpha),
            ]
            out += [(p + n, t) for n, t in pairs if t is not None]
        return out


def init_nanogpt(stack, layers, generator):
    """normal(0, 0.02) for Linear weights, c_proj normal(0, 0.02/sqrt(2L)), biases 0, LN 1/0."""
    with torch.no_grad():
        for name, t in stack.named_tensors():
            if name.endswith("alpha"):
                continue
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight"):
                t.fill_(1.0)
            elif name.endswith(".bias"):
                t.zero_()
            elif name.endswith("c_proj.weight"):
                t.normal_(0.0, 0.02 / math.sqrt(2 * layers), generator=generator)
            else:
                t.normal_(0.0, 0.02, generator=generator)


# ----------------------------------------------------------------------------- FLOPs


def flops_fwd_bwd(B, N, d, heads, w):
    """Mirror of bench/lib/flops.mjs layerFlops() for one layer (keep the two in step)."""

    def app(n):
        hd = d // heads
        matmul = 2 * B * n * (3 * d * d + d * d + 4 * d * d + 4 * d * d)  # = 24 B n d^2
        attn = 2 * B * heads * (n * (n + 1) / 2) * hd * 2  # causal QK^T and PV
        return 3 * (matmul + attn)  # forward + backward (backward ~ 2x forward)

    if w == 0:
        return app(N)
    m = -(-N // w)
    if m == 1:
        return 2 * app(N)
    r = N - (m - 1) * w
    total = app(w)  # S_0 = T(X_0)
    total += (m - 2) * app(2 * w)  # full windows k = 1..m-2
    total += app(w + r)  # k = m-1
    total += app(r)  # Y_{m-1} = T(S_{m-1})
    return total


# ----------------------------------------------------------------------------- timing mode


def run_timing(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    stack = Stack(a.layers, d=a.d, heads=a.heads, window=a.window, variant=a.variant,
                  activation=a.activation, bias=a.bias)
    init_nanogpt(stack, a.layers, g)
    x = torch.randn(a.batch, a.N, a.d, generator=g).requires_grad_(True)
    R = torch.randn(a.batch, a.N, a.d, generator=g)
    params = [p for p in stack.parameters()]

    def step():
        for p in params:
            p.grad = None
        x.grad = None
        y = stack(x)
        loss = (y * R).sum()
        loss.backward()
        return loss.item()

    for _ in range(a.warmup):
        step()
    cpu0 = time.process_time()
    times = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    med = statistics.median(times)
    fl = a.layers * flops_fwd_bwd(a.batch, a.N, a.d, a.heads, a.window)
    print(json.dumps({
        "impl": "torch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "d": a.d, "heads": a.heads, "window": a.window, "batch": a.batch, "N": a.N,
        "layers": a.layers, "variant": a.variant, "activation": a.activation, "bias": a.bias,
        "reps": a.reps,
        "ms_fwd_bwd": round(med * 1e3, 3),
        "ms_min": round(min(times) * 1e3, 3),
        "ms_all": [round(t * 1e3, 3) for t in times],
        "gflops": round(fl / med / 1e9, 2),
        "tokens_per_s": round(a.batch * a.N / med, 1),
        # CPU seconds this process used per wall second over the timed reps (about --threads when
        # the threads kept busy)
        "cpu_per_wall": round(cpu / sum(times), 2),
        "cpu_s_total": round(time.process_time(), 2),
    }), flush=True)


# ----------------------------------------------------------------------------- check mode


def to_tensor(v):
    """A JSON value -> float64 tensor: a number, a nested list, or {"shape": [...], "data": [flat]}."""
    if isinstance(v, dict):
        return torch.tensor(v["data"], dtype=torch.float64).reshape(v["shape"])
    return torch.tensor(v, dtype=torch.float64)


def from_tensor(t):
    t = t.detach().to(torch.float64).contiguous()
    return {"shape": list(t.shape), "data": t.reshape(-1).tolist()}


def read_check_input(path):
    """Check-file format (JSON):

    {
      "config": {"d": 8, "heads": 2, "window": 3, "layers": 1, "variant": "forget"|"accumulate",
                 "activation": "gelu"|"relu", "bias": false, "learnAlpha": true},
      "params": {"transformer.h.0.ln_1.weight": T, "transformer.h.0.attn.c_attn.weight": T, ...,
                 "transformer.h.0.alpha": T (accumulate; a bare "alpha" is used for every layer
                 when the per-layer name is absent)},
      "x": T (B, N, d),
      "R": T (B, N, d), optional: the upstream gradient, loss = (y * R).sum(); ones when absent
    }
    where T is a number, a nested list, or {"shape": [...], "data": [flat, row-major]}.
    Weights are [out, in] like torch.nn.Linear. Every parameter the config implies must be given.
    """
    with open(path) as f:
        return json.load(f)


def run_check(a):
    torch.set_num_threads(a.threads)
    spec = read_check_input(a.check)
    c = spec["config"]
    layers = int(c.get("layers", 1))
    variant = c.get("variant", "forget")
    stack = Stack(layers, d=int(c["d"]), heads=int(c["heads"]), window=int(c["window"]),
                  variant=variant, activation=c.get("activation", "gelu"),
                  bias=bool(c.get("bias", False)), learn_alpha=bool(c.get("learnAlpha", True)))
    stack = stack.double()
    params = spec["params"]
    with torch.no_grad():
        for name, t in stack.named_tensors():
            src = params.get(name)
            if src is None and name.endswith(".alpha"):
                src = params.get("alpha")
                if src is None and variant == "forget":
                    continue  # unused in forget
            if src is None:
                raise SystemExit(f"--check: parameter {name!r} missing from {a.check}")
            v = to_tensor(src)
            if v.numel() != t.numel():
                raise SystemExit(f"--check: {name!r} has {v.numel()} values, expected shape {list(t.shape)}")
            t.copy_(v.reshape(t.shape))
    x = to_tensor(spec["x"]).requires_grad_(True)
    R = to_tensor(spec["R"]) if "R" in spec else torch.ones_like(x)
    y = stack(x)
    loss = (y * R).sum()
    loss.backward()
    grads = {}
    for name, t in stack.named_tensors():
        if isinstance(t, torch.nn.Parameter):
            grads[name] = from_tensor(t.grad if t.grad is not None else torch.zeros_like(t))
    out = {"impl": "torch", "dtype": "float64", "loss": loss.item(), "y": from_tensor(y),
           "dx": from_tensor(x.grad), "grads": grads}
    text = json.dumps(out)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--N", type=int, default=256)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--variant", choices=["forget", "accumulate"], default="forget")
    p.add_argument("--activation", choices=["gelu", "relu"], default="gelu")
    p.add_argument("--bias", action="store_true")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--check", metavar="FILE", help="float64 numerical check on weights/input from FILE")
    p.add_argument("--out", metavar="FILE", help="with --check: write the result here (default stdout)")
    a = p.parse_args()
    if a.check:
        run_check(a)
    else:
        run_timing(a)


if __name__ == "__main__":
    main()
