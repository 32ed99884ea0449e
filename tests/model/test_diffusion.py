"""The β schedule is LDM's "linear" (linear in sqrt β) = diffusers' scaled_linear; DDIM shares it."""

import torch

from model.diffusion import DiffusionConfig, make_ddim_scheduler, make_train_scheduler


def test_betas_match_ldm_linear_schedule():
    cfg = DiffusionConfig()
    ldm = torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, cfg.num_train_timesteps, dtype=torch.float64) ** 2
    sched = make_train_scheduler(cfg)
    torch.testing.assert_close(sched.betas.double(), ldm, rtol=1e-6, atol=1e-9)
    assert abs(float(sched.betas[0]) - 0.00085) < 1e-9 and abs(float(sched.betas[-1]) - 0.012) < 1e-9
    plain_linear = torch.linspace(cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps, dtype=torch.float64)
    assert (sched.betas.double() - plain_linear).abs().max() > 1e-4  # diffusers "linear" would be wrong
    torch.testing.assert_close(make_ddim_scheduler(cfg).alphas_cumprod, sched.alphas_cumprod)
