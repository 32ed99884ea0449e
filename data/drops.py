"""The drop contract: how sticker drops are laid out, discovered and validated.

A *drop* is a folder (or object-store prefix) ``DROPS_ROOT/<drop_id>/`` holding media files and one
caption table: ``captions.jsonl`` (preferred), ``captions.csv`` or ``captions.parquet``, with the
columns ``id``, ``file`` (path relative to the drop folder) and ``caption``. A drop is *ready* when
its caption table exists, so producers must write it last. A caption-less drop (``data.captionless``) is
ready when its ``READY`` marker exists, which names its caption source (``none`` or ``filename``). Everything is read through fsspec, so
``/local/path``, ``file://``, ``memory://`` (tests) and ``s3://``/``gs://`` (with the matching fsspec
backend installed) all work.

Validation is row-level: a bad row is returned as a :class:`RowReject` (quarantined later) and never
stops the rest of the drop from being ingested.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import re
from dataclasses import dataclass
from enum import StrEnum

import fsspec

from data import drop_files
from data.captionless import MEDIA_SUFFIXES, READY_MARKER, CaptionSource, caption_from_name, list_media
from data.ids import ID_RE, overlaps, within
from data.rejects import RejectReason, StickerRejected
from data.storage import is_remote, lake_path

log = logging.getLogger(__name__)

CAPTION_FILES = ("captions.jsonl", "captions.csv", "captions.parquet")  # checked in this order
MAX_CAPTION_BYTES = 256 << 20  # default cap on the caption table's size (a table is read into memory whole)
DROP_ID_RE = ID_RE  # the one id rule (data.ids): also a valid Dagster partition key and path segment
SAFE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # webdataset keys may not contain '.' or '/'
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class CaptionStatus(StrEnum):
    """Quality of a row's caption, stored in the manifest."""

    OK = "ok"
    MISSING = "missing"  # null, absent or blank
    INVALID_UTF8 = "invalid_utf8"  # bytes were not UTF-8; caption replaced by ""


class CaptionPolicy(StrEnum):
    """What to do with a sticker whose caption is missing or undecodable.

    ``keep_empty`` (default) keeps the sticker with an empty caption: RDTF trains with text dropout
    (Method, "condition mask": text-free generation), so such a sticker is still a useful sample.
    ``quarantine`` rejects it instead.
    """

    KEEP_EMPTY = "keep_empty"
    QUARANTINE = "quarantine"


@dataclass(frozen=True)
class CaptionRow:
    id: str  # the producer's id, verbatim
    key: str  # id made safe for file names and webdataset keys
    file: str  # normalised path relative to the drop folder
    caption: str  # "" when missing or undecodable
    caption_status: CaptionStatus
    row: int  # 1-based line (jsonl/csv incl. header) or row number (parquet)


@dataclass(frozen=True)
class RowReject:
    id: str | None
    file: str | None
    row: int
    reason: RejectReason
    message: str

    def __post_init__(self) -> None:
        # messages quote raw fields and parser errors, and land in quarantine.parquet: keep them valid UTF-8
        # and bounded whatever the input (a 100 kB caption or undecodable bytes)
        msg = _text(self.message) or ""
        object.__setattr__(self, "message", msg if len(msg) <= _MAX_MESSAGE else msg[: _MAX_MESSAGE - 3] + "...")


_MAX_MESSAGE = 500  # characters of a row reject's message


def join(root: str, *parts: str) -> str:
    """Join URL/path segments with '/' (fsspec paths are POSIX-style for every backend)."""
    out = root.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


_EXTRA_OF = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}


def url_to_fs(url: str):
    """``fsspec.core.url_to_fs`` with a missing backend reported as a ``ValueError`` naming what to install.

    fsspec raises a bare ``ImportError`` ("Install s3fs to access S3") deep inside a stage; users
    should instead read which extra of this project brings the backend.
    """
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        scheme = url.split("://", 1)[0] if "://" in url else "file"
        extra = _EXTRA_OF.get(scheme)
        hint = f"pip install 'rdtf-stickers[{extra}]'" if extra else "install the fsspec backend for it"
        raise ValueError(f"cannot open {scheme}:// URLs: {exc} ({hint})") from None


