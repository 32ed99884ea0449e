"""Real UI checks in headless Chromium: the Dagster webserver + daemon and the MLflow tracking server.

Both UI tests start the real servers on free 127.0.0.1 ports (tests/ui_servers.py), drive them with
Playwright (system Chromium, never a downloaded browser) and save screenshots under pytest's tmp_path; they
skip, naming scripts/system_deps.sh, where Chromium is missing. The last test checks the teardown helper.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from data.lake import Lake
from tests.ui_servers import (
    CHROMIUM,
    MLFLOW_INIT_SCRIPT,
    PROJECT_ROOT,
    VIEWPORT,
    body_text,
    browser_page,
    chromium_available,
    dagster_env,
    descendants,
    goto,
    graphql,
    is_png,
    screenshot,
    start,
    start_dagster_daemon,
    start_dagster_webserver,
    start_mlflow_server,
    stop_servers,
    wait_http,
    wait_run,
    wait_text,
)

pytestmark = pytest.mark.slow  # end to end (subprocesses, servers): skipped by the fast loop

needs_browser = pytest.mark.skipif(
    not chromium_available() or importlib.util.find_spec("playwright") is None,
    reason=f"needs Chromium at {CHROMIUM} and the playwright package: run `bash scripts/system_deps.sh` "
           "(installs the Debian chromium package) to enable the browser UI tests",
)

DROP = "ui-drop"
ASSET = "ingested_stickers"
AUTOMATION_SENSOR = "rdtf_automation_sensor"
RETRAIN_SCHEDULE = "retrain_schedule"

INVENTORY_QUERY = """
{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name location { name }
    assetNodes { assetKey { path } isPartitioned
                 assetChecksOrError { __typename ... on AssetChecks { checks { name } } } } } } } }
"""
AUTOMATIONS_QUERY = """
{ repositoriesOrError { ... on RepositoryConnection { nodes {
    sensors { name sensorState { status } } schedules { name scheduleState { status } } } } } }
"""
RUNS_QUERY = """
query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) { __typename
    ... on Runs { results { runId status pipelineName } } } }
"""
PARTITION_STATS_QUERY = """
query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { __typename
    ... on AssetNode { partitionStats { numMaterialized numPartitions } } } }
"""


def _shown(name: str, text: str) -> bool:
    """``name`` appears in ``text`` as a whole token (so ``fvd`` is not satisfied by ``fvd_weights``)."""
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text) is not None


def _inventory(web) -> tuple[list[str], dict[str, list[str]]]:
    """Every asset key (``a/b``) of the workspace and the names of each asset's checks, from GraphQL."""
    data = graphql(web, INVENTORY_QUERY)["repositoriesOrError"]
    assert data["__typename"] == "RepositoryConnection", data
    assets, checks = [], {}
    for repo in data["nodes"]:
        for node in repo["assetNodes"]:
            key = "/".join(node["assetKey"]["path"])
            assets.append(key)
            found = node["assetChecksOrError"]
            if found.get("__typename") == "AssetChecks" and found["checks"]:
                checks[key] = sorted(c["name"] for c in found["checks"])
    return sorted(assets), checks


def _automation_status(web, name: str) -> str:
    """RUNNING / STOPPED of a sensor or schedule, as recorded in the instance."""
    for repo in graphql(web, AUTOMATIONS_QUERY)["repositoriesOrError"]["nodes"]:
        for s in repo["sensors"]:
            if s["name"] == name:
                return s["sensorState"]["status"]
        for s in repo["schedules"]:
            if s["name"] == name:
                return s["scheduleState"]["status"]
    raise AssertionError(f"no sensor or schedule named {name} in the repository")


