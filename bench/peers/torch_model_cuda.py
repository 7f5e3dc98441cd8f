#!/usr/bin/env python3
"""PyTorch peer of a whole recurrent-transformer train step on a CUDA GPU.

The model of DESIGN.md section 1 (the layer stack of bench/peers/torch_layer_cuda.py, written from the same
text), with token embedding (tied head), optional learned positions, final LayerNorm and the lm or copy
head, softmax cross-entropy, and torch.optim.AdamW(fused=True) with global-norm clipping at 1.0: the same
work as one `model.lossAndGrad` + `AdamW.step` of ours.

Modes (--modes, comma-separated): fp32 | bf16 (autocast, attention written out) | bf16-sdpa (autocast,
flash attention) | compile (the bf16-sdpa model with each layer's block T compiled by
torch.compile(mode=$RT_TORCH_COMPILE_MODE or "default", dynamic=False); its compile time is reported apart
and not timed; "max-autotune-no-cudagraphs" took over 150 s on the copy config's block on the H200). The block, not the whole model, is compiled: the model is a Python loop of N/w window steps that
dynamo would unroll into one graph of thousands of nodes (minutes to compile, and different for every N),
while T has two shapes (w and 2w rows) and is what a user of torch would compile.
bf16-graph is the bf16-sdpa step (zero_grad, forward, backward, clipping, fused AdamW with capturable=True)
captured once as a CUDA graph (torch.cuda.graph, after three warm-up steps on a side stream) and replayed: the
time of PyTorch's own kernels with no host in the loop. The eager modes wait on the host to launch each of their
thousands of kernels, so their time moves with the host's CPU (char bf16: 16.8 to 36.3 ms across the H100 and
H200 hosts the device tool lends); this one should not.

One JSON line per mode: {"impl": "torch-cuda-model", "mode", "ms_step" (median of --reps after --warmup,
CUDA events), "tokens_per_s", "gflops" (layer FLOPs as bench/lib/flops.mjs counts them), ...}.
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F
import os

from torch_layer_cuda import RecurrentLayer, flops_fwd_bwd, init_nanogpt, time_cuda


COMPILE_MODE = os.environ.get("RT_TORCH_COMPILE_MODE", "default")


class Model(torch.nn.Module):
    def __init__(self, a, sdpa):
        super().__init__()
        self.wte = torch.nn.Embedding(a.vocab, a.d)
        self.wpe = torch.nn.Embedding(a.N, a.d) if a.positional else None
        self.h = torch.nn.Sequential(*[
            RecurrentLayer(a.d, a.heads, a.window, a.variant, a.activation, sdpa=sdpa) for _ in range(a.layers)
        ])
        self.ln_f = torch.nn.LayerNorm(a.d, eps=1e-5, bias=False)
        self.scored = a.scored

    def forward(self, tokens, targets):
        x = self.wte(tokens)
        if self.wpe is not None:
            x = x + self.wpe.weight[: tokens.shape[1]]
        y = self.h(x)[:, -self.scored:]
        logits = self.ln_f(y) @ self.wte.weight.t()
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


def run(a, mode):
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(a.seed)
    # The embeddings take PyTorch's default init from the global generator: seeded here, or each mode would start
    # from the tables the modes before it left that generator at (session 29's loss_first: 19.2-29.5 on copy).
    torch.manual_seed(a.seed)
    graph = mode == "bf16-graph"
    model = Model(a, sdpa=mode in ("bf16-sdpa", "compile", "bf16-graph")).to(dev)
    init_nanogpt(model.h, a.layers, gen)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, fused=True, capturable=graph)
    tokens = torch.randint(0, a.vocab, (a.batch, a.N), device=dev, generator=gen)
    targets = torch.randint(0, a.vocab, (a.batch, a.scored), device=dev, generator=gen)
    autocast = mode != "fp32"
    fwd = model
    compile_s = None
    if mode == "compile":
        for layer in model.h:
            layer.block = torch.compile(layer.block, mode=COMPILE_MODE, dynamic=False)

    first_loss = []  # the first step's loss, the same model and data in every mode (read after the timing)

    def body():  # a step after zero_grad: what bf16-graph captures
        # (autocast's cast cache off under capture: cached casts would be the capture's, freed after it)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast, cache_enabled=not graph):
            loss = fwd(tokens, targets)
        if not first_loss:
            first_loss.append(loss.detach().clone())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def step():
        opt.zero_grad(set_to_none=True)
        body()

    if graph:
        # PyTorch's recipe for capturing a whole network: warm-up steps on a side stream (AdamW's state and
        # cuBLAS's workspaces are made there, outside the capture), grads set to None so that backward allocates
        # them from the graph's pool, then one capture; each timed step is one replay.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(g):
            body()
        step = g.replay

    t0 = time.time()
    step()
    torch.cuda.synchronize()
    if mode == "compile":
        compile_s = round(time.time() - t0, 1)
    times = time_cuda(step, a.warmup, a.reps)
    med = statistics.median(times)
    fl = a.layers * flops_fwd_bwd(a.batch, a.N, a.d, a.heads, a.window)
    print(json.dumps({
        "impl": "torch-cuda-model", "config": a.name, "mode": mode, "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(), "batch": a.batch, "N": a.N, "d": a.d, "window": a.window,
        "ms_step": round(med, 3), "loss_first": round(first_loss[0].item(), 5), "ms_min": round(min(times), 3), "ms_all": [round(t, 2) for t in times],
        "tokens_per_s": round(a.batch * a.N / med * 1e3), "gflops": round(fl / med / 1e6, 1),
        "compile_s": compile_s, "compile_mode": COMPILE_MODE if mode == "compile" else None, "max_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20),
    }), flush=True)
    del model, opt
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


CONFIGS = {
    # The two configs: copy (noise 4096, M 16: N = 4128, scored 16) and char (tiny Shakespeare).
    "copy": dict(vocab=16, d=96, heads=6, window=32, batch=64, N=4128, scored=16, variant="accumulate",
                 activation="relu", positional=False),
    "char": dict(vocab=65, d=384, heads=6, window=16, batch=256, N=256, scored=256, variant="forget",
                 activation="gelu", positional=True),
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="copy,char")
    p.add_argument("--modes", default="fp32,bf16,bf16-sdpa,bf16-graph,compile")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=1234)
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for name in a.configs.split(","):
        cfg = argparse.Namespace(**vars(a), **CONFIGS[name], name=name)
        for mode in a.modes.split(","):
            try:
                run(cfg, mode)
            except Exception as e:  # a mode that fails (compile on a new torch) must not hide the others
                print(json.dumps({"impl": "torch-cuda-model", "config": name, "mode": mode, "error": str(e)[:300]}), flush=True)


if __name__ == "__main__":
    main()