def refuse_overlap(drop_url: str, out, what: str = "output") -> None:
    """``ValueError`` if a local output folder is, contains or lies inside a local drop.

    No command may write into (or publish over, and so delete) its own input: ``rdtf ingest DROP --out
    DROP`` once replaced the source drop by its ingest output.
    """
    out_path = lake_path(out)
    if is_remote(out_path):  # object keys: compare the normalized URLs (no symlinks to follow)
        a, b = str(out_path).rstrip("/"), drop_url.rstrip("/")
        if a == b or a.startswith(b + "/") or b.startswith(a + "/"):
            raise ValueError(f"{what} {a!r} overlaps the drop {drop_url!r}: outputs must be outside the drop "
                             f"(and must not contain it)")
        return
    fs, path = url_to_fs(drop_url)
    if drop_files.is_local(fs) and overlaps(path, out_path):
        raise ValueError(f"{what} {str(out)!r} overlaps the drop {drop_url!r}: outputs must be outside the drop "
                         f"(and must not contain it)")


def _caption_name(fs, path: str) -> str | None:
    """Name of the first caption table present in the drop folder ``path`` (as ``fs`` names it)."""
    return next((name for name in CAPTION_FILES if drop_files.member_exists(fs, path, name)), None)


def find_caption_file(drop_url: str) -> str | None:
    """URL of the drop's caption table, or None when the drop is not ready.

    A symlink or special file under a caption table's name counts as present: reading it then refuses the
    drop with a clear error (see :func:`read_caption_table`) rather than leaving it silently "not ready".
    """
    fs, path = url_to_fs(drop_url)
    name = _caption_name(fs, path)
    return None if name is None else join(drop_url, name)


def list_ready_drops(drops_root: str) -> list[str]:
    """Sorted ids of the drops under ``drops_root`` that have a caption table.

    Folders whose names are not valid drop ids (see ``DROP_ID_RE``) are skipped: they could not be
    Dagster partition keys. On a local filesystem a drop must be a real folder: a symlinked drop folder is
    skipped with a warning. Whoever can write into ``drops_root`` must not be able to make the sensor ingest
    an arbitrary folder of the machine (a link resolving outside ``drops_root``), and a link to another drop
    would only ingest it twice. (``rdtf ingest DROP`` still reads any folder it is explicitly given.)
    """
    fs, root = url_to_fs(drops_root)
    if not fs.exists(root):
        return []
    local = drop_files.is_local(fs)
    ready = []
    for entry in fs.ls(root, detail=True):
        name = posixpath.basename(entry["name"].rstrip("/"))
        if local and entry.get("islink") and DROP_ID_RE.match(name) and os.path.isdir(entry["name"]):
            where = "inside" if within(os.path.realpath(entry["name"]), os.path.realpath(root)) else "outside"
            log.warning("skipping drop folder %r of %s: it is a symbolic link (resolving %s drops_root); "
                        "drops must be real folders", name, drops_root, where)
            continue
        if entry.get("type") != "directory":
            continue
        if not DROP_ID_RE.match(name):
            if not name.startswith("."):  # hidden folders are a producer's staging area, not drops
                log.warning("skipping folder %r of %s: not a valid drop id (must match %s)", name[:80], drops_root,
                            DROP_ID_RE.pattern)
            continue
        if _caption_name(fs, entry["name"]) is not None or drop_files.member_exists(fs, entry["name"], READY_MARKER):
            ready.append(name)
    return sorted(ready)


def captionless_source(drop_url: str) -> CaptionSource | None:
    """The caption source a caption-less drop's ``READY`` marker names (``none`` or ``filename``; empty = ``none``),
    or None for a drop with a caption table or without the marker. Anything else is a ValueError naming the values."""
    fs, path = url_to_fs(drop_url)
    if _caption_name(fs, path) is not None or not drop_files.member_exists(fs, path, READY_MARKER):
        return None
    try:
        text = drop_files.read_member(fs, path, READY_MARKER, 1024, "READY marker size").decode("utf-8").strip()
    except (StickerRejected, UnicodeDecodeError) as exc:
        raise ValueError(f"drop {drop_url!r}: unreadable {READY_MARKER} marker ({exc})") from None
    allowed = (CaptionSource.NONE.value, CaptionSource.FILENAME.value)
    if text not in ("", *allowed):
        raise ValueError(f"drop {drop_url!r}: {READY_MARKER} names caption source {text[:40]!r}; allowed: "
                         f"{list(allowed)} (or empty = none)")
    return CaptionSource(text or CaptionSource.NONE.value)


