"""DFGN and its temporal layers: shapes, identity at init, temporal mixing, presets, save/load, checkpointing."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from model.sti import Conv3DTemporalLayer, STIConfig, STILayer
from model.unet import DFGN, DFGNConfig, TemporalLayer, paper, paper_3dconv, preset, tiny


def _perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def _inputs(cfg: DFGNConfig, B: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, cfg.num_frames, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
    ctx = torch.randn(B, 77, cfg.cross_attention_dim, generator=g)
    return x, torch.tensor([5, 700][:B]), ctx


@pytest.mark.parametrize("layer_cls", [STILayer, Conv3DTemporalLayer])
def test_temporal_layers_are_identity_at_init(layer_cls):
    layer = layer_cls(32, STIConfig(heads=2, head_dim=16, norm_groups=8))
    x = torch.randn(2 * 8, 32, 16, 16)
    assert torch.equal(layer(x, 8), x)


def test_sti_mixes_frames_after_training_perturbation():
    torch.manual_seed(0)
    layer = STILayer(32, STIConfig(heads=2, head_dim=16, norm_groups=8))
    _perturb(layer)
    x = torch.randn(1 * 8, 32, 8, 8)
    y = layer(x, 8)
    x2 = x.clone()
    x2[5] += torch.randn_like(x2[5])  # change frame 5 only (not a constant: GroupNorm would remove it)
    y2 = layer(x2, 8)
    changed = [(y2[i] - y[i]).abs().max().item() > 1e-5 for i in range(8)]
    assert changed[2] and changed[0] and changed[7], changed  # frames other than 5 see the change
    # each branch mixes frames on its own
    h = layer.norm(x)
    assert (layer.semantic(layer.norm(x2), 8)[1] - layer.semantic(h, 8)[1]).abs().max() > 1e-6
    assert (layer.detail(layer.norm(x2), 8)[4] - layer.detail(h, 8)[4]).abs().max() > 1e-6


def test_sti_attention_layers_setting():
    """Table 6 "Num attention layers" = 1 is the default; more layers stack, keep the first layer's weight names
    (old checkpoints load), start as identity, and an older checkpoint's config (no such field) stays compatible."""
    from model.checkpoints import IncompatibleCheckpointError, check_compatible

    assert paper().sti_attention_layers == 1 and STIConfig().attention_layers == 1
    one = STILayer(32, STIConfig(heads=2, head_dim=16, norm_groups=8))
    two = STILayer(32, STIConfig(heads=2, head_dim=16, norm_groups=8, attention_layers=2))
    assert set(one.state_dict()) < set(two.state_dict())
    assert {k.split(".")[0] for k in set(two.state_dict()) - set(one.state_dict())} == {"more_attention"}
    x = torch.randn(8, 32, 8, 8)
    assert torch.equal(two(x, 8), x)  # identity at init
    two.load_state_dict(one.state_dict(), strict=False)
    _perturb(two.more_attention, seed=3)
    assert not torch.allclose(two.semantic(two.norm(x), 8), one.semantic(one.norm(x), 8))  # layer 2 contributes
    with pytest.raises(ValueError, match="attention_layers >= 1"):
        STILayer(32, STIConfig(heads=2, head_dim=16, norm_groups=8, attention_layers=0))
    m = DFGN.from_dataclass(replace(tiny(pixel_space=True), sti_attention_layers=2))
    assert any("more_attention" in k for k in m.state_dict()) and m.config.sti_attention_layers == 2
    import json
    from dataclasses import asdict

    def as_saved(cfg):  # what trainer.json holds (JSON: tuples become lists)
        return json.loads(json.dumps(asdict(cfg)))

    old = {k: v for k, v in as_saved(tiny()).items() if k != "sti_attention_layers"}
    check_compatible(old, as_saved(tiny()))  # older checkpoints: the field is implied 1
    with pytest.raises(IncompatibleCheckpointError, match="sti_attention_layers"):
        check_compatible(old, as_saved(replace(tiny(), sti_attention_layers=2)))


def test_spatial_path_alone_does_not_mix_frames():
    cfg = replace(tiny(), temporal_layer=TemporalLayer.NONE.value)
    model = DFGN.from_dataclass(cfg).eval()
    _perturb(model)
    x, t, ctx = _inputs(cfg, B=1)
    with torch.no_grad():
        y = model(x, t, ctx)
        x2 = x.clone()
        x2[:, 3] += 1.0
        y2 = model(x2, t, ctx)
    diff = (y2 - y).abs().amax(dim=(0, 2, 3, 4))  # per frame
    assert diff[3] > 1e-4 and torch.all(diff[torch.arange(8) != 3] == 0)


