"""Weights from a local folder *or* from a Hugging Face cache entry named by repo id — never downloaded.

``hf:<org>/<name>[/<subfolder>]`` names a repository snapshot that is already in the Hugging Face cache
(``HF_HOME`` / ``HF_HUB_CACHE``, or ``cache_dir``), e.g. ``hf:stabilityai/sd-vae-ft-mse`` (the SD VAE) or
``hf:google-t5/t5-large``; the prefix keeps it apart from a relative path such as ``models/vae``. It resolves
offline (``local_files_only``) to the snapshot folder, which the folder loaders then read exactly as a local one.
A repo that is not cached is a ``ValueError`` naming the repo, the cache and how to fetch it elsewhere.
"""

from __future__ import annotations

import re
from pathlib import Path

HF_PREFIX = "hf:"
_REPO = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,95})/([A-Za-z0-9][A-Za-z0-9_.-]{0,95})((?:/[A-Za-z0-9_.-]+)*)$")


def is_hub_ref(spec: str | None) -> bool:
    return isinstance(spec, str) and spec.startswith(HF_PREFIX)


def resolve_local(spec: str, cache_dir: str | None = None) -> Path:
    """A local path as given, or the cached snapshot folder of ``hf:<org>/<name>[/<subfolder>]``."""
    if not is_hub_ref(spec):
        return Path(spec).expanduser()
    m = _REPO.match(spec[len(HF_PREFIX):])
    if m is None or ".." in spec.split("/"):
        raise ValueError(f"{spec!r} is not hf:<org>/<name>[/<subfolder>]")
    repo, sub = f"{m.group(1)}/{m.group(2)}", m.group(3).lstrip("/")
    from huggingface_hub import snapshot_download

    from model.clip import hub_offline

    try:
        with hub_offline():
            root = Path(snapshot_download(repo, cache_dir=cache_dir, local_files_only=True))
    except Exception as e:  # noqa: BLE001 - LocalEntryNotFoundError and friends: one clear message
        raise ValueError(f"{repo!r} is not in the Hugging Face cache {cache_dir or '(HF_HUB_CACHE)'} and nothing is "
                         f"downloaded here: run `huggingface-cli download {repo}` on a machine with network and copy "
                         f"the cache (docs/weights.md) [{type(e).__name__}]") from None
    out = root / sub if sub else root
    if not out.is_dir():
        raise ValueError(f"{spec!r}: the cached snapshot of {repo!r} has no folder {sub!r}")
    return out
