"""The evaluation set: test-split ground truth + one generated clip per test sticker and task.

Paper Sec. 4 ("Dataset & Metrics"): 500 test stickers; Table 1/3/4 evaluate image&text→video (I&T→V),
Table 2 interpolation and pre/post prediction. The known frames of each task follow Table 7's condition
masks for 8 frames:

- ``t2v``            text only (GRT without a visual condition; beyond the paper's tables)
- ``i2v``            I&T→V: frame 0 + caption, mask ``[1 0 0 0 0 0 0 0]``
- ``interpolation``  every other frame known, mask ``[1 0 1 0 1 0 1 0]`` (Table 2 left)
- ``prediction``     the first 5 of 8 frames known, mask ``[1 1 1 1 1 0 0 0]`` (Table 2 right)
- ``i2v_image``      image only: frame 0, no caption, no text guidance (Table 7's text-free generation rows;
                     opt-in, not in :data:`DEFAULT_TASKS`: the paper reports no table for it)

Ground truth ("real" videos for FVD and the targets of PSNR/SSIM): the paper extracts a sticker's frames
by clustering (Sec. 3.2); a test clip is the sticker's ``k = F`` representative frames in temporal order.
A sticker with fewer distinct representatives than F is stretched to F frames by nearest-neighbour
repetition (documented interpretation; counted as ``n_stretched`` in the manifest).

Real sets (``EvalSamplesConfig.extra_real_sets``; paper Sec. 4 does not say how test clips were cut): besides
``real.npy`` (the k = F cluster representatives above, which also supply every task's known frames) a set can
be cut ``uniform`` — 8 frames at equal intervals over the sticker (``data.loader.uniform_frames``), only from
test stickers with at least F frames: exactly the distribution a model trained without DDU sees
(``frame_extraction = uniform``, Table 3 "DFGN"). FVD is then also reported against it
(``eval/<task>/fvd_uniform``), so an ablation ordering can be checked against both reference sets instead of
one that favours the DDU variants (``docs/ablation.md``). Saved as ``real_<name>.npy``.

Layout of ``out_dir`` (every file written atomically; a re-run with the same checkpoint and options is a
no-op): ``real.npy`` (N, F, S, S, 3) uint8, ``<task>.npy`` likewise, ``manifest.json`` (keys, captions,
known positions, seeds, checkpoint, options). Arrays are plain ``.npy`` read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from data.atomic import atomic_path, atomic_write
from data.storage import lake_path
from model.masks import SamplingTask
from training.progress import throttled

log = logging.getLogger(__name__)


class EvalTask(StrEnum):
    T2V = "t2v"  # text -> video
    I2V = "i2v"  # image & text -> video (paper Table 1, 3, 4)
    INTERPOLATION = "interpolation"  # Table 2 (left)
    PREDICTION = "prediction"  # Table 2 (right)
    I2V_IMAGE = "i2v_image"  # image only -> video, no text (Table 7's text-free generation rows; opt-in)

    @property
    def sampling_task(self) -> SamplingTask:
        """The inference task this protocol samples with (the one task vocabulary, ``model.masks``)."""
        return {EvalTask.T2V: SamplingTask.GENERATE, EvalTask.I2V: SamplingTask.GENERATE,
                EvalTask.I2V_IMAGE: SamplingTask.GENERATE_IMAGE, EvalTask.INTERPOLATION: SamplingTask.INTERPOLATE,
                EvalTask.PREDICTION: SamplingTask.PREDICT_FORWARD}[self]

    @property
    def uses_text(self) -> bool:
        """Whether the caption conditions the task (all but image-only generation)."""
        return self.sampling_task.uses_text

    def known_positions(self, num_frames: int) -> list[int]:
        """Frames given as conditions (Table 7's masks, generalised to ``num_frames``)."""
        F = num_frames
        if self is EvalTask.T2V:
            return []
        if self in (EvalTask.I2V, EvalTask.I2V_IMAGE):
            return [0]
        if self is EvalTask.INTERPOLATION:
            return list(range(0, F, 2))
        return list(range(max(1, round(F * 5 / 8))))  # 5 of 8 known

    @property
    def has_ground_truth(self) -> bool:
        """Tasks whose generated frames have a target (interpolation and prediction)."""
        return self in (EvalTask.INTERPOLATION, EvalTask.PREDICTION)


EXTRA_REAL_SETS = ("uniform",)  # reference sets beside the cluster representatives (real.npy)
DEFAULT_TASKS = ("t2v", "i2v", "interpolation", "prediction")  # the image-only task is opt-in (not in the paper's tables)


def parse_tasks(names: Iterable[str]) -> list[EvalTask]:
    out = []
    for n in names:
        try:
            out.append(EvalTask(n))
        except ValueError:
            raise ValueError(f"unknown evaluation task {n!r}; allowed: {[t.value for t in EvalTask]}") from None
    if not out:
        raise ValueError(f"no evaluation tasks given; allowed: {[t.value for t in EvalTask]}")
    return out


@dataclass(frozen=True)
class EvalSamplesConfig:
    tasks: tuple[str, ...] = DEFAULT_TASKS  # which tasks to generate (add "i2v_image" for image-only generation)
    n_videos: int = 500  # test stickers (paper: 500); fewer if the test split is smaller
    steps: int = 25  # DDIM steps (paper Sec. 4: 25)
    text_scale: float = 7.5  # Table 6
    image_scale: float = 7.5  # Table 6
    eta: float = 1.0  # Table 6: DDIM eta
    seed: int = 0  # batch b uses seed + b: fixed across runs so models are compared on the same noise
    batch_size: int = 8  # clips per sampler call (part of the noise layout, so recorded in the manifest)
    extra_real_sets: tuple[str, ...] = ()  # further reference sets for FVD: "uniform" (see module docstring)

    def __post_init__(self) -> None:
        parse_tasks(self.tasks)
        bad = [r for r in self.extra_real_sets if r not in EXTRA_REAL_SETS]
        if bad:
            raise ValueError(f"unknown extra real sets {bad}; allowed: {list(EXTRA_REAL_SETS)}")
        if self.n_videos < 1 or self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"n_videos, steps and batch_size must be >= 1, got {self.n_videos}, {self.steps}, "
                             f"{self.batch_size}")


