"""Every metric over an evaluation set (:mod:`evaluation.samples`), per task, plus MLflow logging.

Each ``run_*`` function returns a :class:`MetricReport` whose metric names are ``eval/<task>/<metric>``
(the layout :mod:`evaluation.comparison` reads back). Videos are streamed from the memory-mapped arrays in
batches, so memory does not grow with the number of test stickers. Metric networks are loaded once per
report and shared across tasks; FVD's real-video statistics are computed once and reused for every task.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from data.atomic import atomic_write
from evaluation.samples import EvalSamples, EvalTask


@dataclass
class MetricReport:
    name: str  # fvd | vqa | clip_similarity | reconstruction
    metrics: dict[str, float] = field(default_factory=dict)  # "eval/<task>/<metric>" -> value
    tags: dict[str, str] = field(default_factory=dict)  # weights + protocol options (MLflow tags)
    warnings: list[str] = field(default_factory=list)  # reliability caveats, shown in Dagster metadata
    details: dict = field(default_factory=dict)  # per-task extras (JSON-able)
    seconds: float = 0.0  # wall time of the computation


def _key(task: EvalTask | str, metric: str) -> str:
    return f"eval/{EvalTask(task).value}/{metric}"


def _batches(arr: np.ndarray, batch_size: int, desc: str):
    for i in tqdm(range(0, len(arr), batch_size), desc=desc, leave=False):
        yield np.array(arr[i: i + batch_size])  # (b, F, S, S, 3) uint8: a writable copy out of the memory map


def real_stats_key(real: np.ndarray, cfg) -> str:
    """Cache key of a real set's I3D statistics: the clips' bytes + every option that changes the features."""
    import hashlib

    h = hashlib.sha256()
    h.update(json.dumps({"shape": list(real.shape), "num_frames": cfg.num_frames, "upsample": str(cfg.upsample),
                         "seed": cfg.seed if cfg.weights is None else None, "weights": _file_id(cfg.weights)},
                        sort_keys=True).encode())
    for i in range(0, len(real), 64):
        h.update(np.ascontiguousarray(real[i: i + 64]).tobytes())
    return h.hexdigest()[:20]


def _file_id(path: str | None) -> list | None:
    if path is None:
        return None
    st = Path(path).expanduser().stat()
    return [str(Path(path).expanduser().resolve()), st.st_size, st.st_mtime_ns]


def run_fvd(samples: EvalSamples, cfg, *, cache_dir: str | Path | None = None) -> MetricReport:
    """FVD of each task's generated clips against the test clips (``cfg``: :class:`evaluation.fvd.FVDConfig`).

    ``cache_dir``: keep the test clips' I3D statistics there (``fvd-real-<key>.npz``, key =
    :func:`real_stats_key`), so evaluating the next checkpoint on the same test set runs I3D on its
    generated clips only. The statistics are exact (count, mean, scatter), so a cached FVD equals a fresh one.
    """
    from evaluation.fvd import FVDEvaluator, StreamingStats
    from evaluation.i3d import load_i3d

    t0 = time.perf_counter()
    model, _info = load_i3d(cfg.weights, seed=cfg.seed, device=cfg.device)
    reals, cached = {}, {}  # real-set name ("" = real.npy, the cluster representatives) -> statistics
    for name, arr in {"": samples.real, **samples.extra_real}.items():
        base = FVDEvaluator(cfg, model=model)
        cache = Path(cache_dir) / f"fvd-real-{real_stats_key(arr, cfg)}.npz" if cache_dir is not None else None
        cached[name] = cache is not None and cache.is_file()
        if cached[name]:
            base.real = StreamingStats.load(cache)
        else:
            for b in _batches(arr, cfg.batch_size, f"FVD real {name or 'cluster'}"):
                base.add_real(b)
            if cache is not None:
                base.real.save(cache)
        reals[name] = base.real
    rep = MetricReport("fvd")
    for task, fake in samples.fakes.items():
        ev = FVDEvaluator(cfg, model=model)
        for b in _batches(fake, cfg.batch_size, f"FVD {task.value}"):
            ev.add_fake(b)  # I3D runs once per generated clip, whatever the number of real sets
        for name, stats in reals.items():
            ev.real = copy.deepcopy(stats)  # the test clips' statistics, shared by every task
            res = ev.result()
            rep.metrics[_key(task, f"fvd_{name}" if name else "fvd")] = res.fvd
            rep.tags.update(res.tags)
            rep.warnings += [f"{task.value}: {w}" for w in res.warnings if w not in rep.warnings]
            rep.details.setdefault(task.value, {})[f"fvd_{name}" if name else "fvd"] = res.fvd
            rep.details[task.value] |= {f"n_real_{name}" if name else "n_real": res.n_real, "n_fake": res.n_fake}
    rep.details["real_stats"] = "cached" if cached[""] else "computed"
    rep.warnings = list(dict.fromkeys(rep.warnings))
    rep.seconds = time.perf_counter() - t0
    return rep


def run_vqa(samples: EvalSamples, cfg, *, include_real: bool = True) -> MetricReport:
    """FAST-VQA score per task (``cfg``: :class:`evaluation.vqa.VQAConfig`); the test clips as a reference.

    Each task's known-frame positions (Table 7 masks, pasted back into its outputs) go to the evaluator, so
    ``cfg.frames="generated"`` scores the generated frames only; the test clips are always scored whole.
    ``details[<task>]["scored_frames"]`` records which frame positions were scored.
    """
    from evaluation.vqa import VQAEvaluator, load_fastvqa, scored_frames

    t0 = time.perf_counter()
    model, _info = load_fastvqa(cfg.weights, seed=cfg.seed, device=cfg.device)
    rep = MetricReport("vqa")
    sets = dict(samples.fakes) | ({"real": samples.real} if include_real else {})
    F = int(samples.real.shape[1])
    for name, arr in sets.items():
        known = None if name == "real" else samples.known_positions(EvalTask(name))
        ev = VQAEvaluator(cfg, model=model, known_positions=known)
        for b in _batches(arr, max(1, cfg.batch_size), f"VQA {name}"):
            ev.add(b)
        res = ev.result()
        if name == "real":
            rep.metrics["eval/real/vqa"] = res.mean_score
        else:
            rep.metrics[_key(name, "vqa")] = res.mean_score
            rep.metrics[_key(name, "vqa_raw")] = res.mean_raw
        rep.tags.update(res.tags)
        rep.details[str(name)] = {"vqa": res.mean_score, "raw": res.mean_raw, "n": res.n,
                                  "scored_frames": scored_frames(F, known, cfg)}
    rep.seconds = time.perf_counter() - t0
    return rep


def run_clip_similarity(samples: EvalSamples, cfg) -> MetricReport:
    """CLIP similarity per task, both protocols (``cfg``: :class:`evaluation.clip_similarity.ClipSimConfig`)."""
    from evaluation.clip_similarity import ClipSimilarityEvaluator

    t0 = time.perf_counter()
    ev = ClipSimilarityEvaluator(cfg)
    captions = samples.captions
    rep = MetricReport("clip_similarity")
    bs = 16
    for task, fake in samples.fakes.items():
        ev.reset()
        for i, b in enumerate(_batches(fake, bs, f"CLIP {task.value}")):
            ev.add(b, captions[i * bs: i * bs + len(b)])
        res = ev.result()
        rep.metrics[_key(task, "clip_matched")] = res.matched_cosine
        rep.metrics[_key(task, "clipscore")] = res.clipscore
        rep.metrics[_key(task, "clip_top1")] = res.retrieval_top1
        rep.metrics[_key(task, "clip_recall5")] = res.retrieval_recall5
        rep.metrics[_key(task, "clip_mean_rank")] = res.retrieval_mean_rank
        rep.metrics[_key(task, "clip_prob")] = res.retrieval_prob
        rep.tags.update({f"clip_{k}": v for k, v in res.tags.items()})  # prefixed: the run holds other weights tags
        rep.details[task.value] = {"n": res.n, "n_captions": res.n_captions}
    rep.seconds = time.perf_counter() - t0
    return rep


def run_reconstruction(samples: EvalSamples) -> MetricReport:
    """PSNR/SSIM on the generated frames of the tasks that have ground truth (interpolation, prediction)."""
    from evaluation.reconstruction import ReconstructionEvaluator, generated_frame_mask

    t0 = time.perf_counter()
    rep = MetricReport("reconstruction")
    F = int(samples.manifest["num_frames"])
    for task, fake in samples.fakes.items():
        if not task.has_ground_truth:
            continue
        ev = ReconstructionEvaluator()
        mask = generated_frame_mask(F, samples.known_positions(task))
        for i in tqdm(range(0, len(fake), 16), desc=f"PSNR/SSIM {task.value}", leave=False):
            ev.add(np.array(fake[i: i + 16]), np.array(samples.real[i: i + 16]), mask)
        res = ev.result()
        rep.metrics[_key(task, "psnr")] = res.psnr
        rep.metrics[_key(task, "ssim")] = res.ssim
        rep.tags.update({f"recon_{k}": v for k, v in res.tags.items()})
        rep.details[task.value] = {"n_videos": res.n_videos, "n_frames": res.n_frames}
    if not rep.metrics:
        rep.warnings.append("no task with ground truth (interpolation, prediction) in the evaluation set")
    rep.seconds = time.perf_counter() - t0
    return rep


def save_report(report: MetricReport, path: str | Path) -> None:
    atomic_write(path, json.dumps(asdict(report), indent=2, default=str))


def log_report(report: MetricReport, tracking_uri: str, run_id: str, *, step: int = 0) -> None:
    """Metrics, tags and the JSON report onto an existing MLflow run (the training's), in one batch."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    ts = int(time.time() * 1000)
    metrics = [Metric(k, float(v), ts, int(step)) for k, v in report.metrics.items()]
    metrics.append(Metric("eval/step", float(step), ts, int(step)))
    tags = [RunTag(k, str(v)[:5000]) for k, v in report.tags.items()]
    client.log_batch(run_id, metrics=metrics, tags=tags)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        save_report(report, Path(d) / f"{report.name}.json")
        client.log_artifact(run_id, str(Path(d) / f"{report.name}.json"), artifact_path="evaluation")


def log_comparison(tracking_uri: str, experiment: str, paths: dict[str, Path], *,
                   artifact_location: str | None = None) -> str:
    """Attach the comparison report to ONE long-lived run of the experiment (tag ``rdtf.kind=comparison``).

    ``artifact_location``: the experiment's artifact store if this call creates it.
    """
    from mlflow.tracking import MlflowClient

    from training.tracking_backend import ensure_experiment

    client = MlflowClient(tracking_uri=tracking_uri)
    exp_id = ensure_experiment(client, experiment, artifact_location)
    found = client.search_runs([exp_id], filter_string="tags.`rdtf.kind` = 'comparison'", max_results=1)
    if found:
        run_id = found[0].info.run_id
    else:
        run_id = client.create_run(exp_id, run_name="model-comparison", tags={"rdtf.kind": "comparison"}).info.run_id
        client.set_terminated(run_id)
    for p in paths.values():
        client.log_artifact(run_id, str(p), artifact_path="comparison")
    return run_id
