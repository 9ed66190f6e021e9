"""A progress line on stderr for long runs.

Rules:
- Counting (``advance``) is a few integer additions, so it can run per request; drawing
  happens only in ``run``, a ticker that redraws every ``interval`` seconds until it is
  cancelled with the run that owns it.
- On a terminal the line redraws in place (``\\r``); elsewhere (``--progress`` into a file
  or a pipe) a new line is printed each tick, less often.
"""

from __future__ import annotations

import time
from typing import TextIO

import trio

from gateway.bench.samples import RequestResult

__all__ = ["Progress"]

BAR_WIDTH = 24


class Progress:
    def __init__(self, total: int, out: TextIO, *, tty: bool) -> None:
        self.total = total
        self.done = 0
        self.aborted = 0
        self.errors = 0
        self._out = out
        self._tty = tty
        self._started = time.monotonic()
        self.interval = 0.2 if tty else 2.0

    def advance(self, result: RequestResult) -> None:
        self.done += 1
        if result.outcome == "aborted":
            self.aborted += 1
        elif result.outcome != "ok":
            self.errors += 1

    def line(self, now: float) -> str:
        fraction = self.done / self.total if self.total else 1.0
        filled = round(fraction * BAR_WIDTH)
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return (
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{self.total} "
            f"{fraction:4.0%}  {rate:7.1f} req/s  aborted {self.aborted}  errors {self.errors}"
            f"  eta {eta:5.1f}s"
        )

    def draw(self) -> None:
        text = self.line(time.monotonic())
        self._out.write(f"\r{text}\x1b[K" if self._tty else text + "\n")
        self._out.flush()

    async def run(self) -> None:
        """Redraw every ``interval`` seconds until cancelled."""
        while True:
            await trio.sleep(self.interval)
            self.draw()

    def finish(self) -> None:
        self.draw()
        if self._tty:
            self._out.write("\n")
            self._out.flush()
