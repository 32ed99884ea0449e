"""Tests for data/export.py (files decoded back with Pillow) and the ``generate`` CLI's error paths.

The CLI runs in a subprocess, as a user would run it, so exit codes and stderr are the real ones.
The end-to-end generation test uses a random-init checkpoint (``tests.helpers.tiny_checkpoint``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.export import contact_sheet, key_out, save_animation
from data.media import decode_sticker
from tests.helpers import ROOT

F, S = 5, 24


def _frames() -> np.ndarray:
    """(F, S, S, 3): white background with a coloured square moving right, so no two frames are equal
    (the encoders merge identical consecutive frames)."""
    out = np.full((F, S, S, 3), 255, np.uint8)
    for i in range(F):
        out[i, 8:16, 2 + 3 * i : 10 + 3 * i] = (200, 30 + 40 * i, 60)
    return out


def _pil_frames(path: Path) -> tuple[list[np.ndarray], list[int]]:
    """Pillow's composited RGBA frames and per-frame durations."""
    frames, durations = [], []
    with Image.open(path) as im:
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGBA")))
            durations.append(im.info["duration"])
    return frames, durations


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".png"])
def test_frame_count_and_durations(tmp_path, suffix):
    durations = [40, 80, 120, 60, 200]
    path = save_animation(_frames(), durations, tmp_path / f"s{suffix}")
    frames, got = _pil_frames(path)
    assert len(frames) == F and got == durations
    dec = decode_sticker(path.read_bytes(), size=S)
    assert dec.frames.shape == (F, S, S, 3) and dec.durations_ms == durations
    if suffix != ".gif":  # lossless formats round-trip exactly
        np.testing.assert_array_equal(dec.frames, _frames())


def test_single_duration_and_gif_rounding(tmp_path):
    _, got = _pil_frames(save_animation(_frames(), 70, tmp_path / "a.webp"))
    assert got == [70] * F
    _, got = _pil_frames(save_animation(_frames(), [44, 46, 5, 100, 1001], tmp_path / "a.gif"))
    assert got == [40, 50, 20, 100, 1000]  # nearest 10 ms, floor 20 ms (browsers slow <= 10 ms)


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".png"])
def test_transparent_key(tmp_path, suffix):
    frames = _frames()
    frames[:, 0, 0] = (250, 252, 249)  # near-white: within the default tolerance 8
    frames[:, 0, 1] = (240, 240, 240)  # light grey: outside it, stays opaque
    path = save_animation(frames, 100, tmp_path / f"t{suffix}", transparent_key=(255, 255, 255))
    decoded, _ = _pil_frames(path)
    for src, got in zip(frames, decoded):
        white = (np.abs(src.astype(int) - 255).max(axis=2) <= 8)  # (S, S)
        assert (got[..., 3][white] == 0).all() and (got[..., 3][~white] == 255).all()
        np.testing.assert_array_equal(got[..., :3][~white], src[~white])
    # without a key every pixel is opaque
    decoded, _ = _pil_frames(save_animation(frames, 100, tmp_path / f"o{suffix}"))
    assert all((f[..., 3] == 255).all() for f in decoded)


def test_key_out_tolerance():
    frames = np.array([[[[0, 0, 0], [3, 0, 0], [5, 0, 0]]]], np.uint8)  # (1, 1, 3, 3)
    assert key_out(frames, (0, 0, 0), tolerance=3)[0, 0, :, 3].tolist() == [0, 0, 255]
    with pytest.raises(ValueError):
        key_out(frames, (0, 0), tolerance=3)


def test_atomic_write_leaves_no_temp_and_replaces(tmp_path):
    path = tmp_path / "sub" / "x.gif"
    save_animation(_frames(), 100, path)
    save_animation(_frames()[:3], 100, path)  # overwrite in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.gif"]
    assert Image.open(path).n_frames == 3
    with pytest.raises(ValueError):  # bad durations fail before anything is written
        save_animation(_frames(), [100], tmp_path / "y.gif")
    assert not (tmp_path / "y.gif").exists()


def test_bad_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.gif, \.webp, \.png"):
        save_animation(_frames(), 100, tmp_path / "x.mp4")
    with pytest.raises(ValueError):
        save_animation(_frames()[0], 100, tmp_path / "x.gif")  # (H, W, 3): not a clip
    assert list(tmp_path.iterdir()) == []


