"""Stage 5: evaluation — ``evaluation_samples`` then ``fvd``, ``vqa``, ``clip_similarity``, ``reconstruction_metrics``.

Thin Dagster wrappers over :mod:`evaluation` (which runs anywhere without Dagster):

- ``evaluation_samples`` generates every evaluation task for the test split from the trained model's
  latest checkpoint with fixed seeds (:mod:`evaluation.samples`) into ``lake/evaluation/<run>/samples``.
- each metric asset reads that set, computes its metric per task, writes ``metrics/<name>.json`` and logs
  ``eval/<task>/<metric>`` to the *training's* MLflow run, with tags naming the metric network's weights
  (``<metric>.weights=random`` for the random presets) and the protocol options.

Which training run is evaluated: ``run_name`` in the config of ``evaluation_samples``; empty = the run of
the latest ``trained_model`` materialization. The metric assets follow the latest ``evaluation_samples``.
"""


import json
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AutomationCondition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from assets.resources import ClipResource, EvalModelsResource, LakeResource, MlflowResource
from assets.training import TRAIN_ASSET
from data.storage import local_input, local_output
from training.run_mirror import latest_checkpoint, local_checkpoint

SAMPLES_ASSET = "evaluation_samples"
FVD_ASSET, VQA_ASSET, CLIP_ASSET, RECON_ASSET = "fvd", "vqa", "clip_similarity", "reconstruction_metrics"
METRIC_ASSETS = (FVD_ASSET, VQA_ASSET, CLIP_ASSET, RECON_ASSET)
# Every new trained model is evaluated and compared, also when trained_model is materialized on its own.
EAGER = AutomationCondition.eager()




def latest_metadata(context: AssetExecutionContext, asset_name: str) -> dict:
    ev = context.instance.get_latest_materialization_event(AssetKey(asset_name))
    if ev is None or ev.asset_materialization is None:
        return {}
    return {k: v.value for k, v in ev.asset_materialization.metadata.items()}


def run_link(tracking_uri: str, run_id: str | None) -> dict:
    """``{"mlflow_run": <URL of the run in the MLflow UI>}`` (empty without a run id, a UI base, or a reachable store)."""
    from training import registry as reg

    if not run_id:
        return {}
    try:
        url = reg.run_url(reg.client(tracking_uri).get_run(run_id).info.experiment_id, run_id)
    except Exception:  # noqa: BLE001 - a link is a convenience: never fail an asset for it
        return {}
    return {"mlflow_run": MetadataValue.url(url)} if url else {}


def _training_summary(run_dir: Path) -> dict:
    p = run_dir / "summary.json"
    return json.loads(p.read_text()) if p.exists() else {}


class EvaluationSamplesConfig(Config):
    run_name: str = Field("", description="Training run (lake/training/<run_name>); empty = latest trained_model.")
    tasks: list[str] = Field(["t2v", "i2v", "interpolation", "prediction"],
                             description="Evaluation tasks: t2v, i2v, interpolation, prediction, i2v_image (image only, "
                                         "no text; opt-in).")
    n_videos: int = Field(500, description="Test stickers per task (paper: 500).")
    steps: int = Field(25, description="DDIM steps (paper Sec. 4: 25).")
    seed: int = Field(0, description="Sampling seed (batch b uses seed + b).")
    batch_size: int = Field(8, description="Clips per sampler call.")


@asset(
    name=SAMPLES_ASSET,
    deps=[TRAIN_ASSET],
    group_name="evaluation",
    kinds={"pytorch", "numpy"},
    pool="gpu",
    automation_condition=EAGER,
    description="Generated clips for every evaluation task (T2V, I&T2V, interpolation, prediction) on the test split.",
)
def evaluation_samples(context: AssetExecutionContext, config: EvaluationSamplesConfig, storage: LakeResource,
                       evaluators: EvalModelsResource, mlflow: MlflowResource) -> MaterializeResult:
    from assets.gallery import latest_training_run
    from data.sharding import iter_test_samples
    from evaluation.samples import EvalSamplesConfig, generate_eval_samples
    from model.pipeline import RDTFPipeline

    run_name = config.run_name or latest_training_run(context)
    run_dir = storage.lake.training(run_name)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise ValueError(f"no complete checkpoint in {run_dir}/checkpoints: materialize {TRAIN_ASSET} first")
    # an object-store checkpoint is loaded from a cached local copy (safetensors memory-maps real files)
    pipe = RDTFPipeline.from_pretrained(local_checkpoint(ckpt), device=evaluators.torch_device())
    cfg = EvalSamplesConfig(tasks=tuple(config.tasks), n_videos=config.n_videos, steps=config.steps,
                            seed=config.seed, batch_size=config.batch_size)
    summary = _training_summary(run_dir)
    out = storage.lake.evaluation(run_name) / "samples"
    with local_output(out, last=("manifest.json",), pull=True) as work:  # the lake itself when local
        manifest = generate_eval_samples(
            pipe, iter_test_samples(storage.lake.shard_indexes()), cfg, work, checkpoint=ckpt,
            extra={"run_name": run_name, "mlflow_run_id": summary.get("mlflow_run_id"), "step": summary.get("step"),
                   "model_weights": summary.get("weights", "unknown")}, report=context.log.info)
    return MaterializeResult(metadata={
        "run_name": run_name, "samples_dir": MetadataValue.path(str(out)), "n_videos": manifest["n_videos"],
        "tasks": MetadataValue.json(manifest["tasks"]), "checkpoint": str(ckpt), "steps": config.steps,
        "n_stretched": manifest["n_stretched"], "mlflow_run_id": manifest.get("mlflow_run_id") or "",
        "image_size": manifest["image_size"], "weights": manifest.get("model_weights", "unknown"),
        **run_link(mlflow.tracking_uri, manifest.get("mlflow_run_id")),
    })


