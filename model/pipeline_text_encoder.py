"""The text encoder as a self-contained diffusers component: CLIP text tower + T5 encoder + trainable projections.

The training-time :class:`model.text_encoder.TextEncoder` keeps its frozen towers *outside* the state dict (a
checkpoint stores only the projections and re-opens the towers from their own paths). A portable model package
cannot depend on those paths, so :class:`RDTFTextEncoder` registers every part — CLIP's text transformer (the
image tower is dropped), the T5 encoder stack and both projections — and saves them as one safetensors file.
Both classes compute the embedding with the same function (``model.text_encoder.fuse_text``), so a packaged
model conditions exactly like the checkpoint it was exported from (paper, Method: "CLIP and T5 text encoder
extract the text features, which are mapped to the same space through linear layers").

Tokenisation stays in the pipeline, as in diffusers: CLIP's BPE tokenizer ships with open_clip (rebuilt from the
model name, nothing to save), the T5 tokenizer is the pipeline's ``tokenizer`` component.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from model.clip import ClipSpec, Precision, autocast_dtype, quiet_open_clip, register_presets
from model.text_encoder import TextEncoder, TextFusion, clip_tokenizer, fuse_text, tokenize_captions


class RDTFTextEncoder(ModelMixin, ConfigMixin):
    """(CLIP ids, T5 ids, T5 mask) -> fused text embedding (B, L, D); all weights in the component's folder."""

    @register_to_config
    def __init__(
        self,
        clip_model: str = "rdtf-tiny-clip",  # open_clip architecture name of the text tower
        t5_config: dict | None = None,  # transformers T5Config as a dict (the encoder stack's architecture)
        embed_dim: int = 64,  # output width = the U-Net's cross-attention dim (Table 6: 1024)
        seq_len: int = 77,  # tokens per encoder = CLIP context length (Table 6)
        fusion: str = TextFusion.SUM.value,  # sum | concat (see model.text_encoder)
        clip_precision: str = Precision.AUTO.value,  # autocast dtype of the CLIP tower on GPU
        weights: str = "random",  # random | pretrained: were the towers random-init presets (tagged weights=random)
    ):
        super().__init__()
        import open_clip
        import transformers

        if t5_config is None:
            raise ValueError("t5_config is required (the T5Config dict of the packaged encoder)")
        TextFusion(fusion)
        register_presets()  # the tiny CLIP preset is ours, not open_clip's
        # the init is overwritten by the saved weights: leave the global RNG alone, and silence open_clip's
        # "No pretrained weights loaded ... initialized randomly", which is not true of a packaged model
        with torch.random.fork_rng(devices=[]), quiet_open_clip():
            clip = open_clip.create_model(clip_model, pretrained=None)
            if getattr(clip, "visual", None) is not None:
                del clip.visual  # only the text tower is packaged
            t5 = transformers.T5EncoderModel(transformers.T5Config(**t5_config)).encoder
        # the stack alone: T5EncoderModel ties `shared` and `encoder.embed_tokens`, which safetensors refuses to save
        self.clip, self.t5 = clip.eval().requires_grad_(False), t5.eval().requires_grad_(False)
        self.clip_proj = nn.Linear(int(clip.transformer.width), embed_dim)
        self.t5_proj = nn.Linear(int(t5_config["d_model"]), embed_dim)
        self._clip_tok = clip_tokenizer(ClipSpec(model=clip_model), seq_len)

    @classmethod
    def from_encoder(cls, enc: TextEncoder) -> RDTFTextEncoder:
        """Package a training-time encoder (its frozen towers and trained projections) with identical outputs."""
        cfg = enc.cfg
        t5 = enc._frozen["t5"]
        out = cls(clip_model=cfg.clip.model, t5_config=t5.config.to_dict(), embed_dim=cfg.embed_dim, seq_len=cfg.seq_len,
                  fusion=TextFusion(cfg.fusion).value, clip_precision=Precision(cfg.clip.precision).value,
                  weights=enc.info["weights"])
        out.clip.load_state_dict(enc._frozen["clip"].state_dict())
        out.t5.load_state_dict(t5.encoder.state_dict())
        out.clip_proj.load_state_dict(enc.clip_proj.state_dict())
        out.t5_proj.load_state_dict(enc.t5_proj.state_dict())
        return out.to(enc.clip_proj.weight.device)

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval(), self.t5.eval()  # frozen towers never enter train mode
        return self

    def tokenize(self, captions: list[str], t5_tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tokenize_captions(captions, self._clip_tok, t5_tokenizer, self.config.seq_len, self.clip_proj.weight.device)

    def forward(self, clip_ids: torch.Tensor, t5_ids: torch.Tensor, t5_mask: torch.Tensor) -> torch.Tensor:
        """ids/mask (B, L) -> (B, L, D) (sum fusion) or (B, 2L, D) (concat)."""
        dtype = autocast_dtype(ClipSpec(model=self.config.clip_model, precision=self.config.clip_precision),
                               self.clip_proj.weight.device)
        return fuse_text(self.clip, self.t5, self.clip_proj, self.t5_proj, clip_ids, t5_ids, t5_mask,
                         TextFusion(self.config.fusion), dtype)
