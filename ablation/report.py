"""Ablation report: mean ± spread per variant and metric, the paper's orderings checked by a fixed rule, plots.

Input: one row per (variant, seed) run with ``eval/<task>/<metric>`` columns (read back from MLflow by
:func:`collect_ablation_runs`). Output: ``ablation.md`` (settings, results tables, orderings verdicts), one bar
chart per task (``ablation_<task>.png``: mean as bar, ± sample std as error bar, every seed as a dot) and CSVs.

Decision rule for an ordering claim "A better than B" on a metric (fixed before any result was seen, never
tuned): with n_A, n_B seeds, means m and sample standard deviations s (ddof = 1),

    d = (m_A - m_B) oriented so that d > 0 means A is better,   SE = sqrt(s_A² / n_A + s_B² / n_B),   z = d / SE

* ``reproduced``                 z >= 2  (A better by more than two standard errors of the difference)
* ``not reproduced (reversed)``  z <= -2 (B better by more than two standard errors: contradicts the paper)
* ``inconclusive``               otherwise, or fewer than 2 seeds on either side (no spread to judge by)

(z = 2 is roughly a two-sided 10 % Welch test at 3 + 3 seeds; seeds are shared across variants, but the
rule treats the groups as unpaired, which is conservative.)

Evidence gate (:class:`Evidence`): a verdict about the *paper* needs metric networks with their published
weights (I3D for FVD; FAST-VQA for VQA) and an evaluation set "in the hundreds" (``MIN_VIDEOS_FOR_VERDICT``;
the paper uses 500). Below that — random-weight metric networks, or 10 test videos — the same rule only tells
whether the measured difference points the paper's way: the words become ``same direction`` / ``opposite
direction`` / ``inconclusive`` and the report says that the run tests the machinery. No "reproduced" verdict is
ever printed for such a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ablation.variants import PAPER_ROWS, Variant, variant_overrides

Z_THRESHOLD = 2.0  # see module docstring
MIN_VIDEOS_FOR_VERDICT = 200  # evaluation videos per run below which no verdict about the paper is given


@dataclass(frozen=True)
class Evidence:
    """What the numbers can support (module docstring, "Evidence gate")."""

    metric_weights: str  # "pretrained" when FVD's I3D (and VQA's FAST-VQA, if computed) had published weights, else "random"
    n_videos: int  # evaluation videos per run

    @property
    def conclusive(self) -> bool:
        return self.metric_weights == "pretrained" and self.n_videos >= MIN_VIDEOS_FOR_VERDICT

    def why_not(self) -> str:
        parts = []
        if self.metric_weights != "pretrained":
            parts.append("the metric networks (I3D, CLIP) have random weights")
        if self.n_videos < MIN_VIDEOS_FOR_VERDICT:
            parts.append(f"{self.n_videos} evaluation videos per run (a verdict needs >= {MIN_VIDEOS_FOR_VERDICT}; "
                         "the paper uses 500)")
        return " and ".join(parts)


MACHINERY = Evidence("random", 0)  # the default: nothing here is evidence about the paper
# verdict words when the evidence gate is closed
WEAK_WORDS = {"reproduced": "same direction", "not reproduced (reversed)": "opposite direction"}


@dataclass(frozen=True)
class AblationMetric:
    task: str  # evaluation task (EvalTask value)
    key: str  # metric name after eval/<task>/
    label: str
    higher_is_better: bool

    @property
    def column(self) -> str:
        return f"eval/{self.task}/{self.key}"


METRICS = (
    AblationMetric("i2v", "fvd", "FVD ↓", False),
    AblationMetric("i2v", "fvd_uniform", "FVD (uniform real) ↓", False),
    AblationMetric("i2v", "clip_matched", "CLIP ↑", True),
    AblationMetric("i2v", "clip_top1", "CLIP top-1 ↑", True),
    AblationMetric("i2v", "loss", "held-out loss ↓", False),
    AblationMetric("interpolation", "fvd", "FVD ↓", False),
    AblationMetric("interpolation", "psnr", "PSNR ↑", True),
    AblationMetric("interpolation", "ssim", "SSIM ↑", True),
    AblationMetric("interpolation", "clip_matched", "CLIP ↑", True),
    AblationMetric("interpolation", "loss", "held-out loss ↓", False),
    AblationMetric("prediction", "fvd", "FVD ↓", False),
    AblationMetric("prediction", "psnr", "PSNR ↑", True),
    AblationMetric("prediction", "ssim", "SSIM ↑", True),
    AblationMetric("prediction", "clip_matched", "CLIP ↑", True),
    AblationMetric("prediction", "loss", "held-out loss ↓", False),
)
PRIMARY = METRICS[0]  # the paper's Tables 3/4 metric that we compute: I&T->V FVD (VQA is not computed here)
TASK_TITLES = {"i2v": "I&T→V (Tables 3/4: frame 0 + caption)", "interpolation": "Interpolation [1 0 1 0 1 0 1 0]",
               "prediction": "Prediction [1 1 1 1 1 0 0 0]"}


@dataclass(frozen=True)
class Claim:
    id: str
    better: Variant
    worse: Variant
    text: str


CLAIMS = (
    Claim("T3-STI", Variant.DFGN_STI, Variant.DFGN_3DCONV, "Table 3: the STI layer beats 3D convolutions (DFGN vs DFGN(3D-Conv))"),
    Claim("T3-DDU", Variant.STI_DDU, Variant.DFGN_STI, "Table 3: adding DDU improves DFGN (DFGN w/ DDU vs DFGN)"),
    Claim("T3-DCL", Variant.STI_DDU_DCL, Variant.STI_DDU, "Table 3: adding DCL on top of DDU improves it (w/ DDU & DCL vs w/ DDU)"),
    Claim("T4-LCL", Variant.STI_DDU_LCL, Variant.STI_DDU, "Table 4: LCL beats no curriculum (RDTF w/ LCL vs w/o CL)"),
    Claim("T4-DCL", Variant.STI_DDU_DCL, Variant.STI_DDU_LCL, "Table 4: DCL beats LCL (RDTF w/ DCL vs w/ LCL)"),
    Claim("CHAIN-DFGN", Variant.STI_DDU_DCL, Variant.DFGN_STI,
          "Table 3 end to end: the full method (DDU & DCL) beats DFGN without DDU"),
    Claim("CHAIN-3D", Variant.STI_DDU_DCL, Variant.DFGN_3DCONV,
          "Table 3 end to end: the full method beats DFGN(3D-Conv), the first row"),
)


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    metric: AblationMetric
    diff: float  # m_better - m_worse oriented so > 0 agrees with the paper
    se: float
    z: float
    n_better: int
    n_worse: int
    verdict: str  # reproduced | not reproduced (reversed) | inconclusive | not evaluated (| same/opposite direction)


def collect_ablation_runs(tracking_uri: str, experiment: str, ablation_id: str | None = None) -> pd.DataFrame:
    """One row per ablation training run (tag ``rdtf.kind = ablation-run``) with params, tags and eval metrics.

    Several runs for the same (variant, seed) — a re-run from scratch — keep the latest one.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return pd.DataFrame(columns=["run_id", "variant", "seed"])
    filt = "tags.`rdtf.kind` = 'ablation-run'" + (f" and tags.`ablation.id` = '{ablation_id}'" if ablation_id else "")
    rows = []
    for run in client.search_runs([exp.experiment_id], filter_string=filt, max_results=10_000,
                                  order_by=["attributes.start_time ASC"]):
        p, m = run.data.params, run.data.metrics
        rows.append({"run_id": run.info.run_id, "variant": p.get("variant", run.data.tags.get("variant", "")),
                     "seed": int(p.get("train.seed", -1)), "start_time": run.info.start_time,
                     **{k: v for k, v in m.items() if k.startswith(("eval/", "ablation/"))},
                     **{f"param:{k}": v for k, v in p.items()}})
    df = pd.DataFrame(rows)
    if not len(df):
        return pd.DataFrame(columns=["run_id", "variant", "seed"])
    return df.drop_duplicates(["variant", "seed"], keep="last").reset_index(drop=True)


