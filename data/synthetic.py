"""Synthetic animated-sticker drops: a stand-in for the real (unavailable) sticker data.

RDTF (arXiv 2503.17735) trains on a proprietary corpus of animated stickers. The pipeline, its tests,
the demo and the benchmarks still need input that stresses the same code paths, so this module draws
stickers that *look* like stickers -- flat-colour emoji faces, cats, bears and shapes with thick dark
outlines, optional outlined text ("LOL", "GG"...), transparent or flat backgrounds -- animated with the
simple loops real stickers use (bounce, spin, sway, blink, pulse, shake) and written in every format
the ingest stage must handle (GIF, WebP, APNG, MP4, WebM).

Frame counts follow the long tail of the paper's Fig. 2: most stickers have a handful of frames
(2-8), a tail reaches 40+ and a rare few approach 100. Durations are multiples of 10 ms so that GIF
(centisecond delays) stores them exactly and decoded durations can be compared with ground truth.

Everything is a pure function of ``(seed, index)``: sticker ``i`` is drawn from its own
``numpy.random.default_rng([seed, i])`` stream, so it is identical whatever ``n`` is and the same seed
gives byte-identical drops. Rendering is deliberately aliased (no anti-aliasing, nearest-neighbour
transforms): every frame uses a dozen exact colours, so GIF palettes are lossless and "two frames are
equal" means the same thing before and after encoding (encoders merge equal consecutive frames, and
so does the ground truth here).

A drop is a folder with media files plus ``captions.jsonl``; readers treat the drop as ready once
``captions.jsonl`` exists, so it is always written last and atomically. ``inject_faults`` then adds
hostile entries (truncated files, decompression bombs, bad rows...) for the ingest tests.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem
from PIL import Image, ImageDraw, ImageFont

from data.atomic import atomic_write
from data.media import MediaFormat
from data.media_encode import encode_animated, encode_video

CAPTIONS_FILE = "captions.jsonl"
VIDEO_FORMATS = frozenset({MediaFormat.MP4, MediaFormat.WEBM})


class MotionKind(StrEnum):
    """How a sticker moves; combos are first-class members so a sticker has one motion label."""

    BOUNCE = "bounce"
    ROTATE = "rotate"
    WAVE = "wave"
    BLINK = "blink"
    ZOOM = "zoom"
    SHAKE = "shake"
    BOUNCE_BLINK = "bounce+blink"
    WAVE_BLINK = "wave+blink"
    ROTATE_ZOOM = "rotate+zoom"
    SHAKE_ZOOM = "shake+zoom"
    BOUNCE_ZOOM = "bounce+zoom"

    @property
    def parts(self) -> tuple[MotionKind, ...]:
        return tuple(MotionKind(p) for p in self.value.split("+"))


class SubjectKind(StrEnum):
    FACE = "face"
    CAT = "cat"
    BEAR = "bear"
    STAR = "star"
    HEART = "heart"
    CIRCLE = "circle"
    SQUARE = "square"
    TRIANGLE = "triangle"


SHAPES = (SubjectKind.STAR, SubjectKind.HEART, SubjectKind.CIRCLE, SubjectKind.SQUARE, SubjectKind.TRIANGLE)
# Verbs a caption may use for each elementary motion; tests use them to check captions mention it.
MOTION_WORDS: dict[MotionKind, tuple[str, ...]] = {
    MotionKind.BOUNCE: ("bouncing", "hopping", "jumping up and down"),
    MotionKind.ROTATE: ("spinning", "rotating", "turning around"),
    MotionKind.WAVE: ("swaying", "rocking side to side", "waving back and forth"),
    MotionKind.BLINK: ("blinking",),
    MotionKind.ZOOM: ("pulsing", "zooming in and out", "growing and shrinking"),
    MotionKind.SHAKE: ("shaking", "trembling", "vibrating"),
}
TEXTS = ("LOL", "OK", "HI", "WOW", "GG", "NO", "YES", "BRB", "OMG", "YAY", "HMM", "BYE", "THX", "LOVE")
COLOURS: dict[str, tuple[int, int, int]] = {
    "yellow": (255, 210, 40),
    "orange": (255, 140, 30),
    "red": (230, 55, 55),
    "pink": (255, 120, 180),
    "purple": (150, 90, 220),
    "blue": (55, 125, 240),
    "teal": (30, 190, 170),
    "green": (80, 200, 80),
    "brown": (165, 105, 60),
    "white": (246, 246, 246),
    "grey": (150, 150, 162),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "light blue": (190, 225, 255),
    "mint": (200, 245, 220),
    "cream": (255, 245, 210),
    "lavender": (228, 215, 255),
    "peach": (255, 220, 200),
    "black": (28, 28, 36),
}
OUTLINE = (34, 30, 40, 255)  # near-black outline shared by every drawing: the "sticker" look
SHINE = (255, 255, 255, 255)
BLUSH = (255, 150, 170, 255)
TONGUE = (235, 80, 90, 255)


@dataclass
class SyntheticConfig:
    n: int = 200  # stickers per drop (make_drop's own n/seed arguments take precedence)
    seed: int = 0  # drop seed; sticker i uses default_rng([seed, i])
    format_weights: dict[str, float] = field(
        default_factory=lambda: {"gif": 0.35, "webp": 0.25, "apng": 0.15, "mp4": 0.15, "webm": 0.10}
    )  # relative format mix
    min_size: int = 96  # smallest canvas side in pixels
    max_size: int = 384  # largest canvas side in pixels
    non_square_prob: float = 0.25  # chance of a non-square canvas
    max_aspect: float = 1.5  # largest long/short side ratio of non-square canvases
    video_multiple: int = 2  # MP4/WebM sides are snapped down to a multiple of this (even at least)
    frames_log_mu: float = 1.4  # frames = min_frames + floor(lognormal(mu, sigma)): Fig. 2 long tail
    frames_log_sigma: float = 1.1  # spread of that lognormal (bigger = heavier tail)
    min_frames: int = 2  # an animation needs at least two frames
    max_frames: int = 120  # hard cap on the tail
    min_duration_ms: int = 40  # shortest per-frame duration (multiple of 10 for exact GIF delays)
    max_duration_ms: int = 200  # longest base per-frame duration
    hold_prob: float = 0.25  # chance that the first and/or last frame is held (non-uniform durations)
    hold_max_ms: int = 1500  # longest held frame
    transparent_prob: float = 0.5  # chance of a transparent background (image formats only)
    text_prob: float = 0.35  # chance of an outlined text overlay
    shape_face_prob: float = 0.4  # chance that a plain shape gets a cute face (and can blink)


@dataclass
class SyntheticSticker:
    id: str
    caption: str
    fmt: MediaFormat
    frames_rgba: list[np.ndarray]  # HxWx4 uint8; alpha is exactly 0 or 255
    durations_ms: list[int]  # per frame, multiples of 10
    motion: MotionKind
    subject: SubjectKind
    colour: str
    text: str | None
    transparent: bool  # background alpha 0 (never for video formats)

    @property
    def n_frames(self) -> int:
        return len(self.frames_rgba)

    @property
    def filename(self) -> str:
        return f"{self.id}.{self.fmt.extension}"

    @property
    def fps(self) -> float:
        """Constant rate used for video formats (their durations are uniform by construction)."""
        return 1000.0 / self.durations_ms[0]

    def encode(self) -> bytes:
        if self.fmt in VIDEO_FORMATS:
            rgb = np.stack([f[..., :3] for f in self.frames_rgba])
            return encode_video(rgb, self.fps, self.fmt)
        return encode_animated(self.frames_rgba, self.durations_ms, self.fmt)


@dataclass
class DropSummary:
    path: str  # the drop URL as given
    n: int  # stickers written
    counts: dict[str, int]  # stickers per format value ("gif", "mp4", ...)
    n_frames: list[int]  # per sticker, in index order
    total_bytes: int  # media plus captions.jsonl
    seconds: float  # wall time of make_drop

    @property
    def frame_histogram(self) -> dict[int, int]:
        return dict(sorted(Counter(self.n_frames).items()))


def sticker_id(seed: int, index: int) -> str:
    return f"stk-{seed}-{index:06d}"


# ----------------------------------------------------------------------------------------- drawing
def _fill(rgb: tuple[int, int, int]) -> tuple[int, int, int, int]:
    return (*rgb, 255)


def _lighter(rgb: tuple[int, int, int], k: float = 0.55) -> tuple[int, int, int, int]:
    return _fill(tuple(int(c + (255 - c) * k) for c in rgb))


class _Pen:
    """ImageDraw in unit coordinates (fractions of the sprite side) with the sticker outline built in."""

    def __init__(self, im: Image.Image):
        self.draw, self.s = ImageDraw.Draw(im), im.width
        self.w = max(2, round(self.s / 22))  # thick outline, proportional so small stickers keep it

    def _px(self, pts: Sequence) -> list:
        if isinstance(pts[0], tuple):
            return [(x * self.s, y * self.s) for x, y in pts]
        return [v * self.s for v in pts]

    def _width(self, thin: bool) -> int:
        return max(1, self.w // 2) if thin else self.w

    def ellipse(self, box: Sequence[float], fill: tuple, outline: bool = True, thin: bool = False) -> None:
        self.draw.ellipse(
            self._px(box), fill=fill, outline=OUTLINE if outline else None, width=self._width(thin)
        )

    def polygon(self, pts: Sequence[tuple[float, float]], fill: tuple, outline: bool = True) -> None:
        self.draw.polygon(self._px(pts), fill=fill, outline=OUTLINE if outline else None, width=self.w)

    def rounded(self, box: Sequence[float], radius: float, fill: tuple) -> None:
        self.draw.rounded_rectangle(
            self._px(box), radius=radius * self.s, fill=fill, outline=OUTLINE, width=self.w
        )

    def arc(self, box: Sequence[float], start: int, end: int, thin: bool = False) -> None:
        self.draw.arc(self._px(box), start, end, fill=OUTLINE, width=self._width(thin))

    def chord(self, box: Sequence[float], fill: tuple) -> None:
        self.draw.chord(self._px(box), 0, 180, fill=fill)

    def line(self, pts: Sequence[tuple[float, float]]) -> None:
        self.draw.line(self._px(pts), fill=OUTLINE, width=self._width(True))


def _draw_face(pen: _Pen, eyes_open: bool, expr: str, eye_y: float, thin_mouth: bool) -> None:
    for cx in (0.36, 0.64):
        if eyes_open:
            pen.ellipse((cx - 0.055, eye_y - 0.085, cx + 0.055, eye_y + 0.085), OUTLINE, outline=False)
            g, gx, gy = max(0.022, 1 / pen.s), cx - 0.006, eye_y - 0.038  # glint: reads as "cute" when small
            pen.ellipse((gx - g, gy - g, gx + g, gy + g), SHINE, outline=False)
        else:
            pen.arc((cx - 0.07, eye_y - 0.06, cx + 0.07, eye_y + 0.06), 200, 340)
    y = eye_y + 0.2
    if expr == "laughing":
        pen.chord((0.32, y - 0.12, 0.68, y + 0.14), OUTLINE)
        pen.chord((0.42, y + 0.03, 0.58, y + 0.13), TONGUE)
    elif expr == "surprised":
        pen.ellipse((0.45, y - 0.02, 0.55, y + 0.11), OUTLINE, outline=False)
    else:
        pen.arc((0.33, y - 0.14, 0.67, y + 0.1), 25, 155, thin=thin_mouth)


def _star_points() -> list[tuple[float, float]]:
    radius = (0.47, 0.2)  # alternating outer and inner vertices
    return [
        (
            0.5 + radius[k % 2] * math.cos(math.pi * (k / 5 - 0.5)),
            0.54 + radius[k % 2] * math.sin(math.pi * (k / 5 - 0.5)),
        )
        for k in range(10)
    ]


def _heart_points() -> list[tuple[float, float]]:
    ts = [2 * math.pi * k / 64 for k in range(64)]  # the classic parametric heart curve
    return [
        (
            0.5 + 16 * math.sin(t) ** 3 / 35,
            0.47 - (13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)) / 35,
        )
        for t in ts
    ]


@lru_cache(maxsize=64)
def _sprite(
    subject: SubjectKind, s: int, colour: tuple[int, int, int], face: bool, eyes_open: bool, expr: str
) -> Image.Image:
    """The subject on a transparent s x s canvas; cached because only the eyes change between frames."""
    im = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    pen = _Pen(im)
    body, light = _fill(colour), _lighter(colour)
    m = (pen.w / 2 + 1) / s  # keeps the outline inside the canvas
    eye_y = 0.42
    if subject is SubjectKind.CAT:
        for sx in (1, -1):  # ears first so the head overlaps their base
            pen.polygon([(0.5 - sx * 0.42, 0.42), (0.5 - sx * 0.36, 0.04), (0.5 - sx * 0.1, 0.26)], body)
            pen.polygon(
                [(0.5 - sx * 0.36, 0.34), (0.5 - sx * 0.33, 0.14), (0.5 - sx * 0.18, 0.27)], BLUSH, False
            )
        pen.ellipse((m, 0.14, 1 - m, 1 - m), body)
        pen.polygon([(0.46, 0.6), (0.54, 0.6), (0.5, 0.65)], BLUSH, outline=False)  # nose
        for sx in (1, -1):
            for dy in (-0.06, 0.06):  # whiskers
                pen.line([(0.5 + sx * 0.2, 0.64), (0.5 + sx * 0.44, 0.62 + dy)])
        eye_y = 0.52
    elif subject is SubjectKind.BEAR:
        for cx in (0.2, 0.8):
            pen.ellipse((cx - 0.16, 0.04, cx + 0.16, 0.36), body)
            pen.ellipse((cx - 0.08, 0.12, cx + 0.08, 0.28), light, outline=False)
        pen.ellipse((m, 0.12, 1 - m, 1 - m), body)
        pen.ellipse((0.33, 0.56, 0.67, 0.84), light, thin=True)  # muzzle
        pen.ellipse((0.45, 0.58, 0.55, 0.65), OUTLINE, outline=False)  # nose
        eye_y = 0.48
    else:
        if subject is SubjectKind.STAR:
            pen.polygon(_star_points(), body)
        elif subject is SubjectKind.HEART:
            pen.polygon(_heart_points(), body)
        elif subject is SubjectKind.SQUARE:
            pen.rounded((m + 0.06, m + 0.06, 0.94 - m, 0.94 - m), 0.14, body)
        elif subject is SubjectKind.TRIANGLE:
            pen.polygon([(0.5, 0.06), (1 - m, 0.9), (m, 0.9)], body)
            eye_y = 0.54
        else:  # CIRCLE and FACE share the round body
            pen.ellipse((m, m, 1 - m, 1 - m), body)
        if subject is SubjectKind.FACE:
            pen.ellipse((0.18, 0.55, 0.28, 0.62), BLUSH, outline=False)
            pen.ellipse((0.72, 0.55, 0.82, 0.62), BLUSH, outline=False)
        else:  # off-centre highlight: the flat-shaded look, and it makes a spinning circle visibly spin
            top = 0.42 if subject is SubjectKind.TRIANGLE else 0.2
            pen.ellipse((0.3, top, 0.4, top + 0.08), SHINE, outline=False)
    if face:
        _draw_face(pen, eyes_open, expr, eye_y, thin_mouth=subject is SubjectKind.BEAR)
    return im


@lru_cache(maxsize=32)
def _text_layer(text: str, width: int, height: int, fill: tuple[int, int, int, int]) -> Image.Image:
    """Outlined caption text along the bottom edge, rendered once and pasted on every frame."""
    size = max(10, min(int(height * 0.2), int(width / (0.72 * len(text) + 0.6))))
    font = ImageFont.load_default(size=size)
    stroke = max(1, size // 9)
    masks = []
    for sw in (stroke, 0):  # outer mask (glyph + stroke), then the glyph alone
        m = Image.new("L", (width, height), 0)
        ImageDraw.Draw(m).text(
            (width / 2, height * 0.97),
            text,
            font=font,
            fill=255,
            anchor="ms",
            stroke_width=sw,
            stroke_fill=255,
        )
        masks.append(np.asarray(m) >= 128)  # hard threshold: FreeType anti-aliases even the stroke
    layer = np.zeros((height, width, 4), np.uint8)
    layer[masks[0]] = OUTLINE
    layer[masks[1]] = fill
    return Image.fromarray(layer, "RGBA")


def _motion_params(
    motion: MotionKind, t: float, n: int, w: int, h: int, spin: int
) -> tuple[float, float, float, float, bool]:
    """(dx, dy, angle, scale, eyes_open) at loop phase t in [0, 1): periodic, so clips loop smoothly."""
    dx = dy = angle = 0.0
    scale, eyes_open = 1.0, True
    amp = 0.1 * min(w, h)
    for p in motion.parts:
        if p is MotionKind.BOUNCE:
            dy -= 1.2 * amp * abs(math.sin(math.pi * t))
        elif p is MotionKind.ROTATE:
            angle += spin * 360.0 * t
        elif p is MotionKind.WAVE:
            dx += amp * math.sin(2 * math.pi * t)
            angle -= 12.0 * math.sin(2 * math.pi * t)
        elif p is MotionKind.BLINK:
            # Eyes shut for the last ~15% of the loop (at least one frame) -- a natural blink.
            eyes_open = t < 1.0 - max(0.15, 1.0 / n) + 1e-9
        elif p is MotionKind.ZOOM:
            scale *= 1.0 + 0.16 * math.sin(2 * math.pi * t)
        elif p is MotionKind.SHAKE:
            k = 1 if n < 6 else 2 if n < 14 else 3  # several jitters per loop, still periodic
            dx += 0.45 * amp * math.sin(2 * math.pi * k * t + 0.7)
            angle += 6.0 * math.sin(2 * math.pi * k * t)
    return dx, dy, angle, scale, eyes_open


def _merge_repeats(frames: list[np.ndarray], durations: list[int]) -> tuple[list[np.ndarray], list[int]]:
    """Fold equal consecutive frames into one longer frame, as GIF/WebP/APNG encoders do on write."""
    out_f, out_d = [frames[0]], [durations[0]]
    for f, d in zip(frames[1:], durations[1:], strict=True):
        if np.array_equal(f, out_f[-1]):
            out_d[-1] += d
        else:
            out_f.append(f)
            out_d.append(d)
    return out_f, out_d


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _sample_n_frames(rng: np.random.Generator, cfg: SyntheticConfig) -> int:
    tail = math.floor(rng.lognormal(cfg.frames_log_mu, cfg.frames_log_sigma))
    return int(min(cfg.max_frames, cfg.min_frames + tail))


def _caption(
    rng: np.random.Generator,
    subject: SubjectKind,
    colour: str,
    expr: str,
    face: bool,
    motion: MotionKind,
    text: str | None,
    bg: str | None,
) -> str:
    noun = {
        SubjectKind.FACE: _pick(rng, ("face", "emoji face", "round face")),
        SubjectKind.CAT: _pick(rng, ("cat", "kitty", "cartoon cat")),
        SubjectKind.BEAR: _pick(rng, ("bear", "teddy bear", "cartoon bear")),
    }.get(subject, subject.value)
    if face or subject is SubjectKind.FACE:
        noun = f"{expr} {noun}"
    verbs = [_pick(rng, MOTION_WORDS[p]) for p in motion.parts]
    verb = " and ".join(verbs)
    article = "an" if colour[0] in "aeiou" else "a"
    thing = f"{article} {colour} {noun}"
    text_part = (
        ""
        if text is None
        else _pick(rng, (f" with the text '{text}'", f" saying '{text}'", f", with '{text}' written below"))
    )
    bg_part = "" if bg is None else _pick(rng, (f" on a {bg} background", f", {bg} background"))
    templates = (
        f"{thing} {verb}{text_part}{bg_part}",
        f"{verb.capitalize()} {colour} {noun}{text_part}{bg_part}",
        f"animated sticker of {thing} {verb}{text_part}{bg_part}",
        f"cute cartoon {colour} {noun} {verb}{bg_part}{text_part}",
    )
    return templates[int(rng.integers(len(templates)))]


def generate_sticker(seed: int, index: int, cfg: SyntheticConfig) -> SyntheticSticker:
    """Draw sticker ``index`` of drop ``seed``: a pure function of its arguments (no I/O)."""
    rng = np.random.default_rng([seed, index])
    fmts = [MediaFormat(k) for k in cfg.format_weights]
    p = np.array(list(cfg.format_weights.values()), dtype=float)
    fmt = fmts[int(rng.choice(len(fmts), p=p / p.sum()))]
    is_video = fmt in VIDEO_FORMATS

    w = h = int(rng.integers(cfg.min_size, cfg.max_size + 1))
    if rng.random() < cfg.non_square_prob:
        other = int(round(w / rng.uniform(1.1, cfg.max_aspect)))
        w, h = (
            (w, max(cfg.min_size // 2, other)) if rng.random() < 0.5 else (max(cfg.min_size // 2, other), w)
        )
    if is_video:  # 4:2:0 chroma subsampling wants even sides (the encoder would pad otherwise)
        k = max(2, cfg.video_multiple + cfg.video_multiple % 2)
        w, h = max(k, w - w % k), max(k, h - h % k)

    subject: SubjectKind = _pick(rng, list(SubjectKind))
    face = subject not in SHAPES or rng.random() < cfg.shape_face_prob  # faces, cats and bears always
    colour = str(_pick(rng, list(COLOURS)))
    expr = str(_pick(rng, ("smiling", "smiling", "laughing", "surprised")))
    motions = [m for m in MotionKind if face or MotionKind.BLINK not in m.parts]  # blinking needs eyes
    motion = motions[int(rng.integers(len(motions)))]
    spin = 1 if rng.random() < 0.5 else -1
    text = str(_pick(rng, TEXTS)) if rng.random() < cfg.text_prob else None
    text_fill = _pick(rng, ((255, 255, 255, 255), (255, 220, 40, 255), (255, 110, 150, 255)))
    transparent = (not is_video) and rng.random() < cfg.transparent_prob
    bg_name = None if transparent else str(_pick(rng, list(BACKGROUNDS)))

    n = _sample_n_frames(rng, cfg)
    if is_video:  # constant fps: uniform durations that divide a second exactly
        steps = [d for d in (40, 50, 100, 200, 250) if cfg.min_duration_ms <= d <= cfg.max_duration_ms]
        base = int(_pick(rng, steps or [cfg.min_duration_ms]))
        durations = [base] * n
    else:
        base = 10 * int(rng.integers(cfg.min_duration_ms // 10, cfg.max_duration_ms // 10 + 1))
        durations = [base] * n
        if rng.random() < cfg.hold_prob:  # held first and/or last frame, as in many real stickers
            hold = min(cfg.hold_max_ms, base * int(rng.integers(3, 11)))
            durations[0 if rng.random() < 0.5 else -1] = hold

    sprite_side = int(min(w, h) * (0.52 if text else 0.62))
    cx0, cy0 = w / 2, h * (0.44 if text else 0.5)
    if MotionKind.BOUNCE in motion.parts:
        cy0 += 0.06 * min(w, h)  # centre the hop vertically
    bg = (0, 0, 0, 0) if transparent else _fill(BACKGROUNDS[bg_name])
    text_layer = _text_layer(text, w, h, text_fill) if text else None

    def render(mot: MotionKind, count: int) -> list[np.ndarray]:
        frames = []
        for i in range(count):
            dx, dy, angle, scale, eyes_open = _motion_params(mot, i / count, count, w, h, spin)
            spr = _sprite(subject, sprite_side, COLOURS[colour], face, eyes_open, expr)
            if scale != 1.0:
                side = max(4, round(sprite_side * scale))
                spr = spr.resize((side, side), Image.Resampling.NEAREST)
            if angle % 360:
                spr = spr.rotate(angle, resample=Image.Resampling.NEAREST, expand=True)
            canvas = Image.new("RGBA", (w, h), bg)
            canvas.paste(spr, (round(cx0 + dx - spr.width / 2), round(cy0 + dy - spr.height / 2)), spr)
            if text_layer is not None:
                canvas.paste(text_layer, (0, 0), text_layer)
            a = np.asarray(canvas, dtype=np.uint8).copy()
            a[a[..., 3] == 0] = 0  # canonical transparent pixels: frame equality means visual equality
            frames.append(a)
        return frames

    frames = render(motion, n)
    if not is_video:
        frames, durations = _merge_repeats(frames, durations)
        if len(frames) < 2:  # nothing visibly moved at this size: fall back to a hop, always visible
            motion, n = MotionKind.BOUNCE, max(2, n + n % 2)
            frames, durations = _merge_repeats(render(motion, n), [base] * n)
    caption = _caption(rng, subject, colour, expr, face and subject in SHAPES, motion, text, bg_name)
    return SyntheticSticker(
        id=sticker_id(seed, index),
        caption=caption,
        fmt=fmt,
        frames_rgba=frames,
        durations_ms=durations,
        motion=motion,
        subject=subject,
        colour=colour,
        text=text,
        transparent=transparent,
    )


# ------------------------------------------------------------------------------------------ drops
def _render_encoded(job: tuple[int, int, SyntheticConfig]) -> tuple[str, str, bytes, str, str, int]:
    """Worker: draw and encode one sticker (runs in a spawned process when workers > 1)."""
    seed, index, cfg = job
    st = generate_sticker(seed, index, cfg)
    return st.id, st.filename, st.encode(), st.caption, st.fmt.value, st.n_frames


def caption_row(sid: str, file: str, caption: str | None) -> bytes:
    return json.dumps({"id": sid, "file": file, "caption": caption}, ensure_ascii=False).encode() + b"\n"


def join_url(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def publish_captions(fs: fsspec.AbstractFileSystem, root: str, data: bytes) -> None:
    """Publish captions.jsonl atomically: readers either see no manifest or the whole one."""
    final = join_url(root, CAPTIONS_FILE)
    if isinstance(fs, LocalFileSystem):
        atomic_write(final, data)
    else:
        fs.pipe_file(final, data)  # one PUT: object stores publish an object all at once


def make_drop(
    out: str,
    n: int = 200,
    seed: int = 0,
    cfg: SyntheticConfig | None = None,
    *,
    workers: int = 1,
    progress: bool = True,
) -> DropSummary:
    """Write ``n`` synthetic stickers and then captions.jsonl to the drop folder ``out`` (any fsspec URL).

    ``n`` and ``seed`` override ``cfg.n``/``cfg.seed``. An existing manifest is removed first, so a
    re-generated drop is never "ready" while its media files are being rewritten.
    """
    from tqdm.auto import tqdm

    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (stickers to write), got {n!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    cfg = cfg or SyntheticConfig()
    t0 = time.perf_counter()
    fs, root = fsspec.core.url_to_fs(out)
    fs.makedirs(root, exist_ok=True)
    if fs.exists(join_url(root, CAPTIONS_FILE)):
        fs.rm_file(join_url(root, CAPTIONS_FILE))
    jobs = [(seed, i, cfg) for i in range(n)]
    rows: list[bytes] = []
    counts: Counter[str] = Counter()
    n_frames: list[int] = []
    total = 0

    def results() -> Iterator[tuple[str, str, bytes, str, str, int]]:
        if workers <= 1 or n < 2:
            yield from map(_render_encoded, jobs)
            return
        # spawn: safe with threads (Dagster) and identical on every OS; writes stay in this process so
        # in-process filesystems such as memory:// work too. imap keeps index order -> deterministic.
        with mp.get_context("spawn").Pool(min(workers, n)) as pool:
            yield from pool.imap(_render_encoded, jobs, chunksize=max(1, min(8, n // (4 * workers))))

    with tqdm(total=n, desc="synthetic stickers", unit="stk", disable=not progress) as bar:
        for sid, fname, data, caption, fmt, frames in results():
            fs.pipe_file(join_url(root, fname), data)
            rows.append(caption_row(sid, fname, caption))
            counts[fmt] += 1
            n_frames.append(frames)
            total += len(data)
            bar.update(1)
    manifest = b"".join(rows)
    publish_captions(fs, root, manifest)
    return DropSummary(
        path=out,
        n=n,
        counts=dict(sorted(counts.items())),
        n_frames=n_frames,
        total_bytes=total + len(manifest),
        seconds=time.perf_counter() - t0,
    )
