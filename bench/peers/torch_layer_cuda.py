#!/usr/bin/env python3
"""PyTorch peer of recurrent-transformer's RecurrentLayer on a CUDA GPU (eager mode).

Written from /work/shared/DESIGN.md section 1, like the CPU peer bench/peers/torch_layer.py:

  T(x):  x = x + Attn(LN1(x));  x = x + MLP(LN2(x))   (pre-LN nanoGPT block, LayerNorm eps 1e-5,
         q, k, v from c_attn in that order, heads contiguous, scale 1/sqrt(d/heads), causal within the
         sequence T is applied to; MLP c_fc d->4d, gelu (erf) or relu, c_proj 4d->d; no dropout)
  w = 0: T over the whole sequence.  m = ceil(N/w) = 1: T(T(X_0)).
  forget:      S_0 = T(X_0); Z = T([S_{k-1}, X_k]); Y_{k-1} = Z[:, :w]; S_k = Z[:, w:]; Y_{m-1} = T(S_{m-1})
  accumulate:  alpha = clamp(a, 0, 1); P_0 = X_0; A = alpha P_{k-1};
               Z = T([A + S_{k-1}, A[:, :|X_k|] + X_k]); P_k = Y_{k-1}

Modes (--modes, comma-separated):
  fp32       float32 everywhere, attention written out (q k^T, masked_fill(-inf), softmax, @ v)
  bf16       torch.autocast(bfloat16): matrix products in bf16 on the tensor cores, the rest as autocast
             decides; attention written out
  bf16-sdpa  as bf16, attention through F.scaled_dot_product_attention(is_causal=True) (flash kernels)

Timing: forward + backward of loss = (y * R).sum() (R fixed random, x requires grad), CUDA events around
each step, median of --reps after --warmup steps. Prints one JSON line per mode:
  {"impl": "torch-cuda", "mode": ..., "ms_fwd_bwd": median, "gflops": ..., ...}
and one line of cuBLAS bf16 matrix-product rates on the layer's shapes ("impl": "torch-gemm"), the
ceiling our own GEMM is measured against. FLOPs as bench/lib/flops.mjs counts them.
"""

import argparse
import json
import math
import statistics

import torch
import torch.nn.functional as F


class Block(torch.nn.Module):
    """One pre-LN nanoGPT transformer layer T."""

    def __init__(self, d, heads, activation, sdpa):
        super().__init__()
        self.d, self.heads, self.activation, self.sdpa = d, heads, activation, sdpa
        self.ln_1 = torch.nn.LayerNorm(d, eps=1e-5, bias=False)
        self.c_attn = torch.nn.Linear(d, 3 * d, bias=False)
        self.c_proj = torch.nn.Linear(d, d, bias=False)
        self.ln_2 = torch.nn.LayerNorm(d, eps=1e-5, bias=False)
        self.c_fc = torch.nn.Linear(d, 4 * d, bias=False)
        self.mlp_proj = torch.nn.Linear(4 * d, d, bias=False)

    def attention(self, x):
        B, n, d = x.shape
        H, hd = self.heads, d // self.heads
        q, k, v = self.c_attn(x).split(d, dim=2)
        q = q.view(B, n, H, hd).transpose(1, 2)
        k = k.view(B, n, H, hd).transpose(1, 2)
        v = v.view(B, n, H, hd).transpose(1, 2)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
            future = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
            att = F.softmax(att.masked_fill(future, float("-inf")), dim=-1)
            y = att @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, n, d))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        h = self.c_fc(self.ln_2(x))
        h = F.gelu(h) if self.activation == "gelu" else F.relu(h)
        return x + self.mlp_proj(h)


