"""Screenshots of the Dagster and MLflow UIs for the docs (docs/ui.md), taken on the demo's data.

Run ``bash scripts/dev.sh demo`` first (it fills ``var/``: ``var/dagster_home``, ``var/mlflow.db``, the lake),
then::

    .venv/bin/python scripts/screenshots.py                 # -> docs/screenshots/*.png
    .venv/bin/python scripts/screenshots.py --only mlflow --out /tmp/shots

It starts ``dagster-webserver`` (no daemon: nothing is launched, no sensor ticks) and ``mlflow server`` on
free 127.0.0.1 ports against that data, drives headless Chromium (``/usr/bin/chromium``, from
``scripts/system_deps.sh``) through Playwright, and stops both servers (whole process groups) when done.
Nothing in the Dagster instance or the MLflow store is changed: the launch dialog is opened and cancelled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from tests.ui_servers import (  # noqa: E402  (needs the project root on sys.path)
    CHROMIUM,
    MLFLOW_INIT_SCRIPT,
    browser_page,
    chromium_available,
    dagster_env,
    goto,
    graphql,
    is_png,
    running,
    screenshot,
    start_dagster_webserver,
    start_mlflow_server,
    wait_text,
)

EXPERIMENT = "rdtf-stickers"
IDLE = 8.0  # s of network quiet awaited before a Dagster screenshot (status badges load after the page)
LATEST_TRAIN_RUN = """
{ runsOrError(filter: {pipelineName: "train_job", statuses: [SUCCESS]}, limit: 1) { __typename
    ... on Runs { results { runId status } } } }
"""

PARTITION_KEYS = """
query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode { partitionKeys } } }
"""


def log(msg: str) -> None:
    print(f"[screenshots] {msg}", flush=True)


def _hide_lineage_sidebar(page) -> None:
    page.get_by_placeholder("Jump to").locator("xpath=ancestor::div[.//button][1]//button").first.click()


def dagster_shots(home: Path, out: Path, logs: Path) -> list[Path]:
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or home / "dagster_home")
    if not (dagster_home / "dagster.yaml").is_file():
        raise SystemExit(f"{dagster_home}/dagster.yaml not found: run `bash scripts/dev.sh demo` first")
    web = start_dagster_webserver(dagster_env(dagster_home, home), logs)
    shots = []
    with running(web), browser_page() as page:
        log(f"dagster-webserver at {web.url} (DAGSTER_HOME={dagster_home})")

        # Global asset lineage, every group expanded (Alt+E), explorer sidebar hidden.
        goto(page, web.url + "/asset-groups", wait_for="Global asset lineage")
        _hide_lineage_sidebar(page)
        page.mouse.click(900, 300)
        page.keyboard.press("Alt+e")
        wait_text(page, ["ingested_stickers", "trained_model", "model_comparison"])
        shots.append(screenshot(page, out / "dagster-asset-graph.png", settle=2.0, idle=IDLE))

        # The partitions of the per-drop ingest asset (one per drop), the newest one selected.
        goto(page, web.url + "/assets/ingested_stickers?view=partitions",
             wait_for=["Partitions", "Materialized"])
        keys = graphql(web, PARTITION_KEYS, {"key": {"path": ["ingested_stickers"]}})["assetNodeOrError"]
        if keys.get("partitionKeys"):
            page.get_by_text(keys["partitionKeys"][-1], exact=True).first.click()
            wait_text(page, ["Latest materialization", "n_ingested"])
        shots.append(screenshot(page, out / "dagster-asset-partitions.png", settle=1.0, idle=IDLE))

        # Launching a materialization: the partition dialog (cancelled, nothing is launched).
        goto(page, web.url + "/assets/ingested_stickers", wait_for="Materialize")
        page.get_by_role("button", name="Materialize").first.click()
        dialog = page.locator("[role=dialog]")
        dialog.get_by_text("Launch runs to materialize").wait_for()
        dialog.get_by_role("button", name="All", exact=True).click()
        time.sleep(0.5)
        shots.append(screenshot(page, out / "dagster-launch-materialization.png", settle=0.5, idle=IDLE))
        dialog.get_by_role("button", name="Cancel").click()

        # The latest successful train_job run: step timeline + event log.
        runs = graphql(web, LATEST_TRAIN_RUN)["runsOrError"].get("results") or []
        if runs:
            run_id = runs[0]["runId"]
            goto(page, f"{web.url}/runs/{run_id}", wait_for=["train_job", "RUN_SUCCESS"])
            shots.append(screenshot(page, out / "dagster-run.png", settle=1.0, idle=IDLE))
        else:
            log("no successful train_job run in this instance: skipping dagster-run.png")

        # model_comparison: its latest materialization's metadata (the markdown comparison table).
        goto(page, web.url + "/assets/model_comparison?view=events", wait_for=["Metadata", "table", "FVD"])
        shots.append(screenshot(page, out / "dagster-asset-metadata-comparison.png", settle=1.0, idle=IDLE))

        # Automation tab: sensors and schedules with their on/off switches (looked at, not toggled).
        goto(page, web.url + "/automation", wait_for=["new_drop_sensor"])
        shots.append(screenshot(page, out / "dagster-automation.png", settle=1.0, idle=IDLE))
    return shots


def _mlflow_runs(uri: str):
    """(experiment id, latest evaluated training run, comparison run or None) from the tracking store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        raise SystemExit(f"no MLflow experiment {EXPERIMENT!r} in {uri}: "
                         "run `bash scripts/dev.sh demo` first")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=500)
    comparison = next((r for r in runs if r.data.tags.get("rdtf.kind") == "comparison"), None)
    if comparison is not None and not client.list_artifacts(comparison.info.run_id, "comparison"):
        log(f"comparison run {comparison.info.run_id} has no artifacts under {comparison.info.artifact_uri} "
            "(deleted?): re-run `bash scripts/dev.sh demo`; skipping the comparison artifact screenshots")
        comparison = None
    trained = [r for r in runs if r.data.tags.get("rdtf.kind") != "comparison" and "loss" in r.data.metrics]
    evaluated = [r for r in trained if any(k.startswith("eval/") for k in r.data.metrics)]
    train = (evaluated or trained or [None])[0]
    return exp.experiment_id, train, comparison


