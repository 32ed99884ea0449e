"""``TrainConfig``: every setting of one DFGN training, validated when it is built.

Why its own, import-light module (no torch): the Dagster asset ``trained_model`` builds and validates the
same config BEFORE it launches torchrun, so a bad value (``ckpt_every=0`` -> ZeroDivisionError,
``grad_accum=0`` -> an obscure torch error, an unknown preset) fails in milliseconds with a message naming
the field and the allowed values — instead of inside the torchrun workers, where Dagster only sees "process
failed with code 1" and retries it with back-off. ``training.trainer`` re-exports it and validates again in the
workers (a hand-written ``train.json`` goes through the same function).

The allowed names below mirror the enums of the modules that use them (``model.unet.PRESETS``,
``model.unet.TemporalLayer``, ``data.loader.FrameExtraction``, ``model.diffusion.DiffusionConfig``); those
modules import torch/diffusers, so they are not imported here — ``tests/training/test_config.py`` checks that
the lists stay equal.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from data.storage import lake_path

PRESETS = ("paper", "paper_3dconv", "tiny", "tiny_pixel", "micro_pixel")  # model.unet.PRESETS
NAMED_AUTOENCODERS = ("pixel", "tiny_kl")  # anything else must be a local AutoencoderKL folder
PRECISIONS = ("auto", "fp32", "bf16")
FRAME_EXTRACTIONS = ("cluster", "uniform")  # data.loader.FrameExtraction
SHARD_SAMPLINGS = ("resample", "split")  # data.loader.ShardSampling
TEMPORAL_LAYERS = ("sti", "conv3d", "none")  # model.unet.TemporalLayer
LOSS_MASKS = ("first_k", "targets")  # model.masks.LossMask
# speed levers (model.performance, training.optim): the enums' values
CHECKPOINT_GRANULARITIES = ("stage", "attention")  # model.performance.Checkpointing (less "none": grad_checkpointing)
COMPILE_SCOPES = ("none", "regional", "full")  # model.performance.CompileScope
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # ...CompileMode
ATTENTION_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")  # model.performance.AttentionBackend
MEMORY_FORMATS = ("contiguous", "channels_last")  # model.performance.MemoryFormat
OPTIMIZER_IMPLS = ("auto", "fused", "foreach", "for_loop")  # training.optim.OptimizerImpl
EMA_IMPLS = ("foreach", "loop")  # training.optim.EmaImpl
FSDP_PARAM_DTYPES = ("fp32", "bf16")  # training.optim.fsdp_policy
# fields renamed since, read from older train.json / trainer.json files: old name -> (new name, value map)
LEGACY_FIELDS = {"include_conditioned_in_loss": ("loss_mask", {True: "first_k", False: "targets"})}
DIFFUSION_FIELDS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")  # diffusers schedules with a beta range
PREDICTION_TYPES = ("epsilon",)  # the loss regresses the noise (training.trainer.train_step)
CURRICULUM_SET_BY_TRAINER = ("total_steps", "k_max")  # from steps and the preset's frame count
MAX_SEED = 2**63 - 1


@dataclass
class TrainConfig:
    index_paths: list[str]  # shard index.json files of the drops to train on
    out_dir: str  # checkpoints and logs
    preset: str = "tiny_pixel"  # DFGN preset: tiny_pixel | tiny | paper | paper_3dconv | micro_pixel (tests)
    autoencoder: str = "pixel"  # pixel | tiny_kl | <local AutoencoderKL folder>
    steps: int = 300  # optimizer steps in total
    batch_size: int = 4  # clips per rank per micro-batch (Table 6: 1 per GPU)
    grad_accum: int = 1  # micro-batches per optimizer step (set from global_batch when that is given)
    global_batch: int | None = None  # clips per optimizer step over all ranks (Table 6: 1 x 16 GPUs = 16); None: B x accum x ranks
    lr: float = 1e-5  # AdamW learning rate (Table 6: 1e-5)
    warmup_steps: int = 20  # linear warm-up
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm
    ema_decay: float = 0.999  # EMA of the weights (used for sampling)
    ckpt_every: int = 100  # steps between checkpoints
    keep_ckpts: int = 2  # complete checkpoints kept
    log_every: int = 10  # steps between metric logs
    seed: int = 0
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    grad_checkpointing: bool = False  # activation checkpointing (unit: checkpoint_granularity)
    checkpoint_granularity: str = "stage"  # stage (each U-Net stage: least memory) | attention (attention + temporal layers)
    compile: str = "none"  # torch.compile: none | regional (each U-Net stage, bounded compile time) | full
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs
    compile_backend: str = "inductor"  # torch.compile backend (aot_eager: trace only, no code generation)
    attention_backend: str = "auto"  # SDPA kernel of every attention: auto | flash | efficient | cudnn | math
    memory_format: str = "contiguous"  # activation layout: contiguous (NCHW) | channels_last (NHWC)
    optimizer_impl: str = "auto"  # AdamW kernels: auto (fused on CUDA, foreach elsewhere) | fused | foreach | for_loop
    ema_impl: str = "foreach"  # EMA update: foreach (one multi-tensor lerp) | loop (a kernel pair per tensor)
    fsdp_param_dtype: str = "fp32"  # FSDP2 compute/all-gather dtype: fp32 | bf16 (fp32 master weights and reductions)
    fsdp: bool = False  # shard the U-Net with FSDP2 (fully_shard per stage) instead of DDP when world size > 1
    num_workers: int = 0  # DataLoader workers per rank
    curriculum: dict = field(default_factory=dict)  # CurriculumConfig fields (mode: none | linear | adaptive)
    p_drop_text: float = 0.1  # CFG training: drop text only
    p_drop_image: float = 0.1  # CFG training: drop visual conditions only
    p_drop_both: float = 0.05  # CFG training: drop both
    token_dropout: float = 0.1  # "#" token replacement probability (Method)
    p_image_only: float = 0.5  # share of one-frame GRT draws without the caption (Table 7's text-free rows)
    loss_mask: str = "first_k"  # first_k (paper: every valid frame, conditioned included) | targets (generated only)
    dual_mask: bool = True  # DDU (Table 3); False = fixed I&T->V condition + fixed k = F frames (see _data_cfg, train_step)
    frame_extraction: str = "cluster"  # cluster (DDU, Fig. 3) | uniform (equal intervals; stickers < F frames unused)
    shard_sampling: str = "resample"  # resample (shards with replacement per rank) | split (each shard once per epoch)
    shard_cache_dir: str = ""  # node-local folder caching object-store shards after their first read ("" = none)
    read_block_bytes: int = 8 << 20  # object-store shard reads: bytes per ranged GET (read-ahead)
    temporal_layer: str | None = None  # override the preset's temporal layer: sti | conv3d | none (Table 3 "3D-Conv")
    mlflow_uri: str | None = None  # None: no MLflow logging
    mlflow_experiment: str = "rdtf-stickers"
    mlflow_artifact_location: str | None = None  # artifact store of the experiment if the trainer creates it (None: MLflow default)
    run_name: str | None = None
    diffusion: dict = field(default_factory=dict)  # DiffusionConfig overrides
    text_clip_model: str | None = None  # open_clip model of the text tower (real weights only; default ViT-H-14)
    text_clip_pretrained: str | None = None  # local CLIP weights file; None with text_t5_path None = random tiny towers
    text_t5_path: str | None = None  # local transformers T5 encoder folder

    def __post_init__(self) -> None:
        validate_train_config(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Build from JSON-like data; unknown keys are refused by name (a typo must not silently keep a default)."""
        if not isinstance(data, dict):
            raise ValueError(f"TrainConfig must be a JSON object, got {type(data).__name__}")
        data = _upgrade_legacy(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; allowed: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        """From a JSON or YAML file (``load_config_file``); e.g. the Table 6 recipe ``configs/paper.yaml``."""
        return cls.from_dict(load_config_file(path))


def _upgrade_legacy(data: dict) -> dict:
    """Rename the fields of older configs (``LEGACY_FIELDS``), so a run started before a rename still resumes.

    An old ``include_conditioned_in_loss: false`` meant "targets only": it maps to ``loss_mask: "targets"``,
    keeping that run's behaviour (the new default is the paper's ``first_k``). Both names at once is refused.
    """
    out = dict(data)
    for old, (new, values) in LEGACY_FIELDS.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"TrainConfig: give {new!r} only ({old!r} is its older name)")
        value = out.pop(old)
        if not isinstance(value, bool):
            raise _bad(old, "(older name of loss_mask) must be true or false", value)
        out[new] = values[value]
    return out


