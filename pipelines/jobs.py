"""Asset jobs. Each later stage extends ``drop_data_job`` with its per-drop assets."""

from dagster import AssetSelection, define_asset_job

from assets.clusters import CLUSTER_ASSET
from assets.embeddings import EMBED_ASSET
from assets.evaluation import EVALUATION_ASSETS
from assets.gallery import GALLERY_ASSET
from assets.ingest import INGEST_ASSET
from assets.partitions import drop_partitions
from assets.shards import SHARD_ASSET
from assets.training import TRAIN_ASSET

# Everything that runs per drop when it arrives (the new-drop sensor launches this).
drop_data_job = define_asset_job(
    "drop_data_job",
    selection=AssetSelection.assets(INGEST_ASSET, EMBED_ASSET, CLUSTER_ASSET, SHARD_ASSET),
    partitions_def=drop_partitions,
    description="Per-drop data stages for a new sticker drop: ingest -> CLIP embeddings -> frame clusters/split -> shards.",
)

_EVALUATION = AssetSelection.assets(*EVALUATION_ASSETS)

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
    description="Evaluation samples -> FVD, VQA, CLIP similarity, PSNR/SSIM -> model comparison (MLflow).",
)
