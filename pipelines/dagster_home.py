"""The Dagster instance folder: ``dagster.yaml`` with project storage by default.

The repository's ``dagster.yaml`` keeps its SQLite storage in ``var/dagster_home`` *relative to the repository
root*, so ``dagster dev -w workspace.yaml`` and ``dagster definitions validate -w workspace.yaml`` work from the
root with nothing set (Dagster reads ``./dagster.yaml`` when ``DAGSTER_HOME`` is unset). A ``DAGSTER_HOME``
elsewhere (``scripts/dev.sh``, the demo, the tests) gets a copy whose ``base_dir`` is that folder, absolute, so
storage follows ``DAGSTER_HOME`` wherever a command runs from.

    python -m pipelines.dagster_home /path/to/dagster_home   # write /path/to/dagster_home/dagster.yaml
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_BASE_DIR = re.compile(r"^(\s*base_dir:)\s*\S.*$", re.M)


def instance_yaml(home: str | Path, source: Path = PROJECT_ROOT / "dagster.yaml") -> str:
    """The repository's dagster.yaml with the storage ``base_dir`` set to ``home`` (absolute)."""
    text = source.read_text()
    if len(_BASE_DIR.findall(text)) != 1:
        raise ValueError(f"{source}: expected exactly one storage base_dir line")
    return _BASE_DIR.sub(lambda m: f"{m.group(1)} {Path(home).resolve().as_posix()!r}".replace("'", '"'), text)


def write_home(home: str | Path) -> Path:
    """Create ``home`` and write its ``dagster.yaml``; returns the folder."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(instance_yaml(home))
    return home


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m pipelines.dagster_home DAGSTER_HOME")
    print(write_home(sys.argv[1]))
