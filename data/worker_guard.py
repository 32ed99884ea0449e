"""Worker processes that die with their parent.

A ``ProcessPoolExecutor`` worker learns of its parent's death only when its call queue is closed, and every
spawn-context worker holds both ends of that queue itself: after a ``kill -9`` of an ingest, its decode
workers lived on for minutes (12 processes, ~790 MB), some still decoding. Use :func:`die_with_parent` as
the pool's ``initializer`` (with ``initargs=(os.getpid(),)``):

* on Linux the kernel sends the worker SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), even while
  the worker is deep in native code;
* everywhere, a daemon thread also polls ``os.getppid()`` and exits the worker once it changes (the worker
  was re-parented), for systems without prctl.

No imports beyond the standard library: this runs first in every worker.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 0.5  # how often the fallback thread looks at the parent pid


def _set_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no libc symbol (exotic libc, sandbox): the thread still covers it
        return False


def _watch_parent(parent_pid: int, poll_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    os._exit(1)  # no cleanup: the work belongs to a process that no longer exists


def die_with_parent(parent_pid: int, poll_s: float = POLL_S) -> None:
    """Pool initializer: make this worker exit when the process ``parent_pid`` dies."""
    _set_pdeathsig()
    # The parent may have died before prctl took effect: then we are already re-parented.
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid, poll_s), name="die-with-parent", daemon=True).start()
