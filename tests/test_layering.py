"""The package stack (docs/architecture.md): each package imports only packages below it, never a private name.

model < data < training < evaluation < ablation < assets < pipelines; benchmarks and tests sit on top.
Read from the source with ``ast`` (every import, also the ones inside functions), so a back-reference fails here
before it can create an import cycle or drag Dagster into a torchrun worker.
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STACK = ("model", "data", "training", "evaluation", "ablation", "assets", "pipelines")
RANK = {p: i for i, p in enumerate(STACK)}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every absolute import in the file (names empty for ``import x``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
    return out


def _violations(package: str) -> list[str]:
    bad = []
    for path in _modules(package):
        rel = path.relative_to(ROOT)
        for line, module, names in _imports(path):
            top = module.split(".")[0]
            if top in RANK and RANK[top] > RANK[package]:
                bad.append(f"{rel}:{line} imports {module} ({top} is above {package})")
            if top in ("benchmarks", "tests"):
                bad.append(f"{rel}:{line} imports {module} (library code never imports {top})")
            if top in RANK:
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private:
                    bad.append(f"{rel}:{line} imports private {private} from {module}")
            if RANK[package] < RANK["assets"] and top.startswith("dagster") and top != "dagster_pipes":  # Pipes is the client side
                bad.append(f"{rel}:{line} imports {module} (only assets/pipelines use Dagster)")
    return bad


@pytest.mark.parametrize("package", STACK)
def test_package_imports_only_below(package):
    assert _violations(package) == []


def test_the_rule_catches_a_back_reference(tmp_path, monkeypatch):
    """The check itself can fail: a model module importing data, one importing a private name, one using Dagster."""
    pkg = tmp_path / "model"
    pkg.mkdir()
    (pkg / "bad.py").write_text("def f():\n    from data.media import decode\n    from model.unet import _helper\n"
                                "    import dagster\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = _violations("model")
    assert len(found) == 3, found
    assert "data is above model" in found[0] and "private ['_helper']" in found[1] and "Dagster" in found[2]


def test_every_package_is_in_the_stack():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} - {"tests", "benchmarks"}
    assert packages == set(STACK)
