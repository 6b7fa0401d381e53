"""Progress of a long partition in the task log: rows done, rows/s and the ETA."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 30.0  # how often a partition logs rows done, rows/s and ETA


class Progress:
    """Logs rows done, rows/s and the ETA at most every ``every`` seconds, and once at the end."""

    def __init__(self, label: str, total_rows: int | None, every: float) -> None:
        self.label, self.total, self.every = label, total_rows, every
        self.started = self.last = time.monotonic()
        self.rows = 0

    def update(self, rows: int, fraction: float | None = None) -> None:
        """Count ``rows`` more; ``fraction`` done is given when rows are not known up front (CSV)."""
        self.rows += rows
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._log(now, fraction)

    def _log(self, now: float, fraction: float | None) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.rows / elapsed
        if self.total:
            fraction = self.rows / self.total
        if fraction:
            eta = duration(elapsed * (1 - fraction) / fraction)
            total = f"/{self.total}" if self.total else ""
            log.info(
                "%s: %d%s rows (%.0f%%), %.0f rows/s, ETA %s",
                self.label,
                self.rows,
                total,
                100 * fraction,
                rate,
                eta,
            )
        else:
            log.info("%s: %d rows, %.0f rows/s", self.label, self.rows, rate)

    def seconds(self) -> float:
        """Seconds since the partition started."""
        return time.monotonic() - self.started


def duration(seconds: float) -> str:
    """``42s``, ``3m07s`` or ``1h05m``: an ETA a person reads at a glance."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
