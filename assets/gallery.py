"""Stage 4: ``sample_gallery`` — stickers from the trained model on fixed test-split conditions.

For the first ``n_stickers`` test samples (all drops' test shards, in index order) and each task of
paper Fig. 1 — text→GIF, image&text→GIF, interpolation and forward prediction — generate one animated
sticker with a fixed seed, write GIFs and contact sheets to ``lake/gallery/<run>/``, log them as artifacts
of the training's MLflow run, and preview the contact sheets inline in the Dagster metadata (one row per
sticker, one column per task; by MLflow artifact URL, see ``training.links``).
"""

import itertools
import json
from pathlib import Path

import numpy as np
from dagster import (
    AssetExecutionContext,
    AutomationCondition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from assets.resources import LakeResource, MlflowResource
from assets.training import TRAIN_ASSET
from data.export import contact_sheet, save_animation
from data.lake import Lake
from data.sharding import iter_test_samples
from data.storage import local_output
from model.masks import SamplingTask
from training.links import Image, image_markdown
from training.run_mirror import latest_checkpoint, local_checkpoint

GALLERY_ASSET = "sample_gallery"
GALLERY_TASKS = {"generate_text": SamplingTask.GENERATE, "generate_image": SamplingTask.GENERATE,  # file label: task
                 "interpolate": SamplingTask.INTERPOLATE, "predict_forward": SamplingTask.PREDICT_FORWARD}
# ("generate_image" is image & text -> GIF of Fig. 1: one known frame *and* the caption)


class GalleryConfig(Config):
    run_name: str = Field("", description="Training run (lake/training/<run_name>); empty = latest trained_model.")
    n_stickers: int = Field(2, description="Test stickers whose captions/frames condition the gallery.")
    steps: int = Field(25, description="DDIM steps (paper: 50 in Table 6, 25 in the experiments).")
    text_scale: float = Field(7.5, description="Text guidance scale (Table 6).")
    image_scale: float = Field(7.5, description="Image guidance scale (Table 6).")
    seed: int = Field(0, description="Sampling seed.")


def latest_training_run(context: AssetExecutionContext) -> str:
    """Run folder name of the latest trained_model materialization (its checkpoint's grandparent)."""
    from dagster import AssetKey

    ev = context.instance.get_latest_materialization_event(AssetKey(TRAIN_ASSET))
    ckpt = ev.asset_materialization.metadata.get("checkpoint") if ev and ev.asset_materialization else None
    if ckpt is None:
        raise ValueError("no trained_model materialization found: set run_name or materialize trained_model first")
    return Path(ckpt.value).parent.parent.name


def _test_samples(lake_root: str, n: int) -> list[dict]:
    return list(itertools.islice(iter_test_samples(Lake(lake_root).shard_indexes()), n))


def _resize(frame: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BICUBIC))


@asset(
    name=GALLERY_ASSET,
    deps=[TRAIN_ASSET],
    group_name="training",
    kinds={"pytorch", "mlflow"},
    automation_condition=AutomationCondition.eager(),
    description="GIFs from the trained model for fixed test-split prompts/conditions (Fig. 1 tasks).",
)
def sample_gallery(context: AssetExecutionContext, config: GalleryConfig, storage: LakeResource,
                   mlflow: MlflowResource) -> MaterializeResult:
    from model.pipeline import RDTFPipeline

    run_name = config.run_name or latest_training_run(context)
    run_dir = storage.lake.training(run_name)
    ckpt = latest_checkpoint(run_dir)
    # its latest checkpoint (an object-store one from a cached local copy); clear ValueError if none
    pipe = RDTFPipeline.from_pretrained(local_checkpoint(ckpt) if ckpt is not None else run_dir)
    out = storage.lake.gallery(run_name)
    F, S = pipe.num_frames, pipe.image_size
    rows: list[list[Image]] = []  # per sticker: its tasks' contact sheets
    captions: list[str] = []
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    run_id = summary.get("mlflow_run_id")
    with local_output(out) as work:  # the lake folder itself when local; uploaded when on an object store
        for i, sample in enumerate(_test_samples(storage.lake_root, config.n_stickers)):
            frames = [_resize(f, S) for f in sample["frames"]]
            rows.append([])
            captions.append(sample["caption"])
            known = {"generate_text": [], "generate_image": frames[:1], "interpolate": [frames[0], frames[-1]],
                     "predict_forward": frames[: min(3, len(frames) - 1)]}
            for task, sampling_task in GALLERY_TASKS.items():
                images = known[task]
                if sampling_task is SamplingTask.INTERPOLATE and len(frames) < 2:
                    continue
                context.log.info(f"sampling gallery sticker {i + 1}/{config.n_stickers}: {task}")
                res = pipe(sample["caption"], images=images, task=sampling_task,
                           num_inference_steps=config.steps, text_guidance_scale=config.text_scale,
                           image_guidance_scale=config.image_scale, seed=config.seed, progress=False)
                save_animation(res.frames, res.durations_ms, work / f"{i:02d}-{task}.gif")
                sheet = contact_sheet(res.frames, work / f"{i:02d}-{task}.png", label=f"{task}: {sample['caption'][:60]}")
                rows[-1].append(Image(task, sheet, f"gallery/{sheet.name}"))
        if run_id:
            import mlflow as mlf

            mlf.MlflowClient(tracking_uri=mlflow.tracking_uri).log_artifacts(run_id, str(work), artifact_path="gallery")
        md = image_markdown(rows, run_id)  # inline: sheets by MLflow artifact URL (embedded without a run)
    return MaterializeResult(metadata={
        "n_gifs": sum(map(len, rows)), "steps": config.steps, "frames_per_gif": F, "frame_size": S,
        "captions": MetadataValue.md("\n".join(f"{i + 1}. {c[:120]}" for i, c in enumerate(captions))),
        "mlflow_run_id": run_id or "", "gallery_dir": MetadataValue.path(str(out)), "preview": MetadataValue.md(md),
        "weights": summary.get("weights", "unknown"),
    }, tags={"weights": summary.get("weights", "unknown")})
