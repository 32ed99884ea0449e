"""Tests for data/media.py on real files: every encoded file is decoded by the production path.

The compositing tests build GIF and APNG files byte by byte (so the expected canvases do not depend
on any encoder's choices) and check Pillow's frame-by-frame compositing against hand-computed images.
"""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from data.media import (
    DecodedSticker,
    DecodeLimits,
    MediaFormat,
    decode_sticker,
    fit_to_square,
    iter_rgba_frames,
    sniff_format,
)
from data.media_encode import encode_animated, encode_video
from data.rejects import RejectReason, StickerRejected

RED, GREEN, BLUE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0)


# --------------------------------------------------------------------------- hand-built files


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


def _png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def _png_idat_payload(rgba: np.ndarray) -> bytes:
    return zlib.compress(b"".join(b"\x00" + row.tobytes() for row in rgba))  # filter type 0 per row


def build_apng(width: int, height: int, frames: list[dict], fallback: np.ndarray | None = None) -> bytes:
    """frames: dicts with x, y, rgba ((h, w, 4)), delay (num, den), dispose_op, blend_op.

    Without ``fallback`` the first frame is also the default image (it must cover the canvas at 0,0);
    with it, ``fallback`` is written as an IDAT outside the animation (no fcTL before it).
    """
    out = bytearray(b"\x89PNG\r\n\x1a\n")
    out += _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
    out += _png_chunk(b"acTL", struct.pack(">II", len(frames), 0))
    if fallback is not None:
        out += _png_chunk(b"IDAT", _png_idat_payload(fallback))
    seq = 0
    for i, f in enumerate(frames):
        rgba = np.asarray(f["rgba"], np.uint8)
        h, w = rgba.shape[:2]
        num, den = f.get("delay", (1, 10))
        out += _png_chunk(
            b"fcTL",
            struct.pack(">IIIIIHHBB", seq, w, h, f.get("x", 0), f.get("y", 0), num, den,
                        f.get("dispose_op", 0), f.get("blend_op", 0)),
        )  # fmt: skip
        seq += 1
        if i == 0 and fallback is None:
            out += _png_chunk(b"IDAT", _png_idat_payload(rgba))
        else:
            out += _png_chunk(b"fdAT", struct.pack(">I", seq) + _png_idat_payload(rgba))
            seq += 1
    out += _png_chunk(b"IEND", b"")
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


# --------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GIF87a" + b"\0" * 10, MediaFormat.GIF),
        (b"GIF89a" + b"\0" * 10, MediaFormat.GIF),
        (b"RIFF\x10\0\0\0WEBPVP8L", MediaFormat.WEBP),
        (b"RIFF\x10\0\0\0AVI LIST", None),
        (b"\0\0\0\x18ftypisom\0\0\0\0", MediaFormat.MP4),
        (b"\0\0\0\x14ftypqt  \0\0\0\0", MediaFormat.MP4),
        (b"\0\0\0\x14ftypM4V \0\0\0\0", MediaFormat.MP4),
        (b"\0\0\0\x1cftypavif\0\0\0\0", None),  # still image, not video
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01", MediaFormat.WEBM),
        (b"GIF", None),
        (b"", None),
        (b"hello world, not media", None),
    ],
)
def test_sniff_format_magic_bytes(data, expected):
    assert sniff_format(data) is expected


def test_sniff_png_vs_apng():
    sig = b"\x89PNG\r\n\x1a\n"
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 6, 0, 0, 0))
    actl = _png_chunk(b"acTL", struct.pack(">II", 2, 0))
    idat = _png_chunk(b"IDAT", _png_idat_payload(solid(4, 4, RED)))
    iend = _png_chunk(b"IEND", b"")
    assert sniff_format(sig + ihdr + idat + iend) is MediaFormat.PNG
    assert sniff_format(sig + ihdr + actl + idat + iend) is MediaFormat.APNG
    assert sniff_format(sig + ihdr + idat + actl + iend) is MediaFormat.PNG  # acTL after IDAT: not APNG
    assert sniff_format(build_apng(4, 4, [{"rgba": solid(4, 4, RED)}] * 2)) is MediaFormat.APNG


