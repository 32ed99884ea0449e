"""CLIP frame embeddings: real open_clip towers, local-weight loading, determinism, quarantine."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from data import lake
from data.embed import (
    EMBEDDING_NOT_FINITE,
    EmbedSettings,
    embed_drop,
    iter_sticker_embeddings,
)
from data.ingest import IngestSettings, ingest_drop
from data.lake import Lake
from model.clip import ClipSpec, load_clip, preprocess_frames, tiny_spec, validate_spec


@pytest.fixture(scope="module")
def ingested(clean_drop, tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    ingest_drop(str(clean_drop), Lake(root).partition(lake.Stage.INGEST, "d"), IngestSettings(size=64, workers=1, part_max_bytes=64 * 64 * 3 * 40),
                progress=False)
    return root


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.glob("*.parquet"))}


def test_embeddings_unit_norm_complete_and_deterministic(ingested):
    rep = embed_drop(ingested, "d", EmbedSettings(clip=tiny_spec(batch_size=16), num_workers=0), progress=False)
    man = Lake(ingested).manifest("d")
    assert rep.n_frames == int(man.n_frames.sum()) and rep.n_quarantined == 0 and rep.clip["weights"] == "random"
    seen = {}
    for _, keys, embs in iter_sticker_embeddings(ingested, "d"):
        for k, e in zip(keys, embs):
            seen[k] = e
            assert e.shape[1] == rep.embed_dim and np.isfinite(e).all()
            np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=2e-3)
    assert set(seen) == set(man.key)
    assert all(seen[k].shape[0] == n for k, n in zip(man.key, man.n_frames))
    first = _digest(Lake(ingested).embeddings("d"))
    # re-materializing, with or without a DataLoader worker process, gives byte-identical files
    embed_drop(ingested, "d", EmbedSettings(clip=tiny_spec(batch_size=16), num_workers=1), progress=False)
    assert _digest(Lake(ingested).embeddings("d")) == first
    # the tower one batch ahead of the result fetch (the GPU overlap path) or in lock-step: the same bytes
    embed_drop(ingested, "d", EmbedSettings(clip=tiny_spec(batch_size=16), num_workers=1, overlap=False), progress=False)
    assert _digest(Lake(ingested).embeddings("d")) == first
    # another batch size changes float summation order only
    embed_drop(ingested, "d", EmbedSettings(clip=tiny_spec(batch_size=7), num_workers=0), progress=False)
    other = {k: e for _, keys, embs in iter_sticker_embeddings(ingested, "d") for k, e in zip(keys, embs)}
    for k, e in seen.items():
        np.testing.assert_allclose(other[k], e, atol=3e-3)
    # a different init seed is a different (random) model
    embed_drop(ingested, "d", EmbedSettings(clip=tiny_spec(init_seed=1), num_workers=0), progress=False)
    assert _digest(Lake(ingested).embeddings("d")) != first


def test_local_weights_file_loads_and_nan_weights_are_quarantined(ingested, tmp_path):
    ref = load_clip(tiny_spec(init_seed=5))
    good = tmp_path / "tiny_clip.pt"
    torch.save(ref.model.state_dict(), good)
    loaded = load_clip(ClipSpec(pretrained=str(good), init_seed=123))  # seed must not matter with real weights
    assert loaded.info["weights"] == "file"
    x = preprocess_frames(torch.randint(0, 255, (3, 64, 64, 3), dtype=torch.uint8), ref.image_size, ref.mean, ref.std)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model.encode_image(x), ref.model.encode_image(x))

    broken = {k: v.clone() for k, v in ref.model.state_dict().items()}
    broken["visual.proj"].fill_(float("nan"))
    bad = tmp_path / "broken.pt"
    torch.save(broken, bad)
    # the same ingested drop under another name, so this test's outputs do not collide with others
    (ingested / "ingest" / "broken").symlink_to(ingested / "ingest" / "d", target_is_directory=True)
    rep = embed_drop(ingested, "broken", EmbedSettings(clip=ClipSpec(pretrained=str(bad)), num_workers=0), progress=False)
    quar = lake.pq.read_table(Lake(ingested).embeddings("broken") / "quarantine.parquet").to_pandas()
    assert rep.n_quarantined == len(quar) == len(Lake(ingested).manifest("d")) and rep.n_frames == 0
    assert set(quar.reason) == {EMBEDDING_NOT_FINITE} and quar.message.str.contains("NaN").all()


def test_bad_weights_fail_before_any_work(ingested, tmp_path):
    missing = tmp_path / "nope" / "clip.safetensors"
    with pytest.raises(ValueError, match=r"nope/clip\.safetensors.*does not exist.*\.safetensors"):
        embed_drop(ingested, "never", EmbedSettings(clip=ClipSpec(pretrained=str(missing))), progress=False)
    assert not (ingested / "embeddings" / "never").exists()
    wrong = tmp_path / "weights.txt"
    wrong.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="suffix"):
        validate_spec(ClipSpec(pretrained=str(wrong)))
    with pytest.raises(ValueError, match="unknown pretrained tag"):
        validate_spec(ClipSpec(model="ViT-B-32", pretrained="no_such_tag"))
    with pytest.raises(ValueError, match="cache_dir"):
        validate_spec(ClipSpec(model="ViT-B-32", pretrained="laion2b_s34b_b79k"))
    with pytest.raises(ValueError, match="unknown open_clip model"):
        validate_spec(ClipSpec(model="ViT-Imaginary"))
    with pytest.raises(ValueError, match="batch_size"):
        ClipSpec(batch_size=0)


def test_preprocess_matches_open_clip_transform():
    """Our tensor preprocessing ~ open_clip's own PIL pipeline on a padded square frame."""
    from PIL import Image

    clip = load_clip(tiny_spec())
    import open_clip

    tf = open_clip.image_transform(clip.image_size, is_train=False, mean=clip.mean, std=clip.std)
    rng = np.random.default_rng(0)
    frame = np.kron(rng.integers(0, 255, (16, 16, 3)), np.ones((16, 16, 1))).astype(np.uint8)  # (256, 256, 3) flat blocks
    ours = preprocess_frames(torch.from_numpy(frame[None]), clip.image_size, clip.mean, clip.std)[0]
    ref = tf(Image.fromarray(frame))
    assert ours.shape == ref.shape
    assert (ours - ref).abs().mean() < 0.05
