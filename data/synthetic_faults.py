"""Hostile entries for synthetic drops: one per bad-input class the ingest stage must survive.

``inject_faults`` appends broken media and broken caption rows to an existing drop (and rewrites its
caption table atomically), so tests, the demo and benchmarks can check that every class is
quarantined with the right reason while the good stickers are kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from io import BytesIO

import fsspec
import numpy as np
from PIL import Image, ImageDraw

from data.synthetic import CAPTIONS_FILE, caption_row, join_url, publish_captions

FAULT_KINDS: tuple[str, ...] = tuple(
    "zero_byte truncated wrong_magic bomb single_frame long missing_caption non_utf8_caption duplicate_id"
    " duplicate_content path_escape unsupported missing_file bad_row".split()
)


def _tiny_gif(rng: np.random.Generator, n_frames: int, side: int = 32) -> bytes:
    """A small valid GIF whose consecutive frames always differ (so no encoder can merge them)."""
    colour = tuple(int(c) for c in rng.integers(40, 216, size=3))
    frames = []
    for i in range(n_frames):
        im = Image.new("RGB", (side, side), colour)
        d = ImageDraw.Draw(im)
        x, y = i % (side // 2), (i // (side // 2)) % (side // 2)  # a moving dot encodes the frame index
        d.rectangle([2 * x, 2 * y, 2 * x + 1, 2 * y + 1], fill=(20, 20, 20))
        frames.append(im.convert("P", palette=Image.Palette.ADAPTIVE, colors=4))
    buf = BytesIO()
    frames[0].save(buf, format="GIF", save_all=n_frames > 1, append_images=frames[1:], duration=40, loop=0)
    return buf.getvalue()


def _bomb_gif() -> bytes:
    """Two 1x1 frames on a 30000x30000 logical screen: 60 bytes that decode to 900 Mpixel canvases."""
    side = (30000).to_bytes(2, "little")
    out = bytearray(b"GIF89a" + side + side + bytes([0x80, 0, 0]) + bytes([0, 0, 0, 255, 255, 255]))
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever: it claims to be animated
    for colour_index in (0, 1):
        out += b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # graphic control: 100 ms
        out += b"\x2c" + bytes(4) + (1).to_bytes(2, "little") * 2 + b"\x00"  # 1x1 image at (0, 0)
        # LZW, min code size 2: clear(4), pixel, end(5) packed LSB-first in 3-bit codes.
        codes = 4 | (colour_index << 3) | (5 << 6)
        out += b"\x02\x02" + codes.to_bytes(2, "little") + b"\x00"
    return bytes(out + b"\x3b")


def inject_faults(drop: str, seed: int = 0, kinds: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Append hostile entries to an existing drop and republish its manifest; returns {kind: [ids]}.

    Each kind exercises one quarantine path of the ingest stage (see data.rejects.RejectReason);
    "long" is the exception: a valid 300-frame GIF that ingest must keep.
    """
    kinds = list(FAULT_KINDS if kinds is None else kinds)
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULT_KINDS}")
    fs, root = fsspec.core.url_to_fs(drop)
    manifest = fs.cat_file(join_url(root, CAPTIONS_FILE))
    existing: list[dict] = []
    for line in manifest.splitlines():
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if isinstance(row, dict) and str(row.get("id", "")).startswith("stk-"):
            existing.append(row)  # a generated sticker: safe to duplicate
    rng = np.random.default_rng([seed, 0xFA017])
    rows: list[bytes] = []
    out: dict[str, list[str]] = {}

    def new(
        kind: str,
        ext: str = "gif",
        data: bytes | None = None,
        caption: str | None = "an injected fault",
        *,
        sid: str | None = None,
        file: str | None = None,
        raw: bytes | None = None,
    ) -> None:
        sid = sid or f"flt-{seed}-{kind}-{len(out.get(kind, [])):02d}"
        file = file or f"flt-{seed}-{kind}-{len(out.get(kind, [])):02d}.{ext}"
        if data is not None:
            fs.pipe_file(join_url(root, file), data)
        rows.append(raw % {b"id": sid.encode(), b"file": file.encode()} if raw else caption_row(sid, file, caption))
        out.setdefault(kind, []).append(sid)

    def victim() -> dict:
        if not existing:
            raise ValueError(f"drop {drop!r} has no valid sticker rows to duplicate")
        return existing[int(rng.integers(len(existing)))]

    for kind in kinds:
        if kind == "zero_byte":
            new(kind, data=b"")
        elif kind == "truncated":  # a real GIF cut in half: no trailer, last frame's LZW data cut short
            data = _tiny_gif(rng, 8, side=64)
            new(kind, data=data[: len(data) // 2])
        elif kind == "wrong_magic":
            new(kind, data=b"this is plain text pretending to be a GIF\n" * 4)
        elif kind == "bomb":
            new(kind, data=_bomb_gif())
        elif kind == "single_frame":
            new(kind, data=_tiny_gif(rng, 1))
        elif kind == "long":  # valid and unusual: must be kept
            new(kind, data=_tiny_gif(rng, 300), caption="a tiny dot running across a square, 300 frames")
        elif kind == "missing_caption":
            new(kind, data=_tiny_gif(rng, 4), caption=None)
        elif kind == "non_utf8_caption":  # latin-1 bytes written raw: the row is not valid UTF-8
            new(
                kind,
                data=_tiny_gif(rng, 4),
                raw=b'{"id": "%(id)s", "file": "%(file)s", "caption": "caf\xe9 cat with a cr\xe8me cake"}\n',
            )
        elif kind == "duplicate_id":  # the reused id is reported; the original row comes first
            new(
                kind,
                data=_tiny_gif(rng, 3),
                caption="a second row reusing an id",
                sid=str(victim()["id"]),
                file=f"flt-{seed}-{kind}.gif",
            )
        elif kind == "duplicate_content":
            v = victim()
            new(
                kind,
                str(v["file"]).rsplit(".", 1)[-1],
                fs.cat_file(join_url(root, str(v["file"]))),
                str(v.get("caption")),
            )
        elif kind == "path_escape":  # nothing is written outside the drop; only the rows point there
            new(kind, file="../outside.gif", caption="a row whose file climbs out of the drop")
            new(kind, file="/etc/passwd", caption="a row with an absolute path")
        elif kind == "unsupported":
            buf = BytesIO()
            Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="BMP")
            new(kind, "bmp", buf.getvalue())
            new(kind, "txt", b"not a sticker at all\n")
        elif kind == "missing_file":
            new(kind)
        elif kind == "bad_row":
            new(kind, raw=b'{"id": "%(id)s", "file": "%(file)s", "caption": \n')
    body = manifest if manifest.endswith(b"\n") or not manifest else manifest + b"\n"
    publish_captions(fs, root, body + b"".join(rows))
    return out
