"""`dagster definitions validate` from a checkout with nothing set; DAGSTER_HOME copies keep storage where they are."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from pipelines.dagster_home import instance_yaml, write_home
from tests.helpers import ROOT
from tests.ui_servers import VENV_BIN


@pytest.mark.slow
def test_definitions_validate_with_a_clean_environment(tmp_path):
    """The repository's dagster.yaml and workspace.yaml, run from their folder, no DAGSTER_HOME / RDTF_* set."""
    for f in ("dagster.yaml", "workspace.yaml"):
        shutil.copy(ROOT / f, tmp_path / f)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "RDTF_", "MLFLOW_"))}
    env["PYTHONPATH"] = str(ROOT)  # the copy has no code: import it from the checkout
    res = subprocess.run([str(VENV_BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "All code locations passed validation" in res.stdout + res.stderr
    assert "DAGSTER_HOME is not set" not in res.stdout + res.stderr
    assert (tmp_path / "var" / "dagster_home").is_dir()  # project storage, relative to the root


def test_a_dagster_home_copy_points_storage_at_itself(tmp_path):
    home = write_home(tmp_path / "some where" / "dh")
    cfg = yaml.safe_load((home / "dagster.yaml").read_text())
    assert cfg["storage"]["sqlite"]["base_dir"] == str(home)
    repo = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert repo["storage"]["sqlite"]["base_dir"] == "var/dagster_home"
    assert {k: v for k, v in cfg.items() if k != "storage"} == {k: v for k, v in repo.items() if k != "storage"}


def test_a_dagster_yaml_without_one_base_dir_is_refused(tmp_path):
    (tmp_path / "d.yaml").write_text("telemetry:\n  enabled: false\n")
    with pytest.raises(ValueError, match="exactly one storage base_dir"):
        instance_yaml(tmp_path / "h", tmp_path / "d.yaml")