def _bad(name: str, why: str, value: object) -> ValueError:
    return ValueError(f"TrainConfig.{name} {why}, got {value!r}")


def _int(cfg: TrainConfig, name: str, lowest: int, highest: int | None = None) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < lowest or (highest is not None and v > highest):
        raise _bad(name, f"must be an int >= {lowest}" + (f" and <= {highest}" if highest is not None else ""), v)


def _float(cfg: TrainConfig, name: str, lo: float, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> None:
    v = getattr(cfg, name)
    ok = not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)
    ok = ok and (v > lo if lo_open else v >= lo) and (hi is None or (v < hi if hi_open else v <= hi))
    if not ok:
        rng = f"{'(' if lo_open else '['}{lo}, {'inf)' if hi is None else f'{hi}' + (')' if hi_open else ']')}"
        raise _bad(name, f"must be a finite number in {rng}", v)


def _choice(cfg: TrainConfig, name: str, allowed: tuple[str, ...], *, optional: bool = False) -> None:
    v = getattr(cfg, name)
    if (v is None and optional) or v in allowed:
        return
    raise _bad(name, f"must be one of {list(allowed)}" + (" or null" if optional else ""), v)


def _opt_str(cfg: TrainConfig, name: str) -> None:
    v = getattr(cfg, name)
    if v is not None and (not isinstance(v, str) or not v.strip()):
        raise _bad(name, "must be a non-empty string or null", v)


