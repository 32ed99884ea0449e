"""Diffusion process of RDTF (Table 6): ε-prediction, 1000 steps, "linear" β from 0.00085 to 0.012.

Table 6 says "Noise schedule: Linear" with β₀ = 0.00085 and β_T = 0.012 — the Latent Diffusion
convention, whose "linear" schedule is linear in √β: β_t = (√β₀ + t/(T−1)·(√β_T − √β₀))². In diffusers
this is ``beta_schedule="scaled_linear"`` (diffusers' ``"linear"`` is linear in β itself, a different
schedule). ``test_diffusion.py`` checks the equivalence numerically. Sampling (DDIM) must use the same
betas: build it with :func:`make_ddim_scheduler`.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import DDIMScheduler, DDPMScheduler


@dataclass(frozen=True)
class DiffusionConfig:
    num_train_timesteps: int = 1000  # Table 6: diffusion steps
    beta_start: float = 0.00085  # Table 6: β₀
    beta_end: float = 0.012  # Table 6: β_T
    beta_schedule: str = "scaled_linear"  # LDM "linear" (linear in sqrt(beta)); see module docstring
    prediction_type: str = "epsilon"  # Table 6: ε-parameterisation


def _schedule_kwargs(cfg: DiffusionConfig) -> dict:
    return {"num_train_timesteps": cfg.num_train_timesteps, "beta_start": cfg.beta_start, "beta_end": cfg.beta_end,
            "beta_schedule": cfg.beta_schedule, "prediction_type": cfg.prediction_type, "clip_sample": False}


def make_train_scheduler(cfg: DiffusionConfig = DiffusionConfig()) -> DDPMScheduler:
    return DDPMScheduler(**_schedule_kwargs(cfg))


def make_ddim_scheduler(cfg: DiffusionConfig = DiffusionConfig()) -> DDIMScheduler:
    """DDIM for sampling, on exactly the training betas."""
    return DDIMScheduler(**_schedule_kwargs(cfg), set_alpha_to_one=False)
