"""The generic batch runner: a Ctrl-C during an item's commit (its output appearing) arrives after it is counted."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from stablesr.runtime.batch import BatchRunner, Outcome


def test_an_interrupt_during_the_commit_arrives_after_the_item_is_counted(tmp_path: Path) -> None:
    def work(item: str) -> Outcome:
        def commit() -> str:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C just as the output is renamed into place
            (tmp_path / item).write_text("done")
            return f"wrote {item}"

        return Outcome("", commit=commit)

    runner: BatchRunner[str] = BatchRunner(work, name=str)
    with pytest.raises(KeyboardInterrupt):
        runner.run(["a.png", "b.png"])
    assert runner.tally.done == 1 and (tmp_path / "a.png").exists()  # written and counted
    assert not (tmp_path / "b.png").exists()  # the batch stopped before the next item


def test_a_failing_commit_counts_as_a_failure_and_the_batch_goes_on(tmp_path: Path) -> None:
    def work(item: str) -> Outcome:
        def commit() -> str:
            if item == "bad.png":
                raise OSError("disk full")
            return f"wrote {item}"

        return Outcome("", commit=commit)

    tally = BatchRunner(work, name=str).run(["bad.png", "good.png"])
    assert (tally.done, tally.failed) == (1, ["bad.png"])
