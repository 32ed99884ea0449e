"""Run comparison like the paper's Tables 1–4: every evaluated run of an MLflow experiment side by side.

Evaluation metrics are logged to each training run as ``eval/<task>/<metric>`` (see
:mod:`evaluation.suite`). This module reads them back from the tracking store, builds one table per task
(rows = runs, columns = metrics; best value per column in bold as in the paper), and writes CSV, markdown
and a bar chart. Runs tagged ``weights=random`` (in any metric network or the model) are marked with a
dagger: their numbers check the machinery and are not comparable to the paper's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from evaluation.samples import EvalTask


@dataclass(frozen=True)
class MetricSpec:
    key: str  # metric name after eval/<task>/
    label: str  # column header
    higher_is_better: bool  # direction of "better" for bolding


METRICS = (
    MetricSpec("fvd", "FVD ↓", False),
    MetricSpec("vqa", "VQA ↑", True),
    MetricSpec("clip_matched", "CLIP (matched) ↑", True),
    MetricSpec("clip_top1", "CLIP top-1 ↑", True),
    MetricSpec("psnr", "PSNR ↑", True),
    MetricSpec("ssim", "SSIM ↑", True),
    MetricSpec("loss", "held-out loss ↓", False),
)
RUN_COLUMNS = ("run_id", "run_name", "preset", "curriculum", "variant", "seed", "step", "random_weights")


def metric_key(task: EvalTask | str, metric: str) -> str:
    return f"eval/{EvalTask(task).value}/{metric}"


def collect_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """One row per run of ``experiment`` that has at least one ``eval/`` metric."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    rows = []
    for run in client.search_runs([exp.experiment_id], max_results=10_000):
        metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("eval/")}
        if not metrics:
            continue
        tags, params = run.data.tags, run.data.params
        random_w = any(v == "random" for k, v in tags.items() if k.endswith("weights"))
        rows.append({
            "run_id": run.info.run_id,
            "run_name": tags.get("mlflow.runName", run.info.run_id[:8]),
            "preset": tags.get("preset", params.get("train.preset", "")),
            "curriculum": tags.get("curriculum", ""),
            "variant": tags.get("variant", params.get("variant", "")),
            "seed": params.get("train.seed", ""),
            "step": int(run.data.metrics.get("eval/step", float("nan"))) if "eval/step" in run.data.metrics else None,
            "random_weights": random_w,
            **metrics,
        })
    df = pd.DataFrame(rows)
    return df.sort_values("run_name", kind="stable").reset_index(drop=True) if len(df) else df


def task_table(runs: pd.DataFrame, task: EvalTask | str) -> pd.DataFrame:
    """Rows = runs, columns = the metrics present for ``task`` (labels as in the paper's tables)."""
    task = EvalTask(task)
    cols = {m.label: metric_key(task, m.key) for m in METRICS if metric_key(task, m.key) in runs.columns}
    out = runs[["run_name"]].copy()
    for label, key in cols.items():
        out[label] = runs[key]
    out["run_name"] = [f"{n}†" if r else n for n, r in zip(runs["run_name"], runs["random_weights"])]
    return out.dropna(how="all", subset=list(cols)).reset_index(drop=True)


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.2f}" if abs(v) >= 10 else f"{v:.3f}"


def to_markdown(table: pd.DataFrame, title: str) -> str:
    """Markdown table with the best value of each metric column in bold."""
    specs = {m.label: m for m in METRICS}
    metric_cols = [c for c in table.columns if c in specs]
    best = {}
    for c in metric_cols:
        col = table[c].dropna()
        if len(col) > 1:
            best[c] = col.max() if specs[c].higher_is_better else col.min()
    lines = [f"### {title}", "", "| run | " + " | ".join(metric_cols) + " |",
             "|---|" + "---:|" * len(metric_cols)]
    for _, row in table.iterrows():
        cells = []
        for c in metric_cols:
            s = _fmt(row[c])
            cells.append(f"**{s}**" if c in best and row[c] == best[c] else s)
        lines.append(f"| {row['run_name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(runs: pd.DataFrame, out_dir: str | Path, *, experiment: str) -> dict[str, Path]:
    """comparison.csv (all runs × all eval metrics), comparison.md (one table per task), comparison.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "comparison.csv", "md": out / "comparison.md", "png": out / "comparison.png"}
    tmp = {k: p.with_name(f".{p.name}.tmp") for k, p in paths.items()}
    runs.to_csv(tmp["csv"], index=False)
    parts = [f"# Model comparison — MLflow experiment `{experiment}`", "",
             f"{len(runs)} evaluated run(s). † = random weights somewhere in the model or the metric networks "
             "(numbers check the machinery only; not comparable to the paper).", ""]
    tables = {t: task_table(runs, t) for t in EvalTask} if len(runs) else {}
    for task, table in tables.items():
        if len(table) and len(table.columns) > 1:
            parts += [to_markdown(table, f"Task {task.value}"), ""]
    tmp["md"].write_text("\n".join(parts))
    plotted = [(t, m) for t in EvalTask for m in METRICS if metric_key(t, m.key) in runs.columns]
    plotted = [(t, m) for t, m in plotted if runs[metric_key(t, m.key)].notna().any()][:12]
    ncol = min(4, max(1, len(plotted)))
    nrow = max(1, math.ceil(len(plotted) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.8 * nrow), squeeze=False)
    for ax, (task, m) in zip(axes.flat, plotted):
        vals = runs[metric_key(task, m.key)]
        ax.bar(range(len(runs)), vals.fillna(0), color=["#c44" if r else "#48a" for r in runs["random_weights"]])
        ax.set_xticks(range(len(runs)), runs["run_name"], rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{task.value}: {m.label}", fontsize=9)
    for ax in list(axes.flat)[len(plotted):]:
        ax.axis("off")
    fig.suptitle(f"{experiment} (red = random weights)", fontsize=10)
    fig.tight_layout()
    fig.savefig(tmp["png"], dpi=100, format="png")
    plt.close(fig)
    for k, p in paths.items():
        tmp[k].replace(p)
    return paths
