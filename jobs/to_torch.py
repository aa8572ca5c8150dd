#!/usr/bin/python3
"""Converts a memtrain checkpoint to PyTorch and recomputes its validation loss in PyTorch.

    /usr/bin/python3 jobs/to_torch.py CKPT.h5 [--out model.pt] [--eval] [--key=value ...]
    /usr/bin/python3 jobs/to_torch.py CKPT.h5 --no-save --grad NEXT_CKPT.h5

Writes
  OUT (default: the checkpoint's name with .pt)   a state_dict (torch.save): named float32
      tensors in their real shapes, e.g. `wte.weight` (vocab + 1, d_model), `lm_head.weight`
      (vocab, d_model), `dec.0.self.q.weight` (d_model, d_model) for proj = dense,
      `dec.0.self.q.table` (K * 2^tau, d_model) and `dec.0.self.q.bias` for proj = hash
      (row k * 2^tau + bucket of chunk k's table);
  OUT with .conf instead of .pt                    the run's config (memtrain's key = value
      text), which MemtrainModel.from_config needs to build the module;
  OUT with .safetensors                            the same tensors, with the config in the
      metadata, when the `safetensors` module is installed (it is not required).

`MemtrainModel` below is the model as memtrain computes it (decoder or Memformer, dense or
hashed projections) as a torch.nn.Module: `load_state_dict` takes that state_dict, and
`segment(enc, dec, tgt, reset, M)` computes one segment of a batch of streams (summed loss,
scored tokens, next memory), differentiable by autograd. `--eval` also reads the validation
split the checkpoint's config names, deals it to streams exactly as `memtrain eval` does
(`validation_segments` below) and prints the loss and perplexity; `--key=value` overrides a
config key for that pass as it does for `memtrain eval` (e.g. --eval_docs=8). `--grad`
back-propagates the training rollout that follows the checkpoint and compares the gradient
with the step memtrain took to the next checkpoint (`compare_gradients`).

Needs h5py, numpy and torch (Debian: python3-h5py python3-torch); run it with Debian's
/usr/bin/python3.
"""
import argparse
import gzip
import math
import os
import re
import stat
import sys
import zlib
from collections import OrderedDict

try:
    import h5py
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # one line, not a traceback
    sys.exit("to_torch: %s: needs h5py, numpy and torch (Debian: python3-h5py python3-torch, "
             "which make torch-deps installs), run with /usr/bin/python3" % e)

# ---------------------------------------------------------------------------------------------
# config


def parse_config(text):
    """memtrain's canonical `key = value` text -> dict of strings."""
    cfg = {}
    for line in text.splitlines():
        # a comment starts with '#' at the start of a line or after white space, as memtrain
        # reads it: a '#' inside a value (a path such as notes#1.txt) is the value's
        line = re.split(r"(?:^|(?<=[ \t]))#", line, maxsplit=1)[0].strip()
        if not line:
            continue
        k, _, v = line.partition("=")
        cfg[k.strip().replace("-", "_")] = v.strip()
    return cfg


class Spec:
    """The model shape of a config, with memtrain's derived values."""

    def __init__(self, cfg):
        g = cfg.get
        self.memformer = g("arch", "memformer") == "memformer"
        self.hash = g("proj", "hash") == "hash"
        self.C = int(g("d_model", "128"))
        self.NH = int(g("n_heads", "4"))
        self.n_layers = int(g("n_layers", "2"))
        self.enc_layers = int(g("enc_layers", "1"))
        self.dec_layers = int(g("dec_layers", "2"))
        self.L = int(g("seg_len", "64"))
        self.vocab = int(g("vocab", "256"))
        self.S = int(g("mem_slots", "8"))
        self.write_temp = float(np.float32(g("write_temp", "0.25")))
        self.forgetting = g("forgetting", "on") == "on"
        self.memory = self.memformer and g("memory", "on") == "on"
        self.tau = int(g("tau", "8"))
        self.expand_bits = int(g("expand_bits", "2"))
        self.score = g("score", "l1prob")
        self.hash_temp = float(np.float32(g("hash_temp", "1")))
        self.bf16 = g("row_format", "f32") == "bf16"
        # trainer_config_rope_dim: lround(rope_frac * head size), rope_frac a float
        if g("pos", "rope") == "rope":
            frac = float(np.float32(g("rope_frac", "0.5")))
            x = frac * (self.C // self.NH)
            self.rope_dims = int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))
        else:
            self.rope_dims = 0
        self.n_dec = self.dec_layers if self.memformer else self.n_layers
        self.n_enc = self.enc_layers if self.memformer else 0
        self.H_hash = self.C // self.tau * (self.tau + self.expand_bits)


# ---------------------------------------------------------------------------------------------
# the modules (trainer/model/model.c, trainer/model/blocks.c, layers/*.c)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean x^2 + 1e-5) * w (layers/rmsnorm.c)."""

    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


