"""Writing generated stickers to disk: animated GIF / WebP / APNG files and PNG contact sheets.

Why a separate module: the sampler returns ``(F, H, W, 3)`` RGB frames on the white background the
model was trained on (``data.media.decode_sticker`` composites alpha onto white), but a sticker is
only useful as a file a messenger or browser can show, ideally with its background transparent
again. This module is that last step, shared by the ``rdtf generate`` CLI and the Dagster/MLflow
preview assets:

* ``save_animation`` picks the container from the suffix and encodes with
  ``data.media_encode.encode_animated`` (deterministic: same frames -> same bytes). Optional
  colour keying turns pixels near the background colour transparent. The file is written to a
  temporary sibling and renamed into place, so a crash or a concurrent reader (a sensor watching
  the folder) never sees half a file.
* ``contact_sheet`` lays all frames out in one PNG grid: a single still image is what MLflow
  artifacts and Dagster metadata previews render well, and it shows every frame at once.

Format caveats (inherited from the formats and encoders, see ``encode_animated``): GIF delays are
stored in 10 ms units and browsers play delays <= 10 ms at 100 ms, so GIF durations are rounded to
the nearest 10 ms with a floor of 20 ms; GIF alpha is 1 bit; all three encoders merge *identical
consecutive* frames into one frame with the summed duration (the playback is unchanged).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data.atomic import atomic_write
from data.media import MediaFormat
from data.media_encode import encode_animated

__all__ = ["ALLOWED_SUFFIXES", "contact_sheet", "encode_sticker", "key_out", "save_animation"]

ALLOWED_SUFFIXES: dict[str, MediaFormat] = {
    ".gif": MediaFormat.GIF,
    ".webp": MediaFormat.WEBP,
    ".png": MediaFormat.APNG,  # animated PNG; browsers show it, and it keeps 8-bit alpha
}
_GIF_TICK_MS = 10
_GIF_MIN_MS = 20  # browsers replace GIF delays of 0-10 ms by 100 ms; 20 ms is the fastest honoured


def _check_frames(frames: np.ndarray) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3 or arr.shape[0] < 1:
        raise ValueError(f"expected (F, H, W, 3) uint8 frames with F >= 1, got {arr.shape} {arr.dtype}")
    return arr


def _durations(durations_ms: Sequence[int] | int, n: int, fmt: MediaFormat) -> list[int]:
    if isinstance(durations_ms, int | np.integer):
        durations = [int(durations_ms)] * n
    else:
        durations = [int(d) for d in durations_ms]
    if len(durations) != n:
        raise ValueError(f"got {len(durations)} durations for {n} frames")
    if any(d <= 0 for d in durations):
        raise ValueError(f"durations must be positive, got {durations}")
    if fmt is MediaFormat.GIF:
        # Round here rather than letting Pillow truncate (it floors to 10 ms units).
        durations = [max(_GIF_MIN_MS, _GIF_TICK_MS * round(d / _GIF_TICK_MS)) for d in durations]
    return durations


def key_out(frames: np.ndarray, key: Sequence[int], tolerance: int = 8) -> np.ndarray:
    """``(F, H, W, 3)`` -> ``(F, H, W, 4)``: alpha 0 where every channel is within ``tolerance`` of ``key``.

    Per-channel (Chebyshev) distance, so "white within 8" means every channel >= 247: the slightly
    off-white pixels a diffusion model produces on a white background go, light colours stay.
    """
    arr = _check_frames(frames)
    if len(key) != 3 or not all(0 <= int(c) <= 255 for c in key):
        raise ValueError(f"transparent_key must be 3 ints in 0..255, got {key!r}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    diff = np.abs(arr.astype(np.int16) - np.asarray(key, np.int16))  # (F, H, W, 3)
    background = diff.max(axis=3) <= tolerance  # (F, H, W)
    alpha = np.where(background, 0, 255).astype(np.uint8)[..., None]  # (F, H, W, 1)
    return np.concatenate([arr, alpha], axis=3)


def encode_sticker(
    frames: np.ndarray,
    durations_ms: Sequence[int] | int,
    suffix: str,
    *,
    transparent_key: tuple[int, int, int] | None = None,
    tolerance: int = 8,
    loop: int = 0,
) -> bytes:
    """The bytes :func:`save_animation` writes, for a container named by its suffix (``.gif``, ``gif``, ``.webp``…).

    In memory, for callers that answer with bytes (the MLflow model's ``predict``) instead of writing a file.
    """
    fmt = ALLOWED_SUFFIXES.get(("." + suffix.lower().lstrip(".")) if suffix else "")
    if fmt is None:
        raise ValueError(f"unsupported sticker format {suffix!r}; use one of {', '.join(ALLOWED_SUFFIXES)}")
    arr = _check_frames(frames)
    durations = _durations(durations_ms, arr.shape[0], fmt)
    out = key_out(arr, transparent_key, tolerance) if transparent_key is not None else arr  # (F, H, W, 3|4)
    return encode_animated(list(out), durations, fmt, loop=loop)


def save_animation(
    frames: np.ndarray,
    durations_ms: Sequence[int] | int,
    path: str | Path,
    *,
    transparent_key: tuple[int, int, int] | None = None,
    tolerance: int = 8,
    loop: int = 0,
) -> Path:
    """Write ``(F, H, W, 3)`` uint8 frames as ``.gif``, ``.webp`` (lossless) or ``.png`` (APNG).

    ``durations_ms`` is one int for all frames or one per frame (GIF: rounded to 10 ms, >= 20 ms).
    With ``transparent_key`` (e.g. ``(255, 255, 255)``, the training background) pixels within
    ``tolerance`` of it per channel become fully transparent. ``loop=0`` loops forever. Returns the path.
    """
    path = Path(path)
    atomic_write(path, encode_sticker(frames, durations_ms, path.suffix, transparent_key=transparent_key,
                                      tolerance=tolerance, loop=loop))
    return path


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:  # Pillow >= 10.1 ships a scalable default font; older versions only the fixed bitmap one
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def contact_sheet(
    frames: np.ndarray,
    path: str | Path,
    *,
    cols: int | None = None,
    pad: int = 4,
    label: str | None = None,
) -> Path:
    """Write all frames as one PNG grid (row-major, frame index in each tile's top-left corner).

    ``cols`` defaults to ``ceil(sqrt(F))``. The sheet is ``cols * W + (cols + 1) * pad`` wide and
    ``rows * H + (rows + 1) * pad`` high, plus a caption strip on top when ``label`` is given. The
    gaps are mid grey so tile borders stay visible on white-background stickers.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"contact sheet must be a .png file, got {path}")
    arr = _check_frames(frames)
    F, H, W, _ = arr.shape
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    cols = max(1, min(F, cols if cols is not None else math.ceil(math.sqrt(F))))
    rows = math.ceil(F / cols)
    font_px = max(8, min(H, W) // 8)
    font = _font(font_px)
    label_h = font_px + 2 * max(pad, 2) if label else 0
    sheet = Image.new("RGB", (cols * W + (cols + 1) * pad, rows * H + (rows + 1) * pad + label_h), (128, 128, 128))
    draw = ImageDraw.Draw(sheet)
    if label:
        draw.text((pad, max(pad, 2)), label, fill=(255, 255, 255), font=font)
    for i, frame in enumerate(arr):
        r, c = divmod(i, cols)
        x, y = pad + c * (W + pad), label_h + pad + r * (H + pad)
        sheet.paste(Image.fromarray(frame, "RGB"), (x, y))
        # Dark box behind white digits: readable on any frame content.
        box = draw.textbbox((x + 1, y + 1), str(i), font=font)
        draw.rectangle((box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1), fill=(0, 0, 0))
        draw.text((x + 1, y + 1), str(i), fill=(255, 255, 255), font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write(path, buf.getvalue())
    return path
