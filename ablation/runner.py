"""Ablation engine: the paper's Tables 3 and 4 in miniature, with seeds and spread (no Dagster here).

Used by ``benchmarks/ablation.py`` (the CLI: sequential, ``--quick`` for CI) and by the Dagster assets of
``assets/ablation.py`` (one partition per variant x seed).

1. A fixed synthetic benchmark: ``data.synthetic.make_drop`` (seed ``drop_seed``, ``drop_n`` stickers, small
   canvases) through the pipeline's own data stages (``data.stages.run_data_stages``: ingest at
   ``frame_size`` px, random-init tiny CLIP embeddings, k = 3..8 frame clusters, leak-free train/test split,
   shards). Built once into ``OUT/data/<benchmark id>/`` and reused by every later run.
2. For every variant (``ablation.variants.Variant``) and seed: ``python -m training`` (one rank, no torchrun
   needed) on the *train* shards with the shared settings plus the variant's three switches
   (``ablation.variants.variant_overrides``), logged to ONE MLflow experiment; the run gets the param and tag
   ``variant`` and the tags ``rdtf.kind = ablation-run``, ``ablation.id`` (hash of the settings), ``ablation.mode``.
3. Evaluation of each run with the evaluation package (EMA weights, fixed seeds, the same test stickers for every
   run): ``evaluation.samples.generate_eval_samples`` for I&T->V, interpolation and prediction, then FVD (random
   I3D: weights=random), CLIP similarity (random tiny CLIP), PSNR/SSIM and the held-out denoising loss per task
   (``evaluation.heldout``), all logged onto the run (``evaluation.suite.log_report``).
4. The report (``ablation.report``): mean ± std per variant and metric, plots, and the paper's
   orderings judged by a fixed rule, written to ``OUT/report/<id>/`` (+ ``docs/ablation.md`` and
   ``docs/ablation/*.png`` for the full mode) and logged as artifacts of a summary MLflow run
   (tag ``rdtf.kind = ablation-summary``).

Every stage is idempotent: a re-run with the same settings resumes finished trainings (``--resume latest``),
skips evaluation sets whose checkpoint is unchanged and only rebuilds the report. Runs happen sequentially:
the 2-core CPU has no room for two at once (``benchmarks/train.py``). The Dagster job over ``assets/ablation.py``
fans the same ``run_one`` out over a (variant x seed) partition set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ablation.variants import Variant, parse_variants, variant_overrides
from data.atomic import atomic_write
from data.lake import Lake

ROOT = Path(__file__).resolve().parent.parent  # repository root: PYTHONPATH and cwd of the training subprocess

log = logging.getLogger("rdtf.ablation")

__all__ = ["AblationSettings", "full_settings", "prepare_benchmark", "quick_settings", "run_ablation", "run_one",
           "train_config"]

EVAL_TASKS = ("i2v", "interpolation", "prediction")
# FVD reference sets besides the k = 8 cluster representatives: the equal-interval clips the no-DDU variants train on
REAL_SETS = ("uniform",)


@dataclass(frozen=True)
class AblationSettings:
    """Everything that defines an ablation; identical for every variant except ``variant_overrides``."""

    mode: str = "full"  # full | quick (quick checks the machinery only)
    variants: tuple[str, ...] = tuple(v.value for v in Variant)
    seeds: tuple[int, ...] = (0, 1, 2)
    # fixed synthetic benchmark
    drop_seed: int = 0  # data.synthetic.make_drop seed
    drop_n: int = 200  # stickers in the drop
    canvas: tuple[int, int] = (48, 96)  # synthetic canvas side range (px)
    max_frames: int = 40  # longest synthetic sticker
    frame_size: int = 32  # ingest size = tiny_pixel resolution
    test_fraction: float = 0.15  # held-out test split (SplitConfig.max_test_fraction)
    # training (same steps, same data, same hyper-parameters for every variant)
    preset: str = "tiny_pixel"
    steps: int = 180
    batch_size: int = 2
    lr: float = 1e-3
    warmup_steps: int = 20
    ema_decay: float = 0.98  # short runs: 0.999 would leave the EMA (used for sampling) ~85 % initial weights
    train_extra: dict = field(default_factory=dict)  # further TrainConfig fields, same for all variants
    # evaluation (same test stickers, seeds and sampler for every run)
    eval_videos: int = 10  # first test stickers in index order (12 put 15 runs at ~57 min: over budget with noise)
    ddim_steps: int = 5
    eval_eta: float = 0.0  # deterministic DDIM: with this few steps, η = 1 (paper, 25-50 steps) mostly re-injects noise
    eval_batch: int = 8
    heldout_timesteps: tuple[int, ...] = (125, 375, 625, 875)
    fvd_weights: str | None = None  # local I3D weights (evaluation.i3d); None = random init: the report gives no verdict
    experiment: str = "rdtf-ablation"

    def __post_init__(self) -> None:
        if self.mode not in ("full", "quick"):
            raise ValueError(f"mode must be full or quick, got {self.mode!r}")
        parse_variants(self.variants)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds}")

    @property
    def ablation_id(self) -> str:
        """Hash of everything that affects results (the experiment name and mode label excluded)."""
        d = asdict(self)
        for k in ("experiment", "variants", "seeds", "mode"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]

    @property
    def benchmark_id(self) -> str:
        return f"ablation-s{self.drop_seed}-n{self.drop_n}-px{self.frame_size}"


def full_settings(**kw) -> AblationSettings:
    return AblationSettings(**kw)


def quick_settings(**kw) -> AblationSettings:
    """CI: 2 variants x 1 seed of the micro model, 4 steps, 2 test stickers, 2 DDIM steps: checks the machinery only."""
    base = dict(mode="quick", preset="micro_pixel", variants=(Variant.DFGN_STI.value, Variant.STI_DDU_DCL.value), seeds=(0,), drop_n=40,
                test_fraction=0.2, steps=4, warmup_steps=2, eval_videos=2, ddim_steps=2, eval_batch=2,
                heldout_timesteps=(500,), experiment="rdtf-ablation-quick")
    return AblationSettings(**(base | kw))


# ------------------------------------------------------------------------------------------ data


def prepare_benchmark(settings: AblationSettings, out_dir: str | Path) -> Path:
    """The fixed synthetic benchmark's shard index.json (built once; concurrent callers are safe)."""
    from data.embed import EmbedSettings
    from data.ingest import IngestSettings
    from data.splits import SplitConfig
    from data.stages import run_data_stages
    from data.synthetic import SyntheticConfig, make_drop

    bid = settings.benchmark_id
    spec = {"drop_seed": settings.drop_seed, "drop_n": settings.drop_n, "canvas": list(settings.canvas),
            "max_frames": settings.max_frames, "frame_size": settings.frame_size, "test_fraction": settings.test_fraction}
    final = Path(out_dir) / "data" / f"{bid}-{hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:6]}"
    if (final / "benchmark.json").is_file():
        return Lake(final / "lake").shards(bid) / "index.json"
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:6]}")
    t0 = time.perf_counter()
    make_drop(str(tmp / "drops" / bid), n=settings.drop_n, seed=settings.drop_seed, progress=False,
              cfg=SyntheticConfig(min_size=settings.canvas[0], max_size=settings.canvas[1], max_frames=settings.max_frames))
    run_data_stages(str(tmp / "drops" / bid), tmp / "lake", bid, ingest=IngestSettings(size=settings.frame_size, workers=1),
                    embed=EmbedSettings(num_workers=0),
                    split=SplitConfig(max_test_fraction=settings.test_fraction, n_semantic_clusters=8),
                    max_count=64, max_bytes=64 << 20)
    from data.shards import read_index

    doc = read_index(Lake(tmp / "lake").shards(bid) / "index.json")
    (tmp / "benchmark.json").write_text(json.dumps({**spec, "benchmark_id": bid, "counts": doc.get("counts"),
                                                    "seconds": round(time.perf_counter() - t0, 1)}, indent=2))
    try:
        os.rename(tmp, final)
    except OSError:  # another process finished first: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    index = Lake(final / "lake").shards(bid) / "index.json"
    if not index.is_file():
        raise RuntimeError(f"benchmark data at {final} is incomplete (no {index})")
    return index