def _flip_switch(page, web, name: str, *, to: bool) -> None:
    """Automation tab: flip the row's on/off switch as a user would, until the instance records the wanted
    state *and* the page shows it.

    Robust against the UI's re-renders (the row is located afresh on every poll, never through a stale
    element handle), a click that lands while the row re-renders (clicked again, at most 3 times) and a page
    that does not refresh its switch (reloaded).
    """
    want = "RUNNING" if to else "STOPPED"
    xpath = "xpath=ancestor::*[.//label[contains(@class,'formatSwitch')]][1]//label[contains(@class,'formatSwitch')]"

    def row_switch():
        # the row can be between two renders (text found, switch not yet / no longer attached): query again
        until = time.monotonic() + 30
        while True:
            sw = page.get_by_text(name, exact=True).first.locator(xpath)
            n = sw.count()
            if n == 1:
                return sw
            assert time.monotonic() < until, f"expected one on/off switch next to {name}, found {n}"
            time.sleep(0.25)

    deadline, clicks, last_change = time.monotonic() + 90, 0, time.monotonic()
    while True:
        status, shown = _automation_status(web, name), row_switch().locator("input").is_checked()
        if status == want and shown is to:
            return
        assert time.monotonic() < deadline, f"{name}: instance {status}, switch checked={shown}; wanted {want}"
        if status != want and shown is not to and clicks < 3 and time.monotonic() - last_change > 1:
            row_switch().click()
            clicks, last_change = clicks + 1, time.monotonic()
        elif time.monotonic() - last_change > 10:  # the page or the instance lags behind: look again
            page.reload()
            page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=30_000)
            last_change = time.monotonic()
        time.sleep(0.5)


@pytest.fixture
def dagster_ui(tmp_path):
    """A drop + partition in this test's RDTF_HOME/DAGSTER_HOME, then the real daemon and webserver."""
    from dagster import DagsterInstance

    from data.synthetic import SyntheticConfig, make_drop

    home = Path(os.environ["RDTF_HOME"])
    make_drop(str(home / "drops" / DROP), n=6, seed=1, progress=False,
              cfg=SyntheticConfig(min_size=48, max_size=64, max_frames=12))
    with DagsterInstance.get() as instance:
        # registered before the daemon starts, so new_drop_sensor has nothing to do
        instance.add_dynamic_partitions("drops", [DROP])
    env = dagster_env(Path(os.environ["DAGSTER_HOME"]), home)
    logs = tmp_path / "logs"
    daemon = web = None
    try:
        daemon = start_dagster_daemon(env, logs)
        web = start_dagster_webserver(env, logs)
        yield web, daemon
    finally:
        stop_servers(web, daemon)
    assert daemon.proc.poll() is not None and web.proc.poll() is not None


