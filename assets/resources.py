"""Resource types the assets depend on. Concrete instances are chosen in ``pipelines.resources``."""

from __future__ import annotations

from dagster import ConfigurableResource

from data.drops import join
from data.ids import validate_id
from data.lake import Lake


class LakeResource(ConfigurableResource):
    """Where drops arrive and where pipeline outputs go."""

    drops_root: str  # fsspec URL of the folder/prefix that holds one sub-folder per drop
    lake_root: str  # local directory for stage outputs (manifests, frames, shards, checkpoints)

    @property
    def lake(self) -> Lake:
        """The lake under ``lake_root`` (every stage path comes from it)."""
        return Lake(self.lake_root)

    def drop_url(self, drop_id: str) -> str:
        """URL of a drop folder; the id is validated first (it may come from a hand-added partition)."""
        return join(self.drops_root, validate_id(drop_id, "drop id"))


class MlflowResource(ConfigurableResource):
    """MLflow tracking location shared by training and evaluation assets."""

    tracking_uri: str  # e.g. sqlite:///var/mlflow.db (default) or http://127.0.0.1:5000
    experiment: str = "rdtf-stickers"  # experiment that training/evaluation runs are logged to
    artifact_location: str | None = None  # where new experiments store artifacts (None: MLflow default)

    def ensure_experiment(self) -> str:
        """Create the experiment (with ``artifact_location``) if it does not exist; returns its id.

        Called before anything logs, so artifacts land in the configured store instead of MLflow's
        default ``./mlruns`` relative to whichever process happened to create the experiment.
        """
        from training.tracking_backend import ensure_experiment

        return ensure_experiment(self.tracking_uri, self.experiment, self.artifact_location)


class ClipResource(ConfigurableResource):
    """The CLIP model used for frame embeddings (and later CLIP similarity).

    Defaults to the random-init ``rdtf-tiny-clip`` preset (no download possible); for real use set
    ``model="ViT-B-32"`` and ``pretrained`` to a local checkpoint file or a tag cached in ``cache_dir``.
    """

    model: str = "rdtf-tiny-clip"  # open_clip model name
    pretrained: str | None = None  # local weights file (.pt/.pth/.bin/.safetensors), cached tag, or None = random
    cache_dir: str | None = None  # cache holding tagged weights
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (GPU autocast; CPU runs fp32)
    batch_size: int = 64  # frames per forward pass
    init_seed: int = 0  # seed of the random initialisation
    num_workers: int = 1  # DataLoader processes decoding/preprocessing frames

    def spec(self):
        from model.clip import ClipSpec, Precision

        return ClipSpec(model=self.model, pretrained=self.pretrained, cache_dir=self.cache_dir, device=self.device,
                        precision=Precision(self.precision), batch_size=self.batch_size, init_seed=self.init_seed)


class EvalModelsResource(ConfigurableResource):
    """Weights of the metric networks (I3D for FVD, FAST-VQA) and where evaluation runs.

    ``None`` = the seeded random-init preset (no download possible here); results are then tagged
    ``fvd.weights=random`` / ``vqa.weights=random``. For numbers comparable to the paper, point these at the
    published files: ``i3d_pretrained_400.pt`` (the I3D port used by StyleGAN-V / content-debiased-fvd) and
    ``FAST_VQA_B_1_4.pth`` (FAST-VQA-B).
    """

    i3d_weights: str | None = None  # local path of i3d_pretrained_400.pt, or None = random init
    fastvqa_weights: str | None = None  # local path of FAST_VQA_B_1_4.pth, or None = random init
    device: str = "auto"  # auto | cpu | cuda | cuda:N (sampling and metric networks)
    init_seed: int = 0  # seed of the random-init presets

    def torch_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
