"""Step-by-step progress on the terminal, each step with its wall time."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    """Prints ``[name] step ... done (1.2 s)`` lines; pass ``stream=None`` to stay quiet."""

    def __init__(self, prefix: str, stream: TextIO | None = sys.stderr) -> None:
        self.prefix = prefix
        self.stream = stream

    def note(self, message: str) -> None:
        if self.stream is not None:
            print(f"[{self.prefix}] {message}", file=self.stream, flush=True)

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        self.note(f"{what} ...")
        started = time.monotonic()
        yield
        self.note(f"{what}: done in {time.monotonic() - started:.1f} s")