@needs_browser
def test_dagster_ui_assets_checks_and_a_materialization(dagster_ui, tmp_path):
    web, daemon = dagster_ui
    shots = tmp_path / "screenshots"
    assets, checks = _inventory(web)
    assert ASSET in assets and "reject_rate_below_threshold" in checks.get(ASSET, []), (assets, checks)

    with browser_page() as page:
        # Automation tab: the sensors' and schedules' switches. The eager automation sensor is switched off
        # through the UI so that the only run in this instance is the one launched below.
        goto(page, web.url + "/automation", wait_for=[AUTOMATION_SENSOR, "new_drop_sensor", RETRAIN_SCHEDULE])
        _flip_switch(page, web, AUTOMATION_SENSOR, to=False)
        # The retraining schedule starts STOPPED (switching it is covered by tests/pipelines/test_automation.py).
        assert _automation_status(web, RETRAIN_SCHEDULE) == "STOPPED"
        screenshot(page, shots / "dagster-automation.png")

        # Catalog: every asset of the repository is listed (tall viewport: the list is virtualised).
        page.set_viewport_size({"width": VIEWPORT["width"], "height": 2400})
        goto(page, web.url + "/assets", wait_for=[a.split("/")[-1] for a in assets])
        text = body_text(page)
        missing = [a for a in assets if not _shown(a.split("/")[-1], text)]
        assert not missing, f"assets missing from the catalog page: {missing}"
        page.set_viewport_size(dict(VIEWPORT))
        screenshot(page, shots / "dagster-catalog.png")

        # Every asset check, on its asset's Checks tab.
        for key, names in checks.items():
            goto(page, f"{web.url}/assets/{key}?view=checks", wait_for=names)
            text = body_text(page)
            assert all(_shown(n, text) for n in names), (key, names)
        screenshot(page, shots / "dagster-checks.png")

        # Global lineage, all groups expanded (Alt+E), explorer sidebar hidden.
        goto(page, web.url + "/asset-groups", wait_for="Global asset lineage")
        page.get_by_placeholder("Jump to").locator("xpath=ancestor::div[.//button][1]//button").first.click()
        page.mouse.click(900, 300)
        page.keyboard.press("Alt+e")
        wait_text(page, [ASSET, "trained_model"])
        screenshot(page, shots / "dagster-asset-graph.png", settle=1.5)

        # Launch a materialization of one partition from the asset page, as a user would.
        goto(page, f"{web.url}/assets/{ASSET}", wait_for="Materialize")
        page.get_by_role("button", name="Materialize").first.click()
        dialog = page.locator("[role=dialog]")
        dialog.get_by_text(f"Launch runs to materialize {ASSET}").wait_for()
        dialog.get_by_role("button", name="All", exact=True).click()
        dialog.get_by_text("1 partition", exact=True).wait_for()
        assert DROP in dialog.inner_text()
        dialog.get_by_role("button", name="Launch 1 run").click()
        wait_text(page, "Launched run")
        prefix = re.search(r"Launched run ([0-9a-f]{8})", body_text(page)).group(1)

        runs = graphql(web, RUNS_QUERY, {"tags": [{"key": "dagster/partition", "value": DROP}]})
        run_id = next(r["runId"] for r in runs["runsOrError"]["results"] if r["runId"].startswith(prefix))
        status = wait_run(web, run_id, timeout=180)
        assert status == "SUCCESS", f"run {run_id} {status}; daemon log:\n{daemon.log_tail()}"

        goto(page, f"{web.url}/runs/{run_id}", wait_for=["Success", "RUN_SUCCESS", f"partition: {DROP}"])
        screenshot(page, shots / "dagster-run.png")

        # The asset now shows the materialization: partitions tab, events tab (names the run), check result.
        goto(page, f"{web.url}/assets/{ASSET}?view=partitions", wait_for=["Materialized (1)", DROP])
        page.get_by_text(DROP, exact=True).first.click()
        wait_text(page, [run_id[:8], "n_ingested"])
        screenshot(page, shots / "dagster-asset-partitions.png")
        goto(page, f"{web.url}/assets/{ASSET}?view=events",
             wait_for=f"Partition {DROP} materialized in run {prefix}")
        screenshot(page, shots / "dagster-asset-events.png")
        goto(page, f"{web.url}/assets/{ASSET}?view=checks",
             wait_for=["reject_rate_below_threshold", "Passed"])

    node = graphql(web, PARTITION_STATS_QUERY, {"key": {"path": [ASSET]}})["assetNodeOrError"]
    assert node["partitionStats"] == {"numMaterialized": 1, "numPartitions": 1}
    ingest = Lake(Path(os.environ["RDTF_HOME"]) / "lake").ingest(DROP) / "manifest.parquet"
    assert ingest.is_file()
    for name in ("dagster-automation", "dagster-catalog", "dagster-checks", "dagster-asset-graph",
                 "dagster-run", "dagster-asset-partitions", "dagster-asset-events"):
        assert is_png(shots / f"{name}.png"), name


# ---------------------------------------------------------------------------------------------------- MLflow

EXPERIMENT = "rdtf-stickers"
TASKS = ("t2v", "i2v", "interpolation", "prediction")


