"""The run's clock: the whole time a command took, from the start of its process, so that a
summary counts start-up and the model load, not only the images."""

from __future__ import annotations

import os
import time
from pathlib import Path

from clipcls.output.writers import plural

_first_run = True
_started = time.monotonic()


def _process_age() -> float | None:
    """Seconds since this process started (Linux /proc), None where that cannot be read."""
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        # Fields after the command name; the 22nd field, starttime, is in clock ticks.
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return max(uptime - ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return None


def start_run() -> None:
    """Start the clock of a command: the first one in a process counts from the process's start
    (imports included); a later one (tests run many in one process) from this call."""
    global _first_run, _started
    now = time.monotonic()
    age = _process_age() if _first_run else None
    _started = now - age if age is not None else now
    _first_run = False


def since_start() -> float:
    """Seconds since the command's process started."""
    return time.monotonic() - _started


def timing(images: int, seconds: float) -> str:
    """`12 images in 0.4 s (30.0 images/s; 2.6 s in all with start-up and model load)`."""
    rate = images / max(seconds, 1e-9)
    whole = max(since_start(), seconds)
    return (
        f"{plural(images, 'image')} in {seconds:.1f} s ({rate:.1f} images/s; "
        f"{whole:.1f} s in all with start-up and model load)"
    )
