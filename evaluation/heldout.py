"""Held-out denoising loss per task on the test split, with fixed clips, masks, timesteps and noise.

The training objective (``training.trainer.Trainer.train_step``: DDPM ε-MSE over a loss mask, normalised by its
element count) evaluated on test-split stickers the model never saw, once per task. The loss mask is
``HeldoutConfig.loss_mask``: by default ``targets`` — the generated frames only, whatever profile the model was
trained with, because the conditioned frames' loss is near-trivial (their clean latent is in the input) and
would make models trained with different profiles look different for the wrong reason; ``first_k`` gives the
paper's training loss (``model.masks.LossMask``).

- ``i2v``            GRT with Table 7's generation mask ``[1 0 0 0 0 0 0 0]`` (the I&T->V task of Tables 3/4)
- ``interpolation``  IPT, mask ``[1 0 1 0 1 0 1 0]``
- ``prediction``     PDT, mask ``[1 1 1 1 1 0 0 0]``
- ``t2v``            GRT without a visual condition (optional)

(the known positions are :meth:`evaluation.samples.EvalTask.known_positions`, i.e. exactly the conditions the
sampled evaluation uses). Everything random is fixed, so two checkpoints are compared on identical inputs:

* clips: each test sticker's k = F cluster representatives in temporal order (``data.loader.select_frames``
  with k_min = k_max = F, the same frames as the evaluation ground truth), resized like the training loader;
  stickers with fewer distinct representatives keep their zero padding, which the loss mask excludes
  (as in training). A sticker where the task leaves no valid frame to generate is skipped for that task
  (counted in ``details``).
* timesteps: a fixed grid (default the midpoints of 4 equal strata of [0, 1000): 125, 375, 625, 875), every
  clip at every timestep — a stratified estimate of the training loss E_t[.] with uniform t.
* noise: one ``torch.Generator`` per grid timestep seeded with ``(seed, j)`` draws the noise of all clips.
* no classifier-free-guidance dropout and no "#" token dropout: the caption is always given.

The per-batch loss is computed by :func:`denoising_loss`, the same sequence of calls as the trainer's step
(``scheduler.add_noise`` -> condition latents by concatenation -> ``model(x, t, text(captions))`` ->
``model.masks.loss_weight`` / ``masked_mse``); ``tests/ablation/test_ablation.py`` checks that it reproduces the loss
``Trainer.train_step`` reports on the same batch, mask, noise and timesteps. Batches are combined exactly:
sum of (batch loss x weighted element count) / total count, i.e. one masked mean over all clips.

Metric names: ``eval/<task>/loss`` (the "held-out loss" column of :mod:`evaluation.comparison`), returned as a
:class:`evaluation.suite.MetricReport` named ``heldout_loss`` so :func:`evaluation.suite.log_report` logs it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from evaluation.samples import EvalTask, parse_tasks
from evaluation.suite import MetricReport

__all__ = ["HeldoutConfig", "denoising_loss", "heldout_clips", "run_heldout_loss"]


def _train_task(task: EvalTask):
    from model.masks import Task

    return {EvalTask.T2V: Task.GENERATION, EvalTask.I2V: Task.GENERATION, EvalTask.I2V_IMAGE: Task.GENERATION,
            EvalTask.INTERPOLATION: Task.INTERPOLATION, EvalTask.PREDICTION: Task.PREDICTION}[task]


@dataclass(frozen=True)
class HeldoutConfig:
    tasks: tuple[str, ...] = ("i2v", "interpolation", "prediction")  # GRT (I&T->V), IPT, PDT
    n_videos: int = 500  # first test stickers in index order (fewer if the split is smaller)
    timesteps: tuple[int, ...] = (125, 375, 625, 875)  # fixed DDPM timesteps, every clip at each
    seed: int = 0  # noise of grid timestep j comes from a generator seeded with (seed, j)
    batch_size: int = 8  # clips per forward (does not change the result: noise is drawn for all clips at once)
    loss_mask: str = "targets"  # targets (generated frames: comparable across training profiles) | first_k


    def __post_init__(self) -> None:
        parse_tasks(self.tasks)
        from model.masks import LossMask

        if self.loss_mask not in {m.value for m in LossMask}:
            raise ValueError(f"HeldoutConfig.loss_mask must be one of {[m.value for m in LossMask]}, got {self.loss_mask!r}")
        if self.n_videos < 1 or self.batch_size < 1 or not self.timesteps:
            raise ValueError(f"n_videos and batch_size must be >= 1 and timesteps non-empty, got {self.n_videos}, "
                             f"{self.batch_size}, {self.timesteps}")


def heldout_clips(test_samples: Iterable[dict], num_frames: int, image_size: int, n: int) -> dict:
    """First ``n`` decoded test samples -> {"frames" (N, F, 3, S, S) float in [-1, 1], "k" (N,), "captions", "keys"}.

    Frames are the k = F representatives (``data.loader.select_frames``) resized exactly like the training
    loader (antialiased bilinear in torch), padding frames are 0.0.
    """
    import torch.nn.functional as tF

    from data.loader import select_frames

    frames, ks, captions, keys = [], [], [], []
    rng = np.random.default_rng(0)  # unused: k_min == k_max makes select_frames deterministic
    for s in test_samples:
        clip, _valid, k = select_frames(s["frames"], s["meta"]["reps"], s["meta"]["n_frames"], rng, num_frames, num_frames,
                                        num_frames)
        x = torch.zeros(num_frames, 3, image_size, image_size)  # (F, 3, S, S)
        v = torch.from_numpy(clip[:k]).permute(0, 3, 1, 2).float()  # (k, 3, S0, S0) in [0, 255]
        if v.shape[-1] != image_size:
            v = tF.interpolate(v, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        x[:k] = (v / 127.5 - 1.0).clamp_(-1.0, 1.0)
        frames.append(x)
        ks.append(k)
        captions.append(s["caption"])
        keys.append(s["key"])
        if len(frames) >= n:
            break
    if not frames:
        raise ValueError("no test samples: the held-out loss needs a test split")
    return {"frames": torch.stack(frames), "k": torch.tensor(ks), "captions": captions, "keys": keys}


def task_mask(task: EvalTask, k: int, num_frames: int):
    """The task's fixed condition mask for a clip with k valid frames, or None if nothing is left to generate."""
    from model.masks import ConditionMask

    valid = np.zeros(num_frames, dtype=bool)
    valid[:k] = True
    cond = np.zeros(num_frames, dtype=bool)
    cond[task.known_positions(num_frames)] = True
    cond &= valid
    target = valid & ~cond
    if not target.any():
        return None
    return ConditionMask(cond=cond, target=target, valid=valid, text=task.uses_text, task=_train_task(task),
                         pattern=f"heldout-{task.value}")


