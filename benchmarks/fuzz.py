"""Fuzz benchmark: mutated stickers and caption tables through the real parsers; crashes, hangs, throughput.

The same harness as ``tests/data/test_fuzz.py`` (``tests/fuzz_harness.py``: one spawn worker per run, a crash
or a hang costs a worker restart) with seeded random mutations instead of Hypothesis, so any budget runs
and every failure is counted rather than the first one shrunk.

Baseline (measured in the same run, through the same worker): plain decode of the unmutated seeds, i.e. the
harness' per-example cost on well-formed input. The ratio says how much more (or less) a mutated example
costs than a clean one: near or below 1x means hostile bytes are rejected at least as cheaply as good ones
are decoded; well above 1x would point at a work amplification worth a look.

    .venv/bin/python -m benchmarks.fuzz --examples 2000 [--seed 0] [--hang-s 10]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections import Counter

from tests.fuzz_harness import (
    STICKER_FORMATS,
    TABLE_FORMATS,
    Runner,
    caption_case,
    decode_case,
    mutate,
    random_ops,
    random_rows,
    serialize_table,
    sticker_seeds,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=1000, help="mutated examples in all (3/4 stickers, 1/4 tables)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hang-s", type=float, default=10.0, help="per-example deadline; longer counts as a hang")
    ap.add_argument("--show", type=int, default=5, help="failures to print in full")
    ap.add_argument("--verbose", action="store_true", help="keep the decoders' stderr (one line per broken packet)")
    args = ap.parse_args()
    if args.examples < 1:
        ap.error("--examples must be >= 1")
    rng = random.Random(args.seed)
    seeds = sticker_seeds()
    n_tables = max(1, args.examples // 4)
    n_stickers = max(1, args.examples - n_tables)
    failures: list[tuple[str, str, str]] = []
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()

    with Runner(hang_s=args.hang_s, quiet=not args.verbose) as runner:
        runner.run(decode_case, seeds["gif"])  # start the worker (spawn + imports): not timed
        n_base = max(len(seeds), min(n_stickers, 500))
        t0 = time.perf_counter()
        for i in range(n_base):
            out = runner.run(decode_case, seeds[STICKER_FORMATS[i % len(STICKER_FORMATS)]])
            assert out.kind == "ok", out
        base_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        for i in range(n_stickers):
            fmt = STICKER_FORMATS[i % len(STICKER_FORMATS)]
            ops = random_ops(rng)
            out = runner.run(decode_case, mutate(seeds[fmt], ops, fmt))
            kinds[out.kind] += 1
            reasons[out.detail if out.kind in ("ok", "rejected") else out.kind] += 1
            if out.kind not in ("ok", "rejected"):
                failures.append((f"decode {fmt} ops={ops!r:.300}", out.kind, out.detail))
        fuzz_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        for i in range(n_tables):
            fmt = TABLE_FORMATS[i % len(TABLE_FORMATS)]
            ops = random_ops(rng, max_ops=2) if rng.random() < 0.5 else []
            out = runner.run(caption_case, mutate(serialize_table(random_rows(rng), fmt), ops, fmt), fmt)
            kinds[out.kind] += 1
            if out.kind != "ok":
                failures.append((f"captions {fmt} ops={ops!r:.200}", out.kind, out.detail))
        table_s = time.perf_counter() - t0
        restarts = runner.restarts

    crashes, hangs = sum(k == "crash" for _, k, _ in failures), sum(k == "hang" for _, k, _ in failures)
    base_rate, fuzz_rate, table_rate = n_base / base_s, n_stickers / fuzz_s, n_tables / table_s
    print(f"machine: {os.cpu_count()} cores; seed {args.seed}; per-example deadline {args.hang_s:g} s; "
          f"worker restarts {restarts}")
    print(f"baseline  plain decode of the {len(seeds)} unmutated seeds     : {n_base} examples in {base_s:.2f} s = "
          f"{base_rate:,.0f} examples/s")
    print(f"fuzz      mutated stickers (gif/webp/apng/mp4/webm)   : {n_stickers} examples in {fuzz_s:.2f} s = "
          f"{fuzz_rate:,.0f} examples/s")
    print(f"fuzz      caption tables (jsonl/csv/parquet)          : {n_tables} examples in {table_s:.2f} s = "
          f"{table_rate:,.0f} examples/s")
    print(f"RATIO fuzz/baseline decode examples/s                 : {fuzz_rate / base_rate:.2f}x")
    print(f"outcomes: {dict(sorted(kinds.items()))}; crashes {crashes}, hangs {hangs}")
    print(f"decode results: {dict(reasons.most_common())}")
    for what, kind, detail in failures[: args.show]:
        print(f"\n{kind.upper()}: {what}\n{detail}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