def test_decode_limits_validation():
    with pytest.raises(ValueError):
        DecodeLimits(min_frames=0)
    with pytest.raises(ValueError):
        DecodeLimits(min_frames=10, max_frames=5)


# --------------------------------------------------------------------------- round trips


def _animated_frames(H: int = 40, W: int = 56, F: int = 6) -> list[np.ndarray]:
    """Flat-colour frames with a moving opaque patch and a fixed transparent hole."""
    rng = np.random.RandomState(0)
    frames = []
    for i in range(F):
        f = solid(H, W, tuple(int(c) for c in rng.randint(0, 256, 3)))
        f[5:15, 5 + 3 * i : 20 + 3 * i] = (10, 200, 30, 255)
        f[20:30, 30:50, 3] = 0
        frames.append(f)
    return frames


@pytest.mark.parametrize("fmt", [MediaFormat.GIF, MediaFormat.WEBP, MediaFormat.APNG])
def test_animated_round_trip_is_exact(fmt):
    frames = _animated_frames()
    durations = [40, 50, 60, 70, 80, 90]
    data = encode_animated(frames, durations, fmt)
    assert sniff_format(data) is fmt

    canvases = list(iter_rgba_frames(data))
    assert [d for _, d in canvases] == durations  # GIF: multiples of 10 ms survive exactly
    for (got, _), want in zip(canvases, frames, strict=True):
        assert_canvas_equal(got, want)

    bg = (255, 255, 255)
    sticker = decode_sticker(data, size=64, background=bg)
    assert isinstance(sticker, DecodedSticker)
    assert sticker.format is fmt
    assert sticker.frames.shape == (6, 64, 64, 3) and sticker.frames.dtype == np.uint8
    assert sticker.durations_ms == durations
    assert sticker.fps == pytest.approx(1000 / np.mean(durations))
    assert (sticker.width, sticker.height) == (56, 40)
    assert sticker.has_alpha
    for got, want in zip(sticker.frames, frames, strict=True):
        np.testing.assert_array_equal(got, fit_to_square(want, 64, bg))


def test_gif_round_trip_opaque_has_no_alpha_and_rounds_delays():
    frames = [f.copy() for f in _animated_frames(F=3)]
    for f in frames:
        f[..., 3] = 255
    data = encode_animated(frames, [33, 100, 250], MediaFormat.GIF)
    sticker = decode_sticker(data, size=56)
    assert not sticker.has_alpha
    assert sticker.durations_ms == [30, 100, 250]  # GIF stores centiseconds
    for got, want in zip(sticker.frames, frames, strict=True):
        np.testing.assert_array_equal(got[8:48], want[..., :3])  # 56x40 padded by 8 rows top/bottom


def test_gif_with_many_colours_is_quantised_deterministically():
    rng = np.random.RandomState(1)
    frames = [
        np.dstack([rng.randint(0, 256, (32, 32, 3)), np.full((32, 32), 255)]).astype(np.uint8)
        for _ in range(3)
    ]
    a = encode_animated(frames, [100] * 3, MediaFormat.GIF)
    assert a == encode_animated(frames, [100] * 3, MediaFormat.GIF)
    sticker = decode_sticker(a, size=32)
    assert sticker.frames.shape == (3, 32, 32, 3)
    assert psnr(sticker.frames, np.stack(frames)[..., :3]) > 15  # 255-colour median cut of noise


def test_encoders_merge_identical_consecutive_frames():
    """Documented caveat of encode_animated: Pillow/libwebp collapse repeated frames."""
    a, b = solid(16, 16, RED), solid(16, 16, BLUE)
    for fmt in (MediaFormat.GIF, MediaFormat.WEBP, MediaFormat.APNG):
        sticker = decode_sticker(encode_animated([a, a, b], [100, 100, 100], fmt), size=16)
        assert sticker.durations_ms == [200, 100], fmt