def benchmark_dir(index: Path) -> Path:
    """The benchmark data folder (``data/<id>-<hash>``) that holds ``index`` somewhere below its ``lake/``."""
    for parent in Path(index).parents:
        if (parent / "benchmark.json").is_file():
            return parent
    raise FileNotFoundError(f"{index} is not inside a prepared ablation benchmark (no benchmark.json above it)")


def benchmark_info(index: Path) -> dict:
    return json.loads((benchmark_dir(index) / "benchmark.json").read_text())


# ------------------------------------------------------------------------------------------ one run


def run_name(variant: Variant | str, seed: int) -> str:
    return f"{Variant(variant).value}-s{seed}"


def train_config(settings: AblationSettings, index: Path, out_dir: Path, variant: Variant | str, seed: int,
                 tracking_uri: str) -> dict:
    """The TrainConfig (as JSON) of one run: shared settings | the variant's switches."""
    from training.trainer import TrainConfig

    name = run_name(variant, seed)
    cfg = {"index_paths": [str(index)], "out_dir": str(out_dir), "preset": settings.preset, "autoencoder": "pixel",
           "steps": settings.steps, "batch_size": settings.batch_size, "lr": settings.lr,
           "warmup_steps": settings.warmup_steps, "ema_decay": settings.ema_decay, "seed": int(seed),
           "ckpt_every": settings.steps, "log_every": max(1, min(10, settings.steps)), "num_workers": 0,
           "mlflow_uri": tracking_uri, "mlflow_experiment": settings.experiment, "run_name": name,
           **settings.train_extra, **variant_overrides(variant)}
    TrainConfig(**cfg)  # validate field names now, not in the subprocess
    return cfg


