"""Shard streaming: the training stream's samples/s from the loopback S3 server against the same shards on disk.

Every contender reads the same shards with the same ``DataConfig`` (``shard_sampling=split``, no shuffle:
one epoch = every train shard exactly once) through ``data.loader.TrainStream``:

* baseline ``local``: the shards on local disk (webdataset ``gopen``);
* ``s3``: the same files uploaded to a loopback S3 server (``pipelines.s3_server``, moto), read through fsspec
  with ``--block-kb`` read-ahead (one ranged GET per block);
* ``s3 + cache cold``: the first epoch through an empty ``cache_dir`` (download each shard, then read the copy);
* ``s3 + cache warm``: a later epoch, served from the filled ``cache_dir``.

start-up: ``TrainStream(cfg)`` = ``validate_indexes`` (index reads; one listing per shard folder on S3);
(a) raw samples (the webdataset pipeline up to grouped tar members; nothing decoded): the I/O path alone;
(b) full batches (probe, decode, k draw, resize, collate; one process): what training sees.

Every RATIO is samples/s of the contender ÷ samples/s of ``local`` measured in the same run (1.00 = as fast as
local disk). moto is a single Python process on 127.0.0.1: its per-request overhead stands in for an object
store's latency, not for its bandwidth, so treat (a)'s s3 ratio as the cost of the request path, not a forecast.

    .venv/bin/python -m benchmarks.shard_streaming [--n 48] [--per-shard 6] [--block-kb 8192] [--reps 9]
    .venv/bin/python -m benchmarks.shard_streaming --index path/to/index.json   # existing shards, nothing built
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from data.loader import DataConfig, TrainStream, _Tally
from data.shards import read_index


def _build(tmp: Path, n: int, per_shard: int, size: int) -> Path:
    from data.embed import EmbedSettings
    from data.ingest import IngestSettings
    from data.splits import SplitConfig
    from data.stages import run_data_stages
    from data.synthetic import make_drop
    from model.clip import tiny_spec

    make_drop(str(tmp / "drops" / "b"), n=n, seed=0, progress=False)
    return run_data_stages(str(tmp / "drops" / "b"), tmp / "lake", "b", ingest=IngestSettings(size=size, workers=1),
                           embed=EmbedSettings(clip=tiny_spec(batch_size=32), num_workers=0),
                           split=SplitConfig(max_test_fraction=0.2), max_count=per_shard)


def _upload(index: Path, url: str) -> str:
    from upath import UPath

    for f in sorted(index.parent.iterdir()):
        if f.is_file():
            dest = UPath(f"{url}/{f.name}")
            dest.fs.put_file(str(f), dest.path)
    return f"{url}/{index.name}"


def _raw_epoch(stream: TrainStream, n: int) -> None:
    tally = _Tally()
    raw = stream._raw(0, 1, tally)
    for _ in range(n):
        next(raw)
    if tally.n:
        raise RuntimeError(f"{tally.n} broken shard(s) while benchmarking {stream.cfg.index_paths[0]}")


def _batches(stream: TrainStream, n: int) -> None:
    it = iter(stream)
    for _ in range(-(-n // stream.cfg.batch_size)):
        next(it)


def _interleaved(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median wall time of each fn (seconds) after one warm-up each, the contenders taking turns every
    repetition: epochs here are milliseconds, so load from other processes drifting over the run would
    otherwise favour whichever contender ran in the quiet part."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


Seconds = dict[str, float]  # contender -> median seconds


def _measure(args: argparse.Namespace, tmp: Path, index: Path, n: int, url: str) -> tuple[Seconds, Seconds, Seconds]:
    """Upload ``index``'s folder to ``url``; (raw epoch, batch epoch, start-up) median seconds per contender."""
    remote = _upload(index, url)
    base = dict(shard_sampling="split", shuffle_buffer=0, image_size=32, batch_size=4,
                read_block_bytes=args.block_kb << 10)
    cfg = {"local": DataConfig(index_paths=(str(index),), **base), "s3": DataConfig(index_paths=(remote,), **base)}
    # start-up (validate_indexes: index reads + shard sizes) is timed on its own; the epochs below time reading
    start = _interleaved({name: lambda c=c: TrainStream(c) for name, c in cfg.items()}, args.reps)
    stream = {name: TrainStream(c) for name, c in cfg.items()}
    stream["s3 + cache warm"] = TrainStream(DataConfig(index_paths=(remote,), cache_dir=str(tmp / "warm"), **base))
    colds = iter([TrainStream(DataConfig(index_paths=(remote,), cache_dir=str(tmp / f"cold{i}"), **base))
                  for i in range(args.reps + 1)])  # a fresh, empty cache folder for every cold epoch
    raw = _interleaved({**{name: lambda s=s: _raw_epoch(s, n) for name, s in stream.items()},  # warm-up fills "warm"
                        "s3 + cache cold": lambda: _raw_epoch(next(colds), n)}, args.reps)
    full = {} if args.no_batches else _interleaved(
        {name: lambda s=s: _batches(s, n) for name, s in stream.items()}, args.reps)
    return raw, full, start