def _log_training_run(client, exp_id: str, name: str, curriculum: str, quality: float) -> str:
    """A run shaped like the trainer's + evaluation's: tags, train.* params, loss history, eval/* metrics."""
    from mlflow.entities import Metric, Param

    run_id = client.create_run(exp_id, run_name=name, tags={
        "weights": "random", "preset": "tiny_pixel", "curriculum": curriculum, "world_size": "1",
        "fvd_weights": "random", "vqa_weights": "random", "clip_weights": "random"}).info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric("loss", 0.5 * quality * 0.97 ** s, now + s, s) for s in range(0, 60, 10)]
    metrics += [Metric("lr", 2e-4, now + s, s) for s in range(0, 60, 10)]
    metrics.append(Metric("eval/step", 50, now, 50))
    for i, task in enumerate(TASKS):
        metrics += [Metric(f"eval/{task}/fvd", 100 * quality + 10 * i, now, 50),
                    Metric(f"eval/{task}/vqa", 0.1 / quality, now, 50),
                    Metric(f"eval/{task}/clip_matched", 0.02 / quality, now, 50),
                    Metric(f"eval/{task}/clip_top1", 0.08, now, 50)]
        if task in ("interpolation", "prediction"):
            metrics += [Metric(f"eval/{task}/psnr", 4.0 / quality, now, 50),
                        Metric(f"eval/{task}/ssim", 0.004 / quality, now, 50)]
    params = [Param("train.preset", "tiny_pixel"), Param("train.seed", "0"), Param("train.steps", "50"),
              Param("train.curriculum", repr({"mode": curriculum}))]
    client.log_batch(run_id, metrics=metrics, params=params)
    client.set_terminated(run_id)
    return run_id


def _register_tiny_model(tmp_path: Path, uri: str, run_id: str) -> str:
    """A tiny package logged as the pyfunc model on ``run_id`` and registered as rdtf-dfgn (champion + challenger),
    through the same code as the registered_model / model_promotion assets."""
    from model.pipeline import export_checkpoint
    from tests.helpers import tiny_checkpoint
    from training import registry as reg

    tiny_checkpoint(tmp_path / "tiny-run")
    pkg = export_checkpoint(tmp_path / "tiny-run", tmp_path / "tiny-package")
    model_uri = reg.log_sticker_model(uri, run_id, pkg)
    v = reg.register_version(uri, reg.REGISTERED_MODEL, model_uri, run_id, {
        "weights": "random", "drops": "ui-drop", "shard_index_hash": "0123456789abcdef", "eval/i2v/fvd": "101.5",
        "promotion.decision": "promoted", "promotion.reason": "no champion yet: v1 has every gated metric"})
    for alias in (reg.CHAMPION, reg.CHALLENGER):
        reg.set_alias(uri, reg.REGISTERED_MODEL, alias, v.version)
    return str(v.version)


@pytest.fixture
def mlflow_ui(tmp_path):
    """SQLite store with 2 evaluated training runs and the comparison run (report artifacts) made by our
    code, served by ``mlflow server`` (started once the schema exists: it boots while the runs are logged)."""
    from mlflow.tracking import MlflowClient

    from evaluation.comparison import collect_runs, write_report
    from evaluation.suite import log_comparison

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = tmp_path / "mlartifacts"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=str(artifacts))
    srv = start_mlflow_server(uri, artifacts, tmp_path / "logs", wait=False)
    try:
        runs = {"ui-adaptive": _log_training_run(client, exp_id, "ui-adaptive", "adaptive", 1.0),
                "ui-linear": _log_training_run(client, exp_id, "ui-linear", "linear", 1.3)}
        table = collect_runs(uri, EXPERIMENT)
        assert sorted(table["run_name"]) == sorted(runs)
        paths = write_report(table, tmp_path / "comparison", experiment=EXPERIMENT)
        comparison_id = log_comparison(uri, EXPERIMENT, paths)
        version = _register_tiny_model(tmp_path, uri, runs["ui-adaptive"])
        wait_http(srv, "/health", timeout=120)
        yield {"server": srv, "exp_id": exp_id, "runs": runs, "comparison": comparison_id, "version": version}
    finally:
        srv.stop()
    assert srv.proc.poll() is not None


