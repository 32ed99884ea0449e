"""The documented production commands never bind the (unauthenticated) Dagster webserver or MLflow server to all
interfaces: they listen on 127.0.0.1 behind an authenticating proxy or the cluster's authenticated ingress."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import ROOT

SERVERS = re.compile(r"dagster-webserver|dagster\s+dev|mlflow\s+(server|ui)")
OPEN_HOST = re.compile(r"(-h|--host|--bind|-b)[\s=]+[\"']?(0\.0\.0\.0|::|\[::\]|\*)(?=[\s\"':]|$)")


def _commands(text: str) -> list[tuple[int, str]]:
    """Logical lines (backslash continuations joined) with their first line number."""
    out, buf, start = [], "", 0
    for n, line in enumerate(text.splitlines(), 1):
        if not buf:
            start = n
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append((start, buf + line))
        buf = ""
    return out


def _doc_files() -> list[Path]:
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "scripts").rglob("*.sh")]
    files += [p for p in (ROOT / "deploy").rglob("*") if p.suffix in {".md", ".yaml", ".yml", ".sh", ".conf", ""}
              and p.is_file()]
    return files


def test_docs_and_deploy_files_never_bind_dagster_or_mlflow_to_all_interfaces():
    offenders = [f"{p.relative_to(ROOT)}:{n}: {cmd.strip()[:120]}"
                 for p in _doc_files() for n, cmd in _commands(p.read_text(errors="replace"))
                 if SERVERS.search(cmd) and OPEN_HOST.search(cmd)]
    assert not offenders, "open binds:\n" + "\n".join(offenders)


def test_the_checker_catches_open_binds():
    bad = ["dagster-webserver -h 0.0.0.0 -p 3000", "mlflow server --host 0.0.0.0 --port 5000 \\\n  --x y",
           "mlflow ui --host=:: ", "dagster dev -h '0.0.0.0'"]
    for text in bad:
        assert any(SERVERS.search(c) and OPEN_HOST.search(c) for _, c in _commands(text)), text
    assert not any(OPEN_HOST.search(c) for _, c in _commands("mlflow server --host 127.0.0.1 --port 5000"))


def test_production_docs_show_an_authenticated_setup():
    for rel in ("deploy/postgres/README.md", "docs/scale-out.md"):
        text = (ROOT / rel).read_text()
        assert re.search(r"basic_auth|auth_basic|oauth2-proxy|auth-url", text), f"{rel}: no authenticating proxy shown"
