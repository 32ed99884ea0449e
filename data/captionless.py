"""Caption-less drops: a plain folder of animated stickers, chosen explicitly (never a silent fallback).

The drop contract (``data.drops``) has a caption table; a team that only has a folder of GIFs chooses a
:class:`CaptionSource` instead (``IngestSettings.caption_source``, the ``ingested_stickers`` config, ``rdtf
build-drop --captions``):

- ``table`` (default): the caption table — a drop without one is "not ready" / refused, as before.
- ``none``: every media file in the folder (recursively; hidden files and folders skipped) is a sticker with an
  empty caption. RDTF trains with text dropout (Method: text-free generation is one of the condition masks), so
  such stickers train the image-conditioned tasks; their ``caption_status`` is ``missing``.
- ``filename``: the same, with the caption derived from the file name by :func:`caption_from_name`.

Ids are the file paths relative to the drop (made key-safe by ``data.drops.safe_key``), so re-ingesting the same
folder gives the same ids. Special files (links leaving the drop, FIFOs, devices) are listed like any file and
quarantined by the reader, with a reason — nothing here opens them. A caption-less drop in ``DROPS_ROOT`` is
picked up by the new-drop sensor when its producer writes the :data:`READY_MARKER` file last.
"""

from __future__ import annotations

import posixpath
import re
from enum import StrEnum

READY_MARKER = "READY"  # written last by a caption-less drop's producer: the drop is complete
MEDIA_SUFFIXES = (".gif", ".webp", ".png", ".apng", ".mp4", ".webm")
_SEPARATORS = re.compile(r"[_\-.+]+")
_TRAILING_NUMBER = re.compile(r"(\s+\d+)+$")
_SPACES = re.compile(r"\s+")


class CaptionSource(StrEnum):
    TABLE = "table"  # the drop's caption table (the drop contract)
    NONE = "none"  # no captions: empty caption for every media file
    FILENAME = "filename"  # caption derived from each file name (caption_from_name)


def caption_from_name(rel_path: str) -> str:
    """The documented file-name rule: the stem, separators ``_ - . +`` as spaces, a trailing number dropped.

    ``cats/cat_waving-hello_003.gif`` -> ``"cat waving hello"``; ``IMG_0042.gif`` -> ``"IMG"``; ``0042.gif`` -> ``""``.
    Folders do not contribute (they are often dates or batch names).
    """
    stem = posixpath.basename(rel_path)
    for suffix in MEDIA_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    text = _SPACES.sub(" ", _SEPARATORS.sub(" ", stem)).strip()
    text = _TRAILING_NUMBER.sub("", text).strip()
    return "" if text.isdigit() else text


def list_media(fs, root: str) -> list[str]:
    """Relative paths of the media files under ``root`` (sorted; hidden entries and the marker skipped)."""
    out = []
    base = root.rstrip("/")
    for path in fs.find(base, withdirs=False):
        rel = path[len(base):].lstrip("/") if path.startswith(base) else path
        parts = rel.split("/")
        if any(p.startswith(".") for p in parts) or not rel.lower().endswith(MEDIA_SUFFIXES):
            continue
        out.append(rel)
    return sorted(out)
