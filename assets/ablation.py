"""Ablation benchmark as Dagster assets: paper Tables 3-4 fanned out over a (variant x seed) partition set.

Thin wrappers over :mod:`ablation.runner` (which ``benchmarks/ablation.py`` runs without Dagster):

- ``ablation_benchmark`` — the fixed synthetic benchmark (drop seed/size of the mode's settings) through the
  pipeline's data stages into ``lake/ablation/<mode>/data/`` (built once, reused).
- ``ablation_runs`` — partitioned by ``ABLATION_PARTITIONS`` = variant (``ablation.variants.Variant``) x seed (0-2):
  each partition trains the ``tiny_pixel`` DFGN with the shared settings plus its variant's switches
  (``python -m training`` subprocess, resumable), evaluates it (FVD, CLIP similarity, PSNR/SSIM, held-out
  loss per task) and logs everything to the ablation's MLflow experiment with the param/tag ``variant``.
  It runs in the ``gpu`` concurrency pool, like ``trained_model``, so a backfill trains one run at a time
  on a small machine (``dagster instance concurrency set gpu 1``).
- ``ablation_report`` — every run of the ablation read back from MLflow: mean ± std per variant and metric,
  the paper's orderings verdicts and plots (``lake/ablation/<mode>/report/<id>/``), logged to a summary run.

Fan-out: a backfill of the partitioned job ``ablation_job`` (see ``pipelines/jobs.py``) over all 15 partitions
(UI: "Materialize all..." on ``ablation_runs``; CLI: ``dagster job backfill -j ablation_job --partitions KEYS``,
keys like ``0|sti_ddu``), then ``ablation_report`` (its eager automation condition materializes it once every
partition exists and again after later updates; or materialize it by hand, e.g. after a quick-mode subset).
The same run config (``AblationConfig``: ``mode`` full | quick and optional overrides) must be given to all three
assets; the settings hash (``ablation.id``) keeps runs of different settings apart.
"""

from pathlib import Path

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AutomationCondition,
    Config,
    MaterializeResult,
    MetadataValue,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    asset,
)
from pydantic import Field

from ablation.variants import Variant
from assets.resources import LakeResource, MlflowResource

ABLATION_DATA_ASSET, ABLATION_RUNS_ASSET, ABLATION_REPORT_ASSET = "ablation_benchmark", "ablation_runs", "ablation_report"
ABLATION_SEEDS = ("0", "1", "2")
ABLATION_PARTITIONS = MultiPartitionsDefinition({
    "variant": StaticPartitionsDefinition([v.value for v in Variant]),
    "seed": StaticPartitionsDefinition(list(ABLATION_SEEDS)),
})


class AblationConfig(Config):
    """Which ablation settings (``benchmarks.ablation.full_settings`` / ``quick_settings``) and where to write."""

    mode: str = Field("full", description="full (the 60-min CPU settings) | quick (machinery check: a few steps).")
    out_dir: str = Field("", description="Output folder; empty = lake/ablation/<mode>.")
    steps: int = Field(0, description="Override the training steps of every variant (0 = the mode's default).")
    threads: int = Field(0, description="torch threads per process (0 = torch default).")
    experiment: str = Field("", description="MLflow experiment; empty = rdtf-ablation[-quick].")
    fvd_weights: str = Field("", description="Local I3D weights for FVD; empty = random init (no verdict about the paper).")


def ablation_settings(config: AblationConfig):
    """The mode's settings, covering every variant and seed of the partition set (the report shows what ran)."""
    from ablation.runner import full_settings, quick_settings

    kw = {"variants": tuple(v.value for v in Variant), "seeds": tuple(int(s) for s in ABLATION_SEEDS)}
    if config.steps > 0:
        kw["steps"] = config.steps
    if config.experiment:
        kw["experiment"] = config.experiment
    if config.fvd_weights:
        kw["fvd_weights"] = config.fvd_weights
    if config.mode not in ("full", "quick"):
        raise ValueError(f"AblationConfig.mode must be full or quick, got {config.mode!r}")
    return (quick_settings if config.mode == "quick" else full_settings)(**kw)


