"""Text conditioning of the discrete frame generation network (DFGN): "#" token dropout, CLIP + T5 towers, fusion.

Paper (RDTF, arXiv 2503.17735, Method, "Discrete Frame Generation Network"): "For the text guidance,
we randomly replace the tokens with the symbol '#' with a probability p to achieve generalization.
After that, CLIP and T5 text encoder extract the text features, which are mapped to the same space
through linear layers and fed into the model as text embedding." Table 6: LDM with f = 8 (latent
32x32x4 for 256 px frames), condition embedding dimension 1024, text sequence length 77.

Choices the paper leaves open, and why:

- **Per-token features.** The U-Net cross-attends to a sequence, so both encoders give per-token
  states: CLIP's text transformer after ``ln_final`` and *before* pooling/projection (as Stable
  Diffusion does), T5's ``last_hidden_state``. T5's outputs at padding positions are zeroed: its
  attention masks pad keys but still emits states for pad queries, which carry no caption content.
- **Fusion.** Each sequence goes through its own trainable ``nn.Linear`` to ``embed_dim``.
  ``TextFusion.SUM`` (default) adds the two (B, 77, D) sequences position-wise, which keeps the 77
  tokens of Table 6; ``CONCAT`` appends them instead (154 tokens) for ablations.
- **Frozen towers, trainable projections.** CLIP and T5 are frozen and kept *outside* the module
  registry, so ``parameters()`` / ``state_dict()`` hold only the projections (checkpoints stay small;
  the towers are reloaded from their own paths); ``.to()`` still moves them.
- **Word-level "#" dropout.** The caption goes through two different tokenizers (CLIP BPE, T5
  SentencePiece/bytes), so the only unit both share is the word: :func:`drop_tokens` replaces
  whitespace-separated words (punctuation stays attached) before tokenisation.

The autoencoder lives in ``model.autoencoder``. Weights are never downloaded: every pretrained part loads from a local path (safetensors only, or
open_clip's ``weights_only`` load), and each has a seeded random-init preset for demos/tests whose
``info["weights"] == "random"`` so callers tag runs ``weights=random``.
"""

from __future__ import annotations

import json
import logging
import numbers
import random
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.clip import ClipSpec, LoadedClip, autocast_dtype, hub_offline, load_clip, tiny_spec
from model.hub import resolve_local

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------- token dropout

_WHITESPACE = re.compile(r"(\s+)")
DROP_SYMBOL = "#"


