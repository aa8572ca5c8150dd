#!/usr/bin/python3
"""PyTorch reference for `make bench`: a dense GPT decoder of memtrain's benchmark shape.

The same blocks as memtrain's `arch = decoder, proj = dense` model: pre-RMSNorm, Q/K/V/O with
biases, causal attention with rotary positions on half of every head's dims, a 4d tanh-GELU
feed-forward, final RMSNorm and an untied LM head; AdamW, one thread. A step trains on
streams x horizon sequences of seg_len tokens, every token a scored target, as memtrain's
decoder step does (its horizon segments are independent sequences); tokens/s counts those
targets. Prints one line: `torch decoder dense <tokens/s> <ms/step> <cpu/wall>`, the
median over --reps timed windows, and the process's CPU time over wall time in them.

--ranks P > 1 runs P processes under DistributedDataParallel (gloo, one thread each), each
with --streams streams (weak scaling: P x streams in all); tokens/s then counts every rank's
targets, timed on rank 0 between barriers, and cpu/wall is rank 0's.

Debian's PyTorch runs its matrix products in OpenBLAS, whose threads torch.set_num_threads
does not govern: run it with OPENBLAS_NUM_THREADS=1 for one thread (without, it used 1.8
cores here); cpu/wall near 1 confirms one thread. Its kernels are chosen as memtrain chooses
its own (trainer/run/blas.h): where OPENBLAS_CORETYPE is unset and the library would fall back
to its generic Prescott kernels on a CPU with AVX-512 (AVX2 and FMA), SkylakeX's (Haswell's),
so that both sides of a comparison run the same kernels.
"""
import argparse
import math
import os
import statistics
import subprocess
import sys
import time


def choose_blas_kernels():
    """Sets OPENBLAS_CORETYPE as memtrain would, before torch loads OpenBLAS."""
    if "OPENBLAS_CORETYPE" in os.environ:
        return
    probe = "import ctypes; l = ctypes.CDLL('libopenblas.so.0'); " \
            "l.openblas_get_corename.restype = ctypes.c_char_p; print(l.openblas_get_corename().decode())"
    try:
        core = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              check=True).stdout.strip()
        flags = set()
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except (OSError, subprocess.CalledProcessError):
        return
    if core != "Prescott":
        return
    if {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    elif {"avx2", "fma"} <= flags:
        os.environ["OPENBLAS_CORETYPE"] = "Haswell"


choose_blas_kernels()
import torch  # noqa: E402  (after the kernel choice)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class RMSNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.w = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.w


def rope_tables(T, rot, base=10000.0):
    inv = base ** (-torch.arange(0, rot, 2, dtype=torch.float32) / rot)
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cos(ang), torch.sin(ang)  # (T, rot/2)


def rope(x, cos, sin, rot):
    # x (B, NH, T, HS): pairs (2i, 2i+1) of the first rot dims rotate
    xr, xp = x[..., :rot], x[..., rot:]
    a, b = xr[..., 0::2], xr[..., 1::2]
    r = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
    return torch.cat((r, xp), dim=-1)


class Block(nn.Module):
    def __init__(self, c, nh, rot):
        super().__init__()
        self.nh, self.rot = nh, rot
        self.n1, self.n2 = RMSNorm(c), RMSNorm(c)
        self.qkv = nn.Linear(c, 3 * c)
        self.o = nn.Linear(c, c)
        self.fc1 = nn.Linear(c, 4 * c)
        self.fc2 = nn.Linear(4 * c, c)

    def forward(self, x, cos, sin, mask):
        B, T, C = x.shape
        hs = C // self.nh
        q, k, v = self.qkv(self.n1(x)).split(C, dim=-1)
        q, k, v = (t.view(B, T, self.nh, hs).transpose(1, 2) for t in (q, k, v))
        q, k = rope(q, cos, sin, self.rot), rope(k, cos, sin, self.rot)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.o(y)
        return x + self.fc2(F.gelu(self.fc1(self.n2(x)), approximate="tanh"))


class Decoder(nn.Module):
    def __init__(self, vocab, c, nh, layers, T, rope_frac):
        super().__init__()
        self.rot = int(rope_frac * (c // nh))
        self.wte = nn.Embedding(vocab + 1, c)  # + BOS, as memtrain
        self.blocks = nn.ModuleList(Block(c, nh, self.rot) for _ in range(layers))
        self.norm = RMSNorm(c)
        self.head = nn.Linear(c, vocab, bias=False)
        cos, sin = rope_tables(T, self.rot)
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)
        self.register_buffer("mask", torch.triu(torch.ones(T, T, dtype=torch.bool), 1))

    def forward(self, idx):
        x = self.wte(idx)
        for b in self.blocks:
            x = b(x, self.cos, self.sin, self.mask)
        return self.head(self.norm(x))


def main():
    a = parse()
    if a.ranks > 1:
        import socket
        import torch.multiprocessing as mp
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(run, args=(a, port), nprocs=a.ranks, join=True)
    else:
        run(0, a, 0)


def parse():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--seg-len", type=int, default=64)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--horizon", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per window")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="timed windows; the median is printed")
    ap.add_argument("--ranks", type=int, default=1, help="processes under DDP (gloo)")
    return ap.parse_args()


def run(rank, a, port):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Decoder(a.vocab, a.d_model, a.heads, a.layers, a.seg_len, 0.5)
    net, sync = model, lambda: None
    if a.ranks > 1:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=a.ranks)
        # gloo cannot broadcast the bool mask; every rank builds the same one
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ["mask"])
        net, sync = DistributedDataParallel(model), dist.barrier
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    B, T = a.streams * a.horizon, a.seg_len
    gen = torch.Generator().manual_seed(1 + rank)

    def step():
        idx = torch.randint(0, a.vocab + 1, (B, T), generator=gen)
        tgt = torch.randint(0, a.vocab, (B, T), generator=gen)
        loss = F.cross_entropy(net(idx).view(-1, a.vocab), tgt.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    rates = []
    cpu = wall = 0.0
    for _ in range(a.reps):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(a.steps):
            step()
        sync()
        dt = time.perf_counter() - t0
        cpu += time.process_time() - c0
        wall += dt
        rates.append(a.ranks * B * T * a.steps / dt)
    tps = statistics.median(rates)
    if rank == 0:
        print(f"torch decoder dense {tps:.0f} {1000 * a.ranks * B * T / tps:.1f} {cpu / wall:.2f}",
              flush=True)
    if a.ranks > 1:
        import torch.distributed as dist
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
