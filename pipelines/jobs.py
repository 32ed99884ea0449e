"""Asset jobs. Each later stage extends ``drop_data_job`` with its per-drop assets."""

from dagster import AssetSelection, define_asset_job

from assets.ablation import ABLATION_PARTITIONS, ABLATION_REPORT_ASSET, ABLATION_RUNS_ASSET
from assets.clusters import CLUSTER_ASSET
from assets.embeddings import EMBED_ASSET
from assets.evaluation import EVALUATION_ASSETS
from assets.gallery import GALLERY_ASSET
from assets.ingest import INGEST_ASSET
from assets.partitions import drop_partitions
from assets.registry import REGISTRY_ASSETS
from assets.shards import SHARD_ASSET
from assets.training import TRAIN_ASSET

# Everything that runs per drop when it arrives (the new-drop sensor launches this).
drop_data_job = define_asset_job(
    "drop_data_job",
    selection=AssetSelection.assets(INGEST_ASSET, EMBED_ASSET, CLUSTER_ASSET, SHARD_ASSET),
    partitions_def=drop_partitions,
    description="Per-drop data stages for a new sticker drop: ingest -> CLIP embeddings -> frame clusters/split -> shards.",
)

_EVALUATION = AssetSelection.assets(*EVALUATION_ASSETS, *REGISTRY_ASSETS)  # evaluate, register, gate

# Training on the shards of every materialized drop (torchrun through Dagster Pipes, "gpu" pool), then
# the gallery and the full evaluation (every training is evaluated and enters the comparison).
train_job = define_asset_job(
    "train_job",
    selection=AssetSelection.assets(TRAIN_ASSET, GALLERY_ASSET) | _EVALUATION,
    description="Train DFGN (dual mask + difficulty-adaptive curriculum) on all drops' train shards, sample a gallery, "
                "evaluate (FVD, VQA, CLIP similarity, PSNR/SSIM) and update the run comparison.",
)

# Re-evaluate the latest trained model (e.g. with real metric weights) without retraining.
evaluate_job = define_asset_job(
    "evaluate_job",
    selection=_EVALUATION,
    description="Evaluation samples -> FVD, VQA, CLIP similarity, PSNR/SSIM -> model comparison (MLflow) -> "
                "registered model version (challenger) -> promotion gate (champion).",
)

# The ablation (paper Tables 3-4 in miniature): one partition per (variant, seed); a backfill over all 15
# partitions fans the trainings out (one at a time through the "gpu" pool), then ablation_report follows
# (eager once every partition exists, or launch ablation_report_job by hand after a subset).
ablation_job = define_asset_job(
    "ablation_job",
    selection=AssetSelection.assets(ABLATION_RUNS_ASSET),
    partitions_def=ABLATION_PARTITIONS,
    description="One ablation run per partition (variant x seed): train tiny DFGN with the variant's switches, "
                "evaluate, log to the rdtf-ablation MLflow experiment. Backfill all partitions for the full ablation.",
)

ablation_report_job = define_asset_job(
    "ablation_report_job",
    selection=AssetSelection.assets(ABLATION_REPORT_ASSET),
    description="Rebuild the ablation report (mean ± std, paper orderings, plots) from the runs in MLflow.",
)
