"""Per-sticker decode budget: a pixel x frame work cap counted while decoding, and a wall-time limit.

Why both: header checks (``data.media._check_header``) stop most bombs before a frame is decoded, but the
cost of decoding is not what the header says. A ~3 KB GIF with a 4096x4096 logical screen and 127 frames of
one pixel each composites and resizes the whole 16 Mpx canvas per frame, about a minute of CPU; and Pillow
grows a GIF canvas when a frame lies outside it, so an 8x8 header can decode 2000x2000 frames. So

* :class:`WorkMeter` charges the canvas pixels of every frame *as it is decoded* (frames are counted as
  they come, whatever the header claimed) and rejects with ``pixel_limit`` once ``max_total_pixels`` is
  exceeded — checked before the expensive part of the frame (compositing, resizing) is done;
* :func:`deadline` bounds the wall time of a block with a timer signal (``signal.setitimer``) and turns
  the expiry into ``decode_timeout``. It raises a private ``BaseException`` from the signal handler so no
  decoder's ``except Exception`` can swallow it (``_guard`` in ``data.media`` maps every ``Exception``
  to ``decode_error``), and converts it to ``StickerRejected`` at the ``with`` boundary. Timers need the
  main thread of a POSIX process; elsewhere the block runs unlimited (ingest workers always qualify).

No torch and no Dagster imports: this runs inside ingest worker processes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from data.rejects import RejectReason, StickerRejected


@dataclass
class WorkMeter:
    """Running total of decoded canvas pixels for one sticker."""

    limit: int  # max_total_pixels: pixels x frames one sticker may cost
    used: int = 0  # pixels charged so far
    frames: int = 0  # frames charged so far

    def charge(self, pixels: int, frames: int = 1) -> None:
        """Account for ``frames`` frames of ``pixels`` canvas pixels each, about to be decoded."""
        self.frames += frames
        self.used += pixels * frames
        if self.used > self.limit:
            raise StickerRejected(
                RejectReason.PIXEL_LIMIT,
                f"{self.used} px decoded after {self.frames} frames exceeds max_total_pixels={self.limit} "
                f"(counted while decoding)",
            )


class _Expired(BaseException):  # noqa: N818 - internal signal, never escapes deadline()
    """Raised by the timer's signal handler inside the guarded block."""


def _timers_usable() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def deadline(seconds: float, message: str) -> Iterator[None]:
    """Run the block for at most ``seconds`` (0 = unlimited), else raise ``StickerRejected(decode_timeout)``.

    An interval timer armed by the caller (e.g. pytest-timeout) keeps working: it is restored, minus the
    elapsed time, afterwards, and if it is due first its own handler runs when it fires.
    """
    if seconds <= 0 or not _timers_usable():
        yield
        return
    start = time.monotonic()
    ours = start + seconds
    state = {"armed": True}
    old_handler = signal.getsignal(signal.SIGALRM)

    def on_alarm(signum, frame):
        if not state["armed"]:
            return
        if time.monotonic() >= ours - 1e-3:
            state["armed"] = False
            raise _Expired
        # the outer timer was due first: hand the signal on, then wait for ours
        signal.setitimer(signal.ITIMER_REAL, max(ours - time.monotonic(), 1e-3))
        if callable(old_handler):
            old_handler(signum, frame)

    signal.signal(signal.SIGALRM, on_alarm)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    if 0 < old_delay < seconds:
        signal.setitimer(signal.ITIMER_REAL, old_delay)
    try:
        yield
    except _Expired:
        raise StickerRejected(RejectReason.DECODE_TIMEOUT, message) from None
    finally:
        state["armed"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:
            remaining = old_delay - (time.monotonic() - start)
            if remaining > 0 or old_interval > 0:
                signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-3), old_interval)
            # an outer timer already due has been handed on (or was for a handler that is gone)
