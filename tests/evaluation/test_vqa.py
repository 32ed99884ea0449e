"""FAST-VQA-B (evaluation.vqa / evaluation.swin3d): checkpoint layout, fragment sampling, determinism.

The Swin-T at the official 32x224x224 clip costs several seconds on a 2-core CPU, so full-size forwards are
limited to one clip of two short videos; the rest uses small inputs or no forward at all.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from evaluation.swin3d import fragment_gate
from evaluation.vqa import (
    FASTVQA_WEIGHTS_NAME,
    MEAN_255,
    SCORE_MEAN,
    STD_255,
    FastVQA,
    ShortClipPolicy,
    VQAConfig,
    VQAEvaluator,
    VQAFrames,
    fragment_origins,
    load_fastvqa,
    normalise_score,
    sample_fragments,
    scored_frames,
    temporal_indices,
)
from evaluation.weights import WeightsError
from tests.helpers import FIXTURES

FIXTURE = FIXTURES / "fastvqa_keys.txt"


@pytest.fixture(scope="module")
def random_model() -> FastVQA:
    model, info = load_fastvqa(None, seed=0)
    assert info["weights"] == "random" and info["init_seed"] == 0
    return model


def _expected_keys() -> dict[str, tuple[int, ...]]:
    out = {}
    for line in FIXTURE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split()
            out[key] = tuple(int(s) for s in shape.split(","))
    return out


def _denormalise(clips: torch.Tensor) -> torch.Tensor:
    """``(n, 3, T, S, S)`` normalised -> integer pixel values, same layout."""
    mean = torch.tensor(MEAN_255).view(1, 3, 1, 1, 1)
    std = torch.tensor(STD_255).view(1, 3, 1, 1, 1)
    return (clips * std + mean).round().long()


def _coord_video(frames: int, h: int, w: int) -> np.ndarray:
    """uint8 (F, H, W, 3) with R = row, G = column, B = 5 * frame: every pixel says where it came from."""
    assert h <= 256 and w <= 256 and frames * 5 <= 255
    v = np.zeros((frames, h, w, 3), dtype=np.uint8)
    v[..., 0] = np.arange(h, dtype=np.uint8)[None, :, None]
    v[..., 1] = np.arange(w, dtype=np.uint8)[None, None, :]
    v[..., 2] = (5 * np.arange(frames, dtype=np.uint8))[:, None, None]
    return v


# ---------------------------------------------------------------------------------------------- checkpoint


def test_state_dict_matches_published_layout(random_model):
    expected = _expected_keys()
    got = {k: tuple(v.shape) for k, v in random_model.state_dict().items()}
    assert len(expected) == 197
    assert set(got) == set(expected), (sorted(set(got) - set(expected))[:5],
                                       sorted(set(expected) - set(got))[:5])
    assert got == expected
    # hand-checked against fastvqa/models/{swin_backbone,head}.py
    assert got["fragments_backbone.patch_embed.proj.weight"] == (96, 3, 2, 4, 4)
    assert got["fragments_backbone.layers.0.blocks.0.attn.relative_position_bias_table"] == (15 * 13 * 13, 3)
    assert got["fragments_backbone.layers.2.blocks.5.attn.fragment_position_bias_table"] == (2535, 12)
    assert got["fragments_backbone.layers.3.blocks.1.attn.relative_position_index"] == (392, 392)
    assert "fragments_backbone.layers.3.blocks.0.attn.fragment_position_bias_table" not in got  # GRPB in 0-2
    assert got["fragments_backbone.layers.2.downsample.reduction.weight"] == (768, 1536)
    assert got["vqa_head.fc_hid.weight"] == (64, 768, 1, 1, 1)
    assert got["vqa_head.fc_last.weight"] == (1, 64, 1, 1, 1)
    assert sum(p.numel() for p in random_model.parameters()) == pytest.approx(27.7e6, rel=0.02)


def test_random_init_is_seeded():
    a, _ = load_fastvqa(None, seed=0)
    b, _ = load_fastvqa(None, seed=0)
    c, _ = load_fastvqa(None, seed=1)
    key = "fragments_backbone.layers.1.blocks.0.attn.qkv.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])


def test_official_wrapped_checkpoint_loads_strictly(tmp_path, random_model):
    other, _ = load_fastvqa(None, seed=7)
    path = tmp_path / FASTVQA_WEIGHTS_NAME
    # as the official scripts save it: scipy correlations (numpy scalars) next to the weights
    best = (np.float64(0.81), np.float64(0.88), np.float64(0.84), np.float32(0.4))
    torch.save({"state_dict": other.state_dict(), "validation_results": best}, path)
    loaded, info = load_fastvqa(path)
    assert info["weights"] == "file" and info["weights_path"] == str(path)
    x = torch.randn(2, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want, got, base = other(x), loaded(x), random_model(x)
    assert got.shape == (2,)
    assert torch.equal(got, want)
    assert not torch.allclose(got, base)  # the file's weights really replaced the seed-0 init


def test_renamed_key_is_named(tmp_path, random_model):
    sd = dict(random_model.state_dict())
    sd["fragments_backbone.layers.0.blocks.0.attn.frag_table"] = sd.pop(
        "fragments_backbone.layers.0.blocks.0.attn.fragment_position_bias_table")
    path = tmp_path / "renamed.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(WeightsError) as e:
        load_fastvqa(path)
    assert "fragments_backbone.layers.0.blocks.0.attn.fragment_position_bias_table" in str(e.value)
    assert "frag_table" in str(e.value)


def test_missing_file_names_published_checkpoint(tmp_path):
    with pytest.raises(WeightsError, match=FASTVQA_WEIGHTS_NAME):
        load_fastvqa(tmp_path / "nope.pth")


# ---------------------------------------------------------------------------------------------- GRPB


def test_fragment_gate_is_l1_fragment_distance():
    # stage 0 at the official input: 16x56x56 tokens, 8x8 tokens per 32 px fragment, window (8, 7, 7)
    gate = fragment_gate(16, 56, 56, (8, 7, 7), (0, 0, 0), torch.device("cpu"))
    assert gate.shape == (2 * 8 * 8, 392, 392)
    hh, ww = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
    for wi, (bh, bw) in {0: (0, 0), 9: (1, 1), 63: (7, 7)}.items():  # window index -> (h, w) window origin
        fh = ((bh * 7 + hh) // 8).flatten().repeat(8)  # fragment row of every token (d outermost)
        fw = ((bw * 7 + ww) // 8).flatten().repeat(8)
        want = (fh[:, None] - fh[None, :]).abs() + (fw[:, None] - fw[None, :]).abs()
        assert torch.equal(gate[wi].long(), want)
    assert int(gate.max()) == 2  # the official gate is not clamped to {0, 1}


# ---------------------------------------------------------------------------------------------- sampling


def test_config_validation():
    VQAConfig()  # defaults are the official protocol
    for bad in (dict(clip_len=12), dict(fsize=16), dict(num_clips=0), dict(device="tpu"), dict(seed=-1),
                dict(frame_interval=0), dict(batch_size=0)):
        with pytest.raises(ValueError):
            VQAConfig(**bad)


def test_temporal_indices_follow_official_sampler():
    g = torch.Generator().manual_seed(0)
    cfg = VQAConfig(short_clip="official_wrap")
    # 8-frame sticker: segments of 2 frames, no random offset, every 2nd frame, wrapped modulo 8
    idx = temporal_indices(8, cfg, g)
    assert idx.shape == (4, 32)
    for k in range(4):
        assert idx[k].tolist() == [(2 * k + 2 * t) % 8 for t in range(32)]
    # long video: segment 75 > span 64 -> start in [75k, 75k + 11)
    idx = temporal_indices(300, cfg, g)
    assert (idx.diff(dim=1) == 2).all()
    for k in range(4):
        assert 75 * k <= int(idx[k, 0]) < 75 * k + 11


def test_fragments_are_crops_from_their_grid_cells():
    F_, H, W = 40, 252, 250
    cfg = VQAConfig(seed=3)
    clips = sample_fragments(_coord_video(F_, H, W), cfg, torch.Generator().manual_seed(3))
    assert clips.shape == (4, 3, 32, 224, 224) and clips.dtype == torch.float32
    px = _denormalise(clips)
    g_ref = torch.Generator().manual_seed(3)
    idx = temporal_indices(F_, cfg, g_ref)  # drawn first, as in sample_fragments
    s, r = 32, torch.arange(32)
    for k in range(4):
        assert torch.equal(px[k, 2, :, 0, 0], 5 * idx[k])  # frames in the sampled order
        for i in range(7):
            for j in range(7):
                frag = px[k, :, :, i * s:(i + 1) * s, j * s:(j + 1) * s]  # 3, T, 32, 32
                h0, w0 = int(frag[0, 0, 0, 0]), int(frag[1, 0, 0, 0])
                assert torch.equal(frag[0], (h0 + r).view(1, s, 1).expand(32, s, s))  # contiguous rows
                assert torch.equal(frag[1], (w0 + r).view(1, 1, s).expand(32, s, s))  # contiguous columns
                assert torch.equal(frag[2], (5 * idx[k]).view(32, 1, 1).expand(32, s, s))
                assert min(H // 7 * i, H - s) <= h0 < min(H // 7 * i, H - s) + max(1, H // 7 - s)
                assert min(W // 7 * j, W - s) <= w0 < min(W // 7 * j, W - s) + max(1, W // 7 - s)


def test_fragment_offsets_are_seeded():
    def origins(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return fragment_origins(720, 1280, VQAConfig(), torch.Generator().manual_seed(seed))

    a, b, c = origins(0), origins(0), origins(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert a[0].shape == (4, 7, 7)
    video = _coord_video(16, 240, 240)
    s0 = sample_fragments(video, VQAConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(s0, sample_fragments(video, VQAConfig(), torch.Generator().manual_seed(0)))
    assert not torch.equal(s0, sample_fragments(video, VQAConfig(), torch.Generator().manual_seed(1)))


def test_small_video_is_upsampled_and_cells_respected():
    # 112x168 -> x2 -> 224x336: grid cells are 32x48 upsampled = 16x24 source px of constant colour
    h, w = 112, 168
    rows, cols = np.arange(h) // 16, np.arange(w) // 24
    v = np.zeros((8, h, w, 3), dtype=np.uint8)
    v[..., 0] = (30 * rows)[None, :, None]
    v[..., 1] = (30 * cols)[None, None, :]
    clips = sample_fragments(torch.from_numpy(v), VQAConfig(num_clips=2), torch.Generator().manual_seed(0))
    assert clips.shape == (2, 3, 32, 224, 224)
    px = _denormalise(clips)
    for i in range(7):
        for j in range(7):
            centre = px[:, :, :, i * 32 + 16, j * 32 + 16]  # n, 3, T
            assert (centre[:, 0] == 30 * i).all() and (centre[:, 1] == 30 * j).all(), (i, j)


def test_short_sticker_loops_and_interval_one_sees_every_frame():
    v = _coord_video(8, 64, 64)
    official_1 = VQAConfig(frame_interval=1, short_clip="official_wrap")
    clips = sample_fragments(v, official_1, torch.Generator().manual_seed(0))
    frames = _denormalise(clips)[:, 2, :, 0, 0] // 5  # n, T
    assert frames[0].tolist() == [t % 8 for t in range(32)]
    assert frames[1].tolist() == [(2 + t) % 8 for t in range(32)]
    even = sample_fragments(v, VQAConfig(short_clip="official_wrap"), torch.Generator().manual_seed(0))
    even = _denormalise(even)[:, 2, :, 0, 0] // 5
    assert set(even.flatten().tolist()) == {0, 2, 4, 6}  # official interval 2 on an even-length loop


# ------------------------------------------------------------------- short clips and generated frames (issue 17)


def test_short_clip_and_frames_options_are_validated():
    assert VQAConfig().short_clip == ShortClipPolicy.ALL_FRAMES and VQAConfig().frames == VQAFrames.ALL
    with pytest.raises(ValueError, match="all_frames.*official_wrap"):
        VQAConfig(short_clip="wrap")
    with pytest.raises(ValueError, match="all.*generated"):
        VQAConfig(frames="known")
    assert VQAConfig(short_clip=ShortClipPolicy.OFFICIAL_WRAP).short_clip == "official_wrap"


def test_default_samples_every_frame_of_an_8_frame_sticker_equally():
    # (c) paper Sec. 4: 8-frame stickers; the default must see every frame, each equally often
    idx = temporal_indices(8, VQAConfig(), torch.Generator().manual_seed(0))
    assert idx.shape == (4, 32)
    assert torch.bincount(idx.flatten(), minlength=8).tolist() == [16] * 8
    assert (idx.diff(dim=1) % 8 == 1).all()  # interval 1: consecutive frames stay consecutive (looping)
    for k in range(4):  # each clip alone already covers all 8 frames
        assert set(idx[k].tolist()) == set(range(8))
    # demo setting (1 clip x 16 frames) and the generated-only selections of Table 2 / Table 1
    assert set(temporal_indices(8, VQAConfig(num_clips=1, clip_len=16), torch.Generator()).tolist()[0]) == set(range(8))
    for n in (3, 4, 7):  # prediction, interpolation, image&text -> sticker generated frames
        counts = torch.bincount(temporal_indices(n, VQAConfig(), torch.Generator()).flatten(), minlength=n)
        assert len(counts) == n and int(counts.min()) >= 1 and int(counts.max() - counts.min()) <= 1
    # deterministic: no random draw for a short video, so the generator state is untouched
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    temporal_indices(8, VQAConfig(), g)
    assert torch.equal(g.get_state(), state)


def test_official_wrap_is_reachable_and_scores_even_frames_only():
    # (d) FAST-VQA's FragmentSampleFrames on 8 frames: interval 2, wrapped -> {0, 2, 4, 6} (interpolation's known)
    idx = temporal_indices(8, VQAConfig(short_clip="official_wrap"), torch.Generator().manual_seed(0))
    assert set(idx.flatten().tolist()) == {0, 2, 4, 6}
    # long videos are sampled officially under both policies (same random offsets from the same seed)
    a = temporal_indices(300, VQAConfig(), torch.Generator().manual_seed(1))
    b = temporal_indices(300, VQAConfig(short_clip="official_wrap"), torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and (a.diff(dim=1) == 2).all()


def test_scored_frames_follow_the_known_mask():
    interp = [0, 2, 4, 6]  # Table 7 interpolation mask [1 0 1 0 1 0 1 0]
    gen = VQAConfig(frames="generated")
    assert scored_frames(8, interp, VQAConfig()) == list(range(8))  # frames=all
    assert scored_frames(8, interp, gen) == [1, 3, 5, 7]
    assert scored_frames(8, [0, 1, 2, 3, 4], gen) == [5, 6, 7]  # prediction
    assert scored_frames(8, None, gen) == list(range(8))  # no mask (test clips)
    assert scored_frames(8, [], gen) == list(range(8))  # text -> sticker
    with pytest.raises(ValueError, match="every one of the 8 frames is known"):
        scored_frames(8, range(8), gen)
    with pytest.raises(ValueError, match="outside"):
        scored_frames(8, [8], gen)
    # the clip is built from the selected frames, in order
    v = _coord_video(8, 64, 64)
    clips = sample_fragments(v, VQAConfig(num_clips=1, clip_len=8), torch.Generator(), frame_ids=[1, 3, 5, 7])
    assert (_denormalise(clips)[0, 2, :, 0, 0] // 5).tolist() == [1, 3, 5, 7, 1, 3, 5, 7]
    with pytest.raises(ValueError, match="frame_ids"):
        sample_fragments(v, VQAConfig(), torch.Generator(), frame_ids=[9])


def _interp_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two 8-frame stickers equal except at the generated (odd) frames of the interpolation task."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    b = a.copy()
    b[1::2] = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    return a, b


def test_vqa_changes_when_only_generated_frames_change(random_model):
    # (a) interpolation outputs differing only in the generated frames 1, 3, 5, 7 must score differently
    a, b = _interp_pair()
    known = [0, 2, 4, 6]
    for frames in ("all", "generated"):
        cfg = VQAConfig(num_clips=1, clip_len=8, frames=frames)
        ra = VQAEvaluator(cfg, model=random_model, known_positions=known).add([a])
        rb = VQAEvaluator(cfg, model=random_model, known_positions=known).add([b])
        assert ra != rb, frames
    # the official wrapping never looks at them: the bug of issue 17
    cfg = VQAConfig(num_clips=1, clip_len=8, short_clip="official_wrap")
    assert VQAEvaluator(cfg, model=random_model).add([a]) == VQAEvaluator(cfg, model=random_model).add([b])


def test_generated_only_ignores_pasted_back_known_frames(random_model, monkeypatch):
    # (b) through evaluation.suite.run_vqa, which passes each task's known positions
    import evaluation.vqa
    from evaluation.samples import EvalSamples, EvalTask
    from evaluation.suite import run_vqa

    monkeypatch.setattr(evaluation.vqa, "load_fastvqa", lambda *a, **k: (random_model, {}))  # skip 4 inits
    rng = np.random.default_rng(4)
    fake = rng.integers(0, 256, (1, 8, 64, 64, 3), dtype=np.uint8)
    other = fake.copy()
    other[:, 0::2] = rng.integers(0, 256, (1, 4, 64, 64, 3), dtype=np.uint8)  # only the known frames differ
    real = rng.integers(0, 256, (1, 8, 64, 64, 3), dtype=np.uint8)
    manifest = {"tasks": {"interpolation": {"known_positions": [0, 2, 4, 6]}}}

    def score(arr: np.ndarray, frames: str) -> tuple[float, list[int]]:
        s = EvalSamples(Path("."), manifest, real, {EvalTask.INTERPOLATION: arr})
        rep = run_vqa(s, VQAConfig(num_clips=1, clip_len=8, frames=frames), include_real=False)
        assert rep.tags["vqa_frames"] == frames and rep.tags["vqa_short_clip"] == "all_frames"
        return rep.metrics["eval/interpolation/vqa_raw"], rep.details["interpolation"]["scored_frames"]

    (g1, frames1), (g2, _) = score(fake, "generated"), score(other, "generated")
    assert g1 == g2 and frames1 == [1, 3, 5, 7]
    (a1, frames_all), (a2, _) = score(fake, "all"), score(other, "all")
    assert a1 != a2 and frames_all == list(range(8))


def test_bad_video_input():
    with pytest.raises(ValueError, match="uint8"):
        sample_fragments(np.zeros((8, 64, 64, 3), np.float32), VQAConfig(), torch.Generator())
    with pytest.raises(ValueError, match="uint8"):
        sample_fragments(np.zeros((8, 64, 64, 4), np.uint8), VQAConfig(), torch.Generator())


# ---------------------------------------------------------------------------------------------- scores


def test_normalise_score_is_official_sigmoid_rescale():
    assert normalise_score(SCORE_MEAN) == pytest.approx(0.5)
    assert normalise_score(SCORE_MEAN + 0.04178565) == pytest.approx(1 / (1 + math.exp(-1)))
    assert normalise_score(-1e6) == 0.0 and normalise_score(1e6) == 1.0
    assert normalise_score(-0.2) < normalise_score(-0.1) < normalise_score(0.0)


def _stickers() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (8, 96, 96, 3), dtype=np.uint8),
            rng.integers(0, 256, (16, 240, 200, 3), dtype=np.uint8)]


@pytest.mark.slow
def test_official_clip_scores_are_deterministic(random_model):
    cfg = VQAConfig(num_clips=1, seed=5)  # official 32 x 224 x 224 clip, one per video (CPU cost)
    results = []
    for _ in range(2):
        ev = VQAEvaluator(cfg, model=random_model)
        raws = ev.add(_stickers())
        results.append(ev.result())
        assert len(raws) == 2
    a, b = results
    assert a.per_video == b.per_video and a.mean_raw == b.mean_raw and a.mean_score == b.mean_score
    assert a.n == 2 and all(math.isfinite(x) for x in a.per_video_raw)
    assert all(0.0 <= s <= 1.0 for s in a.per_video)
    assert a.per_video == [normalise_score(r) for r in a.per_video_raw]
    assert a.mean_score == pytest.approx(float(np.mean(a.per_video)))
    assert a.tags["vqa_weights"] == "random" and a.tags["vqa_num_clips"] == "1"


def test_batching_and_tensor_input_give_same_scores(random_model):
    vids = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (3, 8, 64, 80, 3), dtype=np.uint8))
    one = VQAEvaluator(VQAConfig(clip_len=8, num_clips=2, batch_size=1), model=random_model)
    one.add(vids)
    many = VQAEvaluator(VQAConfig(clip_len=8, num_clips=2, batch_size=3), model=random_model)
    many.add(list(vids.numpy()))
    assert np.allclose(one.result().per_video_raw, many.result().per_video_raw, rtol=1e-5, atol=1e-6)
    assert one.result().n == 3


class _NaNModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), float("nan"))


def test_nan_score_raises():
    ev = VQAEvaluator(VQAConfig(num_clips=1, clip_len=8), model=_NaNModel())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-finite"):
        ev.add([np.zeros((8, 64, 64, 3), np.uint8)])
    with pytest.raises(ValueError, match="no videos"):
        ev.result()