def _samples(context: AssetExecutionContext, storage: LakeResource):
    from evaluation.samples import load_eval_samples

    run_name = latest_metadata(context, SAMPLES_ASSET).get("run_name")
    if not run_name:
        raise ValueError("no evaluation_samples materialization found: materialize evaluation_samples first")
    return load_eval_samples(local_input(storage.lake.evaluation(run_name) / "samples"))


def _finish(context: AssetExecutionContext, report, samples, storage: LakeResource,
            mlflow: MlflowResource) -> MaterializeResult:
    """Write metrics/<name>.json, log to the training's MLflow run, and build the materialization."""
    from evaluation.suite import log_report, save_report

    out = storage.lake.evaluation(samples.manifest["run_name"]) / "metrics" / f"{report.name}.json"
    save_report(report, out)
    run_id = samples.manifest.get("mlflow_run_id")
    if run_id:
        log_report(report, mlflow.tracking_uri, run_id, step=samples.manifest.get("step") or 0)
    else:
        context.log.warning("the training run has no MLflow run id: metrics are only in %s", out)
    for w in report.warnings:
        context.log.warning(w)
    md = {k.removeprefix("eval/"): float(v) for k, v in report.metrics.items()}
    return MaterializeResult(
        metadata={**md, "warnings": MetadataValue.json(report.warnings), "tags": MetadataValue.json(report.tags),
                  "n_videos": samples.manifest["n_videos"], "report": MetadataValue.path(str(out)),
                  "mlflow_run_id": run_id or "", "run_name": samples.manifest["run_name"],
                  **run_link(mlflow.tracking_uri, run_id)},
        tags={k.replace(".", "/"): v for k, v in report.tags.items() if k.endswith("weights")},
    )


class FvdAssetConfig(Config):
    num_frames: int = Field(16, description="Frames fed to I3D; 8-frame clips are up-sampled (I3D needs >= 9).")
    upsample: str = Field("repeat", description="Temporal up-sampling: repeat | interpolate | none.")
    covariance: str = Field("biased", description="Covariance: biased (N, cd-fvd/StyleGAN-V) | unbiased (N-1, VideoGPT).")
    batch_size: int = Field(4, description="Videos per I3D forward.")


@asset(name=FVD_ASSET, deps=[SAMPLES_ASSET], group_name="evaluation", kinds={"pytorch", "mlflow"}, automation_condition=EAGER,
       description="Fréchet Video Distance (I3D features) of each task's samples vs. the test clips.")
def fvd(context: AssetExecutionContext, config: FvdAssetConfig, storage: LakeResource, mlflow: MlflowResource,
        evaluators: EvalModelsResource) -> MaterializeResult:
    from evaluation.fvd import Covariance, FVDConfig
    from evaluation.i3d import TemporalUpsample
    from evaluation.suite import run_fvd

    samples = _samples(context, storage)
    cfg = FVDConfig(num_frames=config.num_frames, upsample=TemporalUpsample(config.upsample),
                    covariance=Covariance(config.covariance), batch_size=config.batch_size,
                    weights=evaluators.i3d_weights, seed=evaluators.init_seed, device=evaluators.torch_device())
    with local_output(storage.lake.fvd_real_stats(), pull=True) as cache:  # test-set I3D statistics, shared
        report = run_fvd(samples, cfg, cache_dir=cache)
    return _finish(context, report, samples, storage, mlflow)