def _label(name: str) -> str:
    return name.replace(" + cache ", "+cache_")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, help="existing shard index.json (default: build a synthetic drop)")
    ap.add_argument("--n", type=int, default=48, help="stickers in the synthetic drop")
    ap.add_argument("--per-shard", type=int, default=6, help="samples per shard of the synthetic drop")
    ap.add_argument("--size", type=int, default=128, help="stored frame size of the synthetic drop")
    ap.add_argument("--block-kb", type=int, default=8192, help="DataConfig.read_block_bytes, KiB")
    ap.add_argument("--reps", type=int, default=9, help="timed epochs per contender (median; contenders alternate)")
    ap.add_argument("--no-batches", action="store_true", help="skip (b), the full batch pipeline")
    args = ap.parse_args(argv)

    import s3fs

    from pipelines.s3_server import start_s3_server

    with tempfile.TemporaryDirectory(dir=os.environ.get("RDTF_BENCH_TMP")) as tmp_s, start_s3_server("bench") as s3:
        tmp = Path(tmp_s)
        index = args.index or _build(tmp, args.n, args.per_shard, args.size)
        doc = read_index(index)
        train = [s for s in doc["shards"] if s["split"] == "train"]
        n, mib = sum(s["count"] for s in train), sum(s["bytes"] for s in train) / 2**20
        saved = {k: os.environ.get(k) for k in s3.env()}
        os.environ.update(s3.env())  # undone below: the server is gone when this ends
        s3fs.S3FileSystem.clear_instance_cache()  # fsspec caches instances by arguments, not by environment
        try:
            raw, full, start = _measure(args, tmp, index, n, s3.url("lake", "shards", "b"))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            s3fs.S3FileSystem.clear_instance_cache()

    print(f"shards: {len(train)} train shards, {n} samples, {mib:.2f} MiB; read-ahead {args.block_kb} KiB; "
          f"median of {args.reps} epoch(s); {os.cpu_count()} cores")
    print(f"start-up (TrainStream: validate_indexes): local {start['local'] * 1e3:.1f} ms, "
          f"s3 {start['s3'] * 1e3:.1f} ms")
    print("(a) raw samples (webdataset pipeline, nothing decoded)")
    for name in ("local", "s3", "s3 + cache cold", "s3 + cache warm"):
        t = raw[name]
        print(f"    {name:<16}: {n / t:9.1f} samples/s  {mib / t:8.2f} MiB/s" + ("  (baseline)" if name == "local" else ""))
    for name in ("s3", "s3 + cache cold", "s3 + cache warm"):
        print(f"RATIO {_label(name)}/local raw samples/s : {raw['local'] / raw[name]:.3f}")
    if full:
        print("(b) full batches (probe + decode + resize, one process)")
        for name, t in full.items():
            print(f"    {name:<16}: {n / t:9.1f} samples/s" + ("  (baseline)" if name == "local" else ""))
        for name in ("s3", "s3 + cache warm"):
            print(f"RATIO {_label(name)}/local batch samples/s : {full['local'] / full[name]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
