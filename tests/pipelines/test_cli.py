"""`rdtf` data commands honour the project's environment (the same readers as the Dagster resources)."""

from __future__ import annotations


def test_build_drop_honours_the_clip_settings_and_refuses_a_missing_weights_file(tmp_path, monkeypatch, capsys):
    from pipelines.cli import main

    monkeypatch.setenv("RDTF_CLIP_MODEL", "ViT-B-32")
    monkeypatch.setenv("RDTF_CLIP_PRETRAINED", str(tmp_path / "missing.safetensors"))
    rc = main(["build-drop", str(tmp_path / "drop"), "--lake", str(tmp_path / "lake"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.safetensors" in err and "does not exist" in err and "ViT-B-32" in err
    assert not (tmp_path / "lake").exists()  # refused before any stage ran


def test_every_option_has_help_text(capsys):
    """Each option of each command says what it does (argparse shows the default where one matters)."""
    import argparse

    from pipelines.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}" for name, p in sub.choices.items()
               for a in p._actions if not isinstance(a, argparse._HelpAction) and not a.help]
    assert missing == []
