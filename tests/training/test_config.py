"""TrainConfig validation: every bad value is refused at construction with a message naming the field and the
allowed values (no torch needed), so the Dagster asset can refuse it before launching torchrun."""

from __future__ import annotations

import json

import pytest

from training.config import TrainConfig


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**({"index_paths": ["/lake/shards/d0/index.json"], "out_dir": "/lake/training/t"} | kw))


def test_ckpt_every_zero_is_a_clear_error_not_zero_division():
    with pytest.raises(ValueError, match=r"TrainConfig\.ckpt_every must be an int >= 1, got 0"):
        _cfg(ckpt_every=0)


def test_grad_accum_zero_is_a_clear_error_not_a_torch_error():
    with pytest.raises(ValueError, match=r"TrainConfig\.grad_accum must be an int >= 1, got 0"):
        _cfg(grad_accum=0)


@pytest.mark.parametrize("field,value,words", [
    ("steps", -5, "steps must be an int >= 1"), ("steps", 2.5, "steps must be an int"),
    ("steps", True, "steps must be an int"), ("batch_size", 0, "batch_size must be an int >= 1"),
    ("keep_ckpts", 0, "keep_ckpts"), ("log_every", 0, "log_every"), ("warmup_steps", -1, "warmup_steps must be an int >= 0"),
    ("num_workers", -1, "num_workers"), ("seed", -1, "seed must be an int >= 0"),
    ("lr", 0, "lr must be a finite number in (0.0, inf)"), ("lr", float("nan"), "lr must be a finite number"),
    ("weight_decay", -0.1, "weight_decay"), ("grad_clip", 0.0, "grad_clip"), ("ema_decay", 1.0, "ema_decay"),
    ("ema_decay", -0.1, "ema_decay"), ("p_drop_text", 1.5, "p_drop_text"), ("token_dropout", -0.1, "token_dropout"),
    ("p_drop_both", 0.9, "p_drop_text + p_drop_image + p_drop_both must be <= 1"),
    ("fsdp", "yes", "fsdp must be true or false"), ("index_paths", [], "index_paths must be a non-empty list"),
    ("out_dir", "", "out_dir must be a non-empty path"), ("mlflow_experiment", "", "mlflow_experiment"),
    ("mlflow_uri", "", "mlflow_uri must be a non-empty string or null"),
])
def test_numeric_and_type_ranges_name_the_field(field, value, words):
    with pytest.raises(ValueError, match=r"TrainConfig\.") as err:
        _cfg(**{field: value})
    assert words in str(err.value)


@pytest.mark.parametrize("field,value,allowed", [
    ("preset", "huge", "['paper', 'paper_3dconv', 'tiny', 'tiny_pixel', 'micro_pixel']"),
    ("precision", "fp16", "['auto', 'fp32', 'bf16']"),
    ("frame_extraction", "random", "['cluster', 'uniform']"),
    ("temporal_layer", "lstm", "['sti', 'conv3d', 'none'] or null"),
    ("loss_mask", "all", "['first_k', 'targets']"),
    ("autoencoder", "tiny-kl", "['pixel', 'tiny_kl'] or the path of a local AutoencoderKL folder"),
])
def test_enum_like_fields_name_the_allowed_values(field, value, allowed):
    with pytest.raises(ValueError) as err:
        _cfg(**{field: value})
    assert f"TrainConfig.{field}" in str(err.value) and allowed in str(err.value) and repr(value) in str(err.value)


def test_curriculum_mode_and_fields_are_checked():
    with pytest.raises(ValueError, match=r"curriculum.*mode must be one of \['none', 'linear', 'adaptive'\]"):
        _cfg(curriculum={"mode": "fast"})
    with pytest.raises(ValueError, match=r"unknown TrainConfig.curriculum fields \['kp_gain'\]"):
        _cfg(curriculum={"kp_gain": 1})
    with pytest.raises(ValueError, match=r"total_steps"):
        _cfg(curriculum={"total_steps": 5})  # set by the trainer from steps
    _cfg(curriculum={"mode": "linear", "kp": 2.0})


def test_diffusion_overrides_are_checked():
    with pytest.raises(ValueError, match=r"unknown TrainConfig.diffusion fields \['steps'\]"):
        _cfg(diffusion={"steps": 10})
    with pytest.raises(ValueError, match=r"prediction_type must be one of \['epsilon'\]"):
        _cfg(diffusion={"prediction_type": "v_prediction"})
    with pytest.raises(ValueError, match=r"beta_start must be < beta_end"):
        _cfg(diffusion={"beta_start": 0.02, "beta_end": 0.01})
    _cfg(diffusion={"num_train_timesteps": 100, "beta_schedule": "linear"})


