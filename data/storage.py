"""Where the lake lives: a local folder or any fsspec URL (``s3://``, ``gs://``, ``az://``, ``memory://``).

Why a module: the lake used to be a local path, so a multi-node training needed one ReadWriteMany volume
mounted everywhere. Now :func:`lake_path` turns ``RDTF_LAKE_ROOT`` into

* a plain :class:`pathlib.Path` for local roots (``/data/lake``, ``file:///data/lake``) -- every local code path,
  ``flock``, ``os.replace`` and ``fsync`` included, is exactly what it was, and
* a :class:`upath.UPath` (pathlib's API over fsspec: ``/``, ``open``, ``glob``, ``exists`` ...) for object stores.

Code that needs more than that API asks :func:`is_remote` and uses the helpers here (:func:`open_read`,
:func:`put_file`, :func:`remove_tree`, :func:`fetch`). How the object store differs, and what the lake relies on:

* **No renames, no folders.** Each object is written once and becomes visible whole when its (multipart) PUT
  completes, so "temp file + rename" becomes "stage the bytes in a local temp file, then one PUT"
  (``data.atomic``); the bytes stream from disk, never held whole in memory. A killed upload leaves no object
  (an incomplete multipart upload is invisible; a bucket lifecycle rule reaps it). Publication is a pointer PUT
  (``data.publish``).
* **Credentials and endpoints come from the environment**, never from configs or code: for S3 the standard
  ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_DEFAULT_REGION`` / ``AWS_ENDPOINT_URL`` (MinIO,
  on-prem, the loopback test server), read by botocore in every process -- Dagster run workers, torchrun
  ranks -- so a Kubernetes Secret mounted as env (``deploy/k8s``) is all a pod needs. fsspec's own
  ``FSSPEC_<PROTOCOL>_<OPTION>`` variables work as well.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from upath import UPath

LakePath = Path | UPath  # what every lake path is: local Path, or an fsspec-backed UPath

# protocol -> the optional extra that installs its fsspec backend (pyproject.toml [project.optional-dependencies])
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}
ALLOWED_PROTOCOLS = ("file", "memory", *EXTRAS)  # what a lake root may use


def scratch_dir() -> Path:
    """Node-local disk for staged uploads and downloaded copies (``RDTF_SCRATCH``, default the temp dir)."""
    return Path(os.environ.get("RDTF_SCRATCH") or tempfile.gettempdir())


def _check_backend(protocol: str, url: str) -> None:
    import fsspec

    if protocol not in ALLOWED_PROTOCOLS:
        raise ValueError(f"lake root {url!r}: unsupported protocol {protocol!r}; allowed: a local path or "
                         f"{', '.join(p + '://' for p in ALLOWED_PROTOCOLS)}")
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        extra = EXTRAS.get(protocol, protocol)
        raise ValueError(f"lake root {url!r} needs the fsspec backend for {protocol}://, which is not installed: "
                         f"pip install 'rdtf-stickers[{extra}]' ({exc})") from None


def lake_path(root: str | os.PathLike) -> LakePath:
    """The lake root (or any path inside it) as a :class:`Path` (local) or :class:`UPath` (object store).

    ``ValueError`` naming the allowed protocols for an unknown one, and the pip extra for a missing backend.
    """
    if isinstance(root, UPath) and not isinstance(root, Path):
        return root
    if isinstance(root, os.PathLike):
        return Path(root)
    if not isinstance(root, str) or not root:
        raise ValueError(f"lake root must be a non-empty path or URL, got {root!r}")
    if "://" not in root:
        return Path(root)
    protocol = root.split("://", 1)[0].lower()
    if protocol == "file":
        return Path(unquote(urlsplit(root).path))
    _check_backend(protocol, root)
    return UPath(root, **storage_options(protocol))


def storage_options(protocol: str) -> dict:
    """fsspec options of a lake protocol, from the environment (see module doc).

    Why explicit rather than left to botocore: fsspec caches filesystem instances by their options, so an endpoint
    read only from the environment would outlive a change of ``AWS_ENDPOINT_URL`` in the same process; and the
    directory-listing cache is off because other processes (ranks, run workers) write the same prefixes.
    """
    if protocol in ("s3", "s3a"):
        opts: dict = {"use_listings_cache": False}
        if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
            opts["endpoint_url"] = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ["AWS_ENDPOINT_URL"]
        return opts
    if protocol in ("gs", "gcs", "az", "abfs", "abfss"):
        return {"use_listings_cache": False}
    return {}


def url_fs(url: str):
    """``(filesystem, path)`` of any fsspec URL with the lake's options (:func:`storage_options`)."""
    import fsspec

    protocol = url.split("://", 1)[0].lower() if "://" in url else "file"
    return fsspec.core.url_to_fs(url, **storage_options(protocol))


