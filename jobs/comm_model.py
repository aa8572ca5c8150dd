#!/usr/bin/python3
"""Communication-volume model of memtrain's table-parallel row exchange.

Predicts `bytes_sent_per_rank` of metrics.csv: the bytes one rank sends to the
other ranks per optimizer step, averaged over ranks.

    B(P) = 12 (P-1) X  +  (P-1)/P * sum_g K_g (U_g + sum_blocks U_g,b) (8 + 4 W_g)

    U_g  = 2^b_g * (1 - (1 - 2^-b_g)^m_g)

- g runs over the hashed projection groups of the model (`--list-groups`
  prints them): per layer a self-attention Q/K/V group (nout 3), a
  cross-attention q (nout 1) and k/v (nout 2), the memory block's ML1
  (nout 1, OC = K*(tau+e), b = tau bits) and ML2 (nout 1, OC = d_model,
  b = tau+e bits); for Memformer also the encoder's memory reader q and k/v
  and the memory writer's q and k/v. K_g = d_model/tau tables of 2^b_g rows.
- W_g = nout * OC floats per key. A key owned by another rank costs
  8 B (key) + 4 W B (the row) when it is fetched, and the same again each time
  a block pushes its gradient row to the owner.
- m_g: rows hashed per table per step on one rank, with B streams on the rank
  and n = horizon * seg_len * B tokens per rank per step: decoder self,
  cross-q, cross-k/v (encoder outputs) and memory-block groups see n rows;
  encoder groups n rows (the previous segment's tokens); the memory reader k/v
  horizon * mem_slots * B rows; the writer q the slots (horizon * mem_slots *
  B) and the writer k/v the slots plus the encoder outputs (horizon *
  (mem_slots + seg_len) * B). A fetched row stays until the step ends, so
  U_g (m_g over the rank's streams) counts the fetches; U_g,b (m_g over one
  block's streams) counts one block's pushes.
- U_g: expected distinct buckets among m_g lookups spread uniformly over
  2^b_g buckets. Real buckets are skewed (repeated pixels, trained hashes
  that concentrate), so this is an upper-bound-style estimate: it
  overestimates, increasingly as training makes the buckets skewed.
- (P-1)/P: a table has one owner; averaged over ranks, its keys leave every
  rank but the owner.
- X = passes * (F + G) exchanges per step, each with a 12-byte header to
  every peer: passes = the most blocks (of stream_block streams) any rank
  owns; per block F fetch calls (one per group per forward call, per segment
  when a memory is carried, once when the block's segments are one batch;
  MRBP's recompute exchanges nothing) and G pushes (one per group).

The calibrated prediction keeps the structure but scales the row bytes by
the remote keys actually fetched, D = (1 - cache_hit_rate) * lookups (the
log's hit rate counts fetched rows), against the predicted (P-1)/P sum_g K_g
U_g, so it tests the byte accounting (W, (P-1)/P, headers, pushes per
block) rather than the bucket statistics.

Usage:
  jobs/comm_model.py --config jobs/configs/demo.conf --streams=8 --ranks 1,2,4
  jobs/comm_model.py --config jobs/configs/demo.conf --per-rank-streams 4 \\
      --ranks 2,4,8 --metrics 'runs/scaling/weak-p{P}/metrics.csv' --format markdown
Defaults of keys not in the config come from `BIN --help` (default
build/bin/memtrain); with --bin none every needed key must be given.
"""
import argparse
import csv
import math
import os
import re
import subprocess
import sys

HEADER_BYTES = 12       # three ints per peer per exchange
KEY_BYTES = 8           # int64 (group << 32 | chunk << bits | bucket)
NEEDED = ("arch", "proj", "d_model", "n_layers", "enc_layers", "dec_layers", "seg_len",
          "mem_slots", "memory", "tau", "expand_bits", "horizon", "bptt", "streams",
          "stream_block")


def die(msg):
    sys.stderr.write("comm_model: %s\n" % msg)
    sys.exit(2)


def help_defaults(binary):
    """Key defaults from the table printed by `memtrain --help`."""
    try:
        out = subprocess.run([binary, "--help"], capture_output=True, text=True, check=False,
                             timeout=30).stdout
    except OSError as e:
        die("cannot run %s --help (%s); build memtrain or pass --bin none and every key" %
            (binary, e))
    defaults = {}
    table = False
    for line in out.splitlines():
        if re.match(r"^\s+key\s+default\s+meaning", line):
            table = True
            continue
        m = re.match(r"^  (\w+)\*?\s+(\S+)\s", line) if table else None
        if m:
            defaults[m.group(1)] = m.group(2)
    if not defaults:
        die("no key table in the output of %s --help" % binary)
    return defaults