def summarize(runs: pd.DataFrame, metrics=METRICS) -> pd.DataFrame:
    """Rows (variant, metric column) with mean, std (ddof 1; NaN for one seed), n and the per-seed values."""
    rows = []
    for v in Variant:
        sub = runs[runs["variant"] == v.value] if len(runs) else runs
        for m in metrics:
            vals = sub[m.column].dropna().to_numpy(float) if m.column in sub else np.array([])
            rows.append({"variant": v.value, "metric": m.column, "n": len(vals),
                         "mean": float(vals.mean()) if len(vals) else math.nan,
                         "std": float(vals.std(ddof=1)) if len(vals) > 1 else math.nan,
                         "values": [float(x) for x in vals]})
    return pd.DataFrame(rows)


def judge(summary: pd.DataFrame, claim: Claim, metric: AblationMetric, evidence: Evidence = MACHINERY) -> Verdict:
    """Apply the module's decision rule to one claim on one metric (verdict words per the evidence gate)."""
    def stats(v: Variant) -> tuple[float, float, int]:
        row = summary[(summary["variant"] == v.value) & (summary["metric"] == metric.column)]
        if not len(row):
            return math.nan, math.nan, 0
        r = row.iloc[0]
        return r["mean"], r["std"], int(r["n"])

    mb, sb, nb = stats(claim.better)
    mw, sw, nw = stats(claim.worse)
    if nb == 0 or nw == 0:
        return Verdict(claim, metric, math.nan, math.nan, math.nan, nb, nw, "not evaluated")
    diff = (mb - mw) if metric.higher_is_better else (mw - mb)
    if nb < 2 or nw < 2:
        return Verdict(claim, metric, diff, math.nan, math.nan, nb, nw, "inconclusive")
    se = math.sqrt(sb**2 / nb + sw**2 / nw)
    z = diff / se if se > 0 else (math.copysign(math.inf, diff) if diff else 0.0)
    verdict = "reproduced" if z >= Z_THRESHOLD else "not reproduced (reversed)" if z <= -Z_THRESHOLD else "inconclusive"
    if not evidence.conclusive:
        verdict = WEAK_WORDS.get(verdict, verdict)
    return Verdict(claim, metric, diff, se, z, nb, nw, verdict)