def validate_train_config(cfg: TrainConfig) -> None:
    """Raise ``ValueError`` naming the first field that is out of range, of the wrong type or not an allowed name.

    Cheap and side-effect free (no torch, no file reads: paths are checked where they are opened, which may be
    another pod), so the Dagster asset runs it before launching torchrun and the workers run it again.
    """
    if not isinstance(cfg.index_paths, list | tuple) or not cfg.index_paths or \
            not all(isinstance(p, str) and p for p in cfg.index_paths):
        raise _bad("index_paths", "must be a non-empty list of shard index.json paths", cfg.index_paths)
    if not isinstance(cfg.out_dir, str) or not cfg.out_dir.strip():
        raise _bad("out_dir", "must be a non-empty path", cfg.out_dir)
    _choice(cfg, "preset", PRESETS)
    # a folder is checked by form only: the Dagster run pod need not mount the training pods' /models volume
    if cfg.autoencoder not in NAMED_AUTOENCODERS and not (isinstance(cfg.autoencoder, str) and "/" in cfg.autoencoder):
        raise _bad("autoencoder", f"must be one of {list(NAMED_AUTOENCODERS)} or the path of a local AutoencoderKL "
                                  "folder (absolute, or with a '/': ./vae), or hf:<org>/<name> in the Hugging Face "
                                  "cache", cfg.autoencoder)
    for name in ("steps", "batch_size", "grad_accum", "ckpt_every", "keep_ckpts", "log_every"):
        _int(cfg, name, 1)
    if cfg.global_batch is not None:
        _int(cfg, "global_batch", 1)
        if cfg.global_batch % cfg.batch_size:
            raise _bad("global_batch", f"must be a multiple of batch_size ({cfg.batch_size})", cfg.global_batch)
        if cfg.grad_accum != 1:
            raise _bad("grad_accum", "must stay 1 when global_batch is given (it is derived per world size)", cfg.grad_accum)
    _int(cfg, "warmup_steps", 0)
    _int(cfg, "num_workers", 0)
    _int(cfg, "seed", 0, MAX_SEED)  # numpy seeds must be non-negative
    _float(cfg, "lr", 0.0, lo_open=True)
    _float(cfg, "weight_decay", 0.0)
    _float(cfg, "grad_clip", 0.0, lo_open=True)
    _float(cfg, "ema_decay", 0.0, 1.0, hi_open=True)  # 1.0 would freeze the EMA at the initial weights
    for name in ("p_drop_text", "p_drop_image", "p_drop_both", "token_dropout", "p_image_only"):
        _float(cfg, name, 0.0, 1.0)
    if cfg.p_drop_text + cfg.p_drop_image + cfg.p_drop_both > 1.0 + 1e-12:
        raise _bad("p_drop_text + p_drop_image + p_drop_both", "must be <= 1",
                   cfg.p_drop_text + cfg.p_drop_image + cfg.p_drop_both)
    for name in ("grad_checkpointing", "fsdp", "dual_mask"):
        if not isinstance(getattr(cfg, name), bool):
            raise _bad(name, "must be true or false", getattr(cfg, name))
    _choice(cfg, "precision", PRECISIONS)
    for name, allowed in (("checkpoint_granularity", CHECKPOINT_GRANULARITIES), ("compile", COMPILE_SCOPES),
                          ("compile_mode", COMPILE_MODES), ("attention_backend", ATTENTION_BACKENDS),
                          ("memory_format", MEMORY_FORMATS), ("optimizer_impl", OPTIMIZER_IMPLS),
                          ("ema_impl", EMA_IMPLS), ("fsdp_param_dtype", FSDP_PARAM_DTYPES)):
        _choice(cfg, name, allowed)
    if not isinstance(cfg.compile_backend, str) or not cfg.compile_backend.strip():
        raise _bad("compile_backend", "must be a torch.compile backend name (inductor, aot_eager, ...)", cfg.compile_backend)
    _choice(cfg, "loss_mask", LOSS_MASKS)
    _choice(cfg, "frame_extraction", FRAME_EXTRACTIONS)
    _choice(cfg, "shard_sampling", SHARD_SAMPLINGS)
    if not isinstance(cfg.shard_cache_dir, str) or "://" in cfg.shard_cache_dir:
        raise _bad("shard_cache_dir", "must be a local folder or '' (no cache)", cfg.shard_cache_dir)
    if isinstance(cfg.read_block_bytes, bool) or not isinstance(cfg.read_block_bytes, int) or cfg.read_block_bytes < 1:
        raise _bad("read_block_bytes", "must be an integer >= 1 (bytes)", cfg.read_block_bytes)
    _choice(cfg, "temporal_layer", TEMPORAL_LAYERS, optional=True)
    for name in ("mlflow_uri", "mlflow_artifact_location", "run_name", "text_clip_model", "text_clip_pretrained",
                 "text_t5_path"):
        _opt_str(cfg, name)
    if not isinstance(cfg.mlflow_experiment, str) or not cfg.mlflow_experiment.strip():
        raise _bad("mlflow_experiment", "must be a non-empty string", cfg.mlflow_experiment)
    _validate_curriculum(cfg)
    _validate_diffusion(cfg.diffusion)