def test_contact_sheet_grid(tmp_path):
    frames = _frames()
    path = contact_sheet(frames, tmp_path / "sheet.png", pad=4)
    with Image.open(path) as im:
        sheet = np.asarray(im.convert("RGB"))
    cols, rows = 3, 2  # ceil(sqrt(5)) = 3 columns
    assert sheet.shape == (rows * S + (rows + 1) * 4, cols * S + (cols + 1) * 4, 3)
    # tile 4 (row 1, col 1): the bottom-right corner is away from the index label
    y, x = 4 + 1 * (S + 4), 4 + 1 * (S + 4)
    np.testing.assert_array_equal(sheet[y + 12 :, x + 12 : x + S][:S - 12], frames[4, 12:, 12:])
    with Image.open(contact_sheet(frames, tmp_path / "row.png", cols=5, pad=0, label="hi")) as im:
        assert im.width == 5 * S and im.height > S  # caption strip on top
    with pytest.raises(ValueError):
        contact_sheet(frames, tmp_path / "sheet.jpg")


# --------------------------------------------------------------------------- CLI


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipelines.generate_cli", "generate", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _png(path: Path, colour=(255, 0, 0)) -> Path:
    Image.new("RGB", (20, 10), colour).save(path)
    return path


def _ckpt(tmp_path: Path) -> Path:
    """An empty folder given as --checkpoint, beside (not around) the --out file: an output inside it is refused."""
    (tmp_path / "ckpt").mkdir(exist_ok=True)
    return tmp_path / "ckpt"


def test_cli_missing_checkpoint(tmp_path):
    r = _cli("--checkpoint", str(tmp_path / "nope"), "--prompt", "cat", "--out", str(tmp_path / "x.gif"))
    assert r.returncode == 2
    assert "rdtf generate: error:" in r.stderr and "nope" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.gif").exists()


def test_cli_unreadable_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("this is not a png")
    r = _cli("--checkpoint", str(_ckpt(tmp_path)), "--image", str(bad), "--out", str(tmp_path / "x.gif"))
    assert r.returncode == 2
    assert "cannot read image" in r.stderr and "bad.png" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("task,n", [("interpolate", 1), ("predict_forward", 0), ("generate", 2)])
def test_cli_wrong_frame_count(tmp_path, task, n):
    frames = ",".join(str(_png(tmp_path / f"f{i}.png")) for i in range(n))
    args = ["--checkpoint", str(_ckpt(tmp_path)), "--task", task, "--out", str(tmp_path / "x.gif")]
    r = _cli(*args, *(["--frames", frames] if frames else []))
    assert r.returncode == 2 and "known frames" in r.stderr and "Traceback" not in r.stderr


def test_cli_image_only_task_refuses_a_prompt_and_needs_one_image(tmp_path):
    img = _png(tmp_path / "a.png")
    r = _cli("--checkpoint", str(_ckpt(tmp_path)), "--task", "generate_image", "--image", str(img), "--prompt", "cat",
             "--out", str(tmp_path / "x.gif"))
    assert r.returncode == 2 and "image-only" in r.stderr and "Traceback" not in r.stderr
    r = _cli("--checkpoint", str(_ckpt(tmp_path)), "--task", "generate_image", "--out", str(tmp_path / "x.gif"))
    assert r.returncode == 2 and "exactly 1 known frames" in r.stderr


def test_cli_bad_out_suffix(tmp_path):
    r = _cli("--checkpoint", str(_ckpt(tmp_path)), "--out", str(tmp_path / "x.mp4"))
    assert r.returncode == 2 and ".gif" in r.stderr


def test_cli_not_a_checkpoint(tmp_path, capsys):
    from pipelines.generate_cli import main

    assert main(["generate", "--checkpoint", str(_ckpt(tmp_path)), "--out", str(tmp_path / "x.gif")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rdtf generate: error:") and "not an RDTF checkpoint" in err


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, capsys):
    """image&text -> GIF with a random-init tiny checkpoint, 2 DDIM steps. In-process (``main``), as the
    subprocess tests above already cover ``python -m``: this saves a second torch import."""
    from pipelines.generate_cli import main
    from tests.helpers import tiny_checkpoint

    tiny_checkpoint(tmp_path / "run")  # a training-run folder: the CLI resolves its latest checkpoint
    first = tmp_path / "first.jpg"
    Image.new("RGB", (40, 20), (0, 120, 255)).save(first)  # non-square, non-PNG: resized and padded
    out, sheet = tmp_path / "out.gif", tmp_path / "sheet.png"
    rc = main(["generate", "--checkpoint", str(tmp_path / "run"), "--prompt", "a waving cat", "--image", str(first),
               "--steps", "2", "--duration-ms", "80", "--transparent", "--out", str(out),
               "--contact-sheet", str(sheet), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert str(out) in captured.out and "80 ms" in captured.out
    with Image.open(out) as im:
        assert im.n_frames >= 2 and im.info["duration"] == 80
    with Image.open(sheet) as im:
        assert im.format == "PNG"
