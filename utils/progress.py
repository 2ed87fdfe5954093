"""Progress displays that read well in a terminal and in a job log.

In a terminal (the stream is a TTY) the scripts show live bars: tqdm, and Keras' progress bar in
training. Written to a file or a pipe (a SLURM job's output, `... > log`), a live bar becomes one
line per redraw full of carriage returns and ANSI escape sequences; there the scripts print plain
lines instead (`LineProgress`, and the training's epoch lines), at most one every `every_s`
seconds, and one at the end.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

__all__ = ["LineProgress", "duration", "is_terminal", "progress_bar"]


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether `stream` (default: standard output) is a terminal, so a live bar can redraw."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def duration(seconds: float) -> str:
    """A duration for a log line: `42 s`, `3 min 05 s`, `2 h 07 min`."""
    seconds = max(0.0, float(seconds))
    if seconds < 59.5:
        return f"{seconds:.0f} s" if seconds >= 9.5 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class LineProgress:
    """tqdm's interface (update, set_postfix_str, close, n) as plain lines for a job log.

    Prints `desc: done/total unit (rate unit/s, elapsed, ETA ...)` when `every_s` seconds have
    passed since the last line, and once when closed; never a carriage return or an escape
    sequence.
    """

    def __init__(
        self,
        total: int,
        desc: str | None = None,
        unit: str = "it",
        file: IO[str] | None = None,
        every_s: float = 30.0,
        disable: bool = False,
    ) -> None:
        self.total, self.desc, self.unit = int(total), desc or "progress", unit
        self.file = sys.stderr if file is None else file
        self.every_s, self.disable = float(every_s), disable
        self.n = 0
        self.postfix = ""
        self._start = self._last = time.perf_counter()
        self._closed = False

    def update(self, n: int = 1) -> None:
        """Count `n` more done; print a line when one is due."""
        self.n += int(n)
        now = time.perf_counter()
        if now - self._last >= self.every_s and self.n < self.total:
            self._last = now
            self._print(now)

    def set_postfix_str(self, text: str) -> None:
        """Text shown at the end of the next line (what is being worked on)."""
        self.postfix = str(text)

    def close(self) -> None:
        """Print the final line (once)."""
        if not self._closed:
            self._closed = True
            self._print(time.perf_counter())

    def _print(self, now: float) -> None:
        if self.disable:
            return
        elapsed = now - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        parts = [f"{rate:.2f} {self.unit}/s", duration(elapsed)]
        if 0 < self.n < self.total and rate > 0:
            parts.append(f"ETA {duration((self.total - self.n) / rate)}")
        tail = f" {self.postfix}" if self.postfix else ""
        print(
            f"{self.desc}: {self.n}/{self.total} {self.unit} ({', '.join(parts)}){tail}",
            file=self.file,
            flush=True,
        )

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(
    total: int,
    desc: str | None = None,
    unit: str = "it",
    file: IO[str] | None = None,
    disable: bool = False,
    leave: bool = True,
) -> Any:
    """A tqdm bar when `file` (default stderr) is a terminal, else a `LineProgress`."""
    file = sys.stderr if file is None else file
    if not is_terminal(file):
        return LineProgress(total, desc, unit, file, disable=disable)
    # tqdm only when a bar is drawn
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=file,
        disable=disable,
        leave=leave,
        dynamic_ncols=True,
    )
