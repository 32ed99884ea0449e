"""Stage 3: ``trained_model`` — launches ``torchrun -m training`` through Dagster Pipes.

The asset is not partitioned: it trains on the *train* shards of every materialized drop (their
``index.json`` files). Rank 0 of the torchrun job reports the materialization (steps, final loss per
task, MLflow run id, checkpoint path) back through Pipes. The asset runs in the ``gpu`` concurrency
pool, so only one training at a time holds the accelerator(s) (set the pool's limit in the UI or with
``dagster instance concurrency set gpu 1``).

Kubernetes: with ``RDTF_LAUNCHER=k8s`` the ``pipes_subprocess_client`` resource is
``pipelines.k8s_client.TorchrunK8sPipesClient`` (a ``dagster_k8s.PipesK8sClient``); this same ``run(command=...,
context=..., env=...)`` call then becomes multi-node ``torchrun --rdzv-backend c10d`` on pods (a worker Job + a
headless Service, the head pod through Pipes; rank 0 reports from the head pod). See docs/scale-out.md.
"""

import json
import os
from pathlib import Path

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    Backoff,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    PipesSubprocessClient,
    RetryPolicy,
    asset,
)
from pydantic import Field

from assets.resources import LakeResource, MlflowResource
from assets.shards import SHARD_ASSET
from data.atomic import atomic_write
from data.redact import redact_uri
from data.storage import is_remote
from training.launch import LOCAL_TORCHRUN_ENV, local_torchrun_command

TRAIN_ASSET = "trained_model"


class TrainingConfig(Config):
    """Run config of the training asset (a subset of training.trainer.TrainConfig; the rest keeps defaults)."""

    preset: str = Field("tiny_pixel", description="DFGN preset: tiny_pixel, tiny, paper, paper_3dconv, micro_pixel (tests).")
    autoencoder: str = Field("pixel", description="pixel, tiny_kl, a local AutoencoderKL folder, or hf:<org>/<name> "
                             "(a cached Hugging Face repo, e.g. hf:stabilityai/sd-vae-ft-mse).")
    text_clip_model: str = Field("ViT-H-14", description="open_clip model of the text tower (used with real weights).")
    text_clip_pretrained: str = Field("", description="CLIP text-tower weights: a local file or a tag in the HF cache "
                                      "('' = random tiny towers, tagged weights=random).")
    text_t5_path: str = Field("", description="T5 encoder: a local transformers folder or hf:<org>/<name> "
                              "('' = random tiny T5).")
    steps: int = Field(200, description="Optimizer steps.")
    batch_size: int = Field(4, description="Clips per rank per step.")
    lr: float = Field(2e-4, description="AdamW learning rate (paper: 1e-5 for the 0.96 B model; tiny trains faster).")
    nproc_per_node: int = Field(1, description="torchrun processes (GPUs, or CPU ranks with gloo).")
    curriculum_mode: str = Field("adaptive", description="none | linear | adaptive (Table 4).")
    ckpt_every: int = Field(50, description="Steps between checkpoints.")
    num_workers: int = Field(0, description="DataLoader workers per rank.")
    shard_sampling: str = Field("resample", description="resample (shards drawn with replacement per rank) | "
                                "split (each shard read once per epoch by one rank and worker).")
    shard_cache_dir: str = Field("", description="Node-local folder caching object-store shards after their first "
                                 "read ('' = stream every read).")
    run_name: str = Field("default", description="Training folder under lake/training/ (resumes if it exists).")
    seed: int = Field(0, description="Seed of weights, data order and masks.")
    # speed levers (model/performance.py, training/optim.py; measured in benchmarks/levers.py)
    precision: str = Field("auto", description="auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16.")
    compile: str = Field("none", description="torch.compile: none | regional (each U-Net stage) | full.")
    compile_mode: str = Field("default", description="default | reduce-overhead (CUDA graphs) | max-autotune.")
    memory_format: str = Field("contiguous", description="Activation layout: contiguous | channels_last.")
    attention_backend: str = Field("auto", description="SDPA kernel: auto | flash | efficient | cudnn | math.")
    grad_checkpointing: bool = Field(False, description="Activation checkpointing (granularity below).")
    checkpoint_granularity: str = Field("stage", description="stage (each U-Net stage) | attention (attention + "
                                        "temporal layers only).")
    fsdp: bool = Field(False, description="Shard with FSDP2 instead of DDP when nproc_per_node > 1.")
    fsdp_param_dtype: str = Field("fp32", description="FSDP2 compute dtype: fp32 | bf16 (fp32 master weights).")


SPEED_FIELDS = ("precision", "compile", "compile_mode", "memory_format", "attention_backend", "grad_checkpointing",
                "checkpoint_granularity", "fsdp", "fsdp_param_dtype")  # passed to TrainConfig as they are
NO_RUN_RETRY_TAG = "dagster/retry_on_asset_or_op_failure"  # run tag read when the run fails (dagster.yaml: run_retries)