def hash_index(x, tau, score, temp):
    """MemoryFormer bucket and score of every chunk of tau values (layers/hash.c).

    x (..., K*tau) -> idx (..., K) long, s (..., K). Element 0 of a chunk is the most
    significant bit, set when z >= 0 (so -0.0 sets it too). prob: prod_i 1/(1+exp(-2|z_i|/t));
    l1prob: (sum_i |z_i|) * prod_i 1/(1+exp(-2|z_i|)) (no temperature). The score is
    differentiable (|z|' = sign z, 0 at 0); the bucket is not."""
    z = x.reshape(*x.shape[:-1], x.shape[-1] // tau, tau)
    w = 2 ** torch.arange(tau - 1, -1, -1, device=x.device)
    idx = ((z >= 0).long() * w).sum(-1)
    t = temp if score == "prob" else 1.0
    a = z.abs()
    prod = (1.0 + torch.exp(a * float(np.float32(-2.0 / np.float32(t))))).prod(-1)
    s = 1.0 / prod if score == "prob" else a.sum(-1) / prod
    return idx, s


class HashOut(nn.Module):
    """One output of a hashed projection: K tables of 2^tau rows as one (K*2^tau, OC) tensor,
    y = sum_k s_k T[k*2^tau + idx_k] + b."""

    def __init__(self, K, tau, OC, bf16=False):
        super().__init__()
        self.K, self.R, self.bf16 = K, 1 << tau, bf16
        self.table = nn.Parameter(torch.zeros(K * self.R, OC))
        self.bias = nn.Parameter(torch.zeros(OC))

    def forward(self, idx, s):
        t = self.table
        if self.bf16:  # row_format = bf16: the kernels read rows rounded to bf16 (nearest even)
            t = t + (t.to(torch.bfloat16).float() - t).detach()
        rows = idx + torch.arange(self.K, device=idx.device) * self.R
        return (s.unsqueeze(-1) * t[rows]).sum(-2) + self.bias


def make_out(spec, C, OC, tau=None):
    """One output of a projection from C to OC: nn.Linear (dense) or HashOut (hash)."""
    if not spec.hash:
        return nn.Linear(C, OC)
    tau = tau or spec.tau
    return HashOut(C // tau, tau, OC, spec.bf16)


def project(spec, outs, x, tau=None):
    """The outputs of one input: each nn.Linear (dense), or HashOut tables that share one
    index and score computed from x (hash: Q/K/V of a self-attention share them)."""
    if not spec.hash:
        return [o(x) for o in outs]
    idx, s = hash_index(x, tau or spec.tau, spec.score, spec.hash_temp)
    return [o(idx, s) for o in outs]


def rope(x, rot, NH):
    """Rotary positions (layers/position.c): in each head, pairs (2i, 2i+1) of the first rot
    dims rotate by pos * 10000^(-2i/rot), the angle formed in double. x (B,T,C)."""
    if rot == 0:
        return x
    B, T, C = x.shape
    HS = C // NH
    i = torch.arange(rot // 2, dtype=torch.float64)
    theta = torch.arange(T, dtype=torch.float64)[:, None] * torch.pow(10000.0, -2.0 * i / rot)
    c, s = torch.cos(theta).float(), torch.sin(theta).float()  # (T, rot/2)
    xh = x.view(B, T, NH, HS)
    x0, x1 = xh[..., 0:rot:2], xh[..., 1:rot:2]
    c, s = c[None, :, None, :], s[None, :, None, :]
    r = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)
    return torch.cat((r, xh[..., rot:]), dim=-1).reshape(B, T, C)


def attention(q, k, v, NH, scale, mask):
    """Multi-head softmax attention. q (B,Tq,C), k, v (B,Tk,C); mask (Tq,Tk) bool of the keys
    a query sees, or None for all."""
    B, Tq, C = q.shape
    Tk, HS = k.shape[1], C // NH
    qh = q.view(B, Tq, NH, HS).transpose(1, 2)
    kh = k.view(B, Tk, NH, HS).transpose(1, 2)
    vh = v.view(B, Tk, NH, HS).transpose(1, 2)
    a = (qh @ kh.transpose(-1, -2)) * scale
    if mask is not None:
        a = a.masked_fill(~mask, float("-inf"))
    y = torch.softmax(a, dim=-1) @ vh
    return y.transpose(1, 2).reshape(B, Tq, C)


class Attn(nn.Module):
    """Pre-norm attention sublayer (mt_attn): x + O(Attn(Q(h), K(src), V(src))), h = RMSNorm(x).
    Self-attention (src = h, rotary if configured) or cross-attention (src as given, no
    positions); O only for proj = dense."""

    def __init__(self, spec, self_attn, causal):
        super().__init__()
        self.spec, self.self_attn, self.causal = spec, self_attn, causal
        C = spec.C
        self.norm = RMSNorm(C)
        self.q, self.k, self.v = (make_out(spec, C, C) for _ in range(3))
        if not spec.hash:
            self.o = nn.Linear(C, C)

    def forward(self, x, src=None):
        s = self.spec
        h = self.norm(x)
        T = x.shape[1]
        if self.self_attn:
            q, k, v = project(s, (self.q, self.k, self.v), h)
            q, k = rope(q, s.rope_dims, s.NH), rope(k, s.rope_dims, s.NH)
        else:
            (q,) = project(s, (self.q,), h)
            k, v = project(s, (self.k, self.v), src)
        mask = None
        if self.causal:
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        y = attention(q, k, v, s.NH, 1.0 / math.sqrt(s.C // s.NH), mask)
        return x + (self.o(y) if not s.hash else y)


class FFN(nn.Module):
    """Pre-norm feed-forward sublayer (mt_ffn): x + F(RMSNorm(x)); F = fc2(GELU_tanh(fc1)) with
    4d hidden (dense), or the memory block ML2(LayerNorm(ML1)) with ML1 at tau bits and ML2 at
    tau + expand_bits bits, no activation (hash)."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        C = spec.C
        self.norm = RMSNorm(C)
        if spec.hash:
            H = spec.H_hash
            self.ml1 = make_out(spec, C, H)
            self.ln = nn.LayerNorm(H, eps=1e-5)
            self.ml2 = make_out(spec, H, C, spec.tau + spec.expand_bits)
        else:
            self.fc1 = nn.Linear(C, 4 * C)
            self.fc2 = nn.Linear(4 * C, C)

    def forward(self, x):
        h = self.norm(x)
        if self.spec.hash:
            (u,) = project(self.spec, (self.ml1,), h)
            (f,) = project(self.spec, (self.ml2,), self.ln(u), self.spec.tau + self.spec.expand_bits)
        else:
            f = self.fc2(F.gelu(self.fc1(h), approximate="tanh"))
        return x + f


def rownorm(x):
    """x / (|x| + 1e-6) per row (the writer's memory normalisation)."""
    n = torch.sqrt(x.double().pow(2).sum(-1, keepdim=True)).float() + 1e-6
    return x / n


class Writer(nn.Module):
    """Memformer memory writer (mt_writer): slot i attends over [m_i ; E] (queries Q(m_i), keys
    K([M; E]), values [m_i ; V(E)]) with logits / (sqrt(head size) * write_temp); then
    m_i = (m'_i + v_i) / |m'_i + v_i| with forgetting, m'_i / |m'_i| without."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        C, S = spec.C, spec.S
        self.q, self.k, self.v = (make_out(spec, C, C) for _ in range(3))
        self.vbias = nn.Parameter(torch.zeros(S, C))

    def initial(self):
        """M_0 = v / |v| per slot, what a stream's memory restarts from at a document start."""
        return rownorm(self.vbias)

    def forward(self, M, E):
        s = self.spec
        S, L = s.S, E.shape[1]
        cat = torch.cat((M, E), dim=1)
        (q,) = project(s, (self.q,), M)
        k, v = project(s, (self.k, self.v), cat)
        v = torch.cat((M, v[:, S:]), dim=1)  # a slot's own value is its content
        j = torch.arange(S + L)
        mask = (j[None, :] == torch.arange(S)[:, None]) | (j[None, :] >= S)
        mp = attention(q, k, v, s.NH, 1.0 / (math.sqrt(s.C // s.NH) * s.write_temp), mask)
        return rownorm(mp + self.vbias if s.forgetting else mp)


class Layer(nn.Module):
    """A decoder layer (self -> cross when Memformer -> ffn) or an encoder layer (self ->
    memory reader when memory is on -> ffn)."""

    def __init__(self, spec, encoder):
        super().__init__()
        self.encoder = encoder
        self.self = Attn(spec, True, causal=not encoder)
        if encoder and spec.memory:
            self.reader = Attn(spec, False, False)
        if not encoder and spec.memformer:
            self.cross = Attn(spec, False, False)
        self.ffn = FFN(spec)

    def forward(self, x, src):
        x = self.self(x)
        if hasattr(self, "reader"):
            x = self.reader(x, src)
        if hasattr(self, "cross"):
            x = self.cross(x, src)
        return self.ffn(x)


class MemtrainModel(nn.Module):
    """memtrain's model of a config (trainer/model/model.c).

    Token ids 0..vocab-1, BOS = vocab. One segment of a batch of streams:
      enc (B,L) the previous segment (BOS at a document start), dec (B,L) the segment shifted
      right (its first input the previous segment's last token, or BOS), tgt (B,L) the
      segment (-1: not scored), reset (B) bool: the stream starts a document (memory M_0),
      M (B,S,C) the stream's memory otherwise.
    The decoder model reads dec only: every segment is an independent sequence of seg_len."""

    def __init__(self, spec):
        super().__init__()
        self.spec = s = spec if isinstance(spec, Spec) else Spec(spec)
        C = s.C
        self.wte = nn.Embedding(s.vocab + 1, C)
        if s.rope_dims == 0:
            self.wpe = nn.Embedding(s.L, C)
        self.dec = nn.ModuleList([Layer(s, False) for _ in range(s.n_dec)])
        if s.memformer:
            self.enc = nn.ModuleList([Layer(s, True) for _ in range(s.n_enc)])
            self.enc_norm = RMSNorm(C)
            if s.memory:
                self.writer = Writer(s)
        self.dec_norm = RMSNorm(C)
        self.lm_head = nn.Linear(C, s.vocab, bias=False)

    @classmethod
    def from_config(cls, text):
        return cls(Spec(parse_config(text)))

    def embed(self, tok):
        x = self.wte(tok)
        if self.spec.rope_dims == 0:
            x = x + self.wpe.weight[: tok.shape[1]]
        return x

    def encode(self, enc, reset, M):
        """E (B,L,C) and M_in (B,S,C) (None without memory)."""
        s = self.spec
        M_in = None
        if s.memory:
            M0 = self.writer.initial().unsqueeze(0).expand(enc.shape[0], -1, -1)
            M_in = M0 if M is None else torch.where(reset[:, None, None], M0, M)
        x = self.embed(enc)
        for layer in self.enc:
            x = layer(x, M_in)
        return self.enc_norm(x), M_in

    def segment(self, enc, dec, tgt, reset, M=None):
        """(summed cross-entropy in double, scored tokens, next memory or None)."""
        s = self.spec
        E = M_next = None
        if s.memformer:
            E, M_in = self.encode(enc, reset, M)
            if s.memory:
                M_next = self.writer(M_in, E)
        x = self.embed(dec)
        for layer in self.dec:
            x = layer(x, E)
        logits = self.lm_head(self.dec_norm(x))
        t = tgt.reshape(-1).long()
        loss = F.cross_entropy(logits.reshape(-1, s.vocab).double(), t.clamp(min=0),
                               reduction="none")
        keep = t >= 0
        return (loss * keep).sum(), int(keep.sum()), M_next


# ---------------------------------------------------------------------------------------------
# checkpoint -> state_dict


def _attr_str(v):
    if isinstance(v, np.ndarray) and v.size == 1:  # a one-element array, as memtrain reads it
        v = v.reshape(-1)[0]
    return v.decode() if isinstance(v, bytes) else str(v)


def _attr_int(f, path, name):
    """An integer attribute, as memtrain reads it: a stored integer, not a float or a string."""
    v = _attr(f, path, name)
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.reshape(-1)[0]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise Damaged("%s: attribute %s is not an integer (damaged)" % (path, name))
    return int(v)


def flat_from_memtrain(name):
    """memtrain's tensor or table-output name -> the converted name (None: not a model
    tensor). Dense: dec0.self.qkv.w1 -> dec.0.self.k.weight; tables: dec0.self.qkv/out1 ->
    dec.0.self.k.table."""
    fixed = {"wte": "wte.weight", "wpe": "wpe.weight", "lm_head": "lm_head.weight",
             "enc.norm": "enc_norm.weight", "dec.norm": "dec_norm.weight",
             "writer.vbias": "writer.vbias"}
    if name in fixed:
        return fixed[name]
    n = re.sub(r"^(dec|enc)(\d+)\.", r"\1.\2.", name)
    m = re.match(r"^(.*)\.(qkv|q|kv|o|fc1|fc2)(?:\.(w|b)(\d)|/out(\d))$", n)
    if m:
        site, kind, wb, j1, j2 = m.groups()
        j = int(j1 if j1 is not None else j2)
        letter = {"qkv": "qkv", "q": "q", "kv": "kv", "o": "o"}.get(kind)
        out = letter[j] if letter else kind
        what = {"w": "weight", "b": "bias", None: "table"}[wb]
        return "%s.%s.%s" % (site, out, what)
    m = re.match(r"^(.*\.ffn)\.(ml1|ml2)(?:\.b|/out0)$", n)
    if m:
        return "%s.%s.%s" % (m.group(1), m.group(2), "bias" if n.endswith(".b") else "table")
    m = re.match(r"^(.*)\.(norm|ln)\.?(w|b)?$", n)
    if m:
        return "%s.%s.%s" % (m.group(1), m.group(2), "bias" if m.group(3) == "b" else "weight")
    return None


class Damaged(Exception):
    """A checkpoint that is not as memtrain wrote it; the message is one line."""


def _attr(f, path, name):
    if name not in f.attrs:
        raise Damaged("%s: attribute %s missing (damaged)" % (path, name))
    return f.attrs[name]


def _checked(ds, path):
    """The dataset's values, every dim-0 slice checked against its crc32 as memtrain does."""
    crc = ds.attrs.get("crc32")
    if ds.dtype != np.float32:  # memtrain reads float32 arrays only
        raise Damaged("%s: dataset %s has type %s, expected float32"
                      % (path, ds.name.lstrip("/"), ds.dtype))
    a = ds[()]
    if crc is None or np.shape(crc) != (a.shape[0],):
        raise Damaged("%s: dataset %s has no crc32 of its %d slices (damaged)"
                      % (path, ds.name.lstrip("/"), a.shape[0]))
    for i in range(a.shape[0]):
        if zlib.crc32(a[i].tobytes()) != int(crc[i]):
            raise Damaged("%s: dataset %s slice %d fails its checksum (corrupt file)"
                          % (path, ds.name.lstrip("/"), i))
    if a.dtype != np.float32 or not np.isfinite(a).all():
        raise Damaged("%s: dataset %s %s" % (path, ds.name.lstrip("/"),
                      "is not float32" if a.dtype != np.float32
                      else "holds a NaN or infinite value (damaged)"))
    return a


def read_checkpoint(path):
    """(config text, step, state_dict of torch tensors in their real shapes). Refuses, with a
    one-line Damaged, what memtrain would: a failed checksum, a missing attribute, a config
    that does not describe the arrays, a newer format."""
    with h5py.File(path, "r") as f:
        if _attr_str(f.attrs.get("magic", b"")) != "memtrain-checkpoint":
            raise ValueError("%s: not a memtrain checkpoint" % path)
        version = _attr_int(f, path, "format_version")
        if version not in (1, 2):
            raise Damaged("%s: format_version %d: not one this converter reads (1 or 2)"
                          % (path, version))
        text = _attr_str(_attr(f, path, "config"))
        if "config_crc32" in f.attrs and zlib.crc32(text.encode()) != int(f.attrs["config_crc32"]):
            raise Damaged("%s: attribute config fails its checksum (config_crc32): edited or "
                          "damaged" % path)
        step = _attr_int(f, path, "step")
        if step < 0:
            raise Damaged("%s: attribute step is %d, not a step (damaged)" % (path, step))
        try:
            model = MemtrainModel.from_config(text)
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise Damaged("%s: its config does not build a model (%s)"
                          % (path, str(e).splitlines()[0] if str(e) else type(e).__name__))
        want = model.state_dict()
        sd = OrderedDict()
        for g in ("dense", "tables"):
            if g not in f:
                continue
            for site in f[g]:
                if g == "dense":
                    items = [(site, f[g][site]["data"])]
                else:
                    items = [("%s/%s" % (site, o), f[g][site][o]["data"]) for o in f[g][site]]
                for name, ds in items:
                    flat = flat_from_memtrain(name)
                    if flat is None or flat not in want:
                        raise Damaged("%s: tensor %s has no place in the model its config "
                                      "describes" % (path, name))
                    a = _checked(ds, path)
                    shape = tuple(want[flat].shape)
                    if a.size != int(np.prod(shape)):
                        raise Damaged("%s: %s holds %d values where the model its config "
                                      "describes has %s: the config does not match the arrays"
                                      % (path, ds.name.lstrip("/"), a.size, "x".join(map(str, shape))))
                    sd[flat] = torch.from_numpy(a.reshape(shape).copy())
        missing = [k for k in want if k not in sd]
        if missing:
            raise Damaged("%s: no tensor for %s (damaged, or not this config's model)"
                          % (path, ", ".join(missing[:5])))
    return text, step, OrderedDict((k, sd[k]) for k in want)


# ---------------------------------------------------------------------------------------------
# validation data, as memtrain reads it (io/mnist.c, io/brown.c, io/textfile.c, io/data.c)

DOC_TOKENS = 65536  # IO_DOC_TOKENS: token files are cut into documents of this many


def _is_val_doc(d, n):
    return d % 10 == 9 if n >= 10 else (n >= 2 and d == n - 1)


def _keep_val(docs):
    n = len(docs)
    return [d for i, d in enumerate(docs) if _is_val_doc(i, n)]


def _cut_fixed(tok):
    return [tok[s:s + DOC_TOKENS] for s in range(0, len(tok), DOC_TOKENS)]


def _split_text(p):
    """Documents of a text file (io/textfile.c split_text), or None when no separator."""
    docs, cur, seps, run, run_start, i, n = [], bytearray(), 0, 0, 0, 0, len(p)

    def end_doc():
        if cur:
            docs.append(np.frombuffer(bytes(cur), dtype=np.uint8).astype(np.int64))
            cur.clear()

    while i < n:
        e = i
        while e < n and p[e] not in (10, 12):
            e += 1
        ff = e < n and p[e] == 12
        end = e + 1 if e < n and p[e] == 10 else e
        blank = all(c in (32, 9, 13) for c in p[i:e])
        if blank:
            if run == 0:
                run_start = i
            run += 1
        else:
            if run >= 2:
                end_doc()
                seps += 1
            elif run == 1:
                cur.extend(p[run_start:i])
            run = 0
            cur.extend(p[i:end])
        if ff:
            run = 0
            end_doc()
            seps += 1
            end = e + 1
        i = end
    end_doc()
    return docs if seps > 0 else None


def _brown_doc(p):
    out, line_words = bytearray(), 0
    for line in p.split(b"\n"):
        words = [w for w in re.split(rb"[ \t\r\v]+", line) if w]
        for k, w in enumerate(words):
            slash = w.rfind(b"/")
            if k:
                out += b" "
            out += w[:slash]
        if words:
            out += b"\n"
    return np.frombuffer(bytes(out), dtype=np.uint8).astype(np.int64)


def load_validation_docs(cfg, split="val"):
    """The validation split's documents (a list of token arrays), as io_dataset_load reads
    them for IO_SPLIT_VAL (split = "train": the training split)."""
    val = split == "val"
    keep = _keep_val if val else (lambda docs: [d for i, d in enumerate(docs)
                                                if not _is_val_doc(i, len(docs))])
    data = cfg.get("data", "fashion-mnist")
    data_dir = cfg.get("data_dir", "data")
    if data == "fashion-mnist":
        d = os.environ.get("MEMTRAIN_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist"
        name = "t10k-images-idx3-ubyte.gz" if val else "train-images-idx3-ubyte.gz"
        with gzip.open(os.path.join(d, name), "rb") as g:
            raw = g.read()
        n = int.from_bytes(raw[4:8], "big")
        px = np.frombuffer(raw, dtype=np.uint8, offset=16, count=n * 784).astype(np.int64)
        return list(px.reshape(n, 784))
    if data == "brown":
        d = os.path.join(data_dir, "brown")
        with open(os.path.join(d, "cats.txt"), "rb") as f:
            ids = [ln.split()[0] for ln in f.read().split(b"\n") if ln.split()]
        docs = []
        for i in ids:
            with open(os.path.join(d, i.decode()), "rb") as f:
                docs.append(_brown_doc(f.read()))
        return keep(docs)
    if data.startswith("text:"):
        with open(data[5:], "rb") as f:
            p = f.read()
        docs = _split_text(p)
        if docs is None:
            docs = _cut_fixed(np.frombuffer(p, dtype=np.uint8).astype(np.int64))
        return keep(docs)
    m = re.match(r"^(u8|u16):(.*?)(?::(\d+))?$", data)
    if m:
        with open(m.group(2), "rb") as f:
            p = f.read()
        tok = np.frombuffer(p, dtype=np.uint8 if m.group(1) == "u8" else "<u2").astype(np.int64)
        return keep(_cut_fixed(tok))
    raise ValueError("data = %s: not a dataset this script reads" % data)


def validation_segments(cfg, docs):
    """What memtrain eval scores (trainer_validation_ppl in trainer/run/train.c): yields, for each
    segment step t, (enc, dec, tgt, reset) as (streams, seg_len) int arrays and (streams) bool.

    The first eval_docs documents (0: all) are scored whole, each once: lane j of `streams`
    reads documents j, j + streams, ... of them (io_stream_next: segments of seg_len, the last
    one padded with -1); a lane that has read its share is idle (BOS in, nothing scored).
    Everything about which documents validation reads and how they are dealt is here and in
    load_validation_docs: keep both in step with trainer_validation_ppl and io/ when those
    change."""
    S, L, bos = int(cfg.get("streams", "8")), int(cfg.get("seg_len", "64")), int(cfg.get("vocab", "256"))
    limit = 0
    want = int(cfg.get("eval_docs", "0"))
    if 0 < want < len(docs):
        docs = docs[:want]
    n = len(docs)
    quota = [(n - j + S - 1) // S if j < n else 0 for j in range(S)]
    doc_count, pos = [0] * S, [0] * S
    prev = [np.full(L, -1, dtype=np.int64) for _ in range(S)]
    last = [-1] * S
    done = [False] * S
    t = 0
    while not (limit > 0 and t >= limit):
        enc = np.full((S, L), bos, dtype=np.int64)
        dec = np.full((S, L), bos, dtype=np.int64)
        tgt = np.full((S, L), -1, dtype=np.int64)
        reset = np.ones(S, dtype=bool)
        for j in range(S):
            if done[j]:
                continue
            start = pos[j] == 0
            i = doc_count[j] if start else doc_count[j] - 1
            doc = docs[(j % n + (i % n) * (S % n) % n) % n]
            take = min(len(doc) - pos[j], L)
            seg = np.full(L, -1, dtype=np.int64)
            seg[:take] = doc[pos[j]:pos[j] + take]
            pos[j] += take
            if pos[j] == len(doc):
                pos[j] = 0
            if start:
                doc_count[j] += 1
            if doc_count[j] > quota[j]:
                done[j] = True
                continue
            reset[j] = start
            enc[j] = np.where(start | (prev[j] < 0), bos, prev[j])
            dec[j, 0] = bos if (start or last[j] < 0) else last[j]
            dec[j, 1:] = np.where(seg[:-1] < 0, bos, seg[:-1])
            tgt[j] = seg
            prev[j], last[j] = seg, int(seg[L - 1])
        if all(done):
            break
        yield enc, dec, tgt, reset
        t += 1


def validation_loss(model, cfg, docs):
    """(mean loss per scored token, scored tokens) over validation_segments."""
    total, count, M = 0.0, 0, None
    with torch.no_grad():
        for enc, dec, tgt, reset in validation_segments(cfg, docs):
            loss, cnt, M = model.segment(torch.from_numpy(enc), torch.from_numpy(dec),
                                         torch.from_numpy(tgt), torch.from_numpy(reset), M)
            total += float(loss)
            count += cnt
    return (total / count if count else float("nan")), count


def next_rollout(cfg, docs, ckpt):
    """The training rollout that follows a checkpoint (trainer/run/train.c fill_rollout): from
    the streams' stored cursors, previous segments and last tokens, `horizon` segments of
    every stream; (enc, dec, tgt) (horizon, streams, seg_len), reset (horizon, streams) and
    the carried memory (streams, mem_slots, d_model) or None."""
    S, L, bos = int(cfg["streams"]), int(cfg["seg_len"]), int(cfg["vocab"])
    T, n = int(cfg["horizon"]), len(docs)
    with h5py.File(ckpt, "r") as f:
        cursor = f["streams/cursor"][()]
        prev = f["streams/prev_segment"][()].astype(np.int64)
        last = f["streams/last_token"][()][:, 0].astype(np.int64)
        mem = f["streams/memory"][()] if "streams/memory" in f else None
    enc = np.zeros((T, S, L), dtype=np.int64)
    dec, tgt = np.zeros_like(enc), np.zeros_like(enc)
    reset = np.zeros((T, S), dtype=bool)
    for j in range(S):
        doc_count, pos = int(cursor[j, 0]), int(cursor[j, 1])
        for t in range(T):
            start = pos == 0
            i = doc_count if start else doc_count - 1
            doc = docs[(j % n + (i % n) * (S % n) % n) % n]
            take = min(len(doc) - pos, L)
            seg = np.full(L, -1, dtype=np.int64)
            seg[:take] = doc[pos:pos + take]
            pos = 0 if pos + take == len(doc) else pos + take
            doc_count += start
            reset[t, j] = start
            enc[t, j] = np.where(start | (prev[j] < 0), bos, prev[j])
            dec[t, j, 0] = bos if (start or last[j] < 0) else last[j]
            dec[t, j, 1:] = np.where(seg[:-1] < 0, bos, seg[:-1])
            tgt[t, j] = seg
            prev[j], last[j] = seg, seg[L - 1]
    M = None
    if mem is not None and mem.size and int(cfg.get("mem_slots", "8")) > 0:
        M = torch.from_numpy(mem.reshape(S, int(cfg["mem_slots"]), -1).copy())
    return enc, dec, tgt, reset, M


def rollout_gradient(model, cfg, docs, ckpt):
    """Back-propagates the mean loss of the rollout after `ckpt` (what memtrain's next step
    differentiates; the memory carried in is a constant, as MRBP's is) into model's .grad."""
    enc, dec, tgt, reset, M = next_rollout(cfg, docs, ckpt)
    model.zero_grad()
    total, count = 0.0, 0
    for t in range(enc.shape[0]):
        loss, cnt, M = model.segment(torch.from_numpy(enc[t]), torch.from_numpy(dec[t]),
                                     torch.from_numpy(tgt[t]), torch.from_numpy(reset[t]), M)
        total, count = total + loss, count + cnt
    (total / count).backward()
    return float(total) / count


def memtrain_gradient(ckpt, ckpt_next, beta1):
    """memtrain's (clipped) gradient of the step between two checkpoints, from the Adam first
    moments: g = (m' - beta1 m) / (1 - beta1). {converted name: (gradient, touched mask)};
    a table row no token hit keeps its moments (lazy Adam), so only touched rows count."""
    b1 = np.float32(beta1)
    out = {}
    with h5py.File(ckpt, "r") as f0, h5py.File(ckpt_next, "r") as f1:
        for g in ("dense", "tables"):
            for site in (f0[g] if g in f0 else []):
                items = [site] if g == "dense" else ["%s/%s" % (site, o) for o in f0[g][site]]
                for name in items:
                    m0 = f0[g][name]["m"][()].astype(np.float32)
                    m1 = f1[g][name]["m"][()].astype(np.float32)
                    grad = (m1 - b1 * m0) / (np.float32(1) - b1)
                    touched = np.ones(grad.shape[:-1] if g == "tables" else (), dtype=bool)
                    if g == "tables":
                        touched = (m1 != m0).any(-1)
                        grad = grad.reshape(-1, grad.shape[-1])
                        touched = touched.reshape(-1)
                    out[flat_from_memtrain(name)] = (grad, touched)
    return out


def compare_gradients(model, cfg, ckpt, ckpt_next):
    """PyTorch's gradient of the rollout after ckpt against memtrain's step from ckpt to
    ckpt_next (consecutive steps of a run with grad_clip = 0). Returns (rollout loss, worst
    error, lines): a tensor's error is |g_torch - g_memtrain| / (|g_memtrain| + 1e-6 |G|), G
    the whole gradient, so tensors whose gradient is zero but for rounding (a key bias:
    softmax ignores it) do not count."""
    loss = rollout_gradient(model, cfg, load_validation_docs(cfg, "train"), ckpt)
    ref = memtrain_gradient(ckpt, ckpt_next, float(cfg.get("beta1", "0.9")))
    params = dict(model.named_parameters())
    pairs = {}
    for k, (g, touched) in ref.items():
        gt = params[k].grad.detach().numpy().reshape(g.shape)
        if k.endswith(".table"):
            g, gt = g[touched], gt[touched]
        pairs[k] = (g.astype(np.float64), gt.astype(np.float64))
    G = math.sqrt(sum(float((g * g).sum()) for g, _ in pairs.values()))
    worst, lines = 0.0, []
    for k, (g, gt) in pairs.items():
        err = float(np.linalg.norm(gt - g)) / (float(np.linalg.norm(g)) + 1e-6 * G)
        worst = max(worst, err)
        lines.append("%-28s |g| %.3e  error %.1e" % (k, float(np.linalg.norm(g)), err))
    return loss, worst, lines


# ---------------------------------------------------------------------------------------------


def output_paths(out):
    """The files save_outputs writes for --out: the state_dict, the config beside it, and
    safetensors when the package is there."""
    base = out[:-3] if out.endswith(".pt") else out
    paths = [out, base + ".conf"]
    try:
        import safetensors.torch  # noqa: F401
        paths.append(base + ".safetensors")
    except ImportError:
        pass
    return paths


def save_outputs(paths, text, sd):
    """Writes each file new ("x": one that appeared meanwhile is never replaced). On a failure
    the files this call made are removed again, and the error goes on."""
    made = []
    try:
        with open(paths[0], "xb") as f:
            made.append(paths[0])
            torch.save(sd, f)
        with open(paths[1], "x") as f:
            made.append(paths[1])
            f.write(text)
        if len(paths) > 2:
            from safetensors.torch import save
            with open(paths[2], "xb") as f:
                made.append(paths[2])
                f.write(save({k: v.contiguous() for k, v in sd.items()},
                             metadata={"memtrain_config": text}))
    except BaseException:
        for p in made:
            os.remove(p)
        raise
    return paths


# keys the checkpoint fixes (memtrain's shape keys, which eval cannot change either)
SHAPE_KEYS = set("""arch proj d_model n_heads n_layers enc_layers dec_layers seg_len vocab
    mem_slots write_temp forgetting memory tau expand_bits score hash_temp pos rope_frac
    streams row_format data""".split())


def main(argv):
    class Parser(argparse.ArgumentParser):  # its refusals in one line, like memtrain's
        def error(self, message):
            print("to_torch: %s (see --help)" % message, file=sys.stderr)
            sys.exit(2)

    ap = Parser(
        description=__doc__.split("\n")[0],
        epilog="Other --key=value arguments override the checkpoint's config for --eval and "
               "--grad, like memtrain eval's: --eval_docs=N (the first N validation documents), "
               "--data_dir=DIR (where make data fetched). Keys of the model's "
               "shape and streams are refused.")
    ap.add_argument("ckpt", help="a memtrain checkpoint (run_dir/ckpt/ckpt-<step>.h5)")
    ap.add_argument("--out", help="state_dict file to write (default: beside the checkpoint, .pt)")
    ap.add_argument("--eval", action="store_true",
                    help="print the validation loss and perplexity memtrain eval computes")
    ap.add_argument("--no-save", action="store_true", help="write nothing (with --eval)")
    ap.add_argument("--grad", metavar="NEXT_CKPT",
                    help="compare PyTorch's gradient of the next training rollout with the "
                    "step memtrain took to NEXT_CKPT (the checkpoint one step later, from a run "
                    "with grad_clip = 0)")
    args, rest = ap.parse_known_args(argv)
    if args.no_save and not (args.eval or args.grad):
        ap.error("--no-save leaves nothing to do without --eval or --grad")
    if args.no_save and args.out:
        ap.error("--no-save writes nothing: --out does not apply")
    overrides = {}
    for r in rest:
        m = re.match(r"^--([A-Za-z_][A-Za-z0-9_-]*)=(.*)$", r)
        if not m:
            ap.error("unrecognised argument %s (config overrides are --key=value)" % r)
        key = m.group(1).replace("-", "_")
        if key in SHAPE_KEYS:
            ap.error("--%s: the model and its streams come from the checkpoint; only keys "
                     "such as eval_docs and data_dir can change" % key)
        overrides[key] = m.group(2)
    torch.set_num_threads(1)

    def refuse(msg):  # one line, before anything is written
        print("to_torch: %s" % msg, file=sys.stderr)
        sys.exit(2)

    try:
        mode = os.stat(args.ckpt).st_mode
        if not stat.S_ISREG(mode):  # a FIFO would block the open
            refuse("%s: not a regular file (%s)" % (args.ckpt, "a directory" if stat.S_ISDIR(mode)
                                                    else "a FIFO" if stat.S_ISFIFO(mode)
                                                    else "a device or socket"))
        text, step, sd = read_checkpoint(args.ckpt)
    except OSError as e:  # missing, unreadable, not HDF5
        refuse("%s: %s" % (args.ckpt, e.strerror or str(e).splitlines()[0]))
    except (ValueError, Damaged) as e:  # HDF5, but not a memtrain checkpoint, or damaged
        refuse(str(e).splitlines()[0])
    except (KeyError, RuntimeError, TypeError) as e:  # h5py on a damaged layout (links, groups)
        refuse("%s: cannot be read as a checkpoint (%s)"
               % (args.ckpt, str(e).strip("'\"").splitlines()[0] or type(e).__name__))
    cfg = parse_config(text)
    cfg.update(overrides)  # what data is read and how much; never the model
    if "eval_docs" in overrides and not re.fullmatch(r"(0|[1-9][0-9]{0,9})", overrides["eval_docs"]):
        refuse("eval_docs = %s: expected an integer >= 0 (0: every validation document)"
               % overrides["eval_docs"])

    if args.eval and cfg.get("val_data", "split") != "split":
        refuse("val_data = %s: --eval reads the data's own validation split only"
               % cfg["val_data"])
    if args.grad and cfg.get("shuffle", "off") == "on":
        refuse("--grad follows the stream cursors in file order: train the run with "
               "--shuffle=off")
    if not args.no_save:
        paths = output_paths(args.out or re.sub(r"\.h5$", "", args.ckpt) + ".pt")
        for p in paths:  # never over a file, be it a checkpoint or a config
            if os.path.lexists(p):
                refuse("%s exists: choose another --out or remove it" % p)
        try:
            for w in save_outputs(paths, text, sd):
                print("wrote %s" % w)
        except OSError as e:  # a file, or the standard output the names go to
            refuse("%s: %s" % (e.filename or "standard output", e.strerror or e))
        except RuntimeError as e:  # torch.save's own write errors (a full disk)
            refuse("%s: %s" % (paths[0], str(e).splitlines()[0]))
    if args.eval:
        model = MemtrainModel.from_config(text)
        model.load_state_dict(sd)
        model.eval()
        docs = load_validation_docs(cfg)
        loss, count = validation_loss(model, cfg, docs)
        print("%s (step %d): torch validation loss %.6f perplexity %.4f over %d tokens"
              % (args.ckpt, step, loss, math.exp(loss), count))
    if args.grad:
        model = MemtrainModel.from_config(text)
        model.load_state_dict(sd)
        loss, worst, lines = compare_gradients(model, cfg, args.ckpt, args.grad)
        for ln in lines:
            print(ln)
        print("%s -> %s: torch rollout loss %.6f, gradient error at most %.1e over %d tensors"
              % (args.ckpt, args.grad, loss, worst, len(lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