@needs_browser
def test_mlflow_ui_experiment_compare_and_comparison_artifacts(mlflow_ui, tmp_path):
    store, srv = mlflow_ui, mlflow_ui["server"]
    shots = tmp_path / "screenshots"
    exp = f"{srv.url}/#/experiments/{store['exp_id']}"
    with browser_page(init_script=MLFLOW_INIT_SCRIPT) as page:
        # Experiment page: MLflow 3 opens it in its GenAI view; the sidebar's "Model training" toggle switches
        # to the classic runs table, which lists both training runs and the comparison run.
        goto(page, exp, wait_for="Model training")
        page.get_by_text("Model training", exact=True).first.click()
        wait_text(page, [*store["runs"], "model-comparison"])
        assert "workflowType=machine_learning" in page.url, page.url
        screenshot(page, shots / "mlflow-experiment.png", settle=1.0)

        # Compare-runs view of the two training runs: tick their rows, press "Compare".
        for name in store["runs"]:
            row = page.locator("[role=row]").filter(has=page.get_by_text(name, exact=True))
            row.first.get_by_role("checkbox").first.check()
        page.get_by_role("button", name="Compare").first.click()
        wait_text(page, ["Comparing 2 Runs", "eval/i2v/fvd", "eval/interpolation/psnr", *store["runs"]])
        assert "compare-runs" in page.url
        ids = set(re.findall(r"[0-9a-f]{32}", urllib.parse.unquote(page.url)))
        assert ids == set(store["runs"].values()), page.url
        page.get_by_text("eval/i2v/fvd", exact=True).last.scroll_into_view_if_needed()
        screenshot(page, shots / "mlflow-compare.png", settle=1.0)

        # The comparison run's artifacts, written by evaluation.comparison + evaluation.suite.log_comparison.
        art = f"{exp}/runs/{store['comparison']}/artifacts/comparison"
        goto(page, f"{art}/comparison.md?workflowType=machine_learning",
             wait_for=["comparison.csv", "comparison.png", "Model comparison", "ui-linear"])
        screenshot(page, shots / "mlflow-comparison-md.png", settle=1.0)
        page.get_by_text("comparison.png", exact=True).first.click()  # the artifact tree (SPA route)
        page.wait_for_function(
            "() => [...document.images].some(i => i.complete && i.naturalWidth > 300)", timeout=60_000)
        screenshot(page, shots / "mlflow-comparison-png.png", settle=1.0)
    for name in ("mlflow-experiment", "mlflow-compare", "mlflow-comparison-md", "mlflow-comparison-png"):
        assert is_png(shots / f"{name}.png"), name


@needs_browser
def test_mlflow_model_registry_pages_show_the_champion_and_its_lineage(mlflow_ui, tmp_path):
    store, srv = mlflow_ui, mlflow_ui["server"]
    shots = tmp_path / "screenshots"
    with browser_page(init_script=MLFLOW_INIT_SCRIPT) as page:
        goto(page, f"{srv.url}/#/models/rdtf-dfgn", wait_for=["rdtf-dfgn", f"Version {store['version']}", "champion"])
        screenshot(page, shots / "mlflow-registered-model.png", settle=1.0)
        goto(page, f"{srv.url}/#/models/rdtf-dfgn/versions/{store['version']}",
             wait_for=["champion", "challenger", "shard_index_hash", "promotion.reason", "weights"])
        text = body_text(page)
        assert "0123456789abcdef" in text and "no champion yet" in text
        screenshot(page, shots / "mlflow-model-version.png", settle=1.0)
    for name in ("mlflow-registered-model", "mlflow-model-version"):
        assert is_png(shots / f"{name}.png"), name


# ----------------------------------------------------------------------------------------- the helpers

STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)          # ignores SIGTERM: needs the SIGKILL escalation
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])                  # same group
subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)"])  # own session
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_stop_servers_kills_the_group_and_strays(tmp_path):
    """No orphans: a leader ignoring SIGTERM, a child in its group and a grandchild that left the group."""
    srv = start("stubborn", [sys.executable, "-c", STUBBORN], url="", log_dir=tmp_path, cwd=PROJECT_ROOT)
    deadline = time.monotonic() + 30
    while len(descendants(srv.proc.pid)) < 2 or "ready" not in srv.log_tail():
        assert time.monotonic() < deadline, srv.log_tail()
        time.sleep(0.1)
    family = [srv.proc.pid, *descendants(srv.proc.pid)]
    t0 = time.monotonic()
    stop_servers(srv, grace=1.0)
    assert time.monotonic() - t0 < 15
    assert srv.proc.returncode is not None

    def gone(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    assert all(gone(p) for p in family), [p for p in family if not gone(p)]
    stop_servers(srv)  # idempotent