def _video_frames(F: int = 12, H: int = 48, W: int = 64) -> np.ndarray:
    """Smooth gradient with a moving block: realistic for lossy codecs, unlike noise."""
    frames = np.zeros((F, H, W, 3), np.uint8)  # (F, H, W, 3)
    frames[..., 0] = np.linspace(0, 255, W, dtype=np.uint8)[None, None, :]
    frames[..., 2] = np.linspace(255, 0, H, dtype=np.uint8)[None, :, None]
    for i in range(F):
        frames[i, 10:26, 4 + 3 * i : 20 + 3 * i] = (30, 220, 60)
    return frames


@pytest.mark.parametrize("fmt", [MediaFormat.MP4, MediaFormat.WEBM])
def test_video_round_trip(fmt):
    frames = _video_frames()
    data = encode_video(frames, 10.0, fmt)
    assert sniff_format(data) is fmt
    bg = (0, 0, 0)
    sticker = decode_sticker(data, size=64, background=bg)
    assert sticker.format is fmt
    assert sticker.frames.shape == (12, 64, 64, 3)
    assert sticker.fps == pytest.approx(10.0)
    assert sticker.durations_ms == [100] * 12
    assert (sticker.width, sticker.height) == (64, 48)
    assert not sticker.has_alpha
    want = np.stack([fit_to_square(f, 64, bg) for f in frames])
    assert psnr(sticker.frames, want) > 25
    # per frame too: catches dropped or reordered frames that a global PSNR could hide
    assert min(psnr(g, w) for g, w in zip(sticker.frames, want, strict=True)) > 25

    rgba = list(iter_rgba_frames(data))
    assert len(rgba) == 12 and rgba[0][0].shape == (48, 64, 4) and rgba[0][1] == 100
    assert all((f[..., 3] == 255).all() for f, _ in rgba)


@pytest.mark.parametrize("fmt", [MediaFormat.MP4, MediaFormat.WEBM])
def test_video_odd_size_is_padded_and_fractional_fps(fmt):
    data = encode_video(_video_frames(F=6, H=47, W=63), 12.5, fmt)
    sticker = decode_sticker(data, size=32)
    assert (sticker.width, sticker.height) == (64, 48)  # padded to even for yuv420p
    assert sticker.fps == pytest.approx(12.5)
    assert sticker.durations_ms == [80] * 6


def test_encoders_are_deterministic():
    """Same input -> same bytes, also with a different heap layout in between.

    x264's mb-tree used to make tiny clips differ run to run depending on prior allocations; the
    interleaved allocations below reproduced that reliably before it was switched off.
    """
    frames = _video_frames(F=6)
    anim = _animated_frames(F=4)
    outputs: dict[MediaFormat, set[bytes]] = {}
    keep = []
    for rep in range(4):
        keep.append(bytearray(50_000 * (rep + 1)))  # perturb the heap between encodes
        for fmt in (MediaFormat.MP4, MediaFormat.WEBM):
            outputs.setdefault(fmt, set()).add(encode_video(frames, 10.0, fmt))
        for fmt in (MediaFormat.GIF, MediaFormat.WEBP, MediaFormat.APNG):
            outputs.setdefault(fmt, set()).add(encode_animated(anim, [50] * 4, fmt))
    assert {fmt: len(v) for fmt, v in outputs.items()} == {fmt: 1 for fmt in outputs}


def test_video_flat_colours_survive():
    colours = [(200, 40, 40), (30, 220, 60), (0, 0, 255), (128, 128, 128), (255, 255, 255), (0, 0, 0)]
    frames = np.stack([np.full((32, 32, 3), c, np.uint8) for c in colours])  # (F, 32, 32, 3)
    for fmt in (MediaFormat.MP4, MediaFormat.WEBM):
        sticker = decode_sticker(encode_video(frames, 10.0, fmt), size=32)
        err = np.abs(sticker.frames.astype(int) - frames.astype(int)).max()
        assert err <= 4, (fmt, err)  # BT.601 limited range both ways: only rounding error


# --------------------------------------------------------------------------- compositing


