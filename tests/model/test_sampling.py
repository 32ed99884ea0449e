"""Sampling: dual guidance arithmetic, batched == separate forwards, determinism, every task end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.diffusion import make_ddim_scheduler, make_train_scheduler
from model.pipeline import RDTFPipeline
from model.sampling import (
    condition_positions,
    guided_epsilon,
    sample_latents,
)
from model.unet import DFGN, tiny
from tests.helpers import tiny_checkpoint


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> RDTFPipeline:
    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))
    return RDTFPipeline.from_pretrained(ckpt)


def test_ddim_uses_training_betas():
    torch.testing.assert_close(make_ddim_scheduler().alphas_cumprod, make_train_scheduler().alphas_cumprod)
    s = make_ddim_scheduler()
    s.set_timesteps(50)
    assert len(s.timesteps) == 50


def test_guidance_arithmetic_reduces_to_plain_predictions():
    g = torch.Generator().manual_seed(0)
    u, i, f = (torch.randn(2, 8, 3, 4, 4, generator=g) for _ in range(3))
    torch.testing.assert_close(guided_epsilon(u, i, f, 0.0, 0.0), u)
    torch.testing.assert_close(guided_epsilon(u, i, f, 0.0, 1.0), i)
    torch.testing.assert_close(guided_epsilon(u, i, f, 1.0, 1.0), f)
    torch.testing.assert_close(guided_epsilon(u, i, f, 7.5, 7.5), u + 7.5 * (i - u) + 7.5 * (f - i))


def test_batched_guidance_equals_three_separate_forwards():
    torch.manual_seed(0)
    model = DFGN.from_dataclass(tiny(pixel_space=True)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    cond = torch.randn(1, 8, 3, 32, 32)
    mask = torch.tensor([[True, False, False, False, False, False, False, True]])
    txt, null = torch.randn(1, 77, 64), torch.zeros(1, 77, 64)
    kw = dict(steps=3, eta=1.0, text_scale=3.0, image_scale=2.0)
    a = sample_latents(model, cond, mask, txt, null, generator=torch.Generator().manual_seed(1), batched=True, **kw)
    b = sample_latents(model, cond, mask, txt, null, generator=torch.Generator().manual_seed(1), batched=False, **kw)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert torch.equal(a[0, 0], cond[0, 0]) and torch.equal(a[0, 7], cond[0, 7])  # paste_known


def test_seeded_determinism(pipe):
    a = pipe("a cat waving", num_inference_steps=2, seed=3, progress=False)
    b = pipe("a cat waving", num_inference_steps=2, seed=3, progress=False)
    c = pipe("a cat waving", num_inference_steps=2, seed=4, progress=False)
    assert np.array_equal(a.frames, b.frames) and not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("task,n_images", [("generate", 0), ("generate", 1), ("generate_image", 1), ("interpolate", 2),
                                           ("predict_forward", 3), ("predict_backward", 2)])
def test_every_task_end_to_end(pipe, task, n_images):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (pipe.image_size, pipe.image_size, 3), dtype=np.uint8) for _ in range(n_images)]
    res = pipe("a star bouncing", images=images, task=task, num_inference_steps=2, progress=False)
    assert res.frames.shape == (pipe.num_frames, pipe.image_size, pipe.image_size, 3) and res.frames.dtype == np.uint8
    assert res.durations_ms == [100] * pipe.num_frames
    for img, p in zip(images, condition_positions(task, n_images, pipe.num_frames, None)):
        assert np.array_equal(res.frames[p], img)  # known frames pasted back exactly (pixel space)


def test_image_only_generation_ignores_the_prompt_and_skips_the_text_pass(pipe):
    """generate_image: no caption condition, s_txt = 0, so the text forward is skipped (2B clips, not 3B)."""
    img = np.random.default_rng(1).integers(0, 255, (pipe.image_size, pipe.image_size, 3), dtype=np.uint8)
    calls = []
    hook = pipe.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        a = pipe("a cat waving", images=[img], task="generate_image", num_inference_steps=2, progress=False)
        b = pipe("a dog running", images=[img], task="generate_image", num_inference_steps=2, progress=False)
        assert set(calls) == {2}
        calls.clear()
        c = pipe("a cat waving", images=[img], task="generate", num_inference_steps=2, progress=False)
        assert set(calls) == {3}
    finally:
        hook.remove()
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)  # with text guidance the caption matters
    for n in (0, 2):
        with pytest.raises(ValueError, match="exactly one image"):
            condition_positions("generate_image", n, 8, None)


def test_one_task_vocabulary_for_pipeline_cli_gallery_and_evaluation():
    from assets.gallery import GALLERY_TASKS
    from evaluation.samples import EvalTask
    from model.masks import SamplingTask, Task
    from pipelines.generate_cli import TASKS

    assert TASKS == tuple(t.value for t in SamplingTask)
    assert set(GALLERY_TASKS.values()) <= set(SamplingTask)
    assert {t.sampling_task.family for t in EvalTask} == set(Task)  # every training family is evaluated
    assert [t for t in EvalTask if not t.uses_text] == [EvalTask.I2V_IMAGE]
    with pytest.raises(ValueError, match="allowed: .*predict_backward"):
        SamplingTask.parse("predict")


def test_positions_and_checkpoint_errors(tmp_path):
    assert condition_positions("interpolate", 2, 8, None) == [0, 7]
    assert condition_positions("predict_backward", 3, 8, None) == [5, 6, 7]
    for bad in [("morph", 1, None), ("interpolate", 1, None), ("generate", 2, None), ("interpolate", 2, [0, 9])]:
        with pytest.raises(ValueError):
            condition_positions(bad[0], bad[1], 8, bad[2])
    with pytest.raises(ValueError, match="not an RDTF checkpoint"):
        RDTFPipeline.from_pretrained(tmp_path / "missing")
