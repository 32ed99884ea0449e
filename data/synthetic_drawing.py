"""What a synthetic sticker looks like: subjects, motions, palettes and the aliased drawing code (``data.synthetic``
animates and encodes them). Drawing is deliberately aliased (no anti-aliasing, nearest-neighbour transforms): every
frame uses a dozen exact colours, so GIF palettes are lossless and frame equality survives encoding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont


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


def fill(rgb: tuple[int, int, int]) -> tuple[int, int, int, int]:
    return (*rgb, 255)


def _lighter(rgb: tuple[int, int, int], k: float = 0.55) -> tuple[int, int, int, int]:
    return fill(tuple(int(c + (255 - c) * k) for c in rgb))


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
def sprite(
    subject: SubjectKind, s: int, colour: tuple[int, int, int], face: bool, eyes_open: bool, expr: str
) -> Image.Image:
    """The subject on a transparent s x s canvas; cached because only the eyes change between frames."""
    im = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    pen = _Pen(im)
    body, light = fill(colour), _lighter(colour)
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
def text_layer(text: str, width: int, height: int, fill: tuple[int, int, int, int]) -> Image.Image:
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


def motion_params(
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
