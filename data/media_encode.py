"""Encoding animated stickers: GIF / animated WebP / APNG (Pillow) and MP4 / WebM (PyAV).

Used by the synthetic drop generator and tests today, and by GIF/WebP export of generated stickers.
Every encoder is deterministic (same frames -> same bytes), which the synthetic drops rely on.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction

import numpy as np
from PIL import Image

from data.media import MediaFormat

# Quality-oriented, single-threaded settings (one thread is what makes x264/libvpx bit-exact). x264's
# macroblock-tree rate control also gave run-to-run differences on small frames (<= ~96 px, varying
# with heap state, i.e. it reads uninitialised memory), so it is switched off.
_CODEC_OPTIONS = {
    "libx264": {"crf": "18", "preset": "medium", "threads": "1", "x264-params": "mbtree=0"},
    "mpeg4": {"qmin": "1", "qmax": "3", "threads": "1"},
    "libvpx-vp9": {"crf": "24", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "0", "threads": "1"},
    "libvpx": {"crf": "8", "b": "4M", "deadline": "good", "cpu-used": "4", "threads": "1"},
}
_CODEC_PREFERENCE = {MediaFormat.MP4: ("libx264", "mpeg4"), MediaFormat.WEBM: ("libvpx-vp9", "libvpx")}


def _pick_video_codec(fmt: MediaFormat) -> str:
    import av

    if fmt not in _CODEC_PREFERENCE:
        raise ValueError(f"encode_video supports MP4/WEBM, got {fmt}")
    for name in _CODEC_PREFERENCE[fmt]:
        try:
            av.codec.Codec(name, "w")  # codecs_available also lists decoders, so ask for the encoder
            return name
        except Exception:  # noqa: BLE001 - PyAV's exception type for unknown codecs varies by version
            continue
    raise RuntimeError(f"PyAV has none of the encoders {_CODEC_PREFERENCE[fmt]} for {fmt.value}")


def _rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range RGB -> yuv420p laid out as PyAV's ``(H * 3 // 2, W)`` array.

    Done in numpy so the matrix and chroma filter are explicit rather than whatever swscale build
    and flags are installed. 601 is what decoders assume for untagged SD streams.
    """
    H, W, _ = rgb.shape
    r, g, b = (rgb[..., c].astype(np.float32) for c in range(3))  # each (H, W)
    y = 16.0 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    cb = 128.0 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    cr = 128.0 + 0.439216 * r - 0.367788 * g - 0.071427 * b
    cb, cr = (c.reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3)) for c in (cb, cr))  # (H/2, W/2): 4:2:0
    planes = [np.clip(np.rint(p), 0, 255).astype(np.uint8).reshape(-1) for p in (y, cb, cr)]
    return np.concatenate(planes).reshape(H * 3 // 2, W)


def encode_video(frames_rgb: np.ndarray, fps: float, fmt: MediaFormat) -> bytes:
    """Encode ``(F, H, W, 3)`` uint8 RGB as MP4 (H.264, else MPEG-4 part 2) or WebM (VP9, else VP8).

    yuv420p needs even dimensions, so odd sizes are padded by edge replication (right/bottom): the
    decoded width/height are then the padded ones. Deterministic: numpy colour conversion, one
    encoder thread and ``fflags=+bitexact`` (without it the Matroska muxer writes a random segment
    UID), so the same input gives the same bytes with the same FFmpeg/x264/libvpx build.
    """
    import av

    frames = np.asarray(frames_rgb)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[0] < 1:
        raise ValueError(f"expected (F, H, W, 3) uint8 with F >= 1, got {frames.shape} {frames.dtype}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    _, H, W, _ = frames.shape
    if H % 2 or W % 2:
        frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")  # (F, H', W', 3)
    codec = _pick_video_codec(fmt)
    rate = Fraction(fps).limit_denominator(1001)
    buf = io.BytesIO()
    container_format = "mp4" if fmt is MediaFormat.MP4 else "webm"
    with av.open(buf, mode="w", format=container_format, container_options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(codec, rate=rate, options=dict(_CODEC_OPTIONS[codec]))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(_rgb_to_yuv420p(frame), format="yuv420p")
            vf.pts, vf.time_base = i, 1 / rate
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():  # flush delayed frames
            out.mux(packet)
    return buf.getvalue()


def _gif_palette_frames(rgba: np.ndarray) -> tuple[list[Image.Image], int | None]:
    """Map ``(F, H, W, 4)`` frames to 'P' images sharing one global palette (+ a transparent index).

    Alpha is binarised at 128 (GIF has 1-bit transparency). With <= 255 distinct opaque colours
    across all frames the palette is exact; otherwise a median-cut palette is fitted to all frames
    (no dithering, so the output is deterministic and flat areas stay flat).
    """
    F, H, W, _ = rgba.shape
    transparent = rgba[..., 3] < 128  # (F, H, W)
    use_alpha = bool(transparent.any())
    rgb = rgba[..., :3]
    keys = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    opaque_keys = np.unique(keys[~transparent]) if (~transparent).any() else np.zeros(1, np.uint32)
    n_colours = 255 if use_alpha else 256
    if len(opaque_keys) <= n_colours:
        palette = np.stack([(opaque_keys >> 16) & 255, (opaque_keys >> 8) & 255, opaque_keys & 255], 1)
        index = np.searchsorted(opaque_keys, keys).astype(np.uint8)  # (F, H, W); exact for opaque pixels
    else:
        mosaic = Image.fromarray(np.ascontiguousarray(rgb).reshape(F * H, W, 3), "RGB")  # frames stacked
        quant = mosaic.quantize(colors=n_colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        index = np.asarray(quant).reshape(F, H, W).copy()  # (F, H, W)
        palette = np.asarray(quant.getpalette()[: 3 * n_colours], np.uint8).reshape(-1, 3)
    transparency = None
    if use_alpha:
        transparency = len(palette)
        index[transparent] = transparency
        palette = np.concatenate([palette, np.zeros((1, 3), palette.dtype)])
    flat_palette = palette.astype(np.uint8).reshape(-1).tolist()
    images = [Image.fromarray(np.ascontiguousarray(idx), "P") for idx in index]
    for p in images:
        p.putpalette(flat_palette)
    return images, transparency


def encode_animated(
    frames_rgba: list[np.ndarray], durations_ms: list[int], fmt: MediaFormat, *, loop: int = 0
) -> bytes:
    """Encode ``(H, W, 4)`` (or ``(H, W, 3)``) uint8 frames as animated GIF, lossless WebP or APNG.

    Deterministic (no dithering, fixed settings). Caveats inherited from the encoders: all three merge
    *identical consecutive* frames into one with the summed duration, and GIF stores delays in 10 ms
    units with 1-bit alpha (alpha < 128 becomes transparent; disposal 2 so holes stay transparent).
    """
    if fmt not in (MediaFormat.GIF, MediaFormat.WEBP, MediaFormat.APNG):
        raise ValueError(f"encode_animated supports GIF/WEBP/APNG, got {fmt}")
    frames = [np.asarray(f) for f in frames_rgba]
    if not frames or len(frames) != len(durations_ms):
        raise ValueError(
            f"need >= 1 frame and one duration per frame, got {len(frames)} / {len(durations_ms)}"
        )
    if any(
        f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] not in (3, 4) or f.shape != frames[0].shape
        for f in frames
    ):
        raise ValueError("frames must all be (H, W, 3|4) uint8 of the same shape")
    rgba = np.stack(frames)  # (F, H, W, C)
    if rgba.shape[3] == 3:
        rgba = np.concatenate([rgba, np.full((*rgba.shape[:3], 1), 255, np.uint8)], axis=3)  # (F, H, W, 4)
    durations = [int(d) for d in durations_ms]
    if min(durations) <= 0:
        raise ValueError(f"durations must be positive, got {durations}")
    buf = io.BytesIO()
    common = {"save_all": True, "duration": durations, "loop": loop}
    if fmt is MediaFormat.GIF:
        images, transparency = _gif_palette_frames(rgba)
        extra: dict = {"disposal": 1, "optimize": False}
        if transparency is not None:
            extra.update(disposal=2, transparency=transparency, background=transparency)
        images[0].save(buf, format="GIF", append_images=images[1:], **common, **extra)
    else:
        images = [Image.fromarray(f, "RGBA") for f in rgba]
        if fmt is MediaFormat.WEBP:
            extra = {"lossless": True, "quality": 100, "method": 4, "exact": True, "allow_mixed": False}
            images[0].save(buf, format="WEBP", append_images=images[1:], **common, **extra)
        else:  # APNG: the first frame is also the default image; no blending, no disposal
            extra = {
                "default_image": False,
                "disposal": 0,
                "blend": 0,
                "optimize": False,
                "compress_level": 6,
            }
            images[0].save(buf, format="PNG", append_images=images[1:], **common, **extra)
    return buf.getvalue()
