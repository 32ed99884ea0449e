"""benchmarks/shard_streaming.py: the CLI runs at tiny sizes on existing shards and prints its ratios."""

from __future__ import annotations

import os
import re

from benchmarks.shard_streaming import main


def test_main_prints_s3_over_local_ratios(tiny_shards, capsys):
    before = os.environ.get("AWS_ENDPOINT_URL")
    assert main(["--index", str(tiny_shards), "--reps", "1", "--block-kb", "16"]) == 0
    assert os.environ.get("AWS_ENDPOINT_URL") == before  # its own server's environment is undone
    out = capsys.readouterr().out
    assert "18 samples" in out and "(baseline)" in out
    for label in ("s3/local raw", "s3+cache_cold/local raw", "s3+cache_warm/local raw", "s3/local batch",
                  "s3+cache_warm/local batch"):
        m = re.search(rf"^RATIO {re.escape(label)} samples/s : ([\d.]+)$", out, re.M)
        assert m is not None and float(m.group(1)) > 0, label
