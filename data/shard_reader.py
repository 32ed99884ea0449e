"""Reading shards for training and evaluation, all through webdataset.

* :func:`make_dataset` (evaluation, ablation summaries): the stock ``wds.WebDataset`` pipeline over shard URLs
  (node/worker split, deterministic shard and sample shuffle), yielding ``data.shards.decode_sample`` dicts.
* :class:`ShardOpener` + :func:`read_shards`: the raw-sample stages of the training stream
  (``data.loader.TrainStream``), which brings its own shard order and shuffle (keyed by resume stream, not by
  webdataset's worker id) and must count -- never raise on -- broken shards.

Opening a shard URL: local paths, ``file://`` and ``pipe:`` go through webdataset's ``gopen``; every other URL
(``s3://``, ``gs://``, ``az://``, ``memory://``, anything fsspec knows) through fsspec, because the lake is an
fsspec URL (``data.storage``) and gopen would shell out to CLIs (``gsutil``, ``curl``) that neither take the
lake's ``AWS_*`` environment nor exist in the training image. Object reads use fsspec's read-ahead cache: the tar
reader asks for 10 KiB records, each miss fetches ``block_bytes`` in one ranged GET.

With a cache folder, webdataset's ``FileCache`` copies each object-store shard there on its first read
(download to a temp name, then ``os.rename``: concurrent workers never see a partial copy) and every later read
of that URL opens the local copy. Shard URLs name immutable bytes (``data.publish`` writes each version to a
fresh ``versions/<v>/`` folder), so the URL alone is the cache key; local shards are read in place.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
from collections.abc import Callable, Iterable, Iterator
from typing import IO
from urllib.parse import urlsplit

from data.shards import decode_sample
from data.storage import url_fs


class _SampleShuffle:
    """Buffer shuffle seeded per (seed, rank, worker, epoch) when iteration starts, i.e. inside the
    worker: wds ``shuffle(seed=...)`` gives every worker the same stream, repeated every epoch."""

    def __init__(self, bufsize: int, seed: int):
        self.bufsize, self.seed, self.epoch = bufsize, seed, -1

    def __call__(self, src: Iterator[dict]) -> Iterator[dict]:
        from webdataset.utils import pytorch_worker_info

        self.epoch += 1
        rank, _, worker, _ = pytorch_worker_info()
        rng = random.Random(f"{self.seed}-{rank}-{worker}-{self.epoch}")
        buf: list[dict] = []
        for item in src:
            if len(buf) < self.bufsize:
                buf.append(item)
                continue
            i = rng.randrange(len(buf))
            buf[i], item = item, buf[i]
            yield item
        rng.shuffle(buf)
        yield from buf
def make_dataset(
    urls: list[str],
    *,
    shuffle: int = 0,
    seed: int = 0,
    nodesplitter: Callable | None = None,
    workersplitter: Callable | None = None,
):
    """webdataset pipeline over ``urls`` yielding ``decode_sample`` dicts.

    ``nodesplitter``/``workersplitter`` default to ``wds.split_by_node`` / ``wds.split_by_worker``:
    shard i goes to rank ``i % world_size``, then to worker ``j % num_workers`` of that rank's
    list. Pass ``lambda src: src`` to disable either (e.g. every rank evaluating everything).
    ``shuffle > 0`` shuffles shard order (deterministic in seed + epoch) and samples through a
    ``shuffle``-sized buffer; ``shuffle == 0`` reads shards and samples in order. The epoch
    counters live in each worker's copy of the pipeline: use ``persistent_workers=True`` (or
    rebuild with ``seed=seed + epoch``) or every epoch repeats the first one's order.
    """
    import webdataset as wds

    urls = list(urls)
    if not urls:
        raise ValueError("make_dataset: no shard urls (empty split or no indexes?)")
    register_fsspec_schemes(urls)  # object-store shards (evaluation reads the lake's test split from there too)
    ds = wds.WebDataset(
        urls,
        shardshuffle=len(urls) if shuffle > 0 else False,
        detshuffle=True,
        seed=seed,
        nodesplitter=nodesplitter or wds.split_by_node,
        workersplitter=workersplitter or wds.split_by_worker,
        empty_check=False,  # more workers than shards is legal: the extra ones yield nothing
    )
    if shuffle > 0:
        ds = ds.compose(_SampleShuffle(shuffle, seed))
    return ds.map(decode_sample)


# --- training stream: opening shards and expanding them into raw samples -----------------------------------------


def register_fsspec_schemes(urls: Iterable[str], block_bytes: int = 8 << 20) -> None:
    """Route webdataset's ``gopen`` for the object-store schemes among ``urls`` to fsspec (process-global)."""
    from webdataset.gopen import gopen_schemes

    for scheme in {u.split("://", 1)[0].lower() for u in urls if uses_fsspec(u)}:
        gopen_schemes[scheme] = functools.partial(_gopen_fsspec, block_bytes=block_bytes)


