"""Text encoder (CLIP + T5 -> shared space), word-level "#" dropout and the frozen autoencoder."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from model.autoencoder import (
    AutoencoderConfig,
    AutoencoderKind,
    load_autoencoder,
    pixel_autoencoder_config,
    sd_vae_config,
    tiny_kl_config,
)
from model.text_encoder import TextEncoder, TextFusion, drop_tokens, paper_text_config, tiny_text_config

CAPTIONS = ["a cat waves hello", "a dog jumps over the moon!"]


def _cfg(**kw):
    cfg = tiny_text_config(embed_dim=32)
    return replace(cfg, clip=replace(cfg.clip, device="cpu"), **kw)


@pytest.fixture(scope="module")
def transformers():
    import transformers  # a declared dependency: a missing install must fail, not skip

    return transformers


@pytest.fixture(scope="module")
def enc(transformers):
    return TextEncoder(_cfg())


# ----------------------------------------------------------------------------------------- text encoder


def test_shapes_sum_and_concat(enc):
    out = enc(CAPTIONS)
    assert out.shape == (2, 77, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    cat = TextEncoder(_cfg(fusion=TextFusion.CONCAT))
    assert cat(CAPTIONS).shape == (2, 154, 32) and cat.out_len == 154
    assert enc.info["weights"] == "random" and enc.info["t5"]["weights"] == "random"
    assert enc.info["clip"]["weights"] == "random"


def test_only_projections_train(enc):
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {"clip_proj.weight", "clip_proj.bias", "t5_proj.weight", "t5_proj.bias"}
    assert set(enc.state_dict()) == trainable  # frozen towers are not checkpointed with the projections
    frozen = list(enc._frozen["clip"].parameters()) + list(enc._frozen["t5"].parameters())
    assert frozen and not any(p.requires_grad for p in frozen)
    enc.train()
    assert not enc._frozen["clip"].training and not enc._frozen["t5"].training
    enc.zero_grad()
    enc(CAPTIONS).square().mean().backward()
    assert enc.clip_proj.weight.grad is not None and enc.t5_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in frozen)
    enc.zero_grad()
    enc.eval()


def test_deterministic_and_caption_sensitive(enc):
    again = TextEncoder(_cfg())
    with torch.no_grad():
        a, b = enc(CAPTIONS), again(CAPTIONS)
        assert torch.equal(a, b)
        assert not torch.allclose(a[0], a[1])
        other = TextEncoder(_cfg(t5_seed=1, proj_seed=1))(CAPTIONS)
        assert not torch.allclose(a, other)


def test_null_embedding_is_empty_caption(enc):
    with torch.no_grad():
        null = enc.null_embedding(3)
        assert null.shape == (3, 77, 32)
        torch.testing.assert_close(null, enc([""] * 3), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        enc.null_embedding(0)


def test_local_t5_folder_round_trip(enc, transformers, tmp_path):
    t5 = enc._frozen["t5"]
    t5.save_pretrained(tmp_path / "t5")
    enc._t5_tok.save_pretrained(tmp_path / "t5")
    loaded = TextEncoder(_cfg(t5_path=str(tmp_path / "t5")))
    assert loaded.info["t5"]["weights"] == "file" and loaded.info["t5"]["path"] == str(tmp_path / "t5")
    assert loaded.info["weights"] == "random"  # the CLIP tower is still random
    with torch.no_grad():
        assert torch.equal(loaded(CAPTIONS), enc(CAPTIONS))

    # d_model in config.json no longer matches the weights -> clear error naming the folder
    cfg_path = tmp_path / "t5" / "config.json"
    conf = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps(conf | {"d_model": 128}))
    with pytest.raises(ValueError, match=r"do not match.*d_model=128"):
        TextEncoder(_cfg(t5_path=str(tmp_path / "t5")))
    cfg_path.write_text(json.dumps(conf | {"num_layers": 3}))  # missing weights would be random-initialised
    with pytest.raises(ValueError, match="do not match"):
        TextEncoder(_cfg(t5_path=str(tmp_path / "t5")))


def test_bad_t5_paths_named(transformers, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=r"nope.*does not exist.*config\.json"):
        TextEncoder(_cfg(t5_path=str(missing)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty.*lacks config\.json.*model\.safetensors.*tokenizer"):
        TextEncoder(_cfg(t5_path=str(empty)))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        TextEncoder(_cfg(t5_path=str(tmp_path / "file.txt")))


def test_paper_config_checks_t5_before_loading_clip(tmp_path):
    cfg = paper_text_config(str(tmp_path / "open_clip_vit_h.safetensors"), str(tmp_path / "t5-xxl"))
    assert (cfg.embed_dim, cfg.seq_len, cfg.fusion, cfg.clip.model) == (1024, 77, TextFusion.SUM, "ViT-H-14")
    with pytest.raises(ValueError, match="t5-xxl"):  # fails fast: no ViT-H-14 is built
        TextEncoder(cfg)


def test_seq_len_must_match_clip_context(transformers):
    with pytest.raises(ValueError, match="context length 77"):
        TextEncoder(_cfg(seq_len=64))


# ----------------------------------------------------------------------------------------- token dropout


def test_drop_tokens_extremes_and_punctuation():
    cap = "a  happy cat, waving!\tbye"
    assert drop_tokens(cap, 0.0, random.Random(0)) == cap
    assert drop_tokens(cap, 1.0, random.Random(0)) == "#  # # #\t#"  # whitespace kept, punctuation dropped with its word
    assert drop_tokens("", 1.0, random.Random(0)) == ""


def test_drop_tokens_rate_and_determinism():
    words = " ".join(f"w{i}" for i in range(20000))
    for rng in (random.Random(7), np.random.default_rng(7)):
        out = drop_tokens(words, 0.3, rng).split()
        assert len(out) == 20000
        assert abs(sum(w == "#" for w in out) / len(out) - 0.3) < 0.015
    assert drop_tokens(words, 0.5, random.Random(3)) == drop_tokens(words, 0.5, random.Random(3))
    assert drop_tokens(words, 0.5, np.random.default_rng(3)) == drop_tokens(words, 0.5, np.random.default_rng(3))
    assert drop_tokens(words, 0.5, random.Random(3)) != drop_tokens(words, 0.5, random.Random(4))


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.5", None])
def test_drop_tokens_invalid_p(p):
    with pytest.raises(ValueError, match="p must be"):
        drop_tokens("a b", p, random.Random(0))


# ----------------------------------------------------------------------------------------- autoencoder


def test_pixel_round_trip():
    ae = load_autoencoder(pixel_autoencoder_config())
    assert (ae.scaling_factor, ae.latent_channels, ae.downsample) == (1.0, 3, 1)
    frames = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    z = ae.encode(frames)
    assert z.shape == (2, 3, 8, 8) and z.min() >= -1 and z.max() <= 1
    torch.testing.assert_close((ae.decode(z) + 1) / 2 * 255, frames.float(), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ae.encode(torch.full((1, 3, 4, 4), -0.5))


def test_tiny_kl_shapes_and_determinism():
    ae = load_autoencoder(tiny_kl_config())
    assert ae.info["weights"] == "random" and ae.downsample == 2 and ae.latent_channels == 4
    assert ae.scaling_factor == pytest.approx(0.18215)
    frames = torch.rand(3, 3, 16, 16)
    z = ae.encode(frames)
    assert z.shape == (3, 4, 8, 8)
    assert torch.equal(z, ae.encode(frames))  # posterior mean, not a sample
    assert torch.equal(z, load_autoencoder(tiny_kl_config()).encode(frames))  # seeded init
    x = ae.decode(z)
    assert x.shape == (3, 3, 16, 16) and torch.isfinite(x).all()
    assert not any(p.requires_grad for p in ae.parameters())
    with pytest.raises(ValueError, match="divisible"):
        ae.encode(torch.rand(1, 3, 15, 16))


def test_kl_from_folder_and_single_file(tmp_path):
    ae = load_autoencoder(tiny_kl_config(seed=3))
    ae.vae.save_pretrained(tmp_path / "vae")
    frames = torch.rand(2, 3, 16, 16)
    loaded = load_autoencoder(sd_vae_config(str(tmp_path / "vae")))
    assert loaded.info["weights"] == "file"
    assert torch.equal(loaded.encode(frames), ae.encode(frames))
    z = ae.encode(frames)
    assert torch.equal(loaded.decode(z), ae.decode(z))
    single = load_autoencoder(sd_vae_config(str(tmp_path / "vae" / "diffusion_pytorch_model.safetensors")))
    assert torch.equal(single.encode(frames), ae.encode(frames))


def test_kl_path_errors(tmp_path):
    with pytest.raises(ValueError, match=r"missing-vae.*does not exist.*config\.json"):
        load_autoencoder(sd_vae_config(str(tmp_path / "missing-vae")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty.*lacks config\.json, diffusion_pytorch_model\.safetensors"):
        load_autoencoder(sd_vae_config(str(tmp_path / "empty")))
    (tmp_path / "lone").mkdir()
    (tmp_path / "lone" / "vae.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="no config.json beside it"):
        load_autoencoder(sd_vae_config(str(tmp_path / "lone" / "vae.safetensors")))
    load_autoencoder(tiny_kl_config()).vae.save_config(tmp_path / "lone")
    with pytest.raises(ValueError, match=r"could not read.*vae\.safetensors"):
        load_autoencoder(sd_vae_config(str(tmp_path / "lone" / "vae.safetensors")))
    with pytest.raises(ValueError, match="exactly one"):
        AutoencoderConfig(kind=AutoencoderKind.KL)


def test_kl_mismatched_weights(tmp_path):
    load_autoencoder(tiny_kl_config()).vae.save_pretrained(tmp_path / "vae")
    cfg_path = tmp_path / "vae" / "config.json"
    conf = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps(conf | {"block_out_channels": [32, 128]}))  # wrong shapes
    with pytest.raises(ValueError, match=r"vae.*do not match"):
        load_autoencoder(sd_vae_config(str(tmp_path / "vae")))
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model\.safetensors.*do not match"):
        load_autoencoder(sd_vae_config(str(tmp_path / "vae" / "diffusion_pytorch_model.safetensors")))
    cfg_path.write_text(json.dumps(conf | {"layers_per_block": 2}))  # missing weights, not silently random
    with pytest.raises(ValueError, match="do not match"):
        load_autoencoder(sd_vae_config(str(tmp_path / "vae")))


def test_text_config_for_real_and_random():
    from model.text_encoder import text_config_for

    tiny_cfg = text_config_for(64, seed=3)
    assert tiny_cfg.t5_path is None and tiny_cfg.clip.pretrained is None and tiny_cfg.proj_seed == 3
    real = text_config_for(1024, clip_pretrained="/models/clip.safetensors", t5_path="/models/t5")
    assert (real.embed_dim, real.clip.model, real.clip.pretrained, real.t5_path) == (1024, "ViT-H-14", "/models/clip.safetensors", "/models/t5")


def test_downsample_factor_is_read_without_weights_and_a_broken_vae_folder_is_a_clear_error(tmp_path):
    from model.autoencoder import downsample_factor, pixel_autoencoder_config, sd_vae_config, tiny_kl_config

    assert downsample_factor(pixel_autoencoder_config()) == 1 and downsample_factor(tiny_kl_config()) == 2
    vae = tmp_path / "vae"
    vae.mkdir()
    (vae / "config.json").write_text(json.dumps({"block_out_channels": [128, 256, 512, 512]}))
    assert downsample_factor(sd_vae_config(str(vae))) == 8  # Table 6: f = 8
    assert downsample_factor(sd_vae_config(str(vae / "weights.safetensors"))) == 8  # a file beside its config.json
    for bad in ("", "{not json", json.dumps({"block_out_channels": 4})):
        (vae / "config.json").write_text(bad)
        with pytest.raises(ValueError, match="cannot read block_out_channels .* expected a diffusers AutoencoderKL"):
            downsample_factor(sd_vae_config(str(vae)))
    with pytest.raises(ValueError, match="cannot read block_out_channels"):
        downsample_factor(sd_vae_config(str(tmp_path / "missing")))