def drop_tokens(caption: str, p: float, rng: random.Random | np.random.Generator) -> str:
    """Replace each whitespace-separated word of ``caption`` by ``"#"`` with probability ``p``.

    Word-level on purpose: CLIP and T5 tokenise differently, so dropping before tokenisation is the
    only way both encoders see the same masked caption. Punctuation attached to a word goes with it;
    the original whitespace is preserved. Exactly one ``rng.random()`` draw is made per word whatever
    ``p`` is, so a seeded ``rng`` gives the same stream position for any ``p``.
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"drop probability p must be a number in [0, 1], got {p!r}")
    if not callable(getattr(rng, "random", None)):
        raise TypeError(f"rng must be random.Random or numpy.random.Generator, got {type(rng).__name__}")
    parts = _WHITESPACE.split(caption)  # words at even indices, whitespace runs at odd ones
    for i in range(0, len(parts), 2):
        if parts[i] and float(rng.random()) < p:  # random() is in [0, 1): p=0 never, p=1 always
            parts[i] = DROP_SYMBOL
    return "".join(parts)


# ----------------------------------------------------------------------------------------- text encoder


class TextFusion(StrEnum):
    SUM = "sum"  # position-wise sum of the two projected sequences: seq_len tokens (Table 6: 77)
    CONCAT = "concat"  # CLIP tokens then T5 tokens: 2 * seq_len tokens


@dataclass(frozen=True)
class TextEncoderConfig:
    clip: ClipSpec  # open_clip model whose text tower gives per-token states (after ln_final, before pooling)
    t5_path: str | None  # local T5 folder or hf:<org>/<name> (cached); None = random tiny T5 + byte-level ByT5 tokenizer
    t5_seed: int = 0  # seed of the random tiny T5 (ignored with a real folder)
    embed_dim: int = 1024  # output width = cross-attention dim of the U-Net (Table 6)
    seq_len: int = 77  # tokens per encoder (Table 6); must equal the CLIP context length
    fusion: TextFusion = TextFusion.SUM  # how the two projected sequences are combined
    proj_seed: int = 0  # seed of the trainable projections' initialisation

    def __post_init__(self) -> None:
        if self.embed_dim < 1 or self.seq_len < 1:
            raise ValueError(f"embed_dim and seq_len must be >= 1, got {self.embed_dim}, {self.seq_len}")
        TextFusion(self.fusion)  # raises ValueError naming the bad value


def tiny_text_config(embed_dim: int = 64) -> TextEncoderConfig:
    """Random tiny CLIP (``rdtf-tiny-clip``) + random tiny T5: for demos and tests only."""
    return TextEncoderConfig(clip=tiny_spec(), t5_path=None, embed_dim=embed_dim)


def paper_text_config(clip_weights: str, t5_path: str, clip_model: str = "ViT-H-14") -> TextEncoderConfig:
    """Paper-size encoder: OpenCLIP ViT-H-14 (text width 1024; or ViT-L-14) + a local T5, D = 1024."""
    return TextEncoderConfig(clip=ClipSpec(model=clip_model, pretrained=clip_weights), t5_path=t5_path)


def text_config_for(embed_dim: int, *, seed: int = 0, clip_model: str | None = None, clip_pretrained: str | None = None,
                    t5_path: str | None = None) -> TextEncoderConfig:
    """The text encoder a training run uses: real towers when weights are given, else the random tiny preset.

    Shared by ``training.trainer`` and ``model.sampling`` so a checkpoint is always re-opened with the encoder it
    was trained with (the settings are stored in the checkpoint's train config).
    """
    import dataclasses

    if clip_pretrained or t5_path:
        cfg = TextEncoderConfig(clip=ClipSpec(model=clip_model or "ViT-H-14", pretrained=clip_pretrained), t5_path=t5_path,
                                embed_dim=embed_dim)
    else:
        cfg = tiny_text_config(embed_dim)
    return dataclasses.replace(cfg, proj_seed=seed)


TINY_T5 = dict(d_model=64, num_layers=2, num_heads=2, d_ff=128, d_kv=32)
T5_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
T5_TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
T5_LAYOUT = (
    "a transformers T5 encoder folder with config.json, model weights as model.safetensors "
    "(or model.safetensors.index.json + shards) and tokenizer files (tokenizer.json, spiece.model "
    "or tokenizer_config.json), e.g. written by T5EncoderModel.save_pretrained + tokenizer.save_pretrained"
)


def _transformers():
    try:
        import transformers
    except ImportError as e:  # not a core dependency of the data pipeline
        raise ImportError("the text encoder needs the `transformers` package (T5 encoder + tokenizer)") from e
    return transformers


def validate_t5_path(path: str) -> Path:
    """Fail fast, before loading anything, on a T5 folder that cannot be what we need."""
    p = resolve_local(path)  # a local folder, or hf:<org>/<name> from the Hugging Face cache (model.hub)
    if not p.is_dir():
        raise ValueError(f"T5 path {str(p)!r} {'is not a directory' if p.exists() else 'does not exist'}; expected {T5_LAYOUT}")
    missing = []
    if not (p / "config.json").is_file():
        missing.append("config.json")
    if not any((p / f).is_file() for f in T5_WEIGHTS):
        missing.append(" or ".join(T5_WEIGHTS) + (" (.bin is refused: never unpickled)" if (p / "pytorch_model.bin").exists() else ""))
    if not any((p / f).is_file() for f in T5_TOKENIZER_FILES):
        missing.append("tokenizer (" + " / ".join(T5_TOKENIZER_FILES) + ")")
    if missing:
        raise ValueError(f"T5 folder {str(p)!r} lacks {', '.join(missing)}; expected {T5_LAYOUT}")
    model_type = json.loads((p / "config.json").read_text()).get("model_type")
    if model_type != "t5":
        raise ValueError(f"T5 folder {str(p)!r}: config.json has model_type {model_type!r}, expected 't5'")
    return p


def _load_t5(cfg: TextEncoderConfig) -> tuple[nn.Module, object, dict]:
    """(T5 encoder in eval mode, tokenizer, info) from ``cfg.t5_path`` or the seeded tiny preset."""
    tf = _transformers()
    if cfg.t5_path is None:
        tok = tf.ByT5Tokenizer()  # byte-level: no vocabulary file to download
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.t5_seed)
            model = tf.T5EncoderModel(tf.T5Config(vocab_size=len(tok), **TINY_T5))
        log.warning("T5 encoder has RANDOM weights (weights=random): text embeddings are not semantic")
        info = {"weights": "random", "path": None, "seed": cfg.t5_seed}
    else:
        path = validate_t5_path(cfg.t5_path)
        d_model = json.loads((path / "config.json").read_text()).get("d_model")
        with hub_offline():
            tok = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            try:
                model, report = tf.T5EncoderModel.from_pretrained(
                    str(path), local_files_only=True, use_safetensors=True, output_loading_info=True
                )
            except (RuntimeError, ValueError, OSError) as e:
                raise ValueError(f"T5 weights in {str(path)!r} do not match its config.json (d_model={d_model}): {e}") from e
        # a T5ForConditionalGeneration checkpoint legitimately carries decoder/lm_head weights
        unexpected = [k for k in report["unexpected_keys"] if not k.startswith(("decoder.", "lm_head."))]
        bad = sorted(report["missing_keys"]) + unexpected + sorted(map(str, report["mismatched_keys"]))
        if bad:  # transformers would silently random-init these: refuse instead
            raise ValueError(f"T5 weights in {str(path)!r} do not match its config.json (d_model={d_model}): {bad[:8]}")
        info = {"weights": "file", "path": str(path)}
    model.eval().requires_grad_(False)
    info |= {"d_model": int(model.config.d_model), "params": sum(p.numel() for p in model.parameters())}
    return model, tok, info


def clip_tokenizer(spec: ClipSpec, context_length: int):
    """open_clip's built-in BPE tokenizer (its vocabulary ships with the package: nothing downloaded)."""
    import open_clip

    text_cfg = (open_clip.get_model_config(spec.model) or {}).get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name"):
        raise ValueError(f"CLIP model {spec.model!r} uses a Hugging Face tokenizer; only built-in BPE towers are supported")
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


def _clip_token_states(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Per-token text states (B, L, W) of an open_clip ``CLIP``: encode_text without pooling/projection."""
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding.to(cast)  # (B, L, W)
    x = model.transformer(x, attn_mask=model.attn_mask)
    return model.ln_final(x)  # (B, L, W)



def tokenize_captions(captions: list[str], clip_tok, t5_tok, seq_len: int,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Captions -> CLIP ids (B, L), T5 ids (B, L) and T5 attention mask (B, L); L = seq_len."""
    if isinstance(captions, str) or len(captions) == 0:
        raise ValueError("captions must be a non-empty list of strings")
    captions = list(captions)
    clip_ids = clip_tok(captions).to(device)  # (B, L)
    t5_in = t5_tok(captions, padding="max_length", max_length=seq_len, truncation=True, return_tensors="pt")
    return clip_ids, t5_in["input_ids"].to(device), t5_in["attention_mask"].to(device)  # (B, L) each


def fuse_text(clip: nn.Module, t5: nn.Module, clip_proj: nn.Linear, t5_proj: nn.Linear, clip_ids: torch.Tensor,
              t5_ids: torch.Tensor, t5_mask: torch.Tensor, fusion: TextFusion, dtype: torch.dtype | None) -> torch.Tensor:
    """Frozen towers -> trainable projections -> fused (B, L, D) or (B, 2L, D) embedding (module docstring).

    Shared by :class:`TextEncoder` (training) and ``model.pipeline.RDTFTextEncoder`` (the packaged model), so
    both compute exactly the same embedding. ``t5`` is a T5 encoder (``T5EncoderModel`` or its ``T5Stack``).
    """
    device = clip_ids.device
    with torch.no_grad():  # frozen towers: no graph, no activations kept
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            h_clip = _clip_token_states(clip, clip_ids)
        h_clip = h_clip.float()  # (B, L, Wc)
        h_t5 = t5(input_ids=t5_ids, attention_mask=t5_mask).last_hidden_state.float()  # (B, L, Dt)
        h_t5 = h_t5 * t5_mask.unsqueeze(-1).to(h_t5.dtype)  # pad positions carry no caption content
    e_clip, e_t5 = clip_proj(h_clip), t5_proj(h_t5)  # (B, L, D) each, trainable
    if fusion == TextFusion.SUM:
        return e_clip + e_t5  # (B, L, D)
    return torch.cat([e_clip, e_t5], dim=1)  # (B, 2L, D)


class TextEncoder(nn.Module):
    """Frozen CLIP text tower + frozen T5 encoder -> trainable linear maps to a shared D-dim space."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        if cfg.t5_path is not None:
            validate_t5_path(cfg.t5_path)  # before the (slow) CLIP load
        self.cfg = cfg
        clip: LoadedClip = load_clip(cfg.clip)
        model = clip.model
        if not all(hasattr(model, a) for a in ("token_embedding", "positional_embedding", "transformer", "ln_final")):
            raise ValueError(f"CLIP model {cfg.clip.model!r} has no built-in text transformer (custom text towers unsupported)")
        if getattr(model, "visual", None) is not None:
            del model.visual  # only the text tower is used: frees the (larger) image tower's memory
        ctx = int(model.positional_embedding.shape[0])
        if ctx != cfg.seq_len:
            raise ValueError(f"seq_len {cfg.seq_len} must equal the context length {ctx} of CLIP {cfg.clip.model!r}")
        t5, t5_tok, t5_info = _load_t5(cfg)
        self._clip = clip
        self._clip_tok = clip_tokenizer(cfg.clip, ctx)
        self._t5_tok = t5_tok
        # plain dict, not submodules: frozen towers stay out of parameters()/state_dict() (see _apply)
        self._frozen = {"clip": model, "t5": t5}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.proj_seed)
            self.clip_proj = nn.Linear(int(model.transformer.width), cfg.embed_dim)
            self.t5_proj = nn.Linear(int(t5.config.d_model), cfg.embed_dim)
        self.to(clip.device)
        random_parts = clip.info["weights"] == "random" or t5_info["weights"] == "random"
        self.info = {
            "weights": "random" if random_parts else "pretrained",  # "random" if ANY tower is random
            "clip": clip.info,
            "t5": t5_info,
            "embed_dim": cfg.embed_dim,
            "seq_len": cfg.seq_len,
            "fusion": TextFusion(cfg.fusion).value,
            "trainable_params": sum(p.numel() for p in self.parameters()),
        }

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for m in self._frozen.values():  # .to()/.half() must move the unregistered towers too
            m._apply(fn)
        return self

    @property
    def out_len(self) -> int:
        return self.cfg.seq_len * (2 if self.cfg.fusion == TextFusion.CONCAT else 1)

    def forward(self, captions: list[str]) -> torch.Tensor:
        """Captions -> text embedding (B, L, D), L = seq_len (SUM) or 2 * seq_len (CONCAT)."""
        device = self.clip_proj.weight.device
        clip_ids, t5_ids, t5_mask = tokenize_captions(captions, self._clip_tok, self._t5_tok, self.cfg.seq_len, device)
        return fuse_text(self._frozen["clip"], self._frozen["t5"], self.clip_proj, self.t5_proj, clip_ids, t5_ids, t5_mask,
                         TextFusion(self.cfg.fusion), autocast_dtype(self.cfg.clip, device))

    def null_embedding(self, batch: int) -> torch.Tensor:
        """Embedding of the empty caption, (batch, L, D): the "drop text" input of classifier-free guidance.

        Recomputed on each call (the projections train, so a cached value would go stale).
        """
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        return self.forward([""]).repeat(batch, 1, 1)  # (batch, L, D)
