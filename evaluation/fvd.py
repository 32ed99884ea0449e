"""Fréchet Video Distance (Unterthiner et al. 2018, "Towards Accurate Generative Models of Video").

FVD fits a Gaussian to I3D features of real and of generated videos and reports the Fréchet (2-Wasserstein)
distance between them: ``‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^½)``.

Protocol choices, each recorded in :attr:`FVDResult.tags` so two numbers can be checked for comparability:

- feature network and preprocessing: :mod:`evaluation.i3d` (time-averaged 400-d Kinetics logits of
  ``i3d_pretrained_400.pt``, 224 px bilinear, ``[-1, 1]``, as VideoGPT / content-debiased-fvd);
- ``num_frames`` / ``upsample``: how 8-frame stickers reach I3D's >= 9-frame minimum (RDTF does not say);
- ``covariance``: StyleGAN-V (``src/metrics/metric_utils.py`` ``FeatureStats.get_mean_cov``) and
  content-debiased-fvd (``cdfvd/utils/metric_utils.py``, adapted from it) divide by **N** (biased);
  VideoGPT / TATS (``frechet_distance`` in ``videogpt/fvd/fvd.py``) and ``numpy.cov`` divide by N − 1.
  We default to the biased estimator of the StyleGAN-V / cd-fvd code; at the usual 2048 samples per side
  the two differ by a factor 2048/2047 on Σ.

Features are streamed: only count, mean and centred scatter (O(D²), D = 400) are kept per side, so any
number of videos can be evaluated in constant memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch

from data.atomic import atomic_path
from evaluation.i3d import (
    I3D_MIN_FRAMES,
    InceptionI3d,
    TemporalUpsample,
    VideoBatch,
    i3d_features,
    load_i3d,
    parse_enum,
)
from evaluation.weights import WeightsSource, weights_tags

log = logging.getLogger(__name__)


class Covariance(StrEnum):
    UNBIASED = "unbiased"  # divide by N - 1: numpy.cov default, VideoGPT / TATS torch code
    BIASED = "biased"  # divide by N: StyleGAN-V and content-debiased-fvd FeatureStats.get_mean_cov


class StreamingStats:
    """Running count, mean and centred scatter matrix of D-dim features, in float64.

    Batches are combined with the pairwise update of Chan, Golub & LeVeque (1979): each batch is centred
    on its own mean before its outer products are formed, so no catastrophic cancellation occurs (unlike
    the ``E[xxᵀ] − μμᵀ`` of the reference code). Memory is O(D²) regardless of how many samples are added;
    :meth:`merge` combines stats gathered on different workers.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self.n = 0
        self._mean: np.ndarray | None = None  # (D,)
        self._m2: np.ndarray | None = None  # (D, D) sum of centred outer products

    @classmethod
    def from_features(cls, feats: np.ndarray | torch.Tensor) -> StreamingStats:
        """Stats of a full (N, D) feature matrix."""
        stats = cls()
        stats.update(feats)
        return stats

    def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        if n_b == 0:
            return
        if self.dim is None:
            self.dim = mean_b.shape[0]
        if mean_b.shape[0] != self.dim:
            raise ValueError(f"feature dim {mean_b.shape[0]} does not match the stats' dim {self.dim}")
        if self.n == 0 or self._mean is None or self._m2 is None:
            self.n, self._mean, self._m2 = n_b, mean_b.copy(), m2_b.copy()
            return
        n = self.n + n_b
        delta = mean_b - self._mean  # (D,)
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (self.n * n_b / n)
        self.n = n

    def update(self, feats: np.ndarray | torch.Tensor) -> None:
        """Add an (N, D) batch of finite features."""
        x = feats.detach().cpu().double().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
        x = x.astype(np.float64, copy=False)
        if x.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("non-finite (NaN/inf) features: abort — they would poison mean and covariance")
        if x.shape[0] == 0:
            return
        mean_b = x.mean(axis=0)  # (D,)
        xc = x - mean_b  # (N, D)
        self._combine(x.shape[0], mean_b, xc.T @ xc)

    def save(self, path: str | Path) -> None:
        """Write count, mean and scatter to an ``.npz`` (atomic: temp file + rename; plain arrays, no pickle)."""
        if self._mean is None or self._m2 is None:
            raise ValueError("no features added yet")
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, n=np.int64(self.n), mean=self._mean, m2=self._m2)

    @classmethod
    def load(cls, path: str | Path) -> StreamingStats:
        """Stats written by :meth:`save` (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as z:
            n, mean, m2 = int(z["n"]), z["mean"].astype(np.float64), z["m2"].astype(np.float64)
        if mean.ndim != 1 or m2.shape != (mean.shape[0], mean.shape[0]) or n < 1:
            raise ValueError(f"{path}: not FVD statistics (n={n}, mean {mean.shape}, m2 {m2.shape})")
        stats = cls(mean.shape[0])
        stats.n, stats._mean, stats._m2 = n, mean, m2
        return stats

    def merge(self, other: StreamingStats) -> StreamingStats:
        """Fold ``other`` into ``self`` (in place) and return ``self``."""
        if other.n:
            assert other._mean is not None and other._m2 is not None
            self._combine(other.n, other._mean, other._m2)
        return self

    @property
    def mean(self) -> np.ndarray:
        if self._mean is None:
            raise ValueError("no features added yet")
        return self._mean.copy()

    def cov(self, convention: Covariance | str = Covariance.BIASED) -> np.ndarray:
        """(D, D) covariance, dividing the scatter by N − 1 (``unbiased``) or N (``biased``)."""
        convention = parse_enum(Covariance, convention, "covariance")
        if self._m2 is None:
            raise ValueError("no features added yet")
        denom = self.n - 1 if convention is Covariance.UNBIASED else self.n
        if denom < 1:
            raise ValueError(f"{convention.value} covariance needs more than {self.n} sample(s)")
        return self._m2 / denom


def _psd_eigvals(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off removed: values below ``D·ε·λ_max`` (incl. negative) -> 0.

    Rank-deficient covariances (N <= D) have many eigenvalues that are 0 up to round-off (~1e-16·λ_max);
    their square roots (~1e-8·λ_max^½ each, hundreds of them) would otherwise add up to a visible error.
    """
    cutoff = w.shape[0] * np.finfo(np.float64).eps * max(float(w.max(initial=0.0)), 0.0)
    return np.where(w > cutoff, w, 0.0)


