"""Progress of a long job (a reindex, an import), recorded in object storage for whoever asks."""

from __future__ import annotations

import time
from typing import Any, Callable


def recording_progress(job: Any, write: Callable[[], None], every: float = 0.5) -> Callable[[float, str], None]:
    """A progress callback that sets `job`'s state, progress and message and writes the job at
    most once every `every` seconds (a store write per step would slow the job down)."""
    last = 0.0

    def progress(fraction: float, message: str) -> None:
        nonlocal last
        job.state, job.progress, job.message = "running", round(fraction, 3), message
        if time.monotonic() - last > every:
            last = time.monotonic()
            write()

    return progress