def read_config(path):
    """`key = value` lines; '#' at the start of a line or after a blank starts a comment."""
    cfg = {}
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        die("cannot read config %s: %s" % (path, e.strerror))
    for num, line in enumerate(lines, 1):
        line = re.sub(r"(^|[ \t])#.*$", "", line).strip()
        if not line:
            continue
        if "=" not in line:
            die("%s:%d: expected `key = value`" % (path, num))
        k, v = line.split("=", 1)
        cfg[k.strip()] = v.strip()
    return cfg


class Group:
    """One hashed projection site: K tables of 2^bits rows, nout*OC floats per key."""

    def __init__(self, name, nout, K, bits, OC, rows, calls):
        self.name, self.nout, self.K, self.bits, self.OC = name, nout, K, bits, OC
        self.W = nout * OC
        self.rows = rows    # rows hashed per segment per stream (per forward call)
        self.calls = calls  # forward calls (fetch exchanges) per segment per stream pass


def model_groups(c):
    """The hashed groups of the model described by config c (values as ints/strings)."""
    if c["proj"] != "hash":
        return []
    C, tau, e, L, S = c["d_model"], c["tau"], c["expand_bits"], c["seg_len"], c["mem_slots"]
    if C % tau:
        die("d_model %d is not a multiple of tau %d" % (C, tau))
    K, H = C // tau, (C // tau) * (tau + e)
    memformer = c["arch"] == "memformer"
    memory = memformer and c["memory"] == "on"
    # encoder and writer run in the MRBP memory pass and again in the recompute pass
    enc_calls = 2 if memory and c["bptt"] == "mrbp" else 1
    gs = []

    def block(prefix, calls, cross, reader):
        gs.append(Group(prefix + ".self.qkv", 3, K, tau, C, L, calls))
        if cross:
            gs.append(Group(prefix + ".cross.q", 1, K, tau, C, L, calls))
            gs.append(Group(prefix + ".cross.kv", 2, K, tau, C, L, calls))
        if reader:
            gs.append(Group(prefix + ".reader.q", 1, K, tau, C, L, calls))
            gs.append(Group(prefix + ".reader.kv", 2, K, tau, C, S, calls))
        gs.append(Group(prefix + ".ffn.ml1", 1, K, tau, H, L, calls))
        gs.append(Group(prefix + ".ffn.ml2", 1, K, tau + e, C, L, calls))

    ndec = c["dec_layers"] if memformer else c["n_layers"]
    for layer in range(ndec):
        block("dec%d" % layer, 1, memformer, False)
    if memformer:
        for layer in range(c["enc_layers"]):
            block("enc%d" % layer, enc_calls, False, memory)
        if memory:
            gs.append(Group("writer.q", 1, K, tau, C, S, enc_calls))
            gs.append(Group("writer.kv", 2, K, tau, C, S + L, enc_calls))
    return gs


def distinct(bits, m):
    """Expected distinct buckets among m uniform lookups into 2^bits buckets."""
    R = float(1 << bits)
    return R * (1.0 - (1.0 - 1.0 / R) ** m)