def all_verdicts(summary: pd.DataFrame, metrics=METRICS, evidence: Evidence = MACHINERY) -> list[Verdict]:
    return [judge(summary, c, m, evidence) for c in CLAIMS for m in metrics]


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.2f}" if abs(x) >= 10 else f"{x:.{digits}f}"


def _cell(summary: pd.DataFrame, v: Variant, m: AblationMetric) -> str:
    row = summary[(summary["variant"] == v.value) & (summary["metric"] == m.column)]
    if not len(row) or row.iloc[0]["n"] == 0:
        return "–"
    r = row.iloc[0]
    return f"{_fmt(r['mean'])} ± {_fmt(r['std'])}" if r["n"] > 1 else _fmt(r["mean"])


_SYMBOL = {"reproduced": "✓", "not reproduced (reversed)": "✗", "same direction": "↑", "opposite direction": "↓",
           "inconclusive": "~", "not evaluated": "·"}


def plain_statement(verdicts: list[Verdict], evidence: Evidence = MACHINERY) -> list[str]:
    """One sentence per claim on the primary metric (I&T->V FVD)."""
    if not evidence.conclusive:
        return _machinery_statement(verdicts, evidence)
    how = {"reproduced": "**reproduced**", "not reproduced (reversed)": "**not reproduced — the opposite ordering "
           "was measured**", "inconclusive": "**inconclusive**"}
    lines = _claim_lines(verdicts, how)
    primary = [v for v in verdicts if v.metric == PRIMARY and v.verdict != "not evaluated"]
    if primary:
        n = {k: sum(1 for v in primary if v.verdict == k) for k in ("reproduced", "not reproduced (reversed)",
                                                                   "inconclusive")}
        lines += ["", f"**In short:** of the paper's {len(primary)} orderings on the primary metric, "
                  f"{n['reproduced']} reproduced ({', '.join(v.claim.id for v in primary if v.verdict == 'reproduced') or '–'}), "
                  f"{n['not reproduced (reversed)']} measured the other way round "
                  f"({', '.join(v.claim.id for v in primary if v.verdict.startswith('not')) or '–'}) and "
                  f"{n['inconclusive']} inconclusive at this scale."]
    rev = [v for v in verdicts if v.metric != PRIMARY and v.verdict.startswith("not")]
    if rev:
        lines.append("On secondary metrics the measurements **contradict** the paper's ordering for: " + "; ".join(
            f"{v.claim.id} on {v.metric.task} {v.metric.label} (z = {_fmt(v.z, 1)})" for v in rev) + ".")
    return lines