def test_gif_disposal_methods_frame_by_frame():
    W, H = 12, 10
    palette = [RED, GREEN, BLUE, BLACK]  # index 3 is the transparent one
    patch1 = np.ones((3, 4), np.uint8)
    patch1[1, 1] = 3  # a transparent pixel inside the patch: the red beneath must show through
    frames = [
        {"idx": np.zeros((H, W), np.uint8), "delay_cs": 5, "disposal": 1, "transparent": 3},
        {"idx": patch1, "x": 2, "y": 3, "delay_cs": 7, "disposal": 2, "transparent": 3},
        {"idx": np.full((2, 3), 2, np.uint8), "x": 7, "y": 1, "delay_cs": 0, "disposal": 1, "transparent": 3},
        {"idx": np.ones((2, 2), np.uint8), "x": 0, "y": 0, "delay_cs": 1, "disposal": 3, "transparent": 3},
        {
            "idx": np.full((1, 1), 2, np.uint8),
            "x": 11,
            "y": 9,
            "delay_cs": 12,
            "disposal": 1,
            "transparent": 3,
        },
    ]
    data = build_gif(W, H, palette, frames, background=3)

    want = []
    c = solid(H, W, RED)
    want.append(c.copy())  # 0: full red
    c[3:6, 2:6] = (*GREEN, 255)
    c[4, 3] = (*RED, 255)
    want.append(c.copy())  # 1: green patch with a see-through pixel
    c[3:6, 2:6] = (0, 0, 0, 0)  # disposal 2 of frame 1: its rectangle is cleared to transparent
    c[1:3, 7:10] = (*BLUE, 255)
    want.append(c.copy())  # 2
    before_3 = c.copy()
    c[0:2, 0:2] = (*GREEN, 255)
    want.append(c.copy())  # 3
    c = before_3  # disposal 3 of frame 3: restore the canvas as it was before frame 3
    c[9, 11] = (*BLUE, 255)
    want.append(c.copy())  # 4

    got = list(iter_rgba_frames(data))
    assert [d for _, d in got] == [50, 70, 100, 100, 120]  # 0 and 1 cs delays read as 100 ms
    assert len(got) == len(want)
    for i, ((canvas, _), expected) in enumerate(zip(got, want, strict=True)):
        assert canvas.shape == (H, W, 4), i
        assert_canvas_equal(canvas, expected)

    sticker = decode_sticker(data, size=W, background=(0, 0, 255))
    assert sticker.has_alpha
    np.testing.assert_array_equal(
        sticker.frames[2, 1 + 3 : 1 + 6, 2:6], np.full((3, 4, 3), BLUE)
    )  # 1 pad row


def test_apng_dispose_and_blend_ops_frame_by_frame():
    W, H = 10, 8
    NONE, BACKGROUND, PREVIOUS = 0, 1, 2
    SOURCE, OVER = 0, 1
    half_green = solid(3, 4, GREEN, alpha=128)
    half_green[1, 1] = (9, 9, 9, 0)  # fully transparent: OVER keeps the red beneath
    clear_patch = solid(2, 2, BLUE, alpha=0)
    frames = [
        {"rgba": solid(H, W, RED), "delay": (1, 10), "dispose_op": NONE, "blend_op": SOURCE},
        {"rgba": half_green, "x": 2, "y": 2, "delay": (33, 1000), "dispose_op": BACKGROUND, "blend_op": OVER},
        {
            "rgba": solid(3, 3, BLUE),
            "x": 6,
            "y": 0,
            "delay": (7, 100),
            "dispose_op": PREVIOUS,
            "blend_op": SOURCE,
        },
        {"rgba": clear_patch, "x": 0, "y": 5, "delay": (0, 100), "dispose_op": NONE, "blend_op": SOURCE},
    ]
    data = build_apng(W, H, frames)
    assert sniff_format(data) is MediaFormat.APNG

    want = []
    c = solid(H, W, RED)
    want.append(c.copy())
    c[2:5, 2:6] = (127, 128, 0, 255)  # 50% green OVER opaque red
    c[3, 3] = (*RED, 255)
    want.append(c.copy())
    c[2:5, 2:6] = 0  # BACKGROUND: frame 1's region becomes transparent black
    before_2 = c.copy()
    c[0:3, 6:9] = (*BLUE, 255)
    want.append(c.copy())
    c = before_2  # PREVIOUS: frame 2's drawing is undone
    c[5:7, 0:2] = 0  # SOURCE with alpha 0 punches a hole
    want.append(c.copy())

    got = list(iter_rgba_frames(data))
    assert [d for _, d in got] == [100, 33, 70, 100]  # delay 0 -> 100 ms
    for (canvas, _), expected in zip(got, want, strict=True):
        assert_canvas_equal(canvas, expected)