def _train(cfg: dict, run_dir: Path, threads: int) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "train.json"
    path.write_text(json.dumps(cfg, indent=2))
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "training", "--config", str(path), "--resume", "latest"]
    with open(run_dir / "train.log", "a") as logf:
        p = subprocess.run(cmd, env=env, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        tail = (run_dir / "train.log").read_text()[-3000:]
        raise RuntimeError(f"training {run_dir.name} failed (exit {p.returncode}); log {run_dir / 'train.log'}:\n{tail}")
    summary = json.loads((run_dir / "summary.json").read_text())
    if not summary.get("mlflow_run_id"):
        raise RuntimeError(f"training {run_dir.name} has no MLflow run id (tracking store unreachable?): {summary}")
    return summary


def _evaluate(settings: AblationSettings, index: Path, run_dir: Path, summary: dict, tracking_uri: str) -> dict:
    """Sample + every metric; logs onto the run; returns {metric: value} and per-part seconds."""
    import torch

    from data.sharding import iter_test_samples
    from evaluation.clip_similarity import ClipSimConfig
    from evaluation.fvd import FVDConfig
    from evaluation.heldout import HeldoutConfig, run_heldout_loss
    from evaluation.samples import (
        EvalSamplesConfig,
        checkpoint_fingerprint,
        generate_eval_samples,
        load_eval_samples,
    )
    from evaluation.suite import log_report, run_clip_similarity, run_fvd, run_reconstruction, save_report
    from model.diffusion import DiffusionConfig
    from model.pipeline import RDTFPipeline

    ckpt = Path(summary["checkpoint"])
    eval_dir = run_dir / "eval"
    done = eval_dir / "metrics.json"
    fp = checkpoint_fingerprint(ckpt)
    opts = {"eval_videos": settings.eval_videos, "ddim_steps": settings.ddim_steps, "eval_eta": settings.eval_eta,
            "eval_batch": settings.eval_batch, "real_sets": ["cluster", *REAL_SETS], "fvd_weights": settings.fvd_weights,
            "heldout_timesteps": list(settings.heldout_timesteps)}
    run_id, step = summary["mlflow_run_id"], int(summary["step"])
    if done.is_file():
        old = json.loads(done.read_text())
        if old.get("fingerprint") == fp and old.get("options") == opts:
            reports = [_load_report(eval_dir / "reports" / f"{n}.json") for n in old["reports"]]
            for rep in reports:  # re-log (idempotent): the MLflow store may be new
                log_report(rep, tracking_uri, run_id, step=step)
            return old
    seconds = {}
    t0 = time.perf_counter()
    pipe = RDTFPipeline.from_pretrained(ckpt, device="cpu")
    manifest = generate_eval_samples(
        pipe, iter_test_samples([str(index)]), EvalSamplesConfig(tasks=EVAL_TASKS, n_videos=settings.eval_videos,
                                                     steps=settings.ddim_steps, eta=settings.eval_eta, seed=0,
                                                     batch_size=settings.eval_batch, extra_real_sets=REAL_SETS),
        eval_dir / "samples", checkpoint=ckpt, extra={"run_name": run_dir.name, "mlflow_run_id": run_id, "step": step})
    seconds["sampling"] = time.perf_counter() - t0
    samples = load_eval_samples(eval_dir / "samples")
    train_cfg = json.loads((ckpt / "trainer.json").read_text()).get("train_config", {})
    reports = []
    for name, fn in (
        ("fvd", lambda: run_fvd(samples, FVDConfig(batch_size=8, seed=0, device="cpu", weights=settings.fvd_weights),
                                cache_dir=benchmark_dir(index) / "fvd_cache")),
        ("clip_similarity", lambda: run_clip_similarity(samples, ClipSimConfig(device="cpu", seed=0))),
        ("reconstruction", lambda: run_reconstruction(samples)),
        ("heldout_loss", lambda: run_heldout_loss(
            pipe, iter_test_samples([str(index)]), HeldoutConfig(tasks=EVAL_TASKS, n_videos=settings.eval_videos,
                                                     timesteps=settings.heldout_timesteps, seed=0,
                                                     batch_size=settings.eval_batch),
            diffusion=DiffusionConfig(**train_cfg.get("diffusion", {})))),
    ):
        t1 = time.perf_counter()
        with torch.no_grad():
            rep = fn()
        seconds[name] = time.perf_counter() - t1
        save_report(rep, eval_dir / "reports" / f"{rep.name}.json")
        log_report(rep, tracking_uri, run_id, step=step)
        reports.append(rep)
    metrics = {k: float(v) for rep in reports for k, v in rep.metrics.items()}
    out = {"fingerprint": fp, "options": opts, "reports": [r.name for r in reports], "metrics": metrics,
           "seconds": seconds, "n_videos": manifest["n_videos"]}
    atomic_write(done, json.dumps(out, indent=2))
    return out


def _load_report(path: Path):
    from evaluation.suite import MetricReport

    return MetricReport(**json.loads(path.read_text()))


def run_one(settings: AblationSettings, out_dir: str | Path, variant: Variant | str, seed: int, tracking_uri: str, *,
            threads: int = 0) -> dict:
    """Train (or resume) and evaluate one variant x seed; returns metrics, MLflow run id and timings."""
    from mlflow.tracking import MlflowClient

    from training.tracking_backend import ensure_experiment

    variant = Variant(variant)
    out_dir = Path(out_dir).resolve()  # absolute paths in configs, checkpoints and MLflow tags
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    index = prepare_benchmark(settings, out_dir)
    ensure_experiment(tracking_uri, settings.experiment, str(out_dir / "mlartifacts"))
    run_dir = out_dir / "runs" / settings.ablation_id / run_name(variant, seed)
    cfg = train_config(settings, index, run_dir, variant, seed, tracking_uri)
    t0 = time.perf_counter()
    summary = _train(cfg, run_dir, threads)
    train_s = time.perf_counter() - t0
    client = MlflowClient(tracking_uri=tracking_uri)
    run_id = summary["mlflow_run_id"]
    client.log_param(run_id, "variant", variant.value)
    for k, v in {"variant": variant.value, "rdtf.kind": "ablation-run", "ablation.id": settings.ablation_id,
                 "ablation.mode": settings.mode, "ablation.benchmark": settings.benchmark_id}.items():
        client.set_tag(run_id, k, v)
    t1 = time.perf_counter()
    ev = _evaluate(settings, index, run_dir, summary, tracking_uri)
    eval_s = time.perf_counter() - t1
    timing = {"ablation/train_seconds": train_s, "ablation/eval_seconds": eval_s,
              **{f"ablation/eval_{k}_seconds": v for k, v in ev["seconds"].items()}}
    if (run_dir / "timing.json").is_file():  # a re-run that resumed a finished training: keep the real cost
        timing = json.loads((run_dir / "timing.json").read_text())
    else:
        (run_dir / "timing.json").write_text(json.dumps(timing, indent=2))
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), ts, 0) for k, v in timing.items()])
    log.info("%s: train %.0f s, eval %.0f s, i2v FVD %.2f", run_dir.name, train_s, eval_s,
             ev["metrics"].get("eval/i2v/fvd", float("nan")))
    return {"variant": variant.value, "seed": seed, "run_id": run_id, "run_dir": str(run_dir), "metrics": ev["metrics"],
            "timing": timing, "final_loss": summary.get("final_loss")}