def _claim_lines(verdicts: list[Verdict], words: dict[str, str]) -> list[str]:
    """One line per claim on the primary metric; ``words`` maps a verdict to how it is printed (default: as is)."""
    lines = []
    for v in verdicts:
        if v.metric != PRIMARY:
            continue
        if v.verdict == "not evaluated":
            lines.append(f"- **{v.claim.id}** ({v.claim.text}): not evaluated (a variant is missing in this mode).")
            continue
        z = f"z = {_fmt(v.z, 2)}" if not math.isnan(v.z) else f"no spread with n = {min(v.n_better, v.n_worse)} seed(s)"
        lines.append(f"- **{v.claim.id}** ({v.claim.text}): {words.get(v.verdict, v.verdict)} "
                     f"(Δ = {_fmt(v.diff)} in the paper's direction, {z}).")
    return lines


def _machinery_statement(verdicts: list[Verdict], evidence: Evidence) -> list[str]:
    """The primary-metric sentences when the evidence gate is closed: directions only, no verdict."""
    lines = [f"**This run tests the machinery; it is not evidence for or against the paper:** {evidence.why_not()}. "
             "The rule below only says whether each measured difference points the paper's way by more than two "
             "standard errors.", "", *_claim_lines(verdicts, {})]
    same_real = [v for v in verdicts if v.metric.key == "fvd_uniform" and v.metric.task == PRIMARY.task
                 and v.verdict not in ("not evaluated",)]
    if same_real:
        flips = [v.claim.id for v in same_real
                 if next(p for p in verdicts if p.claim == v.claim and p.metric == PRIMARY).verdict != v.verdict]
        lines += ["", "Against the equal-interval real set (what the no-DDU variants trained on) the directions "
                  + (f"change for {', '.join(flips)}" if flips else "are the same") + "."]
    return lines