def _sqrtm_psd(mat: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (eigendecomposition, round-off eigenvalues -> 0)."""
    w, v = np.linalg.eigh(mat)
    return (v * np.sqrt(_psd_eigvals(w))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½) between two Gaussians.

    Tr((Σ1 Σ2)^½) is computed as Σ sqrt(λ_i) over the eigenvalues of the *symmetric* PSD matrix
    ``S = Σ1^½ Σ2 Σ1^½``, which has the same spectrum as Σ1 Σ2 (the TF-GAN ``trace_sqrt_product`` route that
    VideoGPT also takes, here with ``eigh``). Unlike ``scipy.linalg.sqrtm(Σ1 Σ2)`` on the non-symmetric
    product it needs no ``eps·I`` fallback for singular (rank-deficient, N < D) covariances and cannot
    produce imaginary parts. Round-off eigenvalues (below ``D·ε·λ_max``, incl. negative ones) count as 0 and a
    tiny negative total is clamped to 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64).ravel(), np.asarray(mu2, np.float64).ravel()
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    D = mu1.shape[0]
    if mu2.shape != (D,) or s1.shape != (D, D) or s2.shape != (D, D):
        raise ValueError(f"shape mismatch: mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 {mu2.shape}, sigma2 {s2.shape}")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, s1, s2)):
        raise ValueError("non-finite mean or covariance: cannot compute a Fréchet distance")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2  # remove round-off asymmetry before eigh
    root1 = _sqrtm_psd(s1)
    inner = root1 @ s2 @ root1  # (D, D) symmetric PSD, same eigenvalues as Σ1 Σ2
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(np.sqrt(_psd_eigvals(eig)).sum())
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(fd, 0.0)


@dataclass
class FVDConfig:
    """FVD protocol and feature-network options (every protocol option ends up in the result tags)."""

    num_frames: int = 16  # frames I3D sees per clip (16 = the standard FVD-16 protocol)
    upsample: TemporalUpsample = TemporalUpsample.REPEAT  # how shorter clips reach num_frames
    covariance: Covariance = Covariance.BIASED  # N (StyleGAN-V / cd-fvd) or N - 1 (numpy / VideoGPT)
    batch_size: int = 8  # videos per I3D forward pass
    weights: str | None = None  # path to i3d_pretrained_400.pt; None = seeded random init (weights=random)
    seed: int = 0  # seed of the random init (ignored with weights)
    device: str = "cpu"  # torch device for I3D

    def __post_init__(self) -> None:
        self.upsample = parse_enum(TemporalUpsample, self.upsample, "upsample")
        self.covariance = parse_enum(Covariance, self.covariance, "covariance")
        if not isinstance(self.num_frames, int) or self.num_frames < I3D_MIN_FRAMES:
            raise ValueError(f"num_frames={self.num_frames!r}: must be an int >= {I3D_MIN_FRAMES} "
                             "(I3D's temporal pooling)")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r}: must be an int >= 1")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed={self.seed!r}: must be an int")
        if isinstance(self.weights, Path):
            self.weights = str(self.weights)
        if self.weights is not None and not isinstance(self.weights, str):
            raise ValueError(f"weights={self.weights!r}: must be a path string or None (random init)")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device={self.device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:0')") from e

    def protocol_tags(self) -> dict[str, str]:
        return {"fvd_num_frames": str(self.num_frames), "fvd_upsample": self.upsample.value,
                "fvd_covariance": self.covariance.value, "fvd_feature": "i3d_logits400_timeavg"}


@dataclass
class FVDResult:
    """One FVD number with what is needed to judge it: sample sizes, caveats and the protocol tags."""

    fvd: float  # Fréchet distance between real and fake feature Gaussians
    n_real: int  # real videos behind the statistics
    n_fake: int  # generated videos behind the statistics
    feature_dim: int  # D (400 for I3D logits)
    warnings: list[str] = field(default_factory=list)  # reliability caveats (also logged)
    tags: dict[str, str] = field(default_factory=dict)  # weights tags + protocol options, for MLflow


class FVDEvaluator:
    """Streams real and fake videos through I3D into two :class:`StreamingStats` and reports the FVD.

    I3D is loaded lazily (first ``add_*`` call) with :func:`evaluation.i3d.load_i3d` from ``cfg.weights``.
    A ready ``model`` may be passed instead (e.g. shared between evaluators); tags then describe
    ``cfg.weights``, so pass the config the model was loaded with.
    """

    def __init__(self, cfg: FVDConfig | None = None, model: InceptionI3d | None = None) -> None:
        self.cfg = cfg if cfg is not None else FVDConfig()
        self._model = model
        self.real = StreamingStats()
        self.fake = StreamingStats()

    @property
    def model(self) -> InceptionI3d:
        if self._model is None:
            self._model, _ = load_i3d(self.cfg.weights, seed=self.cfg.seed, device=self.cfg.device)
        return self._model

    def _features(self, videos: VideoBatch) -> torch.Tensor:
        return i3d_features(self.model, videos, batch_size=self.cfg.batch_size, num_frames=self.cfg.num_frames,
                            upsample=self.cfg.upsample)  # on the model's device (cfg.device once loaded)

    def add_real(self, videos: VideoBatch) -> int:
        """Add uint8 real videos ((B, F, H, W, 3) tensor/array or list of (F, H, W, 3)); returns the count."""
        feats = self._features(videos)
        self.real.update(feats)
        return int(feats.shape[0])

    def add_fake(self, videos: VideoBatch) -> int:
        """Add uint8 generated videos (same layout as :meth:`add_real`); returns the count."""
        feats = self._features(videos)
        self.fake.update(feats)
        return int(feats.shape[0])

    def tags(self) -> dict[str, str]:
        source = WeightsSource.RANDOM if self.cfg.weights is None else WeightsSource.FILE
        tags = weights_tags(source, self.cfg.weights, prefix="fvd_")
        if source is WeightsSource.RANDOM:
            tags["fvd_init_seed"] = str(self.cfg.seed)
        return tags | self.cfg.protocol_tags()

    def result(self) -> FVDResult:
        """FVD of everything added so far. Raises if either side has < 2 videos; warns if N < D + 1."""
        for side, stats in (("real", self.real), ("fake", self.fake)):
            if stats.n < 2:
                raise ValueError(f"FVD needs at least 2 {side} videos to estimate a covariance, got {stats.n}")
        if self.real.dim != self.fake.dim:
            raise ValueError(f"real ({self.real.dim}) and fake ({self.fake.dim}) feature dims differ")
        dim = int(self.real.dim or 0)
        warnings: list[str] = []
        if min(self.real.n, self.fake.n) < dim + 1:
            warnings.append(
                f"fewer samples than features: covariance is rank-deficient, FVD is biased/unstable "
                f"(n_real={self.real.n}, n_fake={self.fake.n}, feature_dim={dim}; published FVDs use 2048 "
                f"videos per side — compare only numbers computed with the same sample sizes)")
        for w in warnings:
            log.warning("FVD: %s", w)
        cov = self.cfg.covariance
        fvd = frechet_distance(self.real.mean, self.real.cov(cov), self.fake.mean, self.fake.cov(cov))
        return FVDResult(fvd=fvd, n_real=self.real.n, n_fake=self.fake.n, feature_dim=dim,
                         warnings=warnings, tags=self.tags())


def compute_fvd(real: VideoBatch, fake: VideoBatch, cfg: FVDConfig | None = None, *,
                model: InceptionI3d | None = None) -> FVDResult:
    """FVD between two collections of uint8 videos (see :meth:`FVDEvaluator.add_real` for layouts)."""
    ev = FVDEvaluator(cfg, model=model)
    ev.add_real(real)
    ev.add_fake(fake)
    return ev.result()

