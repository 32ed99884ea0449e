"""``rdtf train`` and ``rdtf evaluate``: the training and evaluation stages from the command line, without Dagster.

    rdtf train --run-name nightly --steps 200 --lr 2e-4            # all drops' train shards in the project lake
    rdtf train --config configs/paper.yaml --nproc-per-node 8       # the Table 6 recipe, typed options on top
    rdtf evaluate --run-name nightly --n-videos 50 --steps 25       # samples + FVD/VQA/CLIP/PSNR into its MLflow run

``rdtf train`` fills what the Dagster asset would (shards of every published drop, ``lake/training/<run>``, the
project's MLflow store), writes ``<out_dir>/train.json`` and runs ``torchrun -m training --resume latest`` on
127.0.0.1 — so a killed run continues where it stopped. Every ``TrainConfig`` field is an option
(``training.options``). ``rdtf evaluate`` runs the same evaluation code as the Dagster evaluation assets.
Errors are one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path


def _lake(args):
    from data.lake import Lake
    from pipelines.env import rdtf_home

    return Lake(args.lake or os.environ.get("RDTF_LAKE_ROOT") or str(rdtf_home() / "lake"))


def _cmd_train(args: argparse.Namespace) -> int:
    from data.atomic import atomic_write
    from pipelines.env import default_tracking_uri, rdtf_home
    from training.config import TrainConfig, load_config_file
    from training.launch import LOCAL_TORCHRUN_ENV, local_torchrun_command
    from training.options import config_from_args

    lake = _lake(args)
    cfg = config_from_args(args, load_config_file(args.config) if args.config else None)
    cfg.setdefault("run_name", "default")
    if not cfg.get("index_paths"):
        cfg["index_paths"] = lake.shard_indexes()
        if not cfg["index_paths"]:
            raise ValueError(f"no published shards under {lake.root}/shards: run `rdtf build-drop` (or the Dagster "
                             "drop_data_job) first, or give --index-paths")
    cfg.setdefault("out_dir", str(lake.training(cfg["run_name"])))
    cfg.setdefault("mlflow_uri", default_tracking_uri())
    cfg.setdefault("mlflow_artifact_location", str(rdtf_home() / "mlartifacts"))
    TrainConfig.from_dict(cfg)  # validate here: a bad value fails before torchrun starts
    out = Path(cfg["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "train.json", json.dumps(cfg, indent=2))
    cmd = local_torchrun_command(args.nproc_per_node, ["-m", "training", "--config", str(out / "train.json"),
                                                       "--resume", args.resume])
    print(f"rdtf train: {len(cfg['index_paths'])} drop(s) -> {out} (torchrun, {args.nproc_per_node} process(es))",
          file=sys.stderr)
    env = os.environ | LOCAL_TORCHRUN_ENV | {"PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, env=env).returncode


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from data.sharding import iter_test_samples
    from evaluation.clip_similarity import ClipSimConfig
    from evaluation.fvd import FVDConfig
    from evaluation.samples import EvalSamplesConfig, generate_eval_samples, load_eval_samples
    from evaluation.suite import (
        log_report,
        run_clip_similarity,
        run_fvd,
        run_reconstruction,
        run_vqa,
        save_report,
    )
    from evaluation.vqa import VQAConfig
    from model.pipeline import RDTFPipeline
    from pipelines.env import clip_from_env, default_tracking_uri
    from training.run_mirror import latest_checkpoint, local_checkpoint

    # every option checked before any work (sampling takes minutes): a bad one is one line and exit 2
    vqa_cfg = VQAConfig(weights=os.environ.get("RDTF_FASTVQA_WEIGHTS") or None, num_clips=args.vqa_clips,
                        clip_len=args.vqa_clip_len)
    lake = _lake(args)
    run_dir = lake.training(args.run_name)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise ValueError(f"no complete checkpoint in {run_dir}/checkpoints: train it first (rdtf train)")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    device = args.device if args.device != "auto" else ("cuda" if _cuda() else "cpu")
    pipe = RDTFPipeline.from_pretrained(local_checkpoint(ckpt), device=device)
    out = lake.evaluation(args.run_name)
    cfg = EvalSamplesConfig(tasks=tuple(args.tasks), n_videos=args.n_videos, steps=args.steps, seed=args.seed,
                            batch_size=args.batch_size)
    generate_eval_samples(pipe, iter_test_samples(lake.shard_indexes()), cfg, out / "samples", checkpoint=ckpt,
                          extra={"run_name": args.run_name, "mlflow_run_id": summary.get("mlflow_run_id"),
                                 "step": summary.get("step"), "model_weights": summary.get("weights", "unknown")})
    samples = load_eval_samples(out / "samples")
    clip = clip_from_env()
    reports = [
        run_fvd(samples, FVDConfig(weights=os.environ.get("RDTF_I3D_WEIGHTS") or None, device=device),
                cache_dir=lake.fvd_real_stats()),
        run_vqa(samples, dataclasses.replace(vqa_cfg, device=device)),
        run_clip_similarity(samples, ClipSimConfig(model=clip["model"], pretrained=clip["pretrained"],
                                                   cache_dir=clip["cache_dir"], device=device)),
        run_reconstruction(samples),
    ]
    uri, run_id = args.tracking_uri or default_tracking_uri(), summary.get("mlflow_run_id")
    for rep in reports:
        save_report(rep, out / "metrics" / f"{rep.name}.json")
        if run_id:
            log_report(rep, uri, run_id, step=summary.get("step") or 0)
    for rep in reports:
        for k, v in sorted(rep.metrics.items()):
            print(f"{k:<36} {v:.4f}")
    print(f"reports: {out / 'metrics'}" + (f"; logged to MLflow run {run_id}" if run_id else " (no MLflow run id)"))
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def add_train_parsers(sub) -> None:
    """Register ``train`` and ``evaluate`` on an ``add_subparsers()`` object."""
    from training.options import add_train_options

    t = sub.add_parser("train", help="train DFGN with torchrun on the lake's shards (every TrainConfig field is an "
                                     "option; --config FILE still works)")
    t.add_argument("--config", default=None, help="TrainConfig JSON/YAML (e.g. configs/paper.yaml); options override "
                                                  "it (default: none)")
    t.add_argument("--lake", default=None, help="lake root (default: $RDTF_LAKE_ROOT or $RDTF_HOME/lake)")
    t.add_argument("--nproc-per-node", type=int, default=1, help="torchrun processes: GPUs, or CPU ranks with gloo "
                                                                 "(default: 1)")
    t.add_argument("--resume", default="latest", help="'latest' (continue a killed run) or a checkpoint folder "
                                                      "(default: latest)")
    add_train_options(t)
    t.set_defaults(fn=_cmd_train)

    e = sub.add_parser("evaluate", help="evaluation samples + FVD, VQA, CLIP similarity, PSNR/SSIM of a training run")
    e.add_argument("--run-name", required=True, help="training run under lake/training/")
    e.add_argument("--lake", default=None, help="lake root (default: $RDTF_LAKE_ROOT or $RDTF_HOME/lake)")
    e.add_argument("--tasks", nargs="+", default=["t2v", "i2v", "interpolation", "prediction"],
                   help="evaluation tasks (default: t2v i2v interpolation prediction; also i2v_image)")
    e.add_argument("--n-videos", type=int, default=500, help="test stickers per task (default: 500, the paper's)")
    e.add_argument("--steps", type=int, default=25, help="DDIM steps (default: 25, paper Sec. 4)")
    e.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    e.add_argument("--batch-size", type=int, default=8, help="clips per sampler call (default: 8)")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    e.add_argument("--vqa-clips", type=int, default=4, help="FAST-VQA clips per video (default: 4, fast-b.yml's test "
                   "protocol; fewer is faster, recorded in MLflow as vqa_num_clips)")
    e.add_argument("--vqa-clip-len", type=int, default=32, help="FAST-VQA frames per clip, a multiple of 8 (default: 32)")
    e.add_argument("--tracking-uri", default=None,
                   help="MLflow store of the training run (default: $MLFLOW_TRACKING_URI or $RDTF_HOME/mlflow.db)")
    e.set_defaults(fn=_cmd_evaluate)
