"""CLIP similarity: both protocols against hand computations; the evaluator end to end (random tiny CLIP)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluation.clip_similarity import (
    ClipProtocol,
    ClipSimConfig,
    ClipSimilarityEvaluator,
    cosine_scores,
    retrieval_metrics,
)
from model.clip import embed_pixels, hub_offline, load_clip, preprocess_frames, tiny_spec


def test_cosine_scores_by_hand():
    # video 0: frames along e0 and e1, caption e0 -> cosines 1 and 0 -> 0.5
    # video 1: frames (3, 4, 0) (unnormalised) and (0, 0, 2), caption (0, 2, 0) -> 0.8 and 0 -> 0.4
    img = torch.tensor([[[1.0, 0, 0], [0, 1, 0]], [[3.0, 4, 0], [0, 0, 2]]])
    txt = torch.tensor([[1.0, 0, 0], [0, 2, 0]])
    assert cosine_scores(img, txt).tolist() == pytest.approx([0.5, 0.4], abs=1e-12)
    with pytest.raises(ValueError, match=r"\(N, F, D\)"):
        cosine_scores(img[0], txt)


def test_retrieval_metrics_by_hand():
    caps = torch.eye(3, dtype=torch.float64)  # orthonormal captions e0, e1, e2
    vids = torch.tensor([[1.0, 0, 0], [0.8, 0.6, 0], [0.6, 0.8, 0]], dtype=torch.float64)
    target = torch.tensor([0, 1, 2])
    # scores vs own caption: 1.0 (rank 1), 0.6 < 0.8 (rank 2), 0.0 below 0.6 and 0.8 (rank 3)
    s = 10.0
    r = retrieval_metrics(vids, caps, target, logit_scale=s, k=2)
    assert r["top1"] == pytest.approx(1 / 3)
    assert r["recall2"] == pytest.approx(2 / 3)
    assert r["mean_rank"] == pytest.approx(2.0)
    assert r["cosine"] == pytest.approx((1.0 + 0.6 + 0.0) / 3)
    e = math.exp
    probs = [e(s) / (e(s) + 2), e(0.6 * s) / (e(0.8 * s) + e(0.6 * s) + 1), 1 / (e(0.6 * s) + e(0.8 * s) + 1)]
    assert r["prob"] == pytest.approx(sum(probs) / 3, abs=1e-12)
    assert retrieval_metrics(vids, caps, target, logit_scale=s)["recall5"] == 1.0  # only 3 candidates

    # ties are pessimistic: a model scoring every caption the same ranks its own caption last
    flat = retrieval_metrics(torch.ones(2, 3), torch.ones(4, 3), torch.tensor([0, 3]), logit_scale=100.0)
    assert flat["mean_rank"] == 4.0 and flat["top1"] == 0.0 and flat["prob"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="target_index"):
        retrieval_metrics(vids, caps, torch.tensor([0, 1, 3]), logit_scale=s)


def _videos():
    rng = np.random.default_rng(0)
    # different frame counts and sizes (resized to 64 px by the tower), uint8 RGB
    return [rng.integers(0, 256, size=shape, dtype=np.uint8)
            for shape in [(3, 64, 64, 3), (2, 48, 48, 3), (4, 64, 64, 3), (1, 80, 80, 3)]]


CAPTIONS = ["a cat waving", "a dog dancing", "A  Cat waving", "a heart beating"]  # 1st and 3rd: same tokens


@pytest.fixture(scope="module")
def tiny_clip():
    return load_clip(tiny_spec(device="cpu"))


def test_tokenizer_works_offline(tiny_clip):
    import open_clip

    with hub_offline():
        for name in ("rdtf-tiny-clip", "ViT-B-32"):
            assert open_clip.get_tokenizer(name)(["a sticker"]).shape == (1, 77)


def test_evaluator_matches_manual_computation(tiny_clip):
    import open_clip

    ev = ClipSimilarityEvaluator(ClipSimConfig(batch_size=5))  # frames of several videos share batches
    vids = _videos()
    ev.add(vids[:2], CAPTIONS[:2])
    ev.add(vids[2:], CAPTIONS[2:])
    res = ev.result()

    c = tiny_clip
    with hub_offline():
        tok = open_clip.get_tokenizer("rdtf-tiny-clip")
    with torch.inference_mode():
        t = c.model.encode_text(tok(CAPTIONS)).float()
    t = t / t.norm(dim=-1, keepdim=True)
    frame_emb = [embed_pixels(c, preprocess_frames(torch.from_numpy(v), c.image_size, c.mean, c.std))
                 for v in vids]
    cos = [(e.double() @ t[i].double()) for i, e in enumerate(frame_emb)]
    want = [float(x.mean()) for x in cos]
    assert res.per_video == pytest.approx(want, abs=1e-5)
    assert res.matched_cosine == pytest.approx(np.mean(want), abs=1e-5)
    want_clipscore = np.mean([float((2.5 * x.clamp(min=0)).mean()) for x in cos])  # Hessel et al. w = 2.5
    assert res.clipscore == pytest.approx(want_clipscore, abs=1e-5)

    # retrieval: 3 unique candidates ("a cat waving" == "A  Cat waving" for CLIP); videos 0 and 2 share one
    assert (res.n, res.n_captions) == (4, 3)
    unique = t[[0, 1, 3]]
    target = torch.tensor([0, 1, 0, 2])
    scale = float(c.model.logit_scale.exp())
    r = retrieval_metrics(torch.stack([e.double().mean(0) for e in frame_emb]), unique, target, scale)
    assert res.retrieval_top1 == pytest.approx(r["top1"])
    assert res.retrieval_recall5 == 1.0  # 3 candidates
    assert res.retrieval_mean_rank == pytest.approx(r["mean_rank"])
    assert res.retrieval_prob == pytest.approx(r["prob"], abs=1e-6)
    assert r["cosine"] == pytest.approx(res.matched_cosine, abs=1e-5)  # same score in both protocols
    assert 1.0 <= res.retrieval_mean_rank <= 3.0

    assert res.tags["weights"] == "random" and res.tags["model"] == "rdtf-tiny-clip"
    assert res.tags["logit_scale"] == f"{scale:.4g}" and res.tags["clipscore_w"] == "2.5"
    assert set(res.tags["protocols"].split(",")) == {p.value for p in ClipProtocol}
    assert set(res.metrics()) >= {"clip_matched_cosine", "clip_retrieval_top1", "clip_retrieval_prob"}


def test_evaluator_is_deterministic_and_batch_independent(tiny_clip):
    vids = np.random.default_rng(1).integers(0, 256, size=(4, 2, 64, 64, 3), dtype=np.uint8)
    caps = ["one", "two", "three", "four"]
    a = ClipSimilarityEvaluator(ClipSimConfig(batch_size=64))
    a.add(torch.from_numpy(vids), caps)
    b = ClipSimilarityEvaluator(ClipSimConfig(batch_size=3), clip=tiny_clip)
    for i in range(4):
        b.add(vids[i:i + 1], caps[i:i + 1])
    ra, rb = a.result(), b.result()
    assert ra.per_video == pytest.approx(rb.per_video, abs=1e-6)
    assert ra.retrieval_prob == pytest.approx(rb.retrieval_prob, abs=1e-6)
    assert ra.tags == rb.tags

    seeded = ClipSimilarityEvaluator(ClipSimConfig(seed=1))
    seeded.add(torch.from_numpy(vids), caps)
    assert seeded.result().per_video != pytest.approx(ra.per_video, abs=1e-4)
    assert seeded.result().tags["init_seed"] == "1"

    fixed = ClipSimilarityEvaluator(ClipSimConfig(logit_scale=1.0), clip=tiny_clip)
    fixed.add(vids, caps)
    assert fixed.result().tags["logit_scale"] == "1"
    assert fixed.result().retrieval_prob == pytest.approx(
        retrieval_metrics(torch.stack(fixed._video_emb), torch.stack(fixed._caption_emb),
                          torch.tensor(fixed._target), 1.0)["prob"])


def test_evaluator_rejects_bad_input_and_nan_embeddings(tiny_clip, monkeypatch):
    ev = ClipSimilarityEvaluator(ClipSimConfig(), clip=tiny_clip)
    v = _videos()[0]
    with pytest.raises(ValueError, match="one caption per video"):
        ev.add([v, v], ["only one"])
    with pytest.raises(ValueError, match="uint8"):
        ev.add([v.astype(np.float32)], ["x"])
    with pytest.raises(ValueError, match=r"\(F>=1, H, W, 3\)"):
        ev.add([v[..., :1]], ["x"])
    with pytest.raises(ValueError, match="no videos"):
        ev.result()

    d = tiny_clip.embed_dim
    monkeypatch.setattr(tiny_clip.model, "encode_image", lambda x: torch.zeros(x.shape[0], d))
    with pytest.raises(ValueError, match=r"non-finite CLIP image embedding for video\(s\) \[0\]"):
        ev.add([v], ["a caption"])
    assert ev.n == 0 and not ev._caption_emb  # nothing half-stored
    monkeypatch.setattr(tiny_clip.model, "encode_text", lambda x: torch.full((x.shape[0], d), float("nan")))
    with pytest.raises(ValueError, match="non-finite CLIP text embedding"):
        ev.add([v], ["a caption"])
