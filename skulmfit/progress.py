"""Progress reporting for the training stages: a silent default and a one-line text bar."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class SilentProgress:
    """Receives the training loop's events and shows nothing (``verbose=0``)."""

    def start(self, stage: str, total_steps: int) -> None:
        pass

    def step(self, loss: float) -> None:
        pass

    def end(self, **metrics: float) -> None:
        pass

    def write(self, text: str) -> None:
        """A line of output (a checkpoint's report) between the bar's redraws, on standard output."""
        print(text, flush=True)


class ProgressBar(SilentProgress):
    """One line per stage, redrawn in place: step, smoothed loss, elapsed and remaining time.

    ``end`` prints the final line with any metrics (validation score, perplexity) and a newline.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 24, min_interval: float = 0.2):
        self.stream = stream or sys.stderr
        self.width = width
        self.min_interval = min_interval

    def start(self, stage: str, total_steps: int) -> None:
        self.stage, self.total, self.done = stage, max(1, total_steps), 0
        self.loss = None
        self.started = self.last_draw = time.perf_counter()
        self._draw()

    def step(self, loss: float) -> None:
        self.done += 1
        self.loss = loss if self.loss is None else 0.9 * self.loss + 0.1 * loss
        now = time.perf_counter()
        if now - self.last_draw >= self.min_interval or self.done == self.total:
            self.last_draw = now
            self._draw()

    def end(self, **metrics: float) -> None:
        extra = "".join(f"  {name} {value:.4g}" for name, value in metrics.items())
        self._draw(extra)
        self.stream.write("\n")
        self.stream.flush()

    def write(self, text: str) -> None:
        self.stream.write("\r\033[K")  # clear the bar's line, print the text, redraw the bar below it
        self.stream.flush()
        super().write(text)
        self._draw()

    def _draw(self, extra: str = "") -> None:
        elapsed = time.perf_counter() - self.started
        remaining = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        loss = f"loss {self.loss:.4f}" if self.loss is not None else "loss   -   "
        self.stream.write(f"\r{self.stage:<36} [{bar}] {self.done}/{self.total} {loss}"
                          f"  {_clock(elapsed)} elapsed, {_clock(remaining)} left{extra}")
        self.stream.flush()


def _clock(seconds: float) -> str:
    if seconds != seconds:  # NaN before the first step
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"
