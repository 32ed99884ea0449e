"""benchmarks/capacity.py: the projection is linear and consistent, the table is complete, the CLI runs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import pytest

from benchmarks import capacity as cap
from tests.helpers import ROOT


def _rows(**kw) -> dict[tuple[str, str], cap.Row]:
    return {(r.stage, r.device): r for r in cap.plan_rows(cap.Plan(frames_per_sticker=8.0, **kw))}


def test_doubling_workers_halves_wall_time_and_keeps_cost():
    base, cpu2, gpu2 = _rows(), _rows(cpu_workers=128), _rows(gpus=16)
    for key, r in base.items():
        if r.workers_label == "64 cores":  # stages on --cpu-workers (evaluation runs in one 16-core pod)
            assert cpu2[key].wall_s == pytest.approx(r.wall_s / 2)
            assert cpu2[key].cost == pytest.approx(r.cost)
        if r.device == "GPU" and r.workers_label.startswith("8 "):  # stages on --gpus (eval runs on 1 GPU)
            assert gpu2[key].wall_s == pytest.approx(r.wall_s / 2)
            assert gpu2[key].cost == pytest.approx(r.cost)
    assert gpu2[("eval: FVD", "GPU")].wall_s == pytest.approx(base[("eval: FVD", "GPU")].wall_s)
    assert cpu2[("eval: FVD", "CPU")].wall_s == pytest.approx(base[("eval: FVD", "CPU")].wall_s)
    assert sum(r.workers_label == "64 cores" for r in base.values()) >= 4


def test_storage_is_stickers_times_frames_times_bytes():
    p = cap.Plan(stickers=1000, frames_per_sticker=10.0)
    rows = {(r.stage, r.device): r for r in cap.plan_rows(p)}
    assert rows[("shards", "CPU")].storage == pytest.approx(1000 * 10 * cap.BYTES["shard_frame"].value)
    assert rows[("ingest", "CPU")].storage == pytest.approx(1000 * 10 * cap.BYTES["lake_frame"].value)
    assert rows[("embeddings", "GPU")].storage == pytest.approx(1000 * 10 * cap.BYTES["embedding_frame"].value)
    assert rows[("clusters + split", "CPU")].storage == pytest.approx(1000 * cap.BYTES["cluster_sticker"].value)
    assert rows[("training", "GPU")].storage == pytest.approx(2 * 0.936e9 * 16)  # 2 checkpoints, 16 B/param
    # 512 px: four times the pixels -> four times the frame bytes and ingest/shard work per frame
    big = {(r.stage, r.device): r for r in cap.plan_rows(dataclasses.replace(p, size=512))}
    assert big[("shards", "CPU")].storage == pytest.approx(4 * rows[("shards", "CPU")].storage)
    assert big[("ingest", "CPU")].wall_s == pytest.approx(4 * rows[("ingest", "CPU")].wall_s)


def test_work_scales_with_corpus_and_wall_is_work_over_rate():
    a, b = _rows(), {(r.stage, r.device): r for r in cap.plan_rows(cap.Plan(stickers=3_600_000, frames_per_sticker=8.0))}
    for key in [("ingest", "CPU"), ("embeddings", "GPU"), ("shards", "CPU")]:
        assert b[key].work == pytest.approx(2 * a[key].work) and b[key].wall_s == pytest.approx(2 * a[key].wall_s)
    for r in a.values():
        assert r.wall_s == pytest.approx(r.work / (r.rate * r.workers))
        assert r.cost == pytest.approx(r.wall_s / 3600 * r.workers * r.price_hour)
    # training and evaluation do not depend on the corpus size (fixed sample budget / 500 test stickers)
    assert b[("training", "GPU")].wall_s == pytest.approx(a[("training", "GPU")].wall_s)
    assert b[("eval: FVD", "GPU")].work == a[("eval: FVD", "GPU")].work == 4 * 500 + 500


def test_training_inputs_are_consistent():
    p = cap.Plan(frames_per_sticker=8.0)
    f = cap.FLOPS
    assert 2.8 < f["dfgn_train"].value / f["dfgn_fwd"].value < 3.2  # backward ~ 2x forward
    assert cap.PAPER_TRAIN["steps"] * cap.PAPER_TRAIN["gpus"] == p.train_samples == 800_000
    for b in cap.H200_TRAIN:  # the VAE encoder only ever slows a sample down
        assert cap.h200_train_rate(p, b) < cap.H200_TRAIN[b][0]
    assert cap.h200_mfu(p, 16) == pytest.approx(f["dfgn_train"].value * cap.H200_TRAIN[16][0] / 989e12)
    assert 0 < cap.h200_mfu(p, 32) < 1
    rows = _rows()
    assert rows[("training", "CPU")].wall_s > 100 * rows[("training", "GPU")].wall_s
    with pytest.raises(ValueError):
        cap.Plan(train_batch=8)  # not a measured batch size
    with pytest.raises(ValueError):
        cap.Plan(gpus=0)
    with pytest.raises(ValueError):
        cap.Plan(gpu_scaling=1.5)


def test_gpu_embeddings_are_bounded_by_the_host_feed():
    few, many = _rows(host_cores_per_gpu=1), _rows(host_cores_per_gpu=1000)
    prep, tower = cap.RECORDED["clip_prep_fps_core"].value, cap.RECORDED["h200_embed_fps"].value
    assert few[("embeddings", "GPU")].rate == pytest.approx(prep)
    assert many[("embeddings", "GPU")].rate == pytest.approx(tower)


def test_synthetic_frames_mean_follows_the_generator():
    m = cap.synthetic_frames_mean()
    assert 6 < m < 12  # lognormal(1.4, 1.1) tail + 2, capped at 120 (paper Fig. 2 shape)
    assert cap.Plan().fps == pytest.approx(m)
    assert cap.Plan(frames_per_sticker=5.0).fps == 5.0


def test_markdown_table_lists_every_stage_with_sources():
    p = cap.Plan(frames_per_sticker=8.0)
    rows = cap.plan_rows(p)
    md = cap.render_markdown(p, rows)
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| stage | device |")
    stages = {ln.split(" | ")[0][2:].removesuffix(" (alt.)") for ln in lines[1:]}
    assert set(cap.STAGES) <= stages
    assert any(ln.startswith("| **total**") for ln in lines)
    n_sources = len({r.source for r in rows})
    assert all(f"[{i}] " in md for i in range(1, n_sources + 1))
    assert {r.stage for r in rows if r.in_plan} == set(cap.STAGES)  # one counted row per stage
    tot = cap.totals(rows)
    assert tot["stages"] == len(cap.STAGES)
    assert tot["cost"] == pytest.approx(sum(r.cost for r in rows if r.in_plan))


def test_cli_default_mode_is_fast_and_prints_the_plan():
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "benchmarks.capacity"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert time.perf_counter() - t0 < 10
    assert "TOTAL" in out and "training" in out and "README benchmark table" in out
    md = subprocess.run([sys.executable, "-m", "benchmarks.capacity", "--markdown", "--gpus", "16", "--cpu-workers", "32"],
                        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "| **total**" in md and "16 H200" in md and "32 cores" in md
    rows = json.loads(subprocess.run([sys.executable, "-m", "benchmarks.capacity", "--json"], cwd=ROOT,
                                     capture_output=True, text=True, check=True).stdout)
    assert {r["stage"] for r in rows} >= set(cap.STAGES)


def test_scale_out_doc_has_the_current_table():
    """docs/scale-out.md shows the table this script prints (regenerate with --markdown after changing inputs)."""
    p = cap.Plan()
    table = [ln for ln in cap.render_markdown(p, cap.plan_rows(p)).splitlines() if ln.startswith("| ")]
    doc = (ROOT / "docs" / "scale-out.md").read_text()
    assert all(ln in doc for ln in table)