def _out_dir(config: AblationConfig, storage: LakeResource) -> Path:
    return Path(config.out_dir) if config.out_dir else storage.lake.ablation(config.mode)


@asset(name=ABLATION_DATA_ASSET, group_name="ablation", kinds={"parquet"},
       description="Fixed synthetic benchmark for the ablation (documented drop seed and size, held-out test split).")
def ablation_benchmark(context: AssetExecutionContext, config: AblationConfig, storage: LakeResource) -> MaterializeResult:
    from ablation.runner import benchmark_info, prepare_benchmark

    settings = ablation_settings(config)
    index = prepare_benchmark(settings, _out_dir(config, storage))
    info = benchmark_info(index)
    return MaterializeResult(metadata={"index": MetadataValue.path(str(index)), "benchmark_id": settings.benchmark_id,
                                       "drop_seed": settings.drop_seed, "drop_n": settings.drop_n,
                                       "counts": MetadataValue.json(info.get("counts") or {})})


@asset(
    name=ABLATION_RUNS_ASSET,
    partitions_def=ABLATION_PARTITIONS,
    deps=[ABLATION_DATA_ASSET],
    group_name="ablation",
    kinds={"pytorch", "mlflow"},
    pool="gpu",
    description="One ablation variant x seed: train tiny DFGN with the variant's switches, evaluate, log to MLflow.",
)
def ablation_runs(context: AssetExecutionContext, config: AblationConfig, storage: LakeResource,
                  mlflow: MlflowResource) -> MaterializeResult:
    from ablation.runner import run_one

    key = context.partition_key
    dims = key.keys_by_dimension if isinstance(key, MultiPartitionKey) else dict(p.split("=") for p in key.split("|"))
    settings = ablation_settings(config)
    res = run_one(settings, _out_dir(config, storage), dims["variant"], int(dims["seed"]), mlflow.tracking_uri,
                  threads=config.threads)
    md = {k.removeprefix("eval/"): float(v) for k, v in res["metrics"].items()}
    return MaterializeResult(metadata={**md, "variant": res["variant"], "seed": res["seed"], "mlflow_run_id": res["run_id"],
                                       "ablation_id": settings.ablation_id, "mode": settings.mode,
                                       "run_dir": MetadataValue.path(res["run_dir"]),
                                       "train_seconds": float(res["timing"]["ablation/train_seconds"]),
                                       "eval_seconds": float(res["timing"]["ablation/eval_seconds"])})


@asset(
    name=ABLATION_REPORT_ASSET,
    deps=[AssetDep(ABLATION_RUNS_ASSET, partition_mapping=AllPartitionMapping())],
    group_name="ablation",
    kinds={"mlflow", "pandas"},
    automation_condition=AutomationCondition.eager(),
    description="Ablation report: mean ± std per variant and metric, paper orderings reproduced or not, plots.",
)
def ablation_report(context: AssetExecutionContext, config: AblationConfig, storage: LakeResource,
                    mlflow: MlflowResource) -> MaterializeResult:
    import base64
    import json

    from ablation.summary import write_summary

    settings = ablation_settings(config)
    out = _out_dir(config, storage)
    paths = write_summary(settings, out, mlflow.tracking_uri, docs_dir=None)
    summary = json.loads((paths["md"].parent / "summary_run.json").read_text())
    md = paths["md"].read_text()
    section = md.split("## Paper orderings", 1)[-1].split("The same claims", 1)[0]
    png = base64.b64encode(paths["png_i2v"].read_bytes()).decode()
    return MaterializeResult(metadata={
        "n_runs": summary["n_runs"], "report": MetadataValue.path(str(paths["md"])),
        "orderings": MetadataValue.md("## Paper orderings" + section),
        "i2v_chart": MetadataValue.md(f"![i2v](data:image/png;base64,{png})"),
        "mlflow_run_id": summary["mlflow_run_id"], "ablation_id": settings.ablation_id,
    })


ABLATION_ASSETS = [ablation_benchmark, ablation_runs, ablation_report]
