"""The README's main job end to end, on the loopback S3 server, as a user sees it in the UIs.

``python -m pipelines.demo --s3`` runs here as the README's command does (a smaller drop, a short training and
small evaluation settings; drops and lake on ``s3://``): it starts the Dagster daemon on this test's instance,
``new_drop_sensor`` ticks as a sensor and requests ``drop_data_job``, ``train_job`` is launched through the
workspace. Every output it prints must be on the object store, nothing under the local default lake.

Beside it run the Dagster webserver (same instance) and an MLflow server (the demo's tracking store: the URL the
asset previews point at via ``RDTF_MLFLOW_UI``), driven by headless Chromium: the demo's runs on the Jobs / Runs
/ Overview pages and the sensor's own tick, the training's progress in the run log *while it trains*, previews
and charts inline on the asset pages. Without Chromium the browser half is skipped, the demo half still runs.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ui_servers import (
    PROJECT_ROOT,
    body_text,
    browser_page,
    chromium_available,
    dagster_env,
    free_port,
    goto,
    graphql,
    is_png,
    screenshot,
    start_dagster_webserver,
    start_mlflow_server,
    stop_servers,
    wait_code_location,
    wait_http,
)

pytestmark = pytest.mark.slow

TRAIN_STEPS = 60
RUNS_QUERY = """
query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) { __typename
    ... on Runs { results { runId status pipelineName } } } }
"""
SENSOR_TICKS_QUERY = """
query($sel: SensorSelector!) { sensorOrError(sensorSelector: $sel) { __typename
    ... on Sensor { sensorState { status ticks(limit: 20) { status runIds } } } } }
"""


def _runs(web, job: str) -> list[dict]:
    data = graphql(web, RUNS_QUERY, {"tags": [{"key": "rdtf/source", "value": "demo"}]})["runsOrError"]
    by_sensor = graphql(web, RUNS_QUERY, {"tags": [{"key": "dagster/sensor_name", "value": "new_drop_sensor"}]})
    runs = data["results"] + by_sensor["runsOrError"]["results"]
    return [r for r in runs if r["pipelineName"] == job]


def _step_ended(run_id: str, step: str) -> bool:
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.get() as instance:
        recs = instance.get_records_for_run(run_id, of_type={DagsterEventType.STEP_SUCCESS,
                                                             DagsterEventType.STEP_FAILURE}).records
    return any(r.event_log_entry.step_key == step for r in recs)


def _wait_regex(page, pattern: str, timeout: float = 60.0) -> None:
    try:
        page.wait_for_function("p => new RegExp(p).test(document.body.innerText)", arg=pattern,
                               timeout=timeout * 1000, polling=250)
    except Exception as e:
        raise AssertionError(f"/{pattern}/ not shown at {page.url}; page text:\n{body_text(page)[:3000]}") from e


def _inline_images(page, min_count: int) -> list[dict]:
    """The asset page's metadata images served by the MLflow UI, once at least ``min_count`` have loaded."""
    page.wait_for_function(
        "n => [...document.images].filter(i => i.src.includes('/get-artifact?') && i.complete && i.naturalWidth > 0)"
        ".length >= n", arg=min_count, timeout=60_000)
    return page.evaluate("() => [...document.images].filter(i => i.src.includes('/get-artifact?'))"
                         ".map(i => ({src: i.src, w: i.naturalWidth, h: i.naturalHeight}))")


def _check_demo_output(out: str, home: Path) -> None:
    """What the S3 demo prints: outputs on s3://, checkpoints, comparison, every check passed."""
    assert "[s3] loopback S3 API server http://127.0.0.1:" in out
    for line in ("ingested stickers", "CLIP embeddings", "frame clusters", "WebDataset shards", "sample gallery"):
        (hit,) = [ln for ln in out.splitlines() if ln.strip().startswith(line)]
        assert "-> s3://rdtf/lake/" in hit, hit
    assert re.search(rf"checkpoint s3://rdtf/lake/training/demo-s0/checkpoints/step-{TRAIN_STEPS:06d}", out), out[-3000:]
    assert re.search(r"comparison\s+: 1 run\(s\) -> s3://rdtf/lake/evaluation/comparison/", out), out[-3000:]
    checks = re.findall(r"check (\S+): (passed|FAILED)", out)
    assert len(checks) >= 5 and all(ok == "passed" for _, ok in checks), checks
    assert re.search(r"the sensor added partition demo-s0-n40 and requested run [0-9a-f-]{36}", out), out[-3000:]
    assert re.search(rf"trained_model: step {TRAIN_STEPS}/{TRAIN_STEPS} \(100%\)", out)  # console: live lines
    assert "sampling t2v (task 1/4)" in out and "sampling gallery sticker 1/1" in out
    assert not (home / "lake").exists()  # nothing fell back to the local default lake


