"""Reproducible ablation benchmark: the paper's Tables 3 and 4 in miniature, with seeds and spread.

    .venv/bin/python -m benchmarks.ablation                 # full: 5 variants x 3 seeds (docs/ablation.md)
    .venv/bin/python -m benchmarks.ablation --quick         # CI: 2 variants x 1 seed, a few steps (machinery only)
    bash scripts/dev.sh bench ablation [--quick] [--threads 1] [--out DIR]

What runs, the settings and the report are described in ``ablation/runner.py`` and ``docs/ablation.md``;
the same runs fan out as Dagster partitions through ``ablation_job`` (``assets/ablation.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ablation.runner import full_settings, quick_settings, run_ablation
from ablation.summary import write_summary
from ablation.variants import Variant
from data.redact import redact_uri

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI mode: 2 variants x 1 seed, a few steps (machinery only)")
    ap.add_argument("--out", default=None, help="output folder (default $RDTF_HOME/ablation or ./var/ablation)")
    ap.add_argument("--mlflow-uri", default=None, help="tracking URI (default $MLFLOW_TRACKING_URI or sqlite in --out)")
    ap.add_argument("--experiment", default=None, help="MLflow experiment (default rdtf-ablation[-quick])")
    ap.add_argument("--variants", nargs="+", default=None, help=f"subset of {[v.value for v in Variant]}")
    ap.add_argument("--seeds", nargs="+", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="override the training steps (all variants)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0 = torch default)")
    ap.add_argument("--docs", default=None, help="write ablation.md + ablation/*.png here (full mode default: docs/)")
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="only rebuild the report from MLflow (no training)")
    ap.add_argument("--fvd-weights", default=None, help="local I3D weights for FVD (default: random init, and the "
                    "report then gives directions only, no verdict)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    kw = {k: v for k, v in {"experiment": args.experiment, "variants": tuple(args.variants) if args.variants else None,
                            "seeds": tuple(args.seeds) if args.seeds else None, "steps": args.steps,
                            "fvd_weights": args.fvd_weights}.items() if v is not None}
    settings = quick_settings(**kw) if args.quick else full_settings(**kw)
    home = Path(os.environ.get("RDTF_HOME", ROOT / "var"))
    out = Path(args.out) if args.out else home / "ablation"
    docs = None if args.no_docs else (args.docs or (None if args.quick else str(ROOT / "docs")))
    uri = args.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if args.report_only:
        out = out.resolve()
        wall_path = out / "report" / settings.ablation_id / "wall.json"
        wall = json.loads(wall_path.read_text()) if wall_path.is_file() else None
        paths = write_summary(settings, out, uri or f"sqlite:///{out / 'mlflow.db'}", docs_dir=docs, wall=wall)
        print(f"report rebuilt: {paths['md']}" + (f" (and {docs}/ablation.md)" if docs else ""))
        return 0
    res = run_ablation(settings, out, uri, docs_dir=docs, threads=args.threads)
    print(f"ablation {settings.ablation_id} ({settings.mode}): {len(res['runs'])} run(s) in "
          f"{res['wall']['total_seconds'] / 60:.1f} min")
    print(f"  report : {res['report']['md']}" + (f" (and {docs}/ablation.md)" if docs else ""))
    print(f"  MLflow : {redact_uri(res['tracking_uri'])} experiment {settings.experiment}")
    budget = 60.0 if settings.mode == "full" else None
    if budget:  # each run's cost as measured when it was made (a re-invocation reuses finished runs)
        cost = sum(r["timing"]["ablation/train_seconds"] + r["timing"]["ablation/eval_seconds"] for r in res["runs"]) / 60
        print(f"  budget : {cost:.1f} min of training + evaluation for all runs vs {budget:.0f} min -> ratio "
              f"{cost / budget:.2f} (must be <= 1 on the 2-core CPU)")
    print_cost_table(res["runs"])
    return 0


def print_cost_table(runs: list[dict], baseline: str = "dfgn_sti") -> None:
    """Mean training / evaluation seconds per variant and the ratio to the baseline variant (equal steps)."""
    by: dict[str, list[dict]] = {}
    for r in runs:
        by.setdefault(r["variant"], []).append(r["timing"])
    if not by:
        return

    def mean(v: str, key: str) -> float:
        return sum(t[key] for t in by[v]) / len(by[v])

    base = mean(baseline, "ablation/train_seconds") if baseline in by else None
    print(f"  {'variant':<13} {'runs':>4} {'train s':>8} {'eval s':>7}  train time vs {baseline}")
    for v in (x.value for x in Variant):
        if v in by:
            tr = mean(v, "ablation/train_seconds")
            ratio = f"{tr / base:.2f}" if base else "-"
            print(f"  {v:<13} {len(by[v]):>4} {tr:>8.0f} {mean(v, 'ablation/eval_seconds'):>7.0f}  {ratio}")


if __name__ == "__main__":
    sys.exit(main())