def rank_blocks(streams, block, P):
    """Stream counts of the blocks of each rank: blocks of `block` streams (the last one
    shorter), dealt to ranks in contiguous runs, as memtrain's schedule deals them."""
    sizes = [min(block, streams - i) for i in range(0, streams, block)]
    n = len(sizes)
    return [sizes[n * r // P:n * (r + 1) // P] for r in range(P)]


def predict(c, P, hit_rate=None):
    """Bytes per rank per step: (uniform, calibrated or None, details dict)."""
    gs = model_groups(c)
    if P < 1:
        die("P must be at least 1")
    block = c.get("stream_block", 1)
    per_rank = rank_blocks(c["streams"], block, P)
    if min(len(b) for b in per_rank) == 0:
        die("streams = %d in blocks of %d are fewer blocks than %d ranks" % (c["streams"], block, P))
    T = c["horizon"]
    memory = c["arch"] == "memformer" and c["memory"] == "on"
    passes = max(len(b) for b in per_rank)
    # a block's fetch calls: one per group per forward call, per segment when the memory
    # makes segments sequential, once when the block's segments are one batch
    F = (T if memory else 1) * sum(g.calls for g in gs)
    exchanges = passes * (F + len(gs))
    header = HEADER_BYTES * (P - 1) * exchanges if gs else 0
    frac = (P - 1) / P
    fetch = push = keys = lookups = 0.0
    for blocks in per_rank:  # average over ranks
        B = sum(blocks)
        for g in gs:
            u = distinct(g.bits, T * B * g.rows)  # fetched once per step
            keys += g.K * u / P
            fetch += g.K * u * (KEY_BYTES + 4 * g.W) / P
            for nb in blocks:  # pushed once per block
                push += g.K * distinct(g.bits, T * nb * g.rows) * (KEY_BYTES + 4 * g.W) / P
            lookups += g.calls * T * B * g.rows * g.K / P
    uniform = header + frac * (fetch + push)
    calibrated = None
    if hit_rate is not None and keys > 0:
        # the log's hit rate: 1 - (remote rows fetched) / lookups
        scale = (1.0 - hit_rate) * lookups / (frac * keys) if frac > 0 else 1.0
        calibrated = header + frac * (fetch + push) * scale
    info = {"groups": gs, "exchanges": exchanges, "header": header, "keys": keys,
            "lookups": lookups, "tokens": T * c["seg_len"] * c["streams"] / P}
    return uniform, calibrated, info


def measured(path, skip):
    """Mean bytes_sent_per_rank and cache_hit_rate over the log windows after the first skip."""
    try:
        rows = list(csv.DictReader(open(path, encoding="utf-8")))
    except OSError as e:
        die("cannot read %s: %s" % (path, e.strerror))
    if not rows:
        die("%s has no log lines" % path)
    rows = rows[skip:] if len(rows) > skip else rows[-1:]
    b = sum(float(r["bytes_sent_per_rank"]) for r in rows) / len(rows)
    h = sum(float(r["cache_hit_rate"]) for r in rows) / len(rows)
    return b, h


def to_int(cfg, k):
    try:
        return int(cfg[k])
    except ValueError:
        die("%s = %s is not an integer" % (k, cfg[k]))


def resolve_config(args, extra):
    cfg = help_defaults(args.bin) if args.bin != "none" else {}
    known = set(cfg)
    if args.config:
        cfg.update(read_config(args.config))
    for a in extra:
        m = re.match(r"^--(\w+)=(.*)$", a)
        if not m:
            die("unexpected argument %r (memtrain keys are --key=value)" % a)
        if known and m.group(1) not in known:
            die("unknown key %s (see memtrain --help)" % m.group(1))
        cfg[m.group(1)] = m.group(2)
    missing = [k for k in NEEDED if k not in cfg]
    if missing:
        die("missing keys: %s (give them, or let --bin supply defaults)" % ", ".join(missing))
    c = dict(cfg)
    for k in NEEDED:
        if k not in ("arch", "proj", "memory", "bptt"):
            c[k] = to_int(cfg, k)
    return c


def main():
    ap = argparse.ArgumentParser(
        description="Predict row-exchange bytes per rank per step of memtrain "
                    "(see the module docstring for the formula).",
        epilog="Other --key=value arguments override memtrain config keys.")
    ap.add_argument("--config", help="memtrain config file (key = value lines)")
    ap.add_argument("--bin", default="build/bin/memtrain",
                    help="memtrain binary whose --help gives key defaults ('none': no defaults)")
    ap.add_argument("--ranks", default="1,2", help="comma-separated rank counts P")
    ap.add_argument("--per-rank-streams", type=int, default=0,
                    help="weak scaling: streams = this * P (overrides streams)")
    ap.add_argument("--metrics", help="metrics.csv of the run to compare with; {P} is replaced "
                                      "by the rank count")
    ap.add_argument("--skip-windows", type=int, default=1,
                    help="log windows of metrics.csv discarded as warm-up (default 1)")
    ap.add_argument("--format", choices=("text", "csv", "markdown"), default="text")
    ap.add_argument("--list-groups", action="store_true", help="print the hashed groups")
    args, extra = ap.parse_known_args()
    c = resolve_config(args, extra)
    try:
        ranks = [int(p) for p in args.ranks.split(",") if p]
    except ValueError:
        die("--ranks wants integers, e.g. 1,2,4")

    rows = []
    for P in ranks:
        cp = dict(c)
        if args.per_rank_streams > 0:
            cp["streams"] = args.per_rank_streams * P
        meas = hit = None
        if args.metrics:
            path = args.metrics.replace("{P}", str(P))
            if os.path.exists(path) or "{P}" not in args.metrics:
                meas, hit = measured(path, args.skip_windows)
        uni, cal, info = predict(cp, P, hit)
        rows.append((P, cp, uni, cal, meas, hit, info))

    if args.list_groups:
        info = rows[0][6]
        print("%-16s %4s %3s %4s %4s %5s %8s %5s" %
              ("group", "nout", "K", "bits", "OC", "W", "rows/seg", "calls"))
        for g in info["groups"]:
            print("%-16s %4d %3d %4d %4d %5d %8d %5d" %
                  (g.name, g.nout, g.K, g.bits, g.OC, g.W, g.rows, g.calls))
        print()

    def ratio(a, b):
        return a / b if (a is not None and b) else None

    def fmt(x, f="%.1f"):
        return "" if x is None else f % x

    if args.format == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["P", "streams", "tokens_per_rank", "pred_bytes_uniform",
                    "pred_bytes_calibrated", "measured_bytes", "cache_hit_rate"])
        for P, cp, uni, cal, meas, hit, info in rows:
            w.writerow([P, cp["streams"], "%.0f" % info["tokens"], "%.0f" % uni, fmt(cal, "%.0f"),
                        fmt(meas, "%.0f"), fmt(hit, "%.4f")])
    elif args.format == "text":
        print("%3s %7s %9s %14s %14s %14s %8s %8s" %
              ("P", "streams", "tok/rank", "uniform KiB", "calibr. KiB", "measured KiB",
               "uni/meas", "cal/meas"))
        for P, cp, uni, cal, meas, hit, info in rows:
            print("%3d %7d %9.0f %14.1f %14s %14s %8s %8s" %
                  (P, cp["streams"], info["tokens"], uni / 1024, fmt(cal and cal / 1024),
                   fmt(meas and meas / 1024), fmt(ratio(uni, meas), "%.2f"),
                   fmt(ratio(cal, meas), "%.2f")))
    else:
        print(markdown(c, args, rows, ratio, fmt))


def markdown(c, args, rows, ratio, fmt):
    gs = rows[0][6]["groups"]
    memory = c["arch"] == "memformer" and c["memory"] == "on"
    F = (c["horizon"] if memory else 1) * sum(g.calls for g in gs)
    shares = [info["header"] / uni for _, _, uni, _, _, _, info in rows if uni > 0]
    share = ("%.2f%%-%.2f%%" % (100 * min(shares), 100 * max(shares))) if shares else "none"
    weak = ("streams = %d x P" % args.per_rank_streams if args.per_rank_streams
            else "streams = %d" % c["streams"])
    out = [
        "### Communication volume per step",
        "",
        "Bytes a rank sends to the other ranks per optimizer step (the `sent KiB/rank/step` "
        "figure of the log):",
        "",
        "    B(P) = 12 (P-1) X + (P-1)/P * sum_g K_g (U_g + sum_b U_g,b) (8 + 4 W_g),"
        "    U_g = 2^b_g (1 - (1 - 2^-b_g)^m_g)",
        "",
        "- g: the hashed projection groups (%d for this model), each K_g = d_model/tau tables of "
        "2^b_g rows (b = tau, or tau + expand_bits for the memory block's ML2) with "
        "W_g = nout x OC floats per key." % len(gs),
        "- m_g: rows hashed per table per step on one rank: n = horizon x seg_len x streams/P "
        "for the decoder, encoder and memory-block groups, horizon x mem_slots x streams/P "
        "for the memory reader's k/v and the writer's q, horizon x (mem_slots + seg_len) x "
        "streams/P for the writer's k/v. The MRBP recompute finds its rows in the step's cache.",
        "- U_g: distinct keys of m_g lookups if buckets were uniform, each fetched once per step "
        "(8 B key + 4W B row); U_g,b the same over one block's streams, each pushed once per "
        "block (8 B key + 4W B gradient). Real buckets are skewed, so U_g overestimates.",
        "- (P-1)/P: the share of a rank's keys that live in tables owned by other ranks.",
        "- X = passes x (F + G) exchanges per step: per block of streams F = %d fetch calls "
        "(one per group per forward call) and G = %d pushes (one per group); each sends a "
        "12-byte header to every peer (%s of the uniform prediction here)." % (F, len(gs), share),
        "- Calibrated: the row bytes scaled to the remote keys measured through the log's "
        "fetch rate, (1 - hit) x lookups, alike for every group. It checks the byte "
        "accounting; the gap between uniform and measured is the bucket skew, which grows as "
        "training goes on.",
        "",
        "Measured: Fashion-MNIST demo model (`jobs/configs/demo.conf`, %s, %s), mean over the "
        "log windows after the first, from `jobs/scaling.sh`." %
        (weak, "horizon %d x seg_len %d" % (c["horizon"], c["seg_len"])),
        "",
        "| P | tokens/rank/step | uniform KiB | calibrated KiB | measured KiB | cache hit "
        "| uniform / measured | calibrated / measured |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for P, cp, uni, cal, meas, hit, info in rows:
        out.append("| %d | %.0f | %.1f | %s | %s | %s | %s | %s |" %
                   (P, info["tokens"], uni / 1024, fmt(cal and cal / 1024),
                    fmt(meas and meas / 1024), fmt(hit and 100 * hit, "%.1f%%"),
                    fmt(ratio(uni, meas), "%.2f"), fmt(ratio(cal, meas), "%.2f")))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
