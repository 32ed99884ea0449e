"""Rank-0 MLflow logging of a training run (params, tags, metrics, system metrics, the chart, the end state).

One MLflow run per training across kills and restarts, through ``training.tracking.ResilientTracker`` (see there).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from data.redact import redact_config
from training.tracking import ResilientTracker, start_system_metrics


class MlflowRunLogger:
    """Rank-0 MLflow logging through ``training.tracking.ResilientTracker``: one MLflow run per training across kills
    and restarts (run id in the checkpoints and ``out_dir/mlflow_state.json``; re-done steps are not logged twice);
    an unreachable or failing tracking server never stops training — entries are buffered in
    ``out_dir/mlflow_buffer.jsonl`` and sent with their original steps/timestamps once it answers again."""

    def __init__(self, trainer):

        self.t, cfg = trainer, trainer.cfg
        self.tracker = ResilientTracker.for_training(cfg.out_dir, cfg.mlflow_uri, cfg.mlflow_experiment, run_name=cfg.run_name,
                                                     artifact_location=cfg.mlflow_artifact_location,
                                                     run_id=trainer.mlflow_run_id, resumed=trainer.step > 0, config=asdict(cfg))
        self.tracker.start()  # create or resume the run; send what an earlier attempt left buffered
        if trainer.step == 0:
            flat = {f"train.{k}": v for k, v in redact_config(asdict(trainer.cfg)).items()}  # no credentials in params
            flat |= {f"model.{k}": v for k, v in asdict(trainer.mcfg).items()}
            self.tracker.log_params({k: str(v)[:500] for k, v in flat.items()})
        self.tracker.set_tags({"weights": trainer.weights_tag, "preset": trainer.cfg.preset, "world_size": trainer.world,
                               "curriculum": trainer.curriculum.cfg.mode.value})
        self._sync_run_id()
        self.system = start_system_metrics(self.tracker.run_id, cfg.mlflow_uri)  # CPU/GPU/memory charts on the run

    def _sync_run_id(self) -> None:  # the run may be created late (server down at start): later checkpoints keep it
        if self.tracker.run_id:
            self.t.mlflow_run_id = self.tracker.run_id

    def log(self, metrics: dict, step: int, samples_per_s: float) -> None:
        self.tracker.log_metrics({**metrics, "samples_per_s": samples_per_s}, step)
        self._sync_run_id()

    def finish(self, ckpt: Path | None, chart: Path | None = None) -> None:
        """Log the training-curves chart and the checkpoint's trainer.json, stop system metrics, end the run."""
        if chart is not None:
            self.tracker.log_artifact(chart)
        if ckpt is not None:
            self.tracker.log_artifact(ckpt / "trainer.json", artifact_path="checkpoint")
            self.tracker.set_tags({"checkpoint": str(ckpt)})
        if self.system is not None:
            self.system.finish()
        self.tracker.finish()  # FINISHED; warns if entries stay buffered (sent on resume or `training.tracking flush`)
        self._sync_run_id()