def test_apng_fallback_image_is_not_a_frame():
    """An IDAT without fcTL is a static fallback: skipped, and the animation starts on a clear canvas."""
    W, H = 6, 4
    frames = [
        {"rgba": solid(2, 2, GREEN), "x": 1, "y": 1, "delay": (5, 100), "blend_op": 1},
        {"rgba": solid(2, 2, BLUE, alpha=64), "x": 2, "y": 2, "delay": (6, 100), "blend_op": 1},
    ]
    data = build_apng(W, H, frames, fallback=solid(H, W, RED))
    got = list(iter_rgba_frames(data))
    assert [d for _, d in got] == [50, 60]
    want0 = np.zeros((H, W, 4), np.uint8)
    want0[1:3, 1:3] = (*GREEN, 255)
    want1 = want0.copy()
    want1[2:4, 2:4] = (*BLUE, 64)  # over a transparent canvas, not over the red fallback
    want1[2, 2] = _over_px((*BLUE, 64), (*GREEN, 255))
    assert_canvas_equal(got[0][0], want0)
    assert_canvas_equal(got[1][0], want1)


def _over_px(src: tuple[int, ...], dst: tuple[int, ...]) -> tuple[int, ...]:
    sa, da = src[3] / 255, dst[3] / 255
    oa = sa + da * (1 - sa)
    rgb = [round((s * sa + d * da * (1 - sa)) / oa) for s, d in zip(src[:3], dst[:3], strict=True)]
    return (*rgb, round(oa * 255))


