"""evaluation.samples / evaluation.heldout: the image-only generation task (Table 7's text-free generation rows)."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_image_only_task_is_sampled_without_text_and_scored_without_caption(tmp_path, tiny_shards):
    from data.sharding import iter_test_samples
    from evaluation.heldout import HeldoutConfig, run_heldout_loss
    from evaluation.samples import DEFAULT_TASKS, EvalSamplesConfig, EvalTask, generate_eval_samples
    from model.pipeline import RDTFPipeline
    from tests.helpers import tiny_checkpoint

    assert "i2v_image" not in DEFAULT_TASKS and EvalTask.I2V_IMAGE.known_positions(8) == [0]
    ckpt = tiny_checkpoint(tmp_path / "ck", seed=2)
    pipe = RDTFPipeline.from_pretrained(ckpt)
    calls = []
    hook = pipe.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    cfg = EvalSamplesConfig(tasks=("i2v", "i2v_image"), n_videos=2, steps=2, batch_size=2)
    try:
        man = generate_eval_samples(pipe, iter_test_samples([str(tiny_shards)]), cfg, tmp_path / "s", checkpoint=ckpt)
    finally:
        hook.remove()
    assert calls == [6, 6, 4, 4]  # i2v: 3 guidance passes x 2 clips; image-only: the text pass is skipped
    assert man["tasks"]["i2v_image"]["known_positions"] == [0]
    i2v, only = np.load(tmp_path / "s" / "i2v.npy"), np.load(tmp_path / "s" / "i2v_image.npy")
    assert only.shape == i2v.shape and not np.array_equal(only, i2v)
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["options"]["tasks"] == ["i2v", "i2v_image"]

    rep = run_heldout_loss(pipe, iter_test_samples([str(tiny_shards)]),
                           HeldoutConfig(tasks=("i2v", "i2v_image"), n_videos=2, timesteps=(500,), batch_size=2))
    a, b = rep.metrics["eval/i2v/loss"], rep.metrics["eval/i2v_image/loss"]
    assert np.isfinite(a) and np.isfinite(b) and a != b  # same frames and noise, the caption alone differs
    paper = run_heldout_loss(pipe, iter_test_samples([str(tiny_shards)]),
                             HeldoutConfig(tasks=("i2v",), n_videos=2, timesteps=(500,), batch_size=2, loss_mask="first_k"))
    assert paper.metrics["eval/i2v/loss"] != a  # the first-k profile also scores the conditioned frame
    with pytest.raises(ValueError, match="loss_mask"):
        HeldoutConfig(loss_mask="all")


@pytest.mark.slow
def test_uniform_real_set_is_the_no_ddu_training_distribution_and_fvd_reports_both(tmp_path):
    """extra_real_sets=("uniform",): equal-interval clips of the stickers with >= F frames; FVD against each set."""
    from data.loader import uniform_frames
    from evaluation.fvd import FVDConfig
    from evaluation.samples import EvalSamplesConfig, generate_eval_samples, load_eval_samples
    from evaluation.suite import run_fvd
    from model.pipeline import RDTFPipeline
    from tests.helpers import tiny_checkpoint

    rng = np.random.default_rng(0)

    def sticker(i: int, n: int) -> dict:
        frames = rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
        reps = {"8": sorted(rng.choice(n, size=min(n, 8), replace=False).tolist())}
        return {"key": f"s{i}", "frames": frames, "caption": f"sticker {i}", "meta": {"reps": reps, "n_frames": n}}

    tests = [sticker(0, 20), sticker(1, 5), sticker(2, 12), sticker(3, 9)]  # s1 is too short for 8 equal intervals
    ckpt = tiny_checkpoint(tmp_path / "ck")
    pipe = RDTFPipeline.from_pretrained(ckpt)
    cfg = EvalSamplesConfig(tasks=("i2v",), n_videos=4, steps=1, batch_size=4, extra_real_sets=("uniform",))
    man = generate_eval_samples(pipe, iter(tests), cfg, tmp_path / "s", checkpoint=ckpt)
    assert man["extra_real_sets"] == {"uniform": {"n": 3}}
    samples = load_eval_samples(tmp_path / "s")
    uni = samples.extra_real["uniform"]
    for j, s in enumerate(t for t in tests if t["meta"]["n_frames"] >= 8):
        np.testing.assert_array_equal(uni[j], uniform_frames(s["frames"], s["meta"]["n_frames"], 8)[0])
    rep = run_fvd(samples, FVDConfig(batch_size=4, seed=0, device="cpu"))
    assert np.isfinite(rep.metrics["eval/i2v/fvd"]) and np.isfinite(rep.metrics["eval/i2v/fvd_uniform"])
    assert rep.metrics["eval/i2v/fvd"] != rep.metrics["eval/i2v/fvd_uniform"]
    assert rep.details["i2v"]["n_real_uniform"] == 3 and rep.details["i2v"]["n_real"] == 4
    with pytest.raises(ValueError, match="allowed"):
        EvalSamplesConfig(extra_real_sets=("random",))