def test_dfgn_mixes_frames_and_uses_conditions():
    cfg = tiny()
    model = DFGN.from_dataclass(cfg).eval()
    _perturb(model)
    x, t, ctx = _inputs(cfg, B=1)
    with torch.no_grad():
        y = model(x, t, ctx)
        x2 = x.clone()
        x2[:, 3] += 1.0
        assert (model(x2, t, ctx) - y)[:, 0].abs().max() > 1e-5  # frame 0 depends on frame 3
        cond = x.clone()
        cond[:, :, 4:] = torch.randn_like(cond[:, :, 4:])  # only the condition-latent channels
        assert (model(cond, t, ctx) - y).abs().max() > 1e-4
        assert (model(x, t, torch.zeros_like(ctx)) - y).abs().max() > 1e-4  # text cross-attention matters
        assert (model(x, torch.tensor([900]), ctx) - y).abs().max() > 1e-4  # timestep matters


@pytest.mark.parametrize("name", ["tiny", "tiny_pixel"])
def test_tiny_presets_forward_backward(name):
    cfg = preset(name)
    model = DFGN.from_dataclass(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert 1e6 < n < 10e6
    x, t, ctx = _inputs(cfg)
    y = model(x, t, ctx)
    assert y.shape == (2, cfg.num_frames, cfg.out_channels, cfg.sample_size, cfg.sample_size)
    y.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("factory,lo,hi", [(paper, 0.9e9, 1.0e9), (paper_3dconv, 1.0e9, 1.5e9)])
def test_paper_presets_on_meta_device(factory, lo, hi):
    cfg = factory()
    with torch.device("meta"):
        model = DFGN.from_dataclass(cfg)
        n = sum(p.numel() for p in model.parameters())
        assert lo <= n <= hi, n
        assert len(model.temporal_layers()) == 22  # as in the authors' released model
        x = torch.empty(1, 8, 8, 32, 32)
        y = model(x, torch.tensor([1]), torch.empty(1, 77, 1024))
    assert y.shape == (1, 8, 4, 32, 32)
    assert (cfg.in_channels, cfg.out_channels, cfg.layers_per_block, cfg.attention_head_dim, cfg.cross_attention_dim) == (8, 4, 2, 64, 1024)
    assert (cfg.sti_heads, cfg.sti_head_dim, cfg.sti_kernel, cfg.sti_conv_layers) == (8, 32, 3, 2)


def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = DFGN.from_dataclass(tiny()).eval()
    _perturb(model)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "diffusion_pytorch_model.safetensors").exists()
    loaded = DFGN.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.cfg == model.cfg
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x, t, ctx = _inputs(model.cfg)
    with torch.no_grad():
        assert torch.equal(model(x, t, ctx), loaded(x, t, ctx))


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(0)
    model = DFGN.from_dataclass(tiny())
    _perturb(model)
    x, t, ctx = _inputs(model.cfg)

    def grads():
        model.zero_grad()
        model(x, t, ctx).square().mean().backward()
        return {k: p.grad.clone() for k, p in model.named_parameters()}

    ref = grads()
    model.enable_gradient_checkpointing()
    assert model.gradient_checkpointing
    ck = grads()
    for k in ref:
        torch.testing.assert_close(ck[k], ref[k], rtol=1e-5, atol=1e-6)


def test_bad_inputs_and_configs():
    model = DFGN.from_dataclass(tiny())
    x, t, ctx = _inputs(model.cfg)
    with pytest.raises(ValueError, match="in_channels=8"):
        model(x[:, :, :3], t, ctx)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        model(x, t, None)
    with pytest.raises(ValueError, match="allowed"):
        preset("huge")
    with pytest.raises(ValueError):
        DFGNConfig(temporal_layer="lstm")
    with pytest.raises(ValueError, match="divisible"):
        replace(tiny(), sample_size=30)
    with pytest.raises(ValueError, match="num_frames"):
        STILayer(32, STIConfig(heads=2, head_dim=16, norm_groups=8))(torch.randn(7, 32, 4, 4), 8)


def test_bf16_forward_is_finite():
    model = DFGN.from_dataclass(tiny()).to(torch.bfloat16)
    x, t, ctx = _inputs(model.cfg)
    y = model(x.bfloat16(), t, ctx.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


def test_model_signature_mirrors_config():
    import inspect
    from dataclasses import asdict

    sig = {k: p.default for k, p in inspect.signature(DFGN.__init__).parameters.items() if k != "self"}
    assert sig == asdict(DFGNConfig())


def test_spatial_transformer_is_diffusers_transformer2d_bit_for_bit():
    """SpatialTransformer == Transformer2DModel(use_linear_projection=True): same weights, same output."""
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    from model.unet import SpatialTransformer

    torch.manual_seed(0)
    ref = Transformer2DModel(num_attention_heads=4, attention_head_dim=16, in_channels=64, num_layers=2,
                             cross_attention_dim=32, norm_num_groups=8, use_linear_projection=True).eval()
    ours = SpatialTransformer(64, 4, 16, 32, 2, 8).eval()
    assert set(ours.state_dict()) == set(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    x, ctx = torch.randn(3, 64, 6, 5), torch.randn(3, 7, 32)
    with torch.no_grad():
        assert torch.equal(ours(x, ctx), ref(x, encoder_hidden_states=ctx, return_dict=False)[0])
