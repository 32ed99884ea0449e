"""The paper's Fig. 7: training-loss curves with and without the curriculum, from the runs' MLflow history.

Fig. 7 (Experiments, "Ablation") plots the training loss of RDTF without curriculum learning, with the
linear curriculum (LCL) and with the difficulty-adaptive one (DCL). Here: for each ablation variant, the
``loss`` metric every run logged (``training.trainer``: the masked ε-MSE of the step, averaged over ranks) read back
with ``MlflowClient.get_metric_history``, smoothed by an EMA (``smoothing``) and averaged over seeds on the
common steps, with the per-seed range as a band. The same runs side by side in the MLflow UI: *Experiments →
<ablation experiment> → select the runs → Compare → loss*.

Caveat (also in the report): the curriculum changes which tasks a step trains, so the curves are losses on
different task mixes — a lower curve is not by itself a better model (the held-out loss on fixed tasks,
``evaluation.heldout``, is the like-for-like number). The paper's figure has the same property.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ablation.variants import Variant

__all__ = ["FIG7_VARIANTS", "collect_loss_curves", "loss_curve_lines", "plot_loss_curves", "smooth"]

FIG7_VARIANTS = (Variant.STI_DDU, Variant.STI_DDU_LCL, Variant.STI_DDU_DCL)  # w/o CL, LCL, DCL (all with DDU)


def smooth(values: np.ndarray, factor: float) -> np.ndarray:
    """Bias-corrected EMA (as TensorBoard/MLflow smoothing): factor 0 = raw, 0.9 = strong."""
    if not 0.0 <= factor < 1.0:
        raise ValueError(f"smoothing factor must be in [0, 1), got {factor!r}")
    out, acc, w = np.empty(len(values)), 0.0, 0.0
    for i, v in enumerate(np.asarray(values, float)):
        acc, w = factor * acc + (1 - factor) * v, factor * w + (1 - factor)
        out[i] = acc / w
    return out


def collect_loss_curves(tracking_uri: str, runs: pd.DataFrame, metric: str = "loss") -> dict[str, list[pd.Series]]:
    """{variant: [per-seed Series step -> value]} from the MLflow metric history of each run in ``runs``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    out: dict[str, list[pd.Series]] = {}
    for row in runs.to_dict("records"):
        hist = client.get_metric_history(row["run_id"], metric)
        if not hist:
            continue
        s = pd.Series({m.step: m.value for m in hist}).sort_index()  # a resumed run may re-log a step: last wins
        out.setdefault(str(row["variant"]), []).append(s)
    return out


def _mean_band(series: list[pd.Series], factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    steps = sorted(set.intersection(*(set(s.index) for s in series)))
    mat = np.stack([smooth(s.loc[steps].to_numpy(float), factor) for s in series])  # (seeds, steps)
    return np.asarray(steps), mat.mean(0), mat.min(0), mat.max(0)


def plot_loss_curves(curves: dict[str, list[pd.Series]], path: str | Path, *, smoothing: float = 0.8,
                     variants=FIG7_VARIANTS, title: str = "Fig. 7: training loss with and without curriculum") -> Path:
    """PNG of the smoothed mean loss per variant (band: min..max over seeds); variants without runs are skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    shown = 0
    for v in variants:
        series = [s for s in curves.get(Variant(v).value, []) if len(s)]
        if not series:
            continue
        steps, mean, lo, hi = _mean_band(series, smoothing)
        if not len(steps):
            continue
        line, = ax.plot(steps, mean, label=f"{Variant(v).label} (n={len(series)})")
        if len(series) > 1:
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
        shown += 1
    if not shown:
        ax.text(0.5, 0.5, "no run of these variants", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"training loss (EMA {smoothing:g})")
    ax.set_title(title, fontsize=9)
    if shown:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path


def loss_curve_lines(curves: dict[str, list[pd.Series]], image: str, *, smoothing: float = 0.8,
                     variants=FIG7_VARIANTS) -> list[str]:
    """Markdown section: the figure, the last smoothed value per variant, and the caveat."""
    lines = ["## Training loss with and without curriculum (paper Fig. 7)", "", f"![loss curves]({image})", "",
             "| variant | seeds | loss at the end (smoothed, mean over seeds) | min .. max |", "|---|---:|---:|---:|"]
    for v in variants:
        series = [s for s in curves.get(Variant(v).value, []) if len(s)]
        if not series:
            lines.append(f"| `{Variant(v).value}` {Variant(v).label} | 0 | – | – |")
            continue
        _, mean, lo, hi = _mean_band(series, smoothing)
        lines.append(f"| `{Variant(v).value}` {Variant(v).label} | {len(series)} | {mean[-1]:.4f} | "
                     f"{lo[-1]:.4f} .. {hi[-1]:.4f} |")
    lines += ["", "The curriculum changes which tasks each step trains, so these are losses on different task mixes: "
              "a lower curve is not by itself a better model (the held-out loss on fixed tasks above is the "
              "like-for-like number). In the MLflow UI: select the runs → *Compare* → `loss`."]
    return lines