class VqaAssetConfig(Config):
    num_clips: int = Field(4, description="Fragment clips per video, scores averaged (FAST-VQA test setting: 4).")
    clip_len: int = Field(32, description="Frames per clip (FAST-VQA: 32; smaller only for CPU smoke runs, tagged).")
    frame_interval: int = Field(2, description="Step between sampled frames (FAST-VQA fast-b.yml: 2). Applies to "
                                "videos of at least clip_len*frame_interval frames, and to all with "
                                "short_clip=official_wrap.")
    short_clip: str = Field("all_frames", description="Videos shorter than clip_len*frame_interval (the paper's "
                            "8-frame stickers): all_frames = interval 1, one deterministic loop so every frame is "
                            "scored equally often | official_wrap = FAST-VQA's sampler, which wraps modulo F and "
                            "on 8 frames scores {0,2,4,6} only (= interpolation's known frames).")
    frames: str = Field("all", description="Frames scored: all = the whole output sticker | generated = only the "
                        "frames the model generated (the known frames pasted back are ground truth).")
    seed: int = Field(0, description="Seed of the fragment offsets.")
    include_real: bool = Field(True, description="Also score the test clips (a reference ceiling).")


@asset(name=VQA_ASSET, deps=[SAMPLES_ASSET], group_name="evaluation", kinds={"pytorch", "mlflow"}, automation_condition=EAGER,
       description="FAST-VQA quality score of each task's samples.")
def vqa(context: AssetExecutionContext, config: VqaAssetConfig, storage: LakeResource, mlflow: MlflowResource,
        evaluators: EvalModelsResource) -> MaterializeResult:
    from evaluation.suite import run_vqa
    from evaluation.vqa import VQAConfig

    samples = _samples(context, storage)
    cfg = VQAConfig(weights=evaluators.fastvqa_weights, seed=config.seed, num_clips=config.num_clips,
                    clip_len=config.clip_len, frame_interval=config.frame_interval, short_clip=config.short_clip,
                    frames=config.frames, device=evaluators.torch_device())
    return _finish(context, run_vqa(samples, cfg, include_real=config.include_real), samples, storage, mlflow)


@asset(name=CLIP_ASSET, deps=[SAMPLES_ASSET], group_name="evaluation", kinds={"pytorch", "mlflow"}, automation_condition=EAGER,
       description="CLIP similarity of samples and captions: matched (CLIPScore-style) and retrieval over all test texts.")
def clip_similarity(context: AssetExecutionContext, storage: LakeResource, mlflow: MlflowResource,
                    clip: ClipResource, evaluators: EvalModelsResource) -> MaterializeResult:
    from evaluation.clip_similarity import ClipSimConfig
    from evaluation.suite import run_clip_similarity

    samples = _samples(context, storage)
    cfg = ClipSimConfig(model=clip.model, pretrained=clip.pretrained, cache_dir=clip.cache_dir,
                        device=evaluators.torch_device(), seed=clip.init_seed)
    return _finish(context, run_clip_similarity(samples, cfg), samples, storage, mlflow)


@asset(name=RECON_ASSET, deps=[SAMPLES_ASSET], group_name="evaluation", kinds={"numpy", "mlflow"}, automation_condition=EAGER,
       description="PSNR/SSIM of generated frames vs. ground truth for interpolation and prediction (beyond the paper).")
def reconstruction_metrics(context: AssetExecutionContext, storage: LakeResource,
                           mlflow: MlflowResource) -> MaterializeResult:
    from evaluation.suite import run_reconstruction

    samples = _samples(context, storage)
    return _finish(context, run_reconstruction(samples), samples, storage, mlflow)


@asset(name="model_comparison", deps=list(METRIC_ASSETS), group_name="evaluation", kinds={"mlflow", "pandas"},
       automation_condition=EAGER,
       description="Paper-style comparison (Tables 1–4) of every evaluated run in the MLflow experiment.")
def model_comparison(context: AssetExecutionContext, storage: LakeResource, mlflow: MlflowResource) -> MaterializeResult:
    from evaluation.comparison import collect_runs, task_table, to_markdown, write_report
    from evaluation.suite import log_comparison
    from training.links import Image, image_markdown

    mlflow.ensure_experiment()
    runs = collect_runs(mlflow.tracking_uri, mlflow.experiment)
    out = storage.lake.comparison()
    with local_output(out) as work:
        paths = write_report(runs, work, experiment=mlflow.experiment)
        run_id = log_comparison(mlflow.tracking_uri, mlflow.experiment, paths, artifact_location=mlflow.artifact_location)
        chart = image_markdown([[Image("FVD / VQA / CLIP per task and run", paths["png"], f"comparison/{paths['png'].name}")]],
                               run_id)
    i2v = task_table(runs, "i2v") if len(runs) else None
    md = to_markdown(i2v, "I&T→V (paper Tables 1, 3, 4)") if i2v is not None and len(i2v) else "no evaluated runs"
    return MaterializeResult(metadata={
        "n_runs": len(runs), "table": MetadataValue.md(md), "report": MetadataValue.path(str(out / paths["md"].name)),
        "csv": MetadataValue.path(str(out / paths["csv"].name)), "chart": MetadataValue.md(chart),
        "mlflow_run_id": run_id,
    })


EVALUATION_ASSETS = [evaluation_samples, fvd, vqa, clip_similarity, reconstruction_metrics, model_comparison]