def denoising_loss(model, text_encoder, sched, x0: torch.Tensor, mask_batch: dict, captions: list[str],
                   noise: torch.Tensor, t: torch.Tensor, *, loss_mask: str = "targets") -> tuple[torch.Tensor, torch.Tensor]:
    """The trainer's loss on one batch: (masked ε-MSE, weighted element count). x0/noise (B, F, C, h, w), t (B,)."""
    from model.masks import loss_weight, masked_mse

    xt = sched.add_noise(x0.flatten(1), noise.flatten(1), t).reshape(x0.shape)  # (B, F, C, h, w)
    cond = x0 * mask_batch["cond"][:, :, None, None, None]  # clean latents of conditioned frames only
    pred = model(torch.cat([xt, cond], dim=2), t, text_encoder(captions))  # (B, F, C, h, w)
    w = loss_weight(mask_batch, loss_mask)  # (B, F)
    return masked_mse(pred.float(), noise, w), w.sum() * float(np.prod(x0.shape[2:]))


@torch.no_grad()
def run_heldout_loss(pipe, test_samples: Iterable[dict], cfg: HeldoutConfig, *, diffusion=None) -> MetricReport:
    """Held-out loss per task for the model of ``pipe`` (:class:`model.pipeline.RDTFPipeline`, EMA weights by default).

    ``diffusion``: the training's :class:`model.diffusion.DiffusionConfig` (default: the paper's schedule).
    """
    from model.diffusion import DiffusionConfig, make_train_scheduler
    from model.masks import batch_masks

    t0 = time.perf_counter()
    sched = make_train_scheduler(diffusion or DiffusionConfig())
    F, S, dev = pipe.num_frames, pipe.image_size, pipe.device
    data = heldout_clips(test_samples, F, S, cfg.n_videos)
    frames = data["frames"]
    N = len(frames)
    x0 = torch.cat([pipe.autoencoder.encode(((frames[i: i + cfg.batch_size].to(dev).flatten(0, 1) + 1) / 2).clamp(0, 1))
                    for i in range(0, N, cfg.batch_size)])  # (N·F, C, h, w)
    x0 = x0.reshape(N, F, *x0.shape[1:])  # (N, F, C, h, w)
    noises = []
    for j in range(len(cfg.timesteps)):
        g = torch.Generator(device="cpu")
        g.manual_seed(int(np.random.default_rng([cfg.seed, j]).integers(0, 2**62)))
        noises.append(torch.randn(x0.shape, generator=g).to(dev))
    rep = MetricReport("heldout_loss")
    for task in parse_tasks(cfg.tasks):
        masks = [task_mask(task, int(k), F) for k in data["k"].tolist()]
        keep = [i for i, m in enumerate(masks) if m is not None]
        per_t, total, count = [], 0.0, 0.0
        for j, tt in enumerate(cfg.timesteps):
            s_loss, s_count = 0.0, 0.0
            for b in range(0, len(keep), cfg.batch_size):
                idx = keep[b: b + cfg.batch_size]
                mb = {k: v.to(dev) for k, v in batch_masks([masks[i] for i in idx]).items()}
                t = torch.full((len(idx),), int(tt), dtype=torch.long, device=dev)
                loss, n = denoising_loss(pipe.unet, pipe.encode_prompt, sched, x0[idx], mb, [data["captions"][i] if masks[i].text else "" for i in idx],
                                         noises[j][idx], t, loss_mask=cfg.loss_mask)
                s_loss += float(loss) * float(n)
                s_count += float(n)
            per_t.append(s_loss / s_count if s_count else float("nan"))
            total, count = total + s_loss, count + s_count
        rep.metrics[f"eval/{task.value}/loss"] = total / count if count else float("nan")
        rep.details[task.value] = {"n_videos": len(keep), "n_skipped": N - len(keep),
                                   "loss_per_timestep": dict(zip([str(t) for t in cfg.timesteps], per_t))}
    rep.tags = {"heldout_timesteps": ",".join(str(t) for t in cfg.timesteps), "heldout_seed": str(cfg.seed),
                "heldout_n_videos": str(N), "heldout_clips": "k=F representatives, fixed task masks (Table 7)"}
    rep.seconds = time.perf_counter() - t0
    return rep
