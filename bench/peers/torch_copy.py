#!/usr/bin/env python3
"""PyTorch peer of one copy-task train step of recurrent-transformer's RecurrentTransformer.

Same model as ours (DESIGN.md section 1): token + learned position embedding, the recurrent layer
stack of bench/peers/torch_layer.py, final LayerNorm, the copy head tied to wte scoring the last M
positions with softmax cross-entropy, then torch.optim.AdamW. Batches are copy-task sequences
[M payload][L zeros][M markers] drawn with torch's RNG (the data generator is not timed by either side).

Prints one JSON line: {"impl": "torch", "ms_step": median, "tokens_per_s": ..., ...}.
Run with Debian's /usr/bin/python3 and LD_LIBRARY_PATH at the openmp OpenBLAS (bench/peers/setup-torch.sh).
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_layer import Stack, init_nanogpt  # noqa: E402


class CopyModel(torch.nn.Module):
    def __init__(self, vocab, d, heads, layers, window, variant, activation, max_len, M):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, d)
        self.wpe = torch.nn.Embedding(max_len, d)
        self.h = Stack(layers, d=d, heads=heads, window=window, variant=variant, activation=activation, bias=False)
        self.ln_f = torch.nn.Parameter(torch.ones(d))
        self.M, self.d = M, d
        torch.nn.init.normal_(self.wte.weight, 0.0, 0.02)
        torch.nn.init.normal_(self.wpe.weight, 0.0, 0.02)
        init_nanogpt(self.h, layers, None)

    def forward(self, tokens, targets):
        N = tokens.shape[1]
        x = self.wte(tokens) + self.wpe(torch.arange(N))
        y = self.h(x)[:, -self.M:]
        h = F.layer_norm(y, (self.d,), self.ln_f, None, 1e-5)
        logits = h @ self.wte.weight.t()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def copy_batch(B, M, L, A, g):
    payload = torch.randint(1, A - 1, (B, M), generator=g)
    tokens = torch.cat([payload, torch.zeros(B, L, dtype=torch.long), torch.full((B, M), A - 1)], dim=1)
    return tokens, payload


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--d", type=int, default=96)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--variant", default="accumulate")
    p.add_argument("--activation", default="relu")
    p.add_argument("--alphabet", type=int, default=16)
    p.add_argument("--M", type=int, default=16)
    p.add_argument("--noise", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(1)
    N = a.M + a.noise + a.M
    model = CopyModel(a.alphabet, a.d, a.heads, a.layers, a.window, a.variant, a.activation, N, a.M)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    times = []
    for i in range(a.reps + 1):
        tokens, targets = copy_batch(a.batch, a.M, a.noise, a.alphabet, g)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i > 0:  # the first step warms up
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(json.dumps({"impl": "torch", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "batch": a.batch, "noise": a.noise, "seq_len": N, "ms_step": round(med * 1e3, 2),
                      "ms_all": [round(t * 1e3, 1) for t in times],
                      "tokens_per_s": round(a.batch * N / med, 1), "loss": round(loss.item(), 4)}), flush=True)


if __name__ == "__main__":
    main()
