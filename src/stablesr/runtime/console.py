"""Where messages go: errors and notes to stderr (around progress bars), results to stdout, one line each."""

from __future__ import annotations

import sys
from dataclasses import dataclass


def one_line(text: object) -> str:
    """Messages from libraries may span lines; ours must not.

    Example:
        >>> one_line("a\\n  b")
        'a b'
    """
    return " ".join(str(text).split())


@dataclass
class Console:
    """``prefix`` marks the process in a distributed run; ``quiet`` drops notes, ``verbose`` adds details."""

    quiet: bool = False
    verbose: bool = False
    prefix: str = ""

    def error(self, message: str) -> None:
        self._stderr(f"{self.prefix}error: {one_line(message)}")

    def note(self, message: str) -> None:
        if not self.quiet:
            self._stderr(f"{self.prefix}note: {one_line(message)}")

    def detail(self, message: str) -> None:
        if self.verbose:
            self.out(message)

    def out(self, message: str) -> None:
        print(f"{self.prefix}{message}", file=sys.stdout, flush=True)

    @staticmethod
    def _stderr(line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)  # keeps an active progress bar intact
        sys.stderr.flush()