# Columns shown in the runs table of the experiment page (what "Columns" in the UI would select).
RUN_TABLE_COLUMNS = ["tags.`curriculum`", "tags.`weights`", "metrics.`loss`", "metrics.`eval/i2v/fvd`",
                     "metrics.`eval/i2v/vqa`", "metrics.`eval/interpolation/psnr`"]


def _runs_table_script(exp_id: str) -> str:
    """Init script preselecting RUN_TABLE_COLUMNS in the MLflow experiment page's stored view state."""
    state = {"searchFilter": "", "orderByKey": "attributes.start_time", "orderByAsc": False,
             "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [],
             "modelVersionFilter": "All Runs", "selectedColumns": RUN_TABLE_COLUMNS}
    key = f'MLflowLocalStorage-1.1-ExperimentPage-["{exp_id}"]-ReactComponentState'
    value = json.dumps(json.dumps(state))
    return f"try {{ localStorage.setItem({json.dumps(key)}, {value}); }} catch (e) {{}}"


def mlflow_shots(home: Path, out: Path, logs: Path, uri: str | None) -> list[Path]:
    uri = uri or f"sqlite:///{home / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise SystemExit(f"{uri} not found: run `bash scripts/dev.sh demo` first")
    exp_id, train, comparison = _mlflow_runs(uri)
    srv = start_mlflow_server(uri, home / "mlartifacts", logs)
    shots = []
    ml = "workflowType=machine_learning"
    with running(srv), browser_page(init_script=MLFLOW_INIT_SCRIPT + _runs_table_script(exp_id)) as page:
        log(f"mlflow server at {srv.url} ({uri})")
        exp = f"{srv.url}/#/experiments/{exp_id}"
        names = [r.info.run_name for r in (train, comparison) if r is not None]

        # Experiment page, classic "Model training" view: the runs table with a few eval/* columns.
        goto(page, f"{exp}/runs?{ml}", idle=0, wait_for=[*names, "eval/i2v/fvd"])
        shots.append(screenshot(page, out / "mlflow-experiment.png", settle=1.5))

        if train is not None:
            run = f"{exp}/runs/{train.info.run_id}"
            # Run overview: eval/* metrics (filtered), params and tags (weights=random etc.).
            goto(page, f"{run}?{ml}", idle=0, wait_for=["Metrics", train.info.run_name])
            page.get_by_placeholder("Search metrics").fill("eval/")
            wait_text(page, "eval/i2v/fvd" if "eval/i2v/fvd" in train.data.metrics else "eval/")
            shots.append(screenshot(page, out / "mlflow-run-metrics.png", settle=1.0))
            # Model metrics tab: the loss curves.
            goto(page, f"{run}/model-metrics?{ml}", idle=0, wait_for="Add chart")
            page.get_by_placeholder("Search metric charts").fill("loss")
            wait_text(page, "loss_prediction" if "loss_prediction" in train.data.metrics else "loss")
            shots.append(screenshot(page, out / "mlflow-run-loss.png", settle=2.0))
        else:
            log("no training run with a loss history: skipping mlflow-run-metrics.png / mlflow-run-loss.png")

        if comparison is not None:
            art = f"{exp}/runs/{comparison.info.run_id}/artifacts/comparison/comparison.md?{ml}"
            goto(page, art, idle=0, wait_for=["comparison.png", "Model comparison"])
            shots.append(screenshot(page, out / "mlflow-comparison.png", settle=1.0))
            page.get_by_text("comparison.png", exact=True).first.click()
            page.wait_for_function("() => [...document.images].some(i => i.complete && i.naturalWidth > 300)",
                                   timeout=60_000)
            shots.append(screenshot(page, out / "mlflow-comparison-chart.png", settle=1.0))
        else:
            log("no comparison run (tag rdtf.kind=comparison): skipping mlflow-comparison*.png")
    return shots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, default=Path(os.environ.get("RDTF_HOME", PROJECT_ROOT / "var")),
                    help="RDTF_HOME of the demo (default: $RDTF_HOME or ./var)")
    ap.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "screenshots")
    ap.add_argument("--mlflow-uri", default=None, help="tracking store (default: sqlite:///HOME/mlflow.db)")
    ap.add_argument("--only", choices=("dagster", "mlflow"), default=None)
    args = ap.parse_args(argv)
    if not chromium_available():
        raise SystemExit(f"Chromium not found at {CHROMIUM}: run `bash scripts/system_deps.sh`")
    home = args.home.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rdtf-screenshots-") as tmp:
        logs = Path(tmp)
        shots = []
        try:
            if args.only in (None, "dagster"):
                shots += dagster_shots(home, args.out, logs)
            if args.only in (None, "mlflow"):
                shots += mlflow_shots(home, args.out, logs, args.mlflow_uri)
        except Exception:
            for f in sorted(logs.glob("*.log")):
                print(f"--- {f.name} (tail)\n{f.read_text(errors='replace')[-3000:]}", file=sys.stderr)
            raise
    bad = [p for p in shots if not is_png(p)]
    for p in shots:
        log(f"wrote {p} ({p.stat().st_size // 1024} KiB)")
    if bad:
        raise SystemExit(f"not valid PNGs: {bad}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