def read_drop_rows(drop_url: str, source: CaptionSource = CaptionSource.TABLE,
                   policy: CaptionPolicy = CaptionPolicy.KEEP_EMPTY,
                   max_caption_bytes: int = MAX_CAPTION_BYTES) -> tuple[list[CaptionRow], list[RowReject]]:
    """The drop's stickers: from its caption table, or — chosen explicitly — from its media files
    (``data.captionless``: empty captions, or captions from file names)."""
    source = CaptionSource(source)
    if source is CaptionSource.TABLE:
        return read_caption_table(drop_url, policy, max_caption_bytes)
    fs, path = url_to_fs(drop_url)
    if not fs.isdir(path):
        raise FileNotFoundError(f"drop {drop_url!r} is not a folder")
    rows: list[CaptionRow] = []
    rejects: list[RowReject] = []
    for rowno, rel in enumerate(list_media(fs, path), start=1):
        try:
            rel = safe_member_path(rel)
        except ValueError as exc:
            rejects.append(RowReject(None, _text(rel), rowno, RejectReason.PATH_ESCAPE, str(exc)))
            continue
        if _has_surrogates(rel):
            rejects.append(RowReject(None, _text(rel), rowno, RejectReason.BAD_CAPTION_ROW, "non-UTF-8 file name"))
            continue
        caption = caption_from_name(rel) if source is CaptionSource.FILENAME else ""
        status = CaptionStatus.OK if caption else CaptionStatus.MISSING
        if status is CaptionStatus.MISSING and policy is CaptionPolicy.QUARANTINE:
            rejects.append(RowReject(rel, rel, rowno, RejectReason.MISSING_CAPTION,
                                     f"no caption from caption_source={source.value} (caption_policy=quarantine)"))
            continue
        rows.append(CaptionRow(rel, safe_key(rel), rel, caption, status, rowno))
    if not rows and not rejects:
        raise FileNotFoundError(f"drop {drop_url!r} holds no media files ({', '.join(MEDIA_SUFFIXES)})")
    return rows, rejects


