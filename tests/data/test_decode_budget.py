"""Decompression work bombs: a per-sticker decode budget so no single file can stall a drop.

Observed defect: a ~3 KB GIF with a 4096x4096 canvas and 127 frames (each frame a 1x1 patch, so its LZW data
is a few bytes) passed the pixel limits of the time (max_frame_pixels 4096^2, max_total_pixels 2^31) and cost
about a minute of CPU: every frame composites and resizes the whole 16 Mpx canvas. Now the total work
(canvas pixels x frames) is capped from the header *and* counted while decoding, and every sticker has a
wall-time limit (decode_timeout_s) enforced in the worker, with the parent killing a worker that is stuck
where no signal reaches.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from assets.ingest import IngestConfig
from data import ingest, publish
from data.decode_budget import WorkMeter, deadline
from data.drops import CaptionRow, CaptionStatus
from data.ingest import IngestSettings, _Task, ingest_drop, process_one
from data.media import DecodeLimits, decode_sticker
from data.rejects import RejectReason, StickerRejected
from data.synthetic import make_drop
from tests.conftest import SMALL
from tests.data.media_files import GREEN, RED, build_gif


def work_bomb_gif(side: int = 4096, n_frames: int = 127) -> bytes:
    """A GIF whose logical screen is side x side and whose frames are 1x1 patches: ~24 bytes per frame."""
    s = side.to_bytes(2, "little")
    out = bytearray(b"GIF89a" + s + s + bytes([0x80, 0, 0]) + bytes([0, 0, 0, 255, 255, 255]))
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for i in range(n_frames):
        out += b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # graphic control: 100 ms, no disposal
        out += b"\x2c" + bytes(4) + (1).to_bytes(2, "little") * 2 + b"\x00"  # 1x1 image at (0, 0)
        codes = 4 | ((i % 2) << 3) | (5 << 6)  # LZW (min code size 2): clear, one pixel, end
        out += b"\x02\x02" + codes.to_bytes(2, "little") + b"\x00"
    return bytes(out + b"\x3b")


def _task(data: bytes, sid: str = "s") -> _Task:
    row = CaptionRow(sid, sid, f"{sid}.gif", "", CaptionStatus.OK, 1)
    return _Task(row, f"memory://x/{sid}.gif", data)


def test_gif_work_bomb_4096sq_x127_frames_is_rejected_fast():
    data = work_bomb_gif()
    assert len(data) < 4000
    t0 = time.perf_counter()
    with pytest.raises(StickerRejected) as info:
        decode_sticker(data, size=64)
    assert info.value.reason is RejectReason.PIXEL_LIMIT and "max_total_pixels" in info.value.message
    res = process_one(_task(data), IngestSettings(size=64, workers=1))
    assert res["reason"] == RejectReason.PIXEL_LIMIT.value
    assert time.perf_counter() - t0 < 20


def test_default_work_cap_is_512_frames_at_1024sq():
    assert DecodeLimits().max_total_pixels == 512 * 1024 * 1024
    assert IngestConfig().settings().limits == DecodeLimits()


def test_decode_work_is_counted_while_decoding_when_the_header_understates_it():
    # An 8x8 logical screen whose later frames lie at (2000, 2000): Pillow grows the canvas to 2001x2001, so the
    # header's 8 * 8 * 20 px understates the work 5000-fold.
    frames = [{"idx": np.zeros((8, 8), np.uint8), "disposal": 1}]
    frames += [{"idx": np.full((1, 1), i % 2, np.uint8), "x": 2000, "y": 2000, "disposal": 1} for i in range(1, 20)]
    data = build_gif(8, 8, [RED, GREEN], frames)
    limits = DecodeLimits(max_total_pixels=10_000_000)
    with pytest.raises(StickerRejected) as info:
        decode_sticker(data, size=32, limits=limits)
    assert info.value.reason is RejectReason.PIXEL_LIMIT and "while decoding" in info.value.message
    assert decode_sticker(data, size=32).frames.shape[0] == 20  # within the default cap it decodes


def test_work_meter_counts_frames_as_they_are_decoded():
    meter = WorkMeter(limit=100)
    meter.charge(60)
    with pytest.raises(StickerRejected) as info:
        meter.charge(60)
    assert info.value.reason is RejectReason.PIXEL_LIMIT and "2 frames" in info.value.message


def test_slow_sticker_hits_decode_timeout():
    data = work_bomb_gif(4096, 30)  # 4096^2 x 30 = 503 Mpx: under the default cap, seconds of CPU
    t0 = time.perf_counter()
    res = process_one(_task(data), IngestSettings(size=64, workers=1, decode_timeout_s=0.5))
    assert res["reason"] == RejectReason.DECODE_TIMEOUT.value, res
    assert "decode_timeout_s=0.5" in res["message"]
    assert time.perf_counter() - t0 < 20


def test_deadline_restores_an_outer_timer_and_passes_fast_work():
    import signal

    seen = []
    old = signal.signal(signal.SIGALRM, lambda *a: seen.append("outer"))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.6)
        with deadline(5.0, "x"):
            time.sleep(0.05)
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0.3  # the outer alarm is still armed
        with pytest.raises(StickerRejected) as info, deadline(0.1, "decode_timeout_s=0.1"):
            time.sleep(2)
        assert info.value.reason is RejectReason.DECODE_TIMEOUT
        time.sleep(0.8)
        assert seen == ["outer"]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def bomb_drop(tmp_path_factory):
    drop = tmp_path_factory.mktemp("bombs") / "bomb-drop"
    make_drop(str(drop), n=6, seed=21, cfg=SMALL, progress=False)
    (drop / "slow.gif").write_bytes(work_bomb_gif(4096, 30))
    (drop / "bomb.gif").write_bytes(work_bomb_gif(4096, 127))
    with open(drop / "captions.jsonl", "a") as fh:
        for sid in ("slow", "bomb"):
            fh.write(json.dumps({"id": sid, "file": f"{sid}.gif", "caption": "a work bomb"}) + "\n")
    yield drop
    shutil.rmtree(drop)


@pytest.mark.timeout(180)
def test_work_bombs_in_a_drop_cost_bounded_time_with_workers(bomb_drop, tmp_path):
    t0 = time.perf_counter()
    report = ingest_drop(str(bomb_drop), tmp_path / bomb_drop.name,
                         IngestSettings(size=32, workers=2, decode_timeout_s=1.0), progress=False)
    quar = pq.read_table(publish.current(tmp_path / bomb_drop.name) / "quarantine.parquet").to_pandas()
    assert dict(zip(quar.id, quar.reason)) == {"slow": "decode_timeout", "bomb": "pixel_limit"}
    assert report.n_ingested == 6
    assert time.perf_counter() - t0 < 60


def _stuck_in_native_code(task, settings):
    """Worker hook: one sticker never returns and no signal handler runs (like a hang inside a C decoder)."""
    import signal

    if task.row.id == "stuck":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(3600)
    return process_one(task, settings)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_worker_stuck_where_no_signal_reaches_is_killed_and_only_its_sticker_quarantined(bomb_drop, tmp_path,
                                                                                          monkeypatch):
    drop = tmp_path / "stuck-drop"
    shutil.copytree(bomb_drop, drop)
    rows = [json.loads(line) for line in (drop / "captions.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["id"] not in ("slow", "bomb")]
    rows[1]["id"] = "stuck"
    (drop / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(ingest, "_process_in_worker", _stuck_in_native_code)
    monkeypatch.setattr(ingest, "_HARD_GRACE_S", 3.0)
    report = ingest_drop(str(drop), tmp_path / "out" / drop.name,
                         IngestSettings(size=32, workers=2, decode_timeout_s=1.0), progress=False)
    quar = pq.read_table(publish.current(tmp_path / "out" / drop.name) / "quarantine.parquet").to_pandas()
    assert list(quar.id) == ["stuck"] and quar.reason[0] == RejectReason.DECODE_TIMEOUT.value
    assert "killed" in quar.message[0]
    assert report.n_ingested == 5


def test_new_limits_are_validated_and_exposed_in_run_config():
    with pytest.raises(ValueError, match="decode_timeout_s"):
        IngestSettings(decode_timeout_s=-1)
    cfg = IngestConfig(decode_timeout_s=5.0, max_total_pixels=1 << 20, max_caption_bytes=1 << 20)
    s = cfg.settings()
    assert s.decode_timeout_s == 5.0 and s.limits.max_total_pixels == 1 << 20 and s.max_caption_bytes == 1 << 20
    for name in ("decode_timeout_s", "max_caption_bytes", "max_total_pixels"):
        assert IngestConfig.model_fields[name].description
