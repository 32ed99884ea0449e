"""benchmarks/table8.py (Table 8 inference-time protocol): the CLI at toy sizes, parameter matching, options."""

from __future__ import annotations

import re

import pytest

from benchmarks.table8 import BENCH_PRESETS, Table8Config, main, match_unet3d


def test_main_prints_params_and_ratio_at_tiny_sizes(capsys):
    assert main(["--preset", "tiny", "--device", "cpu", "--image-size", "64", "--frames", "4",
                 "--text-tokens", "8", "--reps", "1"]) == 0
    out = capsys.readouterr().out
    assert "latent 1x4x4x8x8" in out and "input 1x4x8x8x8" in out
    n_d, n_u = (float(x) for x in re.search(r"DFGN\s+([\d.]+) M\s+UNet3DConditionModel\s+([\d.]+) M", out).groups())
    assert n_u == pytest.approx(n_d, rel=0.05)  # matched parameter count (Table 8 compares sizes too)
    ratio = re.search(r"^RATIO DFGN/UNet3D fp32: ([\d.]+)", out, re.M)
    assert ratio is not None and float(ratio.group(1)) > 0


def test_unet3d_is_matched_to_the_paper_preset():
    cfg = BENCH_PRESETS["paper"]()
    target = 935_789_168  # DFGN paper preset (Table 8: 0.96 B)
    widths, n = match_unet3d(cfg, target, heads=8, tolerance=0.05)
    assert len(widths) == 4 and abs(n / target - 1) <= 0.05
    with pytest.raises(ValueError, match="within 0%"):
        match_unet3d(cfg, target, heads=8, tolerance=1e-9)


def test_config_names_allowed_values():
    with pytest.raises(ValueError, match="paper_slim"):
        Table8Config(preset="tiny_pixel")  # pixel space: not Table 8's latent U-Net
    with pytest.raises(ValueError, match="fp32"):
        Table8Config(precisions=("fp16",))
    with pytest.raises(ValueError, match="multiple of 8"):
        Table8Config(image_size=100)
