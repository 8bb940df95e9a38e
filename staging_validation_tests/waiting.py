"""The one deadline wait of the tests: poll a condition, never sleep for a fixed time instead."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float, what: str, poll_s: float = 0.05,
               still_possible: Callable[[], None] = lambda: None) -> T:
    """The condition's first true value within the deadline, else AssertionError naming `what`.
    `still_possible` is called before each poll and raises when waiting longer is pointless (a process
    the condition depends on has exited)."""
    deadline = time.monotonic() + timeout_s
    while True:
        still_possible()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        time.sleep(poll_s)  # the polling interval of a deadline wait


def still_running(processes: dict[Path, subprocess.Popen]) -> Callable[[], None]:
    """Raises, with the end of its output, once a process the wait depends on has exited."""
    def check() -> None:
        for log, process in processes.items():
            assert process.poll() is None, (
                f"{process.args[0]} exited early with {process.returncode}; its output ends:\n"
                + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            )
    return check
