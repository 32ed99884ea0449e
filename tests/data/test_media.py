"""Tests for data/media.py on real files: every encoded file is decoded by the production path.

The compositing tests build GIF and APNG files byte by byte (so the expected canvases do not depend
on any encoder's choices) and check Pillow's frame-by-frame compositing against hand-computed images.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

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
from tests.data.media_files import (
    BLACK,
    BLUE,
    GREEN,
    RED,
    animated_frames,
    assert_canvas_equal,
    build_apng,
    build_gif,
    png_chunk,
    png_idat_payload,
    psnr,
    solid,
    video_frames,
)

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
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 6, 0, 0, 0))
    actl = png_chunk(b"acTL", struct.pack(">II", 2, 0))
    idat = png_chunk(b"IDAT", png_idat_payload(solid(4, 4, RED)))
    iend = png_chunk(b"IEND", b"")
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




@pytest.mark.parametrize("fmt", [MediaFormat.GIF, MediaFormat.WEBP, MediaFormat.APNG])
def test_animated_round_trip_is_exact(fmt):
    frames = animated_frames()
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
    frames = [f.copy() for f in animated_frames(F=3)]
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




@pytest.mark.parametrize("fmt", [MediaFormat.MP4, MediaFormat.WEBM])
def test_video_round_trip(fmt):
    frames = video_frames()
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
    data = encode_video(video_frames(F=6, H=47, W=63), 12.5, fmt)
    sticker = decode_sticker(data, size=32)
    assert (sticker.width, sticker.height) == (64, 48)  # padded to even for yuv420p
    assert sticker.fps == pytest.approx(12.5)
    assert sticker.durations_ms == [80] * 6


def test_encoders_are_deterministic():
    """Same input -> same bytes, also with a different heap layout in between.

    x264's mb-tree used to make tiny clips differ run to run depending on prior allocations; the
    interleaved allocations below reproduced that reliably before it was switched off.
    """
    frames = video_frames(F=6)
    anim = animated_frames(F=4)
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
