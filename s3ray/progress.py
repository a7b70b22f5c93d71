"""What a person watching a run reads: INFO log lines, and one progress line style for every long stage.

A tqdm bar redraws itself with carriage returns, which a Ray job's log (a file) shows as one endless
line. So the stages log plain lines at a bounded rate instead, laid out by tqdm's own meter (its rate,
which turns into seconds per unit when slow, and its ETA):

    train: 3/10 steps | 50.33s/step | elapsed 02:31 | ETA 05:52 | reward 0.412
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tqdm import tqdm

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LINE = "{desc}: {n_fmt}/{total_fmt} {unit}s | {rate_fmt} | elapsed {elapsed} | ETA {remaining}"


def show_info_logs() -> None:
    """INFO lines of this process on stderr. A Ray actor or Train worker needs it too: Ray leaves the
    root logger of a worker at WARNING, and its progress lines would never reach the job log."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request drowns the stage's own


def progress_line(label: str, done: int, total: int, elapsed_s: float, unit: str, initial: int = 0,
                  note: str = "") -> str:
    """``label: done/total units | rate | elapsed | ETA[ | note]``; the rate counts from ``initial``
    (a resumed stage's units done before this process started)."""
    line = tqdm.format_meter(done, total, elapsed_s, prefix=label, unit=unit, bar_format=_LINE, initial=initial)
    line = " ".join(line.split())  # tqdm pads rates below 10 to a fixed width
    return f"{line} | {note}" if note else line


class ProgressLog:
    """Logs a stage's progress line on its first update, then at most every ``every_s`` seconds, and
    always when it reaches ``total``."""

    def __init__(self, logger: logging.Logger, label: str, total: int, unit: str, every_s: float,
                 initial: int = 0, clock: Callable[[], float] = time.monotonic):
        self.logger, self.label, self.total, self.unit = logger, label, total, unit
        self.every_s, self.initial, self.clock = every_s, initial, clock
        self.start = clock()
        self.last_logged: float | None = None

    def update(self, done: int, note: str = "") -> str | None:
        """Log ``done`` units if due; returns the line logged, if any."""
        now = self.clock()
        due = self.last_logged is None or now - self.last_logged >= self.every_s or done >= self.total
        if not due:
            return None
        self.last_logged = now
        line = progress_line(self.label, done, self.total, now - self.start, self.unit, self.initial, note)
        self.logger.info("%s", line)
        return line