class RecurrentLayer(torch.nn.Module):
    def __init__(self, d, heads, window, variant, activation, sdpa, alpha_init=0.5):
        super().__init__()
        self.block = Block(d, heads, activation, sdpa)
        self.window, self.variant = window, variant
        self.alpha = torch.nn.Parameter(torch.tensor(float(alpha_init)))

    def forward(self, x):
        T, w, N = self.block, self.window, x.shape[1]
        if w == 0:
            return T(x)
        m = -(-N // w)
        if m == 1:
            return T(T(x))
        xs = list(x.split(w, dim=1))  # one backward node, not m slices each zero-filling (B, N, d)
        ys = []
        S = T(xs[0])
        alpha = torch.clamp(self.alpha, 0.0, 1.0)
        P = xs[0]
        for k in range(1, m):
            if self.variant == "forget":
                Z = T(torch.cat([S, xs[k]], dim=1))
            else:
                A = alpha * P
                Z = T(torch.cat([A + S, A[:, : xs[k].shape[1]] + xs[k]], dim=1))
            Y, S = Z.split([w, Z.shape[1] - w], dim=1)
            ys.append(Y)
            P = Y
        ys.append(T(S))
        return torch.cat(ys, dim=1)


def flops_fwd_bwd(B, N, d, heads, w):
    """Mirror of bench/lib/flops.mjs layerFlops() for one layer."""

    def app(n):
        hd = d // heads
        return 3 * (24 * B * n * d * d + 2 * B * heads * (n * (n + 1) / 2) * hd * 2)

    if w == 0:
        return app(N)
    m = -(-N // w)
    if m == 1:
        return 2 * app(N)
    r = N - (m - 1) * w
    return app(w) + (m - 2) * app(2 * w) + app(w + r) + app(r)


def init_nanogpt(stack, layers, gen):
    with torch.no_grad():
        for name, t in stack.named_parameters():
            if name.endswith("alpha"):
                continue
            if "ln_" in name:
                t.fill_(1.0)
            elif "proj" in name:
                t.normal_(0.0, 0.02 / math.sqrt(2 * layers), generator=gen)
            else:
                t.normal_(0.0, 0.02, generator=gen)


def time_cuda(step, warmup, reps):
    """Milliseconds of each of `reps` calls of step() after `warmup` calls, by CUDA events around each."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        step()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1))
    return times


def time_mode(a, mode):
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(a.seed)
    stack = torch.nn.Sequential(*[
        RecurrentLayer(a.d, a.heads, a.window, a.variant, a.activation, sdpa=(mode == "bf16-sdpa"))
        for _ in range(a.layers)
    ]).to(dev)
    init_nanogpt(stack, a.layers, gen)
    x = torch.randn(a.batch, a.N, a.d, device=dev, generator=gen).requires_grad_(True)
    R = torch.randn(a.batch, a.N, a.d, device=dev, generator=gen)
    autocast = mode.startswith("bf16")

    def step():
        for p in stack.parameters():
            p.grad = None
        x.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            y = stack(x)
        (y.float() * R).sum().backward()

    times = time_cuda(step, a.warmup, a.reps)
    med = statistics.median(times)
    fl = a.layers * flops_fwd_bwd(a.batch, a.N, a.d, a.heads, a.window)
    print(json.dumps({
        "impl": "torch-cuda", "mode": mode, "torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
        "d": a.d, "heads": a.heads, "window": a.window, "batch": a.batch, "N": a.N, "layers": a.layers,
        "variant": a.variant, "activation": a.activation, "reps": a.reps,
        "ms_fwd_bwd": round(med, 3), "ms_min": round(min(times), 3), "ms_all": [round(t, 2) for t in times],
        "gflops": round(fl / med / 1e6, 1), "tokens_per_s": round(a.batch * a.N / med * 1e3),
        "max_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20),
    }), flush=True)
    del stack, x, R
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def gemm_rates(a):
    """cuBLAS bf16 rates (TFLOP/s) of the layer's forward products, R tokens = batch * 2w."""
    R = a.batch * (2 * a.window if a.window else a.N)
    out = {"impl": "torch-gemm", "tokens": R}
    for name, (K, N) in {"qkv": (a.d, 3 * a.d), "fc": (a.d, 4 * a.d), "proj2": (4 * a.d, a.d)}.items():
        A = torch.randn(R, K, device="cuda", dtype=torch.bfloat16)
        W = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            A @ W.t()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(20):
            A @ W.t()
        e1.record()
        e1.synchronize()
        out[f"{name}_bf16_tflops"] = round(2 * R * K * N / (e0.elapsed_time(e1) / 20) / 1e9, 1)
    print(json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--N", type=int, default=256)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--variant", choices=["forget", "accumulate"], default="forget")
    p.add_argument("--activation", choices=["gelu", "relu"], default="gelu")
    p.add_argument("--modes", default="fp32,bf16,bf16-sdpa")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=1234)
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, as ours
    torch.backends.cudnn.allow_tf32 = False
    for mode in a.modes.split(","):
        time_mode(a, mode)
    gemm_rates(a)


if __name__ == "__main__":
    main()
