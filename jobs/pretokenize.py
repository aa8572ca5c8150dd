#!/usr/bin/python3
"""Pre-tokenises text into the little-endian uint16 token files memtrain reads (data = u16:PATH:V).

    python3 jobs/pretokenize.py train.txt --out runs/tok/train.u16 --vocab 1024
    python3 jobs/pretokenize.py held-out.txt --out runs/tok/val.u16 --merges runs/tok/train.u16.merges.json
    mpirun -np 2 build/bin/memtrain --data=u16:runs/tok/train.u16:1024 --vocab=1024 \\
        --val_data=u16:runs/tok/val.u16:1024 --run_dir=runs/tok

Tokens are bytes (0..255) and, with --vocab V > 256, V - 256 byte-pair merges learned from the
input: words (a run of non-space bytes with the space before it, or a run of spaces) are
counted, and the most frequent adjacent pair over all words is merged, again and again, as in
GPT-2's tokenizer. The merges are written to OUT.merges.json (token 256 + i is merge i), and
--merges FILE encodes another file (a validation split) with the same ones. Files are
concatenated in the order given; memtrain cuts a token file into documents of 65536 tokens.
memtrain's `sample` prints bytes, so it shows tokens >= 256 of such a model as '?': decode
them with the merges file.
"""
import argparse
import collections
import json
import os
import re
import sys
from array import array

WORD = re.compile(rb" ?[^\s]+|\s+")


def learn(counts, merges_wanted):
    """Byte-pair merges over a word -> count table; returns [(a, b), ...], new token 256 + i."""
    words = {w: list(w) for w in counts}
    merges = []
    for i in range(merges_wanted):
        pairs = collections.Counter()
        for w, toks in words.items():
            c = counts[w]
            for a, b in zip(toks, toks[1:]):
                pairs[a, b] += c
        if not pairs:
            break
        # the most frequent pair, ties to the smallest: the same merges on every machine
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        new = 256 + i
        merges.append((a, b))
        for w, toks in words.items():
            if len(toks) < 2:
                continue
            out, j = [], 0
            while j < len(toks):
                if j + 1 < len(toks) and toks[j] == a and toks[j + 1] == b:
                    out.append(new)
                    j += 2
                else:
                    out.append(toks[j])
                    j += 1
            words[w] = out
    return merges


def encoder(merges):
    rank = {tuple(p): 256 + i for i, p in enumerate(merges)}
    cache = {}

    def encode(word):
        toks = cache.get(word)
        if toks is not None:
            return toks
        toks = list(word)
        while len(toks) > 1:
            # the earliest learned merge present, applied everywhere, as learning did
            best = min((rank.get(p, 1 << 30), p) for p in zip(toks, toks[1:]))
            if best[0] == 1 << 30:
                break
            a, b = best[1]
            out, j = [], 0
            while j < len(toks):
                if j + 1 < len(toks) and toks[j] == a and toks[j + 1] == b:
                    out.append(best[0])
                    j += 2
                else:
                    out.append(toks[j])
                    j += 1
            toks = out
        cache[word] = toks
        return toks

    return encode


class Parser(argparse.ArgumentParser):
    """argparse with its refusals in one line, like memtrain's own."""

    def error(self, message):
        sys.exit("pretokenize: %s (see --help)" % message)


