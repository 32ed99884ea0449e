"""torchrun entry point: train DFGN with the dual mask and the difficulty-adaptive curriculum.

    torchrun --nproc_per_node 2 -m training --config train.json [--resume latest]

One optimizer step (paper Method + Algorithm 1):
1. every rank reads its own stream of clips (``data.loader``: k ∈ [3, 8] representative frames, padded to F);
2. the curriculum (``training.curriculum``; identical state on every rank) gives level probabilities, each
   sample draws (task, n_masked) and a condition mask (``model.masks``, Table 7 families), plus
   classifier-free-guidance dropout of text / image / both and "#" token dropout of captions;
3. DDPM ε-prediction (``model.diffusion``: 1000 steps, LDM-linear β 0.00085–0.012): the noisy clip is
   concatenated with the clean latents of the conditioned frames (zeros elsewhere) — image guidance by
   concatenation — and text enters through cross-attention;
4. loss = MSE on the target frames only, normalised by their element count (loss mask);
5. the loss, averaged across ranks, updates the curriculum's PID controller.

Reproducibility and resume: every random draw of step s on rank r comes from generators seeded with
(seed, r, s), so a resumed run continues exactly (tested: N steps straight == N/2 + kill + resume).
Checkpoints (``out_dir/checkpoints/step-NNNNNN``: model + text projections + EMA as safetensors, optimizer,
curriculum state, data position, MLflow run id) are written to a temp folder and renamed; ``latest``
names the last complete one. SIGTERM → checkpoint and clean exit. MLflow logging happens on rank 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from data.atomic import atomic_write
from data.loader import DataConfig, make_loader, validate_indexes
from data.redact import redact_config
from data.shards import read_index
from model.autoencoder import (
    AutoencoderConfig,
    AutoencoderKind,
    downsample_factor,
    load_autoencoder,
    tiny_kl_config,
)
from model.checkpoints import check_compatible  # noqa: F401 - re-exported (older imports)
from model.diffusion import DiffusionConfig, make_train_scheduler
from model.masks import (
    Task,
    apply_cfg_dropout,
    batch_masks,
    first_frame_condition,
    loss_weight,
    masked_mse,
    sample_condition,
)
from model.performance import PerfConfig, apply_performance, attention_context
from model.text_encoder import TextEncoder, drop_tokens, text_config_for
from model.unet import DFGN, DFGNConfig, preset
from training import checkpointing as ckpts
from training.charts import CHART_FILE, training_chart
from training.config import TrainConfig, load_config_file, resolve_grad_accum  # noqa: F401 - re-exported: TrainConfig
from training.curriculum import Curriculum, CurriculumConfig, CurriculumMode
from training.launch import init_process_group
from training.optim import ema_update, fsdp_policy, make_adamw, split_legacy_param_group
from training.run_logger import MlflowRunLogger
from training.run_mirror import RunMirror, latest_checkpoint

log = logging.getLogger("rdtf.train")


# ---------------------------------------------------------------------------------------- helpers


def _dist() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _step_generators(seed: int, rank: int, step: int, device: torch.device) -> tuple[np.random.Generator, torch.Generator]:
    rng = np.random.default_rng([seed, rank, step])
    g = torch.Generator(device=device)
    g.manual_seed(int(rng.integers(0, 2**62)))
    return rng, g


def _lr_factor(step: int, warmup: int) -> float:
    # Kept by hand: diffusers' constant_with_warmup is step/warmup (lr 0 at the first step), ours (step+1)/warmup;
    # switching would change every trained run. Resume needs no scheduler state: the factor is a function of step.
    return min(1.0, (step + 1) / max(1, warmup))


def _atomic_json(obj, path: Path) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.mirror: RunMirror | None = None  # set by main() when out_dir is on an object store (push after each save)
        self.rank, self.world, local = _dist()
        self.grad_accum = resolve_grad_accum(cfg, self.world)  # global_batch -> micro-batches per step on this world
        if self.rank == 0:  # first: what killed saves left (GBs each at the paper preset), see training.checkpointing
            for p in ckpts.clean_stale_temps(cfg.out_dir):
                log.warning("removed %s left by an interrupted checkpoint save", p)
        self.device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":  # object collectives (resume choice) use the current device under NCCL
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():  # single node: store and sockets on loopback only
            init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.mcfg: DFGNConfig = preset(cfg.preset)
        if cfg.temporal_layer is not None:  # Table 3 ablation switch on any preset (e.g. tiny_pixel + conv3d)
            self.mcfg = dataclasses.replace(self.mcfg, temporal_layer=cfg.temporal_layer)
        validate_indexes(self._data_cfg())  # clear error before any work
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = DFGN.from_dataclass(self.mcfg).to(self.device)
        self.perf = PerfConfig(compile=cfg.compile, compile_mode=cfg.compile_mode, compile_backend=cfg.compile_backend,
                               attention_backend=cfg.attention_backend, memory_format=cfg.memory_format,
                               checkpointing=cfg.checkpoint_granularity if cfg.grad_checkpointing else "none")
        self.text = TextEncoder(text_config_for(self.mcfg.cross_attention_dim, seed=cfg.seed, clip_model=cfg.text_clip_model,
                                                clip_pretrained=cfg.text_clip_pretrained, t5_path=cfg.text_t5_path)).to(self.device)
        self.vae = load_autoencoder(self._ae_cfg()).to(self.device)
        if self.vae.latent_channels * 2 != self.mcfg.in_channels:
            raise ValueError(f"autoencoder {cfg.autoencoder!r} has {self.vae.latent_channels} channels; preset "
                             f"{cfg.preset!r} expects in_channels={self.mcfg.in_channels} (= 2 x latent channels)")
        # layout, checkpointing and (regional) compile before FSDP/DDP wrap the stages: each compiled stage is then
        # sharded as a unit, as torchtitan does per transformer block (model/performance.py)
        apply_performance(self.model, self.perf, sharded=self.world > 1 and cfg.fsdp)
        self.ddp = None
        if self.world > 1 and cfg.fsdp:
            from torch.distributed.fsdp import fully_shard

            from model.unet import UNetStage

            mp = fsdp_policy(cfg.fsdp_param_dtype)  # bf16: compute/all-gather in bf16, fp32 master weights + reductions
            for stage in [m for m in self.model.modules() if isinstance(m, UNetStage)]:
                fully_shard(stage, mp_policy=mp)  # one all-gather per U-Net layer: peak memory ~ one stage's full weights
            fully_shard(self.model, mp_policy=mp)
        if self.world > 1 and not cfg.fsdp:
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model)
        # one module holding everything the optimizer updates (U-Net + text projections), for state-dict APIs
        self.net = torch.nn.ModuleDict({"unet": self.model, "text": self.text})
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        # two groups, U-Net then text projections: under FSDP the first holds DTensors, the second plain tensors, and
        # the fused/foreach kernels take one kind per call (a group is one call)
        groups = [[p for p in mod.parameters() if p.requires_grad] for mod in (self.model, self.text)]
        self.opt = make_adamw([{"params": g} for g in groups if g], lr=cfg.lr, weight_decay=cfg.weight_decay,
                              impl=cfg.optimizer_impl, device=self.device)
        # fp32 EMA as a plain state dict (not swa_utils.AveragedModel / diffusers EMAModel): it is sharded like the
        # live parameters under FSDP and saved as ema.safetensors in the layout sampling loads (model.checkpoints).
        self.ema = {k: v.detach().clone().float() for k, v in self.model.state_dict().items()}
        self.sched = make_train_scheduler(DiffusionConfig(**cfg.diffusion))
        self.curriculum = Curriculum(CurriculumConfig(**{**cfg.curriculum, "total_steps": cfg.steps,
                                                         "mode": CurriculumMode(cfg.curriculum.get("mode", "adaptive")),
                                                         "k_max": self.mcfg.num_frames}))
        self.step = 0
        durs = [read_index(p).get("median_duration_ms", 100) for p in cfg.index_paths]
        self.typical_duration_ms = int(np.median(durs)) if durs else 100  # default frame time for sampling
        self.mlflow_run_id: str | None = None
        self.history: list[dict] = []
        self._stop = False
        self._saved_step: int | None = None  # step of the last save: a SIGTERM right after it does not save again

    def _data_cfg(self) -> DataConfig:
        size = self.mcfg.sample_size * downsample_factor(self._ae_cfg())  # frames are decoded at the VAE's input size
        return DataConfig(index_paths=tuple(self.cfg.index_paths), num_frames=self.mcfg.num_frames, image_size=size,
                          batch_size=self.cfg.batch_size, num_workers=self.cfg.num_workers, seed=self.cfg.seed,
                          frame_extraction=self.cfg.frame_extraction, shard_sampling=self.cfg.shard_sampling,
                          cache_dir=self.cfg.shard_cache_dir, read_block_bytes=self.cfg.read_block_bytes,
                          # without DDU: no random k, always the k = F representatives (see ablation.variants)
                          **({} if self.cfg.dual_mask else {"k_min": self.mcfg.num_frames, "k_max": self.mcfg.num_frames}))

    def _ae_cfg(self) -> AutoencoderConfig:
        if self.cfg.autoencoder == "pixel":
            return AutoencoderConfig(kind=AutoencoderKind.PIXEL)
        if self.cfg.autoencoder == "tiny_kl":
            return tiny_kl_config(self.cfg.seed)
        return AutoencoderConfig(kind=AutoencoderKind.KL, path=self.cfg.autoencoder)

    @property
    def weights_tag(self) -> str:
        text_w = self.text.info.get("weights", "random")
        vae_w = self.vae.info.get("weights", "none")
        return "random" if "random" in (text_w, vae_w) else "pretrained"

    # ------------------------------------------------------------------------------ checkpoints

    def trainable_text_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous().cpu() for k, v in self.text.state_dict().items()}

    def _gather_state(self) -> tuple[dict, dict, dict]:
        """Full (unsharded) model, EMA and optimizer state; a collective call under FSDP (every rank)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )
        from torch.distributed.tensor import DTensor

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd = get_model_state_dict(self.model, options=opts)
        optim_sd = get_optimizer_state_dict(self.net, self.opt, options=opts)
        ema = {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().contiguous().cpu() for k, v in self.ema.items()}
        return model_sd, ema, optim_sd

    def save(self) -> Path | None:
        model_sd, ema, optim_sd = self._gather_state()
        self._saved_step = self.step  # on every rank: the SIGTERM branch of run() must decide alike
        if self.rank != 0:
            return None
        root = Path(self.cfg.out_dir) / "checkpoints"
        root.mkdir(parents=True, exist_ok=True)
        name = f"step-{self.step:06d}"
        tmp = ckpts.temp_dir_for(root, name)  # removed at the next start if this process dies before publish
        (tmp / "model").mkdir(parents=True)
        self.model.save_config(tmp / "model")  # diffusers layout: DFGN.from_pretrained(tmp / "model") works
        save_file({k: v.contiguous() for k, v in model_sd.items()}, tmp / "model" / "diffusion_pytorch_model.safetensors")
        save_file(ema, tmp / "ema.safetensors")
        save_file(self.trainable_text_state(), tmp / "text_proj.safetensors")
        torch.save(optim_sd, tmp / "optimizer.pt")
        _atomic_json({"step": self.step, "curriculum": self.curriculum.state_dict(),
                      "typical_duration_ms": self.typical_duration_ms,
                      "data_batches": self.step * self.grad_accum, "mlflow_run_id": self.mlflow_run_id,
                      "model_config": asdict(self.mcfg), "train_config": redact_config(asdict(self.cfg)),
                      "history": self.history[-2000:]}, tmp / "trainer.json")  # logged to MLflow: no credentials
        final = root / name
        ckpts.publish(tmp, final)
        ckpts.write_latest(root, name)  # the marker moves only after the folder is complete
        ckpts.rotate(root, self.cfg.keep_ckpts, final)
        if self.mirror is not None:
            self.mirror.push_checkpoint(final)
        return final

    def verify_checkpoint(self, path: Path) -> dict:
        """Cheap but real validity check for resuming this trainer (see training.checkpointing); returns trainer.json."""
        return ckpts.verify_training_checkpoint(
            path, model_config=json.loads(json.dumps(asdict(self.mcfg))),
            model_shapes={k: tuple(v.shape) for k, v in self.model.state_dict().items()},  # global shapes under FSDP
            text_shapes={k: tuple(v.shape) for k, v in self.text.state_dict().items()})

    def _read_meta(self, path: Path) -> tuple[Path, dict]:
        """The part of a load that touches no live state (a failure here leaves the trainer as it was)."""
        meta = ckpts.read_json(path, ckpts.TRAINER, ckpts.TRAINER_KEYS)
        check_compatible(meta["model_config"], json.loads(json.dumps(asdict(self.mcfg))))
        return path, meta

    def load(self, path: Path) -> None:
        self._apply(self._read_meta(Path(path)))

    def _apply(self, loaded: tuple[Path, dict]) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )
        from torch.distributed.tensor import DTensor, distribute_tensor

        path, meta = loaded
        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, load_file(path / "model" / "diffusion_pytorch_model.safetensors"), options=opts)
        self.text.load_state_dict(load_file(path / "text_proj.safetensors", device=str(self.device)))
        full_ema = load_file(path / "ema.safetensors", device=str(self.device))
        for k, cur in self.ema.items():  # re-shard like the live parameters under FSDP
            v = full_ema[k].float()
            self.ema[k] = distribute_tensor(v, cur.device_mesh, cur.placements) if isinstance(cur, DTensor) else v
        optim_sd = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        if len(self.opt.param_groups) == 2:  # a checkpoint from before the U-Net / text param groups: split alike
            optim_sd = split_legacy_param_group(optim_sd, len(self.opt.param_groups[0]["params"]), "unet.")
        if optim_sd.get("state") and all(isinstance(k, int) for k in optim_sd["state"]):
            self.opt.load_state_dict(optim_sd)  # older checkpoints: torch's index-keyed layout (unsharded runs)
        else:
            set_optimizer_state_dict(self.net, self.opt, optim_state_dict=optim_sd, options=opts)
        self.curriculum.load_state_dict(meta["curriculum"])
        self.step = int(meta["step"])
        self.mlflow_run_id = meta.get("mlflow_run_id")
        self.history = meta.get("history", [])

    # ------------------------------------------------------------------------------ one step

    def _autocast(self):
        p = self.cfg.precision
        use_bf16 = p == "bf16" or (p == "auto" and self.device.type == "cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16)

    def _clip_gradients(self) -> torch.Tensor:
        """Clip by the global norm over U-Net (possibly FSDP-sharded DTensor grads) and text projections."""
        from torch.distributed.tensor import DTensor

        groups = [[p for p in mod.parameters() if p.grad is not None] for mod in (self.model, self.text)]
        norms = []
        for g in groups:
            if g:
                n = torch.nn.utils.get_total_norm([p.grad for p in g])
                norms.append(n.full_tensor() if isinstance(n, DTensor) else n)
        total = torch.stack(norms).norm()
        for g in groups:
            if g:
                torch.nn.utils.clip_grads_with_norm_(g, self.cfg.grad_clip, total)
        return total

    def train_step(self, batches) -> dict:
        cfg, F = self.cfg, self.mcfg.num_frames
        rng, gen = _step_generators(cfg.seed, self.rank, self.step, self.device)
        lr = cfg.lr * _lr_factor(self.step, cfg.warmup_steps)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        net = self.ddp or self.model
        total, per_task = 0.0, {t.value: [] for t in Task}
        for _ in range(self.grad_accum):
            batch = next(batches)
            frames = batch["frames"].to(self.device)  # (B, F, 3, S, S) in [-1, 1]
            B = frames.shape[0]
            with torch.no_grad():
                x0 = self.vae.encode(((frames.flatten(0, 1) + 1) / 2).clamp(0, 1))  # (B·F, C, h, w)
            x0 = x0.reshape(B, F, *x0.shape[1:])  # (B, F, C, h, w)
            if cfg.dual_mask:  # DDU: curriculum level -> condition mask (Table 7 families)
                levels = self.curriculum.sample(self.step, rng, B)
                conds = [sample_condition(int(k), F, lvl, rng, p_image_only=cfg.p_image_only)
                         for k, lvl in zip(batch["k"].tolist(), levels)]
            else:  # baseline DFGN: the fixed I&T->V mask [1 0 0 0 0 0 0 0]
                conds = [first_frame_condition(int(k), F) for k in batch["k"].tolist()]
            masks = [apply_cfg_dropout(c, rng, cfg.p_drop_text, cfg.p_drop_image, cfg.p_drop_both) for c in conds]
            mb = {k: v.to(self.device) for k, v in batch_masks(masks).items()}
            captions = [drop_tokens(c, cfg.token_dropout, rng) if m.text else "" for c, m in zip(batch["caption"], masks)]
            noise = torch.randn(x0.shape, generator=gen, device=self.device)
            t = torch.randint(0, self.sched.config.num_train_timesteps, (B,), generator=gen, device=self.device)
            xt = self.sched.add_noise(x0.flatten(1), noise.flatten(1), t).reshape(x0.shape)  # (B, F, C, h, w)
            cond = x0 * mb["cond"][:, :, None, None, None]  # clean latents of conditioned frames only
            with self._autocast(), attention_context(self.perf):
                ctx = self.text(captions)  # (B, L, D)
                pred = net(torch.cat([xt, cond], dim=2), t, ctx)  # (B, F, C, h, w)
            w = loss_weight(mb, cfg.loss_mask)  # (B, F)
            loss = masked_mse(pred.float(), noise, w)
            (loss / self.grad_accum).backward()
            total += float(loss.detach()) / self.grad_accum
            with torch.no_grad():  # per-task loss for logging
                err = (pred.float() - noise).square().mean(dim=(2, 3, 4))  # (B, F)
                for i, m in enumerate(masks):
                    if w[i].sum() > 0:
                        per_task[m.task.value].append(float((err[i] * w[i]).sum() / w[i].sum()))
        if self.world > 1:  # the text projections sit outside DDP/FSDP: average their gradients by hand
            for p in self.text.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world
        gnorm = self._clip_gradients()
        self.opt.step()
        live = self.model.state_dict()
        ema_update([self.ema[k] for k in live], list(live.values()), cfg.ema_decay, cfg.ema_impl)
        loss_all = torch.tensor([total], device=self.device)
        if self.world > 1:
            dist.all_reduce(loss_all)
            loss_all /= self.world
        self.curriculum.update(float(loss_all))  # same value on every rank -> same curriculum state
        self.step += 1
        return {"loss": float(loss_all), "lr": lr, "grad_norm": float(gnorm),
                **{f"loss_{k}": float(np.mean(v)) for k, v in per_task.items() if v},
                **{f"curriculum_{k}": float(v) for k, v in self.curriculum.stats(self.step).items()}}

    # ------------------------------------------------------------------------------ loop

    def _write_chart(self) -> Path | None:
        """Loss per task + task probabilities over the logged steps as ``out_dir/training_curves.png``."""
        png = training_chart(self.history, self.curriculum.cfg.mode.value)
        if png is None:
            return None
        out = Path(self.cfg.out_dir) / CHART_FILE
        atomic_write(out, png)
        return out

    def _should_stop(self) -> bool:
        flag = torch.tensor([1.0 if self._stop else 0.0])
        if self.world > 1:
            dist.all_reduce(flag)
        return bool(flag.item() > 0)

    def run(self, max_steps: int | None = None, progress=None) -> dict:
        """Train to ``cfg.steps`` (or ``max_steps``); ``progress``: rank 0's ``training.progress.Progress``."""
        cfg = self.cfg
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stop", True))
        target = min(cfg.steps, max_steps) if max_steps else cfg.steps
        loader = make_loader(self._data_cfg(), self.rank, self.world, start_batch=self.step * self.grad_accum)
        batches = iter(loader)
        mlf = MlflowRunLogger(self) if self.rank == 0 and cfg.mlflow_uri else None
        t0, last = time.perf_counter(), {}
        start = self.step
        if progress is not None:
            progress.target, progress.start_step, progress.t0 = target, start, progress.clock()
            progress.say(f"training steps {start + 1}..{target} ({self.world} rank(s), batch {cfg.batch_size} per rank)"
                         if start < target else f"already at step {start} >= {target}: nothing to train")
        agent = os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else None  # torchrun workers run in their own session
        while self.step < target:
            if agent is not None and os.getppid() != agent:  # agent SIGKILLed: do not train on as an orphan
                log.error("torchrun agent %d is gone; exiting (the last complete checkpoint stays valid)", agent)
                os._exit(1)
            last = self.train_step(batches)
            if self.rank == 0:
                self.history.append({"step": self.step, **{k: v for k, v in last.items() if k.startswith(("loss", "curriculum"))}})
                sps = (self.step - start) * cfg.batch_size * self.grad_accum * self.world / (time.perf_counter() - t0)
                if mlf and (self.step % cfg.log_every == 0 or self.step == target):
                    mlf.log(last, self.step, samples_per_s=sps)
                if progress is not None:
                    progress.update(self.step, {**last, "samples_per_s": sps})
            if self.step % cfg.ckpt_every == 0 or self.step == target:
                self.save()
                if progress is not None:
                    progress.say(f"checkpoint step-{self.step:06d} written")
            if self._should_stop():
                if self._saved_step != self.step:  # saving the same step twice only re-writes GBs
                    self.save()
                log.warning("SIGTERM: checkpoint written at step %d, stopping", self.step)
                break
        if not last and self.history:  # resumed at or past the target: report the last logged step
            last = {k: v for k, v in self.history[-1].items() if k != "step"}
        ckpt = latest_checkpoint(cfg.out_dir)
        chart = self._write_chart() if self.rank == 0 else None
        if mlf:
            mlf.finish(ckpt, chart)
        if ckpt is not None and self.mirror is not None:
            ckpt = self.mirror.remote_of(ckpt)
        summary = {"step": self.step, "final_loss": last.get("loss"), "checkpoint": str(ckpt) if ckpt else None,
                   "mlflow_run_id": self.mlflow_run_id, "weights": self.weights_tag,
                   **{k: v for k, v in last.items() if k.startswith("loss_")}}
        if chart is not None:
            summary["chart"] = chart.name
        if self.rank == 0:
            _atomic_json(summary, Path(cfg.out_dir) / "summary.json")
            if self.mirror is not None:
                self.mirror.push_run_files()
        return summary


def _report_to_dagster(pipes, summary: dict, out_dir: str) -> None:
    """Rank 0 under Dagster Pipes: the materialization metadata, with the loss / task-probability chart inline
    (by its MLflow artifact URL, see training.links; embedded when the run has no MLflow run)."""
    from training.links import Image, image_markdown

    if pipes is None:  # plain torchrun, not launched by Dagster
        return
    md = {k: v for k, v in summary.items() if v is not None and k != "chart"}
    chart = Path(out_dir) / str(summary.get("chart", ""))
    if summary.get("chart") and chart.is_file():
        img = Image("loss and task probabilities", chart, CHART_FILE)  # logged at the run's artifact root
        md["training_curves"] = {"raw_value": image_markdown([[img]], summary.get("mlflow_run_id")), "type": "md"}
    pipes.report_asset_materialization(metadata=md)


def main(argv: list[str] | None = None) -> int:
    from training.options import add_train_options, config_from_args

    ap = argparse.ArgumentParser(description="Train DFGN (RDTF) — run under torchrun for several ranks")
    ap.add_argument("--config", default=None, help="TrainConfig as JSON or YAML (e.g. configs/paper.yaml, Table 6); "
                    "the options below override its fields (default: none, options only)")
    ap.add_argument("--resume", default=None, help="'latest' or a checkpoint folder (default: start from scratch)")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in total (testing)")
    ap.add_argument("--dry-run", action="store_true", help="validate the config, print the plan (model size, global "
                    "batch, grad_accum per cluster size, files) and exit; nothing is loaded or written")
    ap.add_argument("--world-size", type=int, default=None, help="with --dry-run: plan for this many ranks "
                    "(default: $WORLD_SIZE or 1)")
    add_train_options(ap)
    args = ap.parse_args(argv)
    try:
        cfg = TrainConfig.from_dict(config_from_args(args, load_config_file(args.config) if args.config else None))
    except (ValueError, OSError, TypeError) as exc:
        print(f"training: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if args.dry_run:
        from training.plan import plan_lines

        try:
            print("\n".join(plan_lines(cfg, source=args.config or "command line", world=args.world_size)))
        except (ValueError, OSError) as exc:
            print(f"training: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank%(rank)s %(message)s".replace("%(rank)s", os.environ.get("RANK", "0")))
    from training.progress import Progress, open_pipes

    rank = int(os.environ.get("RANK", "0"))
    with open_pipes(rank) as pipes:  # open from the start: the run's event log follows the training live
        progress = Progress(pipes, cfg.steps, 0) if rank == 0 else None
        if progress is not None:
            progress.say(f"preparing {cfg.preset} training ({os.environ.get('WORLD_SIZE', '1')} rank(s)): "
                         "building the model, text encoder and data loader")
        mirror = RunMirror.for_out_dir(cfg.out_dir)  # object-store out_dir: work in a node-local copy (run_mirror)
        if mirror is not None:
            mirror.pull()
            log.info("out_dir %s: working copy %s", cfg.out_dir, mirror.local)
            cfg = dataclasses.replace(cfg, out_dir=str(mirror.local))
        trainer = Trainer(cfg)
        trainer.mirror = mirror
        if args.resume:  # the newest valid checkpoint; rank 0 chooses, all ranks load the same (training.checkpointing)
            path = ckpts.resume(args.resume, cfg.out_dir, verify=trainer.verify_checkpoint, read=trainer._read_meta,
                                apply=trainer._apply, rank=trainer.rank, world=trainer.world)
            if path is None:
                log.warning("--resume latest: no complete checkpoint in %s, starting from scratch", cfg.out_dir)
            else:
                log.info("resumed from %s at step %d", path, trainer.step)
                if progress is not None:
                    progress.say(f"resumed from {Path(path).name} (step {trainer.step}, curriculum state restored)")
        if trainer.weights_tag == "random":
            log.warning("text encoder / autoencoder use RANDOM weights (weights=random)")
        summary = trainer.run(args.max_steps, progress=progress)
        if trainer.rank == 0:
            _report_to_dagster(pipes, summary, cfg.out_dir)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
