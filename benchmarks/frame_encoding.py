"""Frame-encoding benchmark for the training shards (``data.shards``): bytes and codec time per frame.

Training decodes every sample every epoch, so decode time per frame matters most; bytes per frame
(disk, page cache, network) matter second; encode time is paid once per drop. The frames are
synthetic but shaped like the real data: 256x256 flat-colour cartoon art -- a flat background,
outlined circles/polygons/rounded boxes and a text caption -- animated as short clips with small
motion between frames (the most common sticker has 2-8 frames).

Variants (every one is checked to round-trip bit-exactly):

* ``npy``         -- ``np.save`` of the whole (F, S, S, 3) clip, as ``data.shards`` stores it;
                     per-frame numbers are the clip's numbers divided by F.
* ``png-1``       -- one PNG per frame, ``compress_level=1``.
* ``png-6``       -- one PNG per frame, Pillow's default ``compress_level=6``.
* ``webp-m0``     -- one lossless WebP per frame, ``method=0`` (fastest encoder).
* ``webp-m4``     -- one lossless WebP per frame, Pillow's default ``method=4``.

``tar B/frame`` adds the 512-byte tar header and the padding to 512 bytes that each tar member
costs (one member per clip for npy, one per frame otherwise), i.e. the real shard footprint.

    .venv/bin/python -m benchmarks.frame_encoding [--frames 200] [--size 256] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CLIP_LEN = 8  # frames per synthetic clip; the median sticker has 2-8 frames
TAR_BLOCK = 512


def _palette(rng: np.random.Generator, n: int) -> list[tuple[int, int, int]]:
    # Saturated flat colours, as in cartoon stickers (not noise: noise would flatter npy).
    return [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(n)]


def make_clips(n_frames: int, size: int, seed: int) -> list[np.ndarray]:
    """Synthetic cartoon clips; each item is (F, size, size, 3) uint8 with F <= CLIP_LEN."""
    rng = np.random.default_rng(seed)
    # Drawn at 2x and downscaled with bicubic, like ingest resizes real stickers to S: edges are
    # anti-aliased ramps, not hard steps (hard steps would flatter PNG/WebP).
    big = 2 * size
    font = ImageFont.load_default(size=max(10, big // 10))
    clips: list[np.ndarray] = []
    left = n_frames
    while left > 0:
        f = min(CLIP_LEN, left)
        cols = _palette(rng, 8)
        bg = cols[0]
        # A handful of shapes per clip, each with its own small per-frame drift.
        shapes = []
        for _ in range(int(rng.integers(3, 7))):
            kind = str(rng.choice(["ellipse", "polygon", "rounded"]))
            cx, cy = rng.uniform(0.2, 0.8, 2) * big
            r = rng.uniform(0.08, 0.25) * big
            verts = int(rng.integers(3, 8))
            drift = rng.uniform(-0.02, 0.02, 2) * big
            shapes.append((kind, cx, cy, r, verts, drift, cols[int(rng.integers(1, 8))]))
        text = str(rng.choice(["HI!", "LOL", "OK", "wow", "yay", "BYE"]))
        frames = []
        for t in range(f):
            img = Image.new("RGB", (big, big), bg)
            draw = ImageDraw.Draw(img)
            for kind, cx, cy, r, verts, drift, col in shapes:
                x, y = cx + drift[0] * t, cy + drift[1] * t
                width = max(2, big // 64)  # dark outline, typical of sticker art
                if kind == "ellipse":
                    draw.ellipse(
                        (x - r, y - 0.8 * r, x + r, y + 0.8 * r), fill=col, outline=(20, 20, 20), width=width
                    )
                elif kind == "rounded":
                    draw.rounded_rectangle(
                        (x - r, y - 0.6 * r, x + r, y + 0.6 * r),
                        radius=r / 3,
                        fill=col,
                        outline=(20, 20, 20),
                        width=width,
                    )
                else:
                    rot = 0.15 * t
                    pts = [
                        (
                            x + r * math.cos(rot + 2 * math.pi * k / verts),
                            y + r * math.sin(rot + 2 * math.pi * k / verts),
                        )
                        for k in range(verts)
                    ]
                    draw.polygon(pts, fill=col, outline=(20, 20, 20), width=width)
            draw.text(
                (big * 0.1, big * 0.78 + 4 * t),
                text,
                fill=(255, 255, 255),
                font=font,
                stroke_width=4,
                stroke_fill=(0, 0, 0),
            )
            frames.append(np.asarray(img.resize((size, size), Image.Resampling.BICUBIC)))
        clips.append(np.stack(frames))  # (f, size, size, 3)
        left -= f
    return clips


def _tar_bytes(n: int) -> int:
    return TAR_BLOCK + TAR_BLOCK * math.ceil(n / TAR_BLOCK)


def _pil_encode(fmt: str, **kw) -> Callable[[np.ndarray], bytes]:
    def enc(image: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, fmt, **kw)
        return buf.getvalue()

    return enc


def _pil_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        if im.mode != "RGB":
            im = im.convert("RGB")
        return np.asarray(im)


def _npy_encode(clip: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, clip, allow_pickle=False)
    return buf.getvalue()


def _npy_decode(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


CODECS: dict[str, Callable[[np.ndarray], bytes]] = {
    "png-1": _pil_encode("PNG", compress_level=1),
    "png-6": _pil_encode("PNG"),
    "webp-m0": _pil_encode("WEBP", lossless=True, method=0),
    "webp-m4": _pil_encode("WEBP", lossless=True),
}


def _units(clip: np.ndarray, layout: str) -> list[np.ndarray]:
    """What one tar member holds: a single frame, or the whole clip stacked vertically."""
    if layout == "frame":
        return list(clip)
    return [clip.reshape(-1, clip.shape[2], 3)]  # (F*S, S, 3)


def measure(n_frames: int = 200, size: int = 256, seed: int = 0) -> list[dict]:
    """One row per variant: mean bytes, tar bytes, encode ms and decode ms per frame."""
    clips = make_clips(n_frames, size, seed)
    total = sum(len(c) for c in clips)
    variants: list[tuple[str, Callable, Callable, str]] = [("npy", _npy_encode, _npy_decode, "clip")]
    for layout in ("frame", "strip"):
        for name, enc in CODECS.items():
            variants.append((f"{name}/{layout}", enc, _pil_decode, layout))
    rows = []
    for name, enc, dec, layout in variants:
        enc_t = dec_t = 0.0
        nbytes = tarb = 0
        for clip in clips:
            units = [clip] if layout == "clip" else _units(clip, layout)
            for unit in units:
                t0 = time.perf_counter()
                data = enc(unit)
                t1 = time.perf_counter()
                back = dec(data)
                t2 = time.perf_counter()
                assert np.array_equal(back, unit), f"{name} is not lossless"
                enc_t, dec_t = enc_t + t1 - t0, dec_t + t2 - t1
                nbytes, tarb = nbytes + len(data), tarb + _tar_bytes(len(data))
        rows.append(
            {
                "encoding": name,
                "frames": total,
                "bytes_per_frame": nbytes / total,
                "tar_bytes_per_frame": tarb / total,
                "encode_ms": 1e3 * enc_t / total,
                "decode_ms": 1e3 * dec_t / total,
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    raw = rows[0]["bytes_per_frame"] if rows and rows[0]["encoding"] == "npy" else None
    lines = [
        "| encoding        | B/frame | tar B/frame | vs npy | encode ms | decode ms |",
        "|-----------------|--------:|------------:|-------:|----------:|----------:|",
    ]
    for r in rows:
        ratio = f"{raw / r['tar_bytes_per_frame']:.1f}x" if raw else "-"
        lines.append(
            f"| {r['encoding']:<15} | {r['bytes_per_frame']:>7.0f} | {r['tar_bytes_per_frame']:>11.0f} | {ratio:>6} "
            f"| {r['encode_ms']:>9.2f} | {r['decode_ms']:>9.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="take the per-variant median over this many runs")
    a = ap.parse_args()
    runs = [measure(a.frames, a.size, a.seed) for _ in range(a.repeat)]
    rows = []
    for i, r in enumerate(runs[0]):
        med = dict(r)
        for k in ("encode_ms", "decode_ms"):
            med[k] = statistics.median(run[i][k] for run in runs)
        rows.append(med)
    print(f"{a.frames} frames of {a.size}x{a.size} flat-colour cartoon art (clips of <= {CLIP_LEN})")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
