"""Stage 2a: CLIP frame embeddings per drop (thin wrapper over ``data.embed``)."""

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.ingest import INGEST_ASSET
from assets.partitions import drop_id_of, drop_partitions
from assets.resources import ClipResource, LakeResource
from assets.table_metadata import table_metadata
from data.embed import EmbedSettings, embed_drop, iter_sticker_embeddings

EMBED_ASSET = "frame_embeddings"
EMBED_CHECK = "embeddings_finite_unit_norm"


def check_embeddings(lake_root: str, drop_id: str, tol: float = 2e-2) -> tuple[bool, dict]:
    """Every stored vector finite with |‖e‖ − 1| <= tol (float16 storage costs ~1e-3)."""
    worst, n, bad = 0.0, 0, 0
    for _, _, embs in iter_sticker_embeddings(lake_root, drop_id):
        e = np.concatenate(embs)  # (N, D)
        finite = np.isfinite(e).all(axis=1)
        dev = np.abs(np.linalg.norm(e[finite], axis=1) - 1.0) if finite.any() else np.zeros(0)
        bad += int((~finite).sum() + (dev > tol).sum())
        worst = max(worst, float(dev.max()) if dev.size else 0.0)
        n += len(e)
    return bad == 0, {"n_vectors": n, "n_bad": bad, "max_norm_deviation": worst}


@asset(
    name=EMBED_ASSET,
    automation_condition=AutomationCondition.eager(),  # follows its upstream when re-materialized
    deps=[INGEST_ASSET],
    partitions_def=drop_partitions,
    group_name="data",
    kinds={"pytorch", "parquet"},
    check_specs=[AssetCheckSpec(EMBED_CHECK, asset=EMBED_ASSET, blocking=True,
                                description="All embeddings finite and unit-norm; clustering must not run otherwise.")],
    description="open_clip image-tower embeddings (L2-normalised, float16) of every ingested frame.",
)
def frame_embeddings(context: AssetExecutionContext, storage: LakeResource, clip: ClipResource) -> MaterializeResult:
    drop_id = drop_id_of(context)
    settings = EmbedSettings(clip=clip.spec(), num_workers=clip.num_workers)
    report = embed_drop(storage.lake_root, drop_id, settings, progress=False)
    weights = report.clip["weights"]
    if weights == "random":
        context.log.warning(f"CLIP {report.clip['model']} uses RANDOM weights (weights=random): embeddings are not semantic")
    ok, stats = check_embeddings(storage.lake_root, drop_id)
    return MaterializeResult(
        metadata={
            "n_stickers": report.n_stickers,
            "n_frames": report.n_frames,
            "n_quarantined": report.n_quarantined,
            "embed_dim": report.embed_dim,
            "frames_per_s": MetadataValue.float(round(report.frames_per_s, 1)),
            "model_frames_per_s": MetadataValue.float(round(report.model_frames_per_s, 1)),
            "clip_model": report.clip["model"],
            "weights": weights,
            "clip_params": report.clip["params"],
            "out_dir": MetadataValue.path(str(storage.lake.embeddings(drop_id))),
            **table_metadata(sorted(storage.lake.embeddings(drop_id).glob("part-*.parquet"), key=lambda p: p.name)),
        },
        tags={"weights": weights},
        check_results=[AssetCheckResult(check_name=EMBED_CHECK, passed=ok, severity=AssetCheckSeverity.ERROR, metadata=stats)],
    )