def ground_truth_clip(frames: np.ndarray, reps: dict[str, list[int]], num_frames: int) -> tuple[np.ndarray, bool]:
    """frames (n, S, S, 3) + representatives per k -> (clip (F, S, S, 3), stretched?) — see module docstring."""
    ks = sorted((int(k) for k in reps if int(k) <= num_frames), reverse=True)
    if not ks:
        raise ValueError(f"no representatives with k <= {num_frames} (have k in {sorted(reps, key=int)})")
    idx = sorted({int(i) for i in reps[str(ks[0])] if 0 <= int(i) < len(frames)})
    if not idx:
        raise ValueError("representative indices are empty or out of range")
    if len(idx) >= num_frames:
        return frames[idx[:num_frames]], False
    pick = [idx[int(j * len(idx) / num_frames)] for j in range(num_frames)]  # nearest-neighbour stretch
    return frames[pick], True


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if frames.shape[1:3] == (size, size):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BICUBIC)) for f in frames])


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def _atomic_json(path: Path, obj: dict) -> None:
    atomic_write(path, json.dumps(obj, indent=2))


def checkpoint_fingerprint(ckpt_dir: str | Path) -> str:
    """Identifies the weights a sample set came from (path + trainer step + EMA file size/mtime)."""
    ckpt = lake_path(ckpt_dir)  # local folder or object-store URL (then: size + the store's modification time)
    meta = (ckpt / "trainer.json").read_text() if (ckpt / "trainer.json").exists() else ""
    ema = ckpt / "ema.safetensors"
    st = ema.stat() if ema.exists() else None
    stat = f"{st.st_size}:{getattr(st, 'st_mtime_ns', None) or st.st_mtime}" if st is not None else ""
    where = ckpt.resolve() if isinstance(ckpt, Path) else ckpt
    return hashlib.sha256(f"{where}|{meta}|{stat}".encode()).hexdigest()[:16]


@dataclass
class EvalSamples:
    """A loaded evaluation set (arrays memory-mapped: metrics stream them in batches)."""

    dir: Path
    manifest: dict
    real: np.ndarray  # (N, F, S, S, 3) uint8
    fakes: dict[EvalTask, np.ndarray] = field(default_factory=dict)  # task -> (N, F, S, S, 3) uint8
    extra_real: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N', F, S, S, 3) uint8 reference sets

    @property
    def captions(self) -> list[str]:
        return list(self.manifest["captions"])

    def known_positions(self, task: EvalTask) -> list[int]:
        return list(self.manifest["tasks"][task.value]["known_positions"])


def load_eval_samples(out_dir: str | Path) -> EvalSamples:
    d = Path(out_dir)
    mpath = d / "manifest.json"
    if not mpath.is_file():
        raise ValueError(f"{d} holds no evaluation samples (no manifest.json): materialize evaluation_samples first")
    manifest = json.loads(mpath.read_text())
    real = np.load(d / "real.npy", mmap_mode="r", allow_pickle=False)
    fakes = {EvalTask(t): np.load(d / f"{t}.npy", mmap_mode="r", allow_pickle=False) for t in manifest["tasks"]}
    for t, arr in fakes.items():
        if arr.shape != real.shape:
            raise ValueError(f"{d}/{t.value}.npy has shape {arr.shape}, real.npy {real.shape}")
    extra = {name: np.load(d / f"real_{name}.npy", mmap_mode="r", allow_pickle=False)
             for name in manifest.get("extra_real_sets", {})}
    return EvalSamples(d, manifest, real, fakes, extra)