def _plot(summary: pd.DataFrame, task: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if m.task == task]
    variants = [v for v in Variant if summary[(summary["variant"] == v.value)]["n"].sum() > 0]
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.9 * len(metrics), 3.2), squeeze=False)
    colors = ["#999", "#48a", "#6a5", "#d93", "#c44"]
    for ax, m in zip(axes.flat, metrics):
        for i, v in enumerate(variants):
            r = summary[(summary["variant"] == v.value) & (summary["metric"] == m.column)].iloc[0]
            if r["n"] == 0:
                continue
            ax.bar(i, r["mean"], color=colors[list(Variant).index(v)], alpha=0.8,
                   yerr=r["std"] if r["n"] > 1 else None, capsize=3)
            ax.plot([i] * len(r["values"]), r["values"], "k.", ms=4)
        ax.set_xticks(range(len(variants)), [v.label for v in variants], rotation=40, ha="right", fontsize=7)
        ax.set_title(m.label, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        vals = [x for v in variants for x in summary[(summary["variant"] == v.value) & (summary["metric"] == m.column)].iloc[0]["values"]]
        if vals and m.key in ("fvd", "loss", "psnr"):  # zoom on the range that holds the differences
            lo, hi = min(vals), max(vals)
            pad = (hi - lo) * 0.6 or abs(hi) * 0.05 or 1.0
            ax.set_ylim(max(0.0, lo - pad), hi + pad)
    fig.suptitle(f"{title} — bars: mean ± std over seeds, dots: seeds (FVD/PSNR/loss axes zoomed, not from 0)",
                 fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    tmp.replace(path)


def write_ablation_report(runs: pd.DataFrame, out_dir: str | Path, *, title: str, settings_md: list[str],
                          timing_md: list[str], notes_md: list[str] | None = None,
                          image_prefix: str = "", evidence: Evidence = MACHINERY,
                          extra_sections: list[str] | None = None) -> dict[str, Path]:
    """ablation.md + ablation_<task>.png + runs.csv + summary.csv + verdicts.csv in ``out_dir``.

    ``image_prefix``: how the markdown links the PNGs (e.g. "ablation/" when the PNGs sit in docs/ablation/).
    ``evidence``: what the numbers can support (module docstring); ``extra_sections``: markdown appended
    before the notes (e.g. the Fig. 7 loss curves).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    verdicts = all_verdicts(summary, evidence=evidence)
    present = [v for v in Variant if len(runs) and (runs["variant"] == v.value).any()]
    paths: dict[str, Path] = {}
    for task in TASK_TITLES:
        p = out / f"ablation_{task}.png"
        _plot(summary, task, p, TASK_TITLES[task])
        paths[f"png_{task}"] = p
    seeds = sorted(set(runs["seed"])) if len(runs) else []
    lines = [f"# {title}", "", f"Variants present: {', '.join(f'`{v.value}`' for v in present) or 'none'}; "
             f"seeds: {', '.join(str(s) for s in seeds) or 'none'}; {len(runs)} run(s).", ""]
    lines += ["## Variants", "", "| variant | paper row | temporal layer | DDU (dual mask) | frame extraction | curriculum |",
              "|---|---|---|---|---|---|"]
    for v in Variant:
        o = variant_overrides(v)
        lines.append(f"| `{v.value}` | {PAPER_ROWS[v]['row']} | {o['temporal_layer']} | "
                     f"{'on' if o['dual_mask'] else 'off'} | {o['frame_extraction']} | {o['curriculum']['mode']} |")
    lines += ["", "## Settings", "", *settings_md, "", "## Measured time", "", *timing_md, ""]
    words = ("z ≥ {t} reproduced, z ≤ −{t} not reproduced (reversed)" if evidence.conclusive else
             "z ≥ {t} same direction as the paper, z ≤ −{t} opposite direction (no verdict: see above)").format(t=f"{Z_THRESHOLD:g}")
    lines += ["## Paper orderings (Tables 3 and 4) at this scale", "",
              f"Primary metric: **{TASK_TITLES['i2v']} FVD** against the k = 8 cluster representatives (the paper's "
              "Tables 3/4 report FVD and VQA on I&T→V; VQA is not computed in this benchmark). Rule (fixed in advance, "
              f"`ablation/report.py`): z = Δ / SE with SE = √(s²_A/n_A + s²_B/n_B); {words}, otherwise "
              "(or < 2 seeds) inconclusive.", "",
              *plain_statement(verdicts, evidence), ""]
    legend = ("✓ reproduced, ✗ reversed" if evidence.conclusive else "↑ same direction as the paper, ↓ opposite")
    lines += [f"The same claims on every metric ({legend}, ~ inconclusive, · not evaluated; the number is z):", "",
              "| task | metric | " + " | ".join(f"{c.id}: {c.better.label} > {c.worse.label}" for c in CLAIMS) + " |",
              "|---|---|" + ":---:|" * len(CLAIMS)]
    for m in METRICS:
        cells = []
        for c in CLAIMS:
            v = next(x for x in verdicts if x.claim == c and x.metric == m)
            cells.append(_SYMBOL[v.verdict] + ("" if math.isnan(v.z) else f" {_fmt(v.z, 1)}"))
        lines.append(f"| {m.task} | {m.label} | " + " | ".join(cells) + " |")
    counts = {k: sum(1 for v in verdicts if v.verdict == k) for k in _SYMBOL}
    lines += ["", "Over all claims × metrics: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n) + ".", ""]
    lines += ["## Results (mean ± sample std over seeds)", ""]
    for task, ttitle in TASK_TITLES.items():
        ms = [m for m in METRICS if m.task == task]
        lines += [f"### {ttitle}", "", f"![{task}]({image_prefix}ablation_{task}.png)", "",
                  "| variant | n | " + " | ".join(m.label for m in ms) + (" | paper FVD / VQA |" if task == "i2v" else " |"),
                  "|---|---:|" + "---:|" * len(ms) + ("---:|" if task == "i2v" else "")]
        for v in Variant:
            n = int(summary[(summary["variant"] == v.value) & (summary["metric"] == ms[0].column)]["n"].iloc[0])
            paper = f" | {PAPER_ROWS[v]['fvd']} / {PAPER_ROWS[v]['vqa']}" if task == "i2v" else ""
            lines.append(f"| `{v.value}` {v.label} | {n} | " + " | ".join(_cell(summary, v, m) for m in ms) + paper + " |")
        lines.append("")
    if extra_sections:
        lines += [*extra_sections, ""]
    if notes_md:
        lines += ["## Notes", "", *notes_md, ""]
    md = out / "ablation.md"
    tmp = md.with_name(".ablation.md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(md)
    paths["md"] = md
    for name, df in (("runs", runs), ("summary", summary), ("verdicts", _verdict_frame(verdicts))):
        p = out / f"{name}.csv"
        df.to_csv(p, index=False)
        paths[name] = p
    return paths


def _verdict_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    return pd.DataFrame([{"claim": v.claim.id, "better": v.claim.better.value, "worse": v.claim.worse.value,
                          "metric": v.metric.column, "diff": v.diff, "se": v.se, "z": v.z, "n_better": v.n_better,
                          "n_worse": v.n_worse, "verdict": v.verdict} for v in verdicts])
