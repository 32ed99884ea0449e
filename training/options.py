"""Typed command-line options for every ``TrainConfig`` field, with the field's own comment as help text.

``python -m training`` and ``rdtf train`` both take ``--config FILE`` (JSON or YAML, as before) *and* one option
per field (``--steps 200 --lr 2e-4 --curriculum '{"mode": "linear"}'``); options override the file. Types come
from the dataclass (int, float, str, bool as ``--x/--no-x``, lists, JSON objects), help text and defaults from
``training/config.py`` itself, so a new field is documented on the command line by its comment.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

from training.config import TrainConfig

_FIELD_LINE = re.compile(r"^    (\w+): [^=#]+?(?: = [^#]+?)?\s*(?:#\s*(.*))?$")


def field_comments() -> dict[str, str]:
    """``name -> comment`` of the TrainConfig fields, read from the dataclass source (one line per field)."""
    src = Path(__file__).with_name("config.py").read_text().splitlines()
    start = next(i for i, line in enumerate(src) if line.startswith("class TrainConfig"))
    out = {}
    for line in src[start + 1:]:
        if line.startswith("    def ") or (line and not line.startswith(" ")):
            break
        m = _FIELD_LINE.match(line)
        if m and m.group(2):
            out[m.group(1)] = m.group(2).strip()
    return out


def _json_object(text: str) -> dict:
    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({e.msg})") from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return v


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """One ``--<field>`` per TrainConfig field (dest = field name, absent unless given)."""
    comments = field_comments()
    group = parser.add_argument_group("training config (each overrides --config)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        shown = "required" if default is None and f.default is dataclasses.MISSING and f.default_factory is \
            dataclasses.MISSING else f"default: {json.dumps(default)}"
        help_text = f"{comments.get(f.name, f.name.replace('_', ' '))} ({shown})".replace("%", "%%")
        kw: dict = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif kind.startswith("list"):
            kw |= {"nargs": "+", "metavar": "PATH"}
        elif kind == "dict":
            kw |= {"type": _json_object, "metavar": "JSON"}
        else:
            base = kind.replace(" | None", "")
            kw["type"] = {"int": int, "float": float}.get(base, str)
            kw["metavar"] = base.upper()
        group.add_argument(flag, **kw)


def config_from_args(args: argparse.Namespace, base: dict | None = None) -> dict:
    """The config dict: ``base`` (e.g. the --config file) with every given option on top."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return dict(base or {}) | {k: v for k, v in vars(args).items() if k in names}
