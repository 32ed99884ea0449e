"""The one rule for names that become folders: drop ids, Dagster partition keys, run names.

Why one rule: a drop id arrives from outside (a folder name under DROPS_ROOT, a partition key typed in
the Dagster UI or sent over GraphQL, a CLI argument) and becomes a path segment under the lake
(``lake/ingest/<id>/``). Checking it in one place only (formerly: the sensor) let ``../victim`` through
every other door. Every entry point now calls :func:`validate_id`, and every path built from an id is
also resolved and checked to stay under its root (:func:`contained`), so a rule slip or a symlinked
folder still cannot make a stage write outside the lake.

The rule ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}`` is a valid Dagster partition key, a single POSIX path
segment that is never ``.``/``..`` (it cannot start with a dot), never hidden, and an object-store key
segment without escaping.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

ID_RULE = "[A-Za-z0-9][A-Za-z0-9._-]{0,127}"  # letters/digits first, then letters, digits, '.', '_', '-'
ID_RE = re.compile(f"^{ID_RULE}$")


def is_valid_id(value: object) -> bool:
    """True when ``value`` is a str obeying :data:`ID_RULE`."""
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def validate_id(value: object, what: str = "drop id") -> str:
    """Return ``value`` if it obeys :data:`ID_RULE`, else raise ``ValueError`` naming the rule.

    ``what`` names the kind of name in the message ("drop id", "partition key", "run name").
    """
    if not is_valid_id(value):
        shown = repr(value)[:80]
        raise ValueError(f"invalid {what} {shown}: must match {ID_RULE} (1-128 characters, no '/', no leading '.')")
    return value  # type: ignore[return-value]


def within(path: str | Path, root: str | Path) -> bool:
    """``path`` is ``root`` or below it; both must already be resolved (``os.path.realpath``)."""
    path, root = os.fspath(path), os.fspath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)  # os.sep is "/" on POSIX and for object keys


def contained(root, *parts: str):
    """``root/parts...`` resolved, refused (``ValueError``) unless it stays inside the resolved root.

    Symlinks are followed on both sides, so a symlinked sub-folder that points elsewhere is caught too. An
    object-store root (a ``UPath``; no symlinks exist there) is checked lexically on the normalized key.
    """
    if hasattr(root, "fs") and not isinstance(root, Path):
        base_key = posixpath.normpath(root.path)
        target_key = posixpath.normpath(posixpath.join(base_key, *parts))
        if any(p in ("", ".", "..") or "/" in p for p in parts) or not within(target_key, base_key):
            raise ValueError(f"path {'/'.join(parts)!r} escapes its root {str(root)!r}")
        return root.joinpath(*parts)
    base = Path(os.path.realpath(root))
    target = Path(os.path.realpath(base.joinpath(*parts)))
    if not within(target, base):
        raise ValueError(f"path {'/'.join(parts)!r} escapes its root {str(base)!r} (resolves to {str(target)!r})")
    return target


def overlaps(a: str | Path, b: str | Path) -> bool:
    """True when two local paths are the same folder or one contains the other (after resolving)."""
    ra, rb = os.path.realpath(a), os.path.realpath(b)
    return within(ra, rb) or within(rb, ra)