def safe_member_path(file: str) -> str:
    """Normalise a manifest path and refuse anything that escapes the drop folder.

    Rejected: empty, absolute (``/x``, ``C:\\x``), URLs (``s3://``, ``file:``), backslashes and any
    ``..`` component. Raises ``ValueError`` with the reason.
    """
    if not file or not file.strip():
        raise ValueError("empty file path")
    if "\\" in file or "\x00" in file:
        raise ValueError(f"illegal character in path {file!r}")
    if file.startswith("/") or _SCHEME_RE.match(file):
        raise ValueError(f"absolute path or URL not allowed: {file!r}")
    parts = [p for p in file.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise ValueError(f"path escapes the drop folder: {file!r}")
    return "/".join(parts)


def safe_key(sticker_id: str) -> str:
    """A key usable in file names and webdataset samples; stable for a given id."""
    if SAFE_KEY_RE.match(sticker_id):
        return sticker_id
    digest = hashlib.sha1(sticker_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", sticker_id)[:40].strip("_")
    return f"{stem}_{digest}" if stem else f"h_{digest}"


def _has_surrogates(text: str) -> bool:
    # not only surrogateescape'd bytes (U+DC80..U+DCFF): JSON's "\ud800" escapes decode to lone surrogates too,
    # and no surrogate can be written to the Parquet manifest (found by tests/data/test_fuzz.py)
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _records_jsonl(data: bytes) -> list[tuple[int, object]]:
    out = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        # surrogateescape keeps undecodable bytes as lone surrogates, so one bad caption does not
        # make the whole row unparseable; the caption is flagged below.
        text = raw.decode("utf-8", "surrogateescape")
        try:
            out.append((lineno, json.loads(text)))
        except (ValueError, RecursionError) as exc:
            # not only JSONDecodeError: a 5000-digit number is a ValueError and "[[[[..." nested 3000 deep a
            # RecursionError; either used to make the whole table unreadable (found by tests/data/test_fuzz.py)
            out.append((lineno, ValueError(f"{type(exc).__name__}: {exc}")))
    return out


def _records_csv(data: bytes) -> list[tuple[int, object]]:
    import pandas as pd

    df = pd.read_csv(
        io.BytesIO(data), dtype=str, keep_default_na=False, encoding="utf-8", encoding_errors="surrogateescape"
    )
    return [(i + 2, rec) for i, rec in enumerate(df.to_dict("records"))]


def _records_parquet(data: bytes) -> list[tuple[int, object]]:
    import pyarrow.parquet as pq

    rows = pq.read_table(io.BytesIO(data)).to_pylist()
    for rec in rows:
        for k, v in list(rec.items()):
            if isinstance(v, bytes):
                rec[k] = v.decode("utf-8", "surrogateescape")
    return list(enumerate(rows, start=1))


def read_caption_table(
    drop_url: str, policy: CaptionPolicy = CaptionPolicy.KEEP_EMPTY, max_caption_bytes: int = MAX_CAPTION_BYTES
) -> tuple[list[CaptionRow], list[RowReject]]:
    """Parse and validate a drop's caption table.

    Returns the usable rows in file order and the rejected ones. First occurrence of an id wins
    (``duplicate_id`` for later ones). Raises ``FileNotFoundError`` when the drop is not ready, and
    ``ValueError`` when the table is not a regular file inside the drop (a symlink resolving outside it,
    a FIFO, ...) or is larger than ``max_caption_bytes``: the whole drop is refused, as no row of it can
    be trusted. An unreadable table (e.g. a malformed CSV) yields one ``bad_caption_row`` reject for row 0.
    """
    fs, path = url_to_fs(drop_url)
    name = _caption_name(fs, path)
    if name is None:
        raise FileNotFoundError(f"drop {drop_url!r} has no caption table (expected one of {CAPTION_FILES})")
    url = join(drop_url, name)
    try:
        data = drop_files.read_member(fs, path, name, max_caption_bytes, "max_caption_bytes")
    except StickerRejected as exc:
        err = FileNotFoundError if exc.reason is RejectReason.MISSING_FILE else ValueError
        raise err(f"caption table of drop {drop_url!r} refused ({exc.reason.value}): {exc.message}") from None
    parser = {"jsonl": _records_jsonl, "csv": _records_csv, "parquet": _records_parquet}[name.rsplit(".", 1)[1]]
    try:
        records = parser(data)
    except Exception as exc:  # malformed table: nothing in it can be trusted
        return [], [RowReject(None, None, 0, RejectReason.BAD_CAPTION_ROW, f"unreadable caption table {url}: {exc}")]

    rows: list[CaptionRow] = []
    rejects: list[RowReject] = []
    seen_ids: set[str] = set()
    seen_keys: set[str] = set()
    for rowno, rec in records:
        if isinstance(rec, Exception) or not isinstance(rec, dict):
            rejects.append(RowReject(None, None, rowno, RejectReason.BAD_CAPTION_ROW, f"not a JSON object: {rec}"))
            continue
        sid, file = rec.get("id"), rec.get("file")
        if isinstance(sid, int) and not isinstance(sid, bool):
            sid = str(sid)
        if not isinstance(sid, str) or not sid.strip() or _has_surrogates(sid):
            rejects.append(RowReject(None, _text(file), rowno, RejectReason.BAD_CAPTION_ROW, f"missing or invalid id: {sid!r}"))
            continue
        if not isinstance(file, str) or _has_surrogates(file):
            rejects.append(RowReject(sid, _text(file), rowno, RejectReason.BAD_CAPTION_ROW,
                                     f"missing, invalid or non-UTF-8 file: {file!r}"))
            continue
        try:
            rel = safe_member_path(file)
        except ValueError as exc:
            rejects.append(RowReject(sid, _text(file), rowno, RejectReason.PATH_ESCAPE, str(exc)))
            continue
        if sid in seen_ids:
            rejects.append(RowReject(sid, rel, rowno, RejectReason.DUPLICATE_ID, f"id {sid!r} already used by an earlier row"))
            continue
        key = safe_key(sid)
        if key in seen_keys:  # two different unsafe ids hashing alike is astronomically unlikely, but check
            rejects.append(RowReject(sid, rel, rowno, RejectReason.DUPLICATE_ID, f"key {key!r} collides with an earlier row"))
            continue

        caption, status = rec.get("caption"), CaptionStatus.OK
        if isinstance(caption, str) and _has_surrogates(caption):
            caption, status = "", CaptionStatus.INVALID_UTF8
        elif not isinstance(caption, str) or not caption.strip():
            caption, status = "", CaptionStatus.MISSING
        if status is not CaptionStatus.OK and policy is CaptionPolicy.QUARANTINE:
            reason = RejectReason.CAPTION_NOT_UTF8 if status is CaptionStatus.INVALID_UTF8 else RejectReason.MISSING_CAPTION
            rejects.append(RowReject(sid, rel, rowno, reason, f"caption {status.value} (caption_policy=quarantine)"))
            continue
        seen_ids.add(sid)
        seen_keys.add(key)
        rows.append(CaptionRow(sid, key, rel, caption.strip(), status, rowno))
    return rows, rejects


def _text(value: object) -> str | None:
    """A printable form of a raw field for the quarantine table (surrogates made visible)."""
    if value is None:
        return None
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")