def resolve_grad_accum(cfg: TrainConfig, world: int) -> int:
    """Micro-batches per optimizer step on ``world`` ranks, so the global batch is the recipe's on any cluster.

    Without ``global_batch`` it is ``cfg.grad_accum``. With it, global_batch / (batch_size x world), which
    must be a whole number: e.g. Table 6's 16 = 1 x 16 GPUs is grad_accum 1 on 16 ranks, 2 on 8, 16 on 1.
    """
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"world size must be an int >= 1, got {world!r}")
    if cfg.global_batch is None:
        return cfg.grad_accum
    per_step = cfg.batch_size * world
    if cfg.global_batch % per_step:
        ok = [w for w in range(1, cfg.global_batch // cfg.batch_size + 1) if (cfg.global_batch // cfg.batch_size) % w == 0]
        raise ValueError(f"TrainConfig.global_batch {cfg.global_batch} is not a multiple of batch_size x world size "
                         f"= {cfg.batch_size} x {world}; world sizes that fit: {ok}")
    return cfg.global_batch // per_step


def load_config_file(path: str | Path) -> dict:
    """A training config file (local path or fsspec URL) -> dict: JSON (``.json``) or YAML (``.yaml``/``.yml``,
    safe loader: no objects)."""
    p = lake_path(path)
    text = p.read_text()
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"training config {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"training config {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"training config {path} must hold one mapping of TrainConfig fields, got {type(data).__name__}")
    return data


def _validate_curriculum(cfg: TrainConfig) -> None:
    from training.curriculum import CurriculumConfig  # numpy only

    cur = cfg.curriculum
    if not isinstance(cur, dict):
        raise _bad("curriculum", "must be an object of CurriculumConfig fields", cur)
    allowed = sorted(f.name for f in dataclasses.fields(CurriculumConfig) if f.name not in CURRICULUM_SET_BY_TRAINER)
    unknown = sorted(set(cur) - set(allowed))
    if unknown:
        raise ValueError(f"unknown TrainConfig.curriculum fields {unknown}; allowed: {allowed} "
                         f"({list(CURRICULUM_SET_BY_TRAINER)} are set by the trainer)")
    try:  # CurriculumConfig checks its own ranges (mode names, gains, probabilities)
        CurriculumConfig(**{**cur, "total_steps": cfg.steps})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"TrainConfig.curriculum: {exc}") from None


def _validate_diffusion(diff: object) -> None:
    if not isinstance(diff, dict):
        raise _bad("diffusion", "must be an object of DiffusionConfig fields", diff)
    unknown = sorted(set(diff) - set(DIFFUSION_FIELDS))
    if unknown:
        raise ValueError(f"unknown TrainConfig.diffusion fields {unknown}; allowed: {list(DIFFUSION_FIELDS)}")
    n = diff.get("num_train_timesteps", 1000)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise _bad("diffusion.num_train_timesteps", "must be an int >= 2", n)
    b0, b1 = diff.get("beta_start", 0.00085), diff.get("beta_end", 0.012)
    for name, b in (("beta_start", b0), ("beta_end", b1)):
        if isinstance(b, bool) or not isinstance(b, int | float) or not (0.0 < b < 1.0):
            raise _bad(f"diffusion.{name}", "must be a number in (0, 1)", b)
    if b0 >= b1:
        raise _bad("diffusion.beta_start", f"must be < beta_end ({b1})", b0)
    if diff.get("beta_schedule", "scaled_linear") not in BETA_SCHEDULES:
        raise _bad("diffusion.beta_schedule", f"must be one of {list(BETA_SCHEDULES)}", diff.get("beta_schedule"))
    if diff.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
        raise _bad("diffusion.prediction_type", f"must be one of {list(PREDICTION_TYPES)} (the loss regresses the "
                                                "noise)", diff.get("prediction_type"))
