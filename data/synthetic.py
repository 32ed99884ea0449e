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

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem
from PIL import Image

from data.atomic import atomic_write
from data.media import MediaFormat
from data.media_encode import encode_animated, encode_video
from data.synthetic_drawing import (
    BACKGROUNDS,
    COLOURS,
    MOTION_WORDS,
    SHAPES,
    TEXTS,
    MotionKind,
    SubjectKind,
    fill,
    motion_params,
    sprite,
    text_layer,
)

CAPTIONS_FILE = "captions.jsonl"
VIDEO_FORMATS = frozenset({MediaFormat.MP4, MediaFormat.WEBM})




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
    bg = (0, 0, 0, 0) if transparent else fill(BACKGROUNDS[bg_name])
    overlay = text_layer(text, w, h, text_fill) if text else None

    def render(mot: MotionKind, count: int) -> list[np.ndarray]:
        frames = []
        for i in range(count):
            dx, dy, angle, scale, eyes_open = motion_params(mot, i / count, count, w, h, spin)
            spr = sprite(subject, sprite_side, COLOURS[colour], face, eyes_open, expr)
            if scale != 1.0:
                side = max(4, round(sprite_side * scale))
                spr = spr.resize((side, side), Image.Resampling.NEAREST)
            if angle % 360:
                spr = spr.rotate(angle, resample=Image.Resampling.NEAREST, expand=True)
            canvas = Image.new("RGBA", (w, h), bg)
            canvas.paste(spr, (round(cx0 + dx - spr.width / 2), round(cy0 + dy - spr.height / 2)), spr)
            if overlay is not None:
                canvas.paste(overlay, (0, 0), overlay)
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
