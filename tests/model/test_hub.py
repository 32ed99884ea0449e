"""hf:<org>/<name> resolves to a cached snapshot offline; an uncached repo or a bad reference is a clear error."""

from __future__ import annotations

import json

import pytest

from model.hub import resolve_local


def _fake_cache(root, repo: str, files: dict[str, str]) -> None:
    """The Hugging Face hub cache layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text("0" * 40)
    for rel, text in files.items():
        f = base / "snapshots" / ("0" * 40) / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)


def test_a_cached_repo_and_its_subfolder_resolve_offline(tmp_path):
    _fake_cache(tmp_path, "acme/sd-like", {"vae/config.json": json.dumps({"_class_name": "AutoencoderKL"}),
                                           "model_index.json": "{}"})
    root = resolve_local("hf:acme/sd-like", str(tmp_path))
    assert (root / "model_index.json").is_file()
    assert (resolve_local("hf:acme/sd-like/vae", str(tmp_path)) / "config.json").is_file()
    assert str(resolve_local("models/vae")) == "models/vae"  # a plain (relative) path stays a path


@pytest.mark.parametrize("spec,match", [
    ("hf:acme/missing", "is not in the Hugging Face cache"),
    ("hf:acme", "is not hf:<org>/<name>"),
    ("hf:acme/x/../../etc", "is not hf:<org>/<name>"),
])
def test_uncached_or_malformed_references_are_refused(tmp_path, spec, match):
    with pytest.raises(ValueError, match=match):
        resolve_local(spec, str(tmp_path))


def test_a_missing_subfolder_is_named(tmp_path):
    _fake_cache(tmp_path, "acme/one", {"config.json": "{}"})
    with pytest.raises(ValueError, match="has no folder 'vae'"):
        resolve_local("hf:acme/one/vae", str(tmp_path))