def test_unknown_json_keys_are_rejected_by_name(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"index_paths": ["i.json"], "out_dir": "o", "learning_rate": 1, "stpes": 3}))
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['learning_rate', 'stpes'\]; allowed: \["):
        TrainConfig.from_json(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        TrainConfig.from_json(path)


def test_defaults_are_valid_and_model_train_uses_the_same_class():
    from training.trainer import TrainConfig as Reexported

    assert Reexported is TrainConfig
    _cfg()


def test_allowed_names_mirror_the_model_enums():
    """The light module lists names so the Dagster process need not import torch; they must not drift."""
    import dataclasses

    from data.loader import FrameExtraction, ShardSampling
    from model.diffusion import DiffusionConfig
    from model.masks import LossMask
    from model.unet import PRESETS, TemporalLayer
    from training import config as tc

    assert set(tc.PRESETS) == set(PRESETS)
    assert set(tc.TEMPORAL_LAYERS) == {t.value for t in TemporalLayer}
    assert set(tc.FRAME_EXTRACTIONS) == {f.value for f in FrameExtraction}
    assert set(tc.SHARD_SAMPLINGS) == {s.value for s in ShardSampling}
    assert set(tc.LOSS_MASKS) == {m.value for m in LossMask}
    assert set(tc.DIFFUSION_FIELDS) == {f.name for f in dataclasses.fields(DiffusionConfig)}
    from model import performance as perf
    from training.optim import EmaImpl, OptimizerImpl

    assert set(tc.CHECKPOINT_GRANULARITIES) == {c.value for c in perf.Checkpointing} - {"none"}
    assert set(tc.COMPILE_SCOPES) == {c.value for c in perf.CompileScope}
    assert set(tc.COMPILE_MODES) == {c.value for c in perf.CompileMode}
    assert set(tc.ATTENTION_BACKENDS) == {c.value for c in perf.AttentionBackend}
    assert set(tc.MEMORY_FORMATS) == {c.value for c in perf.MemoryFormat}
    assert set(tc.OPTIMIZER_IMPLS) == {c.value for c in OptimizerImpl}
    assert set(tc.EMA_IMPLS) == {c.value for c in EmaImpl}


@pytest.mark.parametrize("field,value", [("compile", "max"), ("compile_mode", "fast"), ("attention_backend", "xformers"),
                                         ("memory_format", "nhwc"), ("optimizer_impl", "apex"), ("ema_impl", "torch"),
                                         ("fsdp_param_dtype", "fp16"), ("checkpoint_granularity", "none"),
                                         ("compile_backend", "")])
def test_speed_levers_name_the_allowed_values(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field} "):
        _cfg(**{field: value})


def test_the_paper_loss_mask_is_the_default_and_older_configs_keep_their_behaviour():
    """Method: the loss is "based only on the first k frames" -> default first_k; an older train.json said
    include_conditioned_in_loss (false = targets only) and must resume with the behaviour it was trained with."""
    assert _cfg().loss_mask == "first_k"
    base = {"index_paths": ["/i.json"], "out_dir": "/o"}
    assert TrainConfig.from_dict(base | {"include_conditioned_in_loss": False}).loss_mask == "targets"
    assert TrainConfig.from_dict(base | {"include_conditioned_in_loss": True}).loss_mask == "first_k"
    with pytest.raises(ValueError, match="give 'loss_mask' only"):
        TrainConfig.from_dict(base | {"include_conditioned_in_loss": True, "loss_mask": "targets"})
    with pytest.raises(ValueError, match="include_conditioned_in_loss"):
        TrainConfig.from_dict(base | {"include_conditioned_in_loss": "yes"})


@pytest.mark.parametrize("field,value,match", [
    ("shard_sampling", "random", "resample"), ("shard_cache_dir", "s3://b/cache", "local folder"),
    ("read_block_bytes", 0, ">= 1"), ("read_block_bytes", True, ">= 1"),
])
def test_shard_streaming_options_are_validated(field, value, match):
    from training.config import TrainConfig

    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict({"index_paths": ["s3://b/lake/shards/d0/index.json"], "out_dir": "s3://b/lake/training/r",
                               field: value})
