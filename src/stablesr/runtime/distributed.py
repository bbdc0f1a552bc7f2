"""Scale-out without a code change: ``torchrun`` / ``accelerate launch`` set RANK, WORLD_SIZE and LOCAL_RANK;
each process takes every N-th item, and the counts are summed over all processes at the end."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

from ..errors import UsageError

DIST_TIMEOUT_S = 24 * 3600  # ranks wait this long for the slowest one before the global summary


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun / accelerate launch job (rank 0 of 1 when run plainly).

    Example:
        >>> DistInfo(rank=1, world_size=2, local_rank=1).shard(["a", "b", "c"])
        ['b']
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistInfo:
        """Read RANK / WORLD_SIZE / LOCAL_RANK as torchrun and accelerate set them."""
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
        if world < 1 or not 0 <= rank < world or local < 0:
            raise UsageError(f"inconsistent RANK={rank} / WORLD_SIZE={world} / LOCAL_RANK={local}")
        return cls(rank, world, local)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def prefix(self) -> str:
        return f"[rank {self.rank}/{self.world_size}] " if self.distributed else ""

    def shard(self, items: Sequence[Any]) -> list[Any]:
        """Every ``world_size``-th item starting at ``rank``: each item goes to exactly one process."""
        return [item for i, item in enumerate(items) if i % self.world_size == self.rank]


def all_reduce(values: list[int], dist_info: DistInfo) -> list[int] | None:
    """Sum ``values`` over all ranks (gloo, CPU), or None where that is not possible.

    Waiting here also keeps a rank that finished early from exiting while the others still work:
    torchrun stops every worker as soon as one exits with a non-zero code.
    """
    if not dist_info.distributed or not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
        return None
    try:
        from datetime import timedelta

        import torch
        import torch.distributed as dist

        if not dist.is_available():
            return None
        dist.init_process_group("gloo", timeout=timedelta(seconds=DIST_TIMEOUT_S))
        try:
            tensor = torch.tensor(values, dtype=torch.int64)
            dist.all_reduce(tensor)
            return [int(v) for v in tensor.tolist()]
        finally:
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - the global summary is a nicety; each rank already printed its own
        return None


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (what torchrun sends to stop workers) like Ctrl-C, so clean-up code runs."""

    def raise_interrupt(signum: int, frame: object) -> NoReturn:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ignore_termination() -> None:
    """Ignore SIGTERM from now on (where signals can be set): the job's result is settled."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except ValueError:  # not the main thread: leave signals alone
        pass
