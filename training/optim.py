"""Optimizer, EMA and FSDP precision levers of the trainer (each a TrainConfig option; see model/performance.py).

- AdamW kernels (``optimizer_impl``): ``fused`` updates all parameters in one kernel per step (CUDA, and CPU
  since torch 2.4), ``foreach`` in a few multi-tensor kernels, ``for_loop`` a handful per tensor (hundreds of
  launches for the 0.94 B U-Net's ~700 tensors). ``auto`` takes fused on CUDA, foreach elsewhere. All three
  implement the same update and the same state dict, so a run resumes under any of them.
- EMA (``ema_impl``): ``foreach`` is one ``_foreach_lerp_`` over every tensor (``ema + (1-d)·(w - ema)``, which is
  ``d·ema + (1-d)·w``); ``loop`` the former ``mul_``/``add_`` pair per tensor.
- FSDP2 mixed precision (``fsdp_param_dtype``): ``bf16`` all-gathers and computes in bf16 while the sharded
  parameters (the optimizer's master weights) and the gradient reduce-scatter stay fp32.
"""

from __future__ import annotations

from enum import StrEnum

import torch


class OptimizerImpl(StrEnum):
    AUTO = "auto"
    FUSED = "fused"
    FOREACH = "foreach"
    FOR_LOOP = "for_loop"


class EmaImpl(StrEnum):
    FOREACH = "foreach"
    LOOP = "loop"


def make_adamw(params: list[torch.nn.Parameter] | list[dict], *, lr: float, weight_decay: float, impl: OptimizerImpl | str,
               device: torch.device) -> torch.optim.AdamW:
    impl = OptimizerImpl(impl)
    if impl is OptimizerImpl.AUTO:
        impl = OptimizerImpl.FUSED if device.type == "cuda" else OptimizerImpl.FOREACH
    kw = {OptimizerImpl.FUSED: {"fused": True}, OptimizerImpl.FOREACH: {"foreach": True},
          OptimizerImpl.FOR_LOOP: {"foreach": False, "fused": False}}[impl]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kw)


@torch.no_grad()
def ema_update(ema: list[torch.Tensor], live: list[torch.Tensor], decay: float, impl: EmaImpl | str) -> None:
    """``ema <- decay·ema + (1 - decay)·live`` for paired lists (fp32 ``ema``; ``live`` of any float dtype)."""
    if len(ema) != len(live):
        raise ValueError(f"EMA has {len(ema)} tensors, the model {len(live)}")
    live = [v if v.dtype == e.dtype else v.to(e.dtype) for e, v in zip(ema, live)]
    if EmaImpl(impl) is EmaImpl.FOREACH:
        torch._foreach_lerp_(ema, live, 1.0 - decay)
    else:
        for e, v in zip(ema, live):
            e.mul_(decay).add_(v, alpha=1.0 - decay)


def fsdp_policy(param_dtype: str):
    """The FSDP2 ``MixedPrecisionPolicy`` for ``fsdp_param_dtype`` (fp32: none)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if param_dtype not in ("fp32", "bf16"):
        raise ValueError(f"fsdp_param_dtype must be one of ['fp32', 'bf16'], got {param_dtype!r}")
    if param_dtype == "fp32":
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def split_legacy_param_group(sd: dict, first_size: int, first_prefix: str) -> dict:
    """An optimizer state dict with ONE param group (older checkpoints) split into the trainer's two groups.

    The first group is the U-Net: parameters named ``first_prefix…`` in a FQN-keyed dict
    (torch.distributed.checkpoint), the first ``first_size`` indices in torch's index-keyed one. Other dicts
    are returned unchanged.
    """
    groups = sd.get("param_groups") or []
    if len(groups) != 1:
        return sd
    (group,) = groups
    params = list(group["params"])
    if params and isinstance(params[0], str):
        parts = [[p for p in params if p.startswith(first_prefix)], [p for p in params if not p.startswith(first_prefix)]]
    else:
        parts = [params[:first_size], params[first_size:]]
    return {**sd, "param_groups": [{**group, "params": part} for part in parts]}
