"""data/media.py on bad input: empty, garbage, truncated and corrupt files, pixel and frame limits, narrow videos."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from data.media import (
    DecodeLimits,
    MediaFormat,
    decode_sticker,
    iter_rgba_frames,
    sniff_format,
)
from data.media_encode import encode_animated, encode_video
from data.rejects import RejectReason, StickerRejected
from tests.data.media_files import GREEN, RED, animated_frames, build_gif, rejected, simple_gif, video_frames


def test_empty_file():
    assert rejected(b"").reason is RejectReason.EMPTY_FILE


def test_garbage_bytes():
    assert rejected(np.random.RandomState(0).bytes(4096)).reason is RejectReason.UNSUPPORTED_FORMAT


def test_gif_with_corrupted_magic():
    data = simple_gif(3)
    assert rejected(b"GIX" + data[3:]).reason is RejectReason.UNSUPPORTED_FORMAT


def test_truncated_gif():
    data = encode_animated(animated_frames(F=3), [50] * 3, MediaFormat.GIF)
    err = rejected(data[: len(data) // 2])
    assert err.reason is RejectReason.DECODE_ERROR and "truncated" in err.message


def test_gif_with_corrupt_frame_data_but_trailer():
    data = encode_animated(animated_frames(F=3), [50] * 3, MediaFormat.GIF)
    cut = data[: len(data) * 3 // 4] + b";"  # torn frame, but the trailer check is satisfied
    assert rejected(cut).reason is RejectReason.DECODE_ERROR


@pytest.mark.parametrize("fmt", [MediaFormat.MP4, MediaFormat.WEBM])
def test_truncated_video(fmt):
    data = encode_video(video_frames(F=6), 10.0, fmt)
    for cut in (len(data) // 2, len(data) - 10):
        assert rejected(data[:cut]).reason is RejectReason.DECODE_ERROR, cut


def test_mp4_with_corrupt_header_is_decode_error():
    data = bytearray(encode_video(video_frames(F=6), 10.0, MediaFormat.MP4))
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
    video = encode_video(video_frames(F=6), 10.0, MediaFormat.MP4)
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
    video = encode_video(video_frames(F=6), 10.0, MediaFormat.WEBM)
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