def uses_fsspec(url: str) -> bool:
    """True for URLs opened by fsspec (object stores); local paths, ``file://`` and ``pipe:`` go to gopen."""
    return "://" in url and not url.lower().startswith("file://")


def _open_fsspec(url: str, block_bytes: int) -> IO[bytes]:
    # url_fs (fsspec.core.url_to_fs with the lake's options), not fsspec.open(url, block_size=...): fsspec.open
    # hands extra kwargs to the filesystem constructor (s3fs would pass them on to botocore), fs.open to the file
    fs, path = url_fs(url)
    return fs.open(path, "rb", block_size=block_bytes, cache_type="readahead")


def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, *, block_bytes: int, **_: object) -> IO[bytes]:
    """gopen handler for object-store schemes (``FileCache`` downloads through ``gopen.gopen``)."""
    if mode != "rb":
        raise ValueError(f"{url}: shards are read-only here (mode {mode!r})")
    return _open_fsspec(url, block_bytes)


def cache_name(url: str) -> str:
    """Flat, unique file name of ``url``'s cached copy: many drops and versions all hold ``train-000000.tar``
    (webdataset's default name, the URL's last path part, would make them collide)."""
    base = os.path.basename(urlsplit(url).path) or "shard"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:20]}-{base}"


class ShardOpener:
    """``url -> {"url", "stream"[, "local_path"]}`` for ``tar_file_expander``; see module doc."""

    def __init__(self, block_bytes: int, cache_dir: str = ""):
        self.block_bytes = block_bytes
        self.cache = None
        if cache_dir:
            from webdataset.cache import FileCache

            os.makedirs(cache_dir, exist_ok=True)
            # validator=None: a shard's bytes are checked by the tar reader, which counts a broken one and goes on;
            # the copy is byte-identical to the object, so a bad copy can only mirror a bad object
            self.cache = FileCache(cache_dir, url_to_name=cache_name, validator=None)

    def __call__(self, url: str) -> dict:
        if self.cache is not None:
            if uses_fsspec(url):
                # FileCache downloads with gopen.gopen(url): route this scheme to fsspec (process-global; every
                # opener of a process registers the same function, only the read-ahead size may differ)
                register_fsspec_schemes([url], self.block_bytes)
            local = self.cache.get_file(url)  # local urls: their own path, nothing copied
            return {"url": url, "stream": open(local, "rb"), "local_path": local}  # noqa: SIM115 - closed by read_shards
        if uses_fsspec(url):
            return {"url": url, "stream": _open_fsspec(url, self.block_bytes)}
        from webdataset.gopen import gopen

        return {"url": url, "stream": gopen(url, "rb")}


class _Errors(list):
    """A webdataset handler that records the error and tells the stage to go on."""

    def __call__(self, exn: Exception) -> bool:
        self.append(exn)
        return True


def read_shards(
    shards: Iterable[dict],
    open_shard: Callable[[str], dict],
    on_broken: Callable[[], None],
    max_barren: int,
) -> Iterator[dict]:
    """Raw samples (``__key__``, ``__url__``, lower-cased suffix -> bytes) of each ``{"url": ...}`` in ``shards``.

    webdataset's ``tar_file_expander`` + ``group_by_keys`` (key = member name up to the first dot), one shard at
    a time so that a shard that fails to open or breaks mid-way is counted once (``on_broken``) and skipped:
    its last sample (maybe partial) is dropped, the samples before it are kept. ``RuntimeError`` after more
    than ``max_barren`` shards in a row gave no sample (all data corrupt or unreachable?).
    """
    from webdataset.tariterators import group_by_keys, tar_file_expander

    barren = 0
    for item in shards:
        url = item["url"]
        errors, got = _Errors(), 0
        try:
            source = open_shard(url)
        except Exception as exn:  # noqa: BLE001 - an unreadable shard is skipped and counted, never fatal
            errors(exn)
        else:
            try:
                files = tar_file_expander(iter([source]), handler=errors, eof_value=None)
                held = None  # one sample behind: the last one is only known complete once the shard ends cleanly
                for sample in group_by_keys(files, handler=errors):
                    if held is not None:
                        yield held
                        got += 1
                    held = sample
                if held is not None and not errors:
                    yield held
                    got += 1
            finally:
                source["stream"].close()
        if errors:
            on_broken()
        barren = 0 if got else barren + 1
        if barren > max_barren:
            raise RuntimeError(f"{barren} shards in a row gave no sample (last {url}: {errors[-1] if errors else 'empty'})")
