"""CLIP similarity between generated stickers and their captions, under two explicit protocols.

The paper (RDTF, arXiv 2503.17735, section "Experiments > Experiment Details > Dataset & Metrics") says
only: "FVD and CLIP similarity (Wu et al. 2021) are utilized to assess ... semantic correlation ... All
the texts in the testset are considered as candidates for CLIP similarity calculation", and reports
values around 0.37 (Table 1). That sentence admits two readings, so we compute both and report them
separately — neither number should be compared to the paper's without saying which one it is:

:attr:`ClipProtocol.MATCHED` — CLIPScore-style (Hessel et al. 2021, "CLIPScore: A Reference-free
    Evaluation Metric for Image Captioning"; the CLIPSIM of GODIVA, Wu et al. 2021, averages it over
    frames). For each generated frame, the cosine between its L2-normalised image embedding and the
    L2-normalised embedding of the sticker's *own* caption; averaged over the frames of a video, then over
    videos (``matched_cosine``). ``clipscore`` is Hessel et al.'s rescaled form ``w · max(cos, 0)``
    with ``w = 2.5``, applied per frame then averaged the same way. The paper's ~0.37 is in the range of a
    raw cosine, so ``matched_cosine`` is the closer reading numerically.

:attr:`ClipProtocol.RETRIEVAL` — "all the texts in the test set are candidates": each video is scored
    against *every* caption of the test set (the unique captions of all added videos; uniqueness is
    decided on CLIP's token ids, i.e. on what the text tower actually sees, so "A cat" and "a cat" are
    one candidate). The video-caption score is the **frame-averaged cosine**
    ``s(v, c) = mean_f cos(e_f, t_c) = (mean_f e_f) · t_c`` — the same quantity as the matched protocol,
    so the matched caption's score in the retrieval matrix *is* the video's ``matched_cosine``. Ranking
    by it is identical to ranking by the re-normalised mean-pooled video embedding (CLIP4Clip's
    parameter-free mean pooling), because re-normalising scales a row by a positive constant. Reported:
    top-1 accuracy, recall@5, mean rank of the matched caption (1 = best), and the mean probability of the
    matched caption under ``softmax(logit_scale · s(v, ·))`` over all candidates, ``logit_scale`` being
    CLIP's learned temperature (100 for trained OpenAI/LAION CLIPs, 1/0.07 ≈ 14.3 at random init) unless
    overridden. Ties are counted pessimistically (rank = number of candidates scoring >= the matched
    one), so a degenerate model that scores everything equally gets the worst rank, not the best.

Only per-video quantities are kept (mean image embedding, matched cosine, matched clipscore, caption
index) plus one embedding per unique caption, so memory is O(N·D + M·D) for N videos and M captions.

Random CLIP weights (``pretrained=None``) exercise the machinery only; results carry ``weights=random``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import torch

from model.clip import (
    ClipSpec,
    LoadedClip,
    WeightsSource,
    autocast_dtype,
    embed_pixels,
    hub_offline,
    load_clip,
    preprocess_frames,
    register_presets,
)

log = logging.getLogger(__name__)

CLIPSCORE_W = 2.5  # Hessel et al. 2021, eq. 1: CLIP-S = w · max(cos, 0), w = 2.5
DEFAULT_LOGIT_SCALE = 100.0  # CLIP's clamp / trained value, used when a model has no logit_scale
RECALL_K = 5


class ClipProtocol(StrEnum):
    MATCHED = "matched"  # cosine with the sticker's own caption (CLIPScore-style)
    RETRIEVAL = "retrieval"  # the sticker's caption among all test-set captions (paper's "candidates")


class VideoPooling(StrEnum):
    """How a video is scored against a caption in the retrieval protocol (recorded in the tags)."""

    FRAME_MEAN_COSINE = "frame_mean_cosine"  # mean over frames of cos(frame, caption)


@dataclass
class ClipSimConfig:
    model: str = "rdtf-tiny-clip"  # open_clip model name (the tiny preset or any of open_clip.list_models())
    pretrained: str | None = None  # local weights file or a tag cached in cache_dir; None = random init
    cache_dir: str | None = None  # open_clip/HF cache holding tagged weights (nothing is downloaded)
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    batch_size: int = 64  # frames (and captions) per forward pass
    seed: int = 0  # seed of the random initialisation (ignored with real weights)
    logit_scale: float | None = None  # softmax temperature for retrieval_prob; None = the model's learned one
    clipscore_w: float = CLIPSCORE_W  # CLIPScore rescaling weight w

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.logit_scale is not None and not (np.isfinite(self.logit_scale) and self.logit_scale > 0):
            raise ValueError(f"logit_scale must be a positive finite number, got {self.logit_scale}")

    def spec(self) -> ClipSpec:
        return ClipSpec(model=self.model, pretrained=self.pretrained, cache_dir=self.cache_dir,
                        device=self.device, batch_size=self.batch_size, init_seed=self.seed)


@dataclass
class ClipSimResult:
    matched_cosine: float  # MATCHED: mean over videos of the frame-averaged cosine with the own caption
    clipscore: float  # MATCHED: mean over videos of the frame-averaged w·max(cos, 0) (Hessel et al. 2021)
    retrieval_top1: float  # RETRIEVAL: fraction of videos whose own caption ranks first among all candidates
    retrieval_recall5: float  # RETRIEVAL: fraction whose own caption is in the top 5
    retrieval_mean_rank: float  # RETRIEVAL: mean rank of the own caption (1 = best, n_captions = worst)
    retrieval_prob: float  # RETRIEVAL: mean softmax probability of the own caption over all candidates
    per_video: list[float]  # matched cosine per video, in the order added
    n: int  # number of videos
    n_captions: int  # number of unique candidate captions (by CLIP token ids)
    tags: dict[str, str] = field(default_factory=dict)  # weights + protocol options, for MLflow

    def metrics(self) -> dict[str, float]:
        """Flat numeric metrics, named by protocol, for logging."""
        return {
            f"clip_{ClipProtocol.MATCHED}_cosine": self.matched_cosine,
            f"clip_{ClipProtocol.MATCHED}_clipscore": self.clipscore,
            f"clip_{ClipProtocol.RETRIEVAL}_top1": self.retrieval_top1,
            f"clip_{ClipProtocol.RETRIEVAL}_recall{RECALL_K}": self.retrieval_recall5,
            f"clip_{ClipProtocol.RETRIEVAL}_mean_rank": self.retrieval_mean_rank,
            f"clip_{ClipProtocol.RETRIEVAL}_prob": self.retrieval_prob,
        }


def cosine_scores(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """Frame-averaged cosine per video: (N, F, D) frame embeddings x (N, D) caption embeddings -> (N,).

    Both inputs are L2-normalised here (so raw embeddings may be passed); a zero or non-finite vector
    gives NaN, which the evaluator turns into a ValueError.
    """
    if image_emb.ndim != 3 or text_emb.ndim != 2 or image_emb.shape[0] != text_emb.shape[0] \
            or image_emb.shape[2] != text_emb.shape[1]:
        raise ValueError(f"expected image_emb (N, F, D) and text_emb (N, D), got {tuple(image_emb.shape)} "
                         f"and {tuple(text_emb.shape)}")
    img = image_emb.double()
    txt = text_emb.double()
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    return torch.einsum("nfd,nd->nf", img, txt).mean(dim=1)


def retrieval_metrics(video_emb: torch.Tensor, caption_emb: torch.Tensor, target_index: torch.Tensor,
                      logit_scale: float, *, k: int = RECALL_K) -> dict[str, float]:
    """Rank each video's own caption among all candidates.

    ``video_emb`` (N, D) and ``caption_emb`` (M, D) are scored by plain dot products — pass the frame
    mean of normalised frame embeddings and normalised caption embeddings to get frame-averaged cosines
    (see module docstring). ``target_index`` (N,) is each video's caption row. Rank is pessimistic
    under ties: the number of candidates whose score is >= the target's (so 1 = strictly best).

    Returns ``top1``, ``recall@k`` (key ``recall{k}``), ``mean_rank``, ``prob`` (mean softmax probability
    of the target at temperature ``logit_scale``) and ``cosine`` (mean target score).
    """
    if video_emb.ndim != 2 or caption_emb.ndim != 2 or video_emb.shape[1] != caption_emb.shape[1]:
        raise ValueError(f"expected video_emb (N, D) and caption_emb (M, D), got {tuple(video_emb.shape)} "
                         f"and {tuple(caption_emb.shape)}")
    target = torch.as_tensor(target_index, dtype=torch.long)
    n, m = video_emb.shape[0], caption_emb.shape[0]
    if n == 0 or m == 0:
        raise ValueError("retrieval needs at least one video and one caption")
    if target.shape != (n,) or int(target.min()) < 0 or int(target.max()) >= m:
        raise ValueError(f"target_index must be (N,)={n} indices in [0, {m}), got {target.tolist()}")
    scores = video_emb.double() @ caption_emb.double().T  # (N, M)
    own = scores.gather(1, target[:, None])  # (N, 1)
    rank = (scores >= own).sum(dim=1).double()  # includes the target itself
    prob = torch.softmax(float(logit_scale) * scores, dim=1).gather(1, target[:, None])[:, 0]
    return {
        "top1": float((rank <= 1).double().mean()),
        f"recall{k}": float((rank <= k).double().mean()),
        "mean_rank": float(rank.mean()),
        "prob": float(prob.mean()),
        "cosine": float(own.mean()),
    }


def _as_video_list(videos: torch.Tensor | np.ndarray | Sequence) -> list[torch.Tensor]:
    """uint8 (B, F, H, W, 3) tensor/array or a sequence of (F, H, W, 3) -> list of uint8 tensors."""
    if isinstance(videos, torch.Tensor | np.ndarray):
        if videos.ndim != 5:
            raise ValueError(f"videos must be (B, F, H, W, 3), got shape {tuple(videos.shape)}")
        videos = list(videos)
    out = []
    for i, v in enumerate(videos):
        t = torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else torch.as_tensor(v)
        if t.dtype != torch.uint8:
            raise ValueError(f"video {i}: frames must be uint8 RGB in [0, 255], got dtype {t.dtype}")
        if t.ndim != 4 or t.shape[-1] != 3 or t.shape[0] < 1:
            raise ValueError(f"video {i}: expected (F>=1, H, W, 3), got shape {tuple(t.shape)}")
        out.append(t)
    return out


class ClipSimilarityEvaluator:
    """Accumulates generated videos and their captions; :meth:`result` computes both protocols.

    ``clip`` may be passed to share an already loaded model (its own spec then decides the weights tags);
    otherwise it is loaded from ``cfg`` with :func:`model.clip.load_clip` (offline, strict).
    """

    def __init__(self, cfg: ClipSimConfig | None = None, clip: LoadedClip | None = None) -> None:
        import open_clip

        self.cfg = cfg or ClipSimConfig()
        self.clip = clip if clip is not None else load_clip(self.cfg.spec())
        model_name = self.clip.spec.model
        register_presets()
        try:
            with hub_offline():
                self.tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as e:  # HF tokenizers that are not cached locally cannot be fetched here
            raise ValueError(f"cannot build the text tokenizer of {model_name!r} offline "
                             f"({type(e).__name__}: {e})") from e
        if not hasattr(self.clip.model, "encode_text"):
            raise ValueError(f"CLIP model {model_name!r} has no text tower (encode_text)")
        if self.cfg.logit_scale is not None:
            self.logit_scale = float(self.cfg.logit_scale)
        elif getattr(self.clip.model, "logit_scale", None) is not None:
            self.logit_scale = float(self.clip.model.logit_scale.detach().float().exp().clamp(max=100.0))
        else:
            self.logit_scale = DEFAULT_LOGIT_SCALE
        self.reset()

    def reset(self) -> None:
        self._caption_index: dict[tuple[int, ...], int] = {}  # token ids -> row of _caption_emb
        self._caption_emb: list[torch.Tensor] = []  # (D,) normalised, one per unique caption
        self._video_emb: list[torch.Tensor] = []  # (D,) frame mean of normalised frame embeddings
        self._target: list[int] = []
        self._cosine: list[float] = []
        self._clipscore: list[float] = []

    @property
    def n(self) -> int:
        return len(self._target)

    @torch.inference_mode()
    def encode_text(self, captions: Sequence[str]) -> torch.Tensor:
        """L2-normalised float32 caption embeddings (M, D) on the CPU, in batches of ``cfg.batch_size``."""
        tokens = self.tokenizer(list(captions))
        return self._encode_tokens(tokens)

    @torch.inference_mode()
    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        clip = self.clip
        dtype = autocast_dtype(clip.spec, clip.device)
        out = []
        for i in range(0, tokens.shape[0], self.cfg.batch_size):
            with torch.autocast(clip.device.type, dtype=dtype, enabled=dtype is not None):
                z = clip.model.encode_text(tokens[i:i + self.cfg.batch_size].to(clip.device))
            z = z.float()
            out.append((z / z.norm(dim=-1, keepdim=True)).cpu())
        return torch.cat(out) if out else torch.zeros(0, clip.embed_dim)

    def _embed_videos(self, vids: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Normalised frame embeddings per video, (F_i, D) each.

        Frames of consecutive videos share forward passes of exactly ``cfg.batch_size`` frames (the last
        may be smaller); videos may differ in frame count and size, as every frame is resized first.
        """
        c, bs = self.clip, self.cfg.batch_size
        out: list[torch.Tensor] = []
        buf: list[torch.Tensor] = []  # preprocessed pixels waiting for a forward pass
        n_buf = 0
        for v in vids:
            for s in range(0, v.shape[0], bs):
                px = preprocess_frames(v[s:s + bs], c.image_size, c.mean, c.std)
                buf.append(px)
                n_buf += px.shape[0]
                if n_buf >= bs:
                    px = torch.cat(buf)
                    while px.shape[0] >= bs:
                        out.append(embed_pixels(c, px[:bs]))
                        px = px[bs:]
                    buf, n_buf = ([px] if px.shape[0] else []), px.shape[0]
        if buf:
            out.append(embed_pixels(c, torch.cat(buf)))
        return torch.split(torch.cat(out), [v.shape[0] for v in vids])

    def _caption_rows(self, captions: Sequence[str]) -> list[int]:
        """Row of each caption in the candidate set, encoding the captions not seen before."""
        tokens = self.tokenizer(list(captions))
        keys = [tuple(t.tolist()) for t in tokens]
        new = {}
        for key, tok, cap in zip(keys, tokens, captions, strict=True):
            if key not in self._caption_index and key not in new:
                new[key] = (tok, cap)
        if new:
            emb = self._encode_tokens(torch.stack([tok for tok, _ in new.values()]))
            bad = ~torch.isfinite(emb).all(dim=1)
            if bad.any():
                caps = [cap for (_, cap), b in zip(new.values(), bad.tolist(), strict=True) if b]
                raise ValueError(f"non-finite CLIP text embedding for caption(s) {caps[:4]!r}")
            for key, e in zip(new, emb, strict=True):
                self._caption_index[key] = len(self._caption_emb)
                self._caption_emb.append(e)
        return [self._caption_index[k] for k in keys]

    def add(self, videos: torch.Tensor | np.ndarray | Sequence, captions: Sequence[str]) -> None:
        """Score a batch: ``videos`` uint8 (B, F, H, W, 3) or a list of (F, H, W, 3); ``captions`` B strings.

        Frames are resized to the image tower's square input (stickers are square; a non-square frame
        would be stretched, as in :func:`model.clip.preprocess_frames`). Nothing is stored if the batch
        fails validation or yields a non-finite embedding (ValueError).
        """
        vids = _as_video_list(videos)
        if isinstance(captions, str) or len(captions) != len(vids):
            raise ValueError(f"need one caption per video: {len(vids)} videos, "
                             f"{1 if isinstance(captions, str) else len(captions)} captions")
        if not vids:
            return
        if not all(isinstance(c, str) for c in captions):
            raise ValueError("captions must be strings")
        n_caps_before = len(self._caption_emb)
        try:
            rows = self._caption_rows(captions)
            per_video = self._embed_videos(vids)
        except Exception:
            self._rollback_captions(n_caps_before)
            raise
        bad = [self.n + i for i, e in enumerate(per_video) if not torch.isfinite(e).all()]
        if bad:
            self._rollback_captions(n_caps_before)
            raise ValueError(f"non-finite CLIP image embedding for video(s) {bad[:8]} "
                             "(0-based, in order added)")
        for e, row in zip(per_video, rows, strict=True):
            cos = e.double() @ self._caption_emb[row].double()  # (F,) per-frame cosine, both normalised
            self._video_emb.append(e.double().mean(dim=0))
            self._target.append(row)
            self._cosine.append(float(cos.mean()))
            self._clipscore.append(float((self.cfg.clipscore_w * cos.clamp(min=0.0)).mean()))

    def _rollback_captions(self, n_keep: int) -> None:
        del self._caption_emb[n_keep:]
        self._caption_index = {k: r for k, r in self._caption_index.items() if r < n_keep}

    def tags(self) -> dict[str, str]:
        """Which weights and which protocol options produced the numbers."""
        info = self.clip.info
        src = WeightsSource(info["weights"])
        tags = {"weights": src.value, "model": str(info["model"])}
        if src is WeightsSource.FILE:
            tags["weights_path"] = str(info["pretrained"])
        elif src is WeightsSource.TAG:
            tags["weights_tag"] = str(info["pretrained"])
        else:
            tags["init_seed"] = str(info["init_seed"])
        tags.update({
            "protocols": ",".join(p.value for p in ClipProtocol),
            "pooling": VideoPooling.FRAME_MEAN_COSINE.value,
            "candidates": "unique_test_captions",
            "logit_scale": f"{self.logit_scale:.4g}",
            "clipscore_w": f"{self.cfg.clipscore_w:g}",
            "rank_ties": "pessimistic",
        })
        return tags

    def result(self) -> ClipSimResult:
        if self.n == 0:
            raise ValueError("no videos added")
        caption_emb = torch.stack(self._caption_emb).double()
        r = retrieval_metrics(torch.stack(self._video_emb), caption_emb, torch.tensor(self._target),
                              self.logit_scale)
        return ClipSimResult(
            matched_cosine=float(np.mean(self._cosine)),
            clipscore=float(np.mean(self._clipscore)),
            retrieval_top1=r["top1"],
            retrieval_recall5=r[f"recall{RECALL_K}"],
            retrieval_mean_rank=r["mean_rank"],
            retrieval_prob=r["prob"],
            per_video=list(self._cosine),
            n=self.n,
            n_captions=len(self._caption_emb),
            tags=self.tags(),
        )
