"""Cost of the publish protocol (``data.publish``) against the former staging-folder swap.

Both contenders write the same files (a stage output of ``--files`` files × ``--kb`` KiB, shaped like a
shard folder) and make them the published version of a partition:

* baseline ``staging + rename``: the former protocol -- build a ``.staging-*`` sibling, rename the old
  folder to ``.trash-*``, rename the staging folder in, delete the trash (no fsync, no lock);
* ours ``publish()``: partition ``flock``, GC of leftovers, fresh ``versions/<v>/`` folder, fsync of every
  file and folder, atomic pointer replace, GC of the version before the previous.

The ratio is the price of the durability (fsync before the commit) and safety (lock, exact-name GC);
it shrinks as real stages spend their time decoding/encoding rather than writing.

    .venv/bin/python -m benchmarks.publish [--files 40] [--kb 256] [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from benchmarks.timing import median_time
from data import publish


def _fill(folder: Path, files: int, payload: bytes) -> None:
    for i in range(files):
        (folder / f"train-{i:06d}.tar").write_bytes(payload)
    (folder / "index.json").write_text("{}")


def staging_swap(final: Path, files: int, payload: bytes) -> None:
    """The former protocol (two renames, a window with no published folder)."""
    stage = final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:8]}"
    stage.mkdir(parents=True)
    _fill(stage, files, payload)
    trash = None
    if final.exists():
        trash = final.parent / f".trash-{final.name}-{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
    os.rename(stage, final)
    if trash is not None:
        shutil.rmtree(trash)


def versioned_publish(partition: Path, files: int, payload: bytes) -> None:
    with publish.publish(partition) as out:
        _fill(out, files, payload)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=40, help="files per stage output")
    ap.add_argument("--kb", type=int, default=256, help="KiB per file")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per contender (median)")
    args = ap.parse_args(argv)
    payload = os.urandom(args.kb * 1024)
    with tempfile.TemporaryDirectory(dir=os.environ.get("RDTF_BENCH_TMP")) as tmp:
        root = Path(tmp)
        base = median_time(lambda: staging_swap(root / "old" / "d1", args.files, payload), args.reps)
        ours = median_time(lambda: versioned_publish(root / "new" / "d1", args.files, payload), args.reps)
        versions = sorted(p.name for p in (root / "new" / "d1" / publish.VERSIONS).iterdir())
    mb = args.files * args.kb / 1024
    print(f"stage output: {args.files} files x {args.kb} KiB = {mb:.1f} MiB, median of {args.reps}")
    print(f"baseline  staging + rename (former protocol) : {base * 1e3:8.1f} ms  ({mb / base:,.0f} MiB/s)")
    print(f"ours      publish(): lock + fsync + pointer  : {ours * 1e3:8.1f} ms  ({mb / ours:,.0f} MiB/s)")
    print(f"ratio ours/baseline: {ours / base:.2f}x time (versions kept afterwards: {len(versions)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