def is_remote(path: LakePath) -> bool:
    """True for object-store paths (no local filesystem semantics: no rename, flock, fsync, symlinks)."""
    return not isinstance(path, Path)


def open_read(path: LakePath):
    """Binary reader of ``path`` (local file or object); pyarrow, tarfile, PIL and json all take it."""
    return open(path, "rb") if isinstance(path, Path) else path.open("rb")


def put_file(local: str | os.PathLike, dest: UPath) -> None:
    """Upload a local file to ``dest`` in one (multipart) PUT: the object appears whole or not at all."""
    dest.fs.put_file(os.fspath(local), dest.path)


def remove_tree(path: LakePath) -> None:
    """Delete a folder (or prefix) and everything under it; missing is fine."""
    if isinstance(path, Path):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
        return
    with contextlib.suppress(FileNotFoundError):
        path.fs.rm(path.path, recursive=True)


def fetch(path: LakePath, dest: Path) -> Path:
    """A local copy of file or folder ``path`` at ``dest`` (libraries that need a real file: safetensors mmap,
    ``torch.load(mmap=True)``). Local paths are returned as they are; folders are copied recursively."""
    if isinstance(path, Path):
        return path
    dest.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        path.fs.get(path.path.rstrip("/") + "/", os.fspath(dest) + "/", recursive=True)
    else:
        path.fs.get_file(path.path, os.fspath(dest))
    return dest


def upload_tree(local: Path, dest: UPath, *, last: tuple[str, ...] = ()) -> int:
    """Upload every file under ``local`` to ``dest`` (one PUT each); names in ``last`` go last (commit records
    such as ``manifest.json``, so a reader that sees them sees everything they name). Returns the file count."""
    files = sorted((p for p in local.rglob("*") if p.is_file() and not p.is_symlink()),
                   key=lambda p: (p.name in last, str(p)))
    for f in files:
        put_file(f, dest.joinpath(*f.relative_to(local).parts))
    return len(files)


@contextlib.contextmanager
def local_output(dest: LakePath, *, last: tuple[str, ...] = (), pull: bool = False):
    """A local folder to write an output folder into, for code that needs real files (``np.save``, PIL, plots).

    Local ``dest``: yields ``dest`` itself (created). Object store: yields a scratch folder -- pre-filled with the
    current content of ``dest`` when ``pull`` (caches such as FVD statistics) -- uploaded to ``dest`` when the
    block succeeds (``last`` files last), and removed either way; on an error nothing is uploaded.
    """
    if not is_remote(dest):
        dest.mkdir(parents=True, exist_ok=True)
        yield dest
        return
    work = Path(tempfile.mkdtemp(prefix="rdtf-out-", dir=scratch_dir()))
    try:
        if pull and dest.exists():
            fetch(dest, work)
        yield work
        upload_tree(work, dest, last=last)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def local_input(src: LakePath) -> Path:
    """A local copy of folder ``src`` (itself when local): a fresh download into scratch for object stores.

    The copy is the caller's to keep for the process lifetime (readers may memory-map it)."""
    if not is_remote(src):
        return src
    return fetch(src, Path(tempfile.mkdtemp(prefix="rdtf-in-", dir=scratch_dir())) / src.name)
