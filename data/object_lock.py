"""One writer per partition on an object store: a lease object created with an exclusive PUT.

Why not ``flock``: an object store has no locks and no kernel that releases them when the holder dies. The
lease is the object ``P/.lock``:

* **Acquire** = create it only if absent (S3 ``If-None-Match: *``, fsspec mode ``"xb"``): of two racing
  writers exactly one PUT succeeds. The body names the holder and an expiry time.
* **Hold** = a daemon thread re-writes the object every ``ttl_s / 3`` with a later expiry (the holder owns it).
* **Release** = delete it. A holder killed with ``-9`` stops renewing; once its lease has expired a waiter
  deletes it and takes the lock with a fresh exclusive PUT, so a dead writer never needs a human. (Two waiters
  breaking the same expired lease in the same instant both delete, and the exclusive PUT still lets only one of
  them in; a live holder whose process stalls for longer than ``ttl_s`` can lose its lease, which is why the TTL
  is minutes, not seconds.)

Backends without exclusive create (checked once per lease) fail loudly rather than run unlocked.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid

log = logging.getLogger(__name__)

DEFAULT_TTL_S = float(os.environ.get("RDTF_LEASE_TTL_S", 120))


class ObjectLease:
    """Exclusive lease ``partition/.lock`` on an fsspec path (a ``UPath``), waiting up to ``timeout_s``.

    Raises the ``busy`` exception class (``data.publish.PartitionBusy``) when another live holder keeps it.
    """

    def __init__(self, partition, timeout_s: float, busy: type[Exception] = TimeoutError, *,
                 ttl_s: float = DEFAULT_TTL_S, poll_s: float = 0.5, name: str = ".lock"):
        if ttl_s <= 0:
            raise ValueError(f"lease ttl_s must be > 0, got {ttl_s}")
        self.path = partition / name
        self.fs, self.key = self.path.fs, self.path.path
        self.timeout_s, self.ttl_s, self.poll_s, self.busy = timeout_s, ttl_s, poll_s, busy
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        expires = time.time() + self.ttl_s
        return json.dumps({"token": self.token, "pid": os.getpid(), "host": socket.gethostname(),
                           "expires_unix": expires,
                           "expires_utc": f"{dt.datetime.fromtimestamp(expires, dt.UTC):%Y-%m-%dT%H:%M:%SZ}"}).encode()

    def _create(self) -> bool:
        try:
            with self.fs.open(self.key, "xb") as fh:
                fh.write(self._body())
            return True
        except FileExistsError:
            return False
        except OSError as exc:  # s3fs maps 412 PreconditionFailed to an OSError subclass on some versions
            if "PreconditionFailed" in str(exc) or "412" in str(exc):
                return False
            raise

    def _read(self) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(self.key))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: treated as expired below once it stays that way for a TTL

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            doc = self._read()
            if doc is not None and doc.get("token") not in (None, self.token):
                log.error("lease %s was taken over by %s; this writer's commit may race it", self.path, doc)
                return
            try:
                self.fs.pipe_file(self.key, self._body())
            except OSError as exc:
                log.warning("could not renew lease %s: %s", self.path, exc)

    def __enter__(self) -> ObjectLease:
        deadline, warned, seen_unreadable = time.monotonic() + self.timeout_s, False, None
        while not self._create():
            doc = self._read()
            now = time.time()
            if doc == {}:
                seen_unreadable = seen_unreadable or now
            expired = (doc is not None and doc != {} and float(doc.get("expires_unix", 0)) < now) or (
                seen_unreadable is not None and now - seen_unreadable > self.ttl_s)
            if expired:
                log.warning("breaking the expired lease %s of a dead writer (%s)", self.path, doc)
                try:
                    self.fs.rm_file(self.key)
                except FileNotFoundError:
                    pass
                continue
            if time.monotonic() >= deadline:
                raise self.busy(f"{self.path.parent} is being written by another run ({doc}); "
                                f"gave up after {self.timeout_s:.0f} s (RDTF_LOCK_TIMEOUT_S)")
            if not warned:
                log.warning("waiting for %s: held by %s", self.path.parent, doc)
                warned = True
            time.sleep(self.poll_s)
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.token[:6]}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        doc = self._read()
        if doc is not None and doc.get("token") == self.token:
            try:
                self.fs.rm_file(self.key)
            except FileNotFoundError:
                pass
