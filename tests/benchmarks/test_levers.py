"""benchmarks/levers.py runs on a CPU: every uncompiled lever timed against its same-run baseline, MFU printed."""

from __future__ import annotations

import json

from benchmarks.levers import main


def test_levers_benchmark_smoke_on_cpu(tmp_path, capsys):
    out = tmp_path / "levers.json"
    assert main(["--device", "cpu", "--preset", "micro_pixel", "--batch", "1", "--steps", "1", "--sample-steps", "1",
                 "--sections", "train,sample", "--no-compile", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "matmul peak" in text and "the MFU denominator" in text
    res = json.loads(out.read_text())
    names = [r["variant"] for r in res["train"]["rows"]]
    assert names[0].startswith("baseline") and "+ channels_last" in names and "all + checkpointing (attention)" not in names
    assert all(0 < r["mfu"] < 1.5 and r["samples_per_s"] > 0 for r in res["train"]["rows"])
    assert res["train"]["flops_per_sample"] > 0
    samples = [r["variant"] for r in res["sample"]["rows"]]
    assert samples[0].startswith("baseline") and "+ bf16 U-Net and VAE decode" in samples
    assert text.count("RATIO") >= len(names) + len(samples)
