"""Training curves as a PNG: loss per task and the curriculum's task probabilities over steps (matplotlib).

Written by rank 0 at the end of training next to ``summary.json`` and shown inline on the ``trained_model``
asset (Dagster markdown metadata) — a person would rather look at these than read them.
"""

from __future__ import annotations

import io

TASKS = ("generation", "interpolation", "prediction")
CHART_FILE = "training_curves.png"  # beside summary.json in the training folder; also the MLflow artifact


def training_chart(history: list[dict], curriculum_mode: str) -> bytes | None:
    """``history`` rows ``{"step", "loss", "loss_<task>", "curriculum_p_<task>", …}`` -> PNG bytes (None if empty)."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_l, ax_p) = plt.subplots(1, 2, figsize=(9, 3.2))
    steps = [h["step"] for h in history]
    if any("loss" in h for h in history):
        ax_l.plot(steps, [h.get("loss", float("nan")) for h in history], label="all", color="black", lw=1.2)
    for task in TASKS:
        pts = [(h["step"], h[f"loss_{task}"]) for h in history if f"loss_{task}" in h]
        if pts:
            ax_l.plot(*zip(*pts), label=task, lw=0.8, alpha=0.8)
        pts = [(h["step"], h[f"curriculum_p_{task}"]) for h in history if f"curriculum_p_{task}" in h]
        if pts:
            ax_p.plot(*zip(*pts), label=task)
    ax_l.set(xlabel="step", ylabel="masked ε-MSE", title="loss")
    ax_p.set(xlabel="step", ylabel="probability", title=f"task probabilities ({curriculum_mode})", ylim=(0, 1))
    for ax in (ax_l, ax_p):
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