def config_error(context: AssetExecutionContext, message: str) -> Failure:
    """A deterministic error (bad run config, nothing to train on): retrying cannot help, so neither the asset's
    RetryPolicy (``allow_retries=False``) nor the instance's run retries (``dagster.yaml``: on step failure)
    repeat it. The run tag is read when Dagster decides ``dagster/will_retry`` at the run failure."""
    context.instance.add_run_tags(context.run_id, {NO_RUN_RETRY_TAG: "false"})
    return Failure(description=message, allow_retries=False)






@asset(
    name=TRAIN_ASSET,
    deps=[AssetDep(SHARD_ASSET, partition_mapping=AllPartitionMapping())],
    group_name="training",
    kinds={"pytorch", "mlflow"},
    pool="gpu",
    # a retry resumes from the last checkpoint (--resume latest), so retrying a killed/preempted run is cheap
    retry_policy=RetryPolicy(max_retries=2, delay=30, backoff=Backoff.EXPONENTIAL),
    description="DFGN trained with dual masks + difficulty-adaptive curriculum (torchrun via Dagster Pipes).",
)
def trained_model(
    context: AssetExecutionContext,
    config: TrainingConfig,
    storage: LakeResource,
    mlflow: MlflowResource,
    pipes_subprocess_client: PipesSubprocessClient,
):
    from training.config import TrainConfig  # light (no torch): the workers validate with the same code

    try:
        out_dir = storage.lake.training(config.run_name)
    except ValueError as e:
        raise config_error(context, str(e)) from None
    indexes = storage.lake.shard_indexes()
    if not indexes:
        raise config_error(context, f"no shard indexes under {storage.lake_root}/shards: materialize webdataset_shards first")
    train_cfg = {
        "index_paths": indexes, "out_dir": str(out_dir), "preset": config.preset, "autoencoder": config.autoencoder,
        "steps": config.steps, "batch_size": config.batch_size, "lr": config.lr, "ckpt_every": config.ckpt_every,
        "num_workers": config.num_workers, "seed": config.seed, "shard_sampling": config.shard_sampling,
        "shard_cache_dir": config.shard_cache_dir, "curriculum": {"mode": config.curriculum_mode},
        "mlflow_uri": mlflow.tracking_uri, "mlflow_experiment": mlflow.experiment, "run_name": config.run_name,
        "mlflow_artifact_location": mlflow.artifact_location,
        "text_clip_model": config.text_clip_model if (config.text_clip_pretrained or config.text_t5_path) else None,
        "text_clip_pretrained": config.text_clip_pretrained or None, "text_t5_path": config.text_t5_path or None,
        **{k: getattr(config, k) for k in SPEED_FIELDS},
    }
    cfg_path = out_dir / "train.json"
    try:  # before torchrun: a bad value fails here in milliseconds, once, with the field and the allowed values
        TrainConfig.from_dict(train_cfg)
        # single node: rendezvous and stores on 127.0.0.1 only (--standalone listens on every interface)
        cmd = local_torchrun_command(config.nproc_per_node, ["-m", "training", "--config", str(cfg_path),
                                                             "--resume", "latest"])
    except ValueError as e:
        raise config_error(context, str(e)) from None
    if not is_remote(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    try:
        mlflow.ensure_experiment()  # artifacts go to the configured store, not ./mlruns
    except Exception as e:  # noqa: BLE001 - an unreachable tracking server must not block training (it buffers)
        context.log.warning(f"MLflow at {redact_uri(mlflow.tracking_uri)} unreachable ({e}); training buffers its logging")
    atomic_write(cfg_path, json.dumps(train_cfg, indent=2))
    context.log.info(f"launching {' '.join(cmd)} on {len(indexes)} drop(s)")
    env = {"PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // config.nproc_per_node)))}
    if isinstance(pipes_subprocess_client, PipesSubprocessClient):  # this machine; the k8s client sets its own
        env |= LOCAL_TORCHRUN_ENV
    result = pipes_subprocess_client.run(command=cmd, context=context, env=env).get_materialize_result()
    return _with_lineage(context, result, mlflow, indexes)


def _with_lineage(context: AssetExecutionContext, result: MaterializeResult, mlflow: MlflowResource,
                  indexes: list[str]) -> MaterializeResult:
    """Log the shard indexes as the run's MLflow dataset inputs and link the run (URL metadata).

    After training, from the asset: the trainer's ranks never need the lineage, and a tracking outage here only
    costs a warning (the training is done and checkpointed)."""
    from training import registry as reg

    md = dict(result.metadata or {})
    run_id = md.get("mlflow_run_id")
    run_id = getattr(run_id, "value", run_id)
    if run_id:
        try:
            n = reg.log_training_inputs(mlflow.tracking_uri, str(run_id), indexes)
            exp_id = reg.client(mlflow.tracking_uri).get_run(str(run_id)).info.experiment_id
            url = reg.run_url(exp_id, str(run_id))
            md |= {"mlflow_datasets": n, **({"mlflow_run": MetadataValue.url(url)} if url else {})}
        except Exception as e:  # noqa: BLE001 - lineage is best effort once the model is trained
            context.log.warning(f"could not log dataset inputs / link of MLflow run {run_id}: {e}")
    return MaterializeResult(asset_key=result.asset_key, metadata=md, check_results=result.check_results,
                             data_version=result.data_version, tags=result.tags)
