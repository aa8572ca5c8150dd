#!/usr/bin/python3
"""Predicted against measured table traffic of memtrain runs.

The predictions are memtrain's own: `memtrain plan --csv` evaluates the cost model the
trainer plans with (trainer/tables/plan.c) for a config at any rank count. This script runs it
and puts each prediction beside the `bytes_sent_per_rank` a run measured (metrics.csv,
mean over the log windows after the first). The model, per hashed group g and rank:

  fetch      (P-1)/P K_g (U_g (8 + 4 W_g) + sum over blocks U_g,b (8 + 4 W_g))
             rows fetched once per step when the row budget keeps them (else for each
             call) and each block's gradient rows pushed once
  owner      per block of n tokens: n K (P-1)/P 8 B of buckets and scores, twice; the
             partial sums n W 4 B per shard owned elsewhere; the output gradient n W 4 B
             to each other owner; the score gradients n K (P-1)/P 4 B back
  replicate  one ring all-reduce of the group's gradient sums, 2 (P-1)/P R W 8 B
  + 12 B of counts (a row exchange's count, width and kind; a words exchange's count, mode
    and offset) to every peer per exchange

  U_g = 2^b_g (1 - (1 - 2^-b_g)^m_g), m_g the rows a rank hashes per table per step (U_g,b
  per block), W_g = nout x OC floats per key, K_g tables of 2^b_g rows. The planner picks,
  per group, the strategy with the fewest seconds (exchanges x net_latency_us + bytes /
  net_gbps; replicate also counts every rank's Adam over the whole group and the all-reduce's
  sum as memory traffic, and must win by a tenth). Real buckets are skewed, so the uniform
  U_g overestimates what fetch moves.

Usage:
  jobs/comm_model.py --config jobs/configs/memformer.conf --ranks 1,2,4
  jobs/comm_model.py --config jobs/configs/memformer.conf --per-rank-streams 4 \\
      --ranks 2,4,8 --metrics 'runs/scaling/weak-p{P}/metrics.csv' --format markdown
Other --key=value arguments are memtrain config keys.
"""
import argparse
import csv
import io
import os
import subprocess
import sys


def die(msg):
    sys.stderr.write("comm_model: %s\n" % msg)
    sys.exit(2)


def plan(binary, config, extra, ranks, per_rank):
    cmd = [binary, "plan", "--csv", "--ranks", ",".join(str(p) for p in ranks)]
    if config:
        cmd += ["--config", config]
    if per_rank > 0:
        cmd += ["--per-rank-streams", str(per_rank)]
    cmd += extra
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    except OSError as e:
        die("cannot run %s (%s); build memtrain first" % (binary, e))
    if out.returncode != 0:
        die("%s failed: %s" % (" ".join(cmd), (out.stderr or out.stdout).strip()[-400:]))
    lines = [l for l in out.stdout.splitlines() if "," in l]
    return {int(r["P"]): r for r in csv.DictReader(io.StringIO("\n".join(lines)))}


def measured(path, skip):
    """Mean bytes_sent_per_rank over the log windows after the first `skip`."""
    try:
        with open(path, encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if "bytes_sent_per_rank" not in (reader.fieldnames or []):
                die("%s is not a memtrain metrics.csv (no bytes_sent_per_rank column)" % path)
            rows = list(reader)
    except OSError as e:
        die("cannot read %s: %s" % (path, e.strerror))
    except (UnicodeDecodeError, csv.Error) as e:
        die("%s is not a memtrain metrics.csv (%s)" % (path, e))
    if not rows:
        die("%s has no log lines" % path)
    rows = rows[skip:] if len(rows) > skip else rows[-1:]
    try:
        return sum(float(r["bytes_sent_per_rank"]) for r in rows) / len(rows)
    except (TypeError, ValueError):
        die("%s: a bytes_sent_per_rank that is not a number" % path)


def main():
    ap = argparse.ArgumentParser(
        description="memtrain's predicted table traffic per rank and step (memtrain plan), "
                    "beside what runs measured.",
        epilog="Other --key=value arguments override memtrain config keys.")
    ap.add_argument("--config", help="memtrain config file (key = value lines)")
    # the build beside this script, whatever the working directory
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--bin", default=os.path.join(here, "build", "bin", "memtrain"),
                    help="the memtrain binary (default: the repository's build/bin/memtrain)")
    ap.add_argument("--ranks", default="1,2", help="comma-separated rank counts P")
    ap.add_argument("--per-rank-streams", type=int, default=0,
                    help="weak scaling: streams = this * P and stream_block = this")
    ap.add_argument("--metrics", help="metrics.csv of the run to compare with; {P} is replaced "
                                      "by the rank count")
    ap.add_argument("--skip-windows", type=int, default=1,
                    help="log windows of metrics.csv discarded as warm-up (default 1)")
    ap.add_argument("--format", choices=("text", "csv", "markdown"), default="text")
    args, extra = ap.parse_known_args()
    for a in extra:
        if not a.startswith("--") or "=" not in a:
            die("unexpected argument %r (memtrain keys are --key=value)" % a)
    try:
        ranks = [int(p) for p in args.ranks.split(",") if p]
    except ValueError:
        die("--ranks wants integers, e.g. 1,2,4")
    pred = plan(args.bin, args.config, extra, ranks, args.per_rank_streams)
    rows = []
    for P in ranks:
        r = pred[P]
        meas = None
        if args.metrics:
            path = args.metrics.replace("{P}", str(P))
            if os.path.exists(path) or "{P}" not in args.metrics:
                meas = measured(path, args.skip_windows)
        rows.append((P, r, float(r["bytes_per_rank"]), meas))

    fmt = lambda x, f="%.1f": "" if x is None else f % x
    ratio = lambda a, b: a / b if (a is not None and b) else None
    if args.format == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["P", "streams", "tokens_per_rank", "pred_bytes", "measured_bytes",
                    "exchanges", "strategies"])
        for P, r, b, meas in rows:
            w.writerow([P, r["streams"], r["tokens_per_rank"], "%.0f" % b, fmt(meas, "%.0f"),
                        r["exchanges"], "%s/%s/%s" % (r["fetch_groups"], r["owner_groups"],
                                                      r["replicate_groups"])])
    elif args.format == "text":
        print("%3s %7s %9s %14s %14s %9s %10s  %s" % ("P", "streams", "tok/rank", "predicted KiB",
              "measured KiB", "pred/meas", "exchanges", "fetch/owner/replicate"))
        for P, r, b, meas in rows:
            print("%3d %7s %9s %14.1f %14s %9s %10s  %s/%s/%s" % (
                P, r["streams"], r["tokens_per_rank"], b / 1024, fmt(meas and meas / 1024),
                fmt(ratio(b, meas), "%.2f"), r["exchanges"], r["fetch_groups"],
                r["owner_groups"], r["replicate_groups"]))
    else:
        print("| P | streams | tokens/rank/step | predicted KiB | measured KiB | predicted / "
              "measured | exchanges | groups fetch/owner/replicate | state MiB/rank |")
        print("|---:|---:|---:|---:|---:|---:|---:|---|---:|")
        for P, r, b, meas in rows:
            print("| %d | %s | %s | %.1f | %s | %s | %s | %s/%s/%s | %s |" % (
                P, r["streams"], r["tokens_per_rank"], b / 1024, fmt(meas and meas / 1024),
                fmt(ratio(b, meas), "%.2f"), r["exchanges"], r["fetch_groups"],
                r["owner_groups"], r["replicate_groups"], r["state_mib_per_rank"]))


if __name__ == "__main__":
    main()