def test_demo_on_s3_end_to_end_live_training_and_inline_previews_in_the_ui(tmp_path):
    home, dhome = Path(os.environ["RDTF_HOME"]), Path(os.environ["DAGSTER_HOME"])
    logs, shots, scratch = tmp_path / "logs", tmp_path / "screenshots", tmp_path / "scratch"
    for d in (logs, scratch):
        d.mkdir()
    ml_port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RDTF_", "MLFLOW_"))}
    env = dagster_env(dhome, home, base) | {
        "RDTF_SCRATCH": str(scratch), "RDTF_MLFLOW_UI": f"http://127.0.0.1:{ml_port}", "RDTF_PROGRESS_INTERVAL_S": "2",
        "PYTHONPATH": str(PROJECT_ROOT)}
    browser = chromium_available() and importlib.util.find_spec("playwright") is not None
    web = mlflow = demo = None
    demo_log = open(logs / "demo.log", "w")  # noqa: SIM115 - closed in the finally below
    try:
        web = start_dagster_webserver(env, logs)
        demo = subprocess.Popen(
            [sys.executable, "-m", "pipelines.demo", "--s3", "--n", "40", "--train-steps", str(TRAIN_STEPS),
             "--eval-videos", "2", "--sample-steps", "2", "--gallery-stickers", "1"],
            cwd=PROJECT_ROOT, env=env, stdout=demo_log, stderr=subprocess.STDOUT, start_new_session=True)
        if browser:
            _check_live_training(web, demo, logs / "demo.log", shots)
        assert demo.wait(timeout=900) == 0, (logs / "demo.log").read_text()[-6000:]
        _check_demo_output((logs / "demo.log").read_text(), home)
        (data_run,) = _runs(web, "drop_data_job")
        (train_run,) = _runs(web, "train_job")
        assert data_run["status"] == train_run["status"] == "SUCCESS", (data_run, train_run)
        location, repository = wait_code_location(web)
        sel = {"repositoryLocationName": location, "repositoryName": repository, "sensorName": "new_drop_sensor"}
        sensor = graphql(web, SENSOR_TICKS_QUERY, {"sel": sel})["sensorOrError"]
        assert sensor["__typename"] == "Sensor", sensor
        assert any(data_run["runId"] in t["runIds"] for t in sensor["sensorState"]["ticks"]), sensor  # a real tick
        if not browser:
            pytest.skip("the demo passed; the browser half needs Chromium (bash scripts/system_deps.sh)")
        mlflow = start_mlflow_server(f"sqlite:///{home / 'mlflow.db'}", tmp_path / "mlartifacts", logs, port=ml_port,
                                     env=env, wait=False)
        wait_http(mlflow, "/health", timeout=120)
        _check_pages(web, data_run["runId"], train_run["runId"], shots)
    finally:
        if demo is not None and demo.poll() is None:
            os.killpg(demo.pid, 9)
            demo.wait()
        demo_log.close()
        stop_servers(web, mlflow)


def _check_live_training(web, demo, demo_log: Path, shots: Path) -> None:
    """The training's progress lines reach the run log while trained_model is still running."""
    with browser_page() as page:
        deadline = time.monotonic() + 420
        while not (train := [r for r in _runs(web, "train_job") if r["status"] == "STARTED"]):
            assert demo.poll() is None and time.monotonic() < deadline, demo_log.read_text()[-4000:]
            time.sleep(1)
        run_id = train[0]["runId"]
        goto(page, f"{web.url}/runs/{run_id}", wait_for="trained_model", timeout=120)
        _wait_regex(page, rf"step \d+/{TRAIN_STEPS} \(", timeout=240)
        shown = [int(k) for k in re.findall(rf"step (\d+)/{TRAIN_STEPS} \(", body_text(page))]
        assert not _step_ended(run_id, "trained_model"), "the progress appeared only after training ended"
        assert shown and min(shown) < TRAIN_STEPS, shown
        assert re.search(r"\d+\.\d samples/s \| ETA", body_text(page)) and "p(gen)" in body_text(page)
        screenshot(page, shots / "dagster-run-live-training.png")


def _check_pages(web, data_run: str, train_run: str, shots: Path) -> None:
    """Jobs / Runs / Overview list the demo's runs; previews and charts render inline (no "Show Markdown")."""
    with browser_page() as page:
        goto(page, f"{web.url}/jobs", wait_for=["drop_data_job", "train_job"])
        for job in ("drop_data_job", "train_job"):  # each with its latest run ("… ago"), not "No runs"
            _wait_regex(page, rf"{job}\n[^\n]*ago")
        screenshot(page, shots / "dagster-jobs.png")
        goto(page, f"{web.url}/runs", wait_for=[data_run[:8], train_run[:8], "new_drop_sensor"])
        screenshot(page, shots / "dagster-runs.png")
        goto(page, f"{web.url}/overview/activity/timeline", wait_for=["drop_data_job", "train_job"])
        screenshot(page, shots / "dagster-timeline.png")

        goto(page, f"{web.url}/assets/sample_gallery", wait_for=["preview", "generate_text", "interpolate"])
        imgs = _inline_images(page, 4)
        assert {re.search(r"path=gallery%2F00-(\w+)\.png", i["src"]).group(1) for i in imgs} == {
            "generate_text", "generate_image", "interpolate", "predict_forward"}, imgs
        page.locator("img[src*='get-artifact']").first.scroll_into_view_if_needed()
        screenshot(page, shots / "dagster-gallery-inline.png", settle=1.0)
        goto(page, f"{web.url}/assets/trained_model", wait_for=["training_curves", "mlflow_run"])
        (chart,) = _inline_images(page, 1)
        assert "path=training_curves.png" in chart["src"] and chart["w"] > 300, chart
        page.locator("img[src*='get-artifact']").first.scroll_into_view_if_needed()
        screenshot(page, shots / "dagster-training-curves.png", settle=1.0)
        goto(page, f"{web.url}/assets/model_comparison", wait_for=["chart", "table"])
        (chart,) = _inline_images(page, 1)
        assert "comparison%2Fcomparison.png" in chart["src"], chart
        assert "Show Markdown" not in body_text(page)
    for name in ("dagster-run-live-training", "dagster-jobs", "dagster-runs", "dagster-timeline",
                 "dagster-gallery-inline", "dagster-training-curves"):
        assert is_png(shots / f"{name}.png"), name
