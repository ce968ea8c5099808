"""The progress bar: the pure line formatter, and ProgressBar drawing into an in-memory file.

No cluster here: the bar's clock is replaced by a fake one, so redraw throttling is checked
exactly, without sleeping.
"""
from __future__ import annotations

import io
import threading

import pytest

from tasuki import progress
from tasuki.progress import ProgressBar, format_progress


# --- format_progress ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args, line", [
    (("map", 40, 100, 3.2), "map  [##########--------------]  40/100   40%  12.5/s  ETA 0:05"),
    (("map", 0, 100, 0.0), "map  [------------------------]  0/100    0%  0.0/s  ETA ?"),
    (("map", 100, 100, 8.0), "map  [########################]  100/100  100%  12.5/s  in 0:08"),
    (("", 1, 4, 1.0), "[######------------------]  1/4   25%  1.0/s  ETA 0:03"),
    (("get", 150_000, 1_000_000, 10.0),
     "get  [####--------------------]  150,000/1,000,000   15%  15,000/s  ETA 0:57"),
    (("big", 1, 10, 400.0), "big  [##----------------------]  1/10   10%  0.0/s  ETA 1:00:00"),
    (("over", 12, 10, 2.0), "over  [########################]  12/10  100%  6.0/s  in 0:02"),
    (("imap", 1234, None, 61.0), "imap  1,234 done  20.2/s  1:01 elapsed"),
    (("imap", 0, 0, 0.0), "imap  0 done  0.0/s  0:00 elapsed"),
    (("", 5, None, 0.0), "5 done  0.0/s  0:00 elapsed"),
])
def test_format_progress(args, line):
    assert format_progress(*args) == line


def test_format_progress_width():
    assert "[#####-----]" in format_progress("x", 1, 2, 1.0, width=10)


# --- ProgressBar ---------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(progress.time, "monotonic", fake.monotonic)
    return fake


def draws(text: str) -> list[str]:
    """The lines drawn, each a carriage return, the line, and erase-to-end-of-line."""
    assert all(part.endswith("\x1b[K") for part in text.rstrip("\n").split("\r")[1:])
    return [part[:-3] for part in text.rstrip("\n").split("\r")[1:]]


def test_silent_when_not_a_terminal(clock):
    out = io.StringIO()                         # isatty() is False: a log file, CI
    bar = ProgressBar(10, "map", file=out)
    assert not bar.enabled
    bar.update(10)
    bar.close()
    assert out.getvalue() == "" and bar.done == 10


def test_draws_on_a_terminal_at_most_every_redraw_interval(clock):
    out = Terminal()
    bar = ProgressBar(100, "map", file=out)
    assert bar.enabled
    assert draws(out.getvalue()) == ["map  [------------------------]  0/100    0%  0.0/s  ETA ?"]
    clock.now += progress.REDRAW_S / 2
    bar.update(10)                               # too soon after the last draw: counted, not drawn
    assert len(draws(out.getvalue())) == 1 and bar.done == 10
    clock.now += progress.REDRAW_S
    bar.update(10)
    assert draws(out.getvalue())[-1].startswith("map  [#####-------------------]  20/100   20%")
    clock.now += 1.0
    bar.update(80)
    bar.close()
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    assert draws(text)[-1] == "map  [########################]  100/100  100%  87.0/s  in 0:01"     # 1.15 s
    bar.close()                                  # twice: nothing more
    bar.update(5)                                # after close: counted, never drawn
    assert out.getvalue() == text


def test_close_complete_counts_every_item(clock):
    out = Terminal()
    bar = ProgressBar(8, "get", file=out)
    bar.update(5)
    bar.close(complete=True)                     # the last updates may still be on their way
    assert bar.done == 8 and "8/8  100%" in draws(out.getvalue())[-1]
    unknown = ProgressBar(None, "imap", file=Terminal())
    unknown.update(3)
    unknown.close(complete=True)
    assert unknown.done == 3


def test_enabled_overrides_the_terminal_check(clock):
    forced = io.StringIO()
    ProgressBar(3, "x", file=forced, enabled=True).close()
    assert forced.getvalue().startswith("\rx  [") and forced.getvalue().endswith("\n")
    quiet = Terminal()
    ProgressBar(3, "x", file=quiet, enabled=False).close()
    assert quiet.getvalue() == ""


def test_a_closed_or_odd_file_counts_as_no_terminal():
    closed = io.StringIO()
    closed.close()                               # isatty() raises ValueError
    assert not ProgressBar(1, file=closed).enabled
    assert not ProgressBar(1, file=object()).enabled      # no isatty at all


def test_defaults_to_stderr(monkeypatch):
    err = Terminal()
    monkeypatch.setattr(progress.sys, "stderr", err)
    bar = ProgressBar(2, "default")
    bar.update(2)
    bar.close()
    assert "2/2" in err.getvalue()


def test_updates_from_many_threads_are_all_counted():
    bar = ProgressBar(8000, "threads", file=Terminal())
    threads = [threading.Thread(target=lambda: [bar.update() for _ in range(1000)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.close()
    assert bar.done == 8000 and "8,000/8,000" in bar.file.getvalue()
