"""A progress bar for long work: count, rate and time left, redrawn in place on a terminal.

Used by `get(refs, progress=True)` and the Pool's `map`/`imap`/`imap_unordered(progress=True)`.
When the output is not a terminal (a log file, CI) it stays silent: a bar redrawn into a log is
noise.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

REDRAW_S = 0.1


def format_progress(desc: str, done: int, total: int | None, elapsed: float, width: int = 24) -> str:
    """One line: `desc  [#####-----]  40/100  40%  12.5/s  ETA 0:05` (pure, for any caller)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    rate_text = f"{rate:,.1f}/s" if rate < 100 else f"{rate:,.0f}/s"
    prefix = f"{desc}  " if desc else ""
    if not total:
        return f"{prefix}{done:,} done  {rate_text}  {_clock(elapsed)} elapsed"
    fraction = min(1.0, done / total)
    filled = int(round(fraction * width))
    bar = "#" * filled + "-" * (width - filled)
    if done >= total:
        tail = f"in {_clock(elapsed)}"
    else:
        tail = f"ETA {_clock((total - done) / rate)}" if rate > 0 else "ETA ?"
    return f"{prefix}[{bar}]  {done:,}/{total:,}  {fraction:4.0%}  {rate_text}  {tail}"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressBar:
    """Counts finished items (from any thread) and redraws at most every 0.1 s on a terminal."""

    def __init__(self, total: int | None, desc: str = "", file: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.total, self.desc = total, desc
        self.file = file or sys.stderr
        self.enabled = _is_terminal(self.file) if enabled is None else enabled
        self.done = 0
        self.started = time.monotonic()
        self.drawn_at = 0.0
        self.closed = False
        self.lock = threading.Lock()
        if self.enabled:
            self._draw()

    def update(self, n: int = 1) -> None:
        with self.lock:
            self.done += n
            now = time.monotonic()
            if self.enabled and not self.closed and now - self.drawn_at >= REDRAW_S:
                self._draw()

    def close(self, complete: bool = False) -> None:
        """Draw the last line; `complete` counts every item done (their updates may still be on their way)."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if complete and self.total:
                self.done = self.total
            if self.enabled:
                self._draw()
                self.file.write("\n")
                self.file.flush()

    def _draw(self) -> None:
        self.drawn_at = time.monotonic()
        line = format_progress(self.desc, self.done, self.total, self.drawn_at - self.started)
        self.file.write(f"\r{line}\x1b[K")
        self.file.flush()


def _is_terminal(file: TextIO) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False