def _webp_anmf_rects(data: bytes) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) of each ANMF frame in an animated WebP."""
    rects, pos = [], 12
    while pos + 8 <= len(data):
        fourcc, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if fourcc == b"ANMF":
            p = data[pos + 8 : pos + 8 + 12]
            x, y = 2 * int.from_bytes(p[0:3], "little"), 2 * int.from_bytes(p[3:6], "little")
            w, h = 1 + int.from_bytes(p[6:9], "little"), 1 + int.from_bytes(p[9:12], "little")
            rects.append((x, y, w, h))
        pos += 8 + size + (size & 1)
    return rects


def test_webp_with_transparency_composites_sub_frames():
    W, H = 48, 32
    f0 = solid(H, W, RED)
    f1 = f0.copy()
    f1[4:12, 4:12] = (*GREEN, 160)  # becomes semi-transparent
    f2 = f1.copy()
    f2[4:12, 4:12] = (0, 0, 0, 0)  # ... then a hole (needs dispose or non-blended sub-frame)
    f2[20:24, 30:40] = (*BLUE, 255)
    f3 = f2.copy()
    f3[4:12, 4:12] = (*RED, 255)  # hole filled again
    frames = [f0, f1, f2, f3]
    data = encode_animated(frames, [30, 40, 50, 60], MediaFormat.WEBP)
    rects = _webp_anmf_rects(data)
    assert len(rects) == 4
    assert any((w, h) != (W, H) for _, _, w, h in rects), f"libwebp wrote only full frames: {rects}"
    got = list(iter_rgba_frames(data))
    assert [d for _, d in got] == [30, 40, 50, 60]
    for (canvas, _), want in zip(got, frames, strict=True):
        assert_canvas_equal(canvas, want)


def test_transparency_composited_on_background():
    W, H = 24, 16
    frames = []
    for i in range(2):
        f = solid(H, W, (200, 40, 40))
        f[:, :8] = (0, 0, 0, 0)  # fully transparent left third
        f[:, 8:12] = (0, 0, 200, 128)  # half-transparent blue band
        f[0, 23 - i] = (0, 255, 0, 255)  # make the frames differ
        frames.append(f)
    data = encode_animated(frames, [100, 100], MediaFormat.WEBP)
    for bg in ((255, 255, 255), (0, 0, 0)):
        s = decode_sticker(data, size=W, background=bg)
        assert s.has_alpha
        top = (W - H) // 2
        content = s.frames[:, top : top + H]  # (F, H, W, 3)
        assert (content[:, :, :8] == bg).all()
        want_band = [(0 * 128 + b * 127 + 127) // 255 for b in bg]
        want_band[2] = (200 * 128 + bg[2] * 127 + 127) // 255
        assert (content[:, :, 8:12] == want_band).all()
        assert (content[:, 1:, 12:20] == (200, 40, 40)).all()
        assert (s.frames[:, :top] == bg).all() and (s.frames[:, top + H :] == bg).all()


# --------------------------------------------------------------------------- fit_to_square


def test_fit_to_square_centres_and_pads():
    frame = np.zeros((50, 100, 3), np.uint8)
    frame[...] = (10, 120, 230)
    out = fit_to_square(frame, 64, (255, 0, 255))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out[:16] == (255, 0, 255)).all() and (out[48:] == (255, 0, 255)).all()  # 50*0.64 = 32 rows
    assert (out[16:48] == (10, 120, 230)).all()
    tall = fit_to_square(np.full((100, 50, 3), 7, np.uint8), 64, (0, 0, 0))
    assert (tall[:, :16] == 0).all() and (tall[:, 48:] == 0).all() and (tall[:, 16:48] == 7).all()


def test_fit_to_square_composites_before_resizing():
    # Transparent pixels carry garbage colour; it must not bleed into the visible half when resizing.
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[:, :32] = (0, 255, 0, 0)
    rgba[:, 32:] = (255, 255, 255, 255)
    out = fit_to_square(rgba, 16, (255, 255, 255))
    assert (out == 255).all()
    with pytest.raises(ValueError):
        fit_to_square(np.zeros((4, 4, 2), np.uint8), 8, (0, 0, 0))


# --------------------------------------------------------------------------- bad input


def test_empty_file():
    assert rejected(b"").reason is RejectReason.EMPTY_FILE


def test_garbage_bytes():
    assert rejected(np.random.RandomState(0).bytes(4096)).reason is RejectReason.UNSUPPORTED_FORMAT


def test_gif_with_corrupted_magic():
    data = simple_gif(3)
    assert rejected(b"GIX" + data[3:]).reason is RejectReason.UNSUPPORTED_FORMAT


def test_truncated_gif():
    data = encode_animated(_animated_frames(F=3), [50] * 3, MediaFormat.GIF)
    err = rejected(data[: len(data) // 2])
    assert err.reason is RejectReason.DECODE_ERROR and "truncated" in err.message


def test_gif_with_corrupt_frame_data_but_trailer():
    data = encode_animated(_animated_frames(F=3), [50] * 3, MediaFormat.GIF)
    cut = data[: len(data) * 3 // 4] + b";"  # torn frame, but the trailer check is satisfied
    assert rejected(cut).reason is RejectReason.DECODE_ERROR


@pytest.mark.parametrize("fmt", [MediaFormat.MP4, MediaFormat.WEBM])
def test_truncated_video(fmt):
    data = encode_video(_video_frames(F=6), 10.0, fmt)
    for cut in (len(data) // 2, len(data) - 10):
        assert rejected(data[:cut]).reason is RejectReason.DECODE_ERROR, cut


def test_mp4_with_corrupt_header_is_decode_error():
    data = bytearray(encode_video(_video_frames(F=6), 10.0, MediaFormat.MP4))
    moov = data.index(b"moov")
    data[moov + 4 : moov + 200] = b"\xff" * 196  # box sizes intact at top level, garbage inside moov
    assert rejected(bytes(data)).reason is RejectReason.DECODE_ERROR


def test_huge_canvas_gif_header_rejected_without_decoding():
    # 30000x30000 logical screen (900 Mpx, 3.6 GB as RGBA) holding one 1x1 frame per GIF frame.
    frames = [
        {"idx": np.zeros((1, 1), np.uint8), "disposal": 1},
        {"idx": np.ones((1, 1), np.uint8), "disposal": 1},
    ]
    data = build_gif(30000, 30000, [RED, GREEN], frames)
    assert len(data) < 200
    start = time.perf_counter()
    err = rejected(data)
    assert err.reason is RejectReason.PIXEL_LIMIT
    assert time.perf_counter() - start < 1.0
    # Below Pillow's own bomb threshold: our max_frame_pixels decides.
    err = rejected(build_gif(5000, 5000, [RED, GREEN], frames))
    assert err.reason is RejectReason.PIXEL_LIMIT and "max_frame_pixels" in err.message
    assert rejected(simple_gif(3, 64, 64), limits=DecodeLimits(max_frame_pixels=64 * 63)).reason is (
        RejectReason.PIXEL_LIMIT
    )


def test_gif_frame_growing_canvas_is_pixel_limited():
    # Pillow enlarges the canvas when a later frame lies outside it; that must be checked too.
    frames = [
        {"idx": np.zeros((8, 8), np.uint8), "disposal": 1},
        {"idx": np.ones((1, 1), np.uint8), "x": 9000, "y": 9000, "disposal": 1},
    ]
    assert rejected(build_gif(8, 8, [RED, GREEN], frames)).reason is RejectReason.PIXEL_LIMIT


def test_max_total_pixels():
    data = simple_gif(10, 32, 32)
    assert (
        decode_sticker(data, size=16, limits=DecodeLimits(max_total_pixels=32 * 32 * 10)).frames.shape[0]
        == 10
    )
    err = rejected(data, limits=DecodeLimits(max_total_pixels=32 * 32 * 10 - 1))
    assert err.reason is RejectReason.PIXEL_LIMIT
    video = encode_video(_video_frames(F=6), 10.0, MediaFormat.MP4)
    assert (
        rejected(video, limits=DecodeLimits(max_total_pixels=64 * 48 * 5)).reason is RejectReason.PIXEL_LIMIT
    )


def test_single_frame_gif_and_static_png_are_too_few_frames():
    assert rejected(simple_gif(1)).reason is RejectReason.TOO_FEW_FRAMES
    buf = io.BytesIO()
    Image.new("RGBA", (16, 16), (1, 2, 3, 255)).save(buf, format="PNG")
    assert sniff_format(buf.getvalue()) is MediaFormat.PNG
    assert rejected(buf.getvalue()).reason is RejectReason.TOO_FEW_FRAMES
    webp = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(webp, format="WEBP", lossless=True)
    assert rejected(webp.getvalue()).reason is RejectReason.TOO_FEW_FRAMES


def test_frame_count_limits():
    data = simple_gif(300)
    sticker = decode_sticker(data, size=8)
    assert sticker.frames.shape == (300, 8, 8, 3)
    assert sticker.durations_ms == [40] * 300
    err = rejected(data, limits=DecodeLimits(max_frames=100))
    assert err.reason is RejectReason.TOO_MANY_FRAMES and "300" in err.message
    video = encode_video(_video_frames(F=6), 10.0, MediaFormat.WEBM)
    assert rejected(video, limits=DecodeLimits(max_frames=5)).reason is RejectReason.TOO_MANY_FRAMES


def test_iter_rgba_frames_rejects_lazily_with_codes():
    frames = iter_rgba_frames(b"")
    with pytest.raises(StickerRejected) as info:
        next(frames)
    assert info.value.reason is RejectReason.EMPTY_FILE


@pytest.mark.parametrize("width", [16, 24, 48, 72])
@pytest.mark.parametrize("fmt", [MediaFormat.MP4, MediaFormat.WEBM])
def test_narrow_videos_decode_via_fallback(width, fmt):
    # decord 0.6 fails on these widths (row-stride bug); the PyAV fallback must take over.
    frames = np.random.default_rng(width).integers(0, 255, (5, width, width, 3), dtype=np.uint8)
    dec = decode_sticker(encode_video(frames, 10.0, fmt), size=32)
    assert dec.frames.shape == (5, 32, 32, 3) and dec.width == width and dec.durations_ms == [100] * 5
