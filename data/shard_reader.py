"""Reading shards for training and evaluation: the webdataset pipeline over shard URLs (node/worker split,
deterministic shard and sample shuffle), yielding ``data.shards.decode_sample`` dicts."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from data.shards import decode_sample


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