def generate_eval_samples(pipe, test_samples: Iterable[dict], cfg: EvalSamplesConfig, out_dir: str | Path, *,
                          checkpoint: str | Path, extra: dict | None = None, report=None) -> dict:
    """Generate every task for the first ``cfg.n_videos`` test samples; returns the manifest.

    ``pipe`` is a :class:`model.pipeline.RDTFPipeline`; ``test_samples`` yields decoded shard samples
    ({"key", "frames", "caption", "meta"}). Skips all work when ``out_dir`` already holds a set made
    from the same checkpoint fingerprint and options.
    ``report(message)``: progress lines (``sampling t2v: 40/80 clip-steps …``), throttled to one per
    ``RDTF_PROGRESS_INTERVAL_S`` (the Dagster asset passes ``context.log.info``: the run log moves while it samples).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fp = checkpoint_fingerprint(checkpoint)
    options = json.loads(json.dumps(asdict(cfg)))  # as stored (tuples become lists), so re-runs compare equal
    mpath = out / "manifest.json"
    if mpath.is_file():
        old = json.loads(mpath.read_text())
        if old.get("fingerprint") == fp and old.get("options") == options:
            log.info("evaluation samples in %s are up to date (checkpoint %s), not regenerating", out, fp)
            return old
    F, S = pipe.num_frames, pipe.image_size
    keys, captions, clips, n_stretched = [], [], [], 0
    extra_sets: dict[str, list[np.ndarray]] = {name: [] for name in cfg.extra_real_sets}
    if extra_sets:
        from data.loader import uniform_frames
    for s in test_samples:
        clip, stretched = ground_truth_clip(s["frames"], s["meta"]["reps"], F)
        clips.append(_resize(clip, S))
        n_frames = int(s["meta"].get("n_frames", len(s["frames"])))
        if "uniform" in extra_sets and min(n_frames, len(s["frames"])) >= F:  # what uniform_frames can cut
            extra_sets["uniform"].append(_resize(uniform_frames(s["frames"], n_frames, F)[0], S))
        keys.append(s["key"])
        captions.append(s["caption"])
        n_stretched += stretched
        if len(clips) >= cfg.n_videos:
            break
    if len(clips) < 2:
        raise ValueError(f"the test split has {len(clips)} usable stickers; evaluation needs at least 2")
    real = np.stack(clips)  # (N, F, S, S, 3)
    tasks = parse_tasks(cfg.tasks)
    task_meta = {}
    tick = throttled(report or (lambda _msg: None))
    for ti, task in enumerate(tasks):
        pos = task.known_positions(F)
        outs = []
        batches = range(0, len(real), cfg.batch_size)
        # the bar counts DDIM steps of every clip (clips x steps), so it moves during a long batch
        bar = tqdm(total=len(real) * cfg.steps, desc=f"sampling {task.value}", unit="clip-step", leave=False)

        def on_step(n: int, bar=bar, task=task, ti=ti) -> None:
            bar.update(n)
            tick(f"sampling {task.value} (task {ti + 1}/{len(tasks)}): {bar.n}/{bar.total} clip-steps",
                 force=bar.n == n or bar.n >= bar.total)

        for b, i in enumerate(batches):
            chunk = real[i: i + cfg.batch_size]  # (b, F, S, S, 3)
            prompts = captions[i: i + cfg.batch_size] if task.uses_text else [""] * len(chunk)
            outs.append(pipe.sample_batch(prompts, chunk if pos else None, pos, num_inference_steps=cfg.steps,
                                          text_guidance_scale=cfg.text_scale if task.uses_text else 0.0,
                                          image_guidance_scale=cfg.image_scale, eta=cfg.eta, seed=cfg.seed + b,
                                          on_step=lambda n=len(chunk): on_step(n)))
            bar.set_postfix(clips=f"{i + len(chunk)}/{len(real)}")
        bar.close()
        _atomic_save(out / f"{task.value}.npy", np.concatenate(outs))
        task_meta[task.value] = {"known_positions": pos, "seeds": [cfg.seed + b for b in range(len(batches))]}
    _atomic_save(out / "real.npy", real)
    extra_meta = {}
    for name, arr in extra_sets.items():
        if len(arr) < 2:
            log.warning("real set %r has %d clip(s) (needs >= 2 test stickers of >= %d frames): not written",
                        name, len(arr), F)
            continue
        _atomic_save(out / f"real_{name}.npy", np.stack(arr))
        extra_meta[name] = {"n": len(arr)}
    manifest = {"fingerprint": fp, "checkpoint": str(checkpoint), "options": options, "keys": keys,
                "extra_real_sets": extra_meta,
                "captions": captions, "tasks": task_meta, "n_videos": len(real), "num_frames": F, "image_size": S,
                "n_stretched": n_stretched, **(extra or {})}
    _atomic_json(mpath, manifest)  # written last: a killed run never leaves a manifest pointing at stale arrays
    return manifest
