"""Hand-built media files (byte by byte, so expected canvases do not depend on an encoder) and shared checks."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from data.media import (
    decode_sticker,
)
from data.rejects import StickerRejected

RED, GREEN, BLUE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0)



def _gif_lzw(indices: np.ndarray) -> bytes:
    """Valid but uncompressed GIF LZW stream (8-bit literals, 9-bit codes).

    A clear code every 250 literals keeps the decoder's dictionary below 512 entries, so the code
    width never grows and no real compression is needed.
    """
    px = indices.astype(np.uint16).reshape(-1).tolist()
    codes: list[int] = []
    for start in range(0, len(px), 250):
        codes.append(256)  # clear
        codes.extend(px[start : start + 250])
    codes.append(257)  # end of information
    acc = nbits = 0
    packed = bytearray()
    for code in codes:
        acc |= code << nbits
        nbits += 9
        while nbits >= 8:
            packed.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        packed.append(acc & 0xFF)
    out = bytearray([8])  # LZW minimum code size
    for i in range(0, len(packed), 255):
        block = packed[i : i + 255]
        out += bytes([len(block)]) + block
    out.append(0)
    return bytes(out)


def build_gif(
    width: int,
    height: int,
    palette: list[tuple[int, int, int]],
    frames: list[dict],
    *,
    background: int = 0,
) -> bytes:
    """frames: dicts with x, y, idx ((h, w) palette indices), delay_cs, disposal, transparent (or None)."""
    bits = max(1, (len(palette) - 1).bit_length())
    table = list(palette) + [BLACK] * ((1 << bits) - len(palette))
    out = bytearray(b"GIF89a")
    out += struct.pack("<HHBBB", width, height, 0x80 | 0x70 | (bits - 1), background, 0)
    out += b"".join(bytes(c) for c in table)
    out += b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for f in frames:
        idx = np.asarray(f["idx"], np.uint8)
        h, w = idx.shape
        t = f.get("transparent")
        flags = (f.get("disposal", 0) << 2) | (1 if t is not None else 0)
        out += b"!\xf9\x04" + bytes([flags]) + struct.pack("<H", f.get("delay_cs", 10)) + bytes([t or 0, 0])
        out += b"," + struct.pack("<HHHHB", f.get("x", 0), f.get("y", 0), w, h, 0)
        out += _gif_lzw(idx)
    out += b";"
    return bytes(out)


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def png_idat_payload(rgba: np.ndarray) -> bytes:
    return zlib.compress(b"".join(b"\x00" + row.tobytes() for row in rgba))  # filter type 0 per row


def build_apng(width: int, height: int, frames: list[dict], fallback: np.ndarray | None = None) -> bytes:
    """frames: dicts with x, y, rgba ((h, w, 4)), delay (num, den), dispose_op, blend_op.

    Without ``fallback`` the first frame is also the default image (it must cover the canvas at 0,0);
    with it, ``fallback`` is written as an IDAT outside the animation (no fcTL before it).
    """
    out = bytearray(b"\x89PNG\r\n\x1a\n")
    out += png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
    out += png_chunk(b"acTL", struct.pack(">II", len(frames), 0))
    if fallback is not None:
        out += png_chunk(b"IDAT", png_idat_payload(fallback))
    seq = 0
    for i, f in enumerate(frames):
        rgba = np.asarray(f["rgba"], np.uint8)
        h, w = rgba.shape[:2]
        num, den = f.get("delay", (1, 10))
        out += png_chunk(
            b"fcTL",
            struct.pack(">IIIIIHHBB", seq, w, h, f.get("x", 0), f.get("y", 0), num, den,
                        f.get("dispose_op", 0), f.get("blend_op", 0)),
        )  # fmt: skip
        seq += 1
        if i == 0 and fallback is None:
            out += png_chunk(b"IDAT", png_idat_payload(rgba))
        else:
            out += png_chunk(b"fdAT", struct.pack(">I", seq) + png_idat_payload(rgba))
            seq += 1
    out += png_chunk(b"IEND", b"")
    return bytes(out)


def solid(h: int, w: int, rgb: tuple[int, int, int], alpha: int = 255) -> np.ndarray:
    out = np.empty((h, w, 4), np.uint8)
    out[..., :3] = rgb
    out[..., 3] = alpha
    return out


def assert_canvas_equal(got: np.ndarray, want: np.ndarray, atol: int = 0) -> None:
    """Equal alpha everywhere; equal colour where visible (colour under alpha 0 is meaningless)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.abs(got[..., 3].astype(int) - want[..., 3]).max() <= atol, "alpha differs"
    visible = want[..., 3] > 0
    diff = np.abs(got[..., :3].astype(int) - want[..., :3])[visible]
    assert diff.size == 0 or diff.max() <= atol, f"colour differs by up to {diff.max()}"


def rejected(data: bytes, **kwargs) -> StickerRejected:
    with pytest.raises(StickerRejected) as info:
        decode_sticker(data, **kwargs)
    return info.value


def simple_gif(n_frames: int, width: int = 8, height: int = 8) -> bytes:
    """n distinct full-canvas frames (a moving dot), all opaque."""
    frames = []
    for i in range(n_frames):
        idx = np.zeros((height, width), np.uint8)
        idx.flat[i % idx.size] = 1
        frames.append({"idx": idx, "delay_cs": 4, "disposal": 1})
    return build_gif(width, height, [RED, GREEN], frames)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)

def animated_frames(H: int = 40, W: int = 56, F: int = 6) -> list[np.ndarray]:
    """Flat-colour frames with a moving opaque patch and a fixed transparent hole."""
    rng = np.random.RandomState(0)
    frames = []
    for i in range(F):
        f = solid(H, W, tuple(int(c) for c in rng.randint(0, 256, 3)))
        f[5:15, 5 + 3 * i : 20 + 3 * i] = (10, 200, 30, 255)
        f[20:30, 30:50, 3] = 0
        frames.append(f)
    return frames

def video_frames(F: int = 12, H: int = 48, W: int = 64) -> np.ndarray:
    """Smooth gradient with a moving block: realistic for lossy codecs, unlike noise."""
    frames = np.zeros((F, H, W, 3), np.uint8)  # (F, H, W, 3)
    frames[..., 0] = np.linspace(0, 255, W, dtype=np.uint8)[None, None, :]
    frames[..., 2] = np.linspace(255, 0, H, dtype=np.uint8)[None, :, None]
    for i in range(F):
        frames[i, 10:26, 4 + 3 * i : 20 + 3 * i] = (30, 220, 60)
    return frames