def main():
    ap = Parser(description=__doc__.split("\n")[0])
    ap.add_argument("inputs", nargs="+", help="text files, concatenated in this order")
    ap.add_argument("--out", required=True, help="the uint16 token file to write")
    ap.add_argument("--vocab", type=int, default=None,
                    help="256 (bytes) to 65536: bytes plus vocab - 256 learned merges (default 256)")
    ap.add_argument("--merges", help="encode with the merges of this JSON file instead of learning")
    args = ap.parse_args()
    if args.merges and args.vocab is not None:  # the merges file sets the vocabulary
        sys.exit("pretokenize: --vocab with --merges: the vocabulary is the merges file's "
                 "(256 + its merges); leave --vocab out")
    if args.vocab is None:
        args.vocab = 256
    if not 256 <= args.vocab <= 65536:
        sys.exit("pretokenize: --vocab = %d: expected 256..65536" % args.vocab)
    # every input and the output's place checked before anything is written
    out_dir = os.path.dirname(args.out) or "."
    if os.path.isdir(args.out):
        sys.exit("pretokenize: --out %s is a directory: give a file name" % args.out)
    if not os.path.isdir(out_dir):
        sys.exit("pretokenize: --out %s: its directory %s does not exist" % (args.out, out_dir))
    # never over a file: an input, the merges, another run's tokens
    writes = [args.out] + ([] if args.merges else [args.out + ".merges.json"])
    for w in writes:
        if os.path.lexists(w):
            sys.exit("pretokenize: %s exists: choose another --out or remove it" % w)
    for p in args.inputs + ([args.merges] if args.merges else []):  # a FIFO or a device
        if os.path.exists(p) and not os.path.isfile(p):           # would block or never end
            sys.exit("pretokenize: %s: not a regular file" % p)
    # 65,280 merges of two 5-digit tokens take about 1 MiB of JSON
    if args.merges and os.path.isfile(args.merges) and os.path.getsize(args.merges) > 4 << 20:
        sys.exit("pretokenize: --merges %s: not a merges file of this tool (%d bytes; a whole "
                 "vocabulary's merges take about 1 MiB)" % (args.merges, os.path.getsize(args.merges)))
    try:
        data = b"".join(open(p, "rb").read() for p in args.inputs)
    except OSError as e:
        sys.exit("pretokenize: %s: %s" % (e.filename, e.strerror))
    words = WORD.findall(data)
    if not data.strip():
        sys.exit("pretokenize: %s: no text to tokenize (%d bytes, white space at most)"
                 % (" ".join(args.inputs), len(data)))
    if args.merges:
        try:
            with open(args.merges) as f:
                merges = [tuple(p) for p in json.load(f)]
            # merge i makes token 256 + i from two tokens made before it
            if not all(len(p) == 2 and all(type(t) is int and 0 <= t < 256 + i for t in p)
                       for i, p in enumerate(merges)) or len(merges) > 65536 - 256:
                raise ValueError("not a list of token pairs, each of tokens made before it")
        except OSError as e:
            sys.exit("pretokenize: --merges %s: %s" % (args.merges, e.strerror))
        except RecursionError:
            sys.exit("pretokenize: --merges %s: not a merges file of this tool (nested too "
                     "deeply)" % args.merges)
        except (ValueError, TypeError) as e:
            sys.exit("pretokenize: --merges %s: not a merges file of this tool (%s)"
                     % (args.merges, str(e).splitlines()[0][:80]))
    else:
        merges = learn(collections.Counter(words), args.vocab - 256)
    vocab = 256 + len(merges)
    encode = encoder(merges)
    toks = array("H")
    for w in words:
        toks.extend(encode(w))
    if sys.byteorder != "little":
        toks.byteswap()
    # each file whole or not at all: written under a temporary name, then linked into place
    # (never over a file that appeared meanwhile); a failed write (a full disk) leaves nothing
    files = [(args.out, lambda f: toks.tofile(f))]
    if not args.merges:
        files.append((args.out + ".merges.json", lambda f: f.write(json.dumps(merges).encode())))
    done, path = [], args.out
    try:
        for path, write in files:
            tmp = "%s.%d.tmp" % (path, os.getpid())
            try:
                with open(tmp, "xb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
                os.link(tmp, path)
                done.append(path)
            finally:
                if os.path.lexists(tmp):
                    os.unlink(tmp)
    except OSError as e:
        for written in done:  # path stays the one that failed
            try:
                os.unlink(written)
            except OSError:
                pass
        sys.exit("pretokenize: %s: cannot write (%s): nothing written" % (path, e.strerror or e))
    # with another file's merges this is usually that run's validation text
    use = "score with --val_data" if args.merges else "train with --data"
    try:
        print("pretokenize: %d bytes -> %d tokens (vocab %d) in %s; %s=u16:%s:%d --vocab=%d"
              % (len(data), len(toks), vocab, args.out, use, args.out, vocab, vocab), flush=True)
    except OSError as e:  # the files are written; only this line was lost
        sys.stdout = None  # nothing more to flush at exit
        sys.exit("pretokenize: standard output: %s (%s is written)" % (e.strerror or e, args.out))


if __name__ == "__main__":
    main()
