"""A generic batch runner: items one by one, each outcome counted, one bad item never stops the batch.

The work function returns an :class:`Outcome` or raises: :class:`StopBatch` when every further item
would fail the same way (the model is unusable), anything else for a failure of this item alone. A
``stop`` event (set by a UI's cancel button, say) is checked between items. An outcome's ``commit`` (the
step that makes the result visible, e.g. the atomic rename of the output) runs with Ctrl-C held back
until the item is counted, so an interrupted run never leaves a finished output out of its summary.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .console import Console

T = TypeVar("T")


class StopBatch(Exception):
    """Raised by the work function when the whole batch must stop; its message is reported."""


@dataclass(frozen=True)
class Outcome:
    """What became of one item: done (``skipped`` False) or skipped, with a line for verbose output."""

    message: str
    skipped: bool = False
    commit: Callable[[], str] | None = field(default=None, compare=False)  # returns the message


@contextmanager
def held_interrupts() -> Iterator[None]:
    """SIGINT/SIGTERM arriving inside the block reach their handlers when it ends (main thread only).

    The handlers are swapped (not the signal mask): Python runs handlers in the main thread whichever
    thread the signal was delivered to, so this holds in a process with worker threads too.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(pending):  # each held signal once, in arrival order
            handler = previous[s]
            if callable(handler):
                handler(s, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(s)


@dataclass
class Tally:
    """Counts of one run, and what went wrong.

    Example:
        >>> Tally(done=2, failed=["a.png"]).line(1.25)
        'done 2, skipped 0, failed 1 in 1.2 s'
    """

    done: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    not_images: list[str] = field(default_factory=list)  # files of input folders left out (counted in skipped)
    fatal: bool = False  # the batch had to stop (e.g. the model could not be loaded)
    interrupted: bool = False

    def line(self, seconds: float) -> str:
        return f"done {self.done}, skipped {self.skipped}, failed {len(self.failed)} in {seconds:.1f} s"


@dataclass
class BatchRunner(Generic[T]):
    """Runs ``work`` over items, counting into ``tally``; failures are reported on ``console``.

    ``name(item)`` names an item in messages and in ``tally.failed``; ``reason(item, exc)`` words a
    failure (default ``str(exc)``); ``debug`` re-raises instead, to show the traceback.
    """

    work: Callable[[T], Outcome]
    name: Callable[[T], str]
    console: Console = field(default_factory=Console)
    tally: Tally = field(default_factory=Tally)
    reason: Callable[[T, Exception], str] = lambda item, exc: str(exc)
    debug: bool = False
    progress: bool = False
    stop: threading.Event | None = None

    def run(self, items: Sequence[T]) -> Tally:
        """Process ``items`` in order; returns the tally (also when stopped early)."""
        from tqdm import tqdm

        for item in tqdm(items, desc="images", unit="img", disable=not self.progress, file=sys.stderr):
            if self.stop is not None and self.stop.is_set():
                self.tally.interrupted = True
                break
            if not self._process(item):
                break
        return self.tally

    def _process(self, item: T) -> bool:
        """Process one item and count it; False when the batch must stop."""
        started = time.monotonic()
        try:
            outcome = self.work(item)
            with held_interrupts():  # the output appears and is counted, or neither
                if outcome.commit is not None:
                    outcome = Outcome(outcome.commit(), outcome.skipped)
                self._count(outcome, started)
        except StopBatch as exc:  # about the whole batch, not this item: it would fail for every item
            self.console.error(str(exc))
            self.tally.fatal = True
            return False
        except Exception as exc:  # one bad item must not stop the batch
            if self.debug:
                raise
            self.console.error(f"{self.name(item)}: {self.reason(item, exc)}")
            self.tally.failed.append(self.name(item))
        return True

    def _count(self, outcome: Outcome, started: float) -> None:
        if outcome.skipped:
            self.tally.skipped += 1
            self.console.detail(outcome.message)
        else:
            self.tally.done += 1
            self.console.detail(f"{outcome.message} in {time.monotonic() - started:.1f} s")
