"""Ingest stage as a Dagster asset: one materialization per drop partition.

Thin wrapper over :func:`data.ingest.ingest_drop`: run config -> settings, the engine's
report -> asset metadata, and a check on the reject rate. The check is deliberately non-blocking:
a drop with many bad files still materializes its good stickers and the run succeeds (bad input
never fails a partition), while the failed check shows in red in the UI and in check history.
"""


import json

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from assets.partitions import drop_id_of, drop_partitions
from assets.resources import LakeResource
from assets.table_metadata import table_metadata
from data import lake
from data.captionless import CaptionSource
from data.drops import MAX_CAPTION_BYTES, CaptionPolicy
from data.ingest import IngestReport, IngestSettings, ingest_drop
from data.media import DecodeLimits, Resample

INGEST_ASSET = "ingested_stickers"
REJECT_RATE_CHECK = "reject_rate_below_threshold"


class IngestConfig(Config):
    """Run config of the ingest asset (editable in the Dagster launchpad)."""

    size: int = Field(256, description="Stored frame size in pixels (square; aspect kept with padding).")
    background: list[int] = Field([255, 255, 255], description="RGB that transparent pixels are composited onto.")
    resample: Resample = Field(Resample.BICUBIC, description="Resize filter: bicubic, lanczos or bilinear.")
    max_frames: int = Field(512, description="Stickers with more frames are quarantined (too_many_frames).")
    min_frames: int = Field(2, description="Stickers with fewer frames are quarantined (too_few_frames).")
    max_frame_pixels: int = Field(4096 * 4096, description="Canvas width*height cap (decompression bombs).")
    max_total_pixels: int = Field(512 * 1024 * 1024, description="Decode work cap per sticker: canvas width*height*frames, "
                                  "checked from the header and counted while decoding (pixel_limit).")
    max_file_bytes: int = Field(64 << 20, description="Source files larger than this are quarantined (at most this + 1 byte is read).")
    max_caption_bytes: int = Field(MAX_CAPTION_BYTES, description="A larger caption table refuses the whole drop.")
    decode_timeout_s: float = Field(30.0, description="Wall-time limit per sticker's decode (decode_timeout); 0 = none.")
    caption_policy: CaptionPolicy = Field(
        CaptionPolicy.KEEP_EMPTY, description="Missing/non-UTF-8 captions: keep_empty or quarantine."
    )
    caption_source: CaptionSource = Field(
        CaptionSource.TABLE, description="table (the drop's caption table) | none (a plain folder of stickers, empty "
        "captions) | filename (captions from file names: stem, _ - . + as spaces, trailing number dropped). A "
        "caption-less drop's READY marker names its source itself."
    )
    workers: int = Field(0, description="Decode processes (0 = all cores).")
    max_reject_rate: float = Field(0.25, description="The reject-rate check fails above this fraction.")

    def settings(self) -> IngestSettings:
        limits = DecodeLimits(
            max_frames=self.max_frames,
            min_frames=self.min_frames,
            max_frame_pixels=self.max_frame_pixels,
            max_total_pixels=self.max_total_pixels,
        )
        return IngestSettings(
            size=self.size,
            background=tuple(self.background),
            resample=self.resample,
            limits=limits,
            max_file_bytes=self.max_file_bytes,
            max_caption_bytes=self.max_caption_bytes,
            decode_timeout_s=self.decode_timeout_s,
            caption_policy=self.caption_policy,
            caption_source=self.caption_source,
            workers=self.workers,
        )


def report_metadata(report: IngestReport) -> dict:
    """Asset metadata: counts, reject reasons, throughput and where the files are."""
    reasons_md = "\n".join(f"| {k} | {v} |" for k, v in report.rejects_by_reason.items()) or "| (none) | 0 |"
    return {
        "n_rows": report.n_rows,
        "n_ingested": report.n_ingested,
        "n_rejected": report.n_rejected,
        "reject_rate": MetadataValue.float(round(report.reject_rate, 4)),
        "rejects_by_reason": MetadataValue.json(report.rejects_by_reason),
        "rejects_table": MetadataValue.md("| reason | count |\n|---|---|\n" + reasons_md),
        "caption_status": MetadataValue.json(report.caption_status),
        "formats": MetadataValue.json(report.formats),
        "n_frames_total": report.n_frames_total,
        "n_with_alpha": report.n_alpha,
        "n_frame_parts": report.n_parts,
        "frames_per_s": MetadataValue.float(round(report.frames_per_s, 1)),
        "wall_s": MetadataValue.float(round(report.wall_s, 2)),
        "workers": report.workers,
        "drop_url": MetadataValue.url(report.drop_url) if "://" in report.drop_url else MetadataValue.path(report.drop_url),
        "out_dir": MetadataValue.path(report.out_dir),
        **{f"rejects/{k}": v for k, v in report.rejects_by_reason.items()},
    }


@asset(
    name=INGEST_ASSET,
    partitions_def=drop_partitions,
    group_name="data",
    kinds={"python", "parquet"},
    check_specs=[AssetCheckSpec(REJECT_RATE_CHECK, asset=INGEST_ASSET,
                                description="Fraction of quarantined rows stays under max_reject_rate.")],
    description="Decode every sticker of a drop once: frames (resized, composited), manifest, quarantine.",
)
def ingested_stickers(context: AssetExecutionContext, config: IngestConfig, storage: LakeResource) -> MaterializeResult:
    drop_id = drop_id_of(context)
    report = ingest_drop(
        storage.drop_url(drop_id),
        storage.lake.partition(lake.Stage.INGEST, drop_id),
        config.settings(),
        drop_id=drop_id,
        progress=False,
    )
    context.log.info(
        f"drop {drop_id}: {report.n_ingested} stickers ingested, {report.n_rejected} quarantined "
        f"{json.dumps(report.rejects_by_reason)}, {report.frames_per_s:.0f} frames/s"
    )
    passed = report.reject_rate <= config.max_reject_rate
    check = AssetCheckResult(
        check_name=REJECT_RATE_CHECK,
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        metadata={"reject_rate": report.reject_rate, "max_reject_rate": config.max_reject_rate,
                  "rejects_by_reason": MetadataValue.json(report.rejects_by_reason)},
        description=None if passed else f"reject rate {report.reject_rate:.1%} > {config.max_reject_rate:.1%}",
    )
    manifest = storage.lake.ingest(drop_id) / "manifest.parquet"
    return MaterializeResult(metadata=report_metadata(report) | table_metadata([manifest]), check_results=[check])