# ------------------------------------------------------------------------------------------ driver


def run_ablation(settings: AblationSettings, out_dir: str | Path, tracking_uri: str | None = None, *,
                 docs_dir: str | Path | None = None, threads: int = 0) -> dict:
    """Every variant x seed, sequentially, then the report. Returns {"runs", "report", "wall"}."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or f"sqlite:///{(out_dir / 'mlflow.db').resolve()}"
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    prepare_benchmark(settings, out_dir)
    data_s = time.perf_counter() - t0
    results = []
    for seed in settings.seeds:  # seed-major: a partial run still has every variant for the first seeds
        for v in parse_variants(settings.variants):
            results.append(run_one(settings, out_dir, v, seed, uri, threads=threads))
    t1 = time.perf_counter()
    wall = {"data_seconds": data_s, "threads": threads, "load_before": load_before}
    from ablation.summary import write_summary  # imports this module's settings and data helpers

    paths = write_summary(settings, out_dir, uri, docs_dir=docs_dir, wall=wall | {"total_seconds": t1 - t0,
                                                                                 "load_after": os.getloadavg()[0]})
    wall |= {"report_seconds": time.perf_counter() - t1, "total_seconds": time.perf_counter() - t0,
             "load_after": os.getloadavg()[0]}
    (out_dir / "report" / settings.ablation_id / "wall.json").write_text(json.dumps(wall, indent=2))
    return {"runs": results, "report": paths, "wall": wall, "tracking_uri": uri}
